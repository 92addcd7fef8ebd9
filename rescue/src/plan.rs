//! Pure decisions, no I/O: what a capture reads (which streams, filesystem-aware or raw), where a restore
//! or clone writes, and every safety refusal (DESIGN §4). The engine executes a plan; the TUI and the CLI
//! show it. Because nothing here touches a device, every refusal rule is tested directly.

mod capture;
pub mod grow;
mod restore;
pub mod tables;

pub use capture::*;
pub use restore::*;

use std::ops::Range;

use crate::detect::{FsKind, PartitionTable};
pub use crate::image::TableRole;

/// The part of the source disk a planned stream covers: what it is for on the disk (the image records it
/// as an [`crate::image::StreamKind`], with the partition's number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamRole {
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
    pub kind: StreamRole,
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
        matches!(self.kind, StreamRole::Table(_))
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
            .filter(|s| matches!(s.kind, StreamRole::Partition | StreamRole::WholeDisk))
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

fn human(bytes: u64) -> String {
    crate::units::human_size(bytes)
}

fn list_numbers(nums: impl Iterator<Item = u32>) -> String {
    let v: Vec<String> = nums.map(|n| n.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests;
