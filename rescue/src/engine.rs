//! The imaging pipelines: capture, restore, verify and clone. Each runs a plan (from [`crate::plan`])
//! against devices ([`device`]) and images ([`crate::image`]), reporting [`progress`] as it goes.

pub mod capture;
pub mod clone;
pub mod clonezilla;
pub mod device;
pub mod output;
mod pieces;
pub mod progress;
mod readback;
pub mod restore;
mod tables;
pub mod verify;
mod workers;

use crate::detect::{Disk, FsKind, PartitionTable};
use crate::image::{DiskInfo, Index, PartitionInfo, TableKind};
use crate::plan::{Layout, PlannedStream, StreamRole};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Device(#[from] device::DeviceError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Refused(#[from] crate::plan::Refusal),
    #[error("cancelled by the user")]
    Cancelled,
    #[error("internal error: {0}. Please report it with the log")]
    Internal(String),
    #[error("{0}")]
    Failed(String),
    /// A failure before the first write to the target.
    #[error("{0}; nothing was written to the target")]
    Untouched(String),
}

pub use crate::units::json_name;

/// The source's description as the image records it.
pub fn disk_info(disk: &Disk) -> DiskInfo {
    DiskInfo {
        size: disk.size_bytes,
        logical_sector_size: disk.logical_sector_size,
        physical_sector_size: disk.physical_sector_size,
        model: disk.model.clone().unwrap_or_default(),
        serial: disk.serial.clone().unwrap_or_default(),
        transport: json_name(&disk.transport),
        path: disk.path.clone(),
        table_kind: match disk.table {
            PartitionTable::Gpt => TableKind::Gpt,
            PartitionTable::Mbr => TableKind::Mbr,
            PartitionTable::None => TableKind::None,
        },
        table_id: match disk.table {
            PartitionTable::Gpt => disk
                .gpt
                .as_ref()
                .and_then(|g| g.disk_guid.clone())
                .unwrap_or_default(),
            PartitionTable::Mbr => disk
                .mbr
                .as_ref()
                .map(|m| m.disk_signature.clone())
                .unwrap_or_default(),
            PartitionTable::None => String::new(),
        },
        partitions: disk
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                number: p.number,
                start: p.start_bytes,
                size: p.size_bytes,
                type_id: p.part_type.clone(),
                name: p.name.clone().unwrap_or_default(),
                uuid: p.uuid.clone().unwrap_or_default(),
                fs_kind: p.fs.map(|f| json_name(&f)).unwrap_or_default(),
                fs_label: p.fs_label.clone().unwrap_or_default(),
                fs_uuid: p.fs_uuid.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

fn parse_fs(name: &str) -> Option<FsKind> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// The source layout an image describes, for planning a restore.
pub fn layout_of(index: &Index) -> Layout {
    use crate::image::StreamKind as I;
    let streams = index
        .streams
        .iter()
        .map(|s| {
            let (kind, partition) = match s.info.kind {
                I::Table(role) => (StreamRole::Table(role), None),
                I::Gap => (StreamRole::Gap, None),
                I::Partition { number } => (StreamRole::Partition, Some(number)),
                I::WholeDisk => (StreamRole::WholeDisk, None),
            };
            let fs = partition
                .and_then(|n| index.disk.partitions.iter().find(|p| p.number == n))
                .and_then(|p| parse_fs(&p.fs_kind));
            PlannedStream {
                kind,
                disk_offset: s.info.disk_offset,
                len: s.info.length,
                partition,
                fs,
                fs_aware: s.info.capture == crate::image::CaptureMode::FilesystemAware,
                // Unallocated space is a gap stream that is one Unused extent (FORMAT.md §7.3).
                unallocated: s.info.kind == I::Gap
                    && s.info.length > 0
                    && s.extents
                        .iter()
                        .all(|e| e.kind == crate::image::ExtentKind::Unused),
            }
        })
        .collect();
    Layout {
        size_bytes: index.disk.size,
        logical_sector_size: index.disk.logical_sector_size,
        table: match index.disk.table_kind {
            TableKind::Gpt => PartitionTable::Gpt,
            TableKind::Mbr => PartitionTable::Mbr,
            TableKind::None | TableKind::Other => PartitionTable::None,
        },
        streams,
        entries_end: index
            .disk
            .partitions
            .iter()
            .map(|p| (p.start + p.size).min(index.disk.size))
            .max()
            .unwrap_or(0),
    }
}

/// Who made the image: this tool, this host, now.
/// Whether every byte is zero. OR-folding blocks vectorises; an early-exit `all` over bytes does not.
pub(crate) fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}

pub fn creation_info() -> crate::image::CreationInfo {
    crate::image::CreationInfo {
        tool_name: "rescue".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
        // A system with no host name set (the rescue system) reads "(none)": recorded as no name.
        host_name: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|h| h != "(none)")
            .unwrap_or_default(),
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_dedup;
