//! The image writer's side of a capture: steps arrive in any order from the workers and the planner, and
//! are written in their order; each written step returns a permit to the planner and its buffers to the pool.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

use super::worker::BufferPool;
use super::{Op, Steps};
use crate::engine::progress::Meter;
use crate::engine::EngineError;
use crate::image::{ExtentKind, FinishedImage, ImageWriter, IndexExtras};

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
    pub permits: SyncSender<()>,
    pub tally: &'a mut Tally,
}

/// Writes the steps in their order (they arrive in any order) and returns a permit for each.
pub(super) fn write_steps<W: Write>(
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
