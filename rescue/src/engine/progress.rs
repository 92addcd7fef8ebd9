//! Progress events: what every front end (CLI bar, `--json` lines, TUI) shows while a job runs.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// `capture`, `restore`, `verify` (an image's chunks), `compare` (a device with an image), `clone`, or
    /// `read-back` (a restore's or clone's verification pass).
    pub phase: &'static str,
    /// Bytes of the source (or image) processed so far, of `bytes_total`.
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes written to the image (capture) so far.
    pub bytes_stored: u64,
    /// Smoothed rate in bytes per second.
    pub rate: f64,
    pub eta_seconds: Option<f64>,
    pub elapsed_seconds: f64,
    /// What is being worked on: "partition 2 (ext4)", "gap at 1048576".
    pub current: String,
    /// Of the current stream: done and total bytes.
    pub current_done: u64,
    pub current_total: u64,
}

/// Turns byte counts into rate limited events (at most every `every`), with an exponentially smoothed
/// rate so the ETA does not jump with every chunk.
pub struct Meter {
    phase: &'static str,
    total: u64,
    done: u64,
    stored: u64,
    start: Instant,
    last_emit: Option<Instant>,
    last_done: u64,
    rate: f64,
    every: Duration,
    current: String,
    current_done: u64,
    current_total: u64,
    sink: Option<Sender<Progress>>,
}

impl Meter {
    pub fn new(phase: &'static str, total: u64, sink: Option<Sender<Progress>>) -> Self {
        Meter {
            phase,
            total,
            done: 0,
            stored: 0,
            start: Instant::now(),
            last_emit: None,
            last_done: 0,
            rate: 0.0,
            every: Duration::from_millis(250),
            current: String::new(),
            current_done: 0,
            current_total: 0,
            sink,
        }
    }

    pub fn set_current(&mut self, what: String, total: u64) {
        self.current = what;
        self.current_done = 0;
        self.current_total = total;
        self.emit(true);
    }

    pub fn advance(&mut self, bytes: u64, stored: u64) {
        self.done += bytes;
        self.current_done += bytes;
        self.stored += stored;
        self.emit(false);
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn stored(&self) -> u64 {
        self.stored
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Emit the final event regardless of the rate limit.
    pub fn finish(&mut self) {
        self.emit(true);
    }

    pub fn snapshot(&self) -> Progress {
        let elapsed = self.start.elapsed().as_secs_f64();
        let rate = if self.rate > 0.0 {
            self.rate
        } else if elapsed > 0.0 {
            self.done as f64 / elapsed
        } else {
            0.0
        };
        let remaining = self.total.saturating_sub(self.done) as f64;
        Progress {
            phase: self.phase,
            bytes_done: self.done,
            bytes_total: self.total,
            bytes_stored: self.stored,
            rate,
            eta_seconds: (rate > 0.0).then(|| remaining / rate),
            elapsed_seconds: elapsed,
            current: self.current.clone(),
            current_done: self.current_done,
            current_total: self.current_total,
        }
    }

    fn emit(&mut self, force: bool) {
        let now = Instant::now();
        if let Some(last) = self.last_emit {
            let dt = now.duration_since(last);
            if !force && dt < self.every {
                return;
            }
            let secs = dt.as_secs_f64();
            if secs > 0.0 {
                let instant = (self.done - self.last_done) as f64 / secs;
                self.rate = if self.rate == 0.0 {
                    instant
                } else {
                    0.7 * self.rate + 0.3 * instant
                };
            }
        }
        self.last_emit = Some(now);
        self.last_done = self.done;
        if let Some(sink) = &self.sink {
            // A front end that went away must not stop the job.
            let _ = sink.send(self.snapshot());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_totals_and_current_stream() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut m = Meter::new("capture", 100, Some(tx));
        m.set_current("partition 1 (ext4)".into(), 60);
        m.advance(30, 10);
        m.finish();
        let last = rx.try_iter().last().unwrap();
        assert_eq!(last.bytes_done, 30);
        assert_eq!(last.bytes_stored, 10);
        assert_eq!(last.current_done, 30);
        assert_eq!(last.current_total, 60);
        assert_eq!(last.current, "partition 1 (ext4)");
    }

    #[test]
    fn a_closed_sink_is_ignored() {
        let (tx, rx) = std::sync::mpsc::channel();
        drop(rx);
        let mut m = Meter::new("restore", 10, Some(tx));
        m.advance(10, 0);
        m.finish();
        assert_eq!(m.done(), 10);
    }
}
