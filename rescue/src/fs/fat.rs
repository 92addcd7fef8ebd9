//! FAT12/16/32: the reserved area, every FAT copy and the fixed root directory, plus every cluster
//! whose FAT entry is not free.
//!
//! The FAT is the allocation authority: directory entries point at chains, and a chain's clusters
//! are non-zero in the FAT. All FAT copies are read and united, so a cluster any copy calls
//! allocated is kept (copies only differ after a crash, and then "used" is the safe reading).
//! Clusters marked bad are left out and reported: reading them would only produce read errors.
//!
//! The type (12/16/32) follows from the cluster count, as the specification defines it; a BPB
//! shaped for another type, a FAT too small for the clusters, or an entry that points nowhere
//! means damage, and damage means raw capture.

use std::io::{Read, Seek};

use super::ranges::RangeSet;
use super::{byte, le16, le32, Disk, FsError, UsedMap};

/// FAT entries examined per read (of every copy); keeps memory small on 32 GiB+ volumes.
const ENTRIES_PER_PIECE: u64 = 128 * 1024;

/// How many bad clusters a note lists by position.
const BAD_LISTED: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// The BPB, validated.
#[derive(Debug)]
pub(super) struct Bpb {
    pub bps: u64,
    pub spc: u64,
    pub reserved: u64,
    pub nfats: u64,
    pub fat_sectors: u64,
    /// First sector of the data area (after reserved sectors, FATs and the fixed root directory).
    pub first_data: u64,
    pub clusters: u64,
    pub kind: FatType,
    pub fsinfo: Option<u64>,
}

impl FatType {
    fn name(self) -> &'static str {
        match self {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
    }

    fn bits(self) -> u64 {
        match self {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }

    /// Values from here up are reserved, bad-cluster and end-of-chain markers.
    fn first_reserved(self) -> u32 {
        match self {
            FatType::Fat12 => 0xFF0,
            FatType::Fat16 => 0xFFF0,
            FatType::Fat32 => 0x0FFF_FFF0,
        }
    }

    fn bad(self) -> u32 {
        self.first_reserved() + 7
    }
}

pub(super) fn parse_bpb<R: Read + Seek>(disk: &Disk<'_, R>, b: &[u8]) -> Result<Bpb, FsError> {
    let bad = |off: u64, reason: String| disk.inconsistent(off, reason);
    let bps = u64::from(le16(b, 11));
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(bad(11, format!("{bps} bytes per sector is invalid")));
    }
    let spc = u64::from(byte(b, 13));
    if spc == 0 || !spc.is_power_of_two() {
        return Err(bad(13, format!("{spc} sectors per cluster is invalid")));
    }
    let reserved = u64::from(le16(b, 14));
    let nfats = u64::from(byte(b, 16));
    if reserved == 0 || nfats == 0 {
        return Err(bad(14, "no reserved sectors or no FAT".into()));
    }
    let root_entries = u64::from(le16(b, 17));
    let total = match le16(b, 19) {
        0 => u64::from(le32(b, 32)),
        n => u64::from(n),
    };
    let fat16_size = u64::from(le16(b, 22));
    let fat_sectors = if fat16_size != 0 {
        fat16_size
    } else {
        u64::from(le32(b, 36))
    };
    if total * bps > disk.size() {
        return Err(bad(
            19,
            format!(
                "{total} sectors do not fit the partition's {} bytes (shrunk partition or damaged \
                 boot sector)",
                disk.size()
            ),
        ));
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved + nfats * fat_sectors + root_sectors;
    if fat_sectors == 0 || first_data >= total {
        return Err(bad(
            22,
            "the FATs and root directory leave no data area".into(),
        ));
    }
    let clusters = (total - first_data) / spc;
    let kind = match clusters {
        0..=4084 => FatType::Fat12,
        4085..=65524 => FatType::Fat16,
        _ => FatType::Fat32,
    };
    let fat32_shaped = fat16_size == 0 && root_entries == 0;
    if (kind == FatType::Fat32) != fat32_shaped {
        return Err(bad(
            17,
            format!(
                "{clusters} clusters make this {}, but the boot sector is laid out for \
                 {}",
                kind.name(),
                if fat32_shaped { "FAT32" } else { "FAT12/16" }
            ),
        ));
    }
    if fat_sectors * bps * 8 / kind.bits() < clusters + 2 {
        return Err(bad(
            22,
            format!("a FAT of {fat_sectors} sectors cannot map {clusters} clusters"),
        ));
    }
    let mut fsinfo = None;
    if kind == FatType::Fat32 {
        if le16(b, 42) != 0 {
            return Err(disk.unsupported(format!("unknown FAT32 version {:#x}", le16(b, 42))));
        }
        let root = u64::from(le32(b, 44));
        if root < 2 || root >= clusters + 2 {
            return Err(bad(
                44,
                format!("root directory cluster {root} is out of range"),
            ));
        }
        fsinfo = Some(u64::from(le16(b, 48))).filter(|&s| s != 0 && s < reserved);
    }
    Ok(Bpb {
        bps,
        spc,
        reserved,
        nfats,
        fat_sectors,
        first_data,
        clusters,
        kind,
        fsinfo,
    })
}

pub(super) fn used_map<R: Read + Seek>(disk: &mut Disk<'_, R>) -> Result<UsedMap, FsError> {
    let boot = disk.read(0, 512)?;
    let bpb = parse_bpb(disk, &boot)?;
    let cluster_bytes = bpb.bps * bpb.spc;
    let data_start = bpb.first_data * bpb.bps;
    let mut used = RangeSet::new();
    // Reserved sectors (boot sector, FSInfo, backup boot sector), all FATs, the fixed root.
    used.push(0..data_start);

    let mut notes = Vec::new();
    let mut bad: Vec<u64> = Vec::new();
    let mut bad_count = 0u64;
    let mut copies_differ = false;
    let mut used_clusters = 0u64;
    let mut run: Option<u64> = None;
    let last = bpb.clusters + 2;
    let flush = |used: &mut RangeSet, first: u64, end: u64| {
        used.push(data_start + (first - 2) * cluster_bytes..data_start + (end - 2) * cluster_bytes);
    };
    let mut entry1 = 0;
    let mut piece_start = 0u64;
    while piece_start < last {
        let piece_end = (piece_start + ENTRIES_PER_PIECE).min(last);
        let copies = read_fat_piece(disk, &bpb, piece_start, piece_end)?;
        for c in piece_start..piece_end {
            let values = copies.iter().map(|v| v[(c - piece_start) as usize]);
            if c < 2 {
                if c == 1 {
                    entry1 = copies[0][1];
                }
                continue;
            }
            let mut any_used = false;
            let mut any_bad = false;
            let first = copies[0][(c - piece_start) as usize];
            for v in values {
                copies_differ |= v != first;
                if v == 0 {
                    continue;
                }
                if v == bpb.kind.bad() {
                    any_bad = true;
                } else if v == 1 || (u64::from(v) >= last && v < bpb.kind.first_reserved()) {
                    return Err(disk.inconsistent(
                        fat_entry_offset(&bpb, c),
                        format!("the FAT entry of cluster {c} holds {v:#x}, which points nowhere"),
                    ));
                } else {
                    any_used = true;
                }
            }
            if any_used {
                used_clusters += 1;
                run.get_or_insert(c);
                continue;
            }
            if any_bad {
                bad_count += 1;
                if bad.len() < BAD_LISTED {
                    bad.push(data_start + (c - 2) * cluster_bytes);
                }
            }
            if let Some(s) = run.take() {
                flush(&mut used, s, c);
            }
        }
        piece_start = piece_end;
    }
    if let Some(s) = run {
        flush(&mut used, s, last);
    }

    if copies_differ {
        notes.push(
            "the FAT copies differ (crash or damage); clusters any copy allocates are kept".into(),
        );
    }
    if bad_count > 0 {
        notes.push(format!(
            "{bad_count} cluster(s) marked bad are not read (first at byte offsets {bad:?})"
        ));
    }
    let clean_bit = match bpb.kind {
        FatType::Fat12 => None,
        FatType::Fat16 => Some(0x8000),
        FatType::Fat32 => Some(0x0800_0000),
    };
    if clean_bit.is_some_and(|bit| entry1 & bit == 0) {
        notes.push(
            "the volume is marked as not cleanly unmounted; the FAT was used as it is".into(),
        );
    }
    if let Some(sector) = bpb.fsinfo {
        let info = disk.read(sector * bpb.bps, 512)?;
        let free = le32(&info, 488);
        let computed = bpb.clusters - used_clusters - bad_count;
        if le32(&info, 0) == 0x4161_5252 && free != u32::MAX && u64::from(free) != computed {
            notes.push(format!(
                "FSInfo free cluster count {free} differs from the FAT's {computed} (stale, harmless)"
            ));
        }
    }
    let mut map = UsedMap::from_set(used, disk.size(), cluster_bytes, disk.fs());
    map.notes.extend(notes);
    Ok(map)
}

fn fat_entry_offset(bpb: &Bpb, c: u64) -> u64 {
    bpb.reserved * bpb.bps + c * bpb.kind.bits() / 8
}

/// Entries `first..end` of every FAT copy, decoded; `first` is a multiple of `ENTRIES_PER_PIECE`,
/// and FAT12 (at most 4086 entries) always fits one piece, so 12-bit entries never straddle reads.
fn read_fat_piece<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    bpb: &Bpb,
    first: u64,
    end: u64,
) -> Result<Vec<Vec<u32>>, FsError> {
    let bits = bpb.kind.bits();
    let byte_start = first * bits / 8;
    let byte_end = (end * bits).div_ceil(8);
    let mut copies = Vec::new();
    for k in 0..bpb.nfats {
        let base = (bpb.reserved + k * bpb.fat_sectors) * bpb.bps;
        let raw = disk.read(base + byte_start, byte_end - byte_start)?;
        let entries = (first..end)
            .map(|c| {
                let at = (c * bits / 8 - byte_start) as usize;
                match bpb.kind {
                    FatType::Fat12 => {
                        let v = u32::from(le16(&raw, at));
                        if c % 2 == 1 {
                            v >> 4
                        } else {
                            v & 0xFFF
                        }
                    }
                    FatType::Fat16 => u32::from(le16(&raw, at)),
                    // The top four bits are reserved and not part of the entry.
                    FatType::Fat32 => le32(&raw, at) & 0x0FFF_FFFF,
                }
            })
            .collect();
        copies.push(entries);
    }
    Ok(copies)
}
