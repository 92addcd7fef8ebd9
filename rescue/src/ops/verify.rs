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

/// A virtual machine's disk file ([`crate::vdisk`]): the format's own checks (its checksums and tables,
/// as it opens) and every byte of its disk read through its tables; with `against`, a device compared
/// with it byte for byte. The root hash reported is the BLAKE3 of the whole disk's content (the format
/// keeps no hash of its own).
pub(super) fn verify_virtual(
    image: &Path,
    against: Option<&Path>,
    progress: Option<Sender<Progress>>,
) -> anyhow::Result<VerifyOutcome> {
    use anyhow::Context;
    let file =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let image_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let v = crate::vdisk::open(std::sync::Arc::new(file), image)?.ok_or_else(|| {
        anyhow::anyhow!("{} is no virtual disk this program reads", image.display())
    })?;
    let size = v.size()?;
    let other = against.map(device::Source::open_unlocked).transpose()?;
    let mut problems = Vec::new();
    if let Some(o) = &other {
        if o.size() < size {
            problems.push(format!(
                "{} is {} bytes, smaller than the virtual disk ({size} bytes)",
                o.path().display(),
                o.size()
            ));
        }
    }
    let mut meter = Meter::new("verify", size, progress);
    let mut hasher = blake3::Hasher::new();
    let (mut buf, mut theirs) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        if let Err(e) = v.disk.read_exact_at(&mut buf[..n], at) {
            problems.push(format!("reading its disk at byte {at}: {e}"));
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(o) = other.as_ref().filter(|o| at + n as u64 <= o.size()) {
            o.read_exact_at(&mut theirs[..n], at)?;
            if let Some(i) = buf[..n].iter().zip(&theirs[..n]).position(|(a, b)| a != b) {
                problems.push(format!(
                    "{} differs from the virtual disk at byte {}",
                    o.path().display(),
                    at + i as u64
                ));
                break;
            }
        }
        meter.advance(n as u64, 0);
        at += n as u64;
    }
    meter.finish();
    let mut notes = v.notes;
    if let Some(o) = other.as_ref().filter(|o| o.size() > size) {
        notes.push(format!(
            "{} is larger than the virtual disk and compared byte for byte: a restore onto a larger \
             disk moves its GPT, so its partition table differs there",
            o.path().display()
        ));
    }
    notes.push(format!(
        "the whole {}-byte disk was read through its tables; the root hash is the BLAKE3 of its content",
        size
    ));
    Ok(VerifyOutcome {
        root_hash: hasher.finalize().to_hex().to_string(),
        problems,
        unreadable_bytes: 0,
        notes,
        image_bytes,
    })
}
