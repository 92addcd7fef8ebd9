//! Whole operations, from a [`Request`] to an [`Outcome`]: detect, plan (with every refusal), open, run
//! the engine and finish (fsync, rename), then record (the log and result file beside the image). The
//! CLI, the TUI and jobs build a request, call [`run`] and present the outcome; they reach the layers
//! below only through the types re-exported here.
//!
//! - `request`: what can be asked ([`Request`], each operation's spec with its defaults, [`RunOptions`]);
//! - `run`: the one entry point, and the records it leaves ([`record`]);
//! - `outcome`: what is reported ([`Outcome`]);
//! - `capture`, `restore` (and clone), `verify`, `grow`: each operation, from paths to the engine;
//! - `export`: an image written as a virtual machine's disk file ([`export_disk`]);
//! - `serve`: an image's disk as an NBD export ([`serve`]); `disk` opens any image as the disk it holds;
//! - `files`: the files inside an image's partition listed and copied out ([`files_list`], [`files_get`]);
//! - `clonezilla`: Clonezilla directories and partclone images restored, verified and described;
//! - `inspect`: what an image holds, for `inspect` and the restore wizard ([`ImageInfo`]);
//! - `usage`: used bytes of filesystems, for the TUI's overview;
//! - `network`: the network links, and bringing them up.

mod capture;
mod clonezilla;
mod credentials;
mod disk;
mod export;
mod files;
mod grow;
mod inspect;
mod network;
mod outcome;
mod place;
mod repo;
mod request;
mod restore;
mod run;
mod serve;
mod signals;
mod usage;
mod verify;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_grow;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use anyhow::bail;

use crate::detect::{self, DetectOptions, Disk};

pub use self::clonezilla::{import_clonezilla, is_clonezilla, ClonezillaImported};
pub use self::export::{export_disk, DiskExported, ExportSpec};
pub use self::files::{
    files_get, files_list, FileEntry, FileKind, FilesGot, FilesSpec, Listing, Summary,
};
pub use self::inspect::{inspect, inspect_virtual, ImageInfo, StreamSummary, VirtualInfo};
pub use self::network::{bring_up, links, Link, LinkOutcome};
pub use self::outcome::{DiskId, Outcome};
pub use self::request::{
    default_threads, CaptureSpec, CloneSpec, CopyFilesSpec, Request, RestoreSpec, RunOptions,
    VerifySpec, DEFAULT_LEVEL,
};
pub use self::run::{record, run};
pub use self::serve::{default_socket, serve, ServeSpec, Serving};
pub use self::signals::{cancel_on_signals, end_on_closed_pipe};
pub use self::usage::filesystem_usage;

/// An image named as a path or a URL.
pub use self::credentials::{
    parse_credentials, read_passphrase_file, PASSPHRASE_VAR, PASSWORD_VAR,
};
pub use self::place::{check_location, fetch, sftp_host_key, NetOptions};
pub use self::repo::{
    capture_repo, check_repo, export, find_repositories, import, init_repo, list_snapshots,
    look_at_repo, prune_repo, Exported, FoundRepo, Imported, RepoCapture, RepoState,
};
/// Progress events of a running operation.
pub use crate::engine::progress::Progress;
/// What a restore does with the filesystems' free space.
pub use crate::engine::restore::UnusedPolicy;
/// What an image records about its source and its making.
pub use crate::image::{CreationInfo, DiskInfo, PartitionInfo, TableKind};
pub use crate::store::sftp::HostKey;
pub use crate::url::{Location, Secret};
/// Virtual disk formats an image can be exported to, and qcow2's compression.
pub use crate::vdisk::write::{Compress, Target as DiskFormat};

/// How a running operation is observed and stopped.
#[derive(Clone, Default)]
pub struct Control {
    /// Set to stop the operation at the next chunk; it then fails with "cancelled".
    pub cancel: Arc<AtomicBool>,
    pub progress: Option<Sender<Progress>>,
    /// Warnings to show at once, while the operation goes on (a destination that may be too small).
    pub notices: Option<Sender<String>>,
}

/// Options for the running system: the real sysfs, /dev and mount table, and the boot medium's identity
/// from the kernel command line.
pub fn detect_options() -> DetectOptions {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    DetectOptions {
        boot_disk_guid: crate::init::cmdline::param(&cmdline, "rescue.stick"),
        ..DetectOptions::default()
    }
}

/// An error and its causes as one line for the user (what `{e:#}` prints), leaving out a cause whose text
/// the line already holds: many errors name their OS error in their own message and keep it as their
/// source too.
pub fn describe(e: &anyhow::Error) -> String {
    crate::units::chain(e.as_ref())
}

/// Detect one disk (device or image file), or fail saying why.
pub fn detect_one(path: &Path, opts: &DetectOptions) -> anyhow::Result<Disk> {
    let report = detect::detect_paths(&[path.to_path_buf()], opts);
    let problems = match report.disks.into_iter().next() {
        Some(d) if d.size_bytes > 0 => return Ok(d),
        Some(d) => d.problems,
        None => report.problems,
    };
    let said = problems.join("; ");
    if said.is_empty() {
        bail!(
            "{} has no size (0 bytes): it holds no disk; check that you named the right device or file",
            path.display()
        );
    }
    if said.contains(&*path.to_string_lossy()) {
        bail!("{said}")
    }
    bail!("{}: {said}", path.display())
}

/// [`detect_one`] for a disk to be written: an empty file gets the advice to give it a size.
fn detect_target(path: &Path, opts: &DetectOptions) -> anyhow::Result<Disk> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        bail!(
            "{p} is empty (0 bytes): a file to restore or clone into needs the size of the disk it stands \
             for; give it one first (e.g. truncate -s 64G {p}) or name a disk",
            p = path.display()
        );
    }
    detect_one(path, opts)
}

/// The peak resident memory of this process so far (`VmHWM`), for reports.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
