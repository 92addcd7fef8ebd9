//! Capture: source disk → image. This thread numbers the image's steps (stream beginnings, unused extents,
//! chunk-aligned reads of the used ranges); [`worker`] threads read their chunk (direct I/O where the source
//! allows it), hash it (blake3) and compress it (zstd); one [`assemble`] thread writes each chunk to the
//! image as soon as it arrives and records the steps in the index in their order. A read needs a permit,
//! which the writer returns once the chunk is written, and every step one more, returned once it is in the
//! index, so memory stays bounded whatever the disk size. Zero chunks are recorded, not stored; identical
//! chunks are stored once; unreadable sectors are recorded and the capture goes on.

mod arrange;
mod assemble;
mod dedup;
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
use worker::{compressor, reader, BufferPool, ReadChunk, Task};

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub level: i32,
    pub threads: usize,
    pub chunk_size: u32,
    /// Store each 4 KiB block once (see `capture::dedup`); the image then needs a format 1.1 reader.
    pub dedup: bool,
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
    /// Bytes found more than once (identical chunks, blocks found again) and stored once.
    pub repeated_bytes: u64,
    pub zero_bytes: u64,
    pub unreadable: Vec<(String, Range<u64>)>,
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// One step of the image, in image order. The planner numbers them; the writer records them in that order.
/// `C` is what a data range carries: its compressed chunk, then, once written, where the chunk is.
enum Op<C = CompressedChunk> {
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
        chunk: C,
    },
    /// A chunk that no range takes whole (the blocks of a read not seen before): slices reference it.
    Chunk(C),
    /// `len` bytes of the chunk of step `step` (this one's or another's), from byte `at` of it.
    Slice {
        offset: u64,
        len: u64,
        step: u64,
        at: u32,
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
            .map_err(std::io::Error::other)?;
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

pub(super) fn stream_label(s: &PlannedStream) -> String {
    use crate::plan::StreamRole as R;
    match s.kind {
        R::Table(role) => role.describe().to_string(),
        R::Gap => format!("gap at byte {}", s.disk_offset),
        R::Partition => format!("partition {} ({})", s.partition.unwrap_or(0), fs_name(s.fs)),
        R::WholeDisk => format!("whole disk ({})", fs_name(s.fs)),
    }
}

fn image_kind(s: &PlannedStream) -> crate::image::StreamKind {
    use crate::image::StreamKind as I;
    use crate::plan::StreamRole as R;
    match s.kind {
        R::Table(role) => I::Table(role),
        R::Gap => I::Gap,
        R::Partition => I::Partition {
            number: s.partition.unwrap_or(0),
        },
        R::WholeDisk => I::WholeDisk,
    }
}

/// Ranges (relative to the stream) to read, and why: the filesystem's used blocks, or everything.
pub(crate) fn ranges_to_read(
    source: &Source,
    s: &PlannedStream,
    notes: &mut Vec<String>,
) -> (Vec<Range<u64>>, CaptureMode, String) {
    if s.unallocated {
        return (
            Vec::new(),
            CaptureMode::Raw,
            format!(
                "unallocated: not read (space outside the partitions over {} is left out; \
                 --keep-unallocated reads it)",
                crate::units::human_size(crate::plan::SMALL_GAP)
            ),
        );
    }
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
                    let why = format!(
                        "{}: captured raw: {}",
                        stream_label(s),
                        crate::units::chain(&e)
                    );
                    notes.push(why.clone());
                    return (std::iter::once(0..s.len).collect(), CaptureMode::Raw, why);
                }
            }
        }
    }
    let why = match s.kind {
        crate::plan::StreamRole::Partition | crate::plan::StreamRole::WholeDisk
            if s.fs.is_some() =>
        {
            format!(
                "no used-block map for {} (or --raw): every sector, zero-skipped",
                fs_name(s.fs)
            )
        }
        crate::plan::StreamRole::Partition | crate::plan::StreamRole::WholeDisk => {
            "no filesystem recognised: every sector, zero-skipped".to_string()
        }
        _ => "every byte".to_string(),
    };
    (std::iter::once(0..s.len).collect(), CaptureMode::Raw, why)
}

/// What a capture of a plan reads: each stream's ranges (its filesystem's used-block map, or everything,
/// or nothing for unallocated space), how, and why; worked out once, before anything is read, so the
/// progress total (and the destination's room) is known up front.
pub struct Reads<'a> {
    work: Vec<(&'a PlannedStream, Vec<Range<u64>>, CaptureMode, String)>,
    notes: Vec<String>,
    /// Bytes the capture will read.
    pub total: u64,
}

/// The [`Reads`] of `plan` on `source`.
pub fn plan_reads<'a>(source: &Source, plan: &'a CapturePlan) -> Reads<'a> {
    let mut notes = Vec::new();
    let mut work = Vec::new();
    for s in &plan.layout.streams {
        let (ranges, mode, reason) = ranges_to_read(source, s, &mut notes);
        work.push((s, ranges, mode, reason));
    }
    let total = work
        .iter()
        .map(|(_, r, _, _)| r.iter().map(|r| r.end - r.start).sum::<u64>())
        .sum();
    Reads { work, notes, total }
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
    capture_reads(source, disk, plan_reads(source, plan), out, opts, progress)
}

/// [`capture`] of reads worked out already.
pub fn capture_reads<W: Write + Send>(
    source: &Source,
    disk: &Disk,
    reads: Reads,
    out: W,
    opts: &CaptureOptions,
    progress: Option<Sender<Progress>>,
) -> Result<(CaptureReport, W), EngineError> {
    capture_into(source, disk, reads, out, opts, progress, None, None)
}

/// [`capture_reads`] with the chunk frames sent to `sink` (a repository) instead of into `out`, which
/// then gets the image's header, index and footer only ([`crate::image::ChunkSink`]); chunks `lookup`
/// says the repository has are hashed, not compressed.
#[allow(clippy::too_many_arguments)]
pub fn capture_into<W: Write + Send>(
    source: &Source,
    disk: &Disk,
    reads: Reads,
    out: W,
    opts: &CaptureOptions,
    progress: Option<Sender<Progress>>,
    sink: Option<Box<dyn crate::image::ChunkSink>>,
    lookup: Option<&dyn crate::image::ChunkLookup>,
) -> Result<(CaptureReport, W), EngineError> {
    let Reads { work, notes, total } = reads;
    let meter = Mutex::new(Meter::new("capture", total, progress));
    let header = ImageHeaderInfo {
        image_id: ImageId::generate(),
        chunk_size: opts.chunk_size,
        slices: opts.dedup,
    };
    let mut writer = ImageWriter::new(out, header).map_err(EngineError::Image)?;
    if let Some(sink) = sink {
        writer.set_sink(sink).map_err(EngineError::Image)?;
    }
    let threads = opts.threads.clamp(1, MAX_COMPRESSORS);
    let window = read_window(threads, opts.chunk_size);
    let (read_permits, read_permit) = permits(window);
    let (step_permits, step_permit) = permits(STEPS_AHEAD);
    let (task_tx, task_rx) = sync_channel::<Task>(READERS);
    let task_rx = Arc::new(Mutex::new(task_rx));
    let (read_tx, read_rx) = sync_channel::<ReadChunk>(window);
    let read_rx = Arc::new(Mutex::new(read_rx));
    let (step_tx, step_rx) = sync_channel::<Step>(window);
    let pool = BufferPool::new(opts.chunk_size as usize, window + threads);
    let mut tally = Tally::default();
    let read_source: &dedup::ReadSource = &|buf, at| source.read_once(buf, at);
    let dedup = opts.dedup.then(|| dedup::Dedup::new(read_source));

    let result: Result<FinishedImage<W>, EngineError> = std::thread::scope(|scope| {
        for _ in 0..READERS {
            let (rx, tx, pool, dedup) = (task_rx.clone(), read_tx.clone(), &pool, dedup.as_ref());
            scope.spawn(move || reader(source, rx, tx, pool, dedup));
        }
        drop(read_tx);
        for _ in 0..threads {
            let (rx, tx) = (read_rx.clone(), step_tx.clone());
            let (level, pool, cancel) = (opts.level, &pool, &*opts.cancel);
            scope.spawn(move || compressor(rx, tx, level, pool, cancel, lookup));
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
            read_permits,
            step_permits,
            tally: &mut tally,
        };
        let writer_handle = scope.spawn(|| write_steps(writer, step_rx, out, extras));
        let permit = Taken {
            read: &read_permit,
            step: &step_permit,
        };
        let plan_result = plan_steps(&work, opts, permit, &task_tx, &step_tx);
        drop(task_tx);
        drop(step_tx);
        let written = writer_handle.join().unwrap_or_else(|_| {
            Err(EngineError::Internal(
                "the image writer thread panicked".into(),
            ))
        });
        // The writer's error (a worker's read or compression failure, a write error) explains a stopped
        // planner better than the planner's own, unless the planner stopped because it was cancelled (the
        // writer then only finds the image incomplete).
        match (plan_result, written) {
            (Err(EngineError::Cancelled), _) => Err(EngineError::Cancelled),
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
        repeated_bytes: finished.repeated_bytes,
        zero_bytes: tally.zero_bytes,
        unreadable: tally.unreadable,
        notes,
        seconds: meter.elapsed().as_secs_f64(),
    };
    Ok((report, finished.inner))
}

/// Chunk buffers the capture may hold at once (bytes read and zstd frames, pooled): with the image output's
/// blocks, the compressors' contexts and the index, peak memory stays well under 256 MiB.
const BUFFER_BUDGET: u64 = 160 << 20;

/// Most compressor threads, whatever `--threads` says: eight compress level 3 faster than nearly any disk
/// reads (about 2.5 GB/s), and more would need more chunk buffers than [`BUFFER_BUDGET`] allows.
const MAX_COMPRESSORS: usize = 8;

/// Steps numbered but not yet in the index. Once written, a step waits in the writer only as a few words
/// of index; this bounds them while one worker is stuck narrowing a bad sector and the others run ahead.
const STEPS_AHEAD: usize = 4096;

/// Used ranges less than this far apart in one chunk-aligned window are read with one request (the free
/// space between them is read but not stored) and stored in one chunk, when the image may hold slices: a
/// request costs about as long as reading this much more, and a fragmented filesystem would otherwise make
/// thousands of small reads and small chunks, which compress worse.
const BRIDGE: u64 = 128 << 10;

/// Reader threads: two reads in flight keep a disk busy while each waits for its own (and let an NVMe
/// drive or a RAID work on two at once); they cost no CPU while waiting.
const READERS: usize = 2;

/// Reads in flight (handed to the readers, their chunk not yet written): bounds memory whatever the disk
/// size. A read holds one chunk buffer, and one more while it is being compressed (the zstd frame), so
/// `window + threads` buffers stay within [`BUFFER_BUDGET`]: 12 reads of 8 MiB chunks for 2 to 8
/// compressors. Every reader and compressor gets a read even with huge chunks, so the budget only bends
/// for chunk sizes nobody captures with by default.
fn read_window(threads: usize, chunk_size: u32) -> usize {
    let buffers = (BUFFER_BUDGET / u64::from(chunk_size.max(1))) as usize;
    (4 * threads + 4)
        .min(buffers.saturating_sub(threads))
        .max(threads + READERS + 1)
}

/// `n` permits: the receiver takes one, the sender gives one back.
fn permits(n: usize) -> (SyncSender<()>, Receiver<()>) {
    let (tx, rx) = sync_channel(n);
    for _ in 0..n {
        let _ = tx.send(());
    }
    (tx, rx)
}

/// Where the planner takes its permits from.
#[derive(Clone, Copy)]
struct Taken<'a> {
    read: &'a Receiver<()>,
    step: &'a Receiver<()>,
}

/// What one numbered step of the image turned into: image operations in order, or why it failed.
type Steps = Result<Vec<Op>, EngineError>;

/// A numbered step on its way to the writer. `read` is set on the workers' steps, which hold a read permit.
struct Step {
    seq: u64,
    ops: Steps,
    read: bool,
}

/// Numbers the image's steps in order: stream beginnings and unused extents go straight to the writer,
/// reads go to the workers. Every step waits for a step permit, which the writer returns once the step is
/// in the index, and every read for a read permit too, returned once its chunk is written.
fn plan_steps(
    work: &[(&PlannedStream, Vec<Range<u64>>, CaptureMode, String)],
    opts: &CaptureOptions,
    permit: Taken,
    tasks: &SyncSender<Task>,
    steps: &SyncSender<Step>,
) -> Result<(), EngineError> {
    let stopped = || EngineError::Internal("the image writer stopped".into());
    let mut seq = 0u64;
    let next = |seq: &mut u64| -> Result<u64, EngineError> {
        if opts.cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        permit.step.recv().map_err(|_| stopped())?;
        *seq += 1;
        Ok(*seq - 1)
    };
    let direct = |seq: u64, op: Op| {
        let step = Step {
            seq,
            ops: Ok(vec![op]),
            read: false,
        };
        steps.send(step).map_err(|_| stopped())
    };
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
        for used in reads(ranges, chunk, opts.dedup) {
            let (start, end) = (used[0].start, used[used.len() - 1].end);
            if start > pos {
                direct(next(&mut seq)?, unused(pos, start - pos))?;
            }
            let step = next(&mut seq)?;
            permit.read.recv().map_err(|_| stopped())?;
            let task = Task {
                seq: step,
                disk_offset: s.disk_offset,
                offset: start,
                len: (end - start) as usize,
                ranges: if used.len() > 1 { used } else { Vec::new() },
            };
            tasks
                .send(task)
                .map_err(|_| EngineError::Internal("the compression workers stopped".into()))?;
            pos = end;
        }
        if pos < s.len {
            direct(next(&mut seq)?, unused(pos, s.len - pos))?;
        }
    }
    Ok(())
}

/// The reads of a stream's used ranges (sorted, disjoint), each given as the used ranges it covers: the
/// ranges cut at multiples of `chunk` (chunks are aligned to the stream, not the range, so identical files
/// dedupe across streams), and with `bridge` the ranges less than [`BRIDGE`] apart in one window read as
/// one.
fn reads(ranges: &[Range<u64>], chunk: u64, bridge: bool) -> Vec<Vec<Range<u64>>> {
    let mut out: Vec<Vec<Range<u64>>> = Vec::new();
    for r in ranges {
        let mut off = r.start;
        while off < r.end {
            let end = ((off / chunk + 1) * chunk).min(r.end);
            let joins = out.last().and_then(|read| read.last()).is_some_and(|last| {
                bridge && off / chunk == (last.end - 1) / chunk && off - last.end <= BRIDGE
            });
            match out.last_mut() {
                Some(read) if joins => read.push(off..end),
                _ => out.push(std::iter::once(off..end).collect()),
            }
            off = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::DEFAULT_CHUNK_SIZE;

    #[test]
    fn the_read_window_keeps_every_thread_busy_within_the_buffer_budget() {
        let chunk = DEFAULT_CHUNK_SIZE;
        for threads in 1..=MAX_COMPRESSORS {
            let window = read_window(threads, chunk);
            assert!(
                window > threads + READERS,
                "{threads} threads: window {window}"
            );
            let buffers = (window + threads) as u64 * u64::from(chunk);
            assert!(
                buffers <= BUFFER_BUDGET,
                "{threads} threads: {buffers} bytes"
            );
        }
        assert_eq!(read_window(2, chunk), 12);
        // Huge chunks bend the budget rather than starve a thread.
        assert_eq!(read_window(4, 64 << 20), 4 + READERS + 1);
    }

    #[test]
    fn ranges_close_together_in_a_window_are_read_as_one() {
        let (k, mib) = (1u64 << 10, 1u64 << 20);
        let ranges = [
            0..4 * k,
            (4 * k + BRIDGE)..(200 * k + BRIDGE), // BRIDGE after the first: joins it
            (300 * k + 2 * BRIDGE + 1)..(310 * k + 2 * BRIDGE + 1), // one byte too far
            (8 * mib - 4 * k)..(8 * mib + 4 * k), // crosses into the next window: cut there
            (8 * mib + 8 * k)..(8 * mib + 12 * k),
        ];
        let chunk = 8 * mib;
        assert_eq!(
            reads(&ranges, chunk, true),
            [
                vec![ranges[0].clone(), ranges[1].clone()],
                vec![ranges[2].clone()],
                std::iter::once((8 * mib - 4 * k)..8 * mib).collect(),
                vec![8 * mib..(8 * mib + 4 * k), ranges[4].clone()],
            ]
        );
        // Without slices (a format 1.0 image), every range is a read of its own.
        assert_eq!(reads(&ranges, chunk, false).len(), 6);
    }

    proptest::proptest! {
        #[test]
        fn reads_cover_the_used_ranges_exactly_within_windows(
            spans in proptest::collection::vec((0u64..300_000, 1u64..100_000), 0..40),
            chunk in 4096u64..1_000_000,
            bridge: bool,
        ) {
            let mut ranges: Vec<Range<u64>> = Vec::new();
            for (gap, len) in spans {
                let start = ranges.last().map_or(0, |r| r.end) + gap + 1;
                ranges.push(start..start + len);
            }
            let reads = reads(&ranges, chunk, bridge);
            let flat: Vec<Range<u64>> = reads.iter().flatten().cloned().collect();
            // The pieces are the ranges, cut only at window edges.
            let mut rejoined: Vec<Range<u64>> = Vec::new();
            for p in &flat {
                match rejoined.last_mut() {
                    Some(last) if last.end == p.start && p.start % chunk == 0 => last.end = p.end,
                    _ => rejoined.push(p.clone()),
                }
            }
            proptest::prop_assert_eq!(rejoined, ranges);
            for read in &reads {
                let (first, last) = (&read[0], &read[read.len() - 1]);
                proptest::prop_assert_eq!(first.start / chunk, (last.end - 1) / chunk);
                proptest::prop_assert!(bridge || read.len() == 1);
                for w in read.windows(2) {
                    proptest::prop_assert!(w[1].start - w[0].end <= BRIDGE);
                }
            }
        }
    }
}
