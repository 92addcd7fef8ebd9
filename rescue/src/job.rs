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
    image: Option<ops::Location>,
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
            let base = match i.store_selector()? {
                None if i.repo.is_some() => {
                    let repo = i.repo.as_deref().unwrap_or("");
                    Some(ops::Location::parse(repo).map_err(|e| format!("image.repo: {e}"))?)
                }
                None if i.url.is_some() => {
                    let url = expand(
                        i.url.as_deref().unwrap_or(""),
                        source_disk,
                        store::now_unix(),
                    );
                    Some(ops::Location::parse(&url).map_err(|e| format!("image.url: {e}"))?)
                }
                None => Some(PathBuf::from(rel).into()),
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
                    Some(dir.join(rel.trim_start_matches('/')).into())
                }
            };
            match (&i.snapshot, base) {
                (Some(snap), Some(repo)) => {
                    let snap = expand(snap, source_disk, store::now_unix());
                    let (name, when) = match snap.split_once('@') {
                        None => (snap.clone(), crate::url::When::Latest),
                        Some((n, "latest")) => (n.to_string(), crate::url::When::Latest),
                        Some((n, t)) => (n.to_string(), crate::url::When::At(t.to_string())),
                    };
                    crate::url::check_name(&name).map_err(|e| format!("image.snapshot: {e}"))?;
                    Some(ops::Location::Snapshot(crate::url::SnapshotRef {
                        repo: Box::new(repo),
                        name,
                        when,
                        passphrase: None,
                    }))
                }
                (_, base) => base,
            }
        }
    };
    out.image = image.as_ref().map(|l| l.to_string());
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
    let mut out = Outcome::new(&crate::units::json_name(&spec.action), None);
    let mut how = ops::RunOptions {
        create_folder: true,
        log: true,
        result_file: true,
        ..Default::default()
    };
    let net = net_options(spec, env).map(|(net, results)| {
        how.net = net;
        how.results = results;
    });
    let report = env.report();
    let request = net
        .and_then(|()| resolve(spec, env, &report, &mut out))
        .and_then(|r| request(spec, r));
    match request {
        Ok(req) => ops::run(&req, &how, &env.detect, ctl),
        Err(e) => {
            out.error = Some(e);
            ops::record(&mut out, &how);
            out
        }
    }
}

/// How the job's network locations are reached, and where its result is sent.
fn net_options(
    spec: &JobSpec,
    env: &JobEnv,
) -> Result<(ops::NetOptions, Option<crate::url::Url>), String> {
    let results = spec
        .results
        .as_deref()
        .map(crate::url::Url::parse)
        .transpose()
        .map_err(|e| format!("results: {e}"))?;
    let Some(i) = &spec.image else {
        return Ok((ops::NetOptions::default(), results));
    };
    let file = |p: &Option<String>| p.as_deref().map(|p| job_file(p, env));
    let ca_file = file(&i.ca_file).transpose()?;
    let credentials = file(&i.credentials).transpose()?;
    let passphrase_file = file(&i.passphrase_file).transpose()?;
    let net = ops::NetOptions {
        ca_file,
        ..Default::default()
    }
    .with_credentials(credentials.as_deref())
    .and_then(|n| n.with_passphrase(passphrase_file.as_deref()))
    .map_err(|e| ops::describe(&e))?;
    Ok((net, results))
}

/// A file a job names: an absolute path, or a path on the rescue stick's data partition.
fn job_file(path: &str, env: &JobEnv) -> Result<PathBuf, String> {
    if Path::new(path).is_absolute() {
        return Ok(PathBuf::from(path));
    }
    let (dir, _) = stick_data_dir(&env.detect).ok_or_else(|| {
        format!("{path}: a relative path is on the rescue stick's data partition, and there is no stick; give an absolute path")
    })?;
    Ok(dir.join(path))
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
                output: image()?,
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
                image: image()?,
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
            image: image()?,
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

/// The largest job file fetched by URL.
const MAX_JOB_BYTES: u64 = 1 << 20;

/// Read a job: inline (`key=value ...`), a file path, or a URL (`http(s)://…/job.toml`).
pub fn load(arg: &str) -> Result<JobSpec, String> {
    if crate::url::looks_like_url(arg) {
        let url = crate::url::Url::parse(arg).map_err(|e| e.to_string())?;
        let bytes = ops::fetch(&url, &ops::NetOptions::default(), MAX_JOB_BYTES)
            .map_err(|e| format!("cannot fetch the job: {}", ops::describe(&e)))?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("the job {url}: not text (UTF-8)"))?;
        return JobSpec::from_toml(&text).map_err(|e| format!("the job {url}: {e}"));
    }
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
