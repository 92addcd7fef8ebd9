//! Whole operations, from paths to results: detect, plan (with every refusal), open, run the engine and
//! finish (fsync, rename, logs). The CLI, the TUI and jobs call these and only present the outcome.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::detect::{self, DetectOptions, Disk};
use crate::engine::progress::{Meter, Progress};
use crate::engine::{self, capture, device, restore, verify};
use crate::image::{ImageFile, SharedReader};
use crate::plan;

/// How a running operation is observed and stopped.
#[derive(Clone, Default)]
pub struct Control {
    /// Set to stop the operation at the next chunk; it then fails with "cancelled".
    pub cancel: Arc<AtomicBool>,
    pub progress: Option<Sender<Progress>>,
    /// Warnings to show at once, while the operation goes on (a destination that may be too small).
    pub notices: Option<Sender<String>>,
}

/// Options for the running system: the real sysfs, /dev and mount table, and the boot medium's identity
/// from the kernel command line.
pub fn detect_options() -> DetectOptions {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    DetectOptions {
        boot_disk_guid: crate::init::cmdline::param(&cmdline, "rescue.stick"),
        ..DetectOptions::default()
    }
}

/// Worker threads by default: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// An error and its causes as one line for the user (what `{e:#}` prints), leaving out a cause whose text
/// the line already holds: many errors name their OS error in their own message and keep it as their
/// source too.
pub fn describe(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Detect one disk (device or image file), or fail saying why.
pub fn detect_one(path: &Path, opts: &DetectOptions) -> anyhow::Result<Disk> {
    let report = detect::detect_paths(&[path.to_path_buf()], opts);
    let problems = match report.disks.into_iter().next() {
        Some(d) if d.size_bytes > 0 => return Ok(d),
        Some(d) => d.problems,
        None => report.problems,
    };
    let said = problems.join("; ");
    if said.is_empty() {
        bail!(
            "{} has no size (0 bytes): it holds no disk; check that you named the right device or file",
            path.display()
        );
    }
    if said.contains(&*path.to_string_lossy()) {
        bail!("{said}")
    }
    bail!("{}: {said}", path.display())
}

/// [`detect_one`] for a disk to be written: an empty file gets the advice to give it a size.
fn detect_target(path: &Path, opts: &DetectOptions) -> anyhow::Result<Disk> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        bail!(
            "{p} is empty (0 bytes): a file to restore or clone into needs the size of the disk it stands \
             for; give it one first (e.g. truncate -s 64G {p}) or name a disk",
            p = path.display()
        );
    }
    detect_one(path, opts)
}

/// Open an image for reading, with the path in every error.
pub fn open_image(path: &Path) -> anyhow::Result<SharedReader<ImageFile>> {
    let file =
        ImageFile::open(path).with_context(|| format!("opening the image {}", path.display()))?;
    SharedReader::open(Arc::new(file))
        .with_context(|| format!("reading the image {}", path.display()))
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSpec {
    pub source: PathBuf,
    /// The image file; `-` writes to stdout.
    pub output: PathBuf,
    pub partitions: Vec<u32>,
    pub raw: bool,
    /// Read every gap outside the partitions, however large (see [`plan::SMALL_GAP`]).
    pub keep_unallocated: bool,
    pub level: i32,
    pub threads: usize,
    /// Store each 4 KiB block once (an image for format 1.1 readers).
    pub dedup: bool,
}

/// The `.partial` name an image has until it is complete.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Capture `spec.source` into `spec.output`. The file is written as `OUTPUT.partial`, flushed, and only
/// then renamed; on any failure (or cancel) the partial file is removed, so nothing that looks like a
/// complete image is ever left behind.
pub fn capture(
    spec: &CaptureSpec,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<(Disk, capture::CaptureReport)> {
    let disk = detect_one(&spec.source, opts)?;
    let to_stdout = spec.output.as_os_str() == "-";
    let image_disk = if to_stdout {
        None
    } else {
        detect::disk_holding(folder_of(&spec.output), opts)
    };
    if !to_stdout {
        plan::check_output(
            &disk,
            &spec.output.display().to_string(),
            detect::Identity::of(&spec.output),
        )?;
    }
    let plan = plan::plan_capture(
        &disk,
        &plan::CaptureRequest {
            partitions: spec.partitions.clone(),
            raw: spec.raw,
            keep_unallocated: spec.keep_unallocated,
        },
        image_disk.as_deref(),
    )?;
    let mut source = device::Source::open(&spec.source)?;
    source.set_sector(disk.logical_sector_size);
    let capture_opts = capture::CaptureOptions {
        level: spec.level,
        threads: spec.threads.max(1),
        chunk_size: crate::image::DEFAULT_CHUNK_SIZE,
        dedup: spec.dedup,
        creation: engine::creation_info(),
        cancel: ctl.cancel,
    };
    // What will be read, worked out once: for the warning below and for the capture itself.
    let reads = capture::plan_reads(&source, &plan);
    if to_stdout {
        let out = BufWriter::with_capacity(8 << 20, std::io::stdout());
        let (report, out) =
            capture::capture_reads(&source, &disk, reads, out, &capture_opts, ctl.progress)?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .context("flushing the image to stdout")?;
        return Ok((disk, report));
    }
    if spec.output.exists() {
        bail!(
            "{} already exists; remove it or choose another name",
            spec.output.display()
        );
    }
    let folder = folder_of(&spec.output);
    if let Some(tx) = &ctl.notices {
        let warning = crate::store::space_warning(
            crate::store::max_file_size_at(folder),
            crate::store::free_bytes(folder),
            reads.total,
        );
        if let Some(w) = warning {
            let _ = tx.send(format!("{}: {w}", spec.output.display()));
        }
    }
    let partial = partial_path(&spec.output);
    let out = create_partial(&spec.output, &partial)?;
    // A second Ctrl-C ends the process at once: the partial file goes too.
    let _abort = crate::sys::on_abort::RemoveOnAbort::new(&partial);
    let result = capture::capture_reads(&source, &disk, reads, out, &capture_opts, ctl.progress)
        .map_err(anyhow::Error::from)
        .and_then(|(report, out)| {
            let file = out
                .finish()
                .with_context(|| format!("writing {}", partial.display()))?;
            file.sync_all()
                .with_context(|| format!("flushing {} to disk", partial.display()))?;
            Ok((report, file))
        });
    // `_held` keeps the partial file's lock until it has its final name.
    let (report, _held) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!(
                "the capture of {} did not complete; no image was left at {}",
                spec.source.display(),
                spec.output.display()
            )));
        }
    };
    finalize(&partial, &spec.output)?;
    Ok((disk, report))
}

/// The folder an output file goes into.
fn folder_of(output: &Path) -> &Path {
    output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `OUTPUT.partial`, created and locked: a second capture to the same output is refused at once.
fn create_partial(output: &Path, partial: &Path) -> anyhow::Result<engine::output::OutputFile> {
    engine::output::OutputFile::create(partial).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => anyhow::anyhow!(
            "another capture is writing {} right now (its {} is locked); wait for it to finish or \
             choose another name",
            output.display(),
            partial.display()
        ),
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "cannot write the image {}: the folder {} does not exist; create it or choose another place",
            output.display(),
            folder_of(output).display()
        ),
        _ => anyhow::Error::new(e).context(format!("cannot create the image {}", output.display())),
    })
}

/// Give the complete `partial` its final name, never replacing a file that appeared there meanwhile,
/// and make the rename durable.
fn finalize(partial: &Path, output: &Path) -> anyhow::Result<()> {
    let renamed = match crate::sys::rename_noreplace(partial, output) {
        // File systems without RENAME_NOREPLACE: our lock on the partial file keeps other captures out.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !output.exists() => {
            std::fs::rename(partial, output)
        }
        r => r,
    };
    renamed.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists
            || e.raw_os_error() == Some(libc::EINVAL)
        {
            anyhow::anyhow!(
                "{} appeared while this capture ran (another program wrote it) and was left as it is; \
                 this capture's complete image is {}: rename it to keep it",
                output.display(),
                partial.display()
            )
        } else {
            anyhow::Error::new(e).context(format!(
                "the image is complete as {} but could not be renamed to {}",
                partial.display(),
                output.display()
            ))
        }
    })?;
    if let Ok(d) = File::open(folder_of(output)) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestoreSpec {
    pub image: PathBuf,
    pub target: PathBuf,
    pub partition: Option<u32>,
    pub to_partition: Option<u32>,
    /// The user confirmed that the target may be destroyed.
    pub confirmed: bool,
    /// Check every chunk the restore needs before the first write (see [`restore::RestoreOptions`]).
    pub precheck: bool,
    pub verify: bool,
    pub unused: restore::UnusedPolicy,
    pub threads: usize,
}

/// Everything decided before a restore writes anything: shown by front ends, then run.
pub struct PreparedRestore {
    pub image: SharedReader<ImageFile>,
    pub layout: plan::Layout,
    pub target_disk: Disk,
    pub plan: plan::RestorePlan,
}

/// Open the image, detect the target and plan the restore; every refusal happens here, before the
/// target is opened.
pub fn prepare_restore(
    spec: &RestoreSpec,
    opts: &DetectOptions,
) -> anyhow::Result<PreparedRestore> {
    let image = open_image(&spec.image)?;
    let layout = engine::layout_of(image.index());
    let mut target_disk = detect_target(&spec.target, opts)?;
    if target_disk.transport == detect::Transport::File {
        // An image file has no sector size of its own: it takes the image's.
        target_disk.logical_sector_size = layout.logical_sector_size;
    }
    let env = plan::Environment {
        image_disk: detect::disk_holding(&spec.image, opts),
        image_path: spec.image.display().to_string(),
        image_identity: detect::Identity::of(&spec.image),
    };
    let plan = match spec.partition {
        Some(n) => plan::plan_restore_partition(
            &layout,
            n,
            &target_disk,
            spec.to_partition,
            &env,
            spec.confirmed,
        )?,
        None => plan::plan_restore_disk(&layout, &target_disk, &env, spec.confirmed)?,
    };
    Ok(PreparedRestore {
        image,
        layout,
        target_disk,
        plan,
    })
}

pub fn restore(
    spec: &RestoreSpec,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<restore::RestoreReport> {
    let p = prepare_restore(spec, opts)?;
    let target = device::Target::open(&spec.target)?;
    let ropts = restore::RestoreOptions {
        threads: spec.threads.max(1),
        precheck: spec.precheck,
        verify: spec.verify,
        unused: spec.unused,
        cancel: ctl.cancel,
    };
    Ok(restore::restore(
        &p.image,
        &p.layout,
        &p.plan,
        &target,
        &ropts,
        ctl.progress,
    )?)
}

#[derive(Debug, Clone, PartialEq)]
pub struct CloneSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub raw: bool,
    pub confirmed: bool,
    pub verify: bool,
}

pub fn clone(
    spec: &CloneSpec,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<engine::clone::CloneReport> {
    let source_disk = detect_one(&spec.source, opts)?;
    let mut target_disk = detect_target(&spec.target, opts)?;
    if target_disk.transport == detect::Transport::File {
        target_disk.logical_sector_size = source_disk.logical_sector_size;
    }
    let (capture_plan, restore_plan) =
        plan::plan_clone(&source_disk, &target_disk, spec.raw, spec.confirmed)?;
    let mut source = device::Source::open(&spec.source)?;
    source.set_sector(source_disk.logical_sector_size);
    let target = device::Target::open(&spec.target)?;
    let copts = engine::clone::CloneOptions {
        verify: spec.verify,
        cancel: ctl.cancel,
    };
    engine::clone::clone_disk(
        &source,
        &target,
        &capture_plan,
        &restore_plan,
        &copts,
        ctl.progress,
    )
    .map_err(|e| match e {
        engine::EngineError::Untouched(_) => anyhow::anyhow!("{e}"),
        e => anyhow::anyhow!(
            "{e}. The clone did not complete: {} has no valid partition table now",
            spec.target.display()
        ),
    })
}

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
}

/// Check every chunk hash and the root hash of `image`; with `against`, compare a device with it.
/// `progress` gets "verify" events (and "compare" ones for `against`).
pub fn verify(
    image: &Path,
    against: Option<&Path>,
    progress: Option<Sender<Progress>>,
) -> anyhow::Result<VerifyOutcome> {
    let reader = open_image(image)?;
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
    })
}

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

/// Append `lines` to the log beside `image` (`IMAGE.log`); returns the log's path.
pub fn append_log(image: &Path, lines: &[String]) -> std::io::Result<PathBuf> {
    let mut path = image.as_os_str().to_owned();
    path.push(".log");
    let path = PathBuf::from(path);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    for l in lines {
        writeln!(f, "{l}")?;
    }
    f.sync_all()?;
    Ok(path)
}

/// The peak resident memory of this process so far (`VmHWM`), for reports.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A file that appeared under the image's name while the capture ran is never replaced; the complete
    /// image stays as the partial file, and the error says so.
    #[test]
    fn a_finished_image_never_replaces_another() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("a.rimg");
        let partial = partial_path(&output);
        std::fs::write(&partial, b"ours").unwrap();
        std::fs::write(&output, b"theirs").unwrap();
        let e = format!("{:#}", finalize(&partial, &output).unwrap_err());
        assert!(e.contains("appeared while this capture ran"), "{e}");
        assert_eq!(std::fs::read(&output).unwrap(), b"theirs");
        assert_eq!(std::fs::read(&partial).unwrap(), b"ours");
        std::fs::remove_file(&output).unwrap();
        finalize(&partial, &output).unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), b"ours");
        assert!(!partial.exists());
    }
}
