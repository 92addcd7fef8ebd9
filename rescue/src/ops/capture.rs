//! Capture: a disk (or some of its partitions) into a new image file, written as `IMAGE.partial` and
//! given its name only once complete and flushed.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::detect::{self, DetectOptions, Disk};
use crate::engine::{self, capture, device};
use crate::plan;

use super::{detect_one, CaptureSpec, Control};

/// The `.partial` name an image has until it is complete.
pub fn partial_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Capture `spec.source` into `output` (the local form of `spec.output`). The file is written as `OUTPUT.partial`, flushed, and only
/// then renamed; on any failure (or cancel) the partial file is removed, so nothing that looks like a
/// complete image is ever left behind.
pub fn capture(
    spec: &CaptureSpec,
    output: &Path,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<(Disk, capture::CaptureReport)> {
    let to_stdout = output.as_os_str() == "-";
    let local = (!to_stdout).then_some(output);
    let Prepared {
        disk,
        source,
        capture_opts,
        plan,
    } = prepare(spec, local, opts, &ctl)?;
    // What will be read, worked out once: for the space warning and for the capture itself.
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
    if output.exists() {
        bail!(
            "{} already exists; remove it or choose another name",
            output.display()
        );
    }
    let folder = folder_of(output);
    if let Some(tx) = &ctl.notices {
        let warning = crate::store::space_warning(
            crate::store::max_file_size_at(folder),
            crate::store::free_bytes(folder),
            reads.total,
        );
        if let Some(w) = warning {
            let _ = tx.send(format!("{}: {w}", output.display()));
        }
    }
    let partial = partial_path(output);
    let out = create_partial(output, &partial)?;
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
                output.display()
            )));
        }
    };
    finalize(&partial, output)?;
    Ok((disk, report))
}

/// What a capture reads, from what, and how, decided before anything is written.
pub(super) struct Prepared {
    pub disk: Disk,
    pub source: device::Source,
    pub capture_opts: capture::CaptureOptions,
    pub plan: plan::CapturePlan,
}

/// Detect the source and plan the capture; `local` is the image's path when it is a local file (then
/// it may not be on the disk captured, nor be that disk).
pub(super) fn prepare(
    spec: &CaptureSpec,
    local: Option<&Path>,
    opts: &DetectOptions,
    ctl: &Control,
) -> anyhow::Result<Prepared> {
    let disk = detect_one(&spec.source, opts)?;
    let image_disk = local.and_then(|o| detect::disk_holding(folder_of(o), opts));
    if let Some(output) = local {
        plan::check_output(
            &disk,
            &output.display().to_string(),
            detect::Identity::of(output),
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
        cancel: ctl.cancel.clone(),
    };
    Ok(Prepared {
        disk,
        source,
        capture_opts,
        plan,
    })
}

/// Capture onto an SFTP server: written as `NAME.partial` there, flushed, then renamed (never over a
/// file that exists); the partial file is removed when the capture fails. Returns notes about how it
/// was written.
pub fn capture_sftp(
    spec: &CaptureSpec,
    url: &crate::url::Url,
    sftp: &crate::store::sftp::SftpOptions,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<(Disk, capture::CaptureReport, Vec<String>)> {
    let Prepared {
        disk,
        source,
        capture_opts,
        plan,
    } = prepare(spec, None, opts, &ctl)?;
    let reads = capture::plan_reads(&source, &plan);
    let mut out = crate::store::sftp::SftpWriter::create(url, sftp)?;
    let result =
        capture::capture_reads(&source, &disk, reads, &mut out, &capture_opts, ctl.progress);
    let report = match result {
        Ok((report, _)) => report,
        Err(e) => {
            out.abandon();
            return Err(anyhow::Error::from(e).context(format!(
                "the capture of {} did not complete; no image was left at {url}",
                spec.source.display()
            )));
        }
    };
    let notes = out.finish()?;
    Ok((disk, report, notes))
}

/// The folder an output file goes into.
pub(super) fn folder_of(output: &Path) -> &Path {
    output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `OUTPUT.partial`, created and locked: a second capture to the same output is refused at once.
pub(super) fn create_partial(
    output: &Path,
    partial: &Path,
) -> anyhow::Result<engine::output::OutputFile> {
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
pub(super) fn finalize(partial: &Path, output: &Path) -> anyhow::Result<()> {
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
