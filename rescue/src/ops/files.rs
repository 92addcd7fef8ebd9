//! `files`: the files inside an image listed and copied out without restoring it (docs/BROWSE.md). Any
//! image the program reads — ours, a snapshot, a virtual machine's disk, a raw disk — is opened as its
//! disk ([`super::disk`]), one partition is chosen (named, or the only one whose filesystem can be read)
//! and its filesystem read by [`crate::browse`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;
use serde::Serialize;

use super::disk::{self, Opened};
use crate::browse::{self, Browse, BrowseError, Entry, Kind};
use crate::detect::FsKind;
use crate::url::Location;

/// What a copy out did: files, folders, links, bytes, and the entries not copied with why.
pub use crate::browse::Summary;

/// Which image, and which partition of it.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesSpec {
    pub image: Location,
    /// The partition (as the disk's table numbers it); `None`: the only one whose files can be read, or
    /// the image itself when it holds one partition or a disk without a partition table.
    pub partition: Option<u32>,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// The name; an NTFS alternate data stream is `file:stream`.
    pub name: String,
    pub kind: FileKind,
    /// For [`FileKind::Other`], what it is ("FIFO", "device"…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<String>,
    pub size: u64,
    /// Modification time: seconds since 1970 (UTC) and nanoseconds.
    pub modified_unix: Option<i64>,
    pub modified_nanos: Option<u32>,
    /// A link's target, as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Unix permission bits (ext only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// `hidden`, `system`, `readonly`, `compressed`, `encrypted`, `sparse`, `metadata` (one of the
    /// filesystem's own files), `stream` (an alternate data stream).
    pub flags: Vec<&'static str>,
    /// Why the entry's metadata could not be read in full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A folder's entries (or one file's), sorted by name, each file's streams after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listing {
    /// The image as named (a URL's password left out).
    pub image: String,
    /// What was read: "partition 2", "partition 1 of the qcow2 disk"…
    pub what: String,
    pub partition: Option<u32>,
    /// The filesystem: `ext4`, `FAT32`, `exFAT`, `NTFS`…
    pub fs: &'static str,
    /// The path listed, as given.
    pub path: String,
    pub entries: Vec<FileEntry>,
    pub notes: Vec<String>,
}

/// What [`files_get`] copied.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesGot {
    pub image: String,
    pub what: String,
    pub partition: Option<u32>,
    pub fs: &'static str,
    pub out_dir: PathBuf,
    pub summary: Summary,
    pub seconds: f64,
    pub notes: Vec<String>,
}

/// A filesystem open for reading, with what names it in messages.
struct Open {
    fs: Box<dyn Browse>,
    image: String,
    what: String,
    partition: Option<u32>,
    notes: Vec<String>,
    /// Holds a share mounted for the image (or a repository's lock) while the files are read.
    _placed: super::place::Placed,
}

impl Open {
    /// The error `e` of `path`, said with where it happened and what to do.
    fn error(&self, path: &str, e: &BrowseError) -> anyhow::Error {
        let advice = match e {
            BrowseError::NotFound { .. } | BrowseError::NotADirectory { .. } => format!(
                "; `rescue files {} ls{} PATH` shows what a folder holds",
                self.image,
                self.partition
                    .map(|n| format!(" --partition {n}"))
                    .unwrap_or_default()
            ),
            BrowseError::Corrupt { .. } | BrowseError::Io { .. } => {
                "; other files may still be read: name them one by one".to_string()
            }
            _ => String::new(),
        };
        let said = crate::units::chain(e);
        let place = format!("{} of {} ({})", self.what, self.image, self.fs.kind());
        let p = shown_path(path);
        // Errors about a path name it themselves (the part walked so far).
        let at = if said.starts_with(&format!("{p}:")) {
            place
        } else if said.starts_with('/') {
            format!("{place}, looking for {p}")
        } else {
            format!("{place}: {p}")
        };
        anyhow::anyhow!("{at}: {said}{advice}")
    }
}

fn shown_path(path: &str) -> String {
    format!("/{}", browse::components(path).join("/"))
}

/// Whether the files of `fs` can be read here.
fn readable(fs: FsKind) -> bool {
    matches!(
        fs,
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Vfat | FsKind::Exfat | FsKind::Ntfs
    )
}

/// The partition of the whole disk `o` to read when none was named: the only one holding a filesystem
/// whose files can be read; the disk itself when it has no partition table.
fn choose(o: Opened, image: &str) -> anyhow::Result<Opened> {
    let table = disk::table(&o, image)?;
    let parts: Vec<_> = table.partitions.iter().filter(|p| !p.extended).collect();
    if parts.is_empty() {
        return Ok(o);
    }
    let can: Vec<u32> = parts
        .iter()
        .filter(|p| p.fs.is_some_and(readable))
        .map(|p| p.number)
        .collect();
    match can.as_slice() {
        [n] => disk::pick(o, &table, *n, image),
        [] => bail!(
            "{} of {image} has no partition whose files can be read (ext2/3/4, FAT, exFAT or NTFS); \
             its partitions are {}",
            o.what,
            disk::list_partitions(&table)
        ),
        _ => bail!(
            "{} of {image} has {} partitions whose files can be read; its partitions are {}: name one \
             with --partition N",
            o.what,
            can.len(),
            disk::list_partitions(&table)
        ),
    }
}

/// Opens the filesystem `spec` names.
fn open(spec: &FilesSpec, net: &super::NetOptions) -> anyhow::Result<Open> {
    let (placed, o) = disk::open_for_files(&spec.image, spec.partition, net).map_err(|e| {
        let said = super::describe(&e);
        if said.contains("holds no partition") {
            anyhow::anyhow!("{said}: name one of them with --partition N")
        } else {
            e
        }
    })?;
    let image = match &spec.image {
        Location::Local(_) => placed.path.display().to_string(),
        remote => remote.to_string(),
    };
    let o = if spec.partition.is_none() && o.partition.is_none() {
        choose(o, &image)?
    } else {
        o
    };
    let part: Arc<dyn crate::image::ReadAt> = o.disk.clone();
    let fs = browse::open(part).map_err(|e| {
        let hint = match (&e, o.partition) {
            (BrowseError::Unrecognised { .. }, None) => "",
            (BrowseError::Unrecognised { .. }, Some(_)) => {
                "; leave out --partition to have the partition that can be read chosen, or name another"
            }
            _ => "",
        };
        anyhow::anyhow!("{} of {image}: {}{hint}", o.what, crate::units::chain(&e))
    })?;
    let mut notes = o.notes;
    notes.extend(fs.notes());
    Ok(Open {
        fs,
        image,
        what: o.what,
        partition: o.partition,
        notes,
        _placed: placed,
    })
}

/// `e` as a listed entry (its streams listed after it by the caller).
fn entry(e: &Entry) -> FileEntry {
    let (kind, other, target) = match &e.kind {
        Kind::File => (FileKind::File, None, None),
        Kind::Dir => (FileKind::Dir, None, None),
        Kind::Symlink { target } => (FileKind::Symlink, None, Some(target.clone())),
        Kind::Other(what) => (FileKind::Other, Some((*what).to_string()), None),
    };
    let f = &e.flags;
    let flags = [
        (f.hidden, "hidden"),
        (f.system, "system"),
        (f.readonly, "readonly"),
        (f.compressed, "compressed"),
        (f.encrypted, "encrypted"),
        (f.sparse, "sparse"),
        (f.metadata, "metadata"),
        (e.stream.is_some(), "stream"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    FileEntry {
        name: e.name.clone(),
        kind,
        other,
        size: e.size,
        modified_unix: e.modified.map(|t| t.secs),
        modified_nanos: e.modified.map(|t| t.nanos),
        target,
        mode: e.mode,
        flags,
        problem: e.problem.clone(),
    }
}

/// `e` and its alternate data streams, as listed.
fn with_streams(e: &Entry, out: &mut Vec<FileEntry>) {
    let main = entry(e);
    let streams: Vec<FileEntry> = e
        .streams
        .iter()
        .map(|s| FileEntry {
            name: format!("{}:{}", e.name, s.name),
            kind: FileKind::File,
            size: s.size,
            mode: None,
            flags: vec!["stream"],
            ..main.clone()
        })
        .collect();
    out.push(main);
    out.extend(streams);
}

/// The entries of the folder at `path` in the filesystem `spec` names (or the entry itself when `path`
/// is no folder), sorted by name.
pub fn files_list(
    spec: &FilesSpec,
    path: &str,
    net: &super::NetOptions,
) -> anyhow::Result<Listing> {
    let o = open(spec, net)?;
    let at = o.fs.stat(path).map_err(|e| o.error(path, &e))?;
    let mut found = if at.is_dir() {
        o.fs.children(&at).map_err(|e| o.error(path, &e))?
    } else {
        vec![at]
    };
    found.sort_by(|a, b| a.name.cmp(&b.name));
    let mut entries = Vec::with_capacity(found.len());
    for e in &found {
        with_streams(e, &mut entries);
    }
    Ok(Listing {
        image: o.image.clone(),
        what: o.what.clone(),
        partition: o.partition,
        fs: o.fs.kind(),
        path: shown_path(path),
        entries,
        notes: o.notes,
    })
}

/// Refuses a copy that would meet something already in `out_dir`: the root needs an empty (or new)
/// folder, any other path a name not yet taken there. Nothing is ever overwritten.
fn check_free(paths: &[String], out_dir: &Path, names: &[String]) -> anyhow::Result<()> {
    for (path, name) in paths.iter().zip(names) {
        if name.is_empty() {
            let busy = std::fs::read_dir(out_dir).is_ok_and(|mut d| d.next().is_some());
            if busy {
                bail!(
                    "{} is not empty: copying {} (the whole filesystem) needs an empty or new folder, \
                     since files are never overwritten; remove what it holds or choose another -o folder",
                    out_dir.display(),
                    shown_path(path)
                );
            }
            if out_dir.exists() && !out_dir.is_dir() {
                bail!(
                    "{} exists and is no folder; choose another -o folder",
                    out_dir.display()
                );
            }
            continue;
        }
        let to = out_dir.join(name);
        if std::fs::symlink_metadata(&to).is_ok() {
            bail!(
                "{} already exists: files are never overwritten; remove it or choose another -o folder",
                to.display()
            );
        }
    }
    Ok(())
}

/// Copies `paths` (files, folders with all they hold, links as links) out of the filesystem `spec`
/// names into `out_dir` (created if missing), with their names, sizes and times. Refused before
/// anything is written when a path does not exist or its name is taken in `out_dir`; problems with
/// single entries are in the summary.
pub fn files_get(
    spec: &FilesSpec,
    paths: &[String],
    out_dir: &Path,
    net: &super::NetOptions,
) -> anyhow::Result<FilesGot> {
    let started = std::time::Instant::now();
    if paths.is_empty() {
        bail!("name at least one file or folder to copy (`/` copies everything)");
    }
    let o = open(spec, net)?;
    let mut names = Vec::with_capacity(paths.len());
    for p in paths {
        let e = o.fs.stat(p).map_err(|e| o.error(p, &e))?;
        names.push(if browse::components(p).is_empty() {
            String::new()
        } else {
            e.name
        });
    }
    check_free(paths, out_dir, &names)?;
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let summary = browse::extract(o.fs.as_ref(), &refs, out_dir).map_err(|e| match e {
        BrowseError::Write { .. } => anyhow::anyhow!(
            "{}; check that the folder can be written and has room",
            crate::units::chain(&e)
        ),
        e => o.error(&paths.join(" "), &e),
    })?;
    Ok(FilesGot {
        image: o.image.clone(),
        what: o.what.clone(),
        partition: o.partition,
        fs: o.fs.kind(),
        out_dir: out_dir.to_path_buf(),
        summary,
        seconds: started.elapsed().as_secs_f64(),
        notes: o.notes,
    })
}
