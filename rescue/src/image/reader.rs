//! Opening an image (footer → header → index) and reading chunks with random access.
//!
//! [`ImageReader`] works on any `Read + Seek`. [`SharedReader`] reads with positional reads
//! ([`ReadAt`]) and is cheap to clone, so restore can fetch and check chunks from several threads
//! over one open file. Both hand out chunk bytes only after the frame header matched the index
//! record and the bytes matched their blake3 hash.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::chunk::{decompress_into, decompress_owned};
use super::format::{
    Footer, FrameHeader, Header, Tail, FEATURE_CHUNK_SLICES, FOOTER_MAGIC, FOOTER_TAIL_LEN,
    HEADER_MAGIC,
};
use super::index::{ChunkRecord, Index};
use super::validate::RefMap;
use super::{
    ChunkFault, ChunkId, ChunkLocation, Hash, ImageError, FOOTER_LEN, FRAME_HEADER_LEN, HEADER_LEN,
    MAX_CHUNK_SIZE, MAX_INDEX_LEN,
};
use crate::sys::AlignedBuf;

/// Positional reads that do not move a shared cursor, so several threads can use one file.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`, failing with `UnexpectedEof` past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Size of the whole image.
    fn size(&self) -> io::Result<u64>;

    /// Reads the `len` bytes at `offset` into `buf` (resized as needed) and returns where in `buf` they
    /// start. This reads them to its start; a file that reads directly reads an aligned span around them.
    fn read_span(&self, buf: &mut AlignedBuf, offset: u64, len: usize) -> io::Result<usize> {
        buf.fit(len);
        self.read_exact_at(buf, offset)?;
        Ok(0)
    }
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        // Seeking works for block devices too, whose metadata length is 0; positional reads do
        // not use the cursor, so moving it is harmless.
        (&*self).seek(SeekFrom::End(0))
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

/// What opening an image established; shared by every reader of that image.
pub(crate) struct Opened {
    pub(crate) header: Header,
    footer: Footer,
    pub(crate) index: Index,
    refs: RefMap,
    pub(crate) problems: Vec<String>,
    file_len: u64,
}

/// The positional reads opening needs, over either kind of source.
trait Source {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

struct SeekSource<'a, R>(&'a mut R);

impl<R: Read + Seek> Source for SeekSource<'_, R> {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.seek(SeekFrom::Start(offset))?;
        self.0.read_exact(buf)
    }
}

struct AtSource<'a, F: ?Sized>(&'a F);

impl<F: ReadAt + ?Sized> Source for AtSource<'_, F> {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

/// `io::Read` over a byte range of a source, to stream the index through the zstd decoder.
struct RangeReader<'a, S> {
    src: &'a mut S,
    pos: u64,
    end: u64,
    /// Set when the source failed, so the error is reported as a read error, not as damage.
    failed_at: Option<u64>,
}

impl<S: Source> Read for RangeReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.end - self.pos).min(buf.len() as u64).min(1 << 20) as usize;
        if n == 0 {
            return Ok(0);
        }
        if let Err(e) = self.src.read_at(&mut buf[..n], self.pos) {
            self.failed_at = Some(self.pos);
            return Err(e);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_err(offset: u64, what: &'static str) -> impl FnOnce(io::Error) -> ImageError {
    move |source| ImageError::Read {
        offset,
        what,
        source,
    }
}

fn footer_damaged(reason: String) -> ImageError {
    ImageError::FooterDamaged { reason }
}

impl Opened {
    fn open<S: Source>(src: &mut S, file_len: u64, strict: bool) -> Result<Opened, ImageError> {
        let tail = if file_len >= FOOTER_TAIL_LEN as u64 {
            let mut t = [0u8; FOOTER_TAIL_LEN];
            let at = file_len - FOOTER_TAIL_LEN as u64;
            src.read_at(&mut t, at).map_err(read_err(at, "footer"))?;
            Footer::parse_tail(&t)?
        } else {
            Tail::Missing
        };
        let footer_len = match tail {
            Tail::Missing => return Err(Self::no_footer(src, file_len)),
            Tail::Present { footer_len } => footer_len,
        };
        if footer_len as usize != FOOTER_LEN {
            return Err(footer_damaged(format!(
                "it gives its length as {footer_len} instead of {FOOTER_LEN}"
            )));
        }
        if file_len < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(footer_damaged(format!(
                "the file ({file_len} bytes) is too short to hold a header and a footer"
            )));
        }
        let footer_at = file_len - FOOTER_LEN as u64;
        let mut fb = [0u8; FOOTER_LEN];
        src.read_at(&mut fb, footer_at)
            .map_err(read_err(footer_at, "footer"))?;
        let footer = Footer::parse(&fb).map_err(|e| match e {
            ImageError::FooterDamaged { reason } => footer_damaged(format!(
                "{reason}; if the file was cut short or had bytes appended, it is incomplete"
            )),
            other => other,
        })?;
        let mut hb = [0u8; HEADER_LEN];
        src.read_at(&mut hb, 0).map_err(read_err(0, "header"))?;
        // A valid footer makes this an image, so a wrong magic here is damage.
        let header = Header::parse(&hb).map_err(|e| match e {
            ImageError::NotAnImage { .. } => ImageError::HeaderDamaged {
                reason: "its magic bytes are wrong".into(),
            },
            other => other,
        })?;
        if (header.required_features, header.optional_features)
            != (footer.required_features, footer.optional_features)
        {
            return Err(footer_damaged(
                "its feature bits differ from the header's".into(),
            ));
        }
        let index_end = footer.index_offset.checked_add(footer.index_stored_len);
        if footer.index_offset < HEADER_LEN as u64 || index_end != Some(footer_at) {
            return Err(footer_damaged(format!(
                "it places the index at {}+{}, which does not end where the footer starts ({footer_at})",
                footer.index_offset, footer.index_stored_len
            )));
        }
        if footer.index_len > MAX_INDEX_LEN {
            return Err(footer_damaged(format!(
                "it gives the index size as {} bytes, more than the limit of {MAX_INDEX_LEN}",
                footer.index_len
            )));
        }
        let bytes = Self::read_index(src, &footer)?;
        let mut h = blake3::Hasher::new();
        h.update(&hb);
        h.update(&bytes);
        let got = Hash(*h.finalize().as_bytes());
        if got != footer.root_hash {
            return Err(ImageError::IndexDamaged {
                reason: format!(
                    "its root hash is {got}, but the footer records {}",
                    footer.root_hash
                ),
            });
        }
        let index = Index::decode(&bytes)?;
        drop(bytes);
        let mut problems = index.validate();
        if footer.required_features & FEATURE_CHUNK_SLICES == 0 && index.has_slices() {
            problems.push(
                "slice extents (kind 6) in an image without required feature bit 3, so readers that do \
                 not know slices would misread it"
                    .into(),
            );
        }
        Self::check_frames_in_file(&index, &footer, &mut problems);
        if strict && !problems.is_empty() {
            return Err(ImageError::IndexInvalid { problems });
        }
        let refs = RefMap::build(&index);
        Ok(Opened {
            header,
            footer,
            index,
            refs,
            problems,
            file_len,
        })
    }

    /// No footer magic: tells an unfinished image apart from a file that is not an image at all,
    /// and from a complete footer whose magic alone was damaged.
    fn no_footer<S: Source>(src: &mut S, file_len: u64) -> ImageError {
        if file_len == 0 {
            return ImageError::NotAnImage {
                reason: "the file is empty (0 bytes); check that you named the right file".into(),
            };
        }
        let n = file_len.min(HEADER_MAGIC.len() as u64) as usize;
        let mut start = [0u8; 8];
        if src.read_at(&mut start[..n], 0).is_err() || start[..n] != HEADER_MAGIC[..n] {
            return ImageError::NotAnImage {
                reason: "it has neither the image header magic nor a footer".into(),
            };
        }
        if let Some(at) = file_len.checked_sub(FOOTER_LEN as u64) {
            let mut fb = [0u8; FOOTER_LEN];
            if src.read_at(&mut fb, at).is_ok() {
                // The check value covers the magic, so it only matches if nothing else changed.
                fb[FOOTER_LEN - FOOTER_MAGIC.len()..].copy_from_slice(&FOOTER_MAGIC);
                if Footer::parse(&fb).is_ok() {
                    return footer_damaged(
                        "its magic bytes (the last 8 of the file) are damaged".into(),
                    );
                }
            }
        }
        ImageError::Truncated { file_len }
    }

    fn read_index<S: Source>(src: &mut S, footer: &Footer) -> Result<Vec<u8>, ImageError> {
        let range = RangeReader {
            src,
            pos: footer.index_offset,
            end: footer.index_offset + footer.index_stored_len,
            failed_at: None,
        };
        let damaged = |reason: String| ImageError::IndexDamaged { reason };
        let mut decoder = zstd::stream::read::Decoder::new(range)
            .map_err(|e| damaged(format!("zstd cannot start decoding it ({e})")))?;
        // Grow as bytes arrive instead of trusting the footer's size up front.
        let mut bytes = Vec::with_capacity(footer.index_len.min(16 << 20) as usize);
        if let Err(e) = (&mut decoder)
            .take(footer.index_len + 1)
            .read_to_end(&mut bytes)
        {
            return Err(match decoder.get_ref().get_ref().failed_at {
                Some(offset) => ImageError::Read {
                    offset,
                    what: "index",
                    source: e,
                },
                None => damaged(format!("it cannot be decompressed ({e})")),
            });
        }
        if bytes.len() as u64 != footer.index_len {
            return Err(damaged(format!(
                "it decompresses to {}{} bytes, but the footer records {}",
                bytes.len(),
                if bytes.len() as u64 > footer.index_len {
                    " or more"
                } else {
                    ""
                },
                footer.index_len
            )));
        }
        Ok(bytes)
    }

    fn check_frames_in_file(index: &Index, footer: &Footer, problems: &mut Vec<String>) {
        let mut bad = 0u64;
        let mut first = None;
        for (i, c) in index.chunks.iter().enumerate() {
            let end = c
                .offset
                .checked_add(FRAME_HEADER_LEN as u64 + u64::from(c.stored_len));
            if c.offset < HEADER_LEN as u64 || end.is_none_or(|e| e > footer.index_offset) {
                bad += 1;
                first.get_or_insert((i, c.offset));
            }
        }
        if let Some((i, offset)) = first {
            problems.push(format!(
                "{bad} chunk frame(s) lie outside the chunk area {HEADER_LEN}..{}, \
                 the first being chunk {i} at image offset {offset}",
                footer.index_offset
            ));
        }
    }

    pub(crate) fn locate(&self, chunk: ChunkId) -> Option<ChunkLocation> {
        self.refs.locate(&self.index, chunk)
    }

    /// Reads, checks and decompresses one chunk through `read_at`.
    pub(crate) fn read_chunk(
        &self,
        id: ChunkId,
        read_at: &mut dyn FnMut(&mut [u8], u64) -> io::Result<()>,
    ) -> Result<Vec<u8>, ImageError> {
        let (rec, payload) = self.read_payload(id, read_at)?;
        decompress_owned(rec.compression, payload, rec.uncompressed_len, &rec.hash)
            .map_err(|reason| self.damaged(id, rec, reason))
    }

    fn damaged(&self, id: ChunkId, rec: &ChunkRecord, reason: ChunkFault) -> ImageError {
        ImageError::ChunkDamaged {
            chunk: id,
            location: self.locate(id).map(Box::new),
            image_offset: rec.offset,
            reason,
        }
    }

    /// The chunk's record and its payload as stored, after checking the frame against the index.
    fn read_payload(
        &self,
        id: ChunkId,
        read_at: &mut dyn FnMut(&mut [u8], u64) -> io::Result<()>,
    ) -> Result<(&ChunkRecord, Vec<u8>), ImageError> {
        let rec = self.chunk_record(id)?;
        let mut fh = [0u8; FRAME_HEADER_LEN];
        read_at(&mut fh, rec.offset).map_err(|e| self.read_failed(id, rec, e))?;
        self.check_frame(id, rec, &fh)?;
        let mut payload = vec![0u8; rec.stored_len as usize];
        read_at(&mut payload, rec.offset + FRAME_HEADER_LEN as u64)
            .map_err(|e| self.read_failed(id, rec, e))?;
        Ok((rec, payload))
    }

    /// [`Self::read_chunk`] into a reusable, page-aligned buffer (replaced if too small), with the whole
    /// frame read in one request ([`ReadAt::read_span`]) into `scratch` and decompressed from there.
    pub(crate) fn read_frame_into<F: ReadAt + ?Sized>(
        &self,
        id: ChunkId,
        file: &F,
        scratch: &mut AlignedBuf,
        out: &mut AlignedBuf,
    ) -> Result<(), ImageError> {
        let rec = self.chunk_record(id)?;
        let len = FRAME_HEADER_LEN + rec.stored_len as usize;
        let at = file
            .read_span(scratch, rec.offset, len)
            .map_err(|e| self.read_failed(id, rec, e))?;
        let (fh, payload) = scratch[at..at + len].split_at(FRAME_HEADER_LEN);
        self.check_frame(id, rec, fh)?;
        decompress_into(
            rec.compression,
            payload,
            rec.uncompressed_len,
            &rec.hash,
            out,
        )
        .map_err(|reason| self.damaged(id, rec, reason))
    }

    /// The chunk's record, once checked to lie within the chunk area. Repeats the validation, because a
    /// leniently opened index may break these limits and they are what bounds the reads' buffers.
    fn chunk_record(&self, id: ChunkId) -> Result<&ChunkRecord, ImageError> {
        let rec = usize::try_from(id.0)
            .ok()
            .and_then(|i| self.index.chunks.get(i))
            .ok_or(ImageError::NoSuchChunk {
                chunk: id,
                chunks: self.index.chunks.len() as u64,
            })?;
        let payload_at = rec.offset.saturating_add(FRAME_HEADER_LEN as u64);
        let fits = rec.offset >= HEADER_LEN as u64
            && payload_at.saturating_add(u64::from(rec.stored_len)) <= self.footer.index_offset;
        if !fits || rec.uncompressed_len > MAX_CHUNK_SIZE || rec.stored_len > rec.uncompressed_len {
            return Err(self.damaged(id, rec, ChunkFault::OutsideFile));
        }
        Ok(rec)
    }

    fn check_frame(&self, id: ChunkId, rec: &ChunkRecord, fh: &[u8]) -> Result<(), ImageError> {
        let frame = FrameHeader::parse(fh).map_err(|reason| self.damaged(id, rec, reason))?;
        match frame_mismatch(&frame, id, rec) {
            Some(diff) => Err(self.damaged(id, rec, ChunkFault::WrongFrame(diff))),
            None => Ok(()),
        }
    }

    fn read_failed(&self, id: ChunkId, rec: &ChunkRecord, source: io::Error) -> ImageError {
        ImageError::ChunkRead {
            chunk: id,
            location: self.locate(id).map(Box::new),
            image_offset: rec.offset,
            source,
        }
    }
}

/// How a frame header differs from the index record it should match, if it does.
fn frame_mismatch(f: &FrameHeader, id: ChunkId, rec: &super::ChunkRecord) -> Option<String> {
    if f.chunk_id != id.0 {
        return Some(format!("it holds chunk {}, not chunk {}", f.chunk_id, id.0));
    }
    if f.hash != rec.hash {
        return Some(format!(
            "its hash is {}, the index expects {}",
            f.hash, rec.hash
        ));
    }
    if (f.compression, f.stored_len, f.uncompressed_len)
        != (rec.compression, rec.stored_len, rec.uncompressed_len)
    {
        return Some(format!(
            "it holds {:?} {} -> {} bytes, the index expects {:?} {} -> {}",
            f.compression,
            f.stored_len,
            f.uncompressed_len,
            rec.compression,
            rec.stored_len,
            rec.uncompressed_len
        ));
    }
    None
}

/// Reads an image from any `Read + Seek`.
pub struct ImageReader<R> {
    r: R,
    o: Arc<Opened>,
}

impl<R: Read + Seek> ImageReader<R> {
    /// Opens an image for restore: footer, header, root hash, index decoding and every structural
    /// rule must pass.
    pub fn open(r: R) -> Result<ImageReader<R>, ImageError> {
        Self::open_inner(r, true)
    }

    /// Opens an image for [`Self::verify`]: like [`Self::open`], except that structural problems
    /// of an intact index are kept in [`Self::index_problems`] (and reported by verify) instead of
    /// failing. Do not restore from a reader opened this way without checking them.
    pub fn open_for_verify(r: R) -> Result<ImageReader<R>, ImageError> {
        Self::open_inner(r, false)
    }

    fn open_inner(mut r: R, strict: bool) -> Result<ImageReader<R>, ImageError> {
        let file_len = r
            .seek(SeekFrom::End(0))
            .map_err(read_err(0, "image size"))?;
        let o = Opened::open(&mut SeekSource(&mut r), file_len, strict)?;
        Ok(ImageReader { r, o: Arc::new(o) })
    }

    /// Reads, checks and decompresses one chunk.
    pub fn read_chunk(&mut self, id: ChunkId) -> Result<Vec<u8>, ImageError> {
        let r = &mut self.r;
        self.o.read_chunk(id, &mut |buf, at| {
            r.seek(SeekFrom::Start(at))?;
            r.read_exact(buf)
        })
    }

    /// A reader for other threads over `file`, which must hold the same image (for example
    /// `Arc::new(file.try_clone()?)`); the index is shared, not re-read.
    pub fn shared<F: ReadAt>(&self, file: Arc<F>) -> SharedReader<F> {
        SharedReader {
            f: file,
            o: Arc::clone(&self.o),
        }
    }

    pub fn into_inner(self) -> R {
        self.r
    }
}

impl<R> ImageReader<R> {
    pub fn header(&self) -> &Header {
        &self.o.header
    }
    pub fn index(&self) -> &Index {
        &self.o.index
    }
    /// blake3 over the header and the index, as recorded in the footer and checked at open.
    pub fn root_hash(&self) -> Hash {
        self.o.footer.root_hash
    }
    /// Structural problems found at open (always empty for [`Self::open`]).
    pub fn index_problems(&self) -> &[String] {
        &self.o.problems
    }
    /// Where a chunk belongs on the disk (its first reference).
    pub fn locate(&self, chunk: ChunkId) -> Option<ChunkLocation> {
        self.o.locate(chunk)
    }
    /// Size of the image file.
    pub fn file_len(&self) -> u64 {
        self.o.file_len
    }
    pub(crate) fn state(&self) -> Arc<Opened> {
        Arc::clone(&self.o)
    }
}

/// A cloneable, `Send + Sync` reader using positional reads, for parallel restore and verify.
pub struct SharedReader<F> {
    f: Arc<F>,
    o: Arc<Opened>,
}

impl<F> Clone for SharedReader<F> {
    fn clone(&self) -> Self {
        SharedReader {
            f: Arc::clone(&self.f),
            o: Arc::clone(&self.o),
        }
    }
}

impl<F: ReadAt> SharedReader<F> {
    /// Opens an image strictly, like [`ImageReader::open`].
    pub fn open(file: Arc<F>) -> Result<SharedReader<F>, ImageError> {
        let file_len = file.size().map_err(read_err(0, "image size"))?;
        let o = Opened::open(&mut AtSource(&*file), file_len, true)?;
        Ok(SharedReader {
            f: file,
            o: Arc::new(o),
        })
    }

    /// Reads, checks and decompresses one chunk; callable from many threads at once.
    pub fn read_chunk(&self, id: ChunkId) -> Result<Vec<u8>, ImageError> {
        let f = &*self.f;
        self.o
            .read_chunk(id, &mut |buf, at| f.read_exact_at(buf, at))
    }

    /// The chunk's payload as stored (compressed as its record says), after checking it: it is
    /// decompressed and hashed, so what is returned is known to be the chunk. For copying chunks into
    /// another store without compressing them again.
    pub fn read_stored(&self, id: ChunkId) -> Result<(ChunkRecord, Vec<u8>), ImageError> {
        let f = &*self.f;
        let (rec, payload) = self
            .o
            .read_payload(id, &mut |buf, at| f.read_exact_at(buf, at))?;
        super::chunk::decompress_chunk(rec.compression, &payload, rec.uncompressed_len, &rec.hash)
            .map_err(|reason| self.o.damaged(id, rec, reason))?;
        Ok((*rec, payload))
    }

    /// [`Self::read_chunk`] into a reusable, page-aligned buffer (replaced if too small), the frame read
    /// into `scratch` with one request (direct I/O where the file does it).
    pub fn read_chunk_into(
        &self,
        id: ChunkId,
        out: &mut AlignedBuf,
        scratch: &mut AlignedBuf,
    ) -> Result<(), ImageError> {
        self.o.read_frame_into(id, &*self.f, scratch, out)
    }

    pub fn header(&self) -> &Header {
        &self.o.header
    }
    pub fn index(&self) -> &Index {
        &self.o.index
    }
    pub fn root_hash(&self) -> Hash {
        self.o.footer.root_hash
    }
    /// Size of the image file.
    pub fn file_len(&self) -> u64 {
        self.o.file_len
    }
    pub fn locate(&self, chunk: ChunkId) -> Option<ChunkLocation> {
        self.o.locate(chunk)
    }
    pub(crate) fn state(&self) -> Arc<Opened> {
        Arc::clone(&self.o)
    }
}
