//! Where a repository's objects live, as named objects (`rescue-repo`, `chunks/ab/ab12…`,
//! `snapshots/<id>.snap`): the operations every store must offer — a folder on a drive or a share
//! ([`DirBackend`]), an S3 bucket. Everything above it speaks of keys, never of paths.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A held lock of the repository; released when dropped.
pub type HeldLock = Box<dyn Send + Sync + Debug>;

pub trait Backend: Send + Sync + Debug {
    /// How the repository is named to people (a folder, a URL).
    fn describe(&self) -> String;
    /// The whole object, or `None` when there is none.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// `len` bytes from `offset` (an error when the object is shorter or absent).
    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The object's size, or `None` when there is none.
    fn size(&self, key: &str) -> io::Result<Option<u64>>;
    /// The object's size and its first `len` bytes (fewer when it is shorter), or `None` when there is
    /// none: one request where the store can answer both at once.
    fn size_and_start(&self, key: &str, len: usize) -> io::Result<Option<(u64, Vec<u8>)>> {
        let Some(size) = self.size(key)? else {
            return Ok(None);
        };
        let n = len.min(usize::try_from(size).unwrap_or(usize::MAX));
        Ok(Some((size, self.get_range(key, 0, n)?)))
    }
    /// Store a new object whole, only if there is none with this key: `false` when there is one (which
    /// is left as it is). `flush`: on the device before returning.
    fn put_new(&self, key: &str, data: &[u8], flush: bool) -> io::Result<bool>;
    /// Store an object whole, replacing one with this key.
    fn put_replace(&self, key: &str, data: &[u8]) -> io::Result<()>;
    /// Every object whose key starts with `prefix`, with its size.
    fn list(&self, prefix: &str) -> io::Result<Vec<(String, u64)>>;
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Everything stored so far on the device (`written` are the keys this process stored, for stores
    /// that can only flush object by object).
    fn sync(&self, written: &[String]) -> io::Result<()>;
    /// A lock of the repository: shared (captures, readers) or exclusive (prune); `None` when another
    /// holder excludes it.
    fn try_lock(&self, exclusive: bool) -> io::Result<Option<HeldLock>>;
    /// Files left by writers that stopped (removed by prune, under the exclusive lock).
    fn leftovers(&self) -> io::Result<Vec<String>>;
    fn remove_leftovers(&self) -> io::Result<u64>;
    /// The local path of an object, for a store on this machine's filesystems.
    fn local_path(&self, key: &str) -> Option<PathBuf>;
}

/// A repository in a folder (on a drive, or on a mounted share).
#[derive(Debug, Clone)]
pub struct DirBackend {
    root: PathBuf,
}

fn next() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl DirBackend {
    pub fn new(root: &Path) -> DirBackend {
        DirBackend {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Written whole under `tmp/` (flushed when asked), then renamed to `key`.
    fn stage(&self, key: &str, data: &[u8], flush: bool) -> io::Result<PathBuf> {
        use std::io::Write;
        let name = key.rsplit('/').next().unwrap_or(key);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{name}.{}.{}", std::process::id(), next()));
        let written = (|| -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            if flush {
                f.sync_all()?;
            }
            Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io::Error::new(
                e.kind(),
                format!("writing {}: {e}", tmp.display()),
            ));
        }
        let dest = self.path(key);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(tmp)
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Backend for DirBackend {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("reading {}: {e}", self.path(key).display()),
            )),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let path = self.path(key);
        let f = std::fs::File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut b = vec![0u8; len];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, offset)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
        Ok(b)
    }

    fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match std::fs::metadata(self.path(key)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put_new(&self, key: &str, data: &[u8], flush: bool) -> io::Result<bool> {
        let tmp = self.stage(key, data, flush)?;
        let dest = self.path(key);
        let renamed = match crate::sys::rename_noreplace(&tmp, &dest) {
            // File systems without RENAME_NOREPLACE: checked, then renamed (a race is left open).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !dest.exists() => {
                std::fs::rename(&tmp, &dest)
            }
            r => r,
        };
        match renamed {
            Ok(()) => {
                if flush {
                    if let Some(p) = dest.parent() {
                        sync_dir(p);
                    }
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists || dest.exists() => {
                let _ = std::fs::remove_file(&tmp);
                Ok(false)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(io::Error::new(
                    e.kind(),
                    format!("storing {}: {e}", dest.display()),
                ))
            }
        }
    }

    fn put_replace(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let tmp = self.stage(key, data, false)?;
        let dest = self.path(key);
        std::fs::rename(&tmp, &dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io::Error::new(e.kind(), format!("storing {}: {e}", dest.display()))
        })
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<(String, u64)>> {
        fn walk(
            root: &Path,
            dir: &Path,
            depth: usize,
            out: &mut Vec<(String, u64)>,
        ) -> io::Result<()> {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading {}: {e}", dir.display()),
                    ))
                }
            };
            for e in entries {
                let e = e?;
                let meta = e.metadata()?;
                let path = e.path();
                if meta.is_dir() {
                    if depth < 2 {
                        walk(root, &path, depth + 1, out)?;
                    }
                } else if let Ok(rel) = path.strip_prefix(root) {
                    out.push((rel.to_string_lossy().into_owned(), meta.len()));
                }
            }
            Ok(())
        }
        // The prefix names a folder (`chunks/`, `snapshots/`) or starts names in one.
        let (folder, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut out = Vec::new();
        walk(&self.root, &self.root.join(folder), 0, &mut out)?;
        out.retain(|(k, _)| k.starts_with(prefix));
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key);
        std::fs::remove_file(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("removing {}: {e}", path.display())))
    }

    fn sync(&self, written: &[String]) -> io::Result<()> {
        let dir = std::fs::File::open(&self.root)?;
        if nix::unistd::syncfs(&dir).is_ok() {
            return Ok(());
        }
        let mut folders = std::collections::BTreeSet::new();
        for key in written {
            let path = self.path(key);
            std::fs::File::open(&path)?.sync_all()?;
            if let Some(p) = path.parent() {
                folders.insert(p.to_path_buf());
            }
        }
        for d in folders {
            sync_dir(&d);
        }
        Ok(())
    }

    fn try_lock(&self, exclusive: bool) -> io::Result<Option<HeldLock>> {
        let path = self.root.join(super::lock::LOCK_FILE);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            // A repository on a read-only mount (a share or a drive mounted to read from): nobody can
            // prune it through this mount; a reader locks the lock file read-only, or needs no lock
            // when there is none (the repository was never written through a lock).
            Err(e) if !exclusive && e.raw_os_error() == Some(libc::EROFS) => {
                match std::fs::File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Ok(Some(Box::new(ReadOnlyMount)));
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("opening {}: {e}", path.display()),
                        ))
                    }
                }
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("opening {}: {e}", path.display()),
                ))
            }
        };
        let got = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match got {
            Ok(()) => Ok(Some(Box::new(file))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn leftovers(&self) -> io::Result<Vec<String>> {
        Ok(std::fs::read_dir(self.root.join("tmp"))?
            .flatten()
            .map(|e| format!("tmp/{}", e.file_name().to_string_lossy()))
            .collect())
    }

    fn remove_leftovers(&self) -> io::Result<u64> {
        let mut n = 0;
        for k in self.leftovers()? {
            if std::fs::remove_file(self.path(&k)).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        Some(self.path(key))
    }
}

/// The "lock" of a reader on a read-only mount without a lock file: nothing to hold.
#[derive(Debug)]
struct ReadOnlyMount;

/// A repository in an S3 bucket (under a prefix): objects are written whole (no partial object is ever
/// visible), so nothing is staged and nothing is left over. There are no `flock`s on S3: the repository's
/// locks are small objects under `locks/` (see [`Backend::try_lock`] on [`S3Backend`]).
#[derive(Debug)]
pub struct S3Backend {
    client: std::sync::Arc<crate::store::s3::S3Client>,
}

impl S3Backend {
    pub fn new(client: crate::store::s3::S3Client) -> S3Backend {
        S3Backend {
            client: std::sync::Arc::new(client),
        }
    }
}

/// Locks older than this are taken for those of a process that died without removing them.
const STALE_LOCK: u64 = 24 * 3600;

/// A lock object, removed when dropped.
#[derive(Debug)]
struct S3Lock {
    client: std::sync::Arc<crate::store::s3::S3Client>,
    key: String,
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        let _ = self.client.delete(&self.key);
    }
}

impl S3Backend {
    /// The live lock objects (not stale): (key, exclusive).
    fn locks(&self) -> io::Result<Vec<(String, bool)>> {
        let oldest = crate::units::iso_time(crate::units::now_unix().saturating_sub(STALE_LOCK));
        Ok(self
            .client
            .list("locks/")?
            .into_iter()
            .filter(|(_, _, modified)| modified.as_str() >= oldest.as_str())
            .map(|(k, _, _)| {
                let exclusive = k.starts_with("locks/exclusive-");
                (k, exclusive)
            })
            .collect())
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        self.client.shown().to_string()
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.client.get(key)
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.client.get_range(key, offset, len)
    }

    fn size(&self, key: &str) -> io::Result<Option<u64>> {
        self.client.head(key)
    }

    fn size_and_start(&self, key: &str, len: usize) -> io::Result<Option<(u64, Vec<u8>)>> {
        self.client.get_start(key, len)
    }

    /// Looked up, then stored: two writers of one key at the same moment may both store it. For chunk
    /// objects that is the same chunk (named by its hash); snapshot files and `rescue-repo` have names
    /// no other writer uses.
    fn put_new(&self, key: &str, data: &[u8], _flush: bool) -> io::Result<bool> {
        if self.client.head(key)?.is_some() {
            return Ok(false);
        }
        self.client.put(key, data)?;
        Ok(true)
    }

    fn put_replace(&self, key: &str, data: &[u8]) -> io::Result<()> {
        self.client.put(key, data)
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<(String, u64)>> {
        Ok(self
            .client
            .list(prefix)?
            .into_iter()
            .map(|(k, size, _)| (k, size))
            .collect())
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        self.client.delete(key)
    }

    /// An S3 server has every object it acknowledged.
    fn sync(&self, _written: &[String]) -> io::Result<()> {
        Ok(())
    }

    /// A lock object `locks/shared-…` or `locks/exclusive-…`, put after checking that no lock excludes
    /// it and checked again after: two that raced both see each other and the later one gives way.
    fn try_lock(&self, exclusive: bool) -> io::Result<Option<HeldLock>> {
        let conflicts = |locks: &[(String, bool)], mine: Option<&str>| {
            locks
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != mine)
                .any(|(_, other_exclusive)| exclusive || *other_exclusive)
        };
        if conflicts(&self.locks()?, None) {
            return Ok(None);
        }
        let id = crate::image::ImageId::generate();
        let key = format!(
            "locks/{}-{id}",
            if exclusive { "exclusive" } else { "shared" }
        );
        self.client.put(&key, b"")?;
        let lock = S3Lock {
            client: self.client.clone(),
            key,
        };
        if conflicts(&self.locks()?, Some(&lock.key)) {
            return Ok(None);
        }
        Ok(Some(Box::new(lock)))
    }

    fn leftovers(&self) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn remove_leftovers(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }
}
