//! The index: what was captured, and where each byte of it is (docs/FORMAT.md, "Index").
//!
//! The index is a sequence of tagged sections so later versions can add information without
//! changing the records defined here: a reader keeps sections it does not know (unless they are
//! marked critical, which makes it refuse the image). Structural checks live in `validate`.

use std::fmt;

use super::codec::{Dec, DecodeError, DecodeErrorKind, Enc};
use super::{ChunkId, Compression, Hash, ImageError};

pub(crate) const INDEX_MAGIC: [u8; 8] = *b"RSCINDEX";
pub(crate) const TAG_CREATION: u32 = 1;
pub(crate) const TAG_DISK: u32 = 2;
pub(crate) const TAG_STREAMS: u32 = 3;
pub(crate) const TAG_CHUNKS: u32 = 4;
/// Sections with this bit set must be understood to read the image.
pub(crate) const TAG_CRITICAL: u32 = 1 << 31;
/// Tags below this (with or without the critical bit) are reserved for the format itself.
pub(crate) const FIRST_APPLICATION_TAG: u32 = 0x1_0000;

/// Minimum encoded sizes of the records that come in counted lists, to bound hostile counts.
const MIN_NOTE: usize = 4;
const MIN_PARTITION: usize = 4 + 8 + 8 + 6 * 4;
const MIN_STREAM: usize = 1 + 4 + 8 + 8 + 4 + 1 + 4 + 8 + 8 + 8;
const MIN_EXTENT: usize = 1 + 8 + 8;
const CHUNK_RECORD: usize = 8 + 4 + 4 + 1 + 32;

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

impl TableKind {
    fn code(self) -> u8 {
        match self {
            TableKind::None => 0,
            TableKind::Mbr => 1,
            TableKind::Gpt => 2,
            TableKind::Other => 3,
        }
    }
    fn from_code(c: u8) -> Option<TableKind> {
        Some(match c {
            0 => TableKind::None,
            1 => TableKind::Mbr,
            2 => TableKind::Gpt,
            3 => TableKind::Other,
            _ => return None,
        })
    }
}

impl TableRole {
    fn code(self) -> u32 {
        match self {
            TableRole::Other => 0,
            TableRole::Mbr => 1,
            TableRole::GptPrimaryHeader => 2,
            TableRole::GptPrimaryEntries => 3,
            TableRole::GptBackupEntries => 4,
            TableRole::GptBackupHeader => 5,
            TableRole::Ebr => 6,
        }
    }
    fn from_code(c: u32) -> Option<TableRole> {
        Some(match c {
            0 => TableRole::Other,
            1 => TableRole::Mbr,
            2 => TableRole::GptPrimaryHeader,
            3 => TableRole::GptPrimaryEntries,
            4 => TableRole::GptBackupEntries,
            5 => TableRole::GptBackupHeader,
            6 => TableRole::Ebr,
            _ => return None,
        })
    }
}

impl StreamKind {
    /// (kind code, detail) as encoded.
    fn codes(self) -> (u8, u32) {
        match self {
            StreamKind::Table(role) => (1, role.code()),
            StreamKind::Partition { number } => (2, number),
            StreamKind::Gap => (3, 0),
            StreamKind::WholeDisk => (4, 0),
        }
    }
    fn from_codes(kind: u8, detail: u32) -> Result<StreamKind, (&'static str, u64)> {
        match (kind, detail) {
            (1, d) => TableRole::from_code(d)
                .map(StreamKind::Table)
                .ok_or(("table role", u64::from(d))),
            (2, number) => Ok(StreamKind::Partition { number }),
            (3, 0) => Ok(StreamKind::Gap),
            (4, 0) => Ok(StreamKind::WholeDisk),
            (3 | 4, d) => Err(("stream detail", u64::from(d))),
            (k, _) => Err(("stream kind", u64::from(k))),
        }
    }
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

impl CaptureMode {
    fn code(self) -> u8 {
        match self {
            CaptureMode::Raw => 0,
            CaptureMode::FilesystemAware => 1,
        }
    }
}

impl ExtentKind {
    fn code(self) -> u8 {
        match self {
            ExtentKind::Data(_) => 1,
            ExtentKind::Zero => 2,
            ExtentKind::Unused => 3,
            ExtentKind::Unreadable => 4,
            ExtentKind::Slice { .. } => 6,
        }
    }
}

impl Index {
    /// Encodes the index (uncompressed); fails only when a string exceeds the format's limit.
    pub fn encode(&self) -> Result<Vec<u8>, ImageError> {
        let mut e = Enc::default();
        let extents: usize = self.streams.iter().map(|s| s.extents.len()).sum();
        e.buf
            .reserve(4096 + self.chunks.len() * CHUNK_RECORD + extents * (MIN_EXTENT + 8));
        e.raw(&INDEX_MAGIC);
        section(&mut e, TAG_CREATION, |e| self.encode_creation(e));
        section(&mut e, TAG_DISK, |e| self.encode_disk(e));
        section(&mut e, TAG_STREAMS, |e| self.encode_streams(e));
        section(&mut e, TAG_CHUNKS, |e| self.encode_chunks(e));
        for x in &self.extras {
            section(&mut e, x.tag, |e| e.raw(&x.body));
        }
        match e.error {
            Some(reason) => Err(ImageError::InvalidUse { reason }),
            None => Ok(e.buf),
        }
    }

    fn encode_creation(&self, e: &mut Enc) {
        let c = &self.creation;
        e.str("tool name", &c.tool_name);
        e.str("tool version", &c.tool_version);
        e.i64(c.created_unix);
        e.str("host name", &c.host_name);
        e.count(c.notes.len());
        for n in &c.notes {
            e.str("note", n);
        }
    }

    fn encode_disk(&self, e: &mut Enc) {
        let d = &self.disk;
        e.u64(d.size);
        e.u32(d.logical_sector_size);
        e.u32(d.physical_sector_size);
        e.str("disk model", &d.model);
        e.str("disk serial", &d.serial);
        e.str("disk transport", &d.transport);
        e.str("disk path", &d.path);
        e.u8(d.table_kind.code());
        e.str("table id", &d.table_id);
        e.count(d.partitions.len());
        for p in &d.partitions {
            e.u32(p.number);
            e.u64(p.start);
            e.u64(p.size);
            e.str("partition type", &p.type_id);
            e.str("partition name", &p.name);
            e.str("partition uuid", &p.uuid);
            e.str("filesystem kind", &p.fs_kind);
            e.str("filesystem label", &p.fs_label);
            e.str("filesystem uuid", &p.fs_uuid);
        }
    }

    fn encode_streams(&self, e: &mut Enc) {
        e.count(self.streams.len());
        for s in &self.streams {
            let (kind, detail) = s.info.kind.codes();
            e.u8(kind);
            e.u32(detail);
            e.u64(s.info.disk_offset);
            e.u64(s.info.length);
            e.str("stream label", &s.info.label);
            e.u8(s.info.capture.code());
            e.str("capture reason", &s.info.capture_reason);
            e.u64(s.used_bytes);
            e.u64(s.stored_bytes);
            e.count(s.extents.len());
            for x in &s.extents {
                e.u8(x.kind.code());
                e.u64(x.offset);
                e.u64(x.len);
                match x.kind {
                    ExtentKind::Data(id) => e.u64(id.0),
                    ExtentKind::Slice { chunk, at } => {
                        e.u64(chunk.0);
                        e.u32(at);
                    }
                    ExtentKind::Zero | ExtentKind::Unused | ExtentKind::Unreadable => {}
                }
            }
        }
    }

    fn encode_chunks(&self, e: &mut Enc) {
        e.count(self.chunks.len());
        for c in &self.chunks {
            e.u64(c.offset);
            e.u32(c.stored_len);
            e.u32(c.uncompressed_len);
            e.u8(c.compression.code());
            e.raw(&c.hash.0);
        }
    }

    /// Decodes an uncompressed index. Never panics, and allocates no more than a small multiple
    /// of the input's size, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Index, DecodeError> {
        let mut d = Dec::new(bytes, 0);
        if d.take(INDEX_MAGIC.len(), "index magic")? != INDEX_MAGIC {
            return Err(DecodeError {
                offset: 0,
                kind: DecodeErrorKind::BadMagic,
            });
        }
        let (mut creation, mut disk, mut streams, mut chunks) = (None, None, None, None);
        let mut extras = Vec::new();
        while d.remaining() > 0 {
            let at = d.offset();
            let tag = d.u32("section tag")?;
            let len = d.u64("section length")?;
            let body_len = usize::try_from(len).unwrap_or(usize::MAX);
            let body_at = d.offset();
            let body = d.take(body_len, "section body")?;
            let mut b = Dec::new(body, body_at);
            let dup = DecodeError {
                offset: at,
                kind: DecodeErrorKind::DuplicateSection { tag },
            };
            match tag {
                TAG_CREATION => set_once(&mut creation, decode_creation(&mut b)?, dup)?,
                TAG_DISK => set_once(&mut disk, decode_disk(&mut b)?, dup)?,
                TAG_STREAMS => set_once(&mut streams, decode_streams(&mut b)?, dup)?,
                TAG_CHUNKS => set_once(&mut chunks, decode_chunks(&mut b)?, dup)?,
                t if t & TAG_CRITICAL != 0 => {
                    return Err(DecodeError {
                        offset: at,
                        kind: DecodeErrorKind::UnknownCriticalSection { tag: t },
                    })
                }
                t => {
                    b.take(body.len(), "section body")?;
                    extras.push(RawSection {
                        tag: t,
                        body: body.to_vec(),
                    });
                }
            }
            b.finish(tag)?;
        }
        let missing = |tag| DecodeError {
            offset: bytes.len(),
            kind: DecodeErrorKind::MissingSection { tag },
        };
        Ok(Index {
            creation: creation.ok_or_else(|| missing(TAG_CREATION))?,
            disk: disk.ok_or_else(|| missing(TAG_DISK))?,
            streams: streams.ok_or_else(|| missing(TAG_STREAMS))?,
            chunks: chunks.ok_or_else(|| missing(TAG_CHUNKS))?,
            extras,
        })
    }
}

/// Writes a section: u32 tag, u64 body length, body.
fn section(e: &mut Enc, tag: u32, body: impl FnOnce(&mut Enc)) {
    e.u32(tag);
    let len_at = e.buf.len();
    e.u64(0);
    let start = e.buf.len();
    body(e);
    let len = (e.buf.len() - start) as u64;
    e.buf[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
}

fn set_once<T>(slot: &mut Option<T>, v: T, dup: DecodeError) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(dup);
    }
    *slot = Some(v);
    Ok(())
}

fn bad_enum(d: &Dec<'_>, at: usize, field: &'static str, value: u64) -> DecodeError {
    DecodeError {
        offset: at.min(d.offset()),
        kind: DecodeErrorKind::BadEnum { field, value },
    }
}

fn decode_creation(d: &mut Dec<'_>) -> Result<CreationInfo, DecodeError> {
    let tool_name = d.str("tool name")?;
    let tool_version = d.str("tool version")?;
    let created_unix = d.i64("creation time")?;
    let host_name = d.str("host name")?;
    let n = d.count("note count", MIN_NOTE)?;
    let mut notes = Vec::with_capacity(n);
    for _ in 0..n {
        notes.push(d.str("note")?);
    }
    Ok(CreationInfo {
        tool_name,
        tool_version,
        created_unix,
        host_name,
        notes,
    })
}

fn decode_disk(d: &mut Dec<'_>) -> Result<DiskInfo, DecodeError> {
    let size = d.u64("disk size")?;
    let logical_sector_size = d.u32("logical sector size")?;
    let physical_sector_size = d.u32("physical sector size")?;
    let model = d.str("disk model")?;
    let serial = d.str("disk serial")?;
    let transport = d.str("disk transport")?;
    let path = d.str("disk path")?;
    let at = d.offset();
    let code = d.u8("table kind")?;
    let table_kind =
        TableKind::from_code(code).ok_or_else(|| bad_enum(d, at, "table kind", code.into()))?;
    let table_id = d.str("table id")?;
    let n = d.count("partition count", MIN_PARTITION)?;
    let mut partitions = Vec::with_capacity(n);
    for _ in 0..n {
        partitions.push(PartitionInfo {
            number: d.u32("partition number")?,
            start: d.u64("partition start")?,
            size: d.u64("partition size")?,
            type_id: d.str("partition type")?,
            name: d.str("partition name")?,
            uuid: d.str("partition uuid")?,
            fs_kind: d.str("filesystem kind")?,
            fs_label: d.str("filesystem label")?,
            fs_uuid: d.str("filesystem uuid")?,
        });
    }
    Ok(DiskInfo {
        size,
        logical_sector_size,
        physical_sector_size,
        model,
        serial,
        transport,
        path,
        table_kind,
        table_id,
        partitions,
    })
}

fn decode_streams(d: &mut Dec<'_>) -> Result<Vec<Stream>, DecodeError> {
    let n = d.count("stream count", MIN_STREAM)?;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let at = d.offset();
        let kind = d.u8("stream kind")?;
        let detail = d.u32("stream detail")?;
        let kind = StreamKind::from_codes(kind, detail).map_err(|(f, v)| bad_enum(d, at, f, v))?;
        let disk_offset = d.u64("stream disk offset")?;
        let length = d.u64("stream length")?;
        let label = d.str("stream label")?;
        let at = d.offset();
        let capture = match d.u8("capture mode")? {
            0 => CaptureMode::Raw,
            1 => CaptureMode::FilesystemAware,
            v => return Err(bad_enum(d, at, "capture mode", v.into())),
        };
        let capture_reason = d.str("capture reason")?;
        let used_bytes = d.u64("used bytes")?;
        let stored_bytes = d.u64("stored bytes")?;
        let m = d.count("extent count", MIN_EXTENT)?;
        let mut extents = Vec::with_capacity(m);
        for _ in 0..m {
            let at = d.offset();
            let code = d.u8("extent kind")?;
            let offset = d.u64("extent offset")?;
            let len = d.u64("extent length")?;
            let kind = match code {
                1 => ExtentKind::Data(ChunkId(d.u64("extent chunk")?)),
                2 => ExtentKind::Zero,
                3 => ExtentKind::Unused,
                4 => ExtentKind::Unreadable,
                6 => ExtentKind::Slice {
                    chunk: ChunkId(d.u64("extent chunk")?),
                    at: d.u32("extent chunk offset")?,
                },
                v => return Err(bad_enum(d, at, "extent kind", v.into())),
            };
            extents.push(Extent { offset, len, kind });
        }
        streams.push(Stream {
            info: StreamInfo {
                kind,
                disk_offset,
                length,
                label,
                capture,
                capture_reason,
            },
            used_bytes,
            stored_bytes,
            extents,
        });
    }
    Ok(streams)
}

fn decode_chunks(d: &mut Dec<'_>) -> Result<Vec<ChunkRecord>, DecodeError> {
    let n = d.count("chunk count", CHUNK_RECORD)?;
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        let offset = d.u64("chunk offset")?;
        let stored_len = d.u32("chunk stored length")?;
        let uncompressed_len = d.u32("chunk length")?;
        let at = d.offset();
        let code = d.u8("chunk compression")?;
        let compression = Compression::from_code(code)
            .ok_or_else(|| bad_enum(d, at, "chunk compression", code.into()))?;
        let hash = Hash(d.bytes32("chunk hash")?);
        chunks.push(ChunkRecord {
            offset,
            stored_len,
            uncompressed_len,
            compression,
            hash,
        });
    }
    Ok(chunks)
}
