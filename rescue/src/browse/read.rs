//! A file's content as a list of pieces (on disk, zeros, bytes held in metadata, compressed units), and
//! the reader over them.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use super::{ntfs, BrowseError, Vol};
use crate::image::ReadAt;

/// Where a piece of a file's content comes from.
#[derive(Debug, Clone)]
pub(crate) enum Src {
    /// Bytes on the partition from this offset.
    Disk(u64),
    /// Zeros: a hole, an unwritten extent, bytes past the valid data length.
    Zero,
    /// Bytes kept in the metadata (resident or inline data).
    Bytes(Arc<Vec<u8>>),
    /// One LZNT1-compressed unit (NTFS), stored in these (offset, length) ranges of the partition.
    Lznt1(Vec<(u64, u64)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Piece {
    /// Offset in the file.
    pub at: u64,
    pub len: u64,
    pub src: Src,
}

/// Pieces in file order, built by a reader; adjacent disk pieces that continue each other merge.
#[derive(Debug, Default)]
pub(crate) struct Pieces {
    pub list: Vec<Piece>,
}

impl Pieces {
    /// Adds `len` bytes at file offset `at` from `src`; a piece must start at or after the previous
    /// one's end (the caller checked).
    pub fn push(&mut self, at: u64, len: u64, src: Src) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.list.last_mut() {
            if last.at + last.len == at {
                match (&last.src, &src) {
                    (Src::Disk(a), Src::Disk(b)) if a + last.len == *b => {
                        last.len += len;
                        return;
                    }
                    (Src::Zero, Src::Zero) => {
                        last.len += len;
                        return;
                    }
                    _ => {}
                }
            }
        }
        self.list.push(Piece { at, len, src });
    }

    /// The end of the last piece.
    pub fn end(&self) -> u64 {
        self.list.last().map_or(0, |p| p.at + p.len)
    }
}

/// Reads one file's content: [`Read`] + [`Seek`], or positioned reads with [`FileReader::read_at`].
pub struct FileReader {
    vol: Vol,
    size: u64,
    pieces: Arc<Vec<Piece>>,
    pos: u64,
    /// The last decompressed unit: its file offset and bytes.
    unit: Option<(u64, Vec<u8>)>,
    what: String,
}

impl FileReader {
    /// A reader of `size` bytes made of `pieces` (sorted, non-overlapping; gaps read as zeros).
    pub(crate) fn new(vol: Vol, size: u64, pieces: Pieces, what: String) -> FileReader {
        FileReader::shared(vol, size, Arc::new(pieces.list), what)
    }

    /// A reader over pieces another reader may share.
    pub(crate) fn shared(vol: Vol, size: u64, pieces: Arc<Vec<Piece>>, what: String) -> FileReader {
        FileReader {
            vol,
            size,
            pieces,
            pos: 0,
            unit: None,
            what,
        }
    }

    /// How many pieces the content is in (tests prove fragmentation with it).
    #[cfg(test)]
    pub(crate) fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    /// The content's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads up to `buf.len()` bytes at `offset`; 0 at or past the end.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, BrowseError> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.size - offset) as usize;
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let i = self.pieces.partition_point(|p| p.at + p.len <= pos);
            let rest = want - done;
            let Some(p) = self.pieces.get(i).filter(|p| p.at <= pos) else {
                // A gap before the next piece (or after the last): zeros.
                let next = self.pieces.get(i).map_or(u64::MAX, |p| p.at);
                let n = (next - pos).min(rest as u64) as usize;
                buf[done..done + n].fill(0);
                done += n;
                continue;
            };
            let inside = pos - p.at;
            let n = (p.len - inside).min(rest as u64) as usize;
            let out = &mut buf[done..done + n];
            match &p.src {
                Src::Disk(at) => self.vol.read_into(at + inside, out, &self.what)?,
                Src::Zero => out.fill(0),
                Src::Bytes(b) => {
                    let from = usize::try_from(inside).unwrap_or(usize::MAX);
                    match b.get(from..from.saturating_add(n)) {
                        Some(s) => out.copy_from_slice(s),
                        None => out.fill(0),
                    }
                }
                Src::Lznt1(ranges) => {
                    if self.unit.as_ref().is_none_or(|(at, _)| *at != p.at) {
                        let data = ntfs::decompress_unit(&self.vol, ranges, p.len, &self.what)?;
                        self.unit = Some((p.at, data));
                    }
                    let data = self.unit.as_ref().map_or(&[][..], |(_, d)| d.as_slice());
                    let from = inside as usize;
                    match data.get(from..from + n) {
                        Some(s) => out.copy_from_slice(s),
                        None => out.fill(0),
                    }
                }
            }
            done += n;
        }
        Ok(done)
    }

    /// The whole content, when it is at most `limit` bytes.
    pub fn read_all(&mut self, limit: u64) -> Result<Vec<u8>, BrowseError> {
        if self.size > limit {
            return Err(self.vol.corrupt(
                &self.what,
                0,
                format!("it claims {} bytes, more than {limit}", self.size),
            ));
        }
        let mut out = vec![0u8; self.size as usize];
        let n = self.read_at(0, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("what", &self.what)
            .field("size", &self.size)
            .field("pieces", &self.pieces.len())
            .finish()
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(self.pos, buf).map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for FileReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let pos = base.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.pos = pos;
        Ok(pos)
    }
}

/// [`Read`] + [`Seek`] over a [`ReadAt`], for detection's probes.
pub(crate) struct Cursor {
    part: Arc<dyn ReadAt>,
    pos: u64,
}

impl Cursor {
    pub fn new(part: Arc<dyn ReadAt>) -> Cursor {
        Cursor { part, pos: 0 }
    }
}

impl Read for Cursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.part.size()?;
        let n = (buf.len() as u64).min(size.saturating_sub(self.pos)) as usize;
        self.part.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let base = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.part.size()?.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = base.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}
