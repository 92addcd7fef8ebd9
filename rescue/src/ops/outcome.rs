//! How an operation ended: one serialisable [`Outcome`] that the CLI's `--json`, a job's result file and
//! log, and the TUI's result screen all present.

use serde::Serialize;

use crate::detect::Disk;
use crate::store::grow::GrowReport;
use crate::units::{date_time, now_unix};

use super::Request;

/// A disk as an outcome records it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiskId {
    pub path: String,
    pub serial: Option<String>,
    pub model: Option<String>,
    pub size_bytes: u64,
}

impl From<&Disk> for DiskId {
    fn from(d: &Disk) -> Self {
        DiskId {
            path: d.path.clone(),
            serial: d.serial.clone(),
            model: d.model.as_ref().map(|m| m.trim().to_string()),
            size_bytes: d.size_bytes,
        }
    }
}

/// What an operation did, or why it failed. Fields that only some operations have are left out of the
/// JSON when absent.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    /// `capture`, `restore`, `clone`, `verify` or `grow`.
    pub action: String,
    pub image: Option<String>,
    pub source: Option<DiskId>,
    pub target: Option<DiskId>,
    pub root_hash: Option<String>,
    /// Bytes read (capture: the used data), written (restore), copied (clone) or checked (verify: the
    /// image file).
    pub bytes: u64,
    pub image_bytes: Option<u64>,
    /// Read back (restore, clone) or checked (verify, and a capture asked to verify its image).
    pub verified: bool,
    pub seconds: f64,
    pub started_unix: u64,
    /// Why the operation failed, for people.
    pub error: Option<String>,
    /// Unreadable source ranges: `(stream, start, end)` in disk bytes.
    pub unreadable: Vec<(String, u64, u64)>,
    pub notes: Vec<String>,
    pub tool_version: String,
    /// Where the log and this result were written.
    pub log: Option<String>,
    pub result_file: Option<String>,
    /// Capture: bytes of the image file written for data, and data found more than once and stored once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeated_bytes: Option<u64>,
    /// Capture: zero bytes read; restore: of `bytes`, the runs of zeros written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero_bytes: Option<u64>,
    /// Restore: free space discarded (not written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discarded_bytes: Option<u64>,
    /// Verify: what does not check out (empty when everything does).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Verify: source bytes recorded as unreadable at capture (bytes the image does not hold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable_bytes: Option<u64>,
    /// Growing the stick's data partition: what was done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grow: Option<GrowReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// Capture into a repository: the snapshot made (`NAME@TIME`) and the bytes it added to the
    /// repository (chunks it did not have).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_bytes: Option<u64>,
    /// Where the log and result go when not beside `image` as written (an image on a share: its local
    /// path there).
    #[serde(skip)]
    pub record_base: Option<std::path::PathBuf>,
}

impl Outcome {
    /// A run of `action` that has not done anything yet (and has not succeeded).
    pub fn new(action: &str, image: Option<String>) -> Outcome {
        Outcome {
            ok: false,
            action: action.to_string(),
            image,
            source: None,
            target: None,
            root_hash: None,
            bytes: 0,
            image_bytes: None,
            verified: false,
            seconds: 0.0,
            started_unix: now_unix(),
            error: None,
            unreadable: vec![],
            notes: vec![],
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            log: None,
            result_file: None,
            stored_bytes: None,
            repeated_bytes: None,
            snapshot: None,
            new_bytes: None,
            zero_bytes: None,
            discarded_bytes: None,
            problems: vec![],
            unreadable_bytes: None,
            grow: None,
            peak_rss_bytes: None,
            record_base: None,
        }
    }

    pub(super) fn of(req: &Request) -> Outcome {
        Outcome::new(req.action(), req.image().map(|l| l.to_string()))
    }

    /// Unreadable ranges as the engine reports them.
    pub(super) fn set_unreadable(&mut self, ranges: &[(String, std::ops::Range<u64>)]) {
        self.unreadable = ranges
            .iter()
            .map(|(s, r)| (s.clone(), r.start, r.end))
            .collect();
    }

    /// Lines for the console and the log.
    pub fn summary(&self) -> Vec<String> {
        let mut v = vec![format!(
            "{} {}: {}",
            date_time(self.started_unix),
            self.action,
            if self.ok { "OK" } else { "FAILED" }
        )];
        if let Some(i) = &self.image {
            v.push(format!("image {i}"));
        }
        for (what, d) in [("source", &self.source), ("target", &self.target)] {
            if let Some(d) = d {
                v.push(format!(
                    "{what} {} (serial {}, model {}, {} bytes)",
                    d.path,
                    d.serial.as_deref().unwrap_or("-"),
                    d.model.as_deref().unwrap_or("-"),
                    d.size_bytes
                ));
            }
        }
        if let Some(h) = &self.root_hash {
            v.push(format!("root hash {h}"));
        }
        v.push(format!(
            "{} bytes in {:.1} s{}",
            self.bytes,
            self.seconds,
            if self.verified { ", verified" } else { "" }
        ));
        for (s, a, b) in &self.unreadable {
            v.push(format!("unreadable on the source ({s}): bytes {a}..{b}"));
        }
        v.extend(self.problems.iter().map(|p| format!("problem: {p}")));
        v.extend(self.notes.iter().map(|n| format!("note: {n}")));
        if let Some(e) = &self.error {
            v.push(format!("error: {e}"));
        }
        v
    }
}
