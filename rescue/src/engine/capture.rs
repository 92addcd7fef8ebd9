//! Capture: source disk → image. This thread numbers the image's steps (stream beginnings, unused extents,
//! chunk-aligned reads of the used ranges); [`worker`] threads read their chunk (direct I/O where the source
//! allows it), hash it (blake3) and compress it (zstd); one [`assemble`] thread writes the steps to the image
//! in order. A step needs a permit, which the writer returns once the step is written, so memory stays
//! bounded whatever the disk size. Zero chunks are recorded, not stored; identical chunks are stored once;
//! unreadable sectors are recorded and the capture goes on.

mod assemble;
mod worker;

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use super::device::Source;
use super::progress::{Meter, Progress};
use super::EngineError;
use crate::detect::{Disk, FsKind};
use crate::image::{
    CaptureMode, CompressedChunk, CreationInfo, ExtentKind, FinishedImage, ImageHeaderInfo,
    ImageId, ImageWriter, IndexExtras, StreamInfo,
};
use crate::plan::{CapturePlan, PlannedStream};
use assemble::{write_steps, Output, Tally};
use worker::{worker, BufferPool, Task};

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
