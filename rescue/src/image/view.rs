//! An image read as the disk (or the one partition) it holds: positioned reads of the disk's bytes, each
//! answered from the chunks the index places there, checked against their hashes as every chunk read is
//! (docs/FORMAT.md §10.2). Zero, Unused and Unreadable extents and bytes outside every stream read as
//! zeros; [`DiskView::data`] says where the bytes the image holds are, so a writer can leave the rest
//! sparse. For exporting to virtual disk formats, serving over NBD and browsing files.

use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::index::{ExtentKind, StreamKind};
use super::{ChunkId, ImageError, ReadAt, SharedReader};

/// What a disk range holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// Bytes of this chunk, from this offset in it.
    Chunk(ChunkId, u64),
    /// Zeros (Zero, Unused, Unreadable extents).
    Zeros,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    start: u64,
    len: u64,
    holds: Holds,
}

/// Which streams a view is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Every stream, at its place on the disk.
    Disk,
    /// The tables, the gaps and this partition at their places on the disk (the other partitions'
    /// space reads as zeros).
    DiskWith(u32),
    /// This partition's stream alone, from its first byte.
    Partition(u32),
}

/// How many decompressed chunks a view keeps unless told otherwise (chunks are at most a few MiB each):
/// enough for reading in order with read-ahead.
pub const CACHED: usize = 8;

/// An image as the disk (or partition) it holds; see the module's documentation.
pub struct DiskView<F> {
    reader: SharedReader<F>,
    size: u64,
    pieces: Vec<Piece>,
    /// The chunks read last, the most recently used last.
    cache: Mutex<Vec<(ChunkId, Slot)>>,
    capacity: usize,
}

/// A cached chunk's bytes, filled by the first thread that needs them.
type Slot = Arc<Mutex<Option<Arc<Vec<u8>>>>>;

impl<F: ReadAt> DiskView<F> {
    /// The view of `select` in the image `reader` opened: an error when the image has no such partition
    /// stream, or when its streams overlap on the disk (the index's rules exclude that).
    pub fn new(reader: SharedReader<F>, select: Select) -> Result<DiskView<F>, String> {
        let index = reader.index();
        let mut pieces = Vec::new();
        let mut size = index.disk.size;
        let mut found = false;
        for s in &index.streams {
            let (base, keep) = match (select, s.info.kind) {
                (Select::Disk, _) => (s.info.disk_offset, true),
                (Select::DiskWith(n), StreamKind::Partition { number }) => {
                    found |= number == n;
                    (s.info.disk_offset, number == n)
                }
                (Select::DiskWith(_), _) => (s.info.disk_offset, true),
                (Select::Partition(n), StreamKind::Partition { number }) if number == n => {
                    found = true;
                    size = s.info.length;
                    (0, true)
                }
                (Select::Partition(_), _) => (0, false),
            };
            if !keep {
                continue;
            }
            if matches!(s.info.kind, StreamKind::WholeDisk) {
                size = size.max(s.info.length);
            }
            for e in &s.extents {
                let holds = match e.kind {
                    ExtentKind::Data(id) => Holds::Chunk(id, 0),
                    ExtentKind::Slice { chunk, at } => Holds::Chunk(chunk, u64::from(at)),
                    ExtentKind::Zero | ExtentKind::Unused | ExtentKind::Unreadable => Holds::Zeros,
                };
                let start = base.saturating_add(e.offset);
                if e.len > 0 {
                    pieces.push(Piece {
                        start,
                        len: e.len,
                        holds,
                    });
                }
            }
        }
        match select {
            Select::DiskWith(n) | Select::Partition(n) if !found => {
                let have: Vec<String> = index
                    .streams
                    .iter()
                    .filter_map(|s| match s.info.kind {
                        StreamKind::Partition { number } => Some(number.to_string()),
                        _ => None,
                    })
                    .collect();
                return Err(format!(
                    "the image holds no partition {n} (it holds {})",
                    if have.is_empty() {
                        "no partitions".to_string()
                    } else {
                        format!("partition {}", have.join(", "))
                    }
                ));
            }
            _ => {}
        }
        pieces.sort_by_key(|p| p.start);
        for w in pieces.windows(2) {
            if w[0].start.saturating_add(w[0].len) > w[1].start {
                return Err(format!(
                    "the image's streams overlap at disk byte {}: it cannot be read as one disk",
                    w[1].start
                ));
            }
        }
        if let Some(last) = pieces.last() {
            size = size.max(last.start.saturating_add(last.len));
        }
        Ok(DiskView {
            reader,
            size,
            pieces,
            cache: Mutex::new(Vec::new()),
            capacity: CACHED,
        })
    }

    /// Keep up to `chunks` decompressed chunks (at least one) instead of [`CACHED`]: for random reads
    /// over a working set larger than a few chunks (a disk served to a VM), each chunk read again costs
    /// a copy instead of a read, a hash and a decompression.
    pub fn with_cache(mut self, chunks: usize) -> Self {
        self.capacity = chunks.max(1);
        self
    }

    /// The ranges the image holds bytes for (Data and Slice extents), sorted and merged; everything else
    /// reads as zeros.
    pub fn data(&self) -> Vec<Range<u64>> {
        let mut out: Vec<Range<u64>> = Vec::new();
        for p in &self.pieces {
            if p.holds == Holds::Zeros {
                continue;
            }
            let r = p.start..p.start + p.len;
            match out.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => out.push(r),
            }
        }
        out
    }

    /// The bytes of the disk that the image could not read from its source (they read as zeros).
    pub fn unreadable_bytes(&self) -> u64 {
        let index = self.reader.index();
        index
            .streams
            .iter()
            .flat_map(|s| &s.extents)
            .filter(|e| e.kind == ExtentKind::Unreadable)
            .map(|e| e.len)
            .sum()
    }

    /// The image's reader (for its index and root hash).
    pub fn reader(&self) -> &SharedReader<F> {
        &self.reader
    }

    /// Chunk `id`'s bytes, from the cache or read and checked; a chunk another thread is reading is
    /// waited for rather than read twice.
    fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>, ImageError> {
        let slot: Slot;
        let mut bytes = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.iter().position(|(k, _)| *k == id) {
                Some(i) => {
                    // Least recently used first: a hit moves to the end.
                    let hit = cache.remove(i);
                    slot = Arc::clone(&hit.1);
                    cache.push(hit);
                    drop(cache);
                    slot.lock().unwrap_or_else(|p| p.into_inner())
                }
                None => {
                    slot = Arc::new(Mutex::new(None));
                    if cache.len() >= self.capacity {
                        cache.remove(0);
                    }
                    cache.push((id, Arc::clone(&slot)));
                    // Taken before the cache is released: others wait here until the bytes are in.
                    slot.lock().unwrap_or_else(|p| p.into_inner())
                }
            }
        };
        if let Some(b) = bytes.as_ref() {
            return Ok(Arc::clone(b));
        }
        // (Also when the thread that took the slot failed: each caller hears the error itself.)
        let b = Arc::new(self.reader.read_chunk(id)?);
        *bytes = Some(Arc::clone(&b));
        Ok(b)
    }
}

impl<F: ReadAt> ReadAt for DiskView<F> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.fill(0);
        // The first piece that ends after `offset`.
        let mut i = self.pieces.partition_point(|p| p.start + p.len <= offset);
        while let Some(p) = self.pieces.get(i) {
            if p.start >= end {
                break;
            }
            let from = p.start.max(offset);
            let to = (p.start + p.len).min(end);
            if let Holds::Chunk(id, at) = p.holds {
                let bytes = self.chunk(id).map_err(io::Error::other)?;
                let skip = at + (from - p.start);
                let src = usize::try_from(skip)
                    .ok()
                    .and_then(|s| bytes.get(s..s + (to - from) as usize))
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("chunk {id} is shorter than the extents that use it"),
                        )
                    })?;
                buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
            }
            i += 1;
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

/// Bytes `start..start + len` of another reader, read as a disk of their own: one partition of a disk.
pub struct Slice {
    inner: Arc<dyn ReadAt>,
    start: u64,
    len: u64,
}

impl Slice {
    /// The slice, or `UnexpectedEof` when it reaches past the end of `inner`.
    pub fn new(inner: Arc<dyn ReadAt>, start: u64, len: u64) -> io::Result<Slice> {
        let end = start.checked_add(len);
        if end.is_none_or(|end| end > inner.size().unwrap_or(0)) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("bytes {start}+{len} reach past the end of the disk"),
            ));
        }
        Ok(Slice { inner, start, len })
    }
}

impl ReadAt for Slice {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        self.inner.read_exact_at(buf, self.start + offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    #[test]
    fn a_slice_reads_its_range_and_nothing_past_it() {
        let disk: Arc<dyn ReadAt> = Arc::new((0..=255u8).cycle().take(4096).collect::<Vec<u8>>());
        let s = Slice::new(disk.clone(), 1000, 24).unwrap();
        assert_eq!(s.size().unwrap(), 24);
        let mut buf = [0u8; 4];
        s.read_exact_at(&mut buf, 20).unwrap();
        assert_eq!(buf, [(1020 % 256) as u8, 253, 254, 255]);
        assert!(s.read_exact_at(&mut buf, 21).is_err());
        assert!(s.read_exact_at(&mut buf, u64::MAX - 1).is_err());
        assert!(Slice::new(disk.clone(), 4000, 97).is_err());
        assert!(Slice::new(disk, u64::MAX, 2).is_err());
    }
}
