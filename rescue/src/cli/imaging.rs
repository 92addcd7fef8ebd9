//! `capture`, `restore`, `verify`, `inspect` and `clone`: argument handling, progress display and the
//! final report. The work itself is `plan` + `engine`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};

use serde_json::json;

use crate::engine::{progress::Progress, restore};
use crate::image::{ExtentKind, Index};
use crate::ops::{self, open_image};
use crate::units::human_size;

pub use crate::ops::default_threads;

/// Show progress: a one-line bar on a terminal, JSON lines with `--json`, nothing otherwise.
pub fn progress_printer(
    json_lines: bool,
) -> (
    Option<Sender<Progress>>,
    Option<std::thread::JoinHandle<()>>,
) {
    let tty = std::io::stderr().is_terminal();
    if !json_lines && !tty {
        return (None, None);
    }
    let (tx, rx) = channel::<Progress>();
    let handle = std::thread::spawn(move || {
        for p in rx {
            let mut err = std::io::stderr().lock();
            if json_lines {
                let _ = serde_json::to_writer(&mut err, &p);
                let _ = writeln!(err);
            } else {
                let pct = if p.bytes_total > 0 {
                    p.bytes_done as f64 * 100.0 / p.bytes_total as f64
                } else {
                    100.0
                };
                let eta = p
                    .eta_seconds
                    .map(|s| format!("{s:.0} s left"))
                    .unwrap_or_default();
                let _ = write!(
                    err,
                    "\r{} {:5.1}%  {} of {}  {}/s  {}  {:<40}",
                    p.phase,
                    pct,
                    human_size(p.bytes_done),
                    human_size(p.bytes_total),
                    human_size(p.rate as u64),
                    eta,
                    p.current
                );
            }
        }
        if !json_lines {
            let _ = writeln!(std::io::stderr());
        }
    });
    (Some(tx), Some(handle))
}

pub fn finish_progress(handle: Option<std::thread::JoinHandle<()>>) {
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// What a running operation shows on this terminal: progress (see [`progress_printer`]) and warnings,
/// printed as they come (a JSON line `{"warning": …}` with `--json`).
pub struct Printers {
    progress: Option<std::thread::JoinHandle<()>>,
    notices: std::thread::JoinHandle<()>,
}

/// An operation's control with this terminal's printers attached; `cancel` from Ctrl-C when `signals`.
pub fn control(json_lines: bool, signals: bool) -> (ops::Control, Printers) {
    let (progress, progress_handle) = progress_printer(json_lines);
    let (ntx, nrx) = channel::<String>();
    let notices = std::thread::spawn(move || {
        for n in nrx {
            if json_lines {
                eprintln!("{}", json!({ "warning": n }));
            } else {
                eprintln!("\rwarning: {n}");
            }
        }
    });
    let ctl = ops::Control {
        progress,
        notices: Some(ntx),
        cancel: if signals {
            super::signals::cancel_on_signals()
        } else {
            Default::default()
        },
    };
    (
        ctl,
        Printers {
            progress: progress_handle,
            notices,
        },
    )
}

impl Printers {
    /// Waits until everything sent has been printed (the operation has dropped its control).
    pub fn finish(self) {
        finish_progress(self.progress);
        let _ = self.notices.join();
    }
}

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// The disk to capture: a block device, a disk image file, or a selector such as serial=WD123
    /// (rules: docs/SELECTORS.md). It is only read.
    pub source: PathBuf,
    /// The image file to write (`-` for stdout). Written as IMAGE.partial until complete.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Capture only this partition (repeatable); the partition table is still recorded.
    #[arg(long = "partition")]
    pub partitions: Vec<u32>,
    /// zstd compression level (the default, 2, with block deduplication makes images smaller than
    /// Clonezilla's partclone | zstd -3, faster; higher levels compress more, more slowly).
    #[arg(long, default_value_t = crate::image::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Compression threads (default: every core; at most 8 are used).
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
    /// Read every sector (zero-skipped) instead of only what filesystems use, unallocated space too.
    #[arg(long)]
    pub raw: bool,
    /// Also read unallocated space outside the partitions: gaps over 1 MiB are otherwise recorded as
    /// unallocated, not read (the gap before the first partition and EBR areas are always read).
    #[arg(long)]
    pub keep_unallocated: bool,
    /// Do not look for 4 KiB blocks stored already (block deduplication): the image is then readable by
    /// format 1.0 readers too, and usually larger.
    #[arg(long)]
    pub no_dedup: bool,
    /// Progress as JSON lines on stderr and the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn capture(a: CaptureArgs) -> anyhow::Result<i32> {
    let to_stdout = a.output.as_os_str() == "-";
    let spec = ops::CaptureSpec {
        source: a.source.clone(),
        output: a.output.clone(),
        partitions: a.partitions.clone(),
        raw: a.raw,
        keep_unallocated: a.keep_unallocated,
        level: a.level,
        threads: a.threads,
        dedup: !a.no_dedup,
    };
    let (ctl, printers) = control(a.json, true);
    let result = ops::capture(&spec, &super::detect_options(), ctl);
    printers.finish();
    let (disk, report) = result?;
    let summary = json!({
        "image": if to_stdout { "-".to_string() } else { a.output.display().to_string() },
        "source": disk.path,
        "root_hash": report.root_hash,
        "image_bytes": report.image_bytes,
        "used_bytes": report.used_bytes,
        "stored_bytes": report.stored_bytes,
        "repeated_bytes": report.repeated_bytes,
        "zero_bytes": report.zero_bytes,
        "seconds": report.seconds,
        "unreadable": report.unreadable.iter().map(|(s, r)| json!({"stream": s, "start": r.start, "end": r.end})).collect::<Vec<_>>(),
        "notes": report.notes,
        "peak_rss_bytes": ops::peak_rss_bytes(),
    });
    if a.json {
        if to_stdout {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    } else {
        eprintln!(
            "captured {} of {} used in {:.1} s into {} bytes ({}); root hash {}",
            disk.path,
            human_size(report.used_bytes),
            report.seconds,
            report.image_bytes,
            human_size(report.image_bytes),
            report.root_hash
        );
        if report.repeated_bytes > 0 {
            eprintln!(
                "{} found more than once was stored once{}",
                human_size(report.repeated_bytes),
                if a.no_dedup {
                    " (whole identical chunks; block deduplication was off)"
                } else {
                    ""
                }
            );
        }
        for (s, r) in &report.unreadable {
            eprintln!(
                "warning: unreadable on the source ({s}): bytes {}..{}; saved as a hole",
                r.start, r.end
            );
        }
        for n in &report.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The image file to restore.
    pub image: PathBuf,
    /// The disk (or partition, or file) to write; or a selector such as serial=WD123 (docs/SELECTORS.md).
    pub target: PathBuf,
    /// Restore only this partition of the image.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Into this partition of the target (with --partition).
    #[arg(long, requires = "partition")]
    pub to_partition: Option<u32>,
    /// Confirm that everything on the target may be destroyed.
    #[arg(long)]
    pub yes: bool,
    /// Skip checking every chunk of the image before the first write (for an image verified already; a
    /// damaged chunk then stops the restore part-way, leaving the target without a partition table).
    #[arg(long)]
    pub no_precheck: bool,
    /// Skip reading the target back to verify it.
    #[arg(long)]
    pub no_verify: bool,
    /// Write zeros where the filesystem had free space (default: leave the target's old bytes).
    #[arg(long, conflicts_with = "discard_unused")]
    pub zero_unused: bool,
    /// Discard (TRIM) the free space instead.
    #[arg(long)]
    pub discard_unused: bool,
    /// Decompression threads (default: every core); two more workers keep the disk busy meanwhile.
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
    /// Progress as JSON lines on stderr and the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn restore(a: RestoreArgs) -> anyhow::Result<i32> {
    let spec = ops::RestoreSpec {
        image: a.image.clone(),
        target: a.target.clone(),
        partition: a.partition,
        to_partition: a.to_partition,
        confirmed: a.yes,
        precheck: !a.no_precheck,
        verify: !a.no_verify,
        unused: if a.zero_unused {
            restore::UnusedPolicy::Zero
        } else if a.discard_unused {
            restore::UnusedPolicy::Discard
        } else {
            restore::UnusedPolicy::Leave
        },
        threads: a.threads,
    };
    let (ctl, printers) = control(a.json, true);
    let report = ops::restore(&spec, &super::detect_options(), ctl);
    printers.finish();
    let report = report?;
    if a.json {
        println!(
            "{}",
            json!({
                "target": a.target.display().to_string(),
                "bytes_written": report.bytes_written,
                "zero_bytes": report.zero_bytes,
                "discarded_bytes": report.discarded_bytes,
                "peak_rss_bytes": ops::peak_rss_bytes(),
                "verified": report.verified,
                "seconds": report.seconds,
                "unreadable": report.unreadable.iter().map(|(s, r)| json!({"stream": s, "start": r.start, "end": r.end})).collect::<Vec<_>>(),
                "notes": report.notes,
            })
        );
    } else {
        let zeros = match (report.zero_bytes, report.discarded_bytes) {
            (0, 0) => String::new(),
            (z, 0) => format!(" ({} of it zeros)", human_size(z)),
            (0, d) => format!(", {} of free space discarded", human_size(d)),
            (z, d) => format!(
                " ({} of it zeros), {} of free space discarded",
                human_size(z),
                human_size(d)
            ),
        };
        eprintln!(
            "restored {} onto {}: {} written{zeros}{}",
            a.image.display(),
            a.target.display(),
            human_size(report.bytes_written),
            if report.verified {
                ", read back and verified"
            } else {
                " (not verified: --no-verify)"
            }
        );
        for (s, r) in &report.unreadable {
            eprintln!(
                "warning: {s}: bytes {}..{} were unreadable when captured; written as zeros",
                r.start, r.end
            );
        }
        for n in &report.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(0)
}

pub fn verify(image_path: &Path, against: Option<&Path>, json_out: bool) -> anyhow::Result<i32> {
    let (tx, printer) = progress_printer(json_out);
    let outcome = ops::verify(image_path, against, tx);
    finish_progress(printer);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            if json_out {
                println!(
                    "{}",
                    json!({"image": image_path.display().to_string(), "ok": false, "problems": [ops::describe(&e)]})
                );
            }
            return Err(e);
        }
    };
    let problems = outcome.problems;
    if json_out {
        println!(
            "{}",
            json!({"image": image_path.display().to_string(), "ok": problems.is_empty(), "root_hash": outcome.root_hash,
                   "unreadable_bytes": outcome.unreadable_bytes, "problems": problems, "notes": outcome.notes})
        );
        return Ok(if problems.is_empty() { 0 } else { 2 });
    }
    for n in &outcome.notes {
        eprintln!("note: {n}");
    }
    if problems.is_empty() {
        eprintln!(
            "{}: OK, every chunk and the root hash {} check out",
            image_path.display(),
            outcome.root_hash
        );
        if outcome.unreadable_bytes > 0 {
            eprintln!(
                "{}: {} bytes of the source could not be read when it was captured; a restore writes zeros \
                 there (`rescue inspect` lists the ranges)",
                image_path.display(),
                outcome.unreadable_bytes
            );
        }
    } else {
        for p in &problems {
            eprintln!("{}: {p}", image_path.display());
        }
    }
    Ok(if problems.is_empty() { 0 } else { 2 })
}

/// Disk ranges of the gap streams that were not read at all (unallocated space, FORMAT.md §7.3).
fn unallocated_ranges(index: &Index) -> Vec<std::ops::Range<u64>> {
    index
        .streams
        .iter()
        .filter(|s| {
            s.info.kind == crate::image::StreamKind::Gap
                && s.info.length > 0
                && s.extents.iter().all(|e| e.kind == ExtentKind::Unused)
        })
        .map(|s| s.info.disk_offset..s.info.disk_offset + s.info.length)
        .collect()
}

fn unreadable_ranges(index: &Index) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for s in &index.streams {
        for e in s
            .extents
            .iter()
            .filter(|e| e.kind == ExtentKind::Unreadable)
        {
            let start = s.info.disk_offset + e.offset;
            out.push(json!({"stream": s.info.label, "start": start, "end": start + e.len}));
        }
    }
    out
}

pub fn inspect(image_path: &Path, json_out: bool) -> anyhow::Result<i32> {
    let image = open_image(image_path)?;
    let index = image.index();
    let file_len = std::fs::metadata(image_path).map(|m| m.len()).unwrap_or(0);
    let used: u64 = index.streams.iter().map(|s| s.used_bytes).sum();
    let d = &index.disk;
    let storage = index.stream_storage();
    let value = json!({
        "image": image_path.display().to_string(),
        "image_bytes": file_len,
        "root_hash": image.root_hash().to_string(),
        "created_unix": index.creation.created_unix,
        "host": index.creation.host_name,
        "tool": format!("{} {}", index.creation.tool_name, index.creation.tool_version),
        "source": {"path": d.path, "model": d.model, "serial": d.serial, "transport": d.transport, "size_bytes": d.size,
                   "logical_sector_size": d.logical_sector_size, "physical_sector_size": d.physical_sector_size,
                   "table": format!("{:?}", d.table_kind).to_lowercase(), "table_id": d.table_id},
        "partitions": d.partitions.iter().map(|p| json!({"number": p.number, "start_bytes": p.start, "size_bytes": p.size,
            "type": p.type_id, "name": p.name, "fs": p.fs_kind, "fs_label": p.fs_label, "fs_uuid": p.fs_uuid})).collect::<Vec<_>>(),
        "streams": index.streams.iter().zip(&storage).map(|(s, st)| json!({"label": s.info.label,
            "disk_offset": s.info.disk_offset, "length": s.info.length, "used_bytes": s.used_bytes,
            "stored_bytes": st.stored_bytes, "shared_bytes": st.shared_bytes,
            "capture": format!("{:?}", s.info.capture), "reason": s.info.capture_reason})).collect::<Vec<_>>(),
        "used_bytes": used,
        "repeated_bytes": index.repeated_bytes(),
        "format": format!("{}.{}", image.header().major, image.header().minor),
        "required_features": image.header().required_features,
        "ratio": if file_len > 0 { used as f64 / file_len as f64 } else { 0.0 },
        "unreadable": unreadable_ranges(index),
        "unallocated": unallocated_ranges(index).iter().map(|r| json!({"start": r.start, "end": r.end})).collect::<Vec<_>>(),
        "notes": index.creation.notes,
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!(
        "image       {} ({})",
        image_path.display(),
        human_size(file_len)
    );
    println!("root hash   {}", image.root_hash());
    println!(
        "created     {}{} by {} {}",
        crate::store::date_time(u64::try_from(index.creation.created_unix).unwrap_or(0)),
        crate::store::on_host(&index.creation.host_name),
        index.creation.tool_name,
        index.creation.tool_version
    );
    println!(
        "source      {} {} {} ({}, {}, {}-byte sectors, {})",
        d.path,
        d.model,
        d.serial,
        human_size(d.size),
        d.transport,
        d.logical_sector_size,
        d.table_kind.describe()
    );
    println!(
        "used        {} stored in {} (ratio {:.2})",
        human_size(used),
        human_size(file_len),
        if file_len > 0 {
            used as f64 / file_len as f64
        } else {
            0.0
        }
    );
    println!(
        "repeated    {} found more than once, stored once (format {}.{})",
        human_size(index.repeated_bytes()),
        image.header().major,
        image.header().minor
    );
    println!("partitions of the source (* captured):");
    for p in &d.partitions {
        let captured = index.streams.iter().any(|s| {
            matches!(s.info.kind, crate::image::StreamKind::Partition { number } if number == p.number)
        });
        println!(
            "  {} {:<3} at {:>12}  {:>10}  {:<8} {:<12} {}",
            if captured { "*" } else { " " },
            p.number,
            p.start,
            human_size(p.size),
            if p.fs_kind.is_empty() {
                "-"
            } else {
                &p.fs_kind
            },
            p.fs_label,
            if p.name.is_empty() {
                &p.type_id
            } else {
                &p.name
            },
        );
    }
    println!(
        "streams (stored: bytes of the image file written for it; shared: its data stored once for"
    );
    println!("an earlier stream):");
    for (s, st) in index.streams.iter().zip(&storage) {
        let shared = if st.shared_bytes > 0 {
            format!(", {} shared", human_size(st.shared_bytes))
        } else {
            String::new()
        };
        println!(
            "  {:<28} at {:>12}  {:>10} used of {:>10}, {:>10} stored{shared}  {}",
            s.info.label,
            s.info.disk_offset,
            human_size(s.used_bytes),
            human_size(s.info.length),
            human_size(st.stored_bytes),
            s.info.capture_reason
        );
    }
    for u in unreadable_ranges(index) {
        println!("unreadable  {u}");
    }
    for r in unallocated_ranges(index) {
        println!(
            "unallocated bytes {}..{} ({}): not captured; a restore leaves them as they are",
            r.start,
            r.end,
            human_size(r.end - r.start)
        );
    }
    for n in &index.creation.notes {
        println!("note        {n}");
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    /// The disk to copy (a path or a selector, docs/SELECTORS.md). It is only read.
    pub source: PathBuf,
    /// The disk to overwrite (a path or a selector).
    pub target: PathBuf,
    /// Confirm that everything on the target may be destroyed.
    #[arg(long)]
    pub yes: bool,
    /// Copy every sector instead of only what filesystems use.
    #[arg(long)]
    pub raw: bool,
    /// Skip reading the target back to verify it.
    #[arg(long)]
    pub no_verify: bool,
    /// Progress as JSON lines on stderr and the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn clone(a: CloneArgs) -> anyhow::Result<i32> {
    let spec = ops::CloneSpec {
        source: a.source.clone(),
        target: a.target.clone(),
        raw: a.raw,
        confirmed: a.yes,
        verify: !a.no_verify,
    };
    let (ctl, printers) = control(a.json, true);
    let report = ops::clone(&spec, &super::detect_options(), ctl);
    printers.finish();
    let report = report?;
    if a.json {
        println!(
            "{}",
            json!({"source": a.source.display().to_string(), "target": a.target.display().to_string(),
                   "bytes_copied": report.bytes_copied, "verified": report.verified, "seconds": report.seconds,
                   "unreadable": report.unreadable.iter().map(|(s, r)| json!({"stream": s, "start": r.start, "end": r.end})).collect::<Vec<_>>(),
                   "notes": report.notes})
        );
    } else {
        eprintln!(
            "cloned {} onto {}: {} copied in {:.1} s{}",
            a.source.display(),
            a.target.display(),
            human_size(report.bytes_copied),
            report.seconds,
            if report.verified {
                ", read back and verified"
            } else {
                ""
            }
        );
        for (s, r) in &report.unreadable {
            eprintln!(
                "warning: unreadable on the source ({s}): bytes {}..{}; written as zeros",
                r.start, r.end
            );
        }
        for n in &report.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(0)
}
