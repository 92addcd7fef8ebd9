//! The command-line front end. It parses arguments, calls the library, and prints; no imaging or detection
//! logic lives here.

pub mod export;
pub mod files;
pub mod imaging;
pub mod inspect;
pub mod job;
pub mod mounts;
pub mod net;
pub mod progress;
pub mod repo;
pub mod serve;
pub mod ui;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::detect::{self, Disk, Report};

#[derive(Parser, Debug)]
#[command(
    name = "rescue",
    version,
    about = "Disk imaging rescue environment: detect, capture, restore, verify"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List disks, their partition tables, partitions and filesystems (read-only).
    Disks {
        /// Print the report as JSON (schema: docs/DISKS-JSON.md).
        #[arg(long)]
        json: bool,
        /// Block devices or disk image files to inspect; every block device when none are given.
        paths: Vec<PathBuf>,
    },
    /// Capture a disk (or chosen partitions) into an image file, reading only what filesystems use.
    Capture(imaging::CaptureArgs),
    /// Restore an image onto a disk (or one partition of it). Destroys what the target holds.
    Restore(imaging::RestoreArgs),
    /// Copy a disk onto another disk directly, reading only what filesystems use. Destroys the target.
    Clone(imaging::CloneArgs),
    /// Check every chunk hash and the root hash of an image; with --against, compare a device with it.
    Verify {
        /// The image file.
        image: PathBuf,
        /// Also compare this device (or disk image file, or selector) with the image over every captured
        /// range: after a restore, or to check that the source has not changed since the capture.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Progress as JSON lines on stderr and the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: imaging::NetArgs,
    },
    /// Show an image's source layout, streams, sizes, root hash, creation info and unreadable ranges.
    Inspect {
        /// The image file.
        image: PathBuf,
        /// Print everything as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        net: imaging::NetArgs,
    },
    /// Image repositories: `repo init` makes one (snapshots sharing their chunks; docs/REPOSITORY.md).
    #[command(subcommand)]
    Repo(repo::RepoCmd),
    /// List the snapshots of a repository: name@time, source, sizes, bytes each added.
    Snapshots(repo::SnapshotsArgs),
    /// Write an image or snapshot (REPO::NAME[@TIME]) out as one self-contained image file, or as a
    /// virtual machine's disk (--format raw, vhd, vhdx, vmdk, vdi, qcow2), and verify what was written.
    Export(export::ExportArgs),
    /// Serve an image's disk (or one partition) over NBD, read-only or writable through an overlay
    /// file, for QEMU, qemu-img, nbdcopy or nbd-client (docs/NBD.md); until Ctrl-C.
    Serve(serve::ServeArgs),
    /// List or copy out the files inside an image, a snapshot or a virtual disk without restoring it:
    /// `files IMAGE ls [PATH]`, `files IMAGE get PATH… -o DIR` (ext2/3/4, FAT, exFAT, NTFS).
    Files(files::FilesArgs),
    /// Check a repository: every snapshot and every chunk it refers to (--read-data: hashed too).
    Check(repo::CheckArgs),
    /// Add an image file (or another repository's snapshot) to a repository as a snapshot; or make a
    /// Clonezilla image (a directory, or a partclone image) into an image file (-o) or a snapshot.
    Import(repo::ImportArgs),
    /// Remove the snapshots the --keep rules do not keep, and the chunks no other snapshot uses.
    Prune(repo::PruneArgs),
    /// Mount a filesystem (to write images to or read them from); its type is detected when not given.
    Mount(mounts::MountArgs),
    /// Flush and unmount a filesystem mounted with `mount`.
    Umount(mounts::UmountArgs),
    /// The network links and their addresses; `net up` brings them up (DHCP or static).
    Net(net::NetArgs),
    /// Run an unattended job: capture, restore, verify or clone with disks chosen by rules (docs/JOBS.md).
    Job(job::JobArgs),
    /// The full-screen interface, on a host terminal: disks, capture, restore, verify, clone.
    Tui {
        /// A folder offered as a place to write images to and read them from (repeatable).
        #[arg(long = "images")]
        folders: Vec<PathBuf>,
        /// Devices or disk image files to show instead of every block device.
        paths: Vec<PathBuf>,
    },
    /// The interactive front end PID 1 starts on the console.
    #[command(hide = true)]
    Ui,
}

pub use crate::ops::detect_options;

impl Cmd {
    /// A command asked for JSON whose failure is not already reported as JSON by the command itself.
    fn error_as_json(&self) -> bool {
        match self {
            Cmd::Capture(a) => a.json,
            Cmd::Restore(a) => a.json,
            Cmd::Clone(a) => a.json,
            Cmd::Disks { json, .. } | Cmd::Inspect { json, .. } => *json,
            Cmd::Snapshots(a) => a.json,
            Cmd::Export(a) => a.json,
            Cmd::Serve(a) => a.json,
            Cmd::Files(a) => a.json(),
            Cmd::Check(a) => a.json,
            Cmd::Import(a) => a.json,
            Cmd::Prune(a) => a.json,
            _ => false,
        }
    }
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    let listing = match &cli.command {
        Cmd::Disks { .. } | Cmd::Inspect { .. } => true,
        Cmd::Files(f) => matches!(f.cmd, files::FilesCmd::Ls(_)),
        _ => false,
    };
    if listing {
        // Listings hold nothing to clean up: `rescue disks | head` just ends, as other tools do, instead
        // of panicking on the closed pipe. (Jobs keep SIGPIPE ignored: a capture to a closed stdout fails
        // and cleans up.)
        crate::ops::end_on_closed_pipe();
    }
    let error_as_json = cli.command.error_as_json();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rescue: error: {}", crate::ops::describe(&e));
            if error_as_json {
                // A script reading stdout gets a document either way.
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "error": crate::ops::describe(&e)})
                );
            }
            1
        }
    }
}

/// A device argument as given: a path, or a selector such as `serial=WD123` or `label=RESCUE-DATA`
/// (see `detect::select`), which is resolved to the one device it matches.
pub fn device_arg(arg: &Path) -> anyhow::Result<PathBuf> {
    let text = arg.to_string_lossy();
    if arg.exists() || !detect::select::looks_like_selector(&text) {
        return Ok(arg.to_path_buf());
    }
    let selector =
        detect::select::Selector::parse(&text).map_err(|e| anyhow::anyhow!("{text}: {e}"))?;
    let report = detect::detect_all(&detect_options());
    let path = selector
        .resolve(&report)
        .map_err(|e| anyhow::anyhow!("{text}: {e}"))?;
    eprintln!("rescue: {text} is {path}");
    Ok(PathBuf::from(path))
}

fn device_args(paths: &mut [PathBuf]) -> anyhow::Result<()> {
    for p in paths {
        *p = device_arg(p)?;
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut command = cli.command;
    match &mut command {
        Cmd::Disks { paths, .. } => device_args(paths)?,
        Cmd::Capture(a) => a.source = device_arg(&a.source)?,
        Cmd::Restore(a) => a.target = device_arg(&a.target)?,
        Cmd::Clone(a) => {
            a.source = device_arg(&a.source)?;
            a.target = device_arg(&a.target)?;
        }
        Cmd::Verify {
            against: Some(dev), ..
        } => *dev = device_arg(dev)?,
        Cmd::Mount(a) => a.device = device_arg(&a.device)?,
        _ => {}
    }
    match command {
        Cmd::Disks { json, paths } => {
            let opts = detect_options();
            let report = if paths.is_empty() {
                detect::detect_all(&opts)
            } else {
                detect::detect_paths(&paths, &opts)
            };
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)
                    .context("writing the JSON report")?;
                writeln!(out)?;
            } else {
                write!(out, "{}", render_report(&report))?;
            }
            // A disk that was named and could not be read at all (missing, empty, not a disk) fails the
            // command, after the report that says why.
            let unreadable = report
                .disks
                .iter()
                .any(|d| d.size_bytes == 0 && !d.problems.is_empty());
            Ok(if !paths.is_empty() && unreadable {
                1
            } else {
                0
            })
        }
        Cmd::Capture(args) => imaging::capture(args),
        Cmd::Restore(args) => imaging::restore(args),
        Cmd::Clone(args) => imaging::clone(args),
        Cmd::Verify {
            image,
            against,
            json,
            net,
        } => imaging::verify(&image, against.as_deref(), json, &net),
        Cmd::Inspect { image, json, net } => inspect::inspect(&image, json, &net),
        Cmd::Repo(cmd) => repo::run(cmd),
        Cmd::Snapshots(args) => repo::snapshots(args),
        Cmd::Export(args) => export::run(args),
        Cmd::Serve(args) => serve::run(args),
        Cmd::Files(args) => files::run(args),
        Cmd::Check(args) => repo::check(args),
        Cmd::Import(args) => repo::import(args),
        Cmd::Prune(args) => repo::prune(args),
        Cmd::Mount(args) => mounts::mount(args),
        Cmd::Umount(args) => mounts::umount(args),
        Cmd::Net(args) => net::run(args),
        Cmd::Job(args) => job::run(args),
        Cmd::Tui { folders, paths } => Ok(crate::tui::run(crate::tui::term::UiOptions {
            mode: crate::tui::Mode::Host,
            paths,
            folders,
        })?),
        Cmd::Ui => match crate::tui::run(crate::tui::term::UiOptions {
            mode: crate::tui::Mode::Pid1,
            paths: vec![],
            folders: vec![],
        }) {
            Ok(rc) => Ok(rc),
            Err(e) => {
                // The console could not be driven full-screen: fall back to the plain disk list.
                eprintln!("rescue: the full-screen interface failed ({e}); showing the plain list");
                Ok(ui::run())
            }
        },
    }
}

use crate::units::{human_size, json_name};

fn disk_flags(d: &Disk) -> Vec<String> {
    let mut flags = Vec::new();
    if d.boot_medium {
        flags.push("this rescue stick".to_string());
    }
    if d.removable {
        flags.push("removable".into());
    }
    if d.read_only {
        flags.push("read-only".into());
    }
    if !d.mounts.is_empty() || d.partitions.iter().any(|p| !p.mounts.is_empty()) {
        flags.push("mounted".into());
    }
    if let Some(g) = &d.gpt {
        if !g.primary_header_valid {
            flags.push("damaged primary GPT".into());
        }
        if !g.backup_header_valid {
            flags.push("damaged backup GPT".into());
        }
        if g.hybrid_mbr {
            flags.push("hybrid MBR".into());
        }
    }
    flags
}

/// The plain-text disk list (also what the console UI shows).
pub fn render_report(report: &Report) -> String {
    let mut s = String::new();
    if report.disks.is_empty() {
        s.push_str("No disks found.\n");
    }
    for d in &report.disks {
        let ident = [d.model.as_deref(), d.serial.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        s.push_str(&format!(
            "{}  {}  {}  {}  {}-byte sectors  {}\n",
            d.path,
            human_size(d.size_bytes),
            json_name(&d.transport),
            json_name(&d.table),
            d.logical_sector_size,
            ident
        ));
        let flags = disk_flags(d);
        if !flags.is_empty() {
            s.push_str(&format!("    [{}]\n", flags.join(", ")));
        }
        for p in &d.partitions {
            s.push_str(&format!(
                "    {:>3}  {:>10}  {:<22} {:<6} {}{}\n",
                p.number,
                human_size(p.size_bytes),
                p.type_name,
                p.fs.map(|f| json_name(&f)).unwrap_or_else(|| "-".into()),
                p.fs_label.as_deref().unwrap_or(""),
                if p.mounts.is_empty() {
                    String::new()
                } else {
                    format!("  mounted on {}", p.mounts.join(", "))
                }
            ));
        }
        for problem in &d.problems {
            s.push_str(&format!("    ! {problem}\n"));
        }
    }
    for problem in &report.problems {
        s.push_str(&format!("! {problem}\n"));
    }
    s
}
