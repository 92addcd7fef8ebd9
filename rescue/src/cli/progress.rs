//! What a running operation shows on this terminal: a progress bar (or JSON lines with `--json`) and
//! warnings as they come.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{channel, Sender};

use serde_json::json;

use crate::ops::{self, Progress};
use crate::units::human_size;

/// Show progress: a one-line bar on a terminal, JSON lines with `--json`, nothing otherwise.
pub fn progress_printer(
    json_lines: bool,
) -> (
    Option<Sender<Progress>>,
    Option<std::thread::JoinHandle<()>>,
) {
    let tty = std::io::stderr().is_terminal();
    if !json_lines && !tty {
        return (None, None);
    }
    let (tx, rx) = channel::<Progress>();
    let handle = std::thread::spawn(move || {
        for p in rx {
            let mut err = std::io::stderr().lock();
            if json_lines {
                let _ = serde_json::to_writer(&mut err, &p);
                let _ = writeln!(err);
            } else {
                let pct = if p.bytes_total > 0 {
                    p.bytes_done as f64 * 100.0 / p.bytes_total as f64
                } else {
                    100.0
                };
                let eta = p
                    .eta_seconds
                    .map(|s| format!("{s:.0} s left"))
                    .unwrap_or_default();
                let _ = write!(
                    err,
                    "\r{} {:5.1}%  {} of {}  {}/s  {}  {:<40}",
                    p.phase,
                    pct,
                    human_size(p.bytes_done),
                    human_size(p.bytes_total),
                    human_size(p.rate as u64),
                    eta,
                    p.current
                );
            }
        }
        if !json_lines {
            let _ = writeln!(std::io::stderr());
        }
    });
    (Some(tx), Some(handle))
}

pub fn finish_progress(handle: Option<std::thread::JoinHandle<()>>) {
    if let Some(h) = handle {
        let _ = h.join();
    }
}

/// What a running operation shows on this terminal: progress (see [`progress_printer`]) and warnings,
/// printed as they come (a JSON line `{"warning": …}` with `--json`).
pub struct Printers {
    progress: Option<std::thread::JoinHandle<()>>,
    notices: std::thread::JoinHandle<()>,
}

/// An operation's control with this terminal's printers attached; `cancel` from Ctrl-C when `signals`.
pub fn control(json_lines: bool, signals: bool) -> (ops::Control, Printers) {
    let (progress, progress_handle) = progress_printer(json_lines);
    let (ntx, nrx) = channel::<String>();
    let notices = std::thread::spawn(move || {
        for n in nrx {
            if json_lines {
                eprintln!("{}", json!({ "warning": n }));
            } else {
                eprintln!("\rwarning: {n}");
            }
        }
    });
    let ctl = ops::Control {
        progress,
        notices: Some(ntx),
        cancel: if signals {
            ops::cancel_on_signals()
        } else {
            Default::default()
        },
    };
    (
        ctl,
        Printers {
            progress: progress_handle,
            notices,
        },
    )
}

impl Printers {
    /// Waits until everything sent has been printed (the operation has dropped its control).
    pub fn finish(self) {
        finish_progress(self.progress);
        let _ = self.notices.join();
    }
}
