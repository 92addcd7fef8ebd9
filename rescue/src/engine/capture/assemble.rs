//! The image writer's side of a capture: steps arrive in any order from the workers and the planner. A
//! chunk is written to the image as soon as it arrives (frames may stand in any order in the file; the
//! index says where each range's bytes are), which returns its read permit and its buffers at once: no
//! finished chunk waits for a slower one that came before it. What remains of a step, a few words of index,
//! is recorded in step order, which returns its step permit. A step whose slices take blocks from the chunk
//! of a step still on its way (deduplication matched a block a moment after another compressor saw it) waits
//! for that chunk: it is being compressed, so it comes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

use super::worker::BufferPool;
use super::{Op, Step};
use crate::engine::progress::Meter;
use crate::engine::EngineError;
use crate::image::{ChunkId, CompressedChunk, ExtentKind, FinishedImage, ImageWriter, IndexExtras};

/// What the writer counts as it goes, for the report.
#[derive(Default)]
pub(super) struct Tally {
    pub zero_bytes: u64,
    pub unreadable: Vec<(String, Range<u64>)>,
}

/// The writer's companions: progress, the buffer pool, the permits it returns, and its tally.
pub(super) struct Output<'a> {
    pub meter: &'a Mutex<Meter>,
    pub pool: &'a BufferPool,
    pub read_permits: SyncSender<()>,
    pub step_permits: SyncSender<()>,
    pub tally: &'a mut Tally,
}

/// A step's operation once its chunk, if any, is written: what the index records.
type Indexed = Op<Stored>;

/// Where a data range's chunk is.
struct Stored {
    id: ChunkId,
    /// Bytes this chunk added to the image (0 when it was already there).
    stored: u64,
}

/// Writes the chunks as they come and records the steps in the index in their order, returning the
/// permits (the planner may have finished: a permit nobody takes is fine).
pub(super) fn write_steps<W: Write>(
    mut writer: ImageWriter<W>,
    steps: Receiver<Step>,
    mut out: Output,
    extras: IndexExtras,
) -> Result<FinishedImage<W>, EngineError> {
    let mut pending: BTreeMap<u64, Vec<Indexed>> = BTreeMap::new();
    // The chunk each step stored (what slices refer to by step).
    let mut chunk_of: HashMap<u64, ChunkId> = HashMap::new();
    let mut next = 0u64;
    let mut stream = None;
    loop {
        // Record everything that is next in order (and has the chunks its slices take bytes from); wait
        // for more otherwise.
        while pending.get(&next).is_some_and(|ops| {
            ops.iter()
                .all(|op| sliced_step(op).is_none_or(|s| chunk_of.contains_key(&s)))
        }) {
            for op in pending.remove(&next).unwrap_or_default() {
                record(&mut writer, &mut stream, op, &chunk_of, &mut out)?;
            }
            next += 1;
            let _ = out.step_permits.try_send(());
        }
        match steps.recv_timeout(Duration::from_secs(1)) {
            Ok(Step {
                seq,
                ops: Ok(ops),
                read,
            }) => {
                let ops = ops
                    .into_iter()
                    .map(|op| store(&mut writer, op, out.pool))
                    .collect::<Result<Vec<_>, _>>()?;
                for op in &ops {
                    if let Op::Data { chunk, .. } | Op::Chunk(chunk) = op {
                        chunk_of.insert(seq, chunk.id);
                    }
                }
                if read {
                    let _ = out.read_permits.try_send(());
                }
                pending.insert(seq, ops);
            }
            Ok(Step { ops: Err(e), .. }) => return Err(e),
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

/// The step whose chunk a slice takes its bytes from.
fn sliced_step(op: &Indexed) -> Option<u64> {
    match op {
        Op::Slice { step, .. } => Some(*step),
        _ => None,
    }
}

/// The stream being written: its id and what the report needs to name its ranges.
struct Current {
    id: crate::image::StreamId,
    label: String,
    disk_offset: u64,
}

/// Writes an operation's chunk, unless the image holds it already, and gives its buffer back.
fn store<W: Write>(
    writer: &mut ImageWriter<W>,
    op: Op,
    pool: &BufferPool,
) -> Result<Indexed, EngineError> {
    Ok(match op {
        Op::Begin(info, used) => Op::Begin(info, used),
        Op::Extent { offset, len, kind } => Op::Extent { offset, len, kind },
        Op::Data { offset, len, chunk } => Op::Data {
            offset,
            len,
            chunk: store_chunk(writer, chunk, pool)?,
        },
        Op::Chunk(chunk) => Op::Chunk(store_chunk(writer, chunk, pool)?),
        Op::Slice {
            offset,
            len,
            step,
            at,
        } => Op::Slice {
            offset,
            len,
            step,
            at,
        },
    })
}

/// Writes a chunk unless the image holds the same bytes already; gives its buffer back.
fn store_chunk<W: Write>(
    writer: &mut ImageWriter<W>,
    chunk: CompressedChunk,
    pool: &BufferPool,
) -> Result<Stored, EngineError> {
    let (id, stored) = match writer.has_chunk(&chunk.hash, chunk.uncompressed_len) {
        Some(id) => (id, 0),
        None => {
            let id = writer
                .write_compressed(&chunk)
                .map_err(EngineError::Image)?;
            (id, chunk.payload.len() as u64)
        }
    };
    pool.give(chunk.payload);
    Ok(Stored { id, stored })
}

/// Records one operation in the index, in step order.
fn record<W: Write>(
    writer: &mut ImageWriter<W>,
    stream: &mut Option<Current>,
    op: Indexed,
    chunk_of: &HashMap<u64, ChunkId>,
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
                ExtentKind::Unused | ExtentKind::Data(_) | ExtentKind::Slice { .. } => {
                    return Ok(())
                }
            }
            (len, 0)
        }
        Op::Data {
            offset,
            len,
            chunk: Stored { id, stored },
        } => {
            writer
                .push_data(s.id, offset, len, id)
                .map_err(EngineError::Image)?;
            (len, stored)
        }
        Op::Chunk(Stored { stored, .. }) => (0, stored),
        Op::Slice {
            offset,
            len,
            step,
            at,
        } => {
            let chunk = *chunk_of.get(&step).ok_or_else(|| {
                EngineError::Internal(format!("step {step}'s chunk was never stored"))
            })?;
            writer
                .push_slice(s.id, offset, len, chunk, at)
                .map_err(EngineError::Image)?;
            (len, 0)
        }
    };
    if let Ok(mut m) = out.meter.lock() {
        m.advance(len, stored);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::image::{
        CaptureMode, ChunkCompressor, CreationInfo, DiskInfo, ImageHeaderInfo, ImageReader,
        StreamInfo, StreamKind,
    };
    use std::sync::mpsc::sync_channel;

    /// Chunks are written as they come, whatever their order, and the index still lists every range in
    /// stream order; a chunk that arrives before an earlier step holding the same bytes is stored once.
    #[test]
    fn steps_arriving_out_of_order_are_indexed_in_order() {
        const N: u64 = 4096;
        let chunk = |byte: u8| {
            ChunkCompressor::new(3)
                .unwrap()
                .compress(&[byte; N as usize])
        };
        let data = |offset: u64, byte: u8| Op::Data {
            offset,
            len: N,
            chunk: chunk(byte).unwrap(),
        };
        let info = StreamInfo {
            kind: StreamKind::WholeDisk,
            disk_offset: 0,
            length: 4 * N,
            label: "disk".into(),
            capture: CaptureMode::Raw,
            capture_reason: "test".into(),
        };
        let step = |seq, ops, read| Step {
            seq,
            ops: Ok(ops),
            read,
        };
        let (tx, rx) = sync_channel(8);
        for s in [
            step(4, vec![data(3 * N, 1)], true),
            step(2, vec![data(N, 2)], true),
            step(3, vec![zero(2 * N)], true),
            step(1, vec![data(0, 1)], true),
            step(0, vec![Op::Begin(info, 4 * N)], false),
        ] {
            tx.send(s).unwrap();
        }
        drop(tx);

        let (read_permits, reads) = sync_channel(8);
        let (step_permits, steps) = sync_channel(8);
        let meter = Mutex::new(Meter::new("capture", 4 * N, None));
        let pool = BufferPool::new(N as usize, 4);
        let mut tally = Tally::default();
        let out = Output {
            meter: &meter,
            pool: &pool,
            read_permits,
            step_permits,
            tally: &mut tally,
        };
        let writer = ImageWriter::new(Vec::new(), ImageHeaderInfo::new(N as u32)).unwrap();
        let disk = DiskInfo {
            size: 4 * N,
            logical_sector_size: 512,
            physical_sector_size: 512,
            ..DiskInfo::default()
        };
        let extras = IndexExtras::new(CreationInfo::default(), disk);
        let image = write_steps(writer, rx, out, extras).unwrap();

        assert_eq!(reads.try_iter().count(), 4, "a read permit per worker step");
        assert_eq!(steps.try_iter().count(), 5, "a step permit per step");
        assert_eq!(tally.zero_bytes, N);
        let reader = ImageReader::open(std::io::Cursor::new(image.inner)).unwrap();
        let index = reader.index();
        assert_eq!(index.chunks.len(), 2, "the repeated chunk is stored once");
        let kinds: Vec<_> = index.streams[0]
            .extents
            .iter()
            .map(|e| (e.offset, e.kind))
            .collect();
        // The step at 3N arrived first, so its chunk is the file's first.
        assert_eq!(
            kinds,
            [
                (0, ExtentKind::Data(ChunkId(0))),
                (N, ExtentKind::Data(ChunkId(1))),
                (2 * N, ExtentKind::Zero),
                (3 * N, ExtentKind::Data(ChunkId(0))),
            ]
        );
    }

    fn zero(offset: u64) -> Op {
        Op::Extent {
            offset,
            len: 4096,
            kind: ExtentKind::Zero,
        }
    }
}
