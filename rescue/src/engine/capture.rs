//! Capture: source disk → image. One reader (this thread) reads the used ranges of each stream in large
//! sequential reads and cuts them into chunks; worker threads hash (blake3) and compress (zstd) them; one
//! writer thread appends them to the image in order. Queues are bounded, so memory stays at a few chunks per
//! thread whatever the disk size. Zero chunks are recorded, not stored; identical chunks are stored once;
//! unreadable sectors are recorded and the capture goes on.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::device::Source;
use super::progress::{Meter, Progress};
use super::EngineError;
use crate::detect::{Disk, FsKind};
use crate::image::{
    CaptureMode, ChunkCompressor, CompressedChunk, CreationInfo, ExtentKind, FinishedImage,
    ImageHeaderInfo, ImageId, ImageWriter, IndexExtras, StreamInfo,
};
use crate::plan::{CapturePlan, PlannedStream};

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub level: i32,
    pub threads: usize,
    pub chunk_size: u32,
    pub creation: CreationInfo,
    pub cancel: Arc<AtomicBool>,
}

/// What happened, for the CLI summary, the log and the TUI result screen.
#[derive(Debug, Clone, Default)]
pub struct CaptureReport {
    pub root_hash: String,
    pub image_bytes: u64,
    /// Bytes the plan asked to read (used bytes of every stream).
    pub used_bytes: u64,
    pub stored_bytes: u64,
    pub zero_bytes: u64,
    pub unreadable: Vec<(String, Range<u64>)>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// One step of the image, in image order. The reader numbers them; the writer applies them in that order.
enum Op {
    Begin(StreamInfo),
    Extent {
        offset: u64,
        len: u64,
        kind: ExtentKind,
    },
    Data {
        offset: u64,
        len: u64,
        chunk: CompressedChunk,
    },
}

struct Job {
    seq: u64,
    offset: u64,
    data: Vec<u8>,
}

/// A window of the source as `Read + Seek`, for the used-block map parsers.
pub struct Window<'a> {
    source: &'a Source,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Window<'a> {
    pub fn new(source: &'a Source, start: u64, len: u64) -> Self {
        Window {
            source,
            start,
            len,
            pos: 0,
        }
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.len.saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.source
            .read_exact_at(&mut buf[..n], self.start + self.pos)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start")
        })?;
        Ok(self.pos)
    }
}

fn fs_name(fs: Option<FsKind>) -> String {
    fs.map(|f| format!("{f:?}").to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

fn stream_label(s: &PlannedStream) -> String {
    use crate::plan::StreamKind as K;
    match s.kind {
        K::Table(role) => format!("{role:?} table"),
        K::Gap => format!("gap at byte {}", s.disk_offset),
        K::Partition => format!("partition {} ({})", s.partition.unwrap_or(0), fs_name(s.fs)),
        K::WholeDisk => format!("whole disk ({})", fs_name(s.fs)),
    }
}

fn image_kind(s: &PlannedStream) -> crate::image::StreamKind {
    use crate::image::StreamKind as I;
    use crate::plan::StreamKind as K;
    match s.kind {
        K::Table(role) => I::Table(role),
        K::Gap => I::Gap,
        K::Partition => I::Partition {
            number: s.partition.unwrap_or(0),
        },
        K::WholeDisk => I::WholeDisk,
    }
}

/// Ranges (relative to the stream) to read, and why: the filesystem's used blocks, or everything.
pub(crate) fn ranges_to_read(
    source: &Source,
    s: &PlannedStream,
    notes: &mut Vec<String>,
) -> (Vec<Range<u64>>, CaptureMode, String) {
    if s.fs_aware {
        if let Some(fs) = s.fs {
            let mut w = Window::new(source, s.disk_offset, s.len);
            match crate::fs::used_map(&mut w, s.len, fs) {
                Ok(map) => {
                    notes.extend(
                        map.notes
                            .iter()
                            .map(|n| format!("{}: {n}", stream_label(s))),
                    );
                    return (
                        map.ranges,
                        CaptureMode::FilesystemAware,
                        format!("{} used-block map", fs_name(Some(fs))),
                    );
                }
                Err(e) => {
                    let why = format!("{}: captured raw: {e}", stream_label(s));
                    notes.push(why.clone());
                    return (std::iter::once(0..s.len).collect(), CaptureMode::Raw, why);
                }
            }
        }
    }
    let why = match s.kind {
        crate::plan::StreamKind::Partition | crate::plan::StreamKind::WholeDisk
            if s.fs.is_some() =>
        {
            format!(
                "no used-block map for {} (or --raw): every sector, zero-skipped",
                fs_name(s.fs)
            )
        }
        crate::plan::StreamKind::Partition | crate::plan::StreamKind::WholeDisk => {
            "no filesystem recognised: every sector, zero-skipped".to_string()
        }
        _ => "every byte".to_string(),
    };
    (std::iter::once(0..s.len).collect(), CaptureMode::Raw, why)
}

/// Capture `plan` of `source` (described by `disk`) into `out`. Returns the report and the inner writer.
pub fn capture<W: Write + Send>(
    source: &Source,
    disk: &Disk,
    plan: &CapturePlan,
    out: W,
    opts: &CaptureOptions,
    progress: Option<Sender<Progress>>,
) -> Result<(CaptureReport, W), EngineError> {
    let mut notes = Vec::new();
    // Decide every stream's ranges first: the progress total must be known up front.
    let mut work = Vec::new();
    for s in &plan.layout.streams {
        let (ranges, mode, reason) = ranges_to_read(source, s, &mut notes);
        work.push((s, ranges, mode, reason));
    }
    let total: u64 = work
        .iter()
        .map(|(_, r, _, _)| r.iter().map(|r| r.end - r.start).sum::<u64>())
        .sum();
    let meter = Mutex::new(Meter::new("capture", total, progress));
    let header = ImageHeaderInfo {
        image_id: ImageId::generate(),
        chunk_size: opts.chunk_size,
    };
    let writer = ImageWriter::new(out, header).map_err(EngineError::Image)?;
    let threads = opts.threads.max(1);
    let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (op_tx, op_rx) = sync_channel::<(u64, Op)>(threads * 4);
    let unreadable = Mutex::new(Vec::new());
    let zero_bytes = Mutex::new(0u64);

    let result: Result<FinishedImage<W>, EngineError> = std::thread::scope(|scope| {
        for _ in 0..threads {
            let (rx, tx) = (job_rx.clone(), op_tx.clone());
            let level = opts.level;
            scope.spawn(move || worker(rx, tx, level));
        }
        let extras = IndexExtras {
            creation: opts.creation.clone(),
            disk: super::disk_info(disk),
            notes: notes.clone(),
            sections: Vec::new(),
        };
        let writer_handle = scope.spawn(|| write_ops(writer, op_rx, &meter, extras));
        let read_result = read_streams(
            source,
            &work,
            opts,
            &job_tx,
            &op_tx,
            &meter,
            &unreadable,
            &zero_bytes,
        );
        drop(job_tx);
        drop(op_tx);
        let written = writer_handle.join().unwrap_or_else(|_| {
            Err(EngineError::Internal(
                "the image writer thread panicked".into(),
            ))
        });
        read_result?;
        written
    });
    let finished = result?;
    let mut meter = meter.into_inner().unwrap_or_else(|p| p.into_inner());
    meter.finish();
    let report = CaptureReport {
        root_hash: finished.root_hash.to_string(),
        image_bytes: finished.bytes_written,
        used_bytes: total,
        stored_bytes: meter.stored(),
        zero_bytes: zero_bytes.into_inner().unwrap_or(0),
        unreadable: unreadable.into_inner().unwrap_or_default(),
        notes,
        seconds: meter.elapsed().as_secs_f64(),
    };
    Ok((report, finished.inner))
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, tx: SyncSender<(u64, Op)>, level: i32) {
    let Ok(mut compressor) = ChunkCompressor::new(level) else {
        return;
    };
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let len = job.data.len() as u64;
        let (seq, offset) = (job.seq, job.offset);
        // A panic while compressing must end this job with an error, not take the process down.
        let chunk = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            compressor.compress_owned(job.data)
        }));
        let op = match chunk {
            Ok(Ok(chunk)) => Op::Data { offset, len, chunk },
            // The writer notices the missing step and fails the capture with an error.
            Ok(Err(_)) | Err(_) => return,
        };
        if tx.send((seq, op)).is_err() {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn read_streams(
    source: &Source,
    work: &[(&PlannedStream, Vec<Range<u64>>, CaptureMode, String)],
    opts: &CaptureOptions,
    jobs: &SyncSender<Job>,
    ops: &SyncSender<(u64, Op)>,
    meter: &Mutex<Meter>,
    unreadable: &Mutex<Vec<(String, Range<u64>)>>,
    zero_bytes: &Mutex<u64>,
) -> Result<(), EngineError> {
    let mut seq = 0u64;
    let send_op = |seq: &mut u64, op: Op| -> Result<(), EngineError> {
        ops.send((*seq, op))
            .map_err(|_| EngineError::Internal("the image writer stopped".into()))?;
        *seq += 1;
        Ok(())
    };
    let chunk = u64::from(opts.chunk_size);
    for (s, ranges, mode, reason) in work {
        let label = stream_label(s);
        if let Ok(mut m) = meter.lock() {
            m.set_current(label.clone(), ranges.iter().map(|r| r.end - r.start).sum());
        }
        send_op(
            &mut seq,
            Op::Begin(StreamInfo {
                kind: image_kind(s),
                disk_offset: s.disk_offset,
                length: s.len,
                label: label.clone(),
                capture: *mode,
                capture_reason: reason.clone(),
            }),
        )?;
        let mut pos = 0u64;
        for r in ranges {
            if r.start > pos {
                send_op(
                    &mut seq,
                    Op::Extent {
                        offset: pos,
                        len: r.start - pos,
                        kind: ExtentKind::Unused,
                    },
                )?;
            }
            // Chunks are aligned to the stream (not the range) so identical files dedupe across streams.
            let mut off = r.start;
            while off < r.end {
                if opts.cancel.load(Ordering::Relaxed) {
                    return Err(EngineError::Cancelled);
                }
                let next = ((off / chunk) + 1) * chunk;
                let len = (next.min(r.end) - off) as usize;
                let mut read = source
                    .read_tolerant(s.disk_offset + off, len)
                    .map_err(EngineError::Device)?;
                for piece in split_readable(off, len as u64, &read.unreadable, s.disk_offset) {
                    match piece {
                        Piece::Bad(range) => {
                            if let Ok(mut u) = unreadable.lock() {
                                u.push((
                                    label.clone(),
                                    s.disk_offset + range.start..s.disk_offset + range.end,
                                ));
                            }
                            send_op(
                                &mut seq,
                                Op::Extent {
                                    offset: range.start,
                                    len: range.end - range.start,
                                    kind: ExtentKind::Unreadable,
                                },
                            )?;
                            if let Ok(mut m) = meter.lock() {
                                m.advance(range.end - range.start, 0);
                            }
                        }
                        Piece::Good(range) => {
                            let data = &read.data
                                [(range.start - off) as usize..(range.end - off) as usize];
                            if is_zero(data) {
                                send_op(
                                    &mut seq,
                                    Op::Extent {
                                        offset: range.start,
                                        len: range.end - range.start,
                                        kind: ExtentKind::Zero,
                                    },
                                )?;
                                if let Ok(mut z) = zero_bytes.lock() {
                                    *z += data.len() as u64;
                                }
                                if let Ok(mut m) = meter.lock() {
                                    m.advance(data.len() as u64, 0);
                                }
                            } else {
                                // The usual case, a clean read: hand the buffer over instead of copying it.
                                let whole = range.start == off && range.end == off + len as u64;
                                let data = if whole {
                                    std::mem::take(&mut read.data)
                                } else {
                                    data.to_vec()
                                };
                                let job = Job {
                                    seq,
                                    offset: range.start,
                                    data,
                                };
                                seq += 1;
                                jobs.send(job).map_err(|_| {
                                    EngineError::Internal("the compression workers stopped".into())
                                })?;
                            }
                        }
                    }
                }
                off += len as u64;
            }
            pos = r.end;
        }
        if pos < s.len {
            send_op(
                &mut seq,
                Op::Extent {
                    offset: pos,
                    len: s.len - pos,
                    kind: ExtentKind::Unused,
                },
            )?;
        }
    }
    Ok(())
}

enum Piece {
    Good(Range<u64>),
    Bad(Range<u64>),
}

/// Split `[off, off+len)` (stream offsets) around the unreadable disk ranges of one read.
fn split_readable(off: u64, len: u64, bad: &[Range<u64>], disk_offset: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut pos = off;
    for b in bad {
        let (bs, be) = (b.start - disk_offset, b.end - disk_offset);
        if bs > pos {
            out.push(Piece::Good(pos..bs));
        }
        out.push(Piece::Bad(bs..be));
        pos = be;
    }
    if pos < off + len {
        out.push(Piece::Good(pos..off + len));
    }
    out
}

/// OR-folding blocks vectorises; an early-exit `all` over bytes does not.
fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|c| c.iter().fold(0u8, |a, &b| a | b) == 0)
}

fn write_ops<W: Write>(
    mut writer: ImageWriter<W>,
    ops: Receiver<(u64, Op)>,
    meter: &Mutex<Meter>,
    extras: IndexExtras,
) -> Result<FinishedImage<W>, EngineError> {
    let mut pending: BTreeMap<u64, Op> = BTreeMap::new();
    let mut next = 0u64;
    let mut stream = None;
    loop {
        // Apply everything that is next in order; wait for more otherwise.
        while let Some(op) = pending.remove(&next) {
            apply(&mut writer, &mut stream, op, meter)?;
            next += 1;
        }
        match ops.recv_timeout(Duration::from_secs(1)) {
            Ok((seq, op)) => {
                pending.insert(seq, op);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if !pending.is_empty() {
        return Err(EngineError::Internal(format!(
            "{} image steps never arrived after step {next}; a worker failed",
            pending.len()
        )));
    }
    writer.finish(extras).map_err(EngineError::Image)
}

fn apply<W: Write>(
    writer: &mut ImageWriter<W>,
    stream: &mut Option<crate::image::StreamId>,
    op: Op,
    meter: &Mutex<Meter>,
) -> Result<(), EngineError> {
    match op {
        Op::Begin(info) => {
            *stream = Some(writer.begin_stream(info).map_err(EngineError::Image)?);
        }
        Op::Extent { offset, len, kind } => {
            let s =
                stream.ok_or_else(|| EngineError::Internal("extent before any stream".into()))?;
            writer
                .push_extent(s, offset, len, kind)
                .map_err(EngineError::Image)?;
        }
        Op::Data { offset, len, chunk } => {
            let s = stream.ok_or_else(|| EngineError::Internal("data before any stream".into()))?;
            let (id, stored) = match writer.has_chunk(&chunk.hash, chunk.uncompressed_len) {
                Some(id) => (id, 0),
                None => {
                    let stored = chunk.payload.len() as u64;
                    (
                        writer
                            .write_compressed(&chunk)
                            .map_err(EngineError::Image)?,
                        stored,
                    )
                }
            };
            writer
                .push_data(s, offset, len, id)
                .map_err(EngineError::Image)?;
            if let Ok(mut m) = meter.lock() {
                m.advance(len, stored);
            }
        }
    }
    Ok(())
}
