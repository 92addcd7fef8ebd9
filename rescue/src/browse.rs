//! Read-only browsing of the files inside a partition (docs/BROWSE.md): list folders, look at a file's
//! metadata, read its bytes and copy files and folders out, without restoring or mounting anything.
//!
//! [`open`] recognises the filesystem by content — ext2/3/4, FAT12/16/32, exFAT, NTFS — and refuses
//! anything else by name. Each reader parses its filesystem's own structures through a bounded reader
//! ([`Vol`]): every read is checked against the partition's size, every chain, tree and runlist has a
//! limit that follows from the partition's size, and damaged metadata is an error naming the
//! filesystem, the structure and its byte offset, never a panic. Nothing is ever written to the
//! partition; journals are not replayed (a note says when one holds changes).
//!
//! Paths are `/`-separated from the root of the filesystem; they are resolved without following
//! symbolic links (a link is shown as one). On NTFS `file:stream` names an alternate data stream.

mod chain;
mod exfat;
mod ext;
mod extract;
mod fat;
mod ntfs;
mod read;
mod time;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::image::ReadAt;

pub use self::extract::{extract, Summary};
pub use self::read::FileReader;
pub use self::time::Time;

/// What a directory entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symbolic link (NTFS: a symbolic-link or junction reparse point) and where it points.
    Symlink {
        target: String,
    },
    /// Anything else (device node, FIFO, socket, a reparse point of another kind…), by name.
    Other(&'static str),
}

/// Attributes worth showing, where the filesystem has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub hidden: bool,
    pub system: bool,
    pub readonly: bool,
    /// One of the filesystem's own structures (NTFS `$MFT`, `$Bitmap`…): listed, marked, and usually
    /// left out of listings by front ends unless asked for.
    pub metadata: bool,
    pub compressed: bool,
    /// Encrypted (NTFS EFS, ext4 fscrypt): its content is refused.
    pub encrypted: bool,
    pub sparse: bool,
}

/// A named data stream of a file besides its main one (NTFS alternate data streams).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub name: String,
    pub size: u64,
}

/// One file, folder or link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    /// Bytes of content (of the stream, for a stream).
    pub size: u64,
    pub modified: Option<Time>,
    pub accessed: Option<Time>,
    pub created: Option<Time>,
    /// Unix permission bits and type (ext only).
    pub mode: Option<u32>,
    pub flags: Flags,
    /// Alternate data streams (NTFS), each readable as `path:name`.
    pub streams: Vec<Stream>,
    /// `Some(name)` when this entry is the alternate data stream `name` of a file.
    pub stream: Option<String>,
    /// Why this entry's metadata could not be read in full (it is listed all the same).
    pub problem: Option<String>,
    pub(crate) id: Id,
}

/// Where a reader finds an entry's data again (its meaning is the reader's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Id {
    pub node: u64,
    pub aux: u64,
    pub aux2: u64,
}

impl Entry {
    pub(crate) fn new(name: String, kind: Kind, id: Id) -> Entry {
        Entry {
            name,
            kind,
            size: 0,
            modified: None,
            accessed: None,
            created: None,
            mode: None,
            flags: Flags::default(),
            streams: Vec::new(),
            stream: None,
            problem: None,
            id,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    /// The root folder of a filesystem, found again by `id`.
    pub(crate) fn root(id: Id) -> Entry {
        Entry::new("/".into(), Kind::Dir, id)
    }

    /// `Ok` for a folder; listing anything else is an error.
    pub(crate) fn expect_dir(&self) -> Result<(), BrowseError> {
        if self.kind == Kind::Dir {
            return Ok(());
        }
        Err(BrowseError::NotADirectory {
            path: self.name.clone(),
        })
    }
}

/// Why browsing failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// No filesystem that can be browsed; `what` names what was found instead, if anything.
    #[error("{what}; files can be listed on ext2/3/4, FAT12/16/32, exFAT and NTFS")]
    Unrecognised { what: String },
    /// A feature this reader does not implement, by name.
    #[error("{fs}: {what} is not supported")]
    Unsupported { fs: &'static str, what: String },
    /// Metadata that contradicts its format.
    #[error(
        "{fs}: the {structure} at byte {offset} of the partition is damaged: {reason} (a \
         filesystem check on a copy may repair it)"
    )]
    Corrupt {
        fs: &'static str,
        structure: String,
        offset: u64,
        reason: String,
    },
    #[error("reading {len} bytes at byte {offset} of the partition failed")]
    Io {
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    #[error("{path}: no such file or folder")]
    NotFound { path: String },
    #[error("{path}: not a folder")]
    NotADirectory { path: String },
    #[error("{path}: not a file (a {what})")]
    NotAFile { path: String, what: &'static str },
    /// A name that could not be written safely as a file name.
    #[error("the name {name:?} is refused: {why}")]
    UnsafeName { name: String, why: &'static str },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A filesystem open for browsing.
pub trait Browse: Send + Sync {
    /// The filesystem's name: `ext4`, `FAT32`, `exFAT`, `NTFS`…
    fn kind(&self) -> &'static str;
    /// The root folder.
    fn root(&self) -> Result<Entry, BrowseError>;
    /// The entries of folder `dir` (without `.` and `..`), in the order the folder holds them.
    fn children(&self, dir: &Entry) -> Result<Vec<Entry>, BrowseError>;
    /// A reader of file `file`'s content (of its stream, for a stream entry).
    fn open(&self, file: &Entry) -> Result<FileReader, BrowseError>;
    /// What the filesystem says worth telling (a journal not replayed, damaged entries skipped…).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether `a` and `b` name the same entry when they differ: case-insensitive filesystems say so.
    fn same_name(&self, a: &str, b: &str) -> bool {
        a == b
    }
    /// The alternate data stream `name` of `file`, as an entry of its own.
    fn stream(&self, file: &Entry, name: &str) -> Result<Option<Entry>, BrowseError> {
        let _ = (file, name);
        Ok(None)
    }

    /// The entry named `name` in `dir`: an exact match first, else one the filesystem takes as the same.
    fn child(&self, dir: &Entry, name: &str) -> Result<Option<Entry>, BrowseError> {
        let all = self.children(dir)?;
        if let Some(i) = all.iter().position(|e| e.name == name) {
            return Ok(all.into_iter().nth(i));
        }
        Ok(all.into_iter().find(|e| self.same_name(&e.name, name)))
    }

    /// The entry at `path` (a link is not followed).
    fn stat(&self, path: &str) -> Result<Entry, BrowseError> {
        let parts = components(path);
        let mut at = self.root()?;
        let mut walked = String::new();
        for (i, part) in parts.iter().enumerate() {
            if at.kind != Kind::Dir {
                return Err(BrowseError::NotADirectory {
                    path: format!("/{walked}"),
                });
            }
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
            if let Some(e) = self.child(&at, part)? {
                at = e;
                continue;
            }
            // The last component may name a stream: `file:stream`.
            if i + 1 == parts.len() {
                if let Some((file, stream)) = part.split_once(':') {
                    if let Some(f) = self.child(&at, file)? {
                        if let Some(s) = self.stream(&f, stream)? {
                            return Ok(s);
                        }
                    }
                }
            }
            return Err(BrowseError::NotFound {
                path: format!("/{walked}"),
            });
        }
        Ok(at)
    }

    /// The entries of the folder at `path`.
    fn list(&self, path: &str) -> Result<Vec<Entry>, BrowseError> {
        let dir = self.stat(path)?;
        if dir.kind != Kind::Dir {
            return Err(BrowseError::NotADirectory {
                path: path.to_owned(),
            });
        }
        self.children(&dir)
    }

    /// A reader of the file at `path` (`file:stream` for a stream).
    fn open_path(&self, path: &str) -> Result<FileReader, BrowseError> {
        let e = self.stat(path)?;
        match e.kind {
            Kind::File => self.open(&e),
            Kind::Dir => Err(BrowseError::NotAFile {
                path: path.to_owned(),
                what: "folder",
            }),
            Kind::Symlink { .. } => Err(BrowseError::NotAFile {
                path: path.to_owned(),
                what: "symbolic link",
            }),
            Kind::Other(what) => Err(BrowseError::NotAFile {
                path: path.to_owned(),
                what,
            }),
        }
    }
}

/// The names along `path`: empty parts and `.` dropped, `..` going up (never above the root).
pub fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p.to_owned()),
        }
    }
    out
}

/// Opens the filesystem in `part` (a partition, or a disk without a partition table) for browsing.
pub fn open(part: Arc<dyn ReadAt>) -> Result<Box<dyn Browse>, BrowseError> {
    let size = part.size().map_err(|source| BrowseError::Io {
        offset: 0,
        len: 0,
        source,
    })?;
    let probe = Vol::new(part.clone(), size, "partition");
    if size < 2048 {
        return Err(BrowseError::Unrecognised {
            what: format!("the partition holds only {size} bytes, too few for a filesystem"),
        });
    }
    let head = probe.read(0, 2048.min(size) as usize, "boot sector")?;
    if head.get(3..11) == Some(b"NTFS    ".as_slice()) {
        return Ok(Box::new(ntfs::Ntfs::open(Vol::new(part, size, "NTFS"))?));
    }
    if head.get(3..11) == Some(b"EXFAT   ".as_slice()) {
        return Ok(Box::new(exfat::Exfat::open(Vol::new(part, size, "exFAT"))?));
    }
    if le16(&head, 1024 + 0x38) == 0xEF53 {
        return Ok(Box::new(ext::Ext::open(Vol::new(part, size, "ext"))?));
    }
    if fat::looks_like_fat(&head) {
        return Ok(Box::new(fat::Fat::open(Vol::new(part, size, "FAT"))?));
    }
    Err(BrowseError::Unrecognised {
        what: what_is(part, size),
    })
}

/// What `part` holds when it is nothing [`open`] reads: another filesystem or a partition table, by
/// detection's name for it.
fn what_is(part: Arc<dyn ReadAt>, size: u64) -> String {
    use crate::detect::{detect_image, DetectOptions};
    let disk = detect_image(
        read::Cursor::new(part),
        size,
        "partition",
        &DetectOptions::default(),
    );
    if let Some(fs) = disk.fs {
        return format!("the partition holds {fs:?}, which cannot be browsed");
    }
    if !disk.partitions.is_empty() {
        return format!(
            "this is a whole disk with {} partitions; choose one of them",
            disk.partitions.len()
        );
    }
    "no filesystem was recognised in the partition".to_owned()
}

/// The largest single metadata read; bounds what a damaged length can make a reader allocate.
pub(crate) const MAX_READ: usize = 16 << 20;

/// The partition, as the readers see it: bounded reads whose failures name the structure.
#[derive(Clone)]
pub(crate) struct Vol {
    part: Arc<dyn ReadAt>,
    pub size: u64,
    pub fs: &'static str,
}

impl Vol {
    pub fn new(part: Arc<dyn ReadAt>, size: u64, fs: &'static str) -> Vol {
        Vol { part, size, fs }
    }

    /// `len` bytes of the structure `what` at byte `at`.
    pub fn read(&self, at: u64, len: usize, what: &str) -> Result<Vec<u8>, BrowseError> {
        if len > MAX_READ {
            return Err(self.corrupt(
                what,
                at,
                format!("it claims {len} bytes, more than any valid one"),
            ));
        }
        let mut buf = vec![0u8; len];
        self.read_into(at, &mut buf, what)?;
        Ok(buf)
    }

    /// Fills `buf` from byte `at`; a structure reaching past the partition is damage.
    pub fn read_into(&self, at: u64, buf: &mut [u8], what: &str) -> Result<(), BrowseError> {
        let len = buf.len() as u64;
        if at.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(self.corrupt(
                what,
                at,
                format!(
                    "{len} bytes there reach past the end of the partition ({} bytes)",
                    self.size
                ),
            ));
        }
        self.part
            .read_exact_at(buf, at)
            .map_err(|source| BrowseError::Io {
                offset: at,
                len,
                source,
            })
    }

    pub fn corrupt(&self, what: &str, at: u64, reason: impl Into<String>) -> BrowseError {
        BrowseError::Corrupt {
            fs: self.fs,
            structure: what.to_owned(),
            offset: at,
            reason: reason.into(),
        }
    }

    /// The error for a filesystem that claims `what` (its size), more than the partition holds.
    pub fn too_big(&self, structure: &str, at: u64, what: String) -> BrowseError {
        let size = self.size;
        self.corrupt(
            structure,
            at,
            format!(
                "{what} do not fit the partition's {size} bytes (a shrunk partition, or a damaged \
                 {structure})"
            ),
        )
    }

    pub fn unsupported(&self, what: impl Into<String>) -> BrowseError {
        BrowseError::Unsupported {
            fs: self.fs,
            what: what.into(),
        }
    }
}

/// Little-endian fields of a buffer; bytes past its end read as 0, so a short buffer can only make a
/// field look invalid, never panic.
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([byte(b, at), byte(b, at + 1)])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from(le16(b, at)) | u32::from(le16(b, at + 2)) << 16
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

pub(crate) fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// UTF-16LE code units of `b` (an odd last byte dropped) as text; unpaired surrogates become U+FFFD.
pub(crate) fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}
