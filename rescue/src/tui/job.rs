//! Jobs the TUI runs in the background (capture, restore, clone, verify, growing the stick's data
//! partition): what is asked, how it is going, how it ended.

use std::path::PathBuf;

use crate::engine::progress::Progress;
use crate::ops;
use crate::plan::grow::GrowPlan;

/// A job the UI asks `term` to run.
#[derive(Debug, Clone, PartialEq)]
pub enum JobSpec {
    Capture(ops::CaptureSpec),
    Restore(ops::RestoreSpec),
    Clone(ops::CloneSpec),
    Verify(PathBuf),
    /// Grow the rescue stick's data partition as the plan the user confirmed says.
    Grow(Box<GrowPlan>),
}

impl JobSpec {
    pub fn title(&self) -> String {
        match self {
            JobSpec::Capture(s) => {
                format!("Capture {} → {}", s.source.display(), s.output.display())
            }
            JobSpec::Restore(s) => {
                format!("Restore {} → {}", s.image.display(), s.target.display())
            }
            JobSpec::Clone(s) => {
                format!("Clone {} → {}", s.source.display(), s.target.display())
            }
            JobSpec::Verify(p) => format!("Verify {}", p.display()),
            JobSpec::Grow(p) => format!("Grow the data partition of the rescue stick {}", p.disk),
        }
    }

    /// The image a job reads or writes: its log is written beside it.
    pub fn image(&self) -> Option<&PathBuf> {
        match self {
            JobSpec::Capture(s) => Some(&s.output),
            JobSpec::Restore(s) => Some(&s.image),
            JobSpec::Verify(p) => Some(p),
            JobSpec::Clone(_) | JobSpec::Grow(_) => None,
        }
    }
}

/// The job being run.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub spec: JobSpec,
    pub progress: Option<Progress>,
    /// Rate samples (bytes/s) for the sparkline, newest last.
    pub rates: Vec<u64>,
    pub cancel_requested: bool,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    pub ok: bool,
    pub title: String,
    /// What happened, one fact per line (root hash, sizes, time, warnings, or the error).
    pub lines: Vec<String>,
    pub log: Option<PathBuf>,
}
