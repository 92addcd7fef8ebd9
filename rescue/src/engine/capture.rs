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
use crate::sys::AlignedBuf;

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
    /// A stream begins; with the bytes of it that will be read (for progress).
    Begin(StreamInfo, u64),
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
    // Steps in flight (numbered but not yet written): bounds memory whatever the disk size, even while one
    // worker is stuck narrowing a bad sector and the others run ahead. A step holds at most two chunk
    // buffers (the bytes read and the zstd frame), so at most 2 × 24 × 4 MiB = 192 MiB of chunk buffers.
    let window = (4 * threads + 4).min(24);
    let (permit_tx, permit_rx) = sync_channel::<()>(window);
    for _ in 0..window {
        let _ = permit_tx.send(());
    }
    let (task_tx, task_rx) = sync_channel::<Task>(threads);
    let task_rx = Arc::new(Mutex::new(task_rx));
    let (step_tx, step_rx) = sync_channel::<(u64, Steps)>(window);
    let pool = BufferPool::new(opts.chunk_size as usize, 2 * window);
    let mut tally = Tally::default();

    let result: Result<FinishedImage<W>, EngineError> = std::thread::scope(|scope| {
        // More workers than threads: while some wait for the disk, the others keep the cores busy. Two more
        // at the fast levels, where reading takes a good part of a chunk's time; one more at the slow ones,
        // whose compressor contexts are large (tens of MiB each) and where the disk is rarely waited for.
        let extra = if opts.level <= 9 { 2 } else { 1 };
        for _ in 0..threads + extra {
            let (rx, tx) = (task_rx.clone(), step_tx.clone());
            let (level, pool) = (opts.level, &pool);
            scope.spawn(move || worker(source, rx, tx, level, pool));
        }
        let extras = IndexExtras {
            creation: opts.creation.clone(),
            disk: super::disk_info(disk),
            notes: notes.clone(),
            sections: Vec::new(),
        };
        let out = Output {
            meter: &meter,
            pool: &pool,
            permits: permit_tx,
            tally: &mut tally,
        };
        let writer_handle = scope.spawn(|| write_steps(writer, step_rx, out, extras));
        let plan_result = plan_steps(&work, opts, &permit_rx, &task_tx, &step_tx);
        drop(task_tx);
        drop(step_tx);
        let written = writer_handle.join().unwrap_or_else(|_| {
            Err(EngineError::Internal(
                "the image writer thread panicked".into(),
            ))
        });
        // The writer's error (a worker's read or compression failure, a write error) explains a stopped
        // planner better than the planner's own.
        match (plan_result, written) {
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok(()), Ok(w)) => Ok(w),
        }
    });
    let finished = result?;
    let mut meter = meter.into_inner().unwrap_or_else(|p| p.into_inner());
    meter.finish();
    let report = CaptureReport {
        root_hash: finished.root_hash.to_string(),
        image_bytes: finished.bytes_written,
        used_bytes: total,
        stored_bytes: meter.stored(),
        zero_bytes: tally.zero_bytes,
        unreadable: tally.unreadable,
        notes,
        seconds: meter.elapsed().as_secs_f64(),
    };
    Ok((report, finished.inner))
}

/// What one numbered step of the image turned into: image operations in order, or why it failed.
type Steps = Result<Vec<Op>, EngineError>;

/// A read for a worker: `len` bytes at `offset` of the stream that starts at `disk_offset`.
struct Task {
    seq: u64,
    disk_offset: u64,
    offset: u64,
    len: usize,
}

/// Chunk-sized, page-aligned buffers handed back by the workers and the writer, so that reading and
/// compressing allocate nothing per chunk (and the kernel zeroes no fresh pages).
struct BufferPool {
    free: Mutex<Vec<AlignedBuf>>,
    size: usize,
    keep: usize,
}

impl BufferPool {
    fn new(size: usize, keep: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            size,
            keep,
        }
    }

    /// A buffer of `len` bytes (at most the chunk size; contents are whatever the last user left).
    fn take(&self, len: usize) -> AlignedBuf {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        let mut buf = reused.unwrap_or_else(|| AlignedBuf::with_capacity(self.size.max(len)));
        buf.set_len(len);
        buf
    }

    fn give(&self, buf: AlignedBuf) {
        if buf.capacity() < self.size {
            return;
        }
        if let Ok(mut f) = self.free.lock() {
            if f.len() < self.keep {
                f.push(buf);
            }
        }
    }
}

/// Numbers the image's steps in order: stream beginnings and unused extents go straight to the writer,
/// reads go to the workers. Every step waits for a permit, which the writer returns once it has written
/// that step.
fn plan_steps(
    work: &[(&PlannedStream, Vec<Range<u64>>, CaptureMode, String)],
    opts: &CaptureOptions,
    permits: &Receiver<()>,
    tasks: &SyncSender<Task>,
    steps: &SyncSender<(u64, Steps)>,
) -> Result<(), EngineError> {
    let stopped = || EngineError::Internal("the image writer stopped".into());
    let mut seq = 0u64;
    let next = |seq: &mut u64| -> Result<u64, EngineError> {
        if opts.cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        permits.recv().map_err(|_| stopped())?;
        *seq += 1;
        Ok(*seq - 1)
    };
    let direct = |seq: u64, op: Op| steps.send((seq, Ok(vec![op]))).map_err(|_| stopped());
    let unused = |offset: u64, len: u64| Op::Extent {
        offset,
        len,
        kind: ExtentKind::Unused,
    };
    let chunk = u64::from(opts.chunk_size);
    for (s, ranges, mode, reason) in work {
        let info = StreamInfo {
            kind: image_kind(s),
            disk_offset: s.disk_offset,
            length: s.len,
            label: stream_label(s),
            capture: *mode,
            capture_reason: reason.clone(),
        };
        let used = ranges.iter().map(|r| r.end - r.start).sum();
        direct(next(&mut seq)?, Op::Begin(info, used))?;
        let mut pos = 0u64;
        for r in ranges {
            if r.start > pos {
                direct(next(&mut seq)?, unused(pos, r.start - pos))?;
            }
            // Chunks are aligned to the stream (not the range) so identical files dedupe across streams.
            let mut off = r.start;
            while off < r.end {
                let end = ((off / chunk) + 1) * chunk;
                let len = (end.min(r.end) - off) as usize;
                let task = Task {
                    seq: next(&mut seq)?,
                    disk_offset: s.disk_offset,
                    offset: off,
                    len,
                };
                tasks
                    .send(task)
                    .map_err(|_| EngineError::Internal("the compression workers stopped".into()))?;
                off += len as u64;
            }
            pos = r.end;
        }
        if pos < s.len {
            direct(next(&mut seq)?, unused(pos, s.len - pos))?;
        }
    }
    Ok(())
}

fn worker(
    source: &Source,
    rx: Arc<Mutex<Receiver<Task>>>,
    tx: SyncSender<(u64, Steps)>,
    level: i32,
    pool: &BufferPool,
) {
    let mut compressor = ChunkCompressor::new(level).map_err(EngineError::Image);
    loop {
        let task = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(task) = task else { return };
        let seq = task.seq;
        // A panic while reading or compressing must end this step with an error, not take the process down.
        let steps = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let c = compressor
                .as_mut()
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            read_task(source, task, c, pool)
        }))
        .unwrap_or_else(|_| {
            Err(EngineError::Internal(
                "a compression worker panicked".into(),
            ))
        });
        if tx.send((seq, steps)).is_err() {
            return;
        }
    }
}

/// Read one task's bytes and turn them into image steps: unreadable pieces, zero pieces, and chunks.
fn read_task(
    source: &Source,
    task: Task,
    compressor: &mut ChunkCompressor,
    pool: &BufferPool,
) -> Steps {
    let mut buf = pool.take(task.len);
    let bad = source.read_tolerant_into(&mut buf, task.disk_offset + task.offset)?;
    if bad.is_empty() {
        // The usual case, a clean read: one piece, compressed from the buffer itself without a copy.
        if is_zero(&buf) {
            pool.give(buf);
            return Ok(vec![zero_extent(task.offset, task.len as u64)]);
        }
        let (chunk, spare) = compressor
            .compress_buf(buf, pool.take(task.len))
            .map_err(EngineError::Image)?;
        pool.give(spare);
        return Ok(vec![Op::Data {
            offset: task.offset,
            len: task.len as u64,
            chunk,
        }]);
    }
    let mut ops = Vec::new();
    for piece in split_readable(task.offset, task.len as u64, &bad, task.disk_offset) {
        ops.push(match piece {
            Piece::Bad(range) => Op::Extent {
                offset: range.start,
                len: range.end - range.start,
                kind: ExtentKind::Unreadable,
            },
            Piece::Good(range) => {
                let data =
                    &buf[(range.start - task.offset) as usize..(range.end - task.offset) as usize];
                if is_zero(data) {
                    zero_extent(range.start, range.end - range.start)
                } else {
                    Op::Data {
                        offset: range.start,
                        len: range.end - range.start,
                        chunk: compressor.compress(data).map_err(EngineError::Image)?,
                    }
                }
            }
        });
    }
    pool.give(buf);
    Ok(ops)
}

fn zero_extent(offset: u64, len: u64) -> Op {
    Op::Extent {
        offset,
        len,
        kind: ExtentKind::Zero,
    }
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

/// What the writer counts as it goes, for the report.
#[derive(Default)]
struct Tally {
    zero_bytes: u64,
    unreadable: Vec<(String, Range<u64>)>,
}

/// The writer's companions: progress, the buffer pool, the permits it returns, and its tally.
struct Output<'a> {
    meter: &'a Mutex<Meter>,
    pool: &'a BufferPool,
    permits: SyncSender<()>,
    tally: &'a mut Tally,
}

/// Writes the steps in their order (they arrive in any order) and returns a permit for each.
fn write_steps<W: Write>(
    mut writer: ImageWriter<W>,
    steps: Receiver<(u64, Steps)>,
    mut out: Output,
    extras: IndexExtras,
) -> Result<FinishedImage<W>, EngineError> {
    let mut pending: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
    let mut next = 0u64;
    let mut stream = None;
    loop {
        // Apply everything that is next in order; wait for more otherwise.
        while let Some(ops) = pending.remove(&next) {
            for op in ops {
                apply(&mut writer, &mut stream, op, &mut out)?;
            }
            next += 1;
            // The planner may have finished: a permit nobody takes is fine.
            let _ = out.permits.try_send(());
        }
        match steps.recv_timeout(Duration::from_secs(1)) {
            Ok((seq, Ok(ops))) => {
                pending.insert(seq, ops);
            }
            Ok((_, Err(e))) => return Err(e),
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

/// The stream being written: its id and what the report needs to name its ranges.
struct Current {
    id: crate::image::StreamId,
    label: String,
    disk_offset: u64,
}

fn apply<W: Write>(
    writer: &mut ImageWriter<W>,
    stream: &mut Option<Current>,
    op: Op,
    out: &mut Output,
) -> Result<(), EngineError> {
    if let Op::Begin(info, used) = op {
        if let Ok(mut m) = out.meter.lock() {
            m.set_current(info.label.clone(), used);
        }
        let (label, disk_offset) = (info.label.clone(), info.disk_offset);
        let id = writer.begin_stream(info).map_err(EngineError::Image)?;
        *stream = Some(Current {
            id,
            label,
            disk_offset,
        });
        return Ok(());
    }
    let s = stream
        .as_ref()
        .ok_or_else(|| EngineError::Internal("image data before any stream".into()))?;
    let (len, stored) = match op {
        Op::Begin(..) => return Ok(()),
        Op::Extent { offset, len, kind } => {
            writer
                .push_extent(s.id, offset, len, kind)
                .map_err(EngineError::Image)?;
            match kind {
                ExtentKind::Zero => out.tally.zero_bytes += len,
                ExtentKind::Unreadable => {
                    let at = s.disk_offset + offset;
                    out.tally.unreadable.push((s.label.clone(), at..at + len));
                }
                // Unused extents were never part of the progress total.
                ExtentKind::Unused | ExtentKind::Data(_) => return Ok(()),
            }
            (len, 0)
        }
        Op::Data { offset, len, chunk } => {
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
                .push_data(s.id, offset, len, id)
                .map_err(EngineError::Image)?;
            out.pool.give(chunk.payload);
            (len, stored)
        }
    };
    if let Ok(mut m) = out.meter.lock() {
        m.advance(len, stored);
    }
    Ok(())
}
