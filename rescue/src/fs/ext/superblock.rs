//! The ext superblock: features, state and geometry, validated against the partition, and the
//! layout rules derived from it (where superblock backups and descriptor blocks live).

use std::io::{Read, Seek};

use super::super::{le16, le32, Disk, FsError};
use crate::units::crc::crc32c;

pub(super) const SB_OFFSET: u64 = 1024;

pub(super) mod compat {
    pub const SPARSE_SUPER2: u32 = 0x200;
}
pub(super) mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
    /// Features that do not change how blocks are allocated or recorded.
    pub const UNDERSTOOD: u32 = FILETYPE
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | DIRDATA
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
}
pub(super) mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const GDT_CSUM: u32 = 0x10;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
    /// Everything but HAS_SNAPSHOT (0x80) and REPLICA (0x800), which change what the bitmaps mean.
    pub const UNDERSTOOD: u32 = 0x1
        | 0x2
        | 0x4
        | 0x8
        | 0x10
        | 0x20
        | 0x40
        | 0x100
        | 0x200
        | 0x400
        | 0x1000
        | 0x2000
        | 0x4000
        | 0x8000
        | 0x10000;
}

const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;
/// The superblock facts the map needs, validated.
pub(super) struct Geometry {
    pub(super) bs: u64,
    /// Blocks per allocation cluster (1 without bigalloc).
    pub(super) ratio: u64,
    pub(super) blocks: u64,
    pub(super) first_data_block: u64,
    /// The block holding the primary superblock (1 with 1 KiB blocks, else 0).
    pub(super) sb_block: u64,
    pub(super) blocks_per_group: u64,
    pub(super) clusters_per_group: u64,
    pub(super) groups: u64,
    pub(super) desc_size: u64,
    pub(super) descs_per_block: u64,
    pub(super) gdt_blocks: u64,
    pub(super) itable_blocks: u64,
    pub(super) reserved_gdt: u64,
    pub(super) meta_bg: bool,
    pub(super) first_meta_bg: u64,
    pub(super) sparse_super: bool,
    pub(super) sparse_super2: Option<[u64; 2]>,
    pub(super) checksums: Checksums,
    pub(super) sb_free_blocks: u64,
}

#[derive(Clone, Copy)]
pub(super) enum Checksums {
    None,
    /// crc16 descriptors (`uninit_bg`), keyed by the filesystem UUID.
    Crc16([u8; 16]),
    /// crc32c everywhere (`metadata_csum`), with this seed.
    Crc32c(u32),
}

pub(super) fn geometry<R: Read + Seek>(disk: &Disk<'_, R>, sb: &[u8]) -> Result<Geometry, FsError> {
    let bad = |field: usize, reason: String| disk.inconsistent(SB_OFFSET + field as u64, reason);
    if le16(sb, 0x38) != 0xEF53 {
        return Err(bad(
            0x38,
            "no ext2/3/4 superblock (magic 0xEF53 missing)".into(),
        ));
    }
    let rev = le32(sb, 0x4C);
    if rev > 1 {
        return Err(disk.unsupported(format!("unknown ext superblock revision {rev}")));
    }
    let (compat, incompat, ro) = if rev == 0 {
        (0, 0, 0)
    } else {
        (le32(sb, 0x5C), le32(sb, 0x60), le32(sb, 0x64))
    };
    if incompat & incompat::RECOVER != 0 {
        return Err(disk.unsupported(
            "the journal holds transactions that were never replayed (still mounted, or not \
             cleanly unmounted), so the block bitmaps may miss blocks in use; mount and cleanly \
             unmount it, or run `e2fsck -p`, for a compact capture",
        ));
    }
    if incompat & incompat::JOURNAL_DEV != 0 {
        return Err(disk.unsupported("this is an external ext journal device, not a filesystem"));
    }
    if incompat & incompat::COMPRESSION != 0 {
        return Err(disk.unsupported("ext2 compression is not supported"));
    }
    let unknown = incompat & !incompat::UNDERSTOOD;
    if unknown != 0 {
        return Err(disk.unsupported(format!("unknown incompatible ext features {unknown:#x}")));
    }
    let unknown = ro & !ro_compat::UNDERSTOOD;
    if unknown != 0 {
        return Err(disk.unsupported(format!(
            "read-only-compatible ext features {unknown:#x} (snapshots, replicas or newer) may \
             change what the bitmaps mean"
        )));
    }
    let state = le16(sb, 0x3A);
    if state & STATE_ERROR != 0 {
        return Err(disk.unsupported(
            "the kernel recorded errors in this filesystem; run `e2fsck -f` for a compact capture",
        ));
    }
    if state & STATE_VALID == 0 {
        return Err(disk.unsupported(
            "the filesystem is not marked clean (still mounted, or the machine crashed); run \
             `e2fsck` for a compact capture",
        ));
    }
    let checksums = if ro & ro_compat::METADATA_CSUM != 0 {
        if sb[0x175] != 1 {
            return Err(bad(
                0x175,
                format!("unknown metadata checksum type {}", sb[0x175]),
            ));
        }
        let stored = le32(sb, 0x3FC);
        if crc32c(!0, &sb[..0x3FC]) != stored {
            return Err(bad(0x3FC, "the superblock fails its checksum".into()));
        }
        let seed = if incompat & incompat::CSUM_SEED != 0 {
            le32(sb, 0x270)
        } else {
            crc32c(!0, &sb[0x68..0x78])
        };
        Checksums::Crc32c(seed)
    } else if ro & ro_compat::GDT_CSUM != 0 {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&sb[0x68..0x78]);
        Checksums::Crc16(uuid)
    } else {
        Checksums::None
    };

    let log_bs = le32(sb, 0x18);
    if log_bs > 6 {
        return Err(bad(
            0x18,
            format!("block size 2^{} KiB is out of range", log_bs),
        ));
    }
    let bs = 1024u64 << log_bs;
    let bit64 = incompat & incompat::BIT64 != 0;
    let blocks = u64::from(le32(sb, 0x04))
        | if bit64 {
            u64::from(le32(sb, 0x150)) << 32
        } else {
            0
        };
    let sb_free_blocks = u64::from(le32(sb, 0x0C))
        | if bit64 {
            u64::from(le32(sb, 0x158)) << 32
        } else {
            0
        };
    let first_data_block = u64::from(le32(sb, 0x14));
    let blocks_per_group = u64::from(le32(sb, 0x20));
    let bigalloc = ro & ro_compat::BIGALLOC != 0;
    let (ratio, clusters_per_group) = if bigalloc {
        let log_cs = le32(sb, 0x1C);
        if log_cs < log_bs || log_cs > log_bs + 16 {
            return Err(bad(
                0x1C,
                format!("cluster size 2^{log_cs} KiB does not fit the block size"),
            ));
        }
        let ratio = 1u64 << (log_cs - log_bs);
        let cpg = u64::from(le32(sb, 0x24));
        if cpg.checked_mul(ratio) != Some(blocks_per_group) {
            return Err(bad(
                0x24,
                "clusters per group and blocks per group disagree".into(),
            ));
        }
        (ratio, cpg)
    } else {
        (1, blocks_per_group)
    };
    if clusters_per_group == 0
        || clusters_per_group > 8 * bs
        || !clusters_per_group.is_multiple_of(8)
    {
        return Err(bad(
            0x20,
            format!("{clusters_per_group} blocks per group is invalid"),
        ));
    }
    let sb_block = if bs == 1024 { 1 } else { 0 };
    let expected_first = if bs == 1024 && !bigalloc { 1 } else { 0 };
    if first_data_block != expected_first {
        return Err(bad(
            0x14,
            format!("first data block {first_data_block} is invalid for this block size"),
        ));
    }
    let fs_bytes = blocks.checked_mul(bs).filter(|&b| b <= disk.size());
    if fs_bytes.is_none() || blocks <= first_data_block + 1 {
        return Err(bad(
            0x04,
            format!(
                "{blocks} blocks of {bs} bytes do not fit the partition's {} bytes (shrunk \
                 partition or damaged superblock)",
                disk.size()
            ),
        ));
    }
    let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
    let desc_size = if bit64 { u64::from(le16(sb, 0xFE)) } else { 32 };
    if bit64 && (desc_size < 64 || desc_size > 1024.min(bs) || !desc_size.is_power_of_two()) {
        return Err(bad(
            0xFE,
            format!("group descriptor size {desc_size} is invalid"),
        ));
    }
    let descs_per_block = bs / desc_size;
    let gdt_blocks = groups.div_ceil(descs_per_block);
    let ipg = u64::from(le32(sb, 0x28));
    let inode_size = if rev == 0 {
        128
    } else {
        u64::from(le16(sb, 0x58))
    };
    if ipg == 0
        || ipg > 8 * bs
        || inode_size < 128
        || inode_size > bs
        || !inode_size.is_power_of_two()
    {
        return Err(bad(
            0x28,
            format!("{ipg} inodes per group of {inode_size} bytes is invalid"),
        ));
    }
    if u64::from(le32(sb, 0x00)) != groups * ipg {
        return Err(bad(
            0x00,
            format!("inode count does not match {groups} groups of {ipg} inodes"),
        ));
    }
    let reserved_gdt = u64::from(le16(sb, 0xCE));
    if reserved_gdt > bs / 4 {
        return Err(bad(
            0xCE,
            format!("{reserved_gdt} reserved GDT blocks is invalid"),
        ));
    }
    let meta_bg = incompat & incompat::META_BG != 0;
    let first_meta_bg = u64::from(le32(sb, 0x104));
    if meta_bg && first_meta_bg > gdt_blocks {
        return Err(bad(
            0x104,
            format!("first meta_bg {first_meta_bg} is past the descriptor table"),
        ));
    }
    let sparse_super2 = (compat & compat::SPARSE_SUPER2 != 0)
        .then(|| [u64::from(le32(sb, 0x24C)), u64::from(le32(sb, 0x250))]);
    Ok(Geometry {
        bs,
        ratio,
        blocks,
        first_data_block,
        sb_block,
        blocks_per_group,
        clusters_per_group,
        groups,
        desc_size,
        descs_per_block,
        gdt_blocks,
        itable_blocks: (ipg * inode_size).div_ceil(bs),
        reserved_gdt,
        meta_bg,
        first_meta_bg,
        sparse_super: ro & ro_compat::SPARSE_SUPER != 0,
        sparse_super2,
        checksums,
        sb_free_blocks,
    })
}

pub(super) fn group_first_block(g: &Geometry, group: u64) -> u64 {
    g.first_data_block + group * g.blocks_per_group
}

/// Whether `group` holds a superblock backup (group 0 holds the primary).
pub(super) fn has_super(g: &Geometry, group: u64) -> bool {
    if group == 0 {
        return true;
    }
    if let Some(backups) = g.sparse_super2 {
        return backups.contains(&group);
    }
    if group == 1 || !g.sparse_super {
        return true;
    }
    if group.is_multiple_of(2) {
        return false;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut n = base;
        while n < group {
            n *= base;
        }
        n == group
    })
}

/// The superblock, GDT and reserved GDT blocks at the start of `group`, as (first block, count).
pub(super) fn base_meta(g: &Geometry, group: u64) -> (u64, u64) {
    let sup = u64::from(has_super(g, group));
    let count = if !g.meta_bg || group < g.first_meta_bg * g.descs_per_block {
        let gdt = if g.meta_bg {
            g.first_meta_bg
        } else {
            g.gdt_blocks
        };
        if sup == 1 {
            1 + gdt + g.reserved_gdt
        } else {
            0
        }
    } else {
        // meta_bg: each meta group's descriptor block lives in its first, second and last group.
        let first = group / g.descs_per_block * g.descs_per_block;
        let last = first + g.descs_per_block - 1;
        sup + u64::from(group == first || group == first + 1 || group == last)
    };
    if group == 0 {
        // With 1 KiB blocks and bigalloc, group 0 starts at block 0 but the superblock is block 1.
        (0, g.sb_block + count)
    } else {
        (group_first_block(g, group), count)
    }
}

/// Where descriptor block `nr` of the primary table lies.
pub(super) fn gdt_location(g: &Geometry, nr: u64) -> u64 {
    if !g.meta_bg || nr < g.first_meta_bg {
        return g.sb_block + 1 + nr;
    }
    let group = nr * g.descs_per_block;
    let extra = u64::from(g.bs == 1024 && nr == 0 && g.first_data_block == 0);
    group_first_block(g, group) + u64::from(has_super(g, group)) + extra
}
