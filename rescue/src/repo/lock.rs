//! Who may use a repository at once: `REPO/lock`, an advisory `flock`. Captures, restores, verifies and
//! exports hold it shared for as long as they run; prune holds it exclusively while it removes
//! snapshots and chunks. So a prune never removes a chunk a running capture has found in the repository
//! and is about to refer to, nor one a running restore still has to read; and a capture or restore that
//! starts while a prune runs is refused at once with the reason, never left half done. The kernel
//! releases the lock when the process ends, however it ends.

use super::config::Repo;

pub const LOCK_FILE: &str = "lock";

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct RepoLock {
    _held: super::backend::HeldLock,
}

impl Repo {
    /// The shared lock of an operation that reads the repository or adds to it.
    pub fn lock_shared(&self, what: &str) -> anyhow::Result<RepoLock> {
        match self.backend.try_lock(false) {
            Ok(Some(held)) => Ok(RepoLock { _held: held }),
            Ok(None) => anyhow::bail!(
                "a prune of the repository {} is running; {what} was not started (nothing was read \
                 or written). Run it again when the prune has finished",
                self.root.display()
            ),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("locking the repository {}", self.root.display()))),
        }
    }

    /// The exclusive lock of a prune.
    pub fn lock_exclusive(&self) -> anyhow::Result<RepoLock> {
        match self.backend.try_lock(true) {
            Ok(Some(held)) => Ok(RepoLock { _held: held }),
            Ok(None) => anyhow::bail!(
                "the repository {} is in use (a capture, restore, verify, export or another prune is \
                 running); nothing was removed. Prune when it has finished",
                self.root.display()
            ),
            Err(e) => Err(anyhow::Error::new(e)
                .context(format!("locking the repository {}", self.root.display()))),
        }
    }
}
