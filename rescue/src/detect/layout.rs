//! From raw bytes to a disk layout: sector size, which partition table is authoritative, the
//! partitions with sanity checks, and the filesystem in each.

use std::io::{Read, Seek};

use super::fs::{self as fsprobe, FsInfo};
use super::io::{DiskReader, RangeReader};
use super::mbr::{self, MbrSector};
use super::{gpt, FsKind, GptInfo, MbrInfo, Partition, PartitionTable};

/// How the logical sector size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SectorSize {
    /// A block device's `queue/logical_block_size`.
    Device(u32),
    /// An image file: 512 unless a GPT sits where 4096-byte sectors put it.
    Image,
}

/// Everything the bytes of a disk say about it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    pub sector_size: u32,
    pub table: PartitionTable,
    pub gpt: Option<GptInfo>,
    pub mbr: Option<MbrInfo>,
    pub partitions: Vec<Partition>,
    pub fs: Option<FsInfo>,
    pub problems: Vec<String>,
}

/// Overlap reports beyond this many are summarised: one broken table should not bury the rest.
const MAX_OVERLAP_REPORTS: usize = 8;

pub(crate) fn probe<R: Read + Seek>(src: &mut DiskReader<R>, sector: SectorSize) -> Layout {
    let mut problems = Vec::new();
    let ss = sector_size(src, sector, &mut problems);
    let sector0 = src.read_at(0, 512).ok().flatten();
    let mbr_sector = sector0.as_deref().and_then(mbr::parse_mbr);
    let gpt = gpt::probe(src, ss);

    let has_ee = mbr_sector
        .as_ref()
        .is_some_and(|m| m.entries.iter().any(|e| e.sys == 0xEE));
    let others: Vec<(u32, mbr::Entry)> = mbr_sector
        .as_ref()
        .map(|m| {
            m.used()
                .filter(|(_, e)| e.sys != 0xEE)
                .map(|(n, e)| (n, *e))
                .collect()
        })
        .unwrap_or_default();
    let gpt_valid = gpt
        .as_ref()
        .is_some_and(|(g, _)| g.primary_header_valid || g.backup_header_valid);

    let mut layout = Layout {
        sector_size: ss,
        table: PartitionTable::None,
        gpt: None,
        mbr: mbr_sector.as_ref().map(|m| MbrInfo {
            disk_signature: format!("0x{:08x}", m.disk_signature),
        }),
        partitions: Vec::new(),
        fs: None,
        problems: Vec::new(),
    };

    let use_gpt = match (&gpt, has_ee, gpt_valid, others.is_empty()) {
        (Some(_), true, _, _) => true,
        (Some(_), false, true, true) => {
            problems.push(
                "the disk has a GPT but no protective MBR in LBA 0; firmware and some tools will \
                 not see the GPT (gdisk can write a fresh protective MBR)"
                    .to_string(),
            );
            true
        }
        (Some(_), false, true, false) => {
            problems.push(
                "LBA 0 holds an MBR without a protective entry, yet a GPT header is also present: \
                 the MBR is used, as Linux does. The GPT is probably left over from an earlier \
                 layout (wipefs or sgdisk --zap removes it)"
                    .to_string(),
            );
            false
        }
        (Some((g, _)), false, false, _) => {
            problems.push(format!(
                "damaged remains of a GPT were found and ignored (no protective MBR): {}",
                g.problems.join("; ")
            ));
            false
        }
        (None, true, _, _) => {
            problems.push(format!(
                "the MBR has a GPT-protective (0xEE) entry but no GPT header was found with \
                 {ss}-byte sectors: the GPT was wiped, or the disk was partitioned with another \
                 sector size (USB adapters can change it)"
            ));
            false
        }
        (None, false, _, _) => false,
    };

    if use_gpt {
        if let Some((mut info, parts)) = gpt {
            info.protective_mbr = has_ee && others.is_empty();
            info.hybrid_mbr = has_ee && !others.is_empty();
            if let Some(m) = &mbr_sector {
                let mut extra = Vec::new();
                check_pmbr(m, &info, &parts, src.size() / u64::from(ss), ss, &mut extra);
                info.problems.extend(extra);
            }
            problems.extend(info.problems.iter().cloned());
            layout.table = PartitionTable::Gpt;
            layout.gpt = Some(info);
            layout.partitions = parts;
        }
    } else if let Some(m) = &mbr_sector {
        let parts = mbr::partitions(src, m, ss, &mut problems);
        if let Some(fs) = superfloppy(src, &others, &parts) {
            layout.table = PartitionTable::None;
            layout.fs = Some(fs);
        } else {
            layout.table = PartitionTable::Mbr;
            layout.partitions = parts;
        }
    }

    check_bounds(&layout.partitions, src.size(), &mut problems);
    check_overlaps(&layout.partitions, &mut problems);

    for p in layout.partitions.iter_mut().filter(|p| !p.extended) {
        let mut region = RangeReader::new(src, p.start_bytes, p.size_bytes);
        if let Ok(Some(info)) = fsprobe::probe(&mut region) {
            p.fs = Some(info.kind);
            p.fs_label = info.label;
            p.fs_uuid = info.uuid;
        }
    }
    if layout.table == PartitionTable::None && layout.fs.is_none() {
        let size = src.size();
        layout.fs = fsprobe::probe(&mut RangeReader::new(src, 0, size))
            .ok()
            .flatten();
    }
    layout.problems = problems;
    layout
}

fn sector_size<R: Read + Seek>(
    src: &mut DiskReader<R>,
    sector: SectorSize,
    problems: &mut Vec<String>,
) -> u32 {
    match sector {
        SectorSize::Image => {
            if !gpt::has_signature(src, 512) && gpt::has_signature(src, 4096) {
                4096
            } else {
                512
            }
        }
        SectorSize::Device(n) => {
            let n = if n.is_power_of_two() && (512..=65536).contains(&n) {
                n
            } else {
                problems.push(format!(
                    "the device reports an invalid logical sector size ({n}); 512 is assumed"
                ));
                512
            };
            let other = if n == 512 { 4096 } else { 512 };
            if !gpt::has_signature(src, n) && gpt::has_signature(src, other) {
                problems.push(format!(
                    "the GPT on this disk was written for {other}-byte sectors but the device now \
                     reports {n}-byte sectors (typical after moving a disk between a USB adapter \
                     and a direct connection); partitions are shown for {other}-byte sectors, but \
                     the operating system will not find them this way"
                ));
                other
            } else {
                n
            }
        }
    }
}

/// A filesystem written to the whole device (USB sticks, floppies) also starts with 0x55AA, and
/// its boot code can pass for partition entries. Returns the filesystem when LBA 0 starts one and
/// the "partition table" is empty, or is a FAT/NTFS/exFAT boot sector whose entries make no sense.
fn superfloppy<R: Read + Seek>(
    src: &mut DiskReader<R>,
    others: &[(u32, mbr::Entry)],
    parts: &[Partition],
) -> Option<FsInfo> {
    let size = src.size();
    let fs = fsprobe::probe(&mut RangeReader::new(src, 0, size))
        .ok()
        .flatten()?;
    let vbr = matches!(
        fs.kind,
        FsKind::Vfat | FsKind::Ntfs | FsKind::Exfat | FsKind::Bitlocker
    );
    let nonsense = parts
        .iter()
        .any(|p| p.start_bytes == 0 || p.start_bytes.saturating_add(p.size_bytes) > size);
    (others.is_empty() || (vbr && nonsense)).then_some(fs)
}

/// Protective MBR sanity, and hybrid entries that do not match a GPT partition.
fn check_pmbr(
    m: &MbrSector,
    info: &GptInfo,
    parts: &[Partition],
    total: u64,
    ss: u32,
    problems: &mut Vec<String>,
) {
    let ss = u64::from(ss);
    if info.protective_mbr {
        if let Some(e) = m.entries.iter().find(|e| e.sys == 0xEE) {
            let want = total.saturating_sub(1).min(u64::from(u32::MAX));
            let covers = u64::from(e.sectors) == want || e.sectors == u32::MAX;
            if e.start_lba != 1 || !covers {
                problems.push(format!(
                    "the protective MBR entry covers LBA {}..+{} instead of the whole disk \
                     (1..+{want}); harmless for Linux, some firmware rejects it",
                    e.start_lba, e.sectors
                ));
            }
        }
    }
    if info.hybrid_mbr {
        for (n, e) in m.used().filter(|(_, e)| e.sys != 0xEE) {
            let (start, size) = (u64::from(e.start_lba) * ss, u64::from(e.sectors) * ss);
            if !parts
                .iter()
                .any(|p| p.start_bytes == start && p.size_bytes == size)
            {
                problems.push(format!(
                    "hybrid MBR entry {n} (sectors {}..+{}) matches no GPT partition; BIOS-mode \
                     systems see a different layout than UEFI ones",
                    e.start_lba, e.sectors
                ));
            }
        }
    }
}

fn check_bounds(parts: &[Partition], disk_size: u64, problems: &mut Vec<String>) {
    for p in parts {
        let end = p.start_bytes.saturating_add(p.size_bytes);
        if end > disk_size {
            problems.push(format!(
                "partition {} (bytes {}..{end}) extends past the end of the disk ({disk_size} bytes): \
                 truncated image, a disk smaller than the one partitioned, or a wrong sector size",
                p.number, p.start_bytes
            ));
        }
    }
}

fn check_overlaps(parts: &[Partition], problems: &mut Vec<String>) {
    let mut reported = 0;
    for (i, a) in parts.iter().enumerate() {
        for b in &parts[i + 1..] {
            // Logical partitions live inside their extended container by design.
            if (a.extended && b.logical) || (a.logical && b.extended) {
                continue;
            }
            let (a_end, b_end) = (
                a.start_bytes.saturating_add(a.size_bytes),
                b.start_bytes.saturating_add(b.size_bytes),
            );
            if a.start_bytes < b_end && b.start_bytes < a_end {
                reported += 1;
                if reported <= MAX_OVERLAP_REPORTS {
                    problems.push(format!(
                        "partitions {} and {} overlap; writing to one would corrupt the other",
                        a.number, b.number
                    ));
                }
            }
        }
    }
    if reported > MAX_OVERLAP_REPORTS {
        problems.push(format!(
            "{} more overlapping partition pairs (the table is badly corrupted)",
            reported - MAX_OVERLAP_REPORTS
        ));
    }
}
