//! Restore: image → target, following a [`RestorePlan`]. The target's table areas are wiped first and the
//! partition tables are written last, so an interrupted restore leaves a disk with no valid-looking table
//! rather than a half-restored one that seems fine. Worker threads read chunks (each one's blake3 checked
//! before a byte of it is written) and write every piece of it at its offset (a deduplicated block's chunk
//! is read once for all the places it goes); writes of different pieces never overlap, so no ordering is
//! needed. Afterwards every written range is read back and checked.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use super::device::Target;
use super::pieces::{self, ChunkWork};
use super::progress::{Meter, Progress};
use super::readback::{read_back, Ledger};
use super::tables;
use super::workers::{self, parallel};
use super::EngineError;
use crate::image::{ExtentKind, ReadAt, SharedReader};
use crate::plan::{Layout, RestorePlan, TablePlan};

/// What to do with bytes the filesystem did not use (not captured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnusedPolicy {
    /// Leave whatever the target holds there (fastest).
    #[default]
    Leave,
    /// Write zeros.
    Zero,
    /// Discard (TRIM) them: fast on SSDs, and they read as zeros on most.
    Discard,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub threads: usize,
    /// Check every chunk to be written against its hash before the first write, so a damaged image is
    /// refused with the target untouched (the image is read twice).
    pub precheck: bool,
    pub verify: bool,
    pub unused: UnusedPolicy,
    pub cancel: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// Every byte written to the target but the tables: data, and the zeros of `zero_bytes`.
    pub bytes_written: u64,
    /// Of `bytes_written`: runs of zeros, unreadable ranges and (with [`UnusedPolicy::Zero`]) free space.
    pub zero_bytes: u64,
    /// Free space discarded with [`UnusedPolicy::Discard`] (not written).
    pub discarded_bytes: u64,
    /// Ranges (target offsets) the source could not read at capture time: written as zeros.
    pub unreadable: Vec<(String, Range<u64>)>,
    pub verified: bool,
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// The whole stream's bytes (tables are small: a few sectors).
pub(super) fn stream_bytes<F: ReadAt>(
    image: &SharedReader<F>,
    stream: usize,
) -> Result<Vec<u8>, EngineError> {
    let s = &image.index().streams[stream];
    let mut out = vec![0u8; s.info.length as usize];
    for e in &s.extents {
        if let Some((id, from)) = e.chunk_piece() {
            let data = image.read_chunk(id)?;
            let (at, from, len) = (e.offset as usize, from as usize, e.len as usize);
            out[at..at + len].copy_from_slice(&data[from..from + len]);
        }
    }
    Ok(out)
}

/// Restore per `plan`. On failure after the first write, the error says the target is now invalid.
pub fn restore<F: ReadAt>(
    image: &SharedReader<F>,
    layout: &Layout,
    plan: &RestorePlan,
    target: &Target,
    opts: &RestoreOptions,
    progress: Option<Sender<Progress>>,
) -> Result<RestoreReport, EngineError> {
    let tables = tables::prepare(layout, plan, |stream| stream_bytes(image, stream))
        .map_err(|e| EngineError::Untouched(crate::units::chain(&e)))?;
    let result = run(image, layout, plan, target, opts, progress, tables);
    result.map_err(|e| incomplete(e, plan, target))
}

/// A failure once the target may have been written to, saying what the target holds now.
pub(super) fn incomplete(e: EngineError, plan: &RestorePlan, target: &Target) -> EngineError {
    match e {
        e @ (EngineError::Refused(_) | EngineError::Untouched(_)) => e,
        other if plan.tables != TablePlan::Untouched => EngineError::Failed(format!(
            "{}. The restore did not complete: {} now has no valid partition table and must not be used \
             until a restore completes",
            crate::units::chain(&other),
            target.path().display()
        )),
        other => EngineError::Failed(format!(
            "{}. The restore did not complete: the target partition of {} holds partial data",
            crate::units::chain(&other),
            target.path().display()
        )),
    }
}

fn run<F: ReadAt>(
    image: &SharedReader<F>,
    layout: &Layout,
    plan: &RestorePlan,
    target: &Target,
    opts: &RestoreOptions,
    progress: Option<Sender<Progress>>,
    tables: tables::Tables,
) -> Result<RestoreReport, EngineError> {
    let index = image.index();
    let started = std::time::Instant::now();
    let mut report = RestoreReport::default();
    // Everything is decided before the first write: the chunks and the pieces of them to write, and the
    // runs of zeros (read back) and free space to zero or discard (not read back).
    let mut data = Vec::new();
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    let mut unused: Vec<(u64, u64)> = Vec::new();
    for p in &plan.placements {
        if layout.streams[p.stream].is_table() {
            continue;
        }
        let s = &index.streams[p.stream];
        for e in &s.extents {
            let at = p.target_offset + e.offset;
            match e.kind {
                ExtentKind::Data(_) | ExtentKind::Slice { .. } => {
                    data.push((p.stream, p.target_offset, e));
                }
                ExtentKind::Zero => zeros.push((at, e.len)),
                ExtentKind::Unreadable => {
                    zeros.push((at, e.len));
                    report
                        .unreadable
                        .push((s.info.label.clone(), at..at + e.len));
                }
                ExtentKind::Unused => unused.push((at, e.len)),
            }
        }
    }
    let writes = pieces::group(data);
    if opts.precheck {
        precheck(image, &writes, &opts.cancel, progress.clone())?;
    }

    for r in &plan.invalidate {
        target.zero(r.start, r.end - r.start)?;
    }
    let ledger = opts.verify.then(Ledger::new);
    for &(at, len) in &zeros {
        target.zero(at, len)?;
        report.zero_bytes += len;
        if let Some(l) = &ledger {
            l.note_zeros(at, len);
        }
    }
    for &(at, len) in &unused {
        match opts.unused {
            UnusedPolicy::Leave => {}
            UnusedPolicy::Zero => {
                target.zero(at, len)?;
                report.zero_bytes += len;
            }
            UnusedPolicy::Discard => {
                target.discard(at, len);
                report.discarded_bytes += len;
            }
        }
    }
    let total: u64 = writes.iter().map(ChunkWork::bytes).sum();
    let meter = Mutex::new(Meter::new("restore", total, progress.clone()));
    // Progress names the stream being written: each chunk's first piece's, from the chunk that starts it.
    let mut per_stream: HashMap<usize, u64> = HashMap::new();
    for p in writes.iter().flat_map(|w| &w.pieces) {
        *per_stream.entry(p.stream).or_default() += p.len;
    }
    let mut seen = HashSet::new();
    let items: Vec<(&ChunkWork, Option<usize>)> = writes
        .iter()
        .map(|w| {
            (
                w,
                w.pieces
                    .first()
                    .map(|p| p.stream)
                    .filter(|s| seen.insert(*s)),
            )
        })
        .collect();
    let workers = workers::count(opts.threads);
    parallel(
        &items,
        workers,
        &opts.cancel,
        |buf, scratch, &(w, starts)| {
            if let (Some(s), Ok(mut m)) = (starts, meter.lock()) {
                m.set_current(index.streams[s].info.label.clone(), per_stream[&s]);
            }
            image.read_chunk_into(w.id, buf, scratch)?;
            for p in &w.pieces {
                target.write_at(&buf[p.at as usize..(p.at + p.len) as usize], p.device)?;
            }
            if let Some(l) = &ledger {
                l.note(w.id, &w.pieces, buf);
            }
            if let Ok(mut m) = meter.lock() {
                m.advance(w.bytes(), 0);
            }
            Ok(())
        },
    )?;
    report.bytes_written = total + report.zero_bytes;

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

/// Once every data byte is written: flush, the tables (last), flush, the kernel told, and the read-back.
/// From here on the tables may be on the target: if anything fails, they are taken away again, so that
/// the target is left with no valid-looking table, as the error says.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    target: &Target,
    plan: &RestorePlan,
    tables: &tables::Tables,
    ledger: Option<Ledger>,
    workers: usize,
    opts: &RestoreOptions,
    progress: Option<Sender<Progress>>,
    report: &mut RestoreReport,
) -> Result<(), EngineError> {
    let tables_then_check = || -> Result<(), EngineError> {
        // Every data byte on stable storage before the first table byte: a power cut cannot leave tables
        // describing data still in the disk's cache.
        target.sync()?;
        tables.write(target, ledger.as_ref())?;
        target.sync()?;
        report.notes.extend(tables.notes.iter().cloned());
        if plan.tables != TablePlan::Untouched {
            if let Err(e) = target.reread_partitions() {
                report.notes.push(format!(
                    "the kernel could not re-read the partition table of {} ({e}); reboot before using the new partitions",
                    target.path().display()
                ));
            }
        }
        if let Some(ledger) = ledger {
            read_back(ledger, target, workers, &opts.cancel, progress)?;
            report.verified = true;
        }
        Ok(())
    };
    if let Err(e) = tables_then_check() {
        take_tables_away(target, &plan.invalidate);
        return Err(e);
    }
    Ok(())
}

/// Every chunk `writes` will take bytes from, checked against its hash (and decompressed) before anything is
/// written, so that a damaged image is refused while the target is still untouched. Progress phase `check`.
fn precheck<F: ReadAt>(
    image: &SharedReader<F>,
    writes: &[ChunkWork],
    cancel: &AtomicBool,
    progress: Option<Sender<Progress>>,
) -> Result<(), EngineError> {
    let chunks = &image.index().chunks;
    let len = |id: crate::image::ChunkId| {
        chunks
            .get(id.0 as usize)
            .map_or(0, |c| u64::from(c.uncompressed_len))
    };
    // Ids in file order, so the image is read front to back.
    let mut ids: Vec<_> = writes.iter().map(|w| w.id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut meter = Meter::new("check", ids.iter().map(|&id| len(id)).sum(), progress);
    let mut damaged = Vec::new();
    let complete = image.check_chunks(&ids, cancel, |id, checked| {
        if let Err(e) = checked {
            damaged.push(e);
        }
        meter.advance(len(id), 0);
    });
    meter.finish();
    if !complete {
        return Err(EngineError::Untouched(EngineError::Cancelled.to_string()));
    }
    if damaged.is_empty() {
        return Ok(());
    }
    damaged.sort_by_key(|e| e.chunk());
    let n = damaged.len();
    let shown: Vec<String> = damaged
        .iter()
        .take(3)
        .map(|e| crate::units::chain(e))
        .collect();
    Err(EngineError::Untouched(format!(
        "the image is damaged: {n} of the {} chunks this restore needs fail their check ({}{}). Restore from \
         another copy of the image; `rescue verify IMAGE` lists every damaged chunk",
        ids.len(),
        shown.join("; "),
        if n > shown.len() { "; …" } else { "" }
    )))
}

/// After a failure once the tables may be written: zeros over the target's table areas again (best effort:
/// the failure is what gets reported).
pub(super) fn take_tables_away(target: &Target, invalidate: &[Range<u64>]) {
    for r in invalidate {
        let _ = target.zero(r.start, r.end - r.start);
    }
    let _ = target.sync();
}
