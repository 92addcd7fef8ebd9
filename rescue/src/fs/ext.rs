//! ext2/ext3/ext4: used blocks from the per-group block bitmaps.
//!
//! The bitmaps are the allocation authority (partclone trusts them too); we add what they cannot
//! speak for: block 0 (boot sector, superblock) which precedes group 0 on 1 KiB-block filesystems,
//! and, for groups whose bitmap was never initialised (`BLOCK_UNINIT`), the metadata the kernel
//! would mark when it initialises them. The latter is computed the kernel's way (superblock
//! backups, GDT, reserved GDT blocks, meta_bg GDT blocks) and united with every group's bitmaps and
//! inode table, wherever `flex_bg` put them; the descriptor's free count must then agree.
//!
//! Trust is earned: checksums (superblock, descriptors, bitmaps) when the filesystem has them, the
//! geometry against the partition, every descriptor's free count against its bitmap. A journal
//! that still needs replaying, an unclean or error state, or an unknown incompatible or read-only
//! feature means the bitmaps cannot be trusted, so the caller captures raw.
//!
//! Memory: the descriptor table is read block by block twice (metadata first, then bitmaps), so
//! nothing proportional to the number of groups is held except the (bounded) range sets.

mod superblock;

use std::io::{Read, Seek};

use self::superblock::{
    base_meta, gdt_location, geometry, incompat, Checksums, Geometry, SB_OFFSET,
};
use super::ranges::{intersect, RangeSet};
use super::{le16, le32, le64, Disk, FsError, UsedMap};
use crate::units::crc::{crc16, crc32c};

const BG_BLOCK_UNINIT: u16 = 0x2;

/// One group descriptor's fields.
struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    free: u64,
    flags: u16,
    bitmap_csum: u32,
}

pub(super) fn used_map<R: Read + Seek>(disk: &mut Disk<'_, R>) -> Result<UsedMap, FsError> {
    let sb = disk.read(SB_OFFSET, 1024)?;
    let g = geometry(disk, &sb)?;
    let bs = g.bs;
    let cs = bs * g.ratio;

    // Pass 1: all metadata locations, cluster-aligned so per-group counts come out in clusters.
    let mut meta = RangeSet::new();
    let mut round_out = |first: u64, count: u64| {
        let start = first * bs / cs * cs;
        let end = ((first + count) * bs).div_ceil(cs) * cs;
        meta.push(start..end);
    };
    for group in 0..g.groups {
        let (first, count) = base_meta(&g, group);
        round_out(first, count);
    }
    for nr in 0..g.gdt_blocks {
        round_out(gdt_location(&g, nr), 1);
    }
    for_each_desc(disk, &g, |_, _, d| {
        round_out(d.block_bitmap, 1);
        round_out(d.inode_bitmap, 1);
        round_out(d.inode_table, g.itable_blocks);
        Ok(())
    })?;
    let (meta, _) = meta.finish(g.blocks * bs);

    // Pass 2: the bitmaps, and the metadata-only groups.
    let mut used = RangeSet::new();
    let mut used_clusters = 0u64;
    let desc_csum = !matches!(g.checksums, Checksums::None);
    let mut notes = Vec::new();
    let clusters_total = (g.blocks - g.first_data_block).div_ceil(g.ratio);
    for_each_desc(disk, &g, |disk, group, d| {
        let first_cluster = group * g.clusters_per_group;
        let nclusters = g.clusters_per_group.min(clusters_total - first_cluster);
        let start = (g.first_data_block + first_cluster * g.ratio) * bs;
        let desc_used = nclusters.checked_sub(d.free).ok_or_else(|| {
            disk.inconsistent(
                start,
                format!(
                    "group {group} claims {} free blocks but has only {nclusters}",
                    d.free
                ),
            )
        })?;
        if desc_csum && d.flags & BG_BLOCK_UNINIT != 0 {
            let end = start + nclusters * cs;
            let meta_used: u64 = intersect(&meta, start..end)
                .map(|r| r.end - r.start)
                .sum::<u64>()
                / cs;
            if desc_used > meta_used {
                return Err(disk.inconsistent(
                    start,
                    format!(
                        "group {group} has an uninitialised block bitmap, yet its descriptor counts \
                         {desc_used} used blocks where only {meta_used} are metadata"
                    ),
                ));
            }
            used_clusters += meta_used;
            return Ok(());
        }
        let at = d.block_bitmap * bs;
        let bitmap = disk.read(at, bs)?;
        if let Checksums::Crc32c(seed) = g.checksums {
            let len = (g.clusters_per_group / 8) as usize;
            let mut sum = crc32c(seed, bitmap.get(..len).unwrap_or(&bitmap));
            if g.desc_size < 0x3A {
                sum &= 0xFFFF;
            }
            if sum != d.bitmap_csum {
                return Err(disk.inconsistent(
                    at,
                    format!("block bitmap of group {group} fails its checksum"),
                ));
            }
        }
        let set = used.push_bits(&bitmap, nclusters, start, cs);
        if set != desc_used {
            return Err(disk.inconsistent(
                at,
                format!(
                    "block bitmap of group {group} marks {set} blocks used but its descriptor \
                     counts {desc_used}"
                ),
            ));
        }
        used_clusters += set;
        Ok(())
    })?;
    let free_blocks = (clusters_total - used_clusters.min(clusters_total)) * g.ratio;
    if free_blocks != g.sb_free_blocks {
        // The kernel writes the superblock's count lazily; the groups are what we checked.
        notes.push(format!(
            "superblock free block count {} differs from the groups' {free_blocks} (stale, harmless)",
            g.sb_free_blocks
        ));
    }

    for r in meta {
        used.push(r);
    }
    // Block 0 (boot sector) precedes group 0 when blocks are 1 KiB.
    used.push(0..(g.sb_block + 1) * bs);
    journal_backup(&sb, &g, &mut used);
    if le32(&sb, 0x60) & incompat::MMP != 0 {
        let mmp = le64(&sb, 0x168);
        if mmp < g.blocks {
            used.push(mmp * bs..(mmp + 1) * bs);
        }
    }
    let mut map = UsedMap::from_set(used, disk.size(), bs, disk.fs());
    map.notes.extend(notes);
    Ok(map)
}

/// Calls `f(group, descriptor)` for every group, reading the table one block at a time and
/// checking each descriptor's checksum and locations.
fn for_each_desc<'a, R: Read + Seek>(
    disk: &mut Disk<'a, R>,
    g: &Geometry,
    mut f: impl FnMut(&mut Disk<'a, R>, u64, &Desc) -> Result<(), FsError>,
) -> Result<(), FsError> {
    for nr in 0..g.gdt_blocks {
        let at = gdt_location(g, nr) * g.bs;
        if at >= g.blocks * g.bs {
            return Err(disk.inconsistent(
                at,
                format!("descriptor block {nr} lies past the filesystem"),
            ));
        }
        let block = disk.read(at, g.bs)?;
        let first = nr * g.descs_per_block;
        for (i, raw) in block.chunks_exact(g.desc_size as usize).enumerate() {
            let group = first + i as u64;
            if group >= g.groups {
                return Ok(());
            }
            let off = at + i as u64 * g.desc_size;
            let d = parse_desc(g, raw);
            check_desc(disk, g, group, raw, &d, off)?;
            f(disk, group, &d)?;
        }
    }
    Ok(())
}

fn parse_desc(g: &Geometry, raw: &[u8]) -> Desc {
    let wide = g.desc_size >= 64;
    let hi32 = |off| {
        if wide {
            u64::from(le32(raw, off)) << 32
        } else {
            0
        }
    };
    let hi16 = |off| {
        if wide {
            u64::from(le16(raw, off)) << 16
        } else {
            0
        }
    };
    Desc {
        block_bitmap: u64::from(le32(raw, 0x00)) | hi32(0x20),
        inode_bitmap: u64::from(le32(raw, 0x04)) | hi32(0x24),
        inode_table: u64::from(le32(raw, 0x08)) | hi32(0x28),
        free: u64::from(le16(raw, 0x0C)) | hi16(0x2C),
        flags: le16(raw, 0x12),
        bitmap_csum: u32::from(le16(raw, 0x18)) | (hi16(0x38) as u32),
    }
}

fn check_desc<R: Read + Seek>(
    disk: &Disk<'_, R>,
    g: &Geometry,
    group: u64,
    raw: &[u8],
    d: &Desc,
    off: u64,
) -> Result<(), FsError> {
    let stored = le16(raw, 0x1E);
    let group_le = (group as u32).to_le_bytes();
    let computed = match g.checksums {
        Checksums::None => None,
        Checksums::Crc32c(seed) => {
            let mut copy = raw.to_vec();
            copy[0x1E..0x20].fill(0);
            Some(crc32c(crc32c(seed, &group_le), &copy) as u16)
        }
        Checksums::Crc16(uuid) => {
            let mut c = crc16(crc16(crc16(0xFFFF, &uuid), &group_le), &raw[..0x1E]);
            if raw.len() > 0x20 {
                c = crc16(c, &raw[0x20..]);
            }
            Some(c)
        }
    };
    if computed.is_some_and(|c| c != stored) {
        return Err(disk.inconsistent(off, format!("group descriptor {group} fails its checksum")));
    }
    let inside =
        |b: u64, n: u64| b >= g.first_data_block && b.checked_add(n).is_some_and(|e| e <= g.blocks);
    if !inside(d.block_bitmap, 1)
        || !inside(d.inode_bitmap, 1)
        || !inside(d.inode_table, g.itable_blocks)
    {
        return Err(disk.inconsistent(
            off,
            format!(
                "group descriptor {group} points its bitmaps or inode table outside the filesystem"
            ),
        ));
    }
    Ok(())
}

/// The journal's first extents, from the superblock's copy of the journal inode's block map. The
/// bitmaps already cover the journal; this is a second source for the one structure a capture
/// must never lose. Only a depth-0 extent tree (how mke2fs makes journals) or direct blocks are
/// read; anything else is left to the bitmaps.
fn journal_backup(sb: &[u8], g: &Geometry, used: &mut RangeSet) {
    const JNL_BACKUP_BLOCKS: u8 = 1;
    if le32(sb, 0xE0) == 0 || sb.get(0xFD) != Some(&JNL_BACKUP_BLOCKS) {
        return;
    }
    let i_block = &sb[0x10C..0x10C + 60];
    let mut add = |start: u64, len: u64| {
        if start >= g.first_data_block && start.saturating_add(len) <= g.blocks {
            used.push(start * g.bs..(start + len) * g.bs);
        }
    };
    if le16(i_block, 0) == 0xF30A {
        let entries = u64::from(le16(i_block, 2)).min(4);
        if le16(i_block, 6) != 0 {
            return;
        }
        for e in 0..entries as usize {
            let x = 12 + e * 12;
            let len = u64::from(le16(i_block, x + 4));
            let len = if len > 32768 { len - 32768 } else { len };
            let start = u64::from(le32(i_block, x + 8)) | u64::from(le16(i_block, x + 6)) << 32;
            add(start, len);
        }
    } else {
        for i in 0..15 {
            let b = u64::from(le32(i_block, i * 4));
            if b != 0 {
                add(b, 1);
            }
        }
    }
}
