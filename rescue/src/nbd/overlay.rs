//! Copy-on-write: a writable export over a disk that is never written. Writes go to an overlay file as
//! large as the disk (sparse: only what is written takes space), at the same offsets, and a map in
//! memory records which 4 KiB blocks of it hold the export's bytes; reads take those blocks from the
//! overlay and every other byte from the disk. A write that covers part of a block not yet written
//! first copies the disk's block into the overlay (read-modify-write).
//!
//! The overlay lives as long as the server: the file is made new (an existing file is refused, so
//! that it can never be the disk itself nor an earlier overlay read without its map), and the map is
//! not saved. The file is left behind when the server stops, useless without the map; delete it.
//! Several connections share one overlay: reads hold the map's read lock, writes its write lock, so a
//! read sees a write whole or not at all.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use crate::image::ReadAt;

/// The overlay's unit: a block is written whole.
pub(crate) const BLOCK: u64 = 4096;
/// Words of one leaf of the map (64 blocks each): a leaf covers 128 MiB of the disk.
const LEAF_WORDS: usize = 512;
const LEAF_BLOCKS: u64 = LEAF_WORDS as u64 * 64;
/// Zeros are written in pieces of this size where the file system cannot punch holes.
const ZERO_PIECE: u64 = 1 << 20;

pub(crate) struct Overlay {
    file: File,
    path: PathBuf,
    size: u64,
    written: RwLock<Written>,
}

impl Overlay {
    /// A new, empty overlay for a disk of `size` bytes at `path` (which must not exist).
    pub(crate) fn create(path: &Path, size: u64) -> io::Result<Overlay> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                let why = if e.kind() == io::ErrorKind::AlreadyExists {
                    "it exists; an overlay is made new for each run (which blocks it holds is kept \
                     in memory only), so name a file that does not exist yet"
                        .to_string()
                } else {
                    format!("it cannot be made: {e}")
                };
                io::Error::new(e.kind(), format!("overlay {}: {why}", path.display()))
            })?;
        if let Err(e) = file.set_len(size) {
            let _ = std::fs::remove_file(path);
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "overlay {}: cannot be made {size} bytes long, the disk's size, on its file \
                     system: {e}; put it on another file system",
                    path.display()
                ),
            ));
        }
        Ok(Overlay {
            file,
            path: path.to_path_buf(),
            size,
            written: RwLock::new(Written::default()),
        })
    }

    fn err(&self, what: &str, at: u64, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!("overlay {}: {what} at byte {at}: {e}", self.path.display()),
        )
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, Written> {
        self.written.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Fill `buf` from `offset` (inside the disk): written blocks from the overlay, the rest from `base`.
    pub(crate) fn read(&self, base: &dyn ReadAt, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let map = self.map();
        let end = offset + buf.len() as u64;
        let mut at = offset;
        while at < end {
            let (written, run_end) = map.run(at, end);
            let piece = &mut buf[(at - offset) as usize..(run_end - offset) as usize];
            if written {
                FileExt::read_exact_at(&self.file, piece, at)
                    .map_err(|e| self.err("read", at, e))?;
            } else {
                base.read_exact_at(piece, at)?;
            }
            at = run_end;
        }
        Ok(())
    }

    /// Write `data` at `offset` (inside the disk).
    pub(crate) fn write(&self, base: &dyn ReadAt, data: &[u8], offset: u64) -> io::Result<()> {
        self.change(base, offset, data.len() as u64, || {
            self.file
                .write_all_at(data, offset)
                .map_err(|e| self.err("write", offset, e))
        })
    }

    /// Make `len` bytes at `offset` (inside the disk) read as zeros: holes punched in the overlay where
    /// the file system can, zeros written where it cannot.
    pub(crate) fn write_zeroes(&self, base: &dyn ReadAt, offset: u64, len: u64) -> io::Result<()> {
        self.change(base, offset, len, || {
            use nix::fcntl::{fallocate, FallocateFlags};
            let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            let punched = i64::try_from(offset).ok().zip(i64::try_from(len).ok());
            if let Some((at, n)) = punched {
                if fallocate(&self.file, flags, at, n).is_ok() {
                    return Ok(());
                }
            }
            let zeros = vec![0u8; len.min(ZERO_PIECE) as usize];
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(ZERO_PIECE) as usize;
                self.file
                    .write_all_at(&zeros[..n], at)
                    .map_err(|e| self.err("write", at, e))?;
                at += n as u64;
            }
            Ok(())
        })
    }

    /// Change `len` bytes at `offset` with `apply`, after copying from `base` the blocks it covers only
    /// in part and that are not written yet; then mark all of its blocks written.
    fn change(
        &self,
        base: &dyn ReadAt,
        offset: u64,
        len: u64,
        apply: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mut map = self.written.write().unwrap_or_else(|p| p.into_inner());
        let end = offset + len;
        let (first, last) = (offset / BLOCK, (end - 1) / BLOCK);
        for b in [first, last] {
            let start = b * BLOCK;
            let block_end = (start + BLOCK).min(self.size);
            let whole = offset <= start && end >= block_end;
            if !whole && !map.get(b) {
                let mut block = vec![0u8; (block_end - start) as usize];
                base.read_exact_at(&mut block, start)?;
                self.file
                    .write_all_at(&block, start)
                    .map_err(|e| self.err("write", start, e))?;
                map.set(b, b);
            }
        }
        apply()?;
        map.set(first, last);
        Ok(())
    }

    pub(crate) fn flush(&self) -> io::Result<()> {
        self.file.sync_data().map_err(|e| self.err("flush", 0, e))
    }

    /// The allocation over `len` bytes at `offset`: written blocks are data, the rest as `base` says
    /// (which may say less than it is asked: the answer then ends there).
    pub(crate) fn extents(
        &self,
        offset: u64,
        len: u64,
        base: impl Fn(u64, u64) -> Vec<(u64, u32)>,
    ) -> Vec<(u64, u32)> {
        let map = self.map();
        let end = offset + len;
        let mut out = Vec::new();
        let mut at = offset;
        while at < end && out.len() < super::proto::MAX_EXTENTS {
            let (written, run_end) = map.run(at, end);
            if written {
                out.push((run_end - at, 0));
            } else {
                let below = base(at, run_end - at);
                let covered: u64 = below.iter().map(|e| e.0).sum();
                out.extend(below);
                if covered < run_end - at {
                    break;
                }
            }
            at = run_end;
        }
        out
    }
}

/// Which blocks hold written bytes: a bitmap in leaves of 128 MiB of disk, made as they are first
/// written (memory follows what is written, not the disk's size).
#[derive(Default)]
pub(crate) struct Written {
    leaves: BTreeMap<u64, Box<[u64; LEAF_WORDS]>>,
}

impl Written {
    pub(crate) fn get(&self, block: u64) -> bool {
        let (leaf, bit) = (block / LEAF_BLOCKS, block % LEAF_BLOCKS);
        self.leaves
            .get(&leaf)
            .is_some_and(|l| l[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Mark blocks `first..=last`.
    pub(crate) fn set(&mut self, first: u64, last: u64) {
        for block in first..=last {
            let (leaf, bit) = (block / LEAF_BLOCKS, block % LEAF_BLOCKS);
            let l = self
                .leaves
                .entry(leaf)
                .or_insert_with(|| Box::new([0; LEAF_WORDS]));
            l[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    /// Whether the byte `at` is in a written block, and where (before `end`) that stops being so.
    pub(crate) fn run(&self, at: u64, end: u64) -> (bool, u64) {
        let mut block = at / BLOCK;
        let state = self.get(block);
        loop {
            block += 1;
            let next = block.saturating_mul(BLOCK);
            if next >= end {
                return (state, end);
            }
            // A leaf never written is all unwritten: skip it whole.
            if !state
                && block.is_multiple_of(LEAF_BLOCKS)
                && !self.leaves.contains_key(&(block / LEAF_BLOCKS))
            {
                block += LEAF_BLOCKS - 1;
                continue;
            }
            if self.get(block) != state {
                return (state, next);
            }
        }
    }
}
