//! What detection finds, as `rescue disks --json` shows it (schema: docs/DISKS-JSON.md): a [`Report`] of
//! [`Disk`]s with their partition table ([`GptInfo`], [`MbrInfo`]), [`Partition`]s and filesystems
//! ([`FsKind`]), and the [`Identity`] that tells two names of one device or file apart from two devices.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The result of a detection run (schema: docs/DISKS-JSON.md).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub disks: Vec<Disk>,
    /// Problems not tied to one disk (sysfs or the mount table unreadable).
    #[serde(default)]
    pub problems: Vec<String>,
}

/// One disk: a whole block device or an image file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Disk {
    pub path: String,
    pub name: String,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub transport: Transport,
    pub removable: bool,
    pub read_only: bool,
    pub rotational: bool,
    pub table: PartitionTable,
    pub gpt: Option<GptInfo>,
    pub mbr: Option<MbrInfo>,
    pub partitions: Vec<Partition>,
    /// Filesystem on the whole disk, when it has no partition table ("superfloppy").
    pub fs: Option<FsKind>,
    pub fs_label: Option<String>,
    pub fs_uuid: Option<String>,
    /// Where the whole disk itself is mounted.
    pub mounts: Vec<String>,
    /// This disk is the medium we booted from (or, for a partition's device node, one of its partitions).
    pub boot_medium: bool,
    /// Everything that went wrong or looks wrong with this disk, for people to read.
    pub problems: Vec<String>,
    /// For a partition's device node (`/dev/sdb1`): the whole disk it belongs to (`/dev/sdb`).
    pub whole_disk: Option<String>,
    /// What the path names on this machine, so that two names of one device or file are known to be one.
    #[serde(skip)]
    pub identity: Option<Identity>,
}

/// A block device by its device number, or a file by its filesystem's device number and its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Device(u64),
    File { dev: u64, ino: u64 },
}

impl Identity {
    /// The identity of what `path` names now; `None` when it does not exist.
    pub fn of(path: &Path) -> Option<Identity> {
        std::fs::metadata(path)
            .ok()
            .map(|m| Identity::from_metadata(&m))
    }

    pub(super) fn from_metadata(meta: &std::fs::Metadata) -> Identity {
        if meta.file_type().is_block_device() {
            Identity::Device(meta.rdev())
        } else {
            Identity::File {
                dev: meta.dev(),
                ino: meta.ino(),
            }
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Virtio,
    Sata,
    Nvme,
    Usb,
    Mmc,
    Scsi,
    File,
    Unknown,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PartitionTable {
    Gpt,
    Mbr,
    None,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Vfat,
    Exfat,
    Ntfs,
    Xfs,
    Btrfs,
    Swap,
    Luks,
    Bitlocker,
    Lvm,
}

/// Health and geometry of a GPT. LBAs are in units of the disk's logical sector size.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct GptInfo {
    /// Upper-case GUID; `None` when no header could be parsed at all.
    pub disk_guid: Option<String>,
    pub primary_header_valid: bool,
    pub backup_header_valid: bool,
    /// `None` when the header is invalid, so its entry array could not be located.
    pub primary_entries_valid: Option<bool>,
    pub backup_entries_valid: Option<bool>,
    /// LBA 0 holds exactly one entry, of type 0xEE.
    pub protective_mbr: bool,
    /// LBA 0 holds a 0xEE entry plus other partitions.
    pub hybrid_mbr: bool,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub partition_entry_count: u32,
    pub partition_entry_size: u32,
    pub primary_entries_lba: Option<u64>,
    pub backup_header_lba: Option<u64>,
    pub backup_entries_lba: Option<u64>,
    /// GPT-specific problems (also included in the disk's `problems`).
    pub problems: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MbrInfo {
    /// The 32-bit disk identifier at byte 440, as `0x%08x` (fdisk's "Disk identifier").
    pub disk_signature: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Partition {
    /// Partition number as Linux numbers it (GPT slot + 1; MBR 1–4, logical 5+).
    pub number: u32,
    /// The kernel's device node for it, when one exists.
    pub path: Option<String>,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// GPT type GUID (upper case) or MBR type id (`0x83`).
    #[serde(rename = "type")]
    pub part_type: String,
    pub type_name: String,
    /// GPT partition name.
    pub name: Option<String>,
    /// GPT unique partition GUID (upper case).
    pub uuid: Option<String>,
    /// MBR active flag; for GPT the "legacy BIOS bootable" attribute (bit 2).
    pub bootable: bool,
    /// An MBR logical partition (inside an extended one).
    pub logical: bool,
    /// An MBR extended container: holds logical partitions, has no data of its own.
    pub extended: bool,
    pub fs: Option<FsKind>,
    pub fs_label: Option<String>,
    pub fs_uuid: Option<String>,
    pub mounts: Vec<String>,
}

impl Partition {
    pub(crate) fn new(
        number: u32,
        start: u64,
        size: u64,
        part_type: String,
        type_name: &str,
    ) -> Self {
        Partition {
            number,
            path: None,
            start_bytes: start,
            size_bytes: size,
            part_type,
            type_name: type_name.to_string(),
            name: None,
            uuid: None,
            bootable: false,
            logical: false,
            extended: false,
            fs: None,
            fs_label: None,
            fs_uuid: None,
            mounts: Vec::new(),
        }
    }
}
