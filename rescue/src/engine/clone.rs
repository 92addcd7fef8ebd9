//! Clone: disk to disk with no intermediate image, with the same filesystem awareness as capture. The
//! target's table areas are wiped first and the tables written last, as in a restore; every copied range is
//! hashed while it is copied and read back afterwards.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use super::capture::ranges_to_read;
use super::device::{Source, Target};
use super::progress::{Meter, Progress};
use super::EngineError;
use crate::image::{Hash, TableRole, DEFAULT_CHUNK_SIZE};
use crate::plan::{tables, CapturePlan, RestorePlan, StreamKind, TablePlan};
use crate::sys::AlignedBuf;

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
    let mut report = CloneReport::default();
    let mut notes = Vec::new();
    let layout = &capture.layout;
    let mut work = Vec::new();
    for p in &restore.placements {
        let s = &layout.streams[p.stream];
        if s.is_table() {
            continue;
        }
        let (ranges, _, _) = ranges_to_read(source, s, &mut notes);
        work.push((p.stream, p.target_offset, ranges));
    }
    let total: u64 = work
        .iter()
        .flat_map(|(_, _, r)| r)
        .map(|r| r.end - r.start)
        .sum();
    let mut meter = Meter::new("clone", total, progress.clone());
    for r in &restore.invalidate {
        target.zero(r.start, r.end - r.start)?;
    }
    let chunk = u64::from(DEFAULT_CHUNK_SIZE);
    // One page-aligned buffer for every read and write: direct I/O on both disks where they allow it.
    let mut buf = AlignedBuf::with_capacity(DEFAULT_CHUNK_SIZE as usize);
    // (target offset, len, hash) of everything copied, for the read-back check.
    let mut copied: Vec<(u64, u64, Hash)> = Vec::new();
    for (stream, target_offset, ranges) in &work {
        let s = &layout.streams[*stream];
        meter.set_current(
            format!("{:?} at byte {}", s.kind, s.disk_offset),
            ranges.iter().map(|r| r.end - r.start).sum(),
        );
        for r in ranges {
            let mut off = r.start;
            while off < r.end {
                if opts.cancel.load(Ordering::Relaxed) {
                    return Err(EngineError::Cancelled);
                }
                let len = (r.end - off).min(chunk - off % chunk) as usize;
                buf.set_len(len);
                let unreadable = source.read_tolerant_into(&mut buf, s.disk_offset + off)?;
                target.write_at(&buf, target_offset + off)?;
                for bad in unreadable {
                    report
                        .unreadable
                        .push((format!("{:?} at byte {}", s.kind, s.disk_offset), bad));
                }
                copied.push((target_offset + off, len as u64, Hash::of(&buf)));
                meter.advance(len as u64, 0);
                off += len as u64;
            }
        }
    }
    // From here on the tables may be on the target: if anything fails, they are taken away again, so that
    // the target is left with no valid-looking table, as the error says.
    let tables_then_check = || -> Result<(), EngineError> {
        write_tables(source, target, capture, restore, &mut report)?;
        target.sync()?;
        if let Err(e) = target.reread_partitions() {
            notes.push(format!(
                "the kernel could not re-read the partition table of {} ({e}); reboot before using it",
                target.path().display()
            ));
        }
        report.bytes_copied = total;
        if opts.verify {
            target.drop_cache();
            let mut meter = Meter::new("read-back", total, progress);
            for (off, len, hash) in &copied {
                buf.set_len(*len as usize);
                target.read_exact_at(&mut buf, *off)?;
                if Hash::of(&buf) != *hash {
                    return Err(EngineError::Failed(format!(
                        "read-back verification failed: {len} bytes at byte {off} of {} differ from what was written; \
                         the target may be failing",
                        target.path().display()
                    )));
                }
                meter.advance(*len, 0);
            }
            report.verified = true;
        }
        Ok(())
    };
    if let Err(e) = tables_then_check() {
        super::restore::take_tables_away(target, &restore.invalidate);
        return Err(e);
    }
    report.notes = notes;
    report.seconds = meter.elapsed().as_secs_f64();
    Ok(report)
}

fn write_tables(
    source: &Source,
    target: &Target,
    capture: &CapturePlan,
    restore: &RestorePlan,
    report: &mut CloneReport,
) -> Result<(), EngineError> {
    let layout = &capture.layout;
    let read = |role: TableRole| -> Result<Vec<u8>, EngineError> {
        let s = layout
            .streams
            .iter()
            .find(|s| s.kind == StreamKind::Table(role))
            .ok_or_else(|| {
                EngineError::Failed(format!("the source has no {role:?}; cannot move its GPT"))
            })?;
        let mut buf = vec![0u8; s.len as usize];
        source.read_exact_at(&mut buf, s.disk_offset)?;
        Ok(buf)
    };
    match &restore.tables {
        TablePlan::Untouched => {}
        TablePlan::AsCaptured => {
            let mut ts: Vec<_> = restore
                .placements
                .iter()
                .filter(|p| layout.streams[p.stream].is_table())
                .collect();
            // LBA 0 last: until it lands nothing points at the rest.
            ts.sort_by_key(|p| std::cmp::Reverse(p.target_offset));
            for p in ts {
                let s = &layout.streams[p.stream];
                let mut buf = vec![0u8; s.len as usize];
                source.read_exact_at(&mut buf, s.disk_offset)?;
                target.write_at(&buf, p.target_offset)?;
            }
        }
        TablePlan::RelocateGpt { target_size } => {
            let lba0 = read(TableRole::Mbr)?;
            let mut primary = read(TableRole::GptPrimaryHeader)?;
            primary.extend(read(TableRole::GptPrimaryEntries)?);
            let mut w =
                tables::relocate_gpt(&lba0, &primary, layout.logical_sector_size, *target_size)
                    .map_err(|e| EngineError::Failed(e.to_string()))?
                    .writes;
            w.sort_by_key(|(off, _)| std::cmp::Reverse(*off));
            for (off, bytes) in w {
                target.write_at(&bytes, off)?;
            }
            report.notes.push(format!(
                "the GPT was moved to the end of the {target_size}-byte target"
            ));
        }
    }
    Ok(())
}
