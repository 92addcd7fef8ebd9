//! An image repository (docs/REPOSITORY.md): every snapshot is a whole image index over shared,
//! content-addressed chunk objects, so no snapshot depends on another, removing one never breaks the
//! rest, and capturing an unchanged disk again stores almost nothing.
//!
//! A snapshot *is* an image of docs/FORMAT.md with its chunk frames kept apart: the snapshot file holds
//! the image's header, index and footer, and the index gives every chunk the offset its frame has in the
//! self-contained image. [`SnapshotImage`] reads a snapshot as that image (the frames read from the
//! chunk objects), so restore, verify and inspect are the image code unchanged, with every check it
//! makes, and exporting a snapshot is copying that image out: same bytes, same root hash.
//!
//! One concept per file:
//! - `backend`: where the objects live (a folder; S3 to come), as keys;
//! - `config`: the repository on a directory — creating, opening, its `rescue-repo` file, its folders;
//! - `chunks`: chunk objects (a frame header and a payload, named by the chunk's hash), written once;
//! - `snapshot`: snapshot files, naming and choosing snapshots (`NAME@TIME`);
//! - `vimage`: a snapshot read as the self-contained image;
//! - `check`: every snapshot and chunk checked, damage named with the snapshots it affects;
//! - `prune`: keep rules, then mark and sweep; `lock`: who may use the repository at once.

mod backend;
mod check;
mod chunks;
mod config;
mod crypt;
mod lock;
mod prune;
mod snapshot;
mod vimage;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests;

pub use self::backend::{Backend, DirBackend, HeldLock, S3Backend};
pub use self::check::{check, CheckReport};
pub use self::chunks::{ChunkStats, ChunkStore, ObjectInfo, RepoSink, SinkState, Stored};
pub use self::config::{NoRepository, Repo, RepoConfig, CONFIG_FILE, REPO_FORMAT, REPO_VERSION};
pub use self::crypt::{Inauthentic, KeySlot, Keys};
pub use self::lock::{RepoLock, LOCK_FILE};
pub use self::prune::{kept, prune, Keep, PruneReport};
pub use self::snapshot::{
    check_name, list, load, parse as parse_snapshot, resolve, write as write_snapshot,
    SnapshotEntry, SnapshotMeta, SnapshotRef, SnapshotSource, When,
};
pub use self::vimage::SnapshotImage;
