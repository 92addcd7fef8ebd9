//! The index as bytes (docs/FORMAT.md, "Index"): [`Index::encode`] and [`Index::decode`], and the codes
//! the model's enums have on disk. Decoding trusts nothing: counts are bounded by the bytes that hold
//! them, and every failure is a [`DecodeError`] that says where.

use super::super::codec::{Dec, DecodeError, DecodeErrorKind, Enc};
use super::super::{ChunkId, Compression, Hash, ImageError};
use super::{
    CaptureMode, ChunkRecord, CreationInfo, DiskInfo, Extent, ExtentKind, Index, PartitionInfo,
    RawSection, Stream, StreamInfo, StreamKind, TableKind, TableRole, INDEX_MAGIC, TAG_CHUNKS,
    TAG_CREATION, TAG_CRITICAL, TAG_DISK, TAG_STREAMS,
};

/// Minimum encoded sizes of the records that come in counted lists, to bound hostile counts.
const MIN_NOTE: usize = 4;
const MIN_PARTITION: usize = 4 + 8 + 8 + 6 * 4;
const MIN_STREAM: usize = 1 + 4 + 8 + 8 + 4 + 1 + 4 + 8 + 8 + 8;
const MIN_EXTENT: usize = 1 + 8 + 8;
const CHUNK_RECORD: usize = 8 + 4 + 4 + 1 + 32;

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
