//! The workers: readers read the chunks of the source (unreadable sectors narrowed and recorded);
//! compressors find zeros in them and hash and compress the rest, in buffers from a pool that the image
//! writer hands back.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use super::arrange::{arrange, Part};
use super::dedup::Dedup;
use super::{Op, Step, Steps};
use crate::engine::device::Source;
use crate::engine::{is_zero, EngineError};
use crate::image::{ChunkCompressor, ExtentKind};
use crate::sys::AlignedBuf;

/// A read for a worker: `len` bytes at `offset` of the stream that starts at `disk_offset`.
pub(super) struct Task {
    pub seq: u64,
    pub disk_offset: u64,
    pub offset: u64,
    pub len: usize,
    /// The used ranges in it (stream offsets) when it is several read as one; empty when it is one.
    pub ranges: Vec<Range<u64>>,
}

impl Task {
    /// The used ranges of the read.
    fn used(&self) -> Vec<Range<u64>> {
        match self.ranges.is_empty() {
            true => std::iter::once(self.offset..self.offset + self.len as u64).collect(),
            false => self.ranges.clone(),
        }
    }
}

/// Chunk-sized, page-aligned buffers handed back by the workers and the writer, so that reading and
/// compressing allocate nothing per chunk (and the kernel zeroes no fresh pages).
pub(super) struct BufferPool {
    free: Mutex<Vec<AlignedBuf>>,
    size: usize,
    keep: usize,
}

impl BufferPool {
    pub fn new(size: usize, keep: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::new()),
            size,
            keep,
        }
    }

    /// A buffer of `len` bytes (at most the chunk size; contents are whatever the last user left).
    pub fn take(&self, len: usize) -> AlignedBuf {
        let reused = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .filter(|b| b.capacity() >= len);
        let mut buf = reused.unwrap_or_else(|| AlignedBuf::with_capacity(self.size.max(len)));
        buf.set_len(len);
        buf
    }

    pub fn give(&self, buf: AlignedBuf) {
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

/// A task's bytes as read, or why reading failed.
pub(super) struct ReadChunk {
    task: Task,
    got: Result<Read, EngineError>,
}

/// A read's bytes, and what they become.
enum Read {
    /// Every sector read; the reader decided what it is (see [`Clean`]).
    Clean(AlignedBuf, Clean),
    /// Some sectors could not be read (disk ranges, zero-filled in the buffer).
    Damaged(AlignedBuf, Vec<Range<u64>>),
}

/// What a clean read becomes, decided by the reader.
enum Clean {
    /// One range of zeros: a Zero extent, nothing stored.
    Zero,
    /// The buffer as one chunk: a Data extent.
    Whole,
    /// The buffer holds the step's chunk (maybe empty: every byte is elsewhere) and these extents place
    /// every range of the read.
    Arranged(Vec<Op>),
}

/// A reader: reads its tasks' chunks (direct I/O where the source allows it; unreadable sectors narrowed
/// and recorded) into pool buffers for the compressors, finds reads of zeros, and with `dedup` arranges
/// each clean read (block keys are cheap; comparing a candidate copy means reading the source again, which
/// is a reader's job). Readers mostly wait for the disk, so they run beside the compressors without taking
/// their cores, and the compressors find their next chunk read.
pub(super) fn reader(
    source: &Source,
    tasks: Arc<Mutex<Receiver<Task>>>,
    out: SyncSender<ReadChunk>,
    pool: &BufferPool,
    dedup: Option<&Dedup>,
) {
    let mut scratch = AlignedBuf::with_capacity(0);
    while let Some(task) = next(&tasks) {
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut buf = pool.take(task.len);
            let bad = source.read_tolerant_into(&mut buf, task.disk_offset + task.offset)?;
            if !bad.is_empty() {
                return Ok(Read::Damaged(buf, bad));
            }
            let clean = clean(dedup, &task, &mut buf, &mut scratch);
            Ok(Read::Clean(buf, clean))
        }))
        .unwrap_or_else(|_| Err(EngineError::Internal("a reader thread panicked".into())));
        if out.send(ReadChunk { task, got }).is_err() {
            return;
        }
    }
}

/// What a clean read becomes: zeros, the whole buffer, or (with `dedup`, [`arrange`]) its used ranges with
/// the gaps between them and the ranges of zeros moved out of the buffer first. Several ranges are only
/// read as one when the image may hold slices, that is with `dedup`.
fn clean(
    dedup: Option<&Dedup>,
    task: &Task,
    buf: &mut AlignedBuf,
    scratch: &mut AlignedBuf,
) -> Clean {
    if task.ranges.is_empty() && is_zero(buf) {
        return Clean::Zero;
    }
    let Some(dedup) = dedup else {
        return Clean::Whole;
    };
    let mut parts = Vec::new();
    let mut n = 0;
    for r in task.used() {
        let (from, len) = ((r.start - task.offset) as usize, (r.end - r.start) as usize);
        let zero = !task.ranges.is_empty() && is_zero(&buf[from..from + len]);
        if !zero {
            buf.copy_within(from..from + len, n);
            n += len;
        }
        parts.push(Part {
            offset: r.start,
            device: task.disk_offset + r.start,
            len,
            zero,
        });
    }
    buf.set_len(n);
    match arrange(dedup, task.seq, &parts, buf, scratch) {
        Some(ops) => Clean::Arranged(ops),
        None => Clean::Whole,
    }
}

/// A compressor, one per thread: finds zeros in a read chunk, and hashes and compresses the rest.
pub(super) fn compressor(
    reads: Arc<Mutex<Receiver<ReadChunk>>>,
    steps: SyncSender<Step>,
    level: i32,
    pool: &BufferPool,
    cancel: &AtomicBool,
    lookup: Option<&dyn crate::image::ChunkLookup>,
) {
    let mut compressor = ChunkCompressor::new(level).map_err(EngineError::Image);
    while let Some(read) = next(&reads) {
        let seq = read.task.seq;
        // Once cancelled, the chunks read ahead are dropped rather than compressed, and the one being
        // compressed is abandoned (see `compress_buf_until`): the capture stops within a second even at
        // level 19.
        if cancel.load(Ordering::Relaxed) {
            if let Ok(Read::Clean(buf, _) | Read::Damaged(buf, _)) = read.got {
                pool.give(buf);
            }
            if steps
                .send(Step {
                    seq,
                    ops: Err(EngineError::Cancelled),
                    read: true,
                })
                .is_err()
            {
                return;
            }
            continue;
        }
        // A panic while compressing must end this step with an error, not take the process down.
        let ops = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let c = compressor
                .as_mut()
                .map_err(|e| EngineError::Internal(crate::units::chain(e)))?;
            match read.got? {
                Read::Clean(buf, clean) => store(read.task, buf, clean, c, pool, cancel, lookup),
                Read::Damaged(buf, bad) => store_damaged(read.task, buf, &bad, c, pool),
            }
        }))
        .unwrap_or_else(|_| {
            Err(EngineError::Internal(
                "a compression worker panicked".into(),
            ))
        });
        let step = Step {
            seq,
            ops,
            read: true,
        };
        if steps.send(step).is_err() {
            return;
        }
    }
}

/// The next item of a channel shared by several threads; `None` once it is closed.
fn next<T>(rx: &Mutex<Receiver<T>>) -> Option<T> {
    rx.lock().ok()?.recv().ok()
}

/// Turn a clean read into image steps, compressing from the buffer itself without a copy.
fn store(
    task: Task,
    buf: AlignedBuf,
    clean: Clean,
    compressor: &mut ChunkCompressor,
    pool: &BufferPool,
    cancel: &AtomicBool,
    lookup: Option<&dyn crate::image::ChunkLookup>,
) -> Steps {
    let len = buf.len();
    let chunk = match clean {
        Clean::Zero => {
            pool.give(buf);
            return Ok(vec![zero_extent(task.offset, task.len as u64)]);
        }
        Clean::Arranged(extents) if len == 0 => {
            pool.give(buf);
            return Ok(extents);
        }
        _ => {
            // A repository that has this chunk already: hashed, not compressed again.
            let known = lookup.and_then(|l| {
                let hash = crate::image::Hash::of(&buf);
                let n = u32::try_from(len).ok()?;
                l.stored(&hash, n)
                    .map(|(compression, stored)| crate::image::CompressedChunk {
                        hash,
                        uncompressed_len: n,
                        compression,
                        payload: crate::sys::AlignedBuf::with_capacity(0),
                        stored_elsewhere: Some(stored),
                    })
            });
            match known {
                Some(chunk) => {
                    pool.give(buf);
                    chunk
                }
                None => {
                    let (chunk, spare) = compressor
                        .compress_buf_until(buf, pool.take(len), cancel)
                        .map_err(EngineError::Image)?
                        .ok_or(EngineError::Cancelled)?;
                    pool.give(spare);
                    chunk
                }
            }
        }
    };
    Ok(match clean {
        Clean::Arranged(extents) => std::iter::once(Op::Chunk(chunk)).chain(extents).collect(),
        _ => vec![Op::Data {
            offset: task.offset,
            len: task.len as u64,
            chunk,
        }],
    })
}

/// Turn a read with unreadable sectors into image steps: unreadable pieces, zero pieces, and a chunk for
/// each readable piece of each used range.
fn store_damaged(
    task: Task,
    buf: AlignedBuf,
    bad: &[Range<u64>],
    compressor: &mut ChunkCompressor,
    pool: &BufferPool,
) -> Steps {
    let mut ops = Vec::new();
    let mut end = task.offset;
    for r in task.used() {
        if r.start > end {
            ops.push(Op::Extent {
                offset: end,
                len: r.start - end,
                kind: ExtentKind::Unused,
            });
        }
        end = r.end;
        for piece in split_readable(r.start, r.end - r.start, bad, task.disk_offset) {
            ops.push(match piece {
                Piece::Bad(range) => Op::Extent {
                    offset: range.start,
                    len: range.end - range.start,
                    kind: ExtentKind::Unreadable,
                },
                Piece::Good(range) => {
                    let data = &buf
                        [(range.start - task.offset) as usize..(range.end - task.offset) as usize];
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

/// Split `[off, off+len)` (stream offsets) around the unreadable disk ranges of one read (sorted; those
/// outside it, in the free space between a read's ranges, do not matter).
fn split_readable(off: u64, len: u64, bad: &[Range<u64>], disk_offset: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut pos = off;
    for b in bad {
        let bs = (b.start - disk_offset).max(pos);
        let be = (b.end - disk_offset).min(off + len);
        if bs >= be {
            continue;
        }
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
