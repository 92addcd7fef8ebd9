//! Clone: disk to disk with no intermediate image, with the same filesystem awareness as capture. The
//! target's table areas are wiped first and the tables written last, as in a restore; a few workers copy
//! at once, and everything written (copied bytes, runs of zeros, the tables) is read back afterwards
//! ([`super::readback`]).

use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use super::capture::{ranges_to_read, stream_label};
use super::device::{Source, Target};
use super::progress::{Meter, Progress};
use super::readback::{read_back, Held, Ledger};
use super::tables;
use super::workers::{self, parallel};
use super::{is_zero, EngineError};
use crate::image::DEFAULT_CHUNK_SIZE;
use crate::plan::{CapturePlan, RestorePlan};

/// Bytes `from..from + len` of the source, to go to `to` on the target.
struct CopyRange {
    stream: usize,
    from: u64,
    to: u64,
    len: u64,
    /// The first copy of its stream: the bytes the stream copies (for progress).
    starts: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct CloneOptions {
    pub verify: bool,
    pub cancel: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Default)]
pub struct CloneReport {
    pub bytes_copied: u64,
    pub unreadable: Vec<(String, Range<u64>)>,
    pub verified: bool,
    pub notes: Vec<String>,
    pub seconds: f64,
}

pub fn clone_disk(
    source: &Source,
    target: &Target,
    capture: &CapturePlan,
    restore: &RestorePlan,
    opts: &CloneOptions,
    progress: Option<Sender<Progress>>,
) -> Result<CloneReport, EngineError> {
    let started = std::time::Instant::now();
    let mut report = CloneReport::default();
    let mut notes = Vec::new();
    let layout = &capture.layout;
    // The copy in pieces of at most a chunk, aligned to chunks of the stream (direct I/O on both disks
    // where they allow it), spread over a few workers so that both disks have requests waiting.
    let chunk = u64::from(DEFAULT_CHUNK_SIZE);
    let mut copies = Vec::new();
    for p in &restore.placements {
        let s = &layout.streams[p.stream];
        if s.is_table() {
            continue;
        }
        let (ranges, _, _) = ranges_to_read(source, s, &mut notes);
        let mut starts = Some(ranges.iter().map(|r| r.end - r.start).sum());
        for r in ranges {
            let mut off = r.start;
            while off < r.end {
                let len = (r.end - off).min(chunk - off % chunk);
                copies.push(CopyRange {
                    stream: p.stream,
                    from: s.disk_offset + off,
                    to: p.target_offset + off,
                    len,
                    starts: starts.take(),
                });
                off += len;
            }
        }
    }
    let total: u64 = copies.iter().map(|c| c.len).sum();
    let meter = Mutex::new(Meter::new("clone", total, progress.clone()));
    let tables = tables::prepare(layout, restore, |stream| {
        let s = &layout.streams[stream];
        let mut buf = vec![0u8; s.len as usize];
        source.read_exact_at(&mut buf, s.disk_offset)?;
        Ok(buf)
    })
    .map_err(|e| EngineError::Untouched(crate::units::chain(&e)))?;
    for r in &restore.invalidate {
        target.zero(r.start, r.end - r.start)?;
    }
    let label = |stream: usize| stream_label(&layout.streams[stream]);
    let ledger = opts.verify.then(Ledger::new);
    let unreadable = Mutex::new(Vec::new());
    let workers = workers::count(1);
    parallel(&copies, workers, &opts.cancel, |buf, _, c| {
        buf.fit(c.len as usize);
        let bad = source.read_tolerant_into(buf, c.from)?;
        // A run of zeros costs the target no data writes (a device's zero-out, a file's hole).
        if is_zero(buf) {
            target.zero(c.to, c.len)?;
            if let Some(l) = &ledger {
                l.note_zeros(c.to, c.len);
            }
        } else {
            target.write_at(buf, c.to)?;
            if let Some(l) = &ledger {
                l.note_bytes(c.to, buf, Held::Copied);
            }
        }
        if !bad.is_empty() {
            let mut u = unreadable.lock().unwrap_or_else(|p| p.into_inner());
            u.extend(bad.into_iter().map(|r| (label(c.stream), r)));
        }
        if let Ok(mut m) = meter.lock() {
            if let Some(total) = c.starts {
                m.set_current(label(c.stream), total);
            }
            m.advance(c.len, 0);
        }
        Ok(())
    })?;
    report.unreadable = unreadable.into_inner().unwrap_or_else(|p| p.into_inner());
    report.unreadable.sort_by_key(|(_, r)| r.start);
    // From here on the tables may be on the target: if anything fails, they are taken away again, so that
    // the target is left with no valid-looking table, as the error says.
    let tables_then_check = || -> Result<(), EngineError> {
        // Every data byte on stable storage before the first table byte (see `restore`).
        target.sync()?;
        tables.write(target, ledger.as_ref())?;
        target.sync()?;
        notes.extend(tables.notes.iter().cloned());
        if let Err(e) = target.reread_partitions() {
            notes.push(format!(
                "the kernel could not re-read the partition table of {} ({e}); reboot before using it",
                target.path().display()
            ));
        }
        report.bytes_copied = total;
        if let Some(ledger) = ledger {
            read_back(ledger, target, workers, &opts.cancel, progress)?;
            report.verified = true;
        }
        Ok(())
    };
    if let Err(e) = tables_then_check() {
        super::restore::take_tables_away(target, &restore.invalidate);
        return Err(e);
    }
    report.notes = notes;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
