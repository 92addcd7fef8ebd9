//! Unattended jobs (docs/JOBS.md): a capture, restore, verify or clone described by a job file or the
//! kernel command line, with disks chosen by rules and the image found by filesystem label, UUID or
//! selector. A run resolves everything first (refusing, with the disks it saw, when a rule matches none
//! or several), then calls `ops`, and always leaves a log and a machine-readable result file beside the
//! image. The console front end is `rescue job`; PID 1 runs it for `rescue.job=` and for a
//! `rescue-job.toml` on the stick's data partition.

pub mod spec;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::detect::{self, DetectOptions, Disk, Report};
use crate::engine::restore::UnusedPolicy;
use crate::ops;
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

/// A disk as the result file records it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiskId {
    pub path: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub size_bytes: u64,
}

impl From<&Disk> for DiskId {
    fn from(d: &Disk) -> Self {
        DiskId {
            path: d.path.clone(),
            serial: d.serial.clone(),
            model: d.model.as_ref().map(|m| m.trim().to_string()),
            size_bytes: d.size_bytes,
        }
    }
}

/// The result file's content.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub action: String,
    pub image: Option<String>,
    pub source: Option<DiskId>,
    pub target: Option<DiskId>,
    pub root_hash: Option<String>,
    /// Bytes read (capture), written (restore) or copied (clone).
    pub bytes: u64,
    pub image_bytes: Option<u64>,
    pub verified: bool,
    pub seconds: f64,
    pub started_unix: u64,
    /// Why the job failed, for people.
    pub error: Option<String>,
    /// Unreadable source ranges: `(stream, start, end)` in disk bytes.
    pub unreadable: Vec<(String, u64, u64)>,
    pub notes: Vec<String>,
    pub tool_version: String,
    /// Where the log and this result were written.
    pub log: Option<String>,
    pub result_file: Option<String>,
}

impl Outcome {
    fn new(spec: &JobSpec) -> Outcome {
        Outcome {
            ok: false,
            action: crate::units::json_name(&spec.action),
            image: None,
            source: None,
            target: None,
            root_hash: None,
            bytes: 0,
            image_bytes: None,
            verified: false,
            seconds: 0.0,
            started_unix: store::now_unix(),
            error: None,
            unreadable: vec![],
            notes: vec![],
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            log: None,
            result_file: None,
        }
    }

    /// Lines for the console and the log.
    pub fn summary(&self) -> Vec<String> {
        let mut v = vec![format!(
            "{} {}: {}",
            store::date_time(self.started_unix),
            self.action,
            if self.ok { "OK" } else { "FAILED" }
        )];
        if let Some(i) = &self.image {
            v.push(format!("image {i}"));
        }
        for (what, d) in [("source", &self.source), ("target", &self.target)] {
            if let Some(d) = d {
                v.push(format!(
                    "{what} {} (serial {}, model {}, {} bytes)",
                    d.path,
                    d.serial.as_deref().unwrap_or("-"),
                    d.model.as_deref().unwrap_or("-"),
                    d.size_bytes
                ));
            }
        }
        if let Some(h) = &self.root_hash {
            v.push(format!("root hash {h}"));
        }
        v.push(format!(
            "{} bytes in {:.1} s{}",
            self.bytes,
            self.seconds,
            if self.verified { ", verified" } else { "" }
        ));
        for (s, a, b) in &self.unreadable {
            v.push(format!("unreadable on the source ({s}): bytes {a}..{b}"));
        }
        v.extend(self.notes.iter().map(|n| format!("note: {n}")));
        if let Some(e) = &self.error {
            v.push(format!("error: {e}"));
        }
        v
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

/// Run a job; never panics, never returns an error: the outcome says what happened.
pub fn run(spec: &JobSpec, env: &JobEnv, ctl: ops::Control) -> Outcome {
    let mut out = Outcome::new(spec);
    let started = Instant::now();
    let report = env.report();
    let result = resolve(spec, env, &report, &mut out)
        .and_then(|r| execute(spec, env, &r, ctl, &mut out).map_err(|e| ops::describe(&e)));
    out.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => out.ok = true,
        Err(e) => out.error = Some(e),
    }
    write_records(&mut out);
    out
}

fn execute(
    spec: &JobSpec,
    env: &JobEnv,
    r: &Resolved,
    ctl: ops::Control,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let o = &spec.options;
    let threads = ops::default_threads();
    match spec.action {
        Action::Capture => {
            let (disk, part) = r
                .source
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no source"))?;
            let output = r.image.clone().ok_or_else(|| anyhow::anyhow!("no image"))?;
            if let Some(dir) = output.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("creating the folder {}: {e}", dir.display()))?;
            }
            let mut partitions = o.partitions.clone();
            partitions.extend(part);
            let cs = ops::CaptureSpec {
                source: PathBuf::from(&disk.path),
                output: output.clone(),
                partitions,
                raw: o.raw,
                keep_unallocated: o.keep_unallocated,
                level: o.level,
                threads,
                dedup: true,
            };
            let (_, report) = ops::capture(&cs, &env.detect, ctl)?;
            out.root_hash = Some(report.root_hash.clone());
            out.bytes = report.used_bytes;
            out.image_bytes = Some(report.image_bytes);
            out.unreadable = report
                .unreadable
                .iter()
                .map(|(s, r)| (s.clone(), r.start, r.end))
                .collect();
            out.notes = report.notes.clone();
            if o.verify {
                let v = ops::verify(&output, None, None)?;
                if !v.problems.is_empty() {
                    anyhow::bail!(
                        "the new image {} does not verify: {}",
                        output.display(),
                        v.problems.join("; ")
                    );
                }
                out.verified = true;
            }
        }
        Action::Restore => {
            let (disk, to_part) = r
                .target
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no target"))?;
            let image = r.image.clone().ok_or_else(|| anyhow::anyhow!("no image"))?;
            let rs = ops::RestoreSpec {
                image: image.clone(),
                target: PathBuf::from(&disk.path),
                partition: o.partition,
                // Into the target partition the rules name, else the one with the image partition's number.
                to_partition: to_part.or(o.partition),
                confirmed: true,
                precheck: o.precheck,
                verify: o.verify,
                unused: UnusedPolicy::Leave,
                threads,
            };
            let report = ops::restore(&rs, &env.detect, ctl)?;
            out.root_hash = ops::open_image(&image)
                .ok()
                .map(|i| i.root_hash().to_string());
            out.bytes = report.bytes_written;
            out.verified = report.verified;
            out.unreadable = report
                .unreadable
                .iter()
                .map(|(s, r)| (s.clone(), r.start, r.end))
                .collect();
            out.notes = report.notes.clone();
        }
        Action::Verify => {
            let image = r.image.clone().ok_or_else(|| anyhow::anyhow!("no image"))?;
            let against = r
                .target
                .as_ref()
                .or(r.source.as_ref())
                .map(|(d, _)| PathBuf::from(&d.path));
            let v = ops::verify(&image, against.as_deref(), ctl.progress)?;
            out.root_hash = Some(v.root_hash);
            out.bytes = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
            if !v.problems.is_empty() {
                anyhow::bail!("{}: {}", image.display(), v.problems.join("; "));
            }
            out.verified = true;
        }
        Action::Clone => {
            let (src, _) = r
                .source
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no source"))?;
            let (dst, _) = r
                .target
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no target"))?;
            let cs = ops::CloneSpec {
                source: PathBuf::from(&src.path),
                target: PathBuf::from(&dst.path),
                raw: o.raw,
                confirmed: true,
                verify: o.verify,
            };
            let report = ops::clone(&cs, &env.detect, ctl)?;
            out.bytes = report.bytes_copied;
            out.verified = report.verified;
            out.notes = report.notes.clone();
        }
    }
    Ok(())
}

/// The log (`IMAGE.log`, appended) and the result file (`IMAGE.<action>-<disk>-<date>.json`) beside the
/// image; without an image (clone), under /run/rescue/logs.
fn write_records(out: &mut Outcome) {
    let disk = out
        .target
        .as_ref()
        .or(out.source.as_ref())
        .map(|d| {
            d.serial
                .as_deref()
                .map(store::sanitize)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| store::sanitize(&d.path))
        })
        .unwrap_or_else(|| "none".into());
    let base = match &out.image {
        Some(i) if Path::new(i).parent().is_some_and(Path::is_dir) => PathBuf::from(i),
        _ => {
            let dir = Path::new("/run/rescue/logs");
            let _ = std::fs::create_dir_all(dir);
            dir.join(format!("{}-job", out.action))
        }
    };
    // One result per run: several machines restore the same image, and a rerun must not overwrite the
    // record of the failure before it.
    let stamp = format!(
        "{}{:02}",
        store::date_stamp(out.started_unix),
        out.started_unix % 60
    );
    let name = |n: u32| {
        let mut r = base.as_os_str().to_owned();
        r.push(format!(".{}-{disk}-{stamp}", out.action));
        if n > 1 {
            r.push(format!("-{n}"));
        }
        r.push(".json");
        PathBuf::from(r)
    };
    let result = (1..1000)
        .map(name)
        .find(|p| !p.exists())
        .unwrap_or_else(|| name(1000));
    out.log = ops::append_log(&base, &out.summary())
        .ok()
        .map(|p| p.display().to_string());
    out.result_file = Some(result.display().to_string());
    let written = serde_json::to_vec_pretty(&*out)
        .ok()
        .and_then(|json| std::fs::write(&result, json).ok())
        .and_then(|_| std::fs::File::open(&result).ok())
        .map(|f| f.sync_all().is_ok())
        .unwrap_or(false);
    if !written {
        out.result_file = None;
    }
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
