//! Unattended jobs (docs/JOBS.md): a capture, restore, verify or clone described by a job file or the
//! kernel command line, with disks chosen by rules and the image found by filesystem label, UUID or
//! selector. A run resolves everything first (refusing, with the disks it saw, when a rule matches none
//! or several), then calls `ops`, and always leaves a log and a machine-readable result file beside the
//! image. The console front end is `rescue job`; PID 1 runs it for `rescue.job=` and for a
//! `rescue-job.toml` on the stick's data partition.

pub mod spec;

use std::path::{Path, PathBuf};

use crate::detect::{self, DetectOptions, Disk, Report};
use crate::ops::{self, DiskId, Outcome};
use crate::store;

pub use spec::{Action, After, JobSpec};

/// The job file PID 1 looks for at the root of the stick's data partition.
pub use crate::init::STICK_JOB_FILE;

/// Where a job looks for disks.
#[derive(Debug, Clone, Default)]
pub struct JobEnv {
    pub detect: DetectOptions,
    /// Only these devices or image files (tests and host use); every block device when empty.
    pub disks: Vec<PathBuf>,
}

impl JobEnv {
    fn report(&self) -> Report {
        if self.disks.is_empty() {
            detect::detect_all(&self.detect)
        } else {
            detect::detect_paths(&self.disks, &self.detect)
        }
    }
}

/// Everything the job will touch, resolved before anything is written.
struct Resolved {
    image: Option<PathBuf>,
    source: Option<(Disk, Option<u32>)>,
    target: Option<(Disk, Option<u32>)>,
}

fn resolve_disk(
    report: &Report,
    spec: &spec::DiskSpec,
    role: &str,
) -> Result<(Disk, Option<u32>), String> {
    let selector = spec.selector()?;
    let path = selector
        .resolve(report)
        .map_err(|e| format!("the {role} rules: {e}"))?;
    let disk = report
        .disks
        .iter()
        .find(|d| d.path == path)
        .cloned()
        .ok_or_else(|| format!("the {role} {path} vanished"))?;
    Ok((disk, spec.partition))
}

/// `{serial}`, `{model}`, `{date}` in a capture's image path.
fn expand(path: &str, disk: Option<&Disk>, now: u64) -> String {
    let field = |v: Option<&str>| store::sanitize(v.unwrap_or("unknown"));
    path.replace("{serial}", &field(disk.and_then(|d| d.serial.as_deref())))
        .replace("{model}", &field(disk.and_then(|d| d.model.as_deref())))
        .replace("{date}", &store::date_stamp(now))
}

/// Resolve the image first (so that even a refusal is recorded beside it), then the disks.
fn resolve(
    spec: &JobSpec,
    env: &JobEnv,
    report: &Report,
    out: &mut Outcome,
) -> Result<Resolved, String> {
    // A capture's image name may use the source's identity; a source that does not resolve is reported
    // below, after the image's place is known.
    let source = spec
        .source
        .as_ref()
        .map(|s| resolve_disk(report, s, "source"));
    let source_disk = source
        .as_ref()
        .and_then(|r| r.as_ref().ok())
        .map(|(d, _)| d);
    let image = match &spec.image {
        None => None,
        Some(i) => {
            let rel = expand(
                i.path.as_deref().or(i.file.as_deref()).unwrap_or(""),
                source_disk,
                store::now_unix(),
            );
            match i.store_selector()? {
                None => Some(PathBuf::from(rel)),
                Some(sel) => {
                    let device = sel
                        .resolve(report)
                        .map_err(|e| format!("the filesystem holding the image: {e}"))?;
                    // Images are only read by restore and verify: a write-protected drive will do.
                    let (candidates, access) = match spec.action {
                        Action::Restore | Action::Verify => {
                            (store::readable_stores(report), store::Access::Read)
                        }
                        Action::Capture | Action::Clone => {
                            (store::stores(report), store::Access::Write)
                        }
                    };
                    let st = candidates
                        .into_iter()
                        .find(|s| s.device.as_deref() == Some(device.as_str()))
                        .ok_or_else(|| {
                            format!("{device} holds no filesystem images can be kept on")
                        })?;
                    let dir = store::ensure_mounted(&st, access, &env.detect)
                        .map_err(|e| ops::describe(&e))?;
                    Some(dir.join(rel.trim_start_matches('/')))
                }
            }
        }
    };
    out.image = image.as_ref().map(|p| p.display().to_string());
    let source = source.transpose()?;
    out.source = source.as_ref().map(|(d, _)| DiskId::from(d));
    let target = spec
        .target
        .as_ref()
        .map(|s| resolve_disk(report, s, "target"))
        .transpose()?;
    out.target = target.as_ref().map(|(d, _)| DiskId::from(d));
    Ok(Resolved {
        image,
        source,
        target,
    })
}

/// Run a job; never panics, never returns an error: the outcome says what happened. The log and the
/// result file are written beside the image, even when the job is refused before it starts.
pub fn run(spec: &JobSpec, env: &JobEnv, ctl: ops::Control) -> Outcome {
    let how = ops::RunOptions {
        create_folder: true,
        log: true,
        result_file: true,
        ..Default::default()
    };
    let report = env.report();
    let mut out = Outcome::new(&crate::units::json_name(&spec.action), None);
    let request = resolve(spec, env, &report, &mut out).and_then(|r| request(spec, r));
    match request {
        Ok(req) => ops::run(&req, &how, &env.detect, ctl),
        Err(e) => {
            out.error = Some(e);
            ops::record(&mut out, &how);
            out
        }
    }
}

/// The operation a resolved job asks for.
fn request(spec: &JobSpec, r: Resolved) -> Result<ops::Request, String> {
    let o = &spec.options;
    let image = || r.image.clone().ok_or("the job names no image");
    let source = || r.source.clone().ok_or("the job names no source disk");
    let target = || r.target.clone().ok_or("the job names no target disk");
    Ok(match spec.action {
        Action::Capture => {
            let (disk, part) = source()?;
            let mut partitions = o.partitions.clone();
            partitions.extend(part);
            ops::Request::Capture(ops::CaptureSpec {
                source: PathBuf::from(&disk.path),
                output: image()?.into(),
                partitions,
                raw: o.raw,
                keep_unallocated: o.keep_unallocated,
                level: o.level,
                verify: o.verify,
                ..Default::default()
            })
        }
        Action::Restore => {
            let (disk, to_part) = target()?;
            ops::Request::Restore(ops::RestoreSpec {
                image: image()?.into(),
                target: PathBuf::from(&disk.path),
                partition: o.partition,
                // Into the target partition the rules name, else the one with the image partition's number.
                to_partition: to_part.or(o.partition),
                confirmed: true,
                precheck: o.precheck,
                verify: o.verify,
                ..Default::default()
            })
        }
        Action::Verify => ops::Request::Verify(ops::VerifySpec {
            image: image()?.into(),
            against: r
                .target
                .as_ref()
                .or(r.source.as_ref())
                .map(|(d, _)| PathBuf::from(&d.path)),
        }),
        Action::Clone => ops::Request::Clone(ops::CloneSpec {
            source: PathBuf::from(&source()?.0.path),
            target: PathBuf::from(&target()?.0.path),
            raw: o.raw,
            confirmed: true,
            verify: o.verify,
        }),
    })
}

/// Read a job: inline (`key=value ...`) or a file path.
pub fn load(arg: &str) -> Result<JobSpec, String> {
    if arg.contains('=') && !Path::new(arg).exists() {
        return JobSpec::from_inline(arg).map_err(|e| format!("the job `{arg}`: {e}"));
    }
    let text =
        std::fs::read_to_string(arg).map_err(|e| format!("cannot read the job file {arg}: {e}"))?;
    JobSpec::from_toml(&text).map_err(|e| format!("the job file {arg}: {e}"))
}

/// The stick's data partition, mounted (for `rescue-job.toml` and job files named by path), if there is
/// a stick; and whether this call mounted it (so a caller that finds nothing there can unmount it again).
pub fn stick_data_dir(opts: &DetectOptions) -> Option<(PathBuf, bool)> {
    let report = detect::detect_all(opts);
    let st = store::stores(&report)
        .into_iter()
        .find(|s| s.on_boot_medium && s.unusable.is_none())?;
    let was_mounted = st.mounted_on.is_some();
    store::ensure_mounted(&st, store::Access::Write, opts)
        .ok()
        .map(|dir| (dir, !was_mounted))
}
