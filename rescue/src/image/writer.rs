//! [`ImageWriter`]: appends an image to any `Write`, front to back, never seeking.
//!
//! The capture engine's single writer thread owns it: worker threads hash and compress chunks
//! ([`super::ChunkCompressor`]), the writer only appends frames in order and keeps the index in
//! memory (one small record per chunk and per extent, never chunk data). Extents must be pushed
//! in stream order, so a hole or an overlap is caught the moment it happens rather than after
//! hours of capture. The disk description and creation info come with `finish`, which refuses any
//! stream not covered to its end and checks the whole index against the reader's rules, so a
//! finished image is one the strict reader accepts.

use std::collections::HashMap;
use std::io::Write;

use super::format::{Footer, FrameHeader, Header, FEATURE_CHUNK_SLICES};
use super::index::{
    ChunkRecord, CreationInfo, DiskInfo, Extent, ExtentKind, Index, RawSection, Stream, StreamInfo,
    FIRST_APPLICATION_TAG, TAG_CRITICAL,
};
use super::{
    ChunkId, CompressedChunk, Compression, Hash, ImageError, ImageId, StreamId, FRAME_HEADER_LEN,
    MAX_CHUNK_SIZE, MAX_STRING_LEN, MIN_CHUNK_SIZE,
};

/// zstd level for the index: its bulk is hashes, which do not compress, so a high level only
/// costs time.
const INDEX_ZSTD_LEVEL: i32 = 3;

/// What goes into the header, before any chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageHeaderInfo {
    pub image_id: ImageId,
    /// Nominal uncompressed chunk size ([`super::MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// Allow [`ImageWriter::push_slice`] (sets required feature bit 3 in the header, which is written
    /// first, so the choice is made before any extent is known).
    pub slices: bool,
}

impl ImageHeaderInfo {
    /// A header for a new image (fresh [`ImageId`]) with this nominal chunk size.
    pub fn new(chunk_size: u32) -> ImageHeaderInfo {
        ImageHeaderInfo {
            image_id: ImageId::generate(),
            chunk_size,
            slices: false,
        }
    }
}

/// What only goes into the index, given when finishing: by then the engine knows every note, and
/// the disk description cannot go stale during a long capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexExtras {
    pub creation: CreationInfo,
    /// The source disk; every stream must lie within it and every partition stream's number must
    /// be in its partition list.
    pub disk: DiskInfo,
    /// Appended to [`CreationInfo::notes`] (after those given with [`ImageWriter::add_note`]).
    pub notes: Vec<String>,
    /// Application sections (tags `0x1_0000..=0x7fff_ffff`), kept by readers that do not know them.
    pub sections: Vec<RawSection>,
}

impl IndexExtras {
    pub fn new(creation: CreationInfo, disk: DiskInfo) -> IndexExtras {
        IndexExtras {
            creation,
            disk,
            notes: Vec::new(),
            sections: Vec::new(),
        }
    }
}

/// The result of [`ImageWriter::finish`].
#[derive(Debug)]
pub struct FinishedImage<W> {
    /// The writer, flushed; fsync and rename are the caller's.
    pub inner: W,
    /// blake3 over the header and the uncompressed index; it identifies the image's whole content.
    pub root_hash: Hash,
    /// Size of the image file.
    pub bytes_written: u64,
    pub index_offset: u64,
    /// Compressed size of the index in the file.
    pub index_stored_len: u64,
    /// Uncompressed size of the index.
    pub index_len: u64,
    /// Distinct chunks stored.
    pub chunks: u64,
    /// Bytes the streams hold that are stored once for several places ([`Index::repeated_bytes`]).
    pub repeated_bytes: u64,
}

/// Where chunk frames go instead of the image's own byte stream: a repository's chunk store. The image
/// written then holds only its header, index and footer, and the index still gives each chunk the
/// offset its frame has in the self-contained image (the frames laid back to back after the header), so
/// the two are one image: exporting the snapshot is writing the frames back at those offsets, and the
/// root hash is the same.
pub trait ChunkSink: Send {
    /// Keeps the chunk unless the store has one with the same hash and length already. Returns how the
    /// stored copy's payload is compressed and its length (an existing copy may differ from `payload`:
    /// another capture may have compressed it at another level).
    fn put(
        &mut self,
        hash: &Hash,
        uncompressed_len: u32,
        payload: &[u8],
        compression: Compression,
    ) -> std::io::Result<(Compression, u32)>;

    /// The chunk a capture worker found in the store already ([`ChunkLookup`]) and did not compress:
    /// its stored copy's compression and length, or an error when it is no longer there whole.
    fn reuse(&mut self, hash: &Hash, uncompressed_len: u32) -> std::io::Result<(Compression, u32)>;
}

/// Whether a store holds a chunk already, asked by the capture's workers before they compress one: a
/// chunk the repository has is hashed only, not compressed again.
pub trait ChunkLookup: Sync {
    /// The stored copy's compression and payload length, if the store has this chunk whole.
    fn stored(&self, hash: &Hash, uncompressed_len: u32) -> Option<(Compression, u32)>;
}

struct OpenStream {
    stream: Stream,
    /// Where the next extent must start.
    pos: u64,
}

/// Writes one image. See the module documentation for the order of calls.
pub struct ImageWriter<W: Write> {
    w: W,
    offset: u64,
    header_bytes: Vec<u8>,
    required_features: u64,
    optional_features: u64,
    /// Notes given during capture, for [`CreationInfo::notes`].
    notes: Vec<String>,
    streams: Vec<OpenStream>,
    chunks: Vec<ChunkRecord>,
    by_hash: HashMap<(Hash, u32), ChunkId>,
    /// Set when a write failed: the byte count is then unknown, so nothing more may be written.
    poisoned: bool,
    /// Where frames go when not into `w` (a repository snapshot).
    sink: Option<Box<dyn ChunkSink>>,
}

fn invalid(reason: String) -> ImageError {
    ImageError::InvalidUse { reason }
}

impl<W: Write> ImageWriter<W> {
    /// Writes the header. `w` need not be seekable (stdout works); wrap unbuffered writers in a
    /// `BufWriter`, since frame headers are written separately from their payloads.
    pub fn new(w: W, info: ImageHeaderInfo) -> Result<ImageWriter<W>, ImageError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&info.chunk_size) {
            return Err(invalid(format!(
                "chunk size {} is outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                info.chunk_size
            )));
        }
        let mut header = Header::new(info.image_id, info.chunk_size);
        if info.slices {
            header.required_features |= FEATURE_CHUNK_SLICES;
        }
        let mut writer = ImageWriter {
            w,
            offset: 0,
            header_bytes: header.encode().to_vec(),
            required_features: header.required_features,
            optional_features: header.optional_features,
            notes: Vec::new(),
            streams: Vec::new(),
            chunks: Vec::new(),
            by_hash: HashMap::new(),
            poisoned: false,
            sink: None,
        };
        let header_bytes = writer.header_bytes.clone();
        writer.append(&[&header_bytes])?;
        Ok(writer)
    }

    fn append(&mut self, parts: &[&[u8]]) -> Result<(), ImageError> {
        if self.poisoned {
            return Err(ImageError::Poisoned);
        }
        for p in parts {
            if let Err(error) = self.w.write_all(p) {
                self.poisoned = true;
                return Err(ImageError::Write {
                    offset: self.offset,
                    error,
                });
            }
            self.offset += p.len() as u64;
        }
        Ok(())
    }

    /// Send chunk frames to `sink` instead of into the image ([`ChunkSink`]); before the first chunk.
    pub fn set_sink(&mut self, sink: Box<dyn ChunkSink>) -> Result<(), ImageError> {
        if !self.chunks.is_empty() {
            return Err(invalid(
                "a chunk sink must be set before the first chunk".into(),
            ));
        }
        self.sink = Some(sink);
        Ok(())
    }

    /// Bytes written so far (the image offset of the next frame).
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Distinct chunks written so far.
    pub fn chunk_count(&self) -> u64 {
        self.chunks.len() as u64
    }

    /// Adds a note for the user to the creation info.
    pub fn add_note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Declares a stream; its extents follow with `push_extent`/`push_data`, in order.
    pub fn begin_stream(&mut self, info: StreamInfo) -> Result<StreamId, ImageError> {
        let name = info.describe();
        if info.label.len() > MAX_STRING_LEN || info.capture_reason.len() > MAX_STRING_LEN {
            return Err(invalid(format!(
                "the label or capture reason of {name} is longer than {MAX_STRING_LEN} bytes"
            )));
        }
        // The disk is only known at `finish`, which checks the stream against it; overflow can be
        // refused now.
        if info.disk_offset.checked_add(info.length).is_none() {
            return Err(invalid(format!(
                "{name} at disk offset {} with length {} ends beyond 2^64",
                info.disk_offset, info.length
            )));
        }
        let id =
            u32::try_from(self.streams.len()).map_err(|_| invalid("too many streams".into()))?;
        self.streams.push(OpenStream {
            stream: Stream {
                info,
                used_bytes: 0,
                stored_bytes: 0,
                extents: Vec::new(),
            },
            pos: 0,
        });
        Ok(StreamId(id))
    }

    /// Records the next range of `stream`, which must start where the previous one ended. Empty
    /// Zero/Unused/Unreadable ranges are ignored; adjacent ones of the same kind are merged.
    pub fn push_extent(
        &mut self,
        stream: StreamId,
        offset: u64,
        len: u64,
        kind: ExtentKind,
    ) -> Result<(), ImageError> {
        match kind {
            ExtentKind::Data(id) => return self.push_data(stream, offset, len, id),
            ExtentKind::Slice { chunk, at } => {
                return self.push_slice(stream, offset, len, chunk, at)
            }
            ExtentKind::Zero | ExtentKind::Unused | ExtentKind::Unreadable => {}
        }
        let s = self.open_stream(stream, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        s.pos += len;
        if let Some(last) = s.stream.extents.last_mut() {
            if last.kind == kind {
                last.len += len;
                return Ok(());
            }
        }
        s.stream.extents.push(Extent { offset, len, kind });
        Ok(())
    }

    /// Records that `stream[offset..offset + len]` holds chunk `chunk` (`len` must be its length).
    pub fn push_data(
        &mut self,
        stream: StreamId,
        offset: u64,
        len: u64,
        chunk: ChunkId,
    ) -> Result<(), ImageError> {
        let c = self.chunk(chunk)?;
        if u64::from(c.uncompressed_len) != len {
            return Err(invalid(format!(
                "{chunk} holds {} bytes, but the extent at offset {offset} of {stream} is {len} \
                 bytes long",
                c.uncompressed_len
            )));
        }
        self.push_checked(stream, offset, len, ExtentKind::Data(chunk))
    }

    /// Records that `stream[offset..offset + len]` holds bytes `at..at + len` of chunk `chunk`. Needs a
    /// writer made with [`ImageHeaderInfo::slices`].
    pub fn push_slice(
        &mut self,
        stream: StreamId,
        offset: u64,
        len: u64,
        chunk: ChunkId,
        at: u32,
    ) -> Result<(), ImageError> {
        if self.required_features & FEATURE_CHUNK_SLICES == 0 {
            return Err(invalid(
                "a slice extent needs a writer made with slices allowed (required feature bit 3)"
                    .into(),
            ));
        }
        let c = self.chunk(chunk)?;
        if len == 0 || u64::from(at) + len > u64::from(c.uncompressed_len) {
            return Err(invalid(format!(
                "{chunk} holds {} bytes: the extent at offset {offset} of {stream} cannot take {len} \
                 bytes from byte {at}",
                c.uncompressed_len
            )));
        }
        self.push_checked(stream, offset, len, ExtentKind::Slice { chunk, at })
    }

    /// Appends an extent whose chunk was checked, after checking its place in the stream.
    fn push_checked(
        &mut self,
        stream: StreamId,
        offset: u64,
        len: u64,
        kind: ExtentKind,
    ) -> Result<(), ImageError> {
        let s = self.open_stream(stream, offset, len)?;
        s.pos += len;
        s.stream.extents.push(Extent { offset, len, kind });
        Ok(())
    }

    fn chunk(&self, chunk: ChunkId) -> Result<&ChunkRecord, ImageError> {
        usize::try_from(chunk.0)
            .ok()
            .and_then(|i| self.chunks.get(i))
            .ok_or(ImageError::NoSuchChunk {
                chunk,
                chunks: self.chunks.len() as u64,
            })
    }

    /// The stream, after checking that `offset..offset + len` is its next range.
    fn open_stream(
        &mut self,
        stream: StreamId,
        offset: u64,
        len: u64,
    ) -> Result<&mut OpenStream, ImageError> {
        let streams = self.streams.len() as u64;
        let s = self
            .streams
            .get_mut(stream.0 as usize)
            .ok_or(ImageError::NoSuchStream { stream, streams })?;
        if offset != s.pos {
            return Err(invalid(format!(
                "the next extent of {stream} must start at offset {}, not {offset} \
                 (extents must be pushed in order, without holes or overlaps)",
                s.pos
            )));
        }
        if offset
            .checked_add(len)
            .is_none_or(|end| end > s.stream.info.length)
        {
            return Err(invalid(format!(
                "the extent at offset {offset} of {stream} with length {len} runs past the \
                 stream's end ({})",
                s.stream.info.length
            )));
        }
        Ok(s)
    }

    /// The chunk already stored with these uncompressed bytes, if any, so the caller can
    /// reference it instead of writing the data again.
    pub fn has_chunk(&self, hash: &Hash, uncompressed_len: u32) -> Option<ChunkId> {
        self.by_hash.get(&(*hash, uncompressed_len)).copied()
    }

    /// Appends one chunk frame and returns its id. `payload` is what [`super::compress_chunk`]
    /// produced; the hash is trusted (verify checks it later). A chunk with the same hash and
    /// length as one already stored is not written again: its existing id is returned.
    pub fn write_chunk(
        &mut self,
        hash: Hash,
        uncompressed_len: u32,
        payload: &[u8],
        compression: Compression,
    ) -> Result<ChunkId, ImageError> {
        if let Some(id) = self.has_chunk(&hash, uncompressed_len) {
            return Ok(id);
        }
        if uncompressed_len == 0 || uncompressed_len > MAX_CHUNK_SIZE {
            return Err(invalid(format!(
                "a chunk must hold 1..={MAX_CHUNK_SIZE} bytes, not {uncompressed_len}"
            )));
        }
        let stored_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let fits = match compression {
            Compression::Stored => stored_len == uncompressed_len,
            Compression::Zstd => stored_len > 0 && stored_len <= uncompressed_len,
        };
        if !fits {
            return Err(invalid(format!(
                "a {compression:?} payload of {} bytes cannot hold {uncompressed_len} bytes \
                 (store incompressible data as Stored)",
                payload.len()
            )));
        }
        let id = ChunkId(self.chunks.len() as u64);
        let offset = self.offset;
        let (compression, stored_len) = match &mut self.sink {
            Some(sink) => {
                if self.poisoned {
                    return Err(ImageError::Poisoned);
                }
                let kept = sink.put(&hash, uncompressed_len, payload, compression);
                let (compression, stored_len) = kept.map_err(|error| {
                    self.poisoned = true;
                    ImageError::Write { offset, error }
                })?;
                // The frame's place in the image as if it were here.
                self.offset += (FRAME_HEADER_LEN as u64) + u64::from(stored_len);
                (compression, stored_len)
            }
            None => {
                let frame = FrameHeader {
                    compression,
                    chunk_id: id.0,
                    stored_len,
                    uncompressed_len,
                    hash,
                }
                .encode();
                self.append(&[&frame, payload])?;
                (compression, stored_len)
            }
        };
        self.chunks.push(ChunkRecord {
            offset,
            stored_len,
            uncompressed_len,
            compression,
            hash,
        });
        self.by_hash.insert((hash, uncompressed_len), id);
        Ok(id)
    }

    /// [`Self::write_chunk`] for a chunk made by [`super::ChunkCompressor`] (or found in the sink's
    /// store already, [`CompressedChunk::stored_elsewhere`]).
    pub fn write_compressed(&mut self, c: &CompressedChunk) -> Result<ChunkId, ImageError> {
        if c.stored_elsewhere.is_none() {
            return self.write_chunk(c.hash, c.uncompressed_len, &c.payload, c.compression);
        }
        if let Some(id) = self.has_chunk(&c.hash, c.uncompressed_len) {
            return Ok(id);
        }
        if self.poisoned {
            return Err(ImageError::Poisoned);
        }
        let offset = self.offset;
        let Some(sink) = &mut self.sink else {
            return Err(invalid(
                "a chunk stored elsewhere needs a writer with a chunk sink".into(),
            ));
        };
        let (compression, stored_len) =
            sink.reuse(&c.hash, c.uncompressed_len).map_err(|error| {
                self.poisoned = true;
                ImageError::Write { offset, error }
            })?;
        let id = ChunkId(self.chunks.len() as u64);
        self.offset += (FRAME_HEADER_LEN as u64) + u64::from(stored_len);
        self.chunks.push(ChunkRecord {
            offset,
            stored_len,
            uncompressed_len: c.uncompressed_len,
            compression,
            hash: c.hash,
        });
        self.by_hash.insert((c.hash, c.uncompressed_len), id);
        Ok(id)
    }

    /// Checks that every stream is covered, writes the index and the footer, and flushes.
    pub fn finish(mut self, extras: IndexExtras) -> Result<FinishedImage<W>, ImageError> {
        if self.poisoned {
            return Err(ImageError::Poisoned);
        }
        for x in &extras.sections {
            if !(FIRST_APPLICATION_TAG..TAG_CRITICAL).contains(&x.tag) {
                return Err(invalid(format!(
                    "section tag {:#x} is outside the application range {FIRST_APPLICATION_TAG:#x}..{TAG_CRITICAL:#x}",
                    x.tag
                )));
            }
        }
        let mut streams = Vec::with_capacity(self.streams.len());
        let mut counted_by = vec![0u32; self.chunks.len()];
        for (i, s) in std::mem::take(&mut self.streams).into_iter().enumerate() {
            let mut stream = s.stream;
            if s.pos != stream.info.length {
                return Err(ImageError::StreamIncomplete {
                    stream: StreamId(i as u32),
                    covered: s.pos,
                    length: stream.info.length,
                });
            }
            let mut unused = 0u64;
            for x in &stream.extents {
                match x.kind {
                    ExtentKind::Unused => unused += x.len,
                    ExtentKind::Data(id) | ExtentKind::Slice { chunk: id, .. } => {
                        // Ids were checked by push_data/push_slice; each chunk counts once per stream.
                        if let Some(mark) = counted_by.get_mut(id.0 as usize) {
                            if *mark != i as u32 + 1 {
                                *mark = i as u32 + 1;
                                stream.stored_bytes +=
                                    u64::from(self.chunks[id.0 as usize].stored_len);
                            }
                        }
                    }
                    ExtentKind::Zero | ExtentKind::Unreadable => {}
                }
            }
            stream.used_bytes = stream.info.length - unused;
            streams.push(stream);
        }
        let mut creation = extras.creation;
        creation.notes.append(&mut self.notes);
        creation.notes.extend(extras.notes);
        let index = Index {
            creation,
            disk: extras.disk,
            streams,
            chunks: std::mem::take(&mut self.chunks),
            extras: extras.sections,
        };
        // The full set of reader rules, so this writer never produces an image that a reader
        // refuses (streams beyond the disk, unknown partition numbers, and bugs of our own).
        let problems = index.validate();
        if !problems.is_empty() {
            return Err(invalid(format!(
                "the index would be inconsistent: {}",
                problems.join("; ")
            )));
        }
        let bytes = index.encode()?;
        let repeated_bytes = index.repeated_bytes();
        drop(index);
        let mut h = blake3::Hasher::new();
        h.update(&self.header_bytes);
        h.update(&bytes);
        let root_hash = Hash(*h.finalize().as_bytes());
        let compressed = zstd::bulk::compress(&bytes, INDEX_ZSTD_LEVEL)
            .map_err(|source| ImageError::Compress { source })?;
        let index_offset = self.offset;
        let footer = Footer {
            index_offset,
            index_stored_len: compressed.len() as u64,
            index_len: bytes.len() as u64,
            root_hash,
            required_features: self.required_features,
            optional_features: self.optional_features,
        }
        .encode();
        self.append(&[&compressed, &footer])?;
        if let Err(error) = self.w.flush() {
            return Err(ImageError::Write {
                offset: self.offset,
                error,
            });
        }
        Ok(FinishedImage {
            inner: self.w,
            root_hash,
            bytes_written: self.offset,
            index_offset,
            index_stored_len: compressed.len() as u64,
            index_len: bytes.len() as u64,
            chunks: counted_by.len() as u64,
            repeated_bytes,
        })
    }
}
