//! Capture planning: which streams an image of a disk holds (tables, partitions, gaps; unallocated space
//! left out), each read filesystem-aware or raw, and the refusals before anything is read.

use std::ops::Range;

use super::{list_numbers, Layout, PlannedStream, Refusal, StreamRole, TableRole};
use crate::detect::{Disk, FsKind, Identity, PartitionTable};

/// What a capture should contain.
#[derive(Debug, Clone, Default)]
pub struct CaptureRequest {
    /// Only these partitions (the table is still recorded for reference); empty: the whole disk.
    pub partitions: Vec<u32>,
    /// Every byte, no filesystem awareness, and every gap.
    pub raw: bool,
    /// Read every gap between and after the partitions, however large (see [`SMALL_GAP`]).
    pub keep_unallocated: bool,
}

/// Space outside the partitions and tables up to this size is captured whatever it holds (alignment
/// slack, vendor and boot data); a larger gap is recorded as unallocated: not read, not stored, left as it
/// is by a restore (or zeroed with `--zero-unused`). Whatever its size, the gap before the first partition
/// (boot code: GRUB's core image, vendor loaders) and every gap inside an MBR extended partition (the
/// EBRs) are captured. `--raw` and `--keep-unallocated` capture every gap.
pub const SMALL_GAP: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePlan {
    pub layout: Layout,
    pub whole_disk: bool,
}

impl CapturePlan {
    /// Bytes a capture of this plan reads: every stream's length, but what `used(stream)` says a
    /// filesystem-aware stream's filesystem uses (its length while unknown), and nothing of unallocated
    /// space. The estimate front ends show and check the destination's room with.
    pub fn bytes_to_read(&self, used: impl Fn(&PlannedStream) -> Option<u64>) -> u64 {
        self.layout
            .streams
            .iter()
            .map(|s| match s {
                s if s.unallocated => 0,
                s if s.fs_aware => used(s).unwrap_or(s.len).min(s.len),
                s => s.len,
            })
            .sum()
    }
}

/// Filesystems we have a used-block map for; the rest are captured raw (zero-skipped).
pub fn has_used_map(fs: Option<FsKind>) -> bool {
    matches!(
        fs,
        Some(
            FsKind::Ext2
                | FsKind::Ext3
                | FsKind::Ext4
                | FsKind::Vfat
                | FsKind::Exfat
                | FsKind::Ntfs
                | FsKind::Swap
        )
    )
}

/// Table structures on the source: LBA 0, and for GPT the primary header, the primary entries, the backup
/// entries and the backup header. (MBR extended boot records lie outside the logical partitions and travel
/// in gap streams; LBA 0 is what makes them reachable, and it is written last.)
pub fn table_ranges(disk: &Disk) -> Vec<(Range<u64>, TableRole)> {
    let ls = u64::from(disk.logical_sector_size);
    let mut out = Vec::new();
    match disk.table {
        PartitionTable::None => {}
        PartitionTable::Mbr => out.push((0..ls, TableRole::Mbr)),
        PartitionTable::Gpt => {
            out.push((0..ls, TableRole::Mbr));
            out.push((ls..2 * ls, TableRole::GptPrimaryHeader));
            let (count, size) = disk
                .gpt
                .as_ref()
                .map(|g| (g.partition_entry_count, g.partition_entry_size))
                .unwrap_or((128, 128));
            let entries_sectors = (u64::from(count) * u64::from(size)).div_ceil(ls).max(1);
            let primary_entries = disk
                .gpt
                .as_ref()
                .and_then(|g| g.primary_entries_lba)
                .unwrap_or(2);
            out.push((
                primary_entries * ls..(primary_entries + entries_sectors) * ls,
                TableRole::GptPrimaryEntries,
            ));
            let last = (disk.size_bytes / ls).saturating_sub(1);
            let backup_header = disk
                .gpt
                .as_ref()
                .and_then(|g| g.backup_header_lba)
                .unwrap_or(last);
            let backup_entries = disk
                .gpt
                .as_ref()
                .and_then(|g| g.backup_entries_lba)
                .unwrap_or(backup_header.saturating_sub(entries_sectors));
            out.push((
                backup_entries * ls..(backup_entries + entries_sectors) * ls,
                TableRole::GptBackupEntries,
            ));
            out.push((
                backup_header * ls..(backup_header + 1) * ls,
                TableRole::GptBackupHeader,
            ));
        }
    }
    for (r, _) in &mut out {
        r.end = r.end.min(disk.size_bytes);
        r.start = r.start.min(r.end);
    }
    out.retain(|(r, _)| !r.is_empty());
    out.sort_by_key(|(r, _)| r.start);
    // A damaged GPT can describe overlapping structures; keep the first of any overlap.
    let mut end = 0;
    out.retain(|(r, _)| {
        let keep = r.start >= end;
        if keep {
            end = r.end;
        }
        keep
    });
    out
}

/// `r` cut at every point of `cuts` strictly inside it.
fn split_at(r: Range<u64>, cuts: &[u64]) -> Vec<Range<u64>> {
    let mut points: Vec<u64> = cuts
        .iter()
        .copied()
        .filter(|&c| r.start < c && c < r.end)
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut start = r.start;
    for p in points {
        out.push(start..p);
        start = p;
    }
    out.push(start..r.end);
    out
}

/// `whole` minus every range in `taken` (which may overlap and be unsorted).
fn subtract(whole: Range<u64>, taken: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut taken: Vec<Range<u64>> = taken.to_vec();
    taken.sort_by_key(|r| r.start);
    let mut out = Vec::new();
    let mut pos = whole.start;
    for t in taken {
        if t.end <= pos {
            continue;
        }
        if t.start > pos {
            out.push(pos..t.start.min(whole.end));
        }
        pos = pos.max(t.end);
        if pos >= whole.end {
            break;
        }
    }
    if pos < whole.end {
        out.push(pos..whole.end);
    }
    out.retain(|r| !r.is_empty());
    out
}

/// Refuses an image file `output` (named `shown`; `identity` when it exists already) that is the `source`
/// itself: the finished image would replace it.
pub fn check_output(source: &Disk, shown: &str, identity: Option<Identity>) -> Result<(), Refusal> {
    if identity.is_some() && identity == source.identity {
        return Err(Refusal::OutputIsSource {
            output: shown.to_string(),
        });
    }
    Ok(())
}

/// Decide what a capture of `source` contains. `image_disk` is the disk that holds the output file.
pub fn plan_capture(
    source: &Disk,
    req: &CaptureRequest,
    image_disk: Option<&str>,
) -> Result<CapturePlan, Refusal> {
    if image_disk == Some(source.path.as_str()) {
        return Err(Refusal::ImageOnDisk {
            image: "output".into(),
            disk: source.path.clone(),
            action: "the disk being captured",
        });
    }
    let data_parts: Vec<_> = source.partitions.iter().filter(|p| !p.extended).collect();
    for &n in &req.partitions {
        match source.partitions.iter().find(|p| p.number == n) {
            None => {
                return Err(Refusal::NoSuchPartition {
                    disk: source.path.clone(),
                    number: n,
                    available: list_numbers(data_parts.iter().map(|p| p.number)),
                })
            }
            Some(p) if p.extended => {
                return Err(Refusal::ExtendedPartition {
                    disk: source.path.clone(),
                    number: n,
                    logical: list_numbers(
                        source
                            .partitions
                            .iter()
                            .filter(|p| p.logical)
                            .map(|p| p.number),
                    ),
                })
            }
            Some(_) => {}
        }
    }
    let whole_disk = req.partitions.is_empty();
    let wanted = |n: u32| whole_disk || req.partitions.contains(&n);
    for p in data_parts.iter().filter(|p| wanted(p.number)) {
        if !p.mounts.is_empty() {
            return Err(Refusal::Mounted {
                what: p
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("partition {} of {}", p.number, source.path)),
                mounts: p.mounts.join(", "),
            });
        }
    }
    if !source.mounts.is_empty() {
        return Err(Refusal::Mounted {
            what: source.path.clone(),
            mounts: source.mounts.join(", "),
        });
    }

    let mut streams = Vec::new();
    let tables = table_ranges(source);
    for (t, role) in &tables {
        streams.push(PlannedStream {
            kind: StreamRole::Table(*role),
            disk_offset: t.start,
            len: t.end - t.start,
            partition: None,
            fs: None,
            fs_aware: false,
            unallocated: false,
        });
    }
    if source.table == PartitionTable::None {
        streams.push(PlannedStream {
            kind: StreamRole::WholeDisk,
            disk_offset: 0,
            len: source.size_bytes,
            partition: None,
            fs: source.fs,
            fs_aware: !req.raw && has_used_map(source.fs),
            unallocated: false,
        });
    } else {
        let mut taken: Vec<Range<u64>> = tables.iter().map(|(r, _)| r.clone()).collect();
        for p in &data_parts {
            // Clamp to the disk: a table may claim more than the disk has (detect reports it).
            let end = (p.start_bytes + p.size_bytes).min(source.size_bytes);
            let start = p.start_bytes.min(end);
            taken.push(start..end);
            if wanted(p.number) && end > start {
                streams.push(PlannedStream {
                    kind: StreamRole::Partition,
                    disk_offset: start,
                    len: end - start,
                    partition: Some(p.number),
                    fs: p.fs,
                    fs_aware: !req.raw && has_used_map(p.fs),
                    unallocated: false,
                });
            }
        }
        if whole_disk {
            let first_partition = data_parts
                .iter()
                .map(|p| p.start_bytes)
                .min()
                .unwrap_or(source.size_bytes);
            let extended: Vec<Range<u64>> = source
                .partitions
                .iter()
                .filter(|p| p.extended)
                .map(|p| p.start_bytes..p.start_bytes + p.size_bytes)
                .collect();
            // Gaps are cut where an extended partition begins and ends, so that space just outside it
            // is judged on its own.
            let cuts: Vec<u64> = extended.iter().flat_map(|e| [e.start, e.end]).collect();
            let gaps = subtract(0..source.size_bytes, &taken)
                .into_iter()
                .flat_map(|g| split_at(g, &cuts));
            for g in gaps {
                let kept = req.raw
                    || req.keep_unallocated
                    || g.end - g.start <= SMALL_GAP
                    || g.start < first_partition
                    || extended.iter().any(|e| e.start < g.end && g.start < e.end);
                streams.push(PlannedStream {
                    kind: StreamRole::Gap,
                    disk_offset: g.start,
                    len: g.end - g.start,
                    partition: None,
                    fs: None,
                    fs_aware: false,
                    unallocated: !kept,
                });
            }
        }
    }
    streams.sort_by_key(|s| (s.disk_offset, s.is_table()));
    Ok(CapturePlan {
        layout: Layout {
            size_bytes: source.size_bytes,
            logical_sector_size: source.logical_sector_size,
            table: source.table,
            streams,
            entries_end: source
                .partitions
                .iter()
                .map(|p| (p.start_bytes + p.size_bytes).min(source.size_bytes))
                .max()
                .unwrap_or(0),
        },
        whole_disk,
    })
}
