//! Cluster chains through a file allocation table, for FAT12/16/32 and exFAT.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::read::{Pieces, Src};
use super::{le16, le32, BrowseError, Vol};

/// Bytes of the FAT read at once and kept for the next lookup.
const FAT_PIECE: u64 = 64 << 10;

/// How wide a FAT entry is, which says where it lies and which values end a chain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Width {
    Fat12,
    Fat16,
    /// 28 bits of a 32-bit entry; the top four are reserved.
    Fat32,
    Exfat,
}

/// A FAT and the clusters it chains.
pub(crate) struct Table {
    pub vol: Vol,
    pub width: Width,
    /// Byte offset of the FAT in use, and its length.
    pub fat_at: u64,
    pub fat_bytes: u64,
    /// Byte offset of cluster 2, the cluster size, and how many clusters there are.
    pub data_at: u64,
    pub cluster: u64,
    pub clusters: u64,
    pub cache: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

/// How much of a chain to follow.
#[derive(Clone, Copy)]
pub(crate) enum Len {
    /// Exactly this many bytes (a file): a chain ending earlier is damage.
    Exact(u64),
    /// Up to its end marker, at most this many bytes (a folder).
    UpTo(u64),
}

impl Table {
    pub fn valid(&self, c: u64) -> bool {
        c >= 2 && c - 2 < self.clusters
    }

    pub fn cluster_at(&self, c: u64) -> u64 {
        self.data_at + (c - 2) * self.cluster
    }

    /// The FAT entry of cluster `c`.
    fn next(&self, c: u64) -> Result<u32, BrowseError> {
        let (off, width) = match self.width {
            Width::Fat12 => (c * 3 / 2, 2),
            Width::Fat16 => (c * 2, 2),
            Width::Fat32 | Width::Exfat => (c * 4, 4),
        };
        if off + width > self.fat_bytes {
            return Err(self
                .vol
                .corrupt("FAT", self.fat_at, format!("cluster {c} has no entry")));
        }
        let start = off / FAT_PIECE * FAT_PIECE;
        let raw = if off + width <= start + FAT_PIECE {
            let piece = self.piece(start)?;
            let at = (off - start) as usize;
            piece
                .get(at..at + width as usize)
                .unwrap_or_default()
                .to_vec()
        } else {
            self.vol.read(self.fat_at + off, width as usize, "FAT")?
        };
        Ok(match self.width {
            Width::Fat12 if c % 2 == 1 => u32::from(le16(&raw, 0)) >> 4,
            Width::Fat12 => u32::from(le16(&raw, 0)) & 0xFFF,
            Width::Fat16 => u32::from(le16(&raw, 0)),
            Width::Fat32 => le32(&raw, 0) & 0x0FFF_FFFF,
            Width::Exfat => le32(&raw, 0),
        })
    }

    /// The FAT bytes from `start` (a multiple of [`FAT_PIECE`]), from the cache when it has them.
    fn piece(&self, start: u64) -> Result<Arc<Vec<u8>>, BrowseError> {
        if let Ok(guard) = self.cache.lock() {
            if let Some((at, data)) = guard.as_ref() {
                if *at == start {
                    return Ok(data.clone());
                }
            }
        }
        let len = FAT_PIECE.min(self.fat_bytes - start);
        let data = Arc::new(self.vol.read(self.fat_at + start, len as usize, "FAT")?);
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some((start, data.clone()));
        }
        Ok(data)
    }

    /// Whether `v` ends a chain (end marker, or a bad-cluster or reserved value).
    fn end(&self, v: u32) -> bool {
        v >= match self.width {
            Width::Fat12 => 0xFF7,
            Width::Fat16 => 0xFFF7,
            Width::Fat32 => 0x0FFF_FFF7,
            Width::Exfat => 0xFFFF_FFF7,
        }
    }

    /// The pieces of the chain from cluster `first`, and the bytes they cover. A chain may not visit a
    /// cluster twice.
    pub fn chain(&self, first: u64, len: Len, what: &str) -> Result<(Pieces, u64), BrowseError> {
        let (limit, exact) = match len {
            Len::Exact(n) => (n, true),
            Len::UpTo(n) => (n, false),
        };
        let mut pieces = Pieces::default();
        let mut c = first;
        let mut pos = 0u64;
        let mut seen = HashSet::new();
        while pos < limit {
            if !self.valid(c) {
                return Err(self.vol.corrupt(
                    "FAT",
                    self.fat_at,
                    format!("the chain of {what} reaches invalid cluster {c}"),
                ));
            }
            if !seen.insert(c) {
                return Err(self.vol.corrupt(
                    "FAT",
                    self.fat_at,
                    format!("the chain of {what} loops"),
                ));
            }
            let n = self.cluster.min(limit - pos);
            pieces.push(pos, n, Src::Disk(self.cluster_at(c)));
            pos += n;
            if pos >= limit {
                break;
            }
            let next = self.next(c)?;
            if self.end(next) {
                if exact {
                    return Err(self.vol.corrupt(
                        "FAT",
                        self.fat_at,
                        format!("the chain of {what} ends at byte {pos} of its {limit}"),
                    ));
                }
                break;
            }
            c = u64::from(next);
        }
        Ok((pieces, pos))
    }

    /// The pieces of `len` bytes in consecutive clusters from `first` (exFAT's NoFatChain).
    pub fn contiguous(&self, first: u64, len: u64, what: &str) -> Result<Pieces, BrowseError> {
        let n = len.div_ceil(self.cluster);
        if n > 0 && (!self.valid(first) || first - 2 + n > self.clusters) {
            return Err(self.vol.corrupt(
                "directory entry",
                self.data_at,
                format!("{what} ({n} clusters from cluster {first}) lies outside the cluster heap"),
            ));
        }
        let mut pieces = Pieces::default();
        if n > 0 {
            pieces.push(0, len, Src::Disk(self.cluster_at(first)));
        }
        Ok(pieces)
    }
}
