//! What a front end asks for: one [`Request`] per operation, with every default in one place, and how a
//! run is recorded ([`RunOptions`]).

use std::path::{Path, PathBuf};

use crate::engine::restore::UnusedPolicy;
use crate::plan::grow::GrowPlan;
use crate::url::Location;

/// Worker threads by default: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// zstd level of a new image unless asked otherwise.
pub const DEFAULT_LEVEL: i32 = crate::image::DEFAULT_LEVEL;

/// One operation, as every front end asks for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Capture(CaptureSpec),
    Restore(RestoreSpec),
    Clone(CloneSpec),
    Verify(VerifySpec),
    /// Grow the rescue stick's data partition as the plan the user confirmed says.
    Grow(Box<GrowPlan>),
    /// Copy files and folders out of an image's filesystem ([`super::files_get`]).
    CopyFiles(CopyFilesSpec),
}

/// Files and folders of one partition of an image, copied into a folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CopyFilesSpec {
    pub image: Location,
    /// The partition (`None`: the only one whose files can be read; see [`super::FilesSpec`]).
    pub partition: Option<u32>,
    /// Paths in the filesystem (`/` for everything).
    pub paths: Vec<String>,
    /// The folder they are copied into (made if missing; nothing in it is overwritten).
    pub out_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSpec {
    pub source: PathBuf,
    /// The image file (a path, `-` for stdout, or an `smb://`/`nfs://` URL).
    pub output: Location,
    pub partitions: Vec<u32>,
    pub raw: bool,
    /// Read every gap outside the partitions, however large (see [`crate::plan::SMALL_GAP`]).
    pub keep_unallocated: bool,
    pub level: i32,
    pub threads: usize,
    /// Store each 4 KiB block once (an image for format 1.1 readers).
    pub dedup: bool,
    /// Check the new image (every chunk and the root hash) once it is complete.
    pub verify: bool,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        CaptureSpec {
            source: PathBuf::new(),
            output: Location::default(),
            partitions: vec![],
            raw: false,
            keep_unallocated: false,
            level: DEFAULT_LEVEL,
            threads: default_threads(),
            dedup: true,
            verify: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestoreSpec {
    pub image: Location,
    pub target: PathBuf,
    pub partition: Option<u32>,
    pub to_partition: Option<u32>,
    /// The user confirmed that the target may be destroyed.
    pub confirmed: bool,
    /// Check every chunk the restore needs before the first write (see
    /// [`crate::engine::restore::RestoreOptions`]).
    pub precheck: bool,
    /// Read the target back and compare it with the image.
    pub verify: bool,
    pub unused: UnusedPolicy,
    pub threads: usize,
}

impl Default for RestoreSpec {
    fn default() -> Self {
        RestoreSpec {
            image: Location::default(),
            target: PathBuf::new(),
            partition: None,
            to_partition: None,
            confirmed: false,
            precheck: true,
            verify: true,
            unused: UnusedPolicy::Leave,
            threads: default_threads(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CloneSpec {
    pub source: PathBuf,
    pub target: PathBuf,
    pub raw: bool,
    pub confirmed: bool,
    pub verify: bool,
}

impl Default for CloneSpec {
    fn default() -> Self {
        CloneSpec {
            source: PathBuf::new(),
            target: PathBuf::new(),
            raw: false,
            confirmed: false,
            verify: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifySpec {
    pub image: Location,
    /// Also compare this device (or disk image file) with the image.
    pub against: Option<PathBuf>,
}

impl Request {
    /// The operation's name in results and logs: `capture`, `restore`, `clone`, `verify`, `grow`.
    pub fn action(&self) -> &'static str {
        match self {
            Request::Capture(_) => "capture",
            Request::Restore(_) => "restore",
            Request::Clone(_) => "clone",
            Request::Verify(_) => "verify",
            Request::Grow(_) => "grow",
            Request::CopyFiles(_) => "copy-files",
        }
    }

    /// One line saying what is done, for titles.
    pub fn title(&self) -> String {
        match self {
            Request::Capture(s) => {
                format!("Capture {} → {}", s.source.display(), s.output)
            }
            Request::Restore(s) => {
                format!("Restore {} → {}", s.image, s.target.display())
            }
            Request::Clone(s) => {
                format!("Clone {} → {}", s.source.display(), s.target.display())
            }
            Request::Verify(v) => format!("Verify {}", v.image),
            Request::Grow(p) => format!("Grow the data partition of the rescue stick {}", p.disk),
            Request::CopyFiles(s) => format!(
                "Copy {} from {} → {}",
                match s.paths.as_slice() {
                    [one] => one.clone(),
                    many => format!("{} files and folders", many.len()),
                },
                s.image,
                s.out_dir.display()
            ),
        }
    }

    /// The image the operation reads or writes: its log and result go beside it.
    pub fn image(&self) -> Option<&Location> {
        match self {
            Request::Capture(s) => Some(&s.output),
            Request::Restore(s) => Some(&s.image),
            Request::Verify(v) => Some(&v.image),
            // A copy's records go with the logs: the image may be on a drive that cannot be written.
            Request::Clone(_) | Request::Grow(_) | Request::CopyFiles(_) => None,
        }
    }

    /// The disks read (source) and written or compared (target), as paths.
    pub(super) fn disks(&self) -> (Option<&Path>, Option<&Path>) {
        match self {
            Request::Capture(s) => (Some(&s.source), None),
            Request::Restore(s) => (None, Some(&s.target)),
            Request::Clone(s) => (Some(&s.source), Some(&s.target)),
            Request::Verify(v) => (None, v.against.as_deref()),
            Request::Grow(p) => (None, Some(Path::new(&p.disk))),
            Request::CopyFiles(_) => (None, None),
        }
    }
}

/// What a run does besides the operation itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Create a capture's missing output folder (a place chosen on a store). A path typed by the user
    /// must exist: a typo does not create folders.
    pub create_folder: bool,
    /// Append the outcome to the log beside the image (`IMAGE.log`; `/run/rescue/logs/ACTION.log`
    /// without an image).
    pub log: bool,
    /// Write the outcome as JSON beside the image, one file per run (see [`super::record`]).
    pub result_file: bool,
    /// Passwords and CAs for network locations.
    pub net: super::NetOptions,
    /// A folder URL (`http(s)://…/`) the result file is also sent to with `PUT` (with `result_file`).
    pub results: Option<crate::url::Url>,
}
