//! Verify a device against an image: every captured byte of every stream is read back from the device and
//! compared (data chunk by chunk, see [`super::pieces::compare`]; zero extents byte by byte). Unused and
//! unreadable extents are skipped: the image holds nothing to compare them with.

use std::sync::mpsc::Sender;

use super::device::Source;
use super::pieces;
use super::progress::{Meter, Progress};
use super::{restore, EngineError};
use crate::image::{ExtentKind, ReadAt, SharedReader};
use crate::plan::{self, TablePlan};
use crate::sys::AlignedBuf;

#[derive(Debug, Clone, Default)]
pub struct AgainstReport {
    pub bytes_compared: u64,
    /// Human-readable differences: stream, device offset, length.
    pub differences: Vec<String>,
    /// What was compared differently from the image's own layout, and what was not compared, and why.
    pub notes: Vec<String>,
}

/// Compare `device` with the captured ranges of `image` (at each stream's disk offset, or at `base` + the
/// stream offset for a single-partition comparison when `base` is given). A whole-disk image and a disk
/// of another size are compared the way a restore onto that disk places them: the GPT rebuilt for its
/// size, free space that does not fit left out (each said in the notes).
pub fn verify_against<F: ReadAt>(
    image: &SharedReader<F>,
    device: &Source,
    base: Option<u64>,
    progress: Option<Sender<Progress>>,
) -> Result<AgainstReport, EngineError> {
    let index = image.index();
    let layout = super::layout_of(index);
    let mut report = AgainstReport::default();
    let resized = base.is_none()
        && layout.covers_disk()
        && device.size() != layout.size_bytes
        && device.size() >= layout.min_target_size();
    let mut tables = None;
    let placements: Vec<(usize, u64)> = if resized {
        let shown = device.path().display().to_string();
        let plan = plan::place_disk(&layout, &shown, device.size(), layout.logical_sector_size);
        for (stream, why) in &plan.skipped {
            report.notes.push(format!(
                "not compared: {} ({why})",
                index.streams[*stream].info.label
            ));
        }
        // Tables placed as captured are compared with the other streams; a moved GPT is compared with
        // what the restore writes (its table streams are not placed).
        if plan.tables != TablePlan::AsCaptured {
            report.notes.push(format!(
                "{shown} has {} bytes, the source had {}: its partition table was compared with the one a \
                 restore onto it writes",
                device.size(),
                layout.size_bytes
            ));
            tables = Some(super::tables::prepare(&layout, &plan, |s| {
                restore::stream_bytes(image, s)
            })?);
        }
        plan.placements
            .iter()
            .map(|p| (p.stream, p.target_offset))
            .collect()
    } else {
        (0..index.streams.len())
            .map(|i| (i, base.unwrap_or(index.streams[i].info.disk_offset)))
            .collect()
    };
    let compared = |e: &ExtentKind| !matches!(e, ExtentKind::Unused | ExtentKind::Unreadable);
    let total: u64 = placements
        .iter()
        .flat_map(|&(i, _)| &index.streams[i].extents)
        .filter(|e| compared(&e.kind))
        .map(|e| e.len)
        .sum::<u64>()
        + tables
            .iter()
            .flat_map(|t| t.writes())
            .map(|(_, b)| b.len() as u64)
            .sum::<u64>();
    let mut meter = Meter::new("compare", total, progress);
    let mut data = Vec::new();
    for &(si, start) in &placements {
        let s = &index.streams[si];
        meter.set_current(s.info.label.clone(), s.used_bytes);
        for e in &s.extents {
            let at = start + e.offset;
            if !compared(&e.kind) {
                continue;
            }
            if at + e.len > device.size() {
                report.differences.push(format!(
                    "{}: byte {at} is beyond the end of {}",
                    s.info.label,
                    device.path().display()
                ));
                continue;
            }
            if e.kind != ExtentKind::Zero {
                data.push((si, start, e));
                continue;
            }
            report.bytes_compared += e.len;
            meter.advance(e.len, 0);
            if !is_zero_on(device, at, e.len)? {
                report
                    .differences
                    .push(differ(&s.info.label, e.len, at, device));
            }
        }
    }
    let read: &pieces::ReadDevice =
        &|buf, at| device.read_exact_at(buf, at).map_err(EngineError::from);
    let (mut buf, mut scratch) = (AlignedBuf::with_capacity(0), AlignedBuf::with_capacity(0));
    for w in pieces::group(data) {
        for p in pieces::compare(image, &w, read, &mut buf, &mut scratch)? {
            let label = &index.streams[p.stream].info.label;
            report
                .differences
                .push(differ(label, p.len, p.device, device));
        }
        report.bytes_compared += w.bytes();
        meter.advance(w.bytes(), 0);
    }
    for (at, want) in tables.iter().flat_map(|t| t.writes()) {
        let mut have = vec![0u8; want.len()];
        device.read_exact_at(&mut have, at)?;
        if have != want {
            report.differences.push(differ(
                "partition table (as a restore onto this disk writes it)",
                want.len() as u64,
                at,
                device,
            ));
        }
        report.bytes_compared += want.len() as u64;
        meter.advance(want.len() as u64, 0);
    }
    meter.finish();
    Ok(report)
}

/// Whether `len` bytes of `device` at `at` are all zero.
fn is_zero_on(device: &Source, at: u64, len: u64) -> Result<bool, EngineError> {
    let mut buf = vec![0u8; len.min(1 << 22) as usize];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(buf.len() as u64) as usize;
        device.read_exact_at(&mut buf[..n], at + pos)?;
        if !super::is_zero(&buf[..n]) {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

fn differ(label: &str, len: u64, at: u64, device: &Source) -> String {
    format!(
        "{label}: {len} bytes at byte {at} of {} differ from the image",
        device.path().display()
    )
}
