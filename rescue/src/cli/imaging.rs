//! `capture`, `restore`, `verify`, `inspect` and `clone`: arguments into an `ops::Request`, progress on
//! the terminal, and the outcome as text or `--json`. The work itself is `ops::run`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::ops::{self, Outcome, Request, RunOptions};

use super::progress::{control, finish_progress, progress_printer};
use crate::units::human_size;

pub use crate::ops::default_threads;

#[derive(clap::Args, Debug)]
pub struct CaptureArgs {
    /// The disk to capture: a block device, a disk image file, or a selector such as serial=WD123
    /// (rules: docs/SELECTORS.md). It is only read.
    pub source: PathBuf,
    /// The image file to write (`-` for stdout). Written as IMAGE.partial until complete.
    #[arg(
        short = 'o',
        long = "output",
        required_unless_present = "repo",
        conflicts_with = "repo"
    )]
    pub output: Option<PathBuf>,
    /// Capture into this repository (made with `rescue repo init`) as a new snapshot, storing only the
    /// chunks it does not have (with --name).
    #[arg(long, requires = "name", value_name = "REPO")]
    pub repo: Option<PathBuf>,
    /// The snapshot's name in the repository (it is kept as NAME@<UTC time>).
    #[arg(long, requires = "repo")]
    pub name: Option<String>,
    /// Capture only this partition (repeatable); the partition table is still recorded.
    #[arg(long = "partition")]
    pub partitions: Vec<u32>,
    /// zstd compression level (the default, 2, with block deduplication makes images smaller than
    /// Clonezilla's partclone | zstd -3, faster; higher levels compress more, more slowly).
    #[arg(long, default_value_t = ops::DEFAULT_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
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
    #[command(flatten)]
    pub net: NetArgs,
}

/// How a network location is reached: a password from elsewhere than the URL, a CA for HTTPS.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct NetArgs {
    /// For a network location: a file with `username=` and `password=` lines (as mount.cifs reads);
    /// or set RESCUE_PASSWORD; asked on the terminal when the URL names a user and nothing gives one.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// For https:// locations: trust only the CA certificates in this PEM file (instead of the Mozilla
    /// roots).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// For sftp:// locations: log in with this private key (default: ~/.ssh/id_ed25519, id_ecdsa,
    /// id_rsa). The server's host key must be pinned: ?fingerprint=SHA256:… in the URL, or known_hosts.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// For an encrypted repository: its passphrase, the first line of FILE; or set RESCUE_PASSPHRASE;
    /// asked on the terminal otherwise.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl NetArgs {
    /// The options for reaching `loc`; a missing password is asked for on the terminal, if there is one.
    pub fn options(&self, loc: &ops::Location) -> anyhow::Result<ops::NetOptions> {
        let mut net = ops::NetOptions {
            ca_file: self.ca_file.clone(),
            identity: self.identity.clone(),
            ..Default::default()
        }
        .with_credentials(self.credentials.as_deref())?
        .with_passphrase(self.passphrase_file.as_deref())?;
        if net.needs_password(loc) {
            net.password = super::net::ask_password(&loc.to_string())?;
        }
        if net.passphrase.is_none() {
            if let Some(root) = encrypted_repo(loc) {
                net.passphrase = super::net::ask_secret(&format!(
                    "Passphrase for the repository {}: ",
                    root.display()
                ))?;
            }
        }
        Ok(net)
    }
}

/// The folder of the encrypted repository `loc` is in or names, when it is on this machine.
fn encrypted_repo(loc: &ops::Location) -> Option<PathBuf> {
    let root = match loc {
        ops::Location::Snapshot(s) => s.repo.local()?.to_path_buf(),
        ops::Location::Local(p) => p.clone(),
        ops::Location::Remote(_) => return None,
    };
    crate::repo::Repo::open(&root)
        .ok()
        .filter(|r| r.encrypted())
        .map(|_| root)
}

/// Run `req` with this terminal's printers (Ctrl-C cancels); the outcome, or its error.
fn run(req: &Request, json_lines: bool, net: &NetArgs) -> anyhow::Result<Outcome> {
    let how = RunOptions {
        net: match req.image() {
            Some(loc) => net.options(loc)?,
            None => ops::NetOptions::default(),
        },
        // A typed path must exist; the CLI leaves no records besides the image.
        ..Default::default()
    };
    let (ctl, printers) = control(json_lines, true);
    let outcome = ops::run(req, &how, &super::detect_options(), ctl);
    printers.finish();
    match &outcome.error {
        Some(e) if outcome.problems.is_empty() => Err(anyhow::anyhow!("{e}")),
        _ => Ok(outcome),
    }
}

/// An image argument: a path, or a URL (`smb://`, `nfs://`, …).
fn location(arg: &Path) -> anyhow::Result<ops::Location> {
    Ok(ops::Location::parse(&arg.to_string_lossy())?)
}

/// Unreadable ranges as JSON objects.
fn unreadable_json(out: &Outcome) -> Vec<serde_json::Value> {
    out.unreadable
        .iter()
        .map(|(s, start, end)| json!({"stream": s, "start": start, "end": end}))
        .collect()
}

pub fn capture(a: CaptureArgs) -> anyhow::Result<i32> {
    let to_stdout = a.output.as_ref().is_some_and(|o| o.as_os_str() == "-");
    let output = match (&a.output, &a.repo, &a.name) {
        (Some(o), _, _) => location(o)?,
        (None, Some(repo), Some(name)) => {
            crate::repo::check_name(name).map_err(anyhow::Error::msg)?;
            ops::Location::Snapshot(crate::repo::SnapshotRef {
                repo: Box::new(location(repo)?),
                name: name.clone(),
                when: crate::repo::When::Latest,
                passphrase: None,
            })
        }
        _ => anyhow::bail!(
            "name the image with -o FILE, or a repository with --repo REPO --name NAME"
        ),
    };
    let req = Request::Capture(ops::CaptureSpec {
        source: a.source.clone(),
        output,
        partitions: a.partitions.clone(),
        raw: a.raw,
        keep_unallocated: a.keep_unallocated,
        level: a.level,
        threads: a.threads,
        dedup: !a.no_dedup,
        verify: false,
    });
    let out = run(&req, a.json, &a.net)?;
    let source = out
        .source
        .as_ref()
        .map(|d| d.path.clone())
        .unwrap_or_default();
    let image_bytes = out.image_bytes.unwrap_or(0);
    let repeated_bytes = out.repeated_bytes.unwrap_or(0);
    if a.json {
        let summary = json!({
            "image": if to_stdout { "-".to_string() } else { out.image.clone().unwrap_or_default() },
            "source": source,
            "root_hash": out.root_hash,
            "image_bytes": image_bytes,
            "used_bytes": out.bytes,
            "stored_bytes": out.stored_bytes,
            "repeated_bytes": repeated_bytes,
            "zero_bytes": out.zero_bytes,
            "seconds": out.seconds,
            "unreadable": unreadable_json(&out),
            "notes": out.notes,
            "peak_rss_bytes": out.peak_rss_bytes,
            "snapshot": out.snapshot,
            "new_bytes": out.new_bytes,
        });
        if to_stdout {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    } else {
        if let Some(snap) = &out.snapshot {
            eprintln!(
            "captured {} of {} used in {:.1} s as the snapshot {snap}: {} new in the repository ({} as \
             one image file); root hash {}",
            source,
            human_size(out.bytes),
            out.seconds,
            human_size(out.new_bytes.unwrap_or(0)),
            human_size(image_bytes),
            out.root_hash.as_deref().unwrap_or("-")
        );
        } else {
            eprintln!(
                "captured {} of {} used in {:.1} s into {} bytes ({}); root hash {}",
                source,
                human_size(out.bytes),
                out.seconds,
                image_bytes,
                human_size(image_bytes),
                out.root_hash.as_deref().unwrap_or("-")
            );
        }
        if repeated_bytes > 0 {
            eprintln!(
                "{} found more than once was stored once{}",
                human_size(repeated_bytes),
                if a.no_dedup {
                    " (whole identical chunks; block deduplication was off)"
                } else {
                    ""
                }
            );
        }
        for (s, start, end) in &out.unreadable {
            eprintln!(
                "warning: unreadable on the source ({s}): bytes {start}..{end}; saved as a hole"
            );
        }
        for n in &out.notes {
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
    #[command(flatten)]
    pub net: NetArgs,
}

pub fn restore(a: RestoreArgs) -> anyhow::Result<i32> {
    let req = Request::Restore(ops::RestoreSpec {
        image: location(&a.image)?,
        target: a.target.clone(),
        partition: a.partition,
        to_partition: a.to_partition,
        confirmed: a.yes,
        precheck: !a.no_precheck,
        verify: !a.no_verify,
        unused: if a.zero_unused {
            ops::UnusedPolicy::Zero
        } else if a.discard_unused {
            ops::UnusedPolicy::Discard
        } else {
            ops::UnusedPolicy::Leave
        },
        threads: a.threads,
    });
    let out = run(&req, a.json, &a.net)?;
    let zero_bytes = out.zero_bytes.unwrap_or(0);
    let discarded_bytes = out.discarded_bytes.unwrap_or(0);
    if a.json {
        println!(
            "{}",
            json!({
                "target": a.target.display().to_string(),
                "bytes_written": out.bytes,
                "zero_bytes": zero_bytes,
                "discarded_bytes": discarded_bytes,
                "peak_rss_bytes": out.peak_rss_bytes,
                "verified": out.verified,
                "seconds": out.seconds,
                "unreadable": unreadable_json(&out),
                "notes": out.notes,
            })
        );
    } else {
        let zeros = match (zero_bytes, discarded_bytes) {
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
            out.image.as_deref().unwrap_or("-"),
            a.target.display(),
            human_size(out.bytes),
            if out.verified {
                ", read back and verified"
            } else {
                " (not verified: --no-verify)"
            }
        );
        for (s, start, end) in &out.unreadable {
            eprintln!(
                "warning: {s}: bytes {start}..{end} were unreadable when captured; written as zeros"
            );
        }
        for n in &out.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(0)
}

pub fn verify(
    image_path: &Path,
    against: Option<&Path>,
    json_out: bool,
    net: &NetArgs,
) -> anyhow::Result<i32> {
    let image = location(image_path)?;
    // As the image is shown: without a password.
    let shown = image.to_string();
    let how = RunOptions {
        net: net.options(&image)?,
        ..Default::default()
    };
    let req = Request::Verify(ops::VerifySpec {
        image,
        against: against.map(Path::to_path_buf),
    });
    let (tx, printer) = progress_printer(json_out);
    let ctl = ops::Control {
        progress: tx,
        ..Default::default()
    };
    let out = ops::run(&req, &how, &super::detect_options(), ctl);
    finish_progress(printer);
    if let (Some(e), true) = (&out.error, out.problems.is_empty()) {
        if json_out {
            println!("{}", json!({"image": shown, "ok": false, "problems": [e]}));
        }
        anyhow::bail!("{e}");
    }
    let problems = out.problems;
    if json_out {
        println!(
            "{}",
            json!({"image": shown, "ok": problems.is_empty(), "root_hash": out.root_hash,
                   "unreadable_bytes": out.unreadable_bytes, "problems": problems, "notes": out.notes})
        );
        return Ok(if problems.is_empty() { 0 } else { 2 });
    }
    for n in &out.notes {
        eprintln!("note: {n}");
    }
    if problems.is_empty() {
        match out.root_hash.as_deref() {
            Some(hash) => eprintln!("{shown}: OK, every chunk and the root hash {hash} check out"),
            // An image of another program (Clonezilla's): its own checks, listed in the notes above.
            None => eprintln!("{shown}: OK, every stream and checksum it holds checks out"),
        }
        let unreadable = out.unreadable_bytes.unwrap_or(0);
        if unreadable > 0 {
            eprintln!(
                "{}: {} bytes of the source could not be read when it was captured; a restore writes zeros \
                 there (`rescue inspect` lists the ranges)",
                shown,
                unreadable
            );
        }
    } else {
        for p in &problems {
            eprintln!("{}: {p}", shown);
        }
    }
    Ok(if problems.is_empty() { 0 } else { 2 })
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
    let req = Request::Clone(ops::CloneSpec {
        source: a.source.clone(),
        target: a.target.clone(),
        raw: a.raw,
        confirmed: a.yes,
        verify: !a.no_verify,
    });
    let out = run(&req, a.json, &NetArgs::default())?;
    if a.json {
        println!(
            "{}",
            json!({"source": a.source.display().to_string(), "target": a.target.display().to_string(),
                   "bytes_copied": out.bytes, "verified": out.verified, "seconds": out.seconds,
                   "unreadable": unreadable_json(&out),
                   "notes": out.notes})
        );
    } else {
        eprintln!(
            "cloned {} onto {}: {} copied in {:.1} s{}",
            a.source.display(),
            a.target.display(),
            human_size(out.bytes),
            out.seconds,
            if out.verified {
                ", read back and verified"
            } else {
                ""
            }
        );
        for (s, start, end) in &out.unreadable {
            eprintln!(
                "warning: unreadable on the source ({s}): bytes {start}..{end}; written as zeros"
            );
        }
        for n in &out.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(0)
}
