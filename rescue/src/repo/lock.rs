//! Who may use a repository at once: `REPO/lock`, an advisory `flock`. Captures, restores, verifies and
//! exports hold it shared for as long as they run; prune holds it exclusively while it removes
//! snapshots and chunks. So a prune never removes a chunk a running capture has found in the repository
//! and is about to refer to, nor one a running restore still has to read; and a capture or restore that
//! starts while a prune runs is refused at once with the reason, never left half done. The kernel
//! releases the lock when the process ends, however it ends.

use std::fs::File;
use std::path::Path;

use anyhow::Context;

use super::config::Repo;

pub const LOCK_FILE: &str = "lock";

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

fn open(root: &Path) -> anyhow::Result<File> {
    let path = root.join(LOCK_FILE);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

impl Repo {
    /// The shared lock of an operation that reads the repository or adds to it.
    pub fn lock_shared(&self, what: &str) -> anyhow::Result<RepoLock> {
        let file = open(&self.root)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(RepoLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "a prune of the repository {} is running; {what} was not started (nothing was read \
                 or written). Run it again when the prune has finished",
                self.root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => Err(anyhow::Error::new(e)
                .context(format!("locking the repository {}", self.root.display()))),
        }
    }

    /// The exclusive lock of a prune.
    pub fn lock_exclusive(&self) -> anyhow::Result<RepoLock> {
        let file = open(&self.root)?;
        match file.try_lock() {
            Ok(()) => Ok(RepoLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "the repository {} is in use (a capture, restore, verify, export or another prune is \
                 running); nothing was removed. Prune when it has finished",
                self.root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => Err(anyhow::Error::new(e)
                .context(format!("locking the repository {}", self.root.display()))),
        }
    }
}
