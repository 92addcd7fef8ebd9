//! Verify an image (every chunk and the root hash), optionally against a disk.

use std::path::Path;

use super::place::Placed;
use std::sync::mpsc::Sender;

use crate::engine::progress::{Meter, Progress};
use crate::engine::{device, verify};

/// What `verify` found.
#[derive(Debug, Clone)]
pub struct VerifyOutcome {
    pub root_hash: String,
    /// Empty when everything checks out.
    pub problems: Vec<String>,
    /// Source bytes recorded as unreadable at capture (not damage to the image: bytes it does not hold).
    pub unreadable_bytes: u64,
    /// How the device was compared where it differs from the image's layout (`against` only).
    pub notes: Vec<String>,
    /// Size of the image file.
    pub image_bytes: u64,
}

/// Check every chunk hash and the root hash of `image`; with `against`, compare a device with it.
/// `progress` gets "verify" events (and "compare" ones for `against`).
pub(super) fn verify(
    image: &Placed,
    against: Option<&Path>,
    progress: Option<Sender<Progress>>,
) -> anyhow::Result<VerifyOutcome> {
    let reader = image.open()?;
    let mut meter: Option<Meter> = None;
    let report = reader.verify(|p| {
        let m = meter.get_or_insert_with(|| Meter::new("verify", p.bytes_total, progress.clone()));
        m.advance(p.bytes_done - m.done(), 0);
    });
    if let Some(m) = &mut meter {
        m.finish();
    }
    let mut problems = report.problems();
    let mut notes = Vec::new();
    if let Some(dev) = against {
        let source = device::Source::open_unlocked(dev)?;
        let r = verify::verify_against(&reader, &source, None, progress)?;
        problems.extend(r.differences);
        notes = r.notes;
    }
    Ok(VerifyOutcome {
        root_hash: reader.root_hash().to_string(),
        problems,
        unreadable_bytes: report.unreadable_source_bytes,
        notes,
        image_bytes: reader.file_len(),
    })
}
