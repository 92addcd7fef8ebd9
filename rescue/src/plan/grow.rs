//! Whether the rescue stick's data partition can grow to the end of the stick, and to where. Pure: the
//! detected disk and what its data filesystem holds (read by `store::grow`) go in, a plan or the reason
//! why not comes out.
//!
//! `builder image` writes a ~47 MB image; written onto a larger stick, the rest of the stick is unused and
//! the backup GPT sits in the middle of it. Growing moves the backup GPT to the stick's end and lets the
//! data partition (`RESCUE-DATA`, the partition ending last) reach the last MiB boundary before it. FAT
//! and exFAT cannot grow in place (the FAT, bitmap and cluster heap would move), so the data partition is
//! re-created as a new, empty exFAT filesystem; that is only offered when it holds no files.

use crate::detect::{Disk, FsKind, Partition, PartitionTable};
use crate::units::json_name;

/// The data partition's GPT name and filesystem label on the stick: `boot::DATA_LABEL`, which the stick's
/// builder gives it. Written out here because `rescue` uses `boot` only in its tests (the rescue system
/// does not carry the stick builder and its archive and compression libraries); a test holds the two equal.
pub const DATA_NAME: &str = "RESCUE-DATA";
/// Growing is offered only when more than this lies unused after the backup GPT.
pub const MIN_UNUSED: u64 = 64 << 20;
/// The new end is aligned down to this.
const ALIGN: u64 = 1 << 20;
/// Names of files listed in a refusal.
const NAMES_SHOWN: usize = 4;

/// What the data filesystem holds, as read from the filesystem itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataContents {
    Empty,
    /// Names found in its root directory (some of them).
    Files(Vec<String>),
    /// It could not be read; why.
    Unknown(String),
}

/// How the stick's data partition grows. LBAs in units of `sector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowPlan {
    /// The whole stick (`/dev/sda`, or an image file).
    pub disk: String,
    pub disk_size: u64,
    pub sector: u32,
    /// The data partition's number and device node.
    pub number: u32,
    pub partition: Option<String>,
    pub first_lba: u64,
    pub old_last_lba: u64,
    pub new_last_lba: u64,
    /// The filesystem there now (exFAT or FAT), replaced by a new exFAT.
    pub old_fs: FsKind,
    /// The backup GPT now: its header and entry array, which move to the stick's end.
    pub old_backup_header_lba: u64,
    pub old_backup_entries_lba: u64,
}

impl GrowPlan {
    pub fn start_bytes(&self) -> u64 {
        self.first_lba * u64::from(self.sector)
    }

    pub fn old_size(&self) -> u64 {
        (self.old_last_lba + 1 - self.first_lba) * u64::from(self.sector)
    }

    pub fn new_size(&self) -> u64 {
        (self.new_last_lba + 1 - self.first_lba) * u64::from(self.sector)
    }

    /// The data partition's device node, or `DISK partition N`.
    pub fn partition_name(&self) -> String {
        self.partition
            .clone()
            .unwrap_or_else(|| format!("{} partition {}", self.disk, self.number))
    }
}

/// Why the data partition is not grown. Each message names the device and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrowRefusal {
    #[error("{disk} is not the rescue stick this system booted from; only the stick's own data partition is grown")]
    NotTheStick { disk: String },
    #[error("{disk} is read-only (write-protected); remove the write protection to grow its data partition")]
    ReadOnly { disk: String },
    #[error("{disk} does not have the layout `builder image` writes ({why}); its partitions are left as they are")]
    UnknownLayout { disk: String, why: String },
    #[error("{what} is mounted ({mounts}); the data partition can only grow while nothing on the stick is mounted. Restart the rescue system (p, then r) and grow it before using the stick")]
    Mounted { what: String, mounts: String },
    #[error("the data partition {partition} already reaches the end of {disk} (only {unused} unused after it); there is nothing to grow")]
    AlreadyFull {
        disk: String,
        partition: String,
        unused: String,
    },
    #[error("the data partition {partition} holds ext4, which the rescue system can neither resize nor re-create (no resize2fs or mke2fs); it stays as it is. Grow it on a Linux PC with resize2fs, or write the stick with `builder image --data-fs exfat`")]
    Ext4 { partition: String },
    #[error("the data partition {partition} holds {fs}, not exFAT or FAT; it is left as it is")]
    OtherFs { partition: String, fs: String },
    #[error("the data partition {partition} holds files ({names}); growing re-creates it empty, so it is only offered while it is empty. Copy the files elsewhere and delete them from the stick first, or keep the stick as it is")]
    NotEmpty { partition: String, names: String },
    #[error(
        "could not check that the data partition {partition} is empty ({why}); it is left as it is"
    )]
    Unchecked { partition: String, why: String },
}

/// The stick's data partition: the one named (GPT) or labelled `RESCUE-DATA`.
pub fn data_partition(disk: &Disk) -> Option<&Partition> {
    disk.partitions
        .iter()
        .find(|p| p.name.as_deref() == Some(DATA_NAME) || p.fs_label.as_deref() == Some(DATA_NAME))
}

/// Decide whether the data partition of `disk` (detected) grows, given what its filesystem holds.
pub fn plan_grow(disk: &Disk, contents: &DataContents) -> Result<GrowPlan, GrowRefusal> {
    let name = disk.path.clone();
    if !disk.boot_medium {
        return Err(GrowRefusal::NotTheStick { disk: name });
    }
    if disk.read_only {
        return Err(GrowRefusal::ReadOnly { disk: name });
    }
    let layout = |why: &str| GrowRefusal::UnknownLayout {
        disk: name.clone(),
        why: why.to_string(),
    };
    let Some(g) = disk
        .gpt
        .as_ref()
        .filter(|_| disk.table == PartitionTable::Gpt)
    else {
        return Err(layout("it has no GPT"));
    };
    let intact = g.primary_header_valid
        && g.backup_header_valid
        && g.primary_entries_valid == Some(true)
        && g.backup_entries_valid == Some(true);
    if !intact {
        return Err(layout(
            "a copy of its GPT is damaged; repair it (gdisk) before changing anything",
        ));
    }
    let (Some(2), Some(backup_header), Some(backup_entries)) = (
        g.primary_entries_lba,
        g.backup_header_lba,
        g.backup_entries_lba,
    ) else {
        return Err(layout(
            "its GPT entry arrays are not where GPT normally puts them",
        ));
    };
    let ss = u64::from(disk.logical_sector_size);
    if !matches!(ss, 512 | 4096) || g.partition_entry_size < 128 {
        return Err(layout("unusual sector or GPT entry size"));
    }
    let Some(data) = data_partition(disk) else {
        return Err(layout(&format!("no partition named {DATA_NAME}")));
    };
    let end = |p: &Partition| p.start_bytes + p.size_bytes;
    if let Some(later) = disk.partitions.iter().find(|p| end(p) > end(data)) {
        return Err(layout(&format!(
            "partition {} ends after the data partition",
            later.number
        )));
    }
    let partition = data
        .path
        .clone()
        .unwrap_or_else(|| format!("{name} partition {}", data.number));
    if !disk.mounts.is_empty() {
        return Err(GrowRefusal::Mounted {
            what: name,
            mounts: disk.mounts.join(", "),
        });
    }
    if let Some(p) = disk.partitions.iter().find(|p| !p.mounts.is_empty()) {
        return Err(GrowRefusal::Mounted {
            what: p
                .path
                .clone()
                .unwrap_or_else(|| format!("partition {}", p.number)),
            mounts: p.mounts.join(", "),
        });
    }
    if data.start_bytes % ss != 0 || data.size_bytes % ss != 0 || data.size_bytes == 0 {
        return Err(layout("the data partition is not whole sectors"));
    }
    let first_lba = data.start_bytes / ss;
    let old_last_lba = end(data) / ss - 1;
    if backup_entries <= old_last_lba || backup_header <= backup_entries {
        return Err(layout("the backup GPT does not follow the data partition"));
    }
    let total = disk.size_bytes / ss;
    let entries_sectors =
        (u64::from(g.partition_entry_count) * u64::from(g.partition_entry_size)).div_ceil(ss);
    let last_usable = total.saturating_sub(2 + entries_sectors);
    let per_mib = ALIGN / ss;
    let new_last_lba = ((last_usable + 1) / per_mib * per_mib).saturating_sub(1);
    let unused = disk
        .size_bytes
        .saturating_sub((backup_header + 1).saturating_mul(ss));
    if unused <= MIN_UNUSED || new_last_lba <= old_last_lba {
        return Err(GrowRefusal::AlreadyFull {
            disk: name,
            partition,
            unused: crate::units::human_size(unused),
        });
    }
    let old_fs = match data.fs {
        Some(fs @ (FsKind::Exfat | FsKind::Vfat)) => fs,
        Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) => {
            return Err(GrowRefusal::Ext4 { partition })
        }
        other => {
            return Err(GrowRefusal::OtherFs {
                partition,
                fs: other.map_or_else(
                    || "no filesystem the rescue system recognises".into(),
                    |f| json_name(&f),
                ),
            })
        }
    };
    match contents {
        DataContents::Empty => {}
        DataContents::Files(names) => {
            let mut shown: Vec<String> = names.iter().take(NAMES_SHOWN).cloned().collect();
            if names.len() > NAMES_SHOWN {
                shown.push("…".into());
            }
            return Err(GrowRefusal::NotEmpty {
                partition,
                names: shown.join(", "),
            });
        }
        DataContents::Unknown(why) => {
            return Err(GrowRefusal::Unchecked {
                partition,
                why: why.clone(),
            })
        }
    }
    Ok(GrowPlan {
        disk: name,
        disk_size: disk.size_bytes,
        sector: disk.logical_sector_size,
        number: data.number,
        partition: data.path.clone(),
        first_lba,
        old_last_lba,
        new_last_lba,
        old_fs,
        old_backup_header_lba: backup_header,
        old_backup_entries_lba: backup_entries,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
