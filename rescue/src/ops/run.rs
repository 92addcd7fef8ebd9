//! The one entry point: run a [`Request`], fill its [`Outcome`], and leave the records
//! [`RunOptions`] ask for (the log and the result file beside the image).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::detect::DetectOptions;
use crate::engine::progress::Progress;
use crate::store::sanitize;
use crate::units::date_stamp;

use super::place::Placed;
use super::{describe, detect_one, Control, DiskId, Outcome, Request, RunOptions};

/// Where the records of a run without an image (a clone, growing the stick) go.
const LOG_DIR: &str = "/run/rescue/logs";

/// Run `req`; never panics and never returns an error: the outcome says what happened (`ok`, `error`).
pub fn run(req: &Request, how: &RunOptions, opts: &DetectOptions, ctl: Control) -> Outcome {
    let mut out = Outcome::of(req);
    let started = Instant::now();
    // The image as a local path (a share is mounted for it, and stays mounted until the records are
    // written beside the image).
    let write = matches!(req, Request::Capture(_));
    let placed = req
        .image()
        .map(|l| {
            if write && how.create_folder {
                super::repo::create_missing(l, &how.net)?;
            }
            super::place::place(l, write, &how.net)
        })
        .transpose();
    let (result, placed) = match placed {
        Ok(placed) => {
            if let Some(p) = &placed {
                out.notes.extend(p.note());
            }
            if let Some(base) = placed.as_ref().and_then(Placed::record_base) {
                out.record_base = Some(base);
            }
            (
                execute(req, placed.as_ref(), how, opts, ctl, &mut out),
                placed,
            )
        }
        Err(e) => (Err(e), None),
    };
    out.seconds = started.elapsed().as_secs_f64();
    out.peak_rss_bytes = super::peak_rss_bytes();
    match result {
        Ok(()) => out.ok = out.problems.is_empty(),
        Err(e) => {
            out.error = Some(match (&placed, req.image()) {
                (Some(p), Some(loc)) => p.describe_error(loc, &e, write),
                _ => describe(&e),
            });
            // Name the disks even when the operation stopped before detecting them itself.
            let (source, target) = req.disks();
            let id = |p: Option<&Path>| p.and_then(|p| detect_one(p, opts).ok());
            if out.source.is_none() {
                out.source = id(source).as_ref().map(DiskId::from);
            }
            if out.target.is_none() {
                out.target = id(target).as_ref().map(DiskId::from);
            }
        }
    }
    record(&mut out, how);
    drop(placed);
    out
}

fn execute(
    req: &Request,
    placed: Option<&Placed>,
    how: &RunOptions,
    opts: &DetectOptions,
    ctl: Control,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let nowhere = Placed::local(Path::new(""));
    let placed = placed.unwrap_or(&nowhere);
    let image = placed.path.as_path();
    match req {
        Request::Capture(s) => {
            if how.create_folder && image.as_os_str() != "-" && placed.local_path().is_some() {
                if let Some(dir) = image.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating the folder {}", dir.display()))?;
                }
            }
            let mut snapshot = None;
            let (disk, r) =
                match (placed.sftp_new(), placed.repo_new()) {
                    (Some((url, sftp)), _) => {
                        let (disk, r, notes) =
                            super::capture::capture_sftp(s, url, sftp, opts, ctl)?;
                        out.notes.extend(notes);
                        (disk, r)
                    }
                    (None, Some((repo, name))) => {
                        let c = super::repo::capture_repo(s, repo, name, opts, ctl)?;
                        out.notes.push(format!(
                        "snapshot {}::{}: {} new chunks ({}) stored, {} already in the repository",
                        s.output.to_string().rsplit_once("::").map_or("", |(r, _)| r),
                        c.snapshot.label(),
                        c.stats.new_chunks,
                        crate::units::human_size(c.stats.new_bytes),
                        c.stats.reused_chunks
                    ));
                        out.snapshot = Some(c.snapshot.label());
                        out.new_bytes = Some(c.stats.new_bytes);
                        snapshot = Some((repo, c.snapshot));
                        (c.disk, c.report)
                    }
                    (None, None) => super::capture::capture(s, image, opts, ctl)?,
                };
            out.source = Some(DiskId::from(&disk));
            out.root_hash = Some(r.root_hash.clone());
            out.bytes = r.used_bytes;
            out.image_bytes = Some(r.image_bytes);
            out.stored_bytes = Some(r.stored_bytes);
            out.repeated_bytes = Some(r.repeated_bytes);
            out.zero_bytes = Some(r.zero_bytes);
            out.set_unreadable(&r.unreadable);
            out.notes.extend(r.notes);
            if s.verify && image.as_os_str() != "-" {
                let made;
                let placed = match snapshot {
                    Some((repo, entry)) => {
                        let label = format!("{}", s.output);
                        made = Placed::snapshot(
                            crate::repo::SnapshotImage::open(repo, &entry)?,
                            entry.path.clone(),
                            label,
                            None,
                            None,
                        );
                        &made
                    }
                    None => placed,
                };
                let v = super::verify::verify(placed, None, None)?;
                if !v.problems.is_empty() {
                    bail!(
                        "the new image {} does not verify: {}",
                        s.output,
                        v.problems.join("; ")
                    );
                }
                out.verified = true;
            }
        }
        // A virtual machine's disk onto a disk (V2P): its disk copied as a clone copies one.
        Request::Restore(s) if placed.virtual_format().is_some() => match s.partition {
            Some(n) => {
                let (source, target, r) =
                    super::restore::clone_partition(&placed.path, n, s, opts, ctl)?;
                record_copy(out, &source, &target, r);
            }
            None if s.to_partition.is_some() => bail!(
                "name the partition of the virtual disk {} to restore onto partition {} (--partition N)",
                placed.path.display(),
                s.to_partition.unwrap_or_default()
            ),
            None => {
                let c = super::CloneSpec {
                    source: placed.path.clone(),
                    target: s.target.clone(),
                    raw: false,
                    confirmed: s.confirmed,
                    verify: s.verify,
                };
                clone(&c, opts, ctl, out)?;
            }
        },
        Request::Restore(s) => {
            let r = if placed.clonezilla() {
                super::clonezilla::restore(s, placed, opts, ctl)?
            } else {
                super::restore::restore(s, placed, opts, ctl)?
            };
            out.target = Some(DiskId::from(&r.target));
            out.root_hash = Some(r.root_hash).filter(|h| !h.is_empty());
            out.bytes = r.report.bytes_written;
            out.zero_bytes = Some(r.report.zero_bytes);
            out.discarded_bytes = Some(r.report.discarded_bytes);
            out.verified = r.report.verified;
            out.set_unreadable(&r.report.unreadable);
            out.notes.extend(r.report.notes);
        }
        Request::Clone(s) => clone(s, opts, ctl, out)?,
        Request::Verify(v) => {
            if let Some(dev) = &v.against {
                out.target = detect_one(dev, opts).ok().as_ref().map(DiskId::from);
            }
            let o = match placed.virtual_format() {
                Some(_) => {
                    super::verify::verify_virtual(&placed.path, v.against.as_deref(), ctl.progress)?
                }
                None if placed.clonezilla() => {
                    super::clonezilla::verify(placed, v.against.as_deref(), ctl.progress)?
                }
                None => super::verify::verify(placed, v.against.as_deref(), ctl.progress)?,
            };
            out.root_hash = Some(o.root_hash).filter(|h| !h.is_empty());
            out.bytes = o.image_bytes;
            out.unreadable_bytes = Some(o.unreadable_bytes);
            out.notes.extend(o.notes);
            if !o.problems.is_empty() {
                out.error = Some(format!("{}: {}", v.image, o.problems.join("; ")));
                out.problems = o.problems;
            } else {
                out.verified = true;
            }
        }
        Request::CopyFiles(s) => {
            out.image = Some(s.image.to_string());
            let spec = super::FilesSpec {
                image: s.image.clone(),
                partition: s.partition,
            };
            let got = super::files_get(&spec, &s.paths, &s.out_dir, &how.net)?;
            out.bytes = got.summary.bytes;
            out.notes.push(format!(
                "{} files, {} folders and {} links from {} ({}) into {}",
                got.summary.files,
                got.summary.dirs,
                got.summary.symlinks,
                got.what,
                got.fs,
                got.out_dir.display()
            ));
            out.notes.extend(got.notes);
            out.problems = got
                .summary
                .problems
                .iter()
                .map(|(path, why)| format!("{path} was not copied: {why}"))
                .collect();
            if !out.problems.is_empty() {
                out.error = Some(format!(
                    "{} of the entries asked for could not be copied (the rest was)",
                    out.problems.len()
                ));
            }
        }
        Request::Grow(plan) => {
            let started = Instant::now();
            let mut n = 0;
            let mut step = |what: &'static str| {
                n += 1;
                if let Some(tx) = &ctl.progress {
                    let _ = tx.send(Progress {
                        phase: "grow",
                        bytes_done: n,
                        bytes_total: 5,
                        bytes_stored: 0,
                        rate: 0.0,
                        eta_seconds: None,
                        elapsed_seconds: started.elapsed().as_secs_f64(),
                        current: what.to_string(),
                        current_done: 0,
                        current_total: 0,
                    });
                }
            };
            let g = super::grow::grow_stick(plan, opts, &mut step)?;
            out.target = Some(DiskId::from(&g.disk));
            out.bytes = g.report.new_size;
            out.grow = Some(g.report);
        }
    }
    Ok(())
}

/// Copy a disk onto another ([`super::restore::clone`]) and say so in `out`.
fn clone(
    spec: &super::CloneSpec,
    opts: &DetectOptions,
    ctl: Control,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let (source, target, r) = super::restore::clone(spec, opts, ctl)?;
    record_copy(out, &source, &target, r);
    Ok(())
}

/// What a copy from disk to disk did, in `out`.
fn record_copy(
    out: &mut Outcome,
    source: &crate::detect::Disk,
    target: &crate::detect::Disk,
    r: crate::engine::clone::CloneReport,
) {
    out.source = Some(DiskId::from(source));
    out.target = Some(DiskId::from(target));
    out.bytes = r.bytes_copied;
    out.verified = r.verified;
    out.set_unreadable(&r.unreadable);
    out.notes = r.notes;
}

/// Write what `how` asks for: the log (appended; `IMAGE.log`) and the result file
/// (`IMAGE.<action>-<disk>-<YYYY-MM-DD-HHMMSS>.json`, never overwritten) beside the image, or under
/// /run/rescue/logs when there is no image or its folder does not exist. `out.log` and
/// `out.result_file` say what could be written. Front ends call this themselves only for a run that
/// failed before it could become a request (a job whose disk rules match no disk).
pub fn record(out: &mut Outcome, how: &RunOptions) {
    if !how.log && !how.result_file {
        return;
    }
    let disk = out
        .target
        .as_ref()
        .or(out.source.as_ref())
        .map(|d| {
            d.serial
                .as_deref()
                .map(sanitize)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| sanitize(&d.path))
        })
        .unwrap_or_else(|| "none".into());
    // `base.log` is the log; `IMAGE.<action>-<disk>-<time>.json` (or `ACTION-<disk>-<time>.json` in the
    // logs folder) the result.
    let image = out
        .record_base
        .clone()
        .or_else(|| out.image.as_ref().map(PathBuf::from));
    let (base, result_prefix) = match image {
        Some(i) if i.as_os_str() != "-" && i.parent().is_some_and(Path::is_dir) => {
            (i, format!(".{}", out.action))
        }
        _ => {
            let dir = Path::new(LOG_DIR);
            let _ = std::fs::create_dir_all(dir);
            (dir.join(&out.action), String::new())
        }
    };
    if how.log {
        out.log = append_log(&base, &out.summary())
            .ok()
            .map(|p| p.display().to_string());
    }
    if how.result_file {
        // One result per run: several machines restore the same image, and a rerun must not overwrite
        // the record of the failure before it.
        let stamp = format!(
            "{}{:02}",
            date_stamp(out.started_unix),
            out.started_unix % 60
        );
        let name = |n: u32| {
            let mut r = base.as_os_str().to_owned();
            r.push(format!("{result_prefix}-{disk}-{stamp}"));
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
        let sent = how
            .results
            .as_ref()
            .is_some_and(|folder| send_result(out, folder, &result, &how.net));
        if !sent {
            out.result_file = Some(result.display().to_string());
        }
        let written = serde_json::to_vec_pretty(&*out)
            .ok()
            .and_then(|json| std::fs::write(&result, json).ok())
            .and_then(|_| std::fs::File::open(&result).ok())
            .map(|f| f.sync_all().is_ok())
            .unwrap_or(false);
        if !written && !sent {
            out.result_file = None;
        }
    }
}

/// `PUT` the outcome into the web folder `folder`, named as the local result file `local`; says where it
/// went (`result_file`) and returns true, or says in a note why it could not.
fn send_result(
    out: &mut Outcome,
    folder: &crate::url::Url,
    local: &Path,
    net: &super::NetOptions,
) -> bool {
    let name = local
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "result.json".into());
    let mut url = folder.clone();
    if !url.path.ends_with('/') {
        url.path.push('/');
    }
    url.path.push_str(&name);
    out.result_file = Some(url.to_string());
    let sent = serde_json::to_vec_pretty(&*out)
        .map_err(anyhow::Error::from)
        .and_then(|json| super::place::put(&url, net, &json));
    match sent {
        Ok(()) => true,
        Err(e) => {
            out.result_file = None;
            out.notes.push(format!(
                "the result could not be sent to {url}: {}",
                describe(&e)
            ));
            false
        }
    }
}

/// Append `lines` to `BASE.log`; returns the log's path.
fn append_log(base: &Path, lines: &[String]) -> std::io::Result<PathBuf> {
    let mut path = base.as_os_str().to_owned();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The log is appended and each run gets its own result file beside the image; without records
    /// asked for, nothing is written.
    #[test]
    fn records_go_beside_the_image_and_never_replace_another() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.rimg").display().to_string();
        let failed = || {
            let mut out = Outcome::new("verify", Some(image.clone()));
            out.started_unix = 1_700_000_000;
            out.error = Some("it broke".into());
            out
        };
        let mut quiet = failed();
        record(&mut quiet, &RunOptions::default());
        assert_eq!((quiet.log, quiet.result_file), (None, None));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let how = RunOptions {
            log: true,
            result_file: true,
            ..Default::default()
        };
        let (mut one, mut two) = (failed(), failed());
        record(&mut one, &how);
        record(&mut two, &how);
        let first = one.result_file.unwrap();
        let second = two.result_file.unwrap();
        assert!(
            first.ends_with("a.rimg.verify-none-2023-11-14-221320.json"),
            "{first}"
        );
        assert!(second.ends_with("-2.json"), "{second}");
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
        assert_eq!(saved["ok"], false);
        assert_eq!(saved["error"], "it broke");
        let log = std::fs::read_to_string(one.log.unwrap()).unwrap();
        assert_eq!(log.matches("verify: FAILED").count(), 2, "{log}");
        assert_eq!(log.matches("error: it broke").count(), 2, "{log}");
    }
}
