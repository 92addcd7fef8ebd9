//! Restore (an image onto a disk, a partition or a file) and clone (a disk onto another), with every
//! refusal made before the target is opened.

use crate::detect::{self, DetectOptions, Disk};
use crate::engine::{self, device, restore};
use crate::image::SharedReader;

use super::place::{ImageSource, Placed};
use crate::plan;

use super::{detect_one, detect_target, CloneSpec, Control, RestoreSpec};

/// Everything decided before a restore writes anything: then run.
pub(super) struct PreparedRestore {
    pub image: SharedReader<ImageSource>,
    pub layout: plan::Layout,
    pub target_disk: Disk,
    pub plan: plan::RestorePlan,
}

/// Open the image, detect the target and plan the restore; every refusal happens here, before the
/// target is opened.
pub(super) fn prepare_restore(
    spec: &RestoreSpec,
    placed: &Placed,
    opts: &DetectOptions,
) -> anyhow::Result<PreparedRestore> {
    let image = placed.open()?;
    let layout = engine::layout_of(image.index());
    let env = environment(placed, opts);
    let (target_disk, plan) = plan_onto(&layout, spec, spec.partition, &env, opts)?;
    Ok(PreparedRestore {
        image,
        layout,
        target_disk,
        plan,
    })
}

/// Facts about the image a restore is checked against (the disk holding it, the file itself).
pub(super) fn environment(placed: &Placed, opts: &DetectOptions) -> plan::Environment {
    plan::Environment {
        image_disk: placed
            .local_path()
            .and_then(|p| detect::disk_holding(p, opts)),
        image_path: placed.path.display().to_string(),
        image_identity: placed.local_path().and_then(detect::Identity::of),
    }
}

/// The target as detected now, and the plan of writing `layout` onto it: partition `partition` alone, or
/// the whole disk; every refusal.
pub(super) fn plan_onto(
    layout: &plan::Layout,
    spec: &RestoreSpec,
    partition: Option<u32>,
    env: &plan::Environment,
    opts: &DetectOptions,
) -> anyhow::Result<(Disk, plan::RestorePlan)> {
    let mut target_disk = detect_target(&spec.target, opts)?;
    if target_disk.transport == detect::Transport::File {
        // An image file has no sector size of its own: it takes the image's.
        target_disk.logical_sector_size = layout.logical_sector_size;
    }
    let plan = match partition {
        Some(n) => plan::plan_restore_partition(
            layout,
            n,
            &target_disk,
            spec.to_partition,
            env,
            spec.confirmed,
        )?,
        None => plan::plan_restore_disk(layout, &target_disk, env, spec.confirmed)?,
    };
    Ok((target_disk, plan))
}

/// What a restore did, with the target as detected before it and the image's root hash.
pub(super) struct Restored {
    pub target: Disk,
    pub root_hash: String,
    pub report: restore::RestoreReport,
}

pub(super) fn restore(
    spec: &RestoreSpec,
    placed: &Placed,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<Restored> {
    let p = prepare_restore(spec, placed, opts)?;
    let target = device::Target::open(&spec.target)?;
    let ropts = restore::RestoreOptions {
        threads: spec.threads.max(1),
        precheck: spec.precheck,
        verify: spec.verify,
        unused: spec.unused,
        cancel: ctl.cancel,
    };
    let report = restore::restore(&p.image, &p.layout, &p.plan, &target, &ropts, ctl.progress)?;
    Ok(Restored {
        target: p.target_disk,
        root_hash: p.image.root_hash().to_string(),
        report,
    })
}

/// Copy a disk onto another; returns both disks as detected before the copy, and what was done.
pub(super) fn clone(
    spec: &CloneSpec,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<(Disk, Disk, engine::clone::CloneReport)> {
    let (source_disk, target_disk) = detect_both(&spec.source, &spec.target, opts)?;
    let (capture_plan, restore_plan) =
        plan::plan_clone(&source_disk, &target_disk, spec.raw, spec.confirmed)?;
    let report = copy(
        &spec.source,
        &source_disk,
        &spec.target,
        (&capture_plan, &restore_plan),
        spec.verify,
        ctl,
        &format!(
            "The clone did not complete: {} has no valid partition table now",
            spec.target.display()
        ),
    )?;
    Ok((source_disk, target_disk, report))
}

/// Copy partition `n` of the disk `source` holds (a virtual machine's disk) onto the target a partition
/// restore names (`spec.target`, `spec.to_partition`), planned and refused as a restore of that
/// partition from an image is, and copied as a clone copies it: what its filesystem uses, read back.
pub(super) fn clone_partition(
    source: &std::path::Path,
    n: u32,
    spec: &RestoreSpec,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<(Disk, Disk, engine::clone::CloneReport)> {
    let (source_disk, target_disk) = detect_both(source, &spec.target, opts)?;
    let req = plan::CaptureRequest {
        partitions: vec![n],
        ..plan::CaptureRequest::default()
    };
    let shown = source.display().to_string();
    let capture_plan = plan::plan_capture(&source_disk, &req, None)
        .map_err(|r| anyhow::anyhow!("{shown}: {r}"))?;
    let env = plan::Environment {
        image_disk: detect::disk_holding(source, opts),
        image_path: shown,
        image_identity: detect::Identity::of(source),
    };
    let restore_plan = plan::plan_restore_partition(
        &capture_plan.layout,
        n,
        &target_disk,
        spec.to_partition,
        &env,
        spec.confirmed,
    )?;
    let what = match spec.to_partition {
        Some(t) => format!("partition {t} of {}", spec.target.display()),
        None => spec.target.display().to_string(),
    };
    let report = copy(
        source,
        &source_disk,
        &spec.target,
        (&capture_plan, &restore_plan),
        spec.verify,
        ctl,
        &format!(
            "The restore did not complete: {what} holds part of partition {n} only; restore it \
             again before using it"
        ),
    )?;
    Ok((source_disk, target_disk, report))
}

/// The source and the target of a copy as detected now (a target file takes the source's sector size).
fn detect_both(
    source: &std::path::Path,
    target: &std::path::Path,
    opts: &DetectOptions,
) -> anyhow::Result<(Disk, Disk)> {
    let source_disk = detect_one(source, opts)?;
    let mut target_disk = detect_target(target, opts)?;
    if target_disk.transport == detect::Transport::File {
        target_disk.logical_sector_size = source_disk.logical_sector_size;
    }
    Ok((source_disk, target_disk))
}

/// Open both sides and copy as the plans say; a failure after the target was written says
/// `incomplete` too.
fn copy(
    source: &std::path::Path,
    source_disk: &Disk,
    target: &std::path::Path,
    (capture_plan, restore_plan): (&plan::CapturePlan, &plan::RestorePlan),
    verify: bool,
    ctl: Control,
    incomplete: &str,
) -> anyhow::Result<engine::clone::CloneReport> {
    let mut source = device::Source::open(source)?;
    source.set_sector(source_disk.logical_sector_size);
    let target = device::Target::open(target)?;
    let copts = engine::clone::CloneOptions {
        verify,
        cancel: ctl.cancel,
    };
    engine::clone::clone_disk(
        &source,
        &target,
        capture_plan,
        restore_plan,
        &copts,
        ctl.progress,
    )
    .map_err(|e| match e {
        engine::EngineError::Untouched(_) => anyhow::anyhow!("{e}"),
        e => anyhow::anyhow!("{}. {incomplete}", crate::units::chain(&e)),
    })
}
