//! Growing the rescue stick's data partition, checked again against the plan the user confirmed.

use std::path::Path;

use anyhow::{bail, Context};

use crate::detect::{self, DetectOptions, Disk};
use crate::plan;

use super::detect_one;

/// What growing the stick's data partition did, and the stick as detected afterwards.
#[derive(Debug, Clone)]
pub struct GrowOutcome {
    pub report: crate::store::grow::GrowReport,
    pub disk: Disk,
}

/// Grow the rescue stick's data partition as `expected` (the plan the user confirmed) says. The stick is
/// detected and planned again first, its data filesystem checked for files again: if anything differs
/// from what was confirmed, nothing is written. `step` is told what is being done.
pub fn grow_stick(
    expected: &plan::grow::GrowPlan,
    opts: &DetectOptions,
    step: &mut dyn FnMut(&'static str),
) -> anyhow::Result<GrowOutcome> {
    let path = Path::new(&expected.disk);
    let disk = detect_one(path, opts)?;
    let contents = crate::store::grow::data_contents(&disk);
    let plan = plan::grow::plan_grow(&disk, &contents)?;
    if plan != *expected {
        bail!(
            "{} changed since growing its data partition was offered; nothing was written. Look at \
             the disks again",
            expected.disk
        );
    }
    let report = crate::store::grow::grow(&plan, volume_serial(&disk), step)?;
    let after = detect_one(path, opts)
        .with_context(|| format!("reading {} again after growing", expected.disk))?;
    let end = (plan.new_last_lba + 1) * u64::from(plan.sector);
    let data = plan::grow::data_partition(&after);
    if !data
        .is_some_and(|p| p.start_bytes + p.size_bytes == end && p.fs == Some(detect::FsKind::Exfat))
    {
        bail!(
            "{} was written, but reading it back does not show an exFAT data partition ending at byte \
             {end}: {}",
            expected.disk,
            after.problems.join("; ")
        );
    }
    Ok(GrowOutcome {
        report,
        disk: after,
    })
}

/// A serial number for a new volume: different for every format (mkfs takes the clock), here the time
/// mixed with the disk's identity.
fn volume_serial(disk: &Disk) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(disk.path.as_bytes());
    if let Some(guid) = disk.gpt.as_ref().and_then(|g| g.disk_guid.as_ref()) {
        h.update(guid.as_bytes());
    }
    let b = *h.finalize().as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}
