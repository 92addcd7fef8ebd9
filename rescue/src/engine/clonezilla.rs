//! Restoring a Clonezilla image ([`crate::clonezilla`]): its disk described as a [`Layout`] (so that
//! `plan` decides and refuses as for an image of ours), and a pipeline that writes what each stream of
//! the layout comes from: the partclone images, streamed (decompressed, checksums checked) into their
//! partitions; the hidden data after the MBR; swap headers made again; then the tables, last.
//!
//! A partclone stream is read front to back, so unlike an image of ours nothing can be fetched out of
//! order: the check before the first write reads every stream once through (every checksum partclone
//! wrote, and the bitmap's and header's CRCs), and the restore reads them again as it writes.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Sender};
use std::sync::Mutex;

use super::device::Target;
use super::progress::{Meter, Progress};
use super::readback::{Held, Ledger};
use super::restore::{finish, incomplete, RestoreOptions, RestoreReport, UnusedPolicy};
use super::{tables, EngineError};
use crate::clonezilla::{self, Content, Image};
use crate::detect::{FsKind, PartitionTable};
use crate::image::TableRole;
use crate::partclone::{self, stored};
use crate::plan::{Layout, PlannedStream, RestorePlan, StreamRole};
use crate::sys::AlignedBuf;

/// Where the bytes of one stream of the layout come from.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Table bytes, as saved (or the GPT backup, made from the saved primary).
    Table(Vec<u8>),
    /// The first `len` bytes of a file (the hidden data after the MBR).
    File { path: PathBuf, len: u64 },
    /// A partclone image: its first piece, the name progress and errors use, and for a raw copy
    /// (`partclone.dd`'s output: the partition's bytes, no header) its length.
    Partclone {
        first: PathBuf,
        label: String,
        raw: Option<u64>,
    },
    /// A swap partition made again: its first page.
    Swap(Vec<u8>),
    /// Nothing saved: left, zeroed or discarded as the unused policy says.
    Unused,
}

/// A Clonezilla image as a restore sees it: the layout `plan` places, and each stream's provider.
#[derive(Debug, Clone)]
pub struct Source {
    pub layout: Layout,
    pub providers: Vec<Provider>,
    /// The partition number each partclone stream restores, and its header (read when the source was
    /// described: sizes, filesystem, block size).
    pub headers: Vec<(usize, partclone::Header)>,
}

impl Source {
    /// Bytes a restore writes from stream `s` (what progress counts).
    pub fn data_bytes(&self, s: usize) -> u64 {
        match &self.providers[s] {
            Provider::Partclone { raw: Some(len), .. } => *len,
            _ => self
                .headers
                .iter()
                .find(|(i, _)| *i == s)
                .map_or(0, |(_, h)| data_bytes(h)),
        }
    }

    /// Every partclone stream: its index, first piece, label and raw length.
    pub fn partclone_streams(&self) -> Vec<(usize, &std::path::Path, &str, Option<u64>)> {
        self.providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Provider::Partclone { first, label, raw } => {
                    Some((i, first.as_path(), label.as_str(), *raw))
                }
                _ => None,
            })
            .collect()
    }
}

/// A partclone image's header, read through its pieces and decompression; `None` when the stream holds no
/// partclone header (a raw copy, or something else). The stream is opened once.
pub fn read_header(first: &std::path::Path) -> Result<Option<partclone::Header>, EngineError> {
    let mut opened = stored::open(first).map_err(|e| EngineError::Failed(e.to_string()))?;
    let mut head = [0u8; 15];
    let n = read_full(&mut opened.reader, &mut head)
        .map_err(|e| EngineError::Failed(format!("{}: {e}", first.display())))?;
    if n < head.len() || head[..] != partclone::MAGIC[..15] {
        return Ok(None);
    }
    let whole = std::io::Read::chain(&head[..], opened.reader);
    let stream = partclone::Stream::open(whole, &first.display().to_string())
        .map_err(|e| EngineError::Failed(e.to_string()))?;
    Ok(Some(stream.header().clone()))
}

fn fs_kind(fs: &str) -> Option<FsKind> {
    Some(match fs.to_ascii_lowercase().as_str() {
        "ext2" => FsKind::Ext2,
        "ext3" => FsKind::Ext3,
        "ext4" | "extfs" => FsKind::Ext4,
        "vfat" | "fat12" | "fat16" | "fat32" | "fat" => FsKind::Vfat,
        "ntfs" => FsKind::Ntfs,
        "exfat" => FsKind::Exfat,
        _ => return None,
    })
}

fn stream(kind: StreamRole, range: Range<u64>, partition: Option<u32>) -> PlannedStream {
    PlannedStream {
        kind,
        disk_offset: range.start,
        len: range.end - range.start,
        partition,
        fs: None,
        fs_aware: false,
        unallocated: false,
    }
}

/// The first page of a swap partition of `len` bytes, as `mkswap` writes it (version 1, 4 KiB pages), with
/// the saved UUID and label.
pub fn swap_header(len: u64, uuid: Option<&str>, label: Option<&str>) -> Vec<u8> {
    const PAGE: usize = 4096;
    let mut page = vec![0u8; PAGE];
    page[1024..1028].copy_from_slice(&1u32.to_le_bytes());
    let last = (len / PAGE as u64)
        .saturating_sub(1)
        .min(u64::from(u32::MAX)) as u32;
    page[1028..1032].copy_from_slice(&last.to_le_bytes());
    if let Some(u) = uuid {
        let hex: String = u.chars().filter(char::is_ascii_hexdigit).collect();
        if hex.len() == 32 {
            for i in 0..16 {
                page[1036 + i] = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
            }
        }
    }
    if let Some(l) = label {
        let b = l.as_bytes();
        let n = b.len().min(15);
        page[1052..1052 + n].copy_from_slice(&b[..n]);
    }
    page[PAGE - 10..].copy_from_slice(b"SWAPSPACE2");
    page
}

/// Describes `image` (its disk, or with `partition` only that partition, placed where it was) as a
/// layout and its providers. Partclone headers are read here: an image file that is no partclone stream
/// fails now, and a filesystem larger than its partition is refused before anything is planned.
pub fn source_of(image: &Image, partition: Option<u32>) -> Result<Source, EngineError> {
    let mut streams = Vec::new();
    let mut providers = Vec::new();
    let mut headers = Vec::new();
    let (size, sector, table) = match (&image.disk, partition) {
        (Some(d), None) => (
            d.size_bytes,
            d.table.sector_size,
            match d.table.label {
                clonezilla::sfdisk::Label::Gpt => PartitionTable::Gpt,
                _ => PartitionTable::Mbr,
            },
        ),
        _ => (
            0,
            image.disk.as_ref().map_or(512, |d| d.table.sector_size),
            PartitionTable::None,
        ),
    };
    // Tables (whole disk only).
    if let (Some(d), None) = (&image.disk, partition) {
        let ss = u64::from(sector);
        streams.push(stream(StreamRole::Table(TableRole::Mbr), 0..ss, None));
        providers.push(Provider::Table(d.mbr.clone()));
        if let Some(primary) = &d.gpt_primary {
            let header_end = 2 * ss;
            streams.push(stream(
                StreamRole::Table(TableRole::GptPrimaryHeader),
                ss..header_end,
                None,
            ));
            providers.push(Provider::Table(primary[..ss as usize].to_vec()));
            streams.push(stream(
                StreamRole::Table(TableRole::GptPrimaryEntries),
                header_end..header_end + primary.len() as u64 - ss,
                None,
            ));
            providers.push(Provider::Table(primary[ss as usize..].to_vec()));
            // The backup, made from the primary for the disk's own size (Clonezilla's `gpt-2nd` is kept
            // only as a copy).
            let moved = crate::plan::tables::relocate_gpt(&d.mbr, primary, sector, d.size_bytes)
                .map_err(|e| {
                    EngineError::Failed(format!(
                        "{}: the saved GPT ({}-gpt-1st) is not valid: {e}",
                        image.path.display(),
                        d.name
                    ))
                })?;
            for role in [TableRole::GptBackupEntries, TableRole::GptBackupHeader] {
                if let Some((at, bytes)) = moved.get(role) {
                    streams.push(stream(
                        StreamRole::Table(role),
                        at..at + bytes.len() as u64,
                        None,
                    ));
                    providers.push(Provider::Table(bytes.to_vec()));
                }
            }
        }
        for (at, bytes) in &d.ebrs {
            streams.push(stream(
                StreamRole::Table(TableRole::Ebr),
                *at..at + bytes.len() as u64,
                None,
            ));
            providers.push(Provider::Table(bytes.clone()));
        }
        if let Some(hidden) = &d.hidden {
            let first = image.partitions.iter().map(|p| p.start).min().unwrap_or(ss);
            let file_len = std::fs::metadata(hidden).map(|m| m.len()).unwrap_or(0);
            let len = file_len
                .min(first.saturating_sub(ss))
                .min(clonezilla::MAX_HIDDEN);
            if len > 0 {
                streams.push(stream(StreamRole::Gap, ss..ss + len, None));
                providers.push(Provider::File {
                    path: hidden.clone(),
                    len,
                });
            }
        }
    }
    for p in &image.partitions {
        if partition.is_some_and(|n| n != p.number) {
            continue;
        }
        // A partition restored alone from a directory without a disk starts the target it is given.
        let offset = if partition.is_some() && image.disk.is_none() {
            0
        } else {
            p.start
        };
        let mut s = stream(
            StreamRole::Partition,
            offset..offset + p.len,
            Some(p.number),
        );
        let provider = match &p.content {
            Content::Partclone { first, fs } => match read_header(first)? {
                None if fs != "dd" => {
                    return Err(EngineError::Failed(format!(
                        "{}: neither a partclone image nor a raw copy (an ntfsclone or partimage image of \
                         Clonezilla's old formats?), which this program does not read; restore it with \
                         Clonezilla",
                        first.display()
                    )));
                }
                None if p.len == 0 => {
                    return Err(EngineError::Failed(format!(
                        "{}: a raw copy of a partition whose size the image does not record",
                        first.display()
                    )));
                }
                None => Provider::Partclone {
                    first: first.clone(),
                    label: format!("partition {} ({})", p.number, p.name),
                    raw: Some(p.len),
                },
                Some(h) => {
                    let fs_len = h.total_blocks.saturating_mul(u64::from(h.block_size));
                    if p.len == 0 {
                        s.len = fs_len.max(h.device_size);
                    } else if fs_len > p.len {
                        return Err(EngineError::Failed(format!(
                            "{}: the {} filesystem ({fs_len} bytes) is larger than partition {} ({} bytes) \
                             the table gives it",
                            first.display(),
                            h.fs,
                            p.number,
                            p.len
                        )));
                    }
                    s.fs = fs_kind(fs).or_else(|| fs_kind(&h.fs));
                    s.fs_aware = true;
                    headers.push((streams.len(), h));
                    Provider::Partclone {
                        first: first.clone(),
                        label: format!("partition {} ({})", p.number, p.name),
                        raw: None,
                    }
                }
            },
            Content::Swap { uuid, label } => {
                s.fs = Some(FsKind::Swap);
                Provider::Swap(swap_header(p.len, uuid.as_deref(), label.as_deref()))
            }
            Content::Extended => continue,
            Content::NotSaved => {
                if partition.is_some() {
                    return Err(EngineError::Failed(format!(
                        "{}: Clonezilla saved nothing of partition {} ({})",
                        image.path.display(),
                        p.number,
                        p.name
                    )));
                }
                s.unallocated = true;
                Provider::Unused
            }
            Content::Unsupported { file, why } => {
                return Err(EngineError::Failed(format!("{}: {why}", file.display())))
            }
        };
        streams.push(s);
        providers.push(provider);
    }
    if partition.is_some() && !streams.iter().any(|s| s.kind == StreamRole::Partition) {
        let have: Vec<String> = image
            .partitions
            .iter()
            .map(|p| p.number.to_string())
            .collect();
        return Err(EngineError::Failed(format!(
            "{} has no partition {}; it has {}",
            image.path.display(),
            partition.unwrap_or(0),
            have.join(", ")
        )));
    }
    let size = if table == PartitionTable::None {
        streams
            .iter()
            .map(|s| s.disk_offset + s.len)
            .max()
            .unwrap_or(0)
    } else {
        size
    };
    // Whatever no stream covers is free space: a gap stream that is not written. A `saveparts` image's
    // partitions are left alone: they do not make a disk (a whole-disk restore of it is refused).
    let whole = image.disk.is_some() || partition.is_some();
    let mut covered: Vec<Range<u64>> = streams.iter().map(PlannedStream::range).collect();
    covered.sort_by_key(|r| r.start);
    let mut pos = 0;
    let mut gaps = Vec::new();
    for r in covered {
        if r.start > pos {
            gaps.push(pos..r.start);
        }
        pos = pos.max(r.end);
    }
    if size > pos {
        gaps.push(pos..size);
    }
    if !whole {
        gaps.clear();
    }
    for g in gaps {
        let mut s = stream(StreamRole::Gap, g, None);
        s.unallocated = true;
        streams.push(s);
        providers.push(Provider::Unused);
    }
    let entries_end = image
        .disk
        .as_ref()
        .filter(|_| partition.is_none())
        .map(|d| {
            d.table
                .entries
                .iter()
                .map(|e| (e.start + e.size) * u64::from(sector))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    Ok(Source {
        layout: Layout {
            size_bytes: size,
            logical_sector_size: sector,
            table,
            streams,
            entries_end,
        },
        providers,
        headers,
    })
}

/// Reads `first`'s stream to its end (a partclone stream with every checksum, or a raw copy of `raw`
/// bytes); `advance` gets the bytes of each piece as it is read. Returns what was checked, in words.
pub fn check_stream(
    first: &std::path::Path,
    raw: Option<u64>,
    cancel: &AtomicBool,
    mut advance: impl FnMut(u64),
) -> Result<String, EngineError> {
    let mut feed = open_feed(first, raw)?;
    let n = feed.feed(&mut |_, data| {
        if cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        advance(data.len() as u64);
        Ok(())
    })?;
    Ok(match feed.header() {
        Some((h, checksums)) => format!(
            "{} in {} blocks of {} bytes, {checksums} checksums ({:?}) correct",
            h.fs,
            n / u64::from(h.block_size.max(1)),
            h.block_size,
            h.checksum
        ),
        None => format!(
            "a raw copy of {n} bytes (no checksums of its own: only the compressor's checks apply)"
        ),
    })
}

/// Bytes of data a restore writes from each partclone stream (what progress counts).
fn data_bytes(h: &partclone::Header) -> u64 {
    h.used_bitmap
        .unwrap_or(h.used_blocks)
        .saturating_mul(u64::from(h.block_size))
}

/// Restores `src` per `plan` onto `target`. Like [`super::restore::restore`]: checked first (unless
/// `opts.precheck` is off), table areas wiped, data written, tables last, read back; a failure after the
/// first write says the target is not usable.
pub fn restore(
    src: &Source,
    plan: &RestorePlan,
    target: &Target,
    opts: &RestoreOptions,
    progress: Option<Sender<Progress>>,
) -> Result<RestoreReport, EngineError> {
    let tables = tables::prepare(&src.layout, plan, |s| match &src.providers[s] {
        Provider::Table(b) => Ok(b.clone()),
        _ => Err(EngineError::Internal(format!("stream {s} is no table"))),
    })
    .map_err(|e| EngineError::Untouched(crate::units::chain(&e)))?;
    let placed: Vec<(usize, u64)> = plan
        .placements
        .iter()
        .map(|p| (p.stream, p.target_offset))
        .collect();
    if opts.precheck {
        precheck(src, &placed, opts, progress.clone())?;
    }
    run(src, plan, &placed, target, opts, progress, tables).map_err(|e| incomplete(e, plan, target))
}

/// Every partclone stream to be written, read through once with its checksums before anything is
/// written, several at a time (one per thread).
fn precheck(
    src: &Source,
    placed: &[(usize, u64)],
    opts: &RestoreOptions,
    progress: Option<Sender<Progress>>,
) -> Result<(), EngineError> {
    let streams: Vec<(&std::path::Path, &str, Option<u64>, u64)> = src
        .partclone_streams()
        .into_iter()
        .filter(|(i, ..)| placed.iter().any(|(s, _)| s == i))
        .map(|(i, first, label, raw)| (first, label, raw, src.data_bytes(i)))
        .collect();
    let meter = Mutex::new(Meter::new(
        "check",
        streams.iter().map(|s| s.3).sum(),
        progress,
    ));
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..opts.threads.clamp(1, streams.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(first, label, raw, _)) = streams.get(i) else {
                    return;
                };
                let r = check_stream(first, raw, &opts.cancel, |n| {
                    if let Ok(mut m) = meter.lock() {
                        m.advance(n, 0);
                    }
                });
                if let Err(e) = r {
                    if let Ok(mut f) = failures.lock() {
                        f.push(format!("{label}: {}", crate::units::chain(&e)));
                    }
                    if matches!(e, EngineError::Cancelled) {
                        return;
                    }
                }
            });
        }
    });
    if opts.cancel.load(Ordering::Relaxed) {
        return Err(EngineError::Untouched(EngineError::Cancelled.to_string()));
    }
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    if failures.is_empty() {
        return Ok(());
    }
    Err(EngineError::Untouched(format!(
        "the Clonezilla image is damaged: {}. Restore from another copy; `rescue verify` checks every stream",
        failures.join("; ")
    )))
}

/// Bytes gathered for one write: consecutive runs of a stream, up to [`WRITE_MAX`].
const WRITE_MAX: usize = 8 << 20;

fn run(
    src: &Source,
    plan: &RestorePlan,
    placed: &[(usize, u64)],
    target: &Target,
    opts: &RestoreOptions,
    progress: Option<Sender<Progress>>,
    tables: tables::Tables,
) -> Result<RestoreReport, EngineError> {
    let started = std::time::Instant::now();
    let mut report = RestoreReport::default();
    let total: u64 = placed.iter().map(|&(s, _)| src.data_bytes(s)).sum();
    let mut meter = Meter::new("restore", total, progress.clone());
    for r in &plan.invalidate {
        target.zero(r.start, r.end - r.start)?;
    }
    let ledger = opts.verify.then(Ledger::new);
    for &(s, at) in placed {
        if opts.cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        let len = src.layout.streams[s].len;
        match &src.providers[s] {
            Provider::Table(_) => {}
            Provider::Unused => match opts.unused {
                UnusedPolicy::Leave => {}
                UnusedPolicy::Zero => {
                    target.zero(at, len)?;
                    report.zero_bytes += len;
                }
                UnusedPolicy::Discard => {
                    target.discard(at, len);
                    report.discarded_bytes += len;
                }
            },
            Provider::File { path, len } => {
                // Only the bytes that fit before the first partition (the file may hold more).
                let mut bytes = Vec::new();
                std::fs::File::open(path)
                    .and_then(|f| {
                        std::io::Read::read_to_end(&mut std::io::Read::take(f, *len), &mut bytes)
                    })
                    .map_err(|e| EngineError::Failed(format!("{}: {e}", path.display())))?;
                let bytes = bytes.as_slice();
                target.write_at(bytes, at)?;
                note(&ledger, at, bytes);
                report.bytes_written += bytes.len() as u64;
            }
            Provider::Swap(page) => {
                target.write_at(page, at)?;
                note(&ledger, at, page);
                report.bytes_written += page.len() as u64;
                report.notes.push(format!(
                    "swap partition {} made again (Clonezilla saves only its UUID and label)",
                    src.layout.streams[s].partition.unwrap_or(0)
                ));
            }
            Provider::Partclone { first, label, raw } => {
                meter.set_current(label.clone(), src.data_bytes(s));
                let mut feed = open_feed(first, *raw)?;
                let written =
                    write_stream(feed.as_mut(), at, target, opts, ledger.as_ref(), &mut meter)?;
                report.bytes_written += written;
                if let Some(h) = feed.header().map(|(h, _)| h.clone()) {
                    if let Some(note) = ntfs_backup_boot(&h, at, len, target, ledger.as_ref())? {
                        report.notes.push(format!("{label}: {note}"));
                    }
                }
                if opts.unused == UnusedPolicy::Zero || opts.unused == UnusedPolicy::Discard {
                    report.notes.push(format!(
                        "{label}: free space inside the filesystem was left as the target had it (partclone \
                         images do not say where it is until they are read)"
                    ));
                }
            }
        }
    }
    meter.finish();
    let workers = super::workers::count(opts.threads);
    finish(
        target,
        plan,
        &tables,
        ledger,
        workers,
        opts,
        progress,
        &mut report,
    )?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// NTFS keeps a copy of its boot sector just past the volume, in the partition's last sector; partclone
/// leaves that sector out of its stream (it lies outside the clusters), so the restored filesystem
/// would have a bad backup boot sector (ntfsfix and chkdsk say so). It is written again from the restored
/// boot sector, as ntfsclone and Windows keep it.
fn ntfs_backup_boot(
    h: &partclone::Header,
    at: u64,
    len: u64,
    target: &Target,
    ledger: Option<&Ledger>,
) -> Result<Option<String>, EngineError> {
    if !h.fs.eq_ignore_ascii_case("ntfs") {
        return Ok(None);
    }
    let mut boot = vec![0u8; 512];
    target.read_exact_at(&mut boot, at)?;
    if &boot[3..11] != b"NTFS    " || boot[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    let bps = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let sectors = u64::from_le_bytes(boot[0x28..0x30].try_into().unwrap_or_default());
    let Some(backup) = sectors.checked_mul(bps) else {
        return Ok(None);
    };
    let stream_end = h.total_blocks.saturating_mul(u64::from(h.block_size));
    if bps != 512 || backup < stream_end || backup + 512 > len {
        return Ok(None);
    }
    target.write_at(&boot, at + backup)?;
    if let Some(l) = ledger {
        l.note_bytes(at + backup, &boot, Held::Stored);
    }
    Ok(Some(format!(
        "NTFS's backup boot sector (byte {backup} of the partition, outside partclone's stream) written from its boot sector"
    )))
}

fn note(ledger: &Option<Ledger>, at: u64, bytes: &[u8]) {
    if let Some(l) = ledger {
        l.note_bytes(at, bytes, Held::Stored);
    }
}

/// Takes bytes for an offset in the partition.
type Put<'a> = dyn FnMut(u64, &[u8]) -> Result<(), EngineError> + 'a;

/// What a stream's reader hands the writer: bytes for a target offset.
trait Feed {
    /// Calls `put(offset in the partition, bytes)` for each piece, in order; returns the bytes fed.
    fn feed(&mut self, put: &mut Put<'_>) -> Result<u64, EngineError>;

    /// A partclone stream's header and the checksums checked so far; `None` for a raw copy.
    fn header(&self) -> Option<(&partclone::Header, u64)>;
}

/// A partclone stream's used blocks, where the bitmap puts them.
struct Blocks<R>(partclone::Stream<R>);

impl<R: std::io::Read> Feed for Blocks<R> {
    fn feed(&mut self, put: &mut Put<'_>) -> Result<u64, EngineError> {
        let bs = u64::from(self.0.header().block_size);
        let mut n = 0;
        while let Some(run) = self
            .0
            .next_run()
            .map_err(|e| EngineError::Failed(e.to_string()))?
        {
            put(run.blocks.start * bs, run.data)?;
            n += run.data.len() as u64;
        }
        Ok(n)
    }

    fn header(&self) -> Option<(&partclone::Header, u64)> {
        Some((self.0.header(), self.0.checksums()))
    }
}

/// A raw copy (`partclone.dd`'s output): every byte in order, exactly `len` of them.
struct Raw {
    reader: Box<dyn std::io::Read + Send>,
    name: String,
    len: u64,
}

impl Feed for Raw {
    fn feed(&mut self, put: &mut Put<'_>) -> Result<u64, EngineError> {
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        loop {
            let n = read_full(&mut self.reader, &mut buf)
                .map_err(|e| EngineError::Failed(format!("{}: {e}", self.name)))?;
            if n == 0 {
                break;
            }
            if pos + n as u64 > self.len {
                return Err(EngineError::Failed(format!(
                    "{}: holds more than the {} bytes of its partition",
                    self.name, self.len
                )));
            }
            put(pos, &buf[..n])?;
            pos += n as u64;
        }
        if pos != self.len {
            return Err(EngineError::Failed(format!(
                "{}: holds {pos} bytes, its partition {}: a piece may be missing",
                self.name, self.len
            )));
        }
        Ok(pos)
    }

    fn header(&self) -> Option<(&partclone::Header, u64)> {
        None
    }
}

/// Reads until `buf` is full or the reader ends.
fn read_full(r: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The feed of a stream: its blocks, or its bytes for a raw copy of `len` bytes.
fn open_feed(first: &std::path::Path, raw: Option<u64>) -> Result<Box<dyn Feed>, EngineError> {
    let opened = stored::open(first).map_err(|e| EngineError::Failed(e.to_string()))?;
    let name = first.display().to_string();
    Ok(match raw {
        Some(len) => Box::new(Raw {
            reader: opened.reader,
            name,
            len,
        }),
        None => Box::new(Blocks(
            partclone::Stream::open(opened.reader, &name)
                .map_err(|e| EngineError::Failed(e.to_string()))?,
        )),
    })
}

/// Writes one stream onto the target at `offset`: this thread decompresses and reads it, gathering
/// consecutive bytes into buffers of up to 8 MiB; a writer thread writes them (direct I/O) and notes them
/// for the read-back. Returns the bytes written.
fn write_stream(
    feed: &mut dyn Feed,
    offset: u64,
    target: &Target,
    opts: &RestoreOptions,
    ledger: Option<&Ledger>,
    meter: &mut Meter,
) -> Result<u64, EngineError> {
    let (full_tx, full_rx) = sync_channel::<(u64, AlignedBuf)>(3);
    let (empty_tx, empty_rx) = sync_channel::<AlignedBuf>(4);
    for _ in 0..4 {
        let _ = empty_tx.send(AlignedBuf::with_capacity(WRITE_MAX));
    }
    let failed: Mutex<Option<EngineError>> = Mutex::new(None);
    let failed_ref = &failed;
    let mut written = 0u64;
    std::thread::scope(|scope| -> Result<(), EngineError> {
        let writer = scope.spawn(move || {
            for (at, buf) in full_rx.iter() {
                if let Err(e) = target.write_at(&buf, at) {
                    *failed_ref.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.into());
                    return;
                }
                if let Some(l) = ledger {
                    l.note_bytes(at, &buf, Held::Stored);
                }
                if empty_tx.send(buf).is_err() {
                    return;
                }
            }
        });
        let mut cur: Option<(u64, AlignedBuf)> = None;
        let result = (|| -> Result<(), EngineError> {
            let mut put = |rel: u64, data: &[u8]| -> Result<(), EngineError> {
                if opts.cancel.load(Ordering::Relaxed) {
                    return Err(EngineError::Cancelled);
                }
                let at = offset + rel;
                meter.advance(data.len() as u64, 0);
                let mut from = 0;
                while from < data.len() {
                    let fits = matches!(&cur, Some((start, b)) if start + b.len() as u64 == at + from as u64
                        && b.len() < WRITE_MAX);
                    if !fits {
                        if let Some(full) = cur.take() {
                            full_tx.send(full).map_err(|_| writer_gone(&failed))?;
                        }
                        let mut b = empty_rx.recv().map_err(|_| writer_gone(&failed))?;
                        b.set_len(0);
                        cur = Some((at + from as u64, b));
                    }
                    let Some((_, b)) = cur.as_mut() else {
                        return Err(EngineError::Internal("no write buffer".into()));
                    };
                    let n = (WRITE_MAX - b.len()).min(data.len() - from);
                    let len = b.len();
                    b.set_len(len + n);
                    b[len..len + n].copy_from_slice(&data[from..from + n]);
                    from += n;
                }
                Ok(())
            };
            written = feed.feed(&mut put)?;
            if let Some(full) = cur.take() {
                full_tx.send(full).map_err(|_| writer_gone(&failed))?;
            }
            Ok(())
        })();
        drop(full_tx);
        let _ = writer.join();
        result?;
        match failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?;
    Ok(written)
}

fn writer_gone(failed: &Mutex<Option<EngineError>>) -> EngineError {
    failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| EngineError::Internal("the writer thread stopped".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A `saveparts` directory of one partition whose image `name` holds `content`, gzip-compressed.
    fn dir_with(name: &str, content: &[u8]) -> tempfile::TempDir {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("parts"), "sdb6\n").unwrap();
        std::fs::write(d.path().join("clonezilla-img"), "").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(content).unwrap();
        std::fs::write(d.path().join(name), gz.finish().unwrap()).unwrap();
        d
    }

    /// An old image name whose content is no partclone stream (an ntfsclone image) is refused by name; a
    /// raw copy of a partition of unknown size too.
    #[test]
    fn what_is_no_partclone_stream_is_refused_unless_it_is_a_raw_copy() {
        let d = dir_with(
            "sdb6.ntfs-img.aa",
            b"\0ntfsclone-image version 10.1 and more bytes",
        );
        let image = crate::clonezilla::open(d.path()).unwrap();
        let e = source_of(&image, Some(6)).unwrap_err().to_string();
        assert!(
            e.contains("neither a partclone image nor a raw copy"),
            "{e}"
        );
        assert!(e.contains("sdb6.ntfs-img.aa"), "{e}");

        let d = dir_with("sdb6.dd-img.aa", &[7u8; 4096]);
        let image = crate::clonezilla::open(d.path()).unwrap();
        let e = source_of(&image, Some(6)).unwrap_err().to_string();
        assert!(e.contains("whose size the image does not record"), "{e}");
    }

    /// The swap header mkswap writes: version 1, the last page, UUID and label, the signature.
    #[test]
    fn swap_headers_are_what_mkswap_writes() {
        let page = swap_header(
            8 << 20,
            Some("0d1e2f3a-4b5c-4d6e-8f7a-8b9c0d1e2f3a"),
            Some("fixswap"),
        );
        assert_eq!(&page[4086..], b"SWAPSPACE2");
        assert_eq!(
            u32::from_le_bytes(page[1028..1032].try_into().unwrap()),
            2047
        );
        assert_eq!(page[1036..1040], [0x0d, 0x1e, 0x2f, 0x3a]);
        assert_eq!(&page[1052..1059], b"fixswap");
    }
}
