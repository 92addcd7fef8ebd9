//! Used-block maps: which bytes of a filesystem capture must read.
//!
//! Capture reads only what a filesystem uses (like partclone), so images are small and fast. A used
//! block that is left out is silent data loss in what may be the user's only backup, so every parser
//! here errs one way only: when in doubt a byte is *used*. Anything a parser cannot vouch for — a
//! superblock that disagrees with itself, a bitmap that disagrees with its group descriptor, a journal
//! that still has to be replayed, a feature it does not know — ends in an [`FsError`], and the caller
//! captures the partition raw (every sector, zero-skipped) and records the error's text in the image.
//!
//! Parsers read metadata block by block through `Disk`, which refuses reads outside the partition
//! and bounds every allocation, so a hostile or damaged image can cost an error but never a panic or
//! an unbounded allocation. Ranges are collected by [`ranges::RangeSet`], which keeps memory bounded
//! on huge, badly fragmented filesystems by widening small gaps (reading a little free space rather
//! than missing anything).
//!
//! One file per filesystem family: `ext` (ext2/3/4), `fat` (FAT12/16/32), `exfat`, `ntfs`, `swap`;
//! `root` lists what a FAT or exFAT volume holds ([`root_names`]), to tell an empty volume.
//! XFS, Btrfs and the containers (LUKS, BitLocker, LVM) have no map yet: [`used_map`] returns
//! [`FsError::Unsupported`] for them. What each parser trusts, checks and refuses is in its own
//! overview; the tests (`tests_*`) prove on images made by the real tools that a copy holding only
//! the mapped bytes, with garbage everywhere else, still checks clean and yields every file.

mod exfat;
mod ext;
mod fat;
pub(crate) mod ntfs;
pub mod ranges;
mod root;
mod swap;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_exfat;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_ext;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_fat;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_misc;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_ntfs;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_root;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
pub(crate) mod testutil;

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::detect::FsKind;

pub use self::ranges::AlignedChunks;

/// Byte ranges, relative to the start of the filesystem (partition), holding data the filesystem
/// needs. Everything outside them is free space whose contents do not matter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedMap {
    /// The filesystem's allocation unit in bytes (block or cluster); ranges are not necessarily
    /// multiples of it (boot sectors, a backup boot sector in the last sector).
    pub block_size: u64,
    /// Sorted, non-overlapping, non-adjacent, non-empty, all within `[0, size)`.
    pub ranges: Vec<Range<u64>>,
    /// Sum of the ranges' lengths: what capture reads.
    pub used_bytes: u64,
    /// Size of the partition the map was made for.
    pub size: u64,
    pub fs: FsKind,
    /// Things a person should know that did not stop the map (stale free counts, bad clusters…).
    pub notes: Vec<String>,
}

impl UsedMap {
    /// A map that keeps everything: what raw capture reads.
    pub fn whole(size: u64, fs: FsKind) -> UsedMap {
        let ranges = std::iter::once(0..size).filter(|r| !r.is_empty()).collect();
        UsedMap {
            block_size: 512,
            ranges,
            used_bytes: size,
            size,
            fs,
            notes: Vec::new(),
        }
    }

    fn from_set(set: ranges::RangeSet, size: u64, block_size: u64, fs: FsKind) -> UsedMap {
        let (ranges, widened_gap) = set.finish(size);
        let used_bytes = ranges.iter().map(|r| r.end - r.start).sum();
        let mut notes = Vec::new();
        if let Some(gap) = widened_gap {
            notes.push(format!(
                "the filesystem is very fragmented: free gaps up to {gap} bytes are captured too, \
                 to keep the map's memory bounded"
            ));
        }
        UsedMap {
            block_size,
            ranges,
            used_bytes,
            size,
            fs,
            notes,
        }
    }

    /// Whether the byte at `offset` is used.
    pub fn contains(&self, offset: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= offset);
        self.ranges.get(i).is_some_and(|r| r.start <= offset)
    }

    /// The used parts of `window`, in order.
    pub fn used_within(&self, window: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        ranges::intersect(&self.ranges, window)
    }

    /// The `chunk`-aligned windows `[k·chunk, (k+1)·chunk) ∩ [0, size)` that hold at least one used
    /// byte, in order, each once: the reads of a capture that works in fixed-size chunks. A `chunk`
    /// of 0 is taken as 1.
    pub fn iter_aligned(&self, chunk: u64) -> AlignedChunks<'_> {
        AlignedChunks::new(&self.ranges, chunk, self.size)
    }
}

/// Why a filesystem got no used-block map. Every variant means "capture this partition raw"; the
/// caller says so, and records the message in the image and the log, so messages name the cause
/// and, where there is one, the remedy that makes later captures compact.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The filesystem, a feature it uses, or its state is not something we can map safely.
    #[error("no used-block map for {fs:?}: {reason}")]
    Unsupported { fs: FsKind, reason: String },
    /// The metadata contradicts itself or its partition: trusting it could miss used blocks.
    #[error(
        "{fs:?} metadata is inconsistent at byte {offset} of the partition: {reason} (a \
         filesystem check may repair it, so that later captures can be compact)"
    )]
    Inconsistent {
        fs: FsKind,
        offset: u64,
        reason: String,
    },
    /// Reading metadata failed: the device may be failing (raw capture records unreadable ranges).
    #[error("reading filesystem metadata at byte {offset} of the partition failed")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
}

impl FsError {
    /// The filesystem the error is about, when the error names one.
    pub fn fs(&self) -> Option<FsKind> {
        match self {
            FsError::Unsupported { fs, .. } | FsError::Inconsistent { fs, .. } => Some(*fs),
            FsError::Io { .. } => None,
        }
    }
}

/// Builds the used-block map of the filesystem `fs` that occupies the first `size` bytes of `dev`
/// (a partition, or a whole disk without a table). Reads only metadata, never writes.
pub fn used_map<R: Read + Seek>(dev: &mut R, size: u64, fs: FsKind) -> Result<UsedMap, FsError> {
    let mut disk = Disk::new(dev, size, fs);
    match fs {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => ext::used_map(&mut disk),
        FsKind::Vfat => fat::used_map(&mut disk),
        FsKind::Exfat => exfat::used_map(&mut disk),
        FsKind::Ntfs => ntfs::used_map(&mut disk),
        FsKind::Swap => swap::used_map(&mut disk),
        FsKind::Xfs => Err(unsupported(fs, "XFS is not supported yet")),
        FsKind::Btrfs => Err(unsupported(fs, "Btrfs is not supported yet")),
        FsKind::Luks => Err(unsupported(
            fs,
            "LUKS is encrypted: which blocks are in use cannot be seen without the key",
        )),
        FsKind::Bitlocker => Err(unsupported(
            fs,
            "BitLocker is encrypted: which blocks are in use cannot be seen without the key",
        )),
        FsKind::Lvm => Err(unsupported(
            fs,
            "LVM physical volumes are not supported yet (capture the logical volumes' \
             filesystems for compact images)",
        )),
    }
}

/// Up to `limit` names from the root directory of the FAT or exFAT filesystem in the first `size` bytes
/// of `dev`: its files and directories, without the volume label and exFAT's own structures. Empty
/// when the volume holds nothing. Reads only, never writes.
pub fn root_names<R: Read + Seek>(
    dev: &mut R,
    size: u64,
    fs: FsKind,
    limit: usize,
) -> Result<Vec<String>, FsError> {
    let mut disk = Disk::new(dev, size, fs);
    match fs {
        FsKind::Exfat => root::exfat_names(&mut disk, limit),
        FsKind::Vfat => root::fat_names(&mut disk, limit),
        _ => Err(unsupported(
            fs,
            "only FAT and exFAT root directories are listed",
        )),
    }
}

fn unsupported(fs: FsKind, reason: &str) -> FsError {
    FsError::Unsupported {
        fs,
        reason: reason.to_owned(),
    }
}

/// The largest single metadata read; bitmaps are read in pieces no larger than this. Bounds what a
/// damaged length field can make us allocate.
const MAX_READ: u64 = 4 << 20;

/// The partition, as parsers see it: bounded reads that turn failures into [`FsError`]s.
pub(crate) struct Disk<'a, R> {
    dev: &'a mut R,
    size: u64,
    fs: FsKind,
}

impl<'a, R: Read + Seek> Disk<'a, R> {
    fn new(dev: &'a mut R, size: u64, fs: FsKind) -> Self {
        Disk { dev, size, fs }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn fs(&self) -> FsKind {
        self.fs
    }

    /// `len` bytes at `offset`; metadata that points outside the partition is an inconsistency.
    pub(crate) fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, FsError> {
        let end = offset.checked_add(len).filter(|&e| e <= self.size);
        if end.is_none() {
            return Err(self.inconsistent(
                offset,
                format!(
                    "metadata ({len} bytes) extends past the end of the partition ({} bytes): \
                     the partition may have been shrunk or the filesystem is damaged",
                    self.size
                ),
            ));
        }
        if len > MAX_READ {
            return Err(self.inconsistent(
                offset,
                format!("a metadata structure claims {len} bytes, more than any valid one"),
            ));
        }
        // Bounded by MAX_READ above, so the cast and the allocation are small.
        let mut buf = vec![0u8; len as usize];
        self.dev
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.dev.read_exact(&mut buf))
            .map_err(|source| FsError::Io { offset, source })?;
        Ok(buf)
    }

    pub(crate) fn inconsistent(&self, offset: u64, reason: impl Into<String>) -> FsError {
        FsError::Inconsistent {
            fs: self.fs,
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(&self, reason: impl Into<String>) -> FsError {
        FsError::Unsupported {
            fs: self.fs,
            reason: reason.into(),
        }
    }
}

/// Little-endian field readers over a buffer a parser has already length-checked; out-of-range
/// reads yield 0 rather than panic, so a short buffer can only make a field look invalid.
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

pub(crate) fn byte(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}
