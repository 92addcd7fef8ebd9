//! Pure decisions, no I/O: what a capture reads (which streams, filesystem-aware or raw), where a restore
//! or clone writes, and every safety refusal (DESIGN §4). The engine executes a plan; the TUI and the CLI
//! show it. Because nothing here touches a device, every refusal rule is tested directly.

pub mod grow;
pub mod tables;

use std::ops::Range;

use crate::detect::{Disk, FsKind, Identity, PartitionTable};
pub use crate::image::TableRole;

/// What a stream of the image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Partition table structures: LBA 0, the GPT primary header and entries, the backup entries and header.
    Table(TableRole),
    /// Bytes outside every partition and table (bootloader code, BIOS boot data, free space).
    Gap,
    /// One partition's bytes.
    Partition,
    /// A disk without a partition table, as one stream.
    WholeDisk,
}

/// One stream a capture will produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStream {
    pub kind: StreamKind,
    /// Where the stream's first byte lives on the source disk.
    pub disk_offset: u64,
    pub len: u64,
    pub partition: Option<u32>,
    pub fs: Option<FsKind>,
    /// Read only what the filesystem uses; otherwise every byte (zero-skipped).
    pub fs_aware: bool,
    /// A gap of unallocated space that is not read at all (see [`SMALL_GAP`]).
    pub unallocated: bool,
}

impl PlannedStream {
    pub fn is_table(&self) -> bool {
        matches!(self.kind, StreamKind::Table(_))
    }

    pub fn range(&self) -> Range<u64> {
        self.disk_offset..self.disk_offset + self.len
    }
}

/// Everything a restore or clone needs to know about the source's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub table: PartitionTable,
    pub streams: Vec<PlannedStream>,
    /// The end of the furthest partition-table entry (within the disk), an MBR's extended container
    /// included (it has no stream of its own): an MBR restored as it is must not point past the target's
    /// end.
    pub entries_end: u64,
}

impl Layout {
    /// The smallest disk this layout fits on: the end of the last partition, plus the GPT backup
    /// structures that must follow it.
    pub fn min_target_size(&self) -> u64 {
        let data_end = self.data_end();
        let backup = self.gpt_backup_len(data_end);
        let table_end = self
            .streams
            .iter()
            .filter(|s| s.is_table() && s.disk_offset == 0)
            .map(|s| s.len)
            .max()
            .unwrap_or(0);
        (data_end + backup).max(table_end).max(self.entries_end)
    }

    /// The bytes of the GPT backup (entries + header): the table streams from `data_end` (the end of the
    /// last partition) on; 0 without a GPT.
    fn gpt_backup_len(&self, data_end: u64) -> u64 {
        match self.table {
            PartitionTable::Gpt => self
                .streams
                .iter()
                .filter(|s| s.is_table() && s.disk_offset >= data_end)
                .map(|s| s.len)
                .sum(),
            _ => 0,
        }
    }

    /// Whether the streams cover every byte of the disk: a whole-disk capture does (tables, partitions and
    /// the gaps between), a capture of chosen partitions does not.
    pub fn covers_disk(&self) -> bool {
        let mut ranges: Vec<Range<u64>> = self.streams.iter().map(PlannedStream::range).collect();
        ranges.sort_by_key(|r| r.start);
        let mut pos = 0;
        for r in ranges {
            if r.start > pos {
                return false;
            }
            pos = pos.max(r.end);
        }
        pos >= self.size_bytes
    }

    /// The end of the last partition (or of the whole-disk stream).
    fn data_end(&self) -> u64 {
        self.streams
            .iter()
            .filter(|s| matches!(s.kind, StreamKind::Partition | StreamKind::WholeDisk))
            .map(|s| s.disk_offset + s.len)
            .max()
            .unwrap_or(0)
    }
}

/// Why we will not do what was asked. Each message names the device and says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{disk} has no partition {number}; it has {available}. Run `rescue disks {disk}` to see them")]
    NoSuchPartition {
        disk: String,
        number: u32,
        available: String,
    },
    #[error("partition {number} of {disk} is an extended partition, a container with no data of its own; capture its logical partitions ({logical}) instead")]
    ExtendedPartition {
        disk: String,
        number: u32,
        logical: String,
    },
    #[error("{what} is mounted ({mounts}); unmount it first so that nothing changes while it is read or written")]
    Mounted { what: String, mounts: String },
    #[error("the image {image} is on {disk}, {action}; put the image on another disk")]
    ImageOnDisk {
        image: String,
        disk: String,
        action: &'static str,
    },
    #[error("{target} is the source disk; choose another target")]
    TargetIsSource { target: String },
    #[error("{image} holds only partition(s) {partitions} of its source disk, not the whole disk: a whole-disk restore would create partitions with nothing restored in them; restore each into a partition of a disk partitioned beforehand (--partition N --to-partition M)")]
    PartialImage { image: String, partitions: String },
    #[error("{target} is a disk with a partition table (partitions {partitions}); to restore partition {image_partition} into one of them add --to-partition M; to overwrite the whole disk with that one filesystem, remove the table first (wipefs -a {target})")]
    PartitionOntoPartitionedDisk {
        target: String,
        image_partition: u32,
        partitions: String,
    },
    #[error("{target} is the image being restored; choose another target")]
    TargetIsImage { target: String },
    #[error("{output} is the source being captured; write the image to another file")]
    OutputIsSource { output: String },
    #[error("{target} is the rescue stick this system booted from, or one of its partitions; it cannot be a restore or clone target")]
    TargetIsBootMedium { target: String },
    #[error("{target} is too small: it has {have} bytes ({have_h}) but the image needs at least {need} bytes ({need_h}); use a {unit} of at least {need_h}")]
    TooSmall {
        target: String,
        /// "disk" or "partition": what to use instead.
        unit: &'static str,
        have: u64,
        have_h: String,
        need: u64,
        need_h: String,
    },
    #[error("{target} has {target_sector}-byte sectors but the image was captured from a disk with {image_sector}-byte sectors; its partition table would be wrong there. Use a target with {image_sector}-byte sectors")]
    SectorSize {
        target: String,
        target_sector: u32,
        image_sector: u32,
    },
    #[error("{target} is read-only; remove the write protection first")]
    ReadOnly { target: String },
    #[error("this will destroy everything on {target} ({description}); confirm with --yes")]
    NotConfirmed { target: String, description: String },
    #[error("the image has no partition {number}; it has {available}")]
    NoSuchImagePartition { number: u32, available: String },
}

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

fn human(bytes: u64) -> String {
    crate::units::human_size(bytes)
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
            kind: StreamKind::Table(*role),
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
            kind: StreamKind::WholeDisk,
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
                    kind: StreamKind::Partition,
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
                    kind: StreamKind::Gap,
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

fn list_numbers(nums: impl Iterator<Item = u32>) -> String {
    let v: Vec<String> = nums.map(|n| n.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Facts about the running system a restore or clone is checked against.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Disk holding the image file being read (`detect::disk_holding`).
    pub image_disk: Option<String>,
    /// Display path of the image, for messages.
    pub image_path: String,
    /// The image file itself (a file target that is the image is refused).
    pub image_identity: Option<Identity>,
}

/// Where one stream of the image lands on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index into `Layout::streams`.
    pub stream: usize,
    pub target_offset: u64,
}

/// How the partition table reaches the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TablePlan {
    /// Write the captured table streams as they are (same size, or MBR).
    AsCaptured,
    /// GPT on a disk of another size: rewrite the primary and backup for `target_size`.
    RelocateGpt { target_size: u64 },
    /// Per-partition restore: leave the target's table alone.
    Untouched,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    pub target: String,
    pub placements: Vec<Placement>,
    /// Streams not written, with the reason (free space beyond a smaller target's end or under its moved
    /// GPT backup).
    pub skipped: Vec<(usize, String)>,
    pub tables: TablePlan,
    /// Ranges to wipe before any data is written, so an interrupted restore leaves no valid-looking table.
    pub invalidate: Vec<Range<u64>>,
    /// What the target holds now and will lose, for the confirmation screen.
    pub overwritten: Vec<String>,
}

/// Checks shared by restore and clone, in the order a person wants to hear them.
/// `action` says what happens to the target, for the refusal of an image on it ("the disk being
/// overwritten").
fn check_target(target: &Disk, env: &Environment, action: &'static str) -> Result<(), Refusal> {
    if target.boot_medium {
        return Err(Refusal::TargetIsBootMedium {
            target: target.path.clone(),
        });
    }
    if target.identity.is_some() && target.identity == env.image_identity {
        return Err(Refusal::TargetIsImage {
            target: target.path.clone(),
        });
    }
    if env.image_disk.as_deref() == Some(target.path.as_str()) {
        return Err(Refusal::ImageOnDisk {
            image: env.image_path.clone(),
            disk: target.path.clone(),
            action,
        });
    }
    let mut mounts: Vec<String> = target.mounts.clone();
    for p in &target.partitions {
        mounts.extend(
            p.mounts
                .iter()
                .map(|m| format!("{} on {m}", p.path.as_deref().unwrap_or("partition"))),
        );
    }
    if !mounts.is_empty() {
        return Err(Refusal::Mounted {
            what: target.path.clone(),
            mounts: mounts.join(", "),
        });
    }
    if target.read_only {
        return Err(Refusal::ReadOnly {
            target: target.path.clone(),
        });
    }
    Ok(())
}

/// One line per thing the target holds now.
pub fn describe_contents(target: &Disk) -> Vec<String> {
    let mut out = Vec::new();
    for p in target.partitions.iter().filter(|p| !p.extended) {
        out.push(format!(
            "partition {} ({})",
            p.number,
            describe_partition(p)
        ));
    }
    if out.is_empty() {
        out.push(match target.fs {
            Some(fs) => format!(
                "a {} filesystem on the whole disk",
                format!("{fs:?}").to_lowercase()
            ),
            None => "no recognised partitions".to_string(),
        });
    }
    out
}

/// `20.0 MiB, ext4 "data"`: a partition's size, filesystem and label.
fn describe_partition(p: &crate::detect::Partition) -> String {
    format!(
        "{}, {}{}",
        human(p.size_bytes),
        p.fs.map(|f| format!("{f:?}").to_lowercase())
            .unwrap_or_else(|| "unknown contents".into()),
        p.fs_label
            .as_ref()
            .map(|l| format!(" \"{l}\""))
            .unwrap_or_default()
    )
}

fn describe_disk(d: &Disk) -> String {
    let ident: Vec<&str> = [d.model.as_deref(), d.serial.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    format!(
        "{} {}",
        human(d.size_bytes),
        if ident.is_empty() {
            "disk".to_string()
        } else {
            ident.join(" ")
        }
    )
}

/// Plan writing a whole image (`layout`) onto `target`.
pub fn plan_restore_disk(
    layout: &Layout,
    target: &Disk,
    env: &Environment,
    confirmed: bool,
) -> Result<RestorePlan, Refusal> {
    if !layout.covers_disk() {
        return Err(Refusal::PartialImage {
            image: env.image_path.clone(),
            partitions: list_numbers(layout.streams.iter().filter_map(|s| s.partition)),
        });
    }
    check_target(target, env, "the disk being overwritten")?;
    if target.logical_sector_size != layout.logical_sector_size
        && layout.table != PartitionTable::None
    {
        return Err(Refusal::SectorSize {
            target: target.path.clone(),
            target_sector: target.logical_sector_size,
            image_sector: layout.logical_sector_size,
        });
    }
    let need = layout.min_target_size();
    if target.size_bytes < need {
        return Err(Refusal::TooSmall {
            target: target.path.clone(),
            unit: "disk",
            have: target.size_bytes,
            have_h: human(target.size_bytes),
            need,
            need_h: human(need),
        });
    }
    if !confirmed {
        return Err(Refusal::NotConfirmed {
            target: target.path.clone(),
            description: format!(
                "{}; holds {}",
                describe_disk(target),
                describe_contents(target).join(", ")
            ),
        });
    }
    let mut plan = place_disk(
        layout,
        &target.path,
        target.size_bytes,
        target.logical_sector_size,
    );
    plan.overwritten = describe_contents(target);
    Ok(plan)
}

/// Where a whole-disk image's streams and tables go on a disk of `target_size` bytes (at least
/// [`Layout::min_target_size`]), with no refusal checked: what [`plan_restore_disk`] decides once every
/// check passed, and what `verify --against` compares a restored disk with.
pub fn place_disk(layout: &Layout, target: &str, target_size: u64, sector: u32) -> RestorePlan {
    let same_size = target_size == layout.size_bytes;
    let gpt_moves = layout.table == PartitionTable::Gpt && !same_size;
    let mut placements = Vec::new();
    let mut skipped = Vec::new();
    // Where the rebuilt GPT's backup will start: free space captured there is not written, or the backup
    // would overwrite it (and its read-back fail).
    let room = if gpt_moves {
        target_size.saturating_sub(layout.gpt_backup_len(layout.data_end()))
    } else {
        target_size
    };
    for (i, s) in layout.streams.iter().enumerate() {
        // GPT structures are rebuilt for the new size; the backup's old place is free space now.
        if gpt_moves && s.is_table() {
            continue;
        }
        let end = s.disk_offset + s.len;
        if end > room {
            // Only gaps can reach past `need`; what was beyond the smaller disk's end is free space.
            skipped.push((
                i,
                format!(
                    "{} bytes of free space that do not fit on {target} (past its end or where its GPT backup \
                     goes)",
                    s.len
                ),
            ));
            continue;
        }
        placements.push(Placement {
            stream: i,
            target_offset: s.disk_offset,
        });
    }
    let ls = u64::from(sector);
    // The first and last 34 sectors hold every table we know (MBR, GPT primary and backup).
    let edge = (34 * ls).min(target_size / 2);
    RestorePlan {
        target: target.to_string(),
        placements,
        skipped,
        tables: if gpt_moves {
            TablePlan::RelocateGpt { target_size }
        } else {
            TablePlan::AsCaptured
        },
        invalidate: vec![0..edge, target_size - edge..target_size],
        overwritten: Vec::new(),
    }
}

/// Plan writing one partition stream of the image into a target partition (or a whole target device that
/// is itself a partition or a file, when `target_partition` is None).
pub fn plan_restore_partition(
    layout: &Layout,
    image_partition: u32,
    target: &Disk,
    target_partition: Option<u32>,
    env: &Environment,
    confirmed: bool,
) -> Result<RestorePlan, Refusal> {
    check_target(
        target,
        env,
        "the disk one of whose partitions would be overwritten",
    )?;
    let Some((index, stream)) = layout
        .streams
        .iter()
        .enumerate()
        .find(|(_, s)| s.kind == StreamKind::Partition && s.partition == Some(image_partition))
    else {
        return Err(Refusal::NoSuchImagePartition {
            number: image_partition,
            available: list_numbers(layout.streams.iter().filter_map(|s| s.partition)),
        });
    };
    let target_numbers = || {
        list_numbers(
            target
                .partitions
                .iter()
                .filter(|p| !p.extended)
                .map(|p| p.number),
        )
    };
    let (offset, room, what) = match target_partition {
        Some(n) => {
            let Some(p) = target
                .partitions
                .iter()
                .find(|p| p.number == n && !p.extended)
            else {
                return Err(Refusal::NoSuchPartition {
                    disk: target.path.clone(),
                    number: n,
                    available: target_numbers(),
                });
            };
            (
                p.start_bytes,
                p.size_bytes,
                format!("partition {n} of {}", target.path),
            )
        }
        // A whole disk with a partition table is almost never meant: its table would be overwritten by
        // the start of the filesystem.
        None if target.table != PartitionTable::None => {
            return Err(Refusal::PartitionOntoPartitionedDisk {
                target: target.path.clone(),
                image_partition,
                partitions: target_numbers(),
            });
        }
        None => (0, target.size_bytes, target.path.clone()),
    };
    if room < stream.len {
        return Err(Refusal::TooSmall {
            target: what,
            unit: if target_partition.is_some() {
                "partition"
            } else {
                "disk"
            },
            have: room,
            have_h: human(room),
            need: stream.len,
            need_h: human(stream.len),
        });
    }
    if !confirmed {
        return Err(Refusal::NotConfirmed {
            target: what,
            description: format!("{} will be overwritten", human(stream.len)),
        });
    }
    Ok(RestorePlan {
        target: target.path.clone(),
        placements: vec![Placement {
            stream: index,
            target_offset: offset,
        }],
        skipped: Vec::new(),
        tables: TablePlan::Untouched,
        invalidate: Vec::new(),
        // What is lost: the partition's filesystem and label, as the confirmation shows them.
        overwritten: match target_partition
            .and_then(|n| target.partitions.iter().find(|p| p.number == n))
        {
            Some(p) => vec![format!("{what} ({})", describe_partition(p))],
            None => vec![format!("{what}: {}", describe_contents(target).join(", "))],
        },
    })
}

/// Plan a disk-to-disk clone: the capture plan of `source`, restored onto `target`.
pub fn plan_clone(
    source: &Disk,
    target: &Disk,
    raw: bool,
    confirmed: bool,
) -> Result<(CapturePlan, RestorePlan), Refusal> {
    let same_identity = match (&source.serial, &target.serial) {
        (Some(a), Some(b)) => a == b && source.model == target.model,
        _ => false,
    };
    let same_path = source.path == target.path
        || (source.identity.is_some() && source.identity == target.identity);
    if same_path || same_identity {
        return Err(Refusal::TargetIsSource {
            target: target.path.clone(),
        });
    }
    let capture = plan_capture(
        source,
        &CaptureRequest {
            partitions: Vec::new(),
            raw,
            keep_unallocated: false,
        },
        None,
    )?;
    let restore = plan_restore_disk(&capture.layout, target, &Environment::default(), confirmed)?;
    Ok((capture, restore))
}

#[cfg(test)]
mod tests;
