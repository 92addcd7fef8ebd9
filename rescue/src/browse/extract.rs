//! Copying files and folders out of a filesystem into a folder of the host.
//!
//! Only ever writes below the output folder: every name is checked (no `/`, `.`, `..`, NUL, empty),
//! files are created new (never through an existing file or link), a folder is entered only if it is a
//! real folder, and links are recreated as links, never followed. Trees are walked with a depth limit
//! and each folder once, so a looping directory structure ends.

use std::collections::HashSet;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Browse, BrowseError, Entry, Kind};

/// Folders nested deeper than this are not entered.
const MAX_DEPTH: usize = 1024;
/// Bytes copied per read.
const CHUNK: usize = 1 << 20;

/// What an extraction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Paths (in the filesystem) not copied, or copied incompletely, and why.
    pub problems: Vec<(String, String)>,
}

/// Copies each of `paths` (files, folders with everything below them, links) into `out_dir`, which
/// is created if missing. The root (`/`) copies the whole filesystem into `out_dir` itself. Files
/// keep their modification and access times, and on ext their permission bits (the owner keeps read
/// and write). Problems with single entries are recorded in the summary and the copy goes on; an
/// error is returned only when `out_dir` cannot be made or a path does not exist.
pub fn extract(fs: &dyn Browse, paths: &[&str], out_dir: &Path) -> Result<Summary, BrowseError> {
    fs::create_dir_all(out_dir).map_err(|source| BrowseError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut x = Extractor {
        fs,
        summary: Summary::default(),
        seen: HashSet::new(),
    };
    for path in paths {
        let e = fs.stat(path)?;
        if super::components(path).is_empty() {
            x.dir_contents(&e, "", out_dir, 0);
        } else {
            x.entry(
                &e,
                &format!("/{}", super::components(path).join("/")),
                out_dir,
                0,
            );
        }
    }
    Ok(x.summary)
}

/// Refuses names that could write outside the folder they are created in.
pub(crate) fn check_name(name: &str) -> Result<(), BrowseError> {
    let why = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it names a folder itself"
    } else if name.contains('/') {
        "it contains a slash"
    } else if name.contains('\0') {
        "it contains a NUL character"
    } else {
        return Ok(());
    };
    Err(BrowseError::UnsafeName {
        name: name.to_owned(),
        why,
    })
}

struct Extractor<'a> {
    fs: &'a dyn Browse,
    summary: Summary,
    seen: HashSet<(u64, u64, u64)>,
}

impl Extractor<'_> {
    fn problem(&mut self, path: &str, why: impl std::fmt::Display) {
        self.summary
            .problems
            .push((path.to_owned(), why.to_string()));
    }

    /// Copies `e` (at `path` in the filesystem) into the host folder `into`.
    fn entry(&mut self, e: &Entry, path: &str, into: &Path, depth: usize) {
        if let Err(err) = check_name(&e.name) {
            return self.problem(path, err);
        }
        let out = into.join(&e.name);
        match &e.kind {
            Kind::File => match self.file(e, &out) {
                Ok(n) => {
                    self.summary.files += 1;
                    self.summary.bytes += n;
                }
                Err(err) => self.problem(path, crate::units::chain(&err)),
            },
            Kind::Dir => {
                if let Err(err) = make_dir(&out) {
                    return self.problem(path, crate::units::chain(&err));
                }
                self.summary.dirs += 1;
                self.dir_contents(e, path, &out, depth + 1);
                set_times(&out, e);
            }
            Kind::Symlink { target } => {
                if target.contains('\0') || target.is_empty() {
                    return self.problem(path, "the link's target is empty or holds a NUL");
                }
                match std::os::unix::fs::symlink(target, &out) {
                    Ok(()) => self.summary.symlinks += 1,
                    Err(source) => self.problem(
                        path,
                        crate::units::chain(&BrowseError::Write { path: out, source }),
                    ),
                }
            }
            Kind::Other(what) => self.problem(path, format!("a {what} is not copied")),
        }
    }

    /// Copies the entries of folder `dir` into `out`.
    fn dir_contents(&mut self, dir: &Entry, path: &str, out: &Path, depth: usize) {
        if depth > MAX_DEPTH {
            return self.problem(
                path,
                format!("folders nested deeper than {MAX_DEPTH} are not entered"),
            );
        }
        let key = (dir.id.node, dir.id.aux, dir.id.aux2);
        if !self.seen.insert(key) {
            return self.problem(
                path,
                "this folder was met before (a loop in the folder tree)",
            );
        }
        match self.fs.children(dir) {
            Ok(children) => {
                for c in children {
                    if c.flags.metadata {
                        continue;
                    }
                    let child_path = format!("{path}/{}", c.name);
                    self.entry(&c, &child_path, out, depth);
                }
            }
            Err(err) => self.problem(path, crate::units::chain(&err)),
        }
    }

    /// Writes file `e` to `out`; returns the bytes written.
    fn file(&mut self, e: &Entry, out: &Path) -> Result<u64, BrowseError> {
        let mut r = self.fs.open(e)?;
        let write_err = |source| BrowseError::Write {
            path: out.to_path_buf(),
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(out)
            .map_err(write_err)?;
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0u64;
        loop {
            let n = r.read_at(pos, &mut buf)?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).map_err(write_err)?;
            pos += n as u64;
        }
        if let Some(mode) = e.mode {
            let _ = f.set_permissions(fs::Permissions::from_mode((mode & 0o777) | 0o600));
        }
        let _ = f.set_times(times(e));
        Ok(pos)
    }
}

/// Creates folder `p`, or accepts it if it is a real folder already (never a link to one).
fn make_dir(p: &Path) -> Result<(), BrowseError> {
    match fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(BrowseError::Write {
                path: PathBuf::from(p),
                source: e,
            }),
        },
        Err(source) => Err(BrowseError::Write {
            path: p.to_path_buf(),
            source,
        }),
    }
}

fn times(e: &Entry) -> FileTimes {
    let mut t = FileTimes::new();
    if let Some(m) = e.modified.and_then(|m| m.system()) {
        t = t.set_modified(m);
    }
    if let Some(a) = e.accessed.and_then(|a| a.system()) {
        t = t.set_accessed(a);
    }
    t
}

/// Gives folder `p` the times of `e` (after its content was written).
fn set_times(p: &Path, e: &Entry) {
    if let Ok(f) = File::open(p) {
        let _ = f.set_times(times(e));
    }
}
