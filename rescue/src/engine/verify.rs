//! Verify a device against an image: every captured byte of every stream is read back from the device and
//! compared (data by blake3, zero extents byte by byte). Unused and unreadable extents are skipped: the
//! image holds nothing to compare them with.

use std::sync::mpsc::Sender;

use super::device::Source;
use super::progress::{Meter, Progress};
use super::EngineError;
use crate::image::{ExtentKind, Hash, Index};

#[derive(Debug, Clone, Default)]
pub struct AgainstReport {
    pub bytes_compared: u64,
    /// Human-readable differences: stream, device offset, length.
    pub differences: Vec<String>,
}

/// Compare `device` with the captured ranges of `index` (at each stream's disk offset, or at `base` + the
/// stream offset for a single-partition comparison when `base` is given).
pub fn verify_against(
    index: &Index,
    device: &Source,
    base: Option<u64>,
    progress: Option<Sender<Progress>>,
) -> Result<AgainstReport, EngineError> {
    let total: u64 = index
        .streams
        .iter()
        .flat_map(|s| &s.extents)
        .filter(|e| matches!(e.kind, ExtentKind::Data(_) | ExtentKind::Zero))
        .map(|e| e.len)
        .sum();
    let mut meter = Meter::new("verify", total, progress);
    let mut report = AgainstReport::default();
    for s in &index.streams {
        meter.set_current(s.info.label.clone(), s.used_bytes);
        let start = base.unwrap_or(s.info.disk_offset);
        for e in &s.extents {
            let at = start + e.offset;
            if at + e.len > device.size()
                && matches!(e.kind, ExtentKind::Data(_) | ExtentKind::Zero)
            {
                report.differences.push(format!(
                    "{}: byte {at} is beyond the end of {}",
                    s.info.label,
                    device.path().display()
                ));
                continue;
            }
            let same = match e.kind {
                ExtentKind::Data(id) => {
                    let mut buf = vec![0u8; e.len as usize];
                    device.read_exact_at(&mut buf, at)?;
                    index.chunks.get(id.0 as usize).map(|c| c.hash) == Some(Hash::of(&buf))
                }
                ExtentKind::Zero => {
                    let mut buf = vec![0u8; e.len.min(1 << 22) as usize];
                    let mut pos = 0;
                    let mut zero = true;
                    while pos < e.len && zero {
                        let n = (e.len - pos).min(buf.len() as u64) as usize;
                        device.read_exact_at(&mut buf[..n], at + pos)?;
                        zero = buf[..n].iter().all(|&b| b == 0);
                        pos += n as u64;
                    }
                    zero
                }
                ExtentKind::Unused | ExtentKind::Unreadable => continue,
            };
            report.bytes_compared += e.len;
            meter.advance(e.len, 0);
            if !same {
                report.differences.push(format!(
                    "{}: {} bytes at byte {at} of {} differ from the image",
                    s.info.label,
                    e.len,
                    device.path().display()
                ));
            }
        }
    }
    meter.finish();
    Ok(report)
}
