//! A reproducible cpio "newc" writer, the format the kernel unpacks into the initial rootfs.
//!
//! Entries are collected first and written sorted by path, so the output depends only on the set of
//! entries: owner 0:0, one mtime for everything (the caller's `SOURCE_DATE_EPOCH`), inode numbers counted
//! up in write order, no device numbers of the build host. Missing parent directories are added (mode
//! 0755), and because a path sorts right after its parent's, every directory precedes its contents.
//! Hard links are not supported: the kernel would need them grouped by inode, and we have no use for them.

use std::collections::BTreeMap;
use std::io::{self, Write};

#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    #[error("initramfs path `{path}` is invalid: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("initramfs path `{path}` is added twice or under a non-directory ({reason}); each path may be given once")]
    Conflict { path: String, reason: String },
    #[error("initramfs file `{path}` is {size} bytes; cpio newc holds at most 4 GiB per file")]
    TooLarge { path: String, size: u64 },
    #[error(
        "SOURCE_DATE_EPOCH {epoch} does not fit the 32-bit cpio mtime; use a time before 2106"
    )]
    Mtime { epoch: u64 },
    #[error("writing the cpio archive failed: {source}")]
    Write { source: io::Error },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Permission bits (with setuid/setgid/sticky); the file type comes from `kind`.
    perm: u32,
    kind: Kind,
    /// Added only as a parent of another entry: an explicit `add_dir` may still set its mode.
    implicit: bool,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const TRAILER: &str = "TRAILER!!!";

/// The entries of one archive, kept sorted by path (relative, without a leading `/`).
#[derive(Debug, Clone, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> Result<(), CpioError> {
        if data.len() as u64 > u64::from(u32::MAX) {
            return Err(CpioError::TooLarge {
                path: path.into(),
                size: data.len() as u64,
            });
        }
        self.add(path, perm, Kind::File(data))
    }

    pub fn add_dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        self.add(path, perm, Kind::Dir)
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.add(path, 0o777, Kind::Symlink(target.into()))
    }

    pub fn add_char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.add(path, perm, Kind::CharDevice { major, minor })
    }

    pub fn add_block_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.add(path, perm, Kind::BlockDevice { major, minor })
    }

    /// Number of entries including implicit directories (not the trailer).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn add(&mut self, path: &str, perm: u32, kind: Kind) -> Result<(), CpioError> {
        let norm = normalize_path(path)?;
        // Parents first, so a conflict with an existing non-directory is found before anything changes.
        let mut parents = Vec::new();
        let mut end = 0;
        while let Some(i) = norm[end..].find('/') {
            end += i;
            parents.push(&norm[..end]);
            end += 1;
        }
        for p in &parents {
            if let Some(e) = self.entries.get(*p) {
                if e.kind != Kind::Dir {
                    return Err(CpioError::Conflict {
                        path: norm.clone(),
                        reason: format!("`{p}` is not a directory"),
                    });
                }
            }
        }
        match self.entries.get(&norm) {
            Some(e) if e.implicit && kind == Kind::Dir => {}
            Some(_) => {
                return Err(CpioError::Conflict {
                    path: norm.clone(),
                    reason: "it already exists".into(),
                })
            }
            None => {}
        }
        for p in parents {
            self.entries.entry(p.to_string()).or_insert(Entry {
                perm: 0o755,
                kind: Kind::Dir,
                implicit: true,
            });
        }
        self.entries.insert(
            norm,
            Entry {
                perm: perm & 0o7777,
                kind,
                implicit: false,
            },
        );
        Ok(())
    }

    /// Writes the archive with every mtime set to `mtime` (seconds since the epoch). Returns the number of
    /// bytes written.
    pub fn write_to<W: Write>(&self, out: W, mtime: u64) -> Result<u64, CpioError> {
        let mtime = u32::try_from(mtime).map_err(|_| CpioError::Mtime { epoch: mtime })?;
        let mut w = Counter { inner: out, n: 0 };
        let err = |source| CpioError::Write { source };
        for (ino, (path, e)) in (1u32..).zip(&self.entries) {
            let (ty, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &e.kind {
                Kind::File(d) => (S_IFREG, 1, d, (0, 0)),
                Kind::Dir => (S_IFDIR, 2, &[], (0, 0)),
                Kind::Symlink(t) => (S_IFLNK, 1, t.as_bytes(), (0, 0)),
                Kind::CharDevice { major, minor } => (S_IFCHR, 1, &[], (*major, *minor)),
                Kind::BlockDevice { major, minor } => (S_IFBLK, 1, &[], (*major, *minor)),
            };
            let header = Header {
                ino,
                mode: ty | e.perm,
                nlink,
                mtime,
                size: data.len() as u32,
                rdev,
            };
            header.write(&mut w, path).map_err(err)?;
            w.write_all(data).map_err(err)?;
            pad(&mut w).map_err(err)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            size: 0,
            rdev: (0, 0),
        };
        trailer.write(&mut w, TRAILER).map_err(err)?;
        w.flush().map_err(err)?;
        Ok(w.n)
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
}

impl Header {
    /// The 110-byte header, the NUL-terminated name and padding to a multiple of 4.
    fn write<W: Write>(&self, w: &mut Counter<W>, name: &str) -> io::Result<()> {
        let namesize = name.len() + 1;
        // Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check.
        write!(
            w,
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            self.mtime,
            self.size,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            namesize,
            0
        )?;
        w.write_all(name.as_bytes())?;
        w.write_all(&[0])?;
        pad(w)
    }
}

fn pad<W: Write>(w: &mut Counter<W>) -> io::Result<()> {
    let n = (4 - (w.n % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..n])
}

/// Padding in newc is relative to the start of the archive, so the writer tracks its position.
struct Counter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `/a/b`, `./a/b` and `a/b` are the same entry; `..`, `.` in the middle, empty components, NUL and
/// newline are refused (the last two would corrupt the name field or listings).
fn normalize_path(path: &str) -> Result<String, CpioError> {
    let bad = |reason| CpioError::BadPath {
        path: path.into(),
        reason,
    };
    let trimmed = path.trim_start_matches('/');
    let trimmed = trimmed
        .strip_prefix("./")
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("it names the root directory or nothing"));
    }
    if trimmed.contains(['\0', '\n']) {
        return Err(bad("it contains a NUL or newline"));
    }
    for c in trimmed.split('/') {
        match c {
            "" => return Err(bad("it has an empty component (`//`)")),
            "." | ".." => return Err(bad("it has a `.` or `..` component")),
            _ => {}
        }
    }
    if trimmed == TRAILER {
        return Err(bad("it is the archive end marker"));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
#[path = "cpio_tests.rs"]
pub(crate) mod tests;
