//! The index: what was captured, and where each byte of it is (docs/FORMAT.md, "Index").
//!
//! The index is a sequence of tagged sections so later versions can add information without
//! changing the records defined here: a reader keeps sections it does not know (unless they are
//! marked critical, which makes it refuse the image). Structural checks live in `validate`.
//!
//! This file is the model: the records and what they mean. Their bytes — encoding, decoding and the
//! codes the enums have on disk — are in `encoding`.

mod encoding;

use std::fmt;

use super::{ChunkId, Compression, Hash};

pub(crate) const INDEX_MAGIC: [u8; 8] = *b"RSCINDEX";
pub(crate) const TAG_CREATION: u32 = 1;
pub(crate) const TAG_DISK: u32 = 2;
pub(crate) const TAG_STREAMS: u32 = 3;
pub(crate) const TAG_CHUNKS: u32 = 4;
/// Sections with this bit set must be understood to read the image.
pub(crate) const TAG_CRITICAL: u32 = 1 << 31;
/// Tags below this (with or without the critical bit) are reserved for the format itself.
pub(crate) const FIRST_APPLICATION_TAG: u32 = 0x1_0000;

/// Who made the image, when, where, and the notes the engine left for the user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreationInfo {
    pub tool_name: String,
    pub tool_version: String,
    /// Seconds since the Unix epoch (UTC), supplied by the caller.
    pub created_unix: i64,
    pub host_name: String,
    /// Free-form notes: decisions and reasons ("partition 3: ext4 used-block map inconsistent, captured raw").
    pub notes: Vec<String>,
}

/// Partition table kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableKind {
    /// No partition table (a bare filesystem or an empty disk).
    #[default]
    None,
    Mbr,
    Gpt,
    /// Something else, or a table too damaged to classify; see the notes.
    Other,
}

impl TableKind {
    /// How people name it: `GPT partition table`.
    pub fn describe(self) -> &'static str {
        match self {
            TableKind::None => "no partition table",
            TableKind::Mbr => "MBR partition table",
            TableKind::Gpt => "GPT partition table",
            TableKind::Other => "unrecognised partition table",
        }
    }
}

/// One partition as the source's table describes it (captured or not).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionInfo {
    /// The partition number as the OS names it (sda3 → 3).
    pub number: u32,
    /// Start on the disk, in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// GPT type GUID or MBR type byte as text ("0x83").
    pub type_id: String,
    /// GPT partition name.
    pub name: String,
    /// GPT unique partition GUID (or the MBR "PARTUUID" signature-number form).
    pub uuid: String,
    /// Filesystem kind as detected ("ext4", "ntfs", "vfat", …; empty if none or unknown).
    pub fs_kind: String,
    pub fs_label: String,
    pub fs_uuid: String,
}

/// The source disk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskInfo {
    /// Size in bytes.
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub model: String,
    pub serial: String,
    /// "sata", "nvme", "usb", "virtio", … as free text.
    pub transport: String,
    /// The device path or file the image was captured from.
    pub path: String,
    pub table_kind: TableKind,
    /// GPT disk GUID or MBR disk signature as text.
    pub table_id: String,
    pub partitions: Vec<PartitionInfo>,
}

/// Which partition-table structure a table stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableRole {
    Other,
    /// LBA 0: the MBR or GPT protective MBR, one logical sector.
    Mbr,
    GptPrimaryHeader,
    GptPrimaryEntries,
    GptBackupEntries,
    GptBackupHeader,
    /// An extended boot record of an MBR logical partition chain.
    Ebr,
}

impl TableRole {
    /// How people name it: `backup GPT header`.
    pub fn describe(self) -> &'static str {
        match self {
            TableRole::Other => "partition table data",
            TableRole::Mbr => "MBR (first sector)",
            TableRole::GptPrimaryHeader => "GPT header",
            TableRole::GptPrimaryEntries => "GPT partition entries",
            TableRole::GptBackupEntries => "backup GPT partition entries",
            TableRole::GptBackupHeader => "backup GPT header",
            TableRole::Ebr => "EBR (logical partition link)",
        }
    }
}

/// What a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Partition-table bytes; restored last.
    Table(TableRole),
    /// The contents of one partition, referring to [`DiskInfo::partitions`] by number.
    Partition { number: u32 },
    /// Bytes outside partitions and tables worth keeping (boot code after the MBR, BIOS boot data).
    Gap,
    /// The whole disk, byte for byte (no table awareness).
    WholeDisk,
}

/// How a stream's bytes were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// Every byte was read.
    Raw,
    /// Only the bytes the filesystem uses were read; the rest are [`ExtentKind::Unused`].
    FilesystemAware,
}

/// What the capture engine says about a stream when it begins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub kind: StreamKind,
    /// Where the stream's first byte belongs on the disk.
    pub disk_offset: u64,
    pub length: u64,
    /// Free text naming the stream ("protective MBR", "gap after MBR", "EFI system partition").
    pub label: String,
    pub capture: CaptureMode,
    /// Why this capture mode ("ext4 used-block map", "no filesystem recognised", …).
    pub capture_reason: String,
}

/// A stream in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub info: StreamInfo,
    /// Bytes that were meant to be captured: the length minus [`ExtentKind::Unused`] extents.
    pub used_bytes: u64,
    /// Payload bytes of the distinct chunks this stream references.
    pub stored_bytes: u64,
    /// Sorted, contiguous from offset 0, covering exactly `info.length` bytes.
    pub extents: Vec<Extent>,
}

/// What a range of a stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// The bytes of this chunk (the extent's length equals the chunk's uncompressed length).
    Data(ChunkId),
    /// The extent's length in bytes of this chunk, from byte `at` of its uncompressed bytes: a range
    /// stored once and referenced wherever it occurs (block deduplication; required feature
    /// [`super::FEATURE_CHUNK_SLICES`]).
    Slice { chunk: ChunkId, at: u32 },
    /// All zero bytes; nothing stored.
    Zero,
    /// Free according to the filesystem; not captured. Restore may leave, zero or discard it.
    Unused,
    /// The source could not be read here. Restore writes zeros and reports the range.
    Unreadable,
}

/// One range of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset within the stream.
    pub offset: u64,
    pub len: u64,
    pub kind: ExtentKind,
}

impl Extent {
    /// The chunk this extent's bytes come from and where in it they start (Data and Slice extents).
    pub fn chunk_piece(&self) -> Option<(ChunkId, u64)> {
        match self.kind {
            ExtentKind::Data(id) => Some((id, 0)),
            ExtentKind::Slice { chunk, at } => Some((chunk, u64::from(at))),
            ExtentKind::Zero | ExtentKind::Unused | ExtentKind::Unreadable => None,
        }
    }
}

/// Where a chunk frame is and what it must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRecord {
    /// Image offset of the chunk's frame header.
    pub offset: u64,
    pub stored_len: u32,
    pub uncompressed_len: u32,
    pub compression: Compression,
    /// blake3 of the uncompressed bytes.
    pub hash: Hash,
}

/// A section this version does not interpret, kept byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSection {
    pub tag: u32,
    pub body: Vec<u8>,
}

/// The decoded index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub creation: CreationInfo,
    pub disk: DiskInfo,
    pub streams: Vec<Stream>,
    pub chunks: Vec<ChunkRecord>,
    /// Sections other than the four of version 1, in file order.
    pub extras: Vec<RawSection>,
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamKind::Table(TableRole::Other) => write!(f, "partition table data"),
            StreamKind::Table(TableRole::Mbr) => write!(f, "MBR (LBA 0)"),
            StreamKind::Table(TableRole::GptPrimaryHeader) => write!(f, "GPT primary header"),
            StreamKind::Table(TableRole::GptPrimaryEntries) => write!(f, "GPT primary entries"),
            StreamKind::Table(TableRole::GptBackupEntries) => write!(f, "GPT backup entries"),
            StreamKind::Table(TableRole::GptBackupHeader) => write!(f, "GPT backup header"),
            StreamKind::Table(TableRole::Ebr) => write!(f, "extended boot record"),
            StreamKind::Partition { number } => write!(f, "partition {number}"),
            StreamKind::Gap => write!(f, "gap outside partitions"),
            StreamKind::WholeDisk => write!(f, "whole disk"),
        }
    }
}

impl StreamInfo {
    /// "partition 3 'EFI system partition'", for messages.
    pub fn describe(&self) -> String {
        if self.label.is_empty() {
            self.kind.to_string()
        } else {
            format!("{} '{}'", self.kind, self.label)
        }
    }
}
