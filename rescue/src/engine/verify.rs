//! Verify a device against an image: every captured byte of every stream is read back from the device and
//! compared (data chunk by chunk, see [`super::pieces::compare`]; zero extents byte by byte). Unused and
//! unreadable extents are skipped: the image holds nothing to compare them with.

use std::sync::mpsc::Sender;

use super::device::Source;
use super::pieces;
use super::progress::{Meter, Progress};
use super::EngineError;
use crate::image::{ExtentKind, ReadAt, SharedReader};
use crate::sys::AlignedBuf;

#[derive(Debug, Clone, Default)]
pub struct AgainstReport {
    pub bytes_compared: u64,
    /// Human-readable differences: stream, device offset, length.
    pub differences: Vec<String>,
}

/// Compare `device` with the captured ranges of `image` (at each stream's disk offset, or at `base` + the
/// stream offset for a single-partition comparison when `base` is given).
pub fn verify_against<F: ReadAt>(
    image: &SharedReader<F>,
    device: &Source,
    base: Option<u64>,
    progress: Option<Sender<Progress>>,
) -> Result<AgainstReport, EngineError> {
    let index = image.index();
    let compared = |e: &ExtentKind| !matches!(e, ExtentKind::Unused | ExtentKind::Unreadable);
    let total: u64 = index
        .streams
        .iter()
        .flat_map(|s| &s.extents)
        .filter(|e| compared(&e.kind))
        .map(|e| e.len)
        .sum();
    let mut meter = Meter::new("compare", total, progress);
    let mut report = AgainstReport::default();
    let mut data = Vec::new();
    for (si, s) in index.streams.iter().enumerate() {
        meter.set_current(s.info.label.clone(), s.used_bytes);
        let start = base.unwrap_or(s.info.disk_offset);
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
            let mut buf = vec![0u8; e.len.min(1 << 22) as usize];
            let mut pos = 0;
            let mut zero = true;
            while pos < e.len && zero {
                let n = (e.len - pos).min(buf.len() as u64) as usize;
                device.read_exact_at(&mut buf[..n], at + pos)?;
                zero = buf[..n].iter().all(|&b| b == 0);
                pos += n as u64;
            }
            report.bytes_compared += e.len;
            meter.advance(e.len, 0);
            if !zero {
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
    meter.finish();
    Ok(report)
}

fn differ(label: &str, len: u64, at: u64, device: &Source) -> String {
    format!(
        "{label}: {len} bytes at byte {at} of {} differ from the image",
        device.path().display()
    )
}
