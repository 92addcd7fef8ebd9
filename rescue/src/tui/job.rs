//! Jobs the TUI runs in the background (capture, restore, clone, verify, growing the stick's data
//! partition, copying files out of an image): what is asked, how it is going, how it ended.

use std::path::PathBuf;

use crate::ops::{Outcome, Progress, Request};
use crate::units::human_size;

/// The job being run.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub spec: Request,
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

impl JobResult {
    /// The result screen for `req`'s outcome: one fact per line.
    pub fn of(req: &Request, out: &Outcome) -> JobResult {
        let mut lines = Vec::new();
        match (req, &out.error) {
            (Request::Verify(_), _) if !out.problems.is_empty() => {}
            (_, Some(e)) => failure_lines(&mut lines, req, e),
            _ => {}
        }
        if out.ok || !out.problems.is_empty() {
            success_lines(&mut lines, req, out);
        }
        lines.push(format!("Time: {:.1} s", out.seconds));
        JobResult {
            ok: out.ok,
            title: req.title(),
            lines,
            log: out.log.as_ref().map(PathBuf::from),
        }
    }
}

fn failure_lines(lines: &mut Vec<String>, req: &Request, err: &str) {
    lines.push(format!("Error: {err}"));
    match req {
        Request::Restore(s) => lines.push(format!(
            "{} may now hold a partial restore with no valid partition table; restore again before using it",
            s.target.display()
        )),
        Request::Clone(s) => lines.push(format!(
            "{} may now hold a partial copy with no valid partition table",
            s.target.display()
        )),
        Request::Capture(s) => lines.push(format!(
            "No image was left at {} (the unfinished file was removed)",
            s.output
        )),
        Request::CopyFiles(s) => lines.push(format!(
            "What was copied stays in {}; nothing there was overwritten",
            s.out_dir.display()
        )),
        Request::Verify(_) | Request::Grow(_) => {}
    }
}

/// A line for each range the source could not give, written as zeros on the target.
fn unreadable_lines(lines: &mut Vec<String>, out: &Outcome, why: &str) {
    for (stream, start, end) in &out.unreadable {
        lines.push(format!(
            "{stream}: bytes {start}..{end} {why}; written as zeros"
        ));
    }
}

fn success_lines(lines: &mut Vec<String>, req: &Request, out: &Outcome) {
    let notes = out.notes.iter().map(|n| format!("Note: {n}"));
    match req {
        Request::Capture(s) => {
            lines.push(format!("Image: {}", s.output));
            lines.push(format!(
                "Root hash: {}",
                out.root_hash.as_deref().unwrap_or("-")
            ));
            let image_bytes = out.image_bytes.unwrap_or(0);
            lines.push(format!(
                "Read {} of used data; image {} ({} bytes)",
                human_size(out.bytes),
                human_size(image_bytes),
                image_bytes
            ));
            for (stream, start, end) in &out.unreadable {
                lines.push(format!(
                    "Unreadable on the source ({stream}): bytes {start}..{end}, saved as a hole"
                ));
            }
            lines.extend(notes);
        }
        Request::Restore(s) => {
            lines.push(format!(
                "Wrote {} onto {}{}",
                human_size(out.bytes),
                s.target.display(),
                if out.verified {
                    "; read back and verified"
                } else {
                    " (not verified)"
                }
            ));
            unreadable_lines(lines, out, "were unreadable when captured");
            lines.extend(notes);
        }
        Request::Clone(s) => {
            lines.push(format!(
                "Copied {} from {} onto {}{}",
                human_size(out.bytes),
                s.source.display(),
                s.target.display(),
                if out.verified {
                    "; read back and verified"
                } else {
                    ""
                }
            ));
            unreadable_lines(lines, out, "could not be read from the source");
            lines.extend(notes);
        }
        Request::Verify(_) => {
            lines.push(format!(
                "Root hash: {}",
                out.root_hash.as_deref().unwrap_or("-")
            ));
            if out.problems.is_empty() {
                lines.push("Every chunk and the root hash check out".into());
            }
            lines.extend(out.problems.iter().map(|p| format!("Problem: {p}")));
        }
        Request::CopyFiles(s) => {
            lines.push(format!(
                "Copied {} into {}",
                human_size(out.bytes),
                s.out_dir.display()
            ));
            lines.extend(out.problems.iter().map(|p| format!("Problem: {p}")));
            lines.extend(notes);
        }
        Request::Grow(p) => {
            if let Some(r) = &out.grow {
                lines.extend(super::grow::result_lines(p, r));
            }
        }
    }
}
