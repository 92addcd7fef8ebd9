//! `rescue files IMAGE ls|get`: the files inside an image (ours, a snapshot, a virtual machine's disk, a
//! raw disk) listed and copied out without restoring it.

use std::path::PathBuf;

use serde_json::json;

use crate::ops;
use crate::units::human_size;

#[derive(clap::Args, Debug)]
pub struct FilesArgs {
    /// The image, snapshot (REPO::NAME[@TIME]), virtual machine disk or raw disk to read.
    pub image: PathBuf,
    #[command(subcommand)]
    pub cmd: FilesCmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum FilesCmd {
    /// List a folder (or show one file): names, or with -l kind, size, time (UTC) and link targets.
    Ls(LsArgs),
    /// Copy files and folders out into a folder, with their names, sizes and times. Nothing there is
    /// overwritten: a name already taken refuses the copy (the whole filesystem, `/`, needs an empty
    /// or new folder).
    Get(GetArgs),
}

/// Which partition, and how to reach the image.
#[derive(clap::Args, Debug)]
pub struct Where {
    /// The partition to read (as the disk's table numbers it); by default the only one whose files can
    /// be read.
    #[arg(long)]
    pub partition: Option<u32>,
    #[command(flatten)]
    pub net: super::imaging::NetArgs,
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// The folder (or file) to list, `/`-separated from the root of the filesystem.
    #[arg(default_value = "/")]
    pub path: String,
    /// One line per entry: kind, size, modification time (UTC), name, `-> target` for links.
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Also the filesystem's own files (NTFS `$MFT`…).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The listing as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: Where,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Files and folders to copy (`/` copies everything); `file:stream` for an NTFS alternate stream.
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// The folder to copy into (created if missing).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: Where,
}

impl FilesArgs {
    pub fn json(&self) -> bool {
        match &self.cmd {
            FilesCmd::Ls(a) => a.json,
            FilesCmd::Get(a) => a.json,
        }
    }
}

pub fn run(a: FilesArgs) -> anyhow::Result<i32> {
    let image = ops::Location::parse(&a.image.to_string_lossy())?;
    let at = match &a.cmd {
        FilesCmd::Ls(l) => &l.at,
        FilesCmd::Get(g) => &g.at,
    };
    let net = at.net.options(&image)?;
    let spec = ops::FilesSpec {
        image,
        partition: at.partition,
    };
    match a.cmd {
        FilesCmd::Ls(l) => ls(&spec, &l, &net),
        FilesCmd::Get(g) => get(&spec, &g, &net),
    }
}

fn ls(spec: &ops::FilesSpec, a: &LsArgs, net: &ops::NetOptions) -> anyhow::Result<i32> {
    let mut listing = ops::files_list(spec, &a.path, net)?;
    if !a.all {
        listing.entries.retain(|e| !e.flags.contains(&"metadata"));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
        return Ok(0);
    }
    for n in &listing.notes {
        eprintln!("note: {n}");
    }
    let width = listing
        .entries
        .iter()
        .map(|e| e.size.to_string().len())
        .max()
        .unwrap_or(1);
    let mut out = String::new();
    for e in &listing.entries {
        if a.long {
            out.push_str(&long_line(e, width));
        } else {
            out.push_str(&e.name);
        }
        out.push('\n');
    }
    print!("{out}");
    Ok(0)
}

/// One `ls -l`-like line: kind, size, time (UTC), name, link target, flags worth knowing.
fn long_line(e: &ops::FileEntry, width: usize) -> String {
    let kind = match e.kind {
        ops::FileKind::File => '-',
        ops::FileKind::Dir => 'd',
        ops::FileKind::Symlink => 'l',
        ops::FileKind::Other => '?',
    };
    let time = match e.modified_unix.and_then(|s| u64::try_from(s).ok()) {
        Some(s) => crate::units::iso_time(s).replace('T', " ").replace('Z', ""),
        None => "-".repeat(19),
    };
    let mut line = format!("{kind} {:>width$}  {time}  {}", e.size, e.name);
    if let Some(t) = &e.target {
        line.push_str(&format!(" -> {t}"));
    }
    let mut shown: Vec<String> = e
        .flags
        .iter()
        .filter(|f| **f != "stream")
        .map(|f| f.to_string())
        .collect();
    if let Some(o) = &e.other {
        shown.push(o.clone());
    }
    if let Some(p) = &e.problem {
        shown.push(format!("problem: {p}"));
    }
    if !shown.is_empty() {
        line.push_str(&format!("  [{}]", shown.join(", ")));
    }
    line
}

fn get(spec: &ops::FilesSpec, a: &GetArgs, net: &ops::NetOptions) -> anyhow::Result<i32> {
    let got = ops::files_get(spec, &a.paths, &a.output, net)?;
    let s = &got.summary;
    let ok = s.problems.is_empty();
    if a.json {
        let problems: Vec<_> = s
            .problems
            .iter()
            .map(|(p, why)| json!({"path": p, "problem": why}))
            .collect();
        println!(
            "{}",
            json!({"ok": ok, "image": got.image, "what": got.what, "partition": got.partition,
                   "fs": got.fs, "output": got.out_dir, "files": s.files, "folders": s.dirs,
                   "links": s.symlinks, "bytes": s.bytes, "problems": problems,
                   "seconds": got.seconds, "notes": got.notes})
        );
    } else {
        for n in &got.notes {
            eprintln!("note: {n}");
        }
        for (p, why) in &s.problems {
            eprintln!("not copied: {p}: {why}");
        }
        eprintln!(
            "copied {}, {}, {} ({}) from {} ({}) of {} into {} in {:.2} s{}",
            count(s.files, "file"),
            count(s.dirs, "folder"),
            count(s.symlinks, "link"),
            human_size(s.bytes),
            got.what,
            got.fs,
            got.image,
            got.out_dir.display(),
            got.seconds,
            if ok {
                String::new()
            } else {
                format!("; {} entries were not copied (see above)", s.problems.len())
            }
        );
    }
    Ok(if ok { 0 } else { 1 })
}

/// `n` things, in the plural unless one.
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
