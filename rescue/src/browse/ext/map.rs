//! Where an inode's data lies: an extent tree, indirect blocks (ext2/3), or inline data (in the inode's
//! block area and its `system.data` extended attribute).

use super::{Ext, Inode};
use crate::browse::read::{Pieces, Src};
use crate::browse::{byte, le16, le32, BrowseError};

const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's limit on an extent tree's depth.
const MAX_DEPTH: u16 = 5;
/// An initialised extent holds at most this many blocks; longer lengths mark unwritten extents.
const MAX_INIT_LEN: u64 = 32_768;
/// Direct block pointers in the inode; then single, double and triple indirect ones.
const DIRECT: u64 = 12;

/// One leaf extent: logical block, length, physical block, unwritten.
struct Extent {
    logical: u64,
    len: u64,
    physical: u64,
    unwritten: bool,
}

/// The pieces of an extent-mapped file. Unwritten extents read as zeros; holes are gaps.
pub(super) fn extents(fs: &Ext, inode: &Inode) -> Result<Pieces, BrowseError> {
    let mut found = Vec::new();
    // Tree nodes are blocks of the file: the inode's block count bounds how many there can be.
    let mut budget = (inode.blocks_bytes / fs.bs + 1).min(fs.blocks);
    walk(
        fs,
        &inode.block,
        inode.at + 0x28,
        None,
        &mut found,
        &mut budget,
    )?;
    found.sort_by_key(|e| e.logical);
    let nblocks = inode.size.div_ceil(fs.bs);
    let mut pieces = Pieces::default();
    for e in found {
        if e.logical >= nblocks {
            break;
        }
        let start = e.logical * fs.bs;
        if start < pieces.end() {
            return Err(fs.vol.corrupt(
                "extent tree",
                inode.at,
                format!(
                    "extents of inode {} overlap at block {}",
                    inode.ino, e.logical
                ),
            ));
        }
        let bytes = (e.len.min(nblocks - e.logical) * fs.bs).min(inode.size - start);
        let src = if e.unwritten {
            Src::Zero
        } else {
            Src::Disk(e.physical * fs.bs)
        };
        pieces.push(start, bytes, src);
    }
    Ok(pieces)
}

/// Collects the leaf extents below `node` (at byte `at`), which must be of depth `depth` when given.
fn walk(
    fs: &Ext,
    node: &[u8],
    at: u64,
    depth: Option<u16>,
    out: &mut Vec<Extent>,
    budget: &mut u64,
) -> Result<(), BrowseError> {
    let bad = |reason: String| fs.vol.corrupt("extent tree node", at, reason);
    if le16(node, 0) != EXTENT_MAGIC {
        return Err(bad("no extent header (magic 0xF30A)".into()));
    }
    let entries = usize::from(le16(node, 2));
    let max = usize::from(le16(node, 4));
    let d = le16(node, 6);
    if d > MAX_DEPTH || depth.is_some_and(|want| want != d) {
        return Err(bad(format!("depth {d} is invalid here")));
    }
    if entries > max || 12 + 12 * entries > node.len() {
        return Err(bad(format!("{entries} entries do not fit the node")));
    }
    for k in 0..entries {
        let e = node.get(12 + 12 * k..24 + 12 * k).unwrap_or_default();
        if d == 0 {
            let raw = u64::from(le16(e, 4));
            let (len, unwritten) = if raw > MAX_INIT_LEN {
                (raw - MAX_INIT_LEN, true)
            } else {
                (raw, false)
            };
            let physical = u64::from(le16(e, 6)) << 32 | u64::from(le32(e, 8));
            if len == 0 || physical.checked_add(len).is_none_or(|end| end > fs.blocks) {
                return Err(bad(format!(
                    "an extent ({len} blocks at block {physical}) lies outside the filesystem"
                )));
            }
            if out.len() as u64 >= fs.blocks {
                return Err(bad("more extents than the filesystem has blocks".into()));
            }
            out.push(Extent {
                logical: u64::from(le32(e, 0)),
                len,
                physical,
                unwritten,
            });
        } else {
            let child = u64::from(le16(e, 8)) << 32 | u64::from(le32(e, 4));
            if child >= fs.blocks || child == 0 {
                return Err(bad(format!(
                    "a child node at block {child} is outside the filesystem"
                )));
            }
            if *budget == 0 {
                return Err(bad(
                    "the tree has more nodes than the file has blocks (a loop?)".into(),
                ));
            }
            *budget -= 1;
            let data = fs
                .vol
                .read(child * fs.bs, fs.bs as usize, "extent tree node")?;
            walk(fs, &data, child * fs.bs, Some(d - 1), out, budget)?;
        }
    }
    Ok(())
}

/// The pieces of a file mapped by block pointers (ext2/ext3); zero pointers are holes.
pub(super) fn indirect(fs: &Ext, inode: &Inode) -> Result<Pieces, BrowseError> {
    let mut m = Mapper {
        fs,
        inode,
        nblocks: inode.size.div_ceil(fs.bs),
        per: fs.bs / 4,
        pieces: Pieces::default(),
        budget: fs.blocks,
    };
    for i in 0..DIRECT.min(m.nblocks) {
        m.data(i, u64::from(le32(&inode.block, 4 * i as usize)))?;
    }
    let mut first = DIRECT;
    let mut span = m.per;
    for level in 1..=3u32 {
        if first >= m.nblocks {
            break;
        }
        let ptr = u64::from(le32(&inode.block, 4 * (11 + level as usize)));
        if ptr != 0 {
            m.tree(ptr, level, first)?;
        }
        first = first.saturating_add(span);
        span = span.saturating_mul(m.per);
    }
    Ok(m.pieces)
}

struct Mapper<'a> {
    fs: &'a Ext,
    inode: &'a Inode,
    nblocks: u64,
    per: u64,
    pieces: Pieces,
    /// Blocks mapped or read so far may not exceed the filesystem's.
    budget: u64,
}

impl Mapper<'_> {
    fn spend(&mut self, at: u64) -> Result<(), BrowseError> {
        if self.budget == 0 {
            return Err(self.fs.vol.corrupt(
                "indirect block",
                at,
                format!(
                    "inode {} maps more blocks than the filesystem has",
                    self.inode.ino
                ),
            ));
        }
        self.budget -= 1;
        Ok(())
    }

    fn check(&self, block: u64, at: u64) -> Result<(), BrowseError> {
        if block >= self.fs.blocks {
            return Err(self.fs.vol.corrupt(
                if at == self.inode.at {
                    "inode"
                } else {
                    "indirect block"
                },
                at,
                format!(
                    "inode {} points at block {block}, past the filesystem's {}",
                    self.inode.ino, self.fs.blocks
                ),
            ));
        }
        Ok(())
    }

    /// Logical block `logical` lies at block `block` (0: a hole).
    fn data(&mut self, logical: u64, block: u64) -> Result<(), BrowseError> {
        if block == 0 {
            return Ok(());
        }
        self.check(block, self.inode.at)?;
        self.spend(self.inode.at)?;
        let start = logical * self.fs.bs;
        let len = self.fs.bs.min(self.inode.size - start);
        self.pieces.push(start, len, Src::Disk(block * self.fs.bs));
        Ok(())
    }

    /// The pointer block `block` of `level` (1: it points at data) mapping from logical block `first`.
    fn tree(&mut self, block: u64, level: u32, first: u64) -> Result<(), BrowseError> {
        self.check(block, self.inode.at)?;
        self.spend(block * self.fs.bs)?;
        let at = block * self.fs.bs;
        let ptrs = self
            .fs
            .vol
            .read(at, self.fs.bs as usize, "indirect block")?;
        let each = self.per.saturating_pow(level - 1);
        for k in 0..self.per {
            let logical = first.saturating_add(k.saturating_mul(each));
            if logical >= self.nblocks {
                break;
            }
            let p = u64::from(le32(&ptrs, 4 * k as usize));
            if p == 0 {
                continue;
            }
            if level == 1 {
                self.check(p, at)?;
                self.data(logical, p)?;
            } else {
                self.tree(p, level - 1, logical)?;
            }
        }
        Ok(())
    }
}

/// The content of an inline-data inode: its 60-byte block area, then its `system.data` attribute.
pub(super) fn inline_data(fs: &Ext, inode: &Inode) -> Result<Vec<u8>, BrowseError> {
    let size = inode.size;
    let extra = system_data(fs, inode);
    if size > 60 + extra.len() as u64 {
        return Err(fs.vol.corrupt(
            "inode",
            inode.at,
            format!(
                "inline-data inode {} claims {size} bytes but holds {}",
                inode.ino,
                60 + extra.len()
            ),
        ));
    }
    let mut out: Vec<u8> = inode.block.iter().take(size as usize).copied().collect();
    out.extend(extra.iter().take((size as usize).saturating_sub(60)));
    Ok(out)
}

/// The value of the `system.data` extended attribute kept in the inode's body (empty if none).
pub(super) fn system_data<'a>(fs: &Ext, inode: &'a Inode) -> &'a [u8] {
    const XATTR_MAGIC: u32 = 0xEA02_0000;
    const SYSTEM: u8 = 7;
    let raw = &inode.raw;
    if fs.inode_size <= 128 {
        return &[];
    }
    let start = 128 + usize::from(le16(raw, 0x80));
    if le32(raw, start) != XATTR_MAGIC {
        return &[];
    }
    let first = start + 4;
    let mut at = first;
    while at + 16 <= raw.len() && le32(raw, at) != 0 {
        let name_len = usize::from(byte(raw, at));
        let name = raw.get(at + 16..at + 16 + name_len).unwrap_or_default();
        if byte(raw, at + 1) == SYSTEM && name == b"data" && le32(raw, at + 4) == 0 {
            let off = first + usize::from(le16(raw, at + 2));
            let len = le32(raw, at + 8) as usize;
            return raw.get(off..off.saturating_add(len)).unwrap_or_default();
        }
        at += (16 + name_len + 3) & !3;
    }
    &[]
}
