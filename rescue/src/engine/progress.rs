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

/// The rate is measured over about this much of the recent past: long enough that chunks finishing in
/// bursts (every compressor at once, at high zstd levels) average out, short enough to follow a change of
/// pace (a partition of incompressible data after one of zeros).
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// No rate (and no time left) is claimed before this much time has passed: the first chunks say nothing
/// about the pace of the rest.
const SETTLE: Duration = Duration::from_secs(2);

/// Turns byte counts into rate limited events (at most every `every`). The rate is that of bytes finished
/// (not read ahead) over the last [`RATE_WINDOW`], so the time left follows what the job really achieves.
pub struct Meter {
    phase: &'static str,
    total: u64,
    done: u64,
    stored: u64,
    start: Instant,
    last_emit: Option<Instant>,
    /// (time, bytes done) at each event, the oldest at most one sample beyond the window.
    samples: std::collections::VecDeque<(Instant, u64)>,
    every: Duration,
    current: String,
    current_done: u64,
    current_total: u64,
    sink: Option<Sender<Progress>>,
}

impl Meter {
    pub fn new(phase: &'static str, total: u64, sink: Option<Sender<Progress>>) -> Self {
        Meter::starting_at(phase, total, sink, Instant::now())
    }

    fn starting_at(
        phase: &'static str,
        total: u64,
        sink: Option<Sender<Progress>>,
        start: Instant,
    ) -> Self {
        Meter {
            phase,
            total,
            done: 0,
            stored: 0,
            start,
            last_emit: None,
            samples: std::collections::VecDeque::from([(start, 0)]),
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
        self.emit(true, Instant::now());
    }

    pub fn advance(&mut self, bytes: u64, stored: u64) {
        self.advance_at(bytes, stored, Instant::now());
    }

    fn advance_at(&mut self, bytes: u64, stored: u64, now: Instant) {
        self.done += bytes;
        self.current_done += bytes;
        self.stored += stored;
        self.emit(false, now);
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
        self.emit(true, Instant::now());
    }

    pub fn snapshot(&self) -> Progress {
        self.snapshot_at(Instant::now())
    }

    /// Bytes per second over the window ending at `now`; `None` while too little time has passed.
    fn rate_at(&self, now: Instant) -> Option<f64> {
        if now.duration_since(self.start) < SETTLE {
            return None;
        }
        let &(t0, d0) = self.samples.front()?;
        let span = now.duration_since(t0).as_secs_f64();
        (span > 0.0).then(|| self.done.saturating_sub(d0) as f64 / span)
    }

    fn snapshot_at(&self, now: Instant) -> Progress {
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let rate = self.rate_at(now);
        let remaining = self.total.saturating_sub(self.done) as f64;
        Progress {
            phase: self.phase,
            bytes_done: self.done,
            bytes_total: self.total,
            bytes_stored: self.stored,
            rate: rate.unwrap_or(0.0),
            eta_seconds: match rate {
                _ if remaining == 0.0 => Some(0.0),
                Some(r) if r > 0.0 => Some(remaining / r),
                _ => None,
            },
            elapsed_seconds: elapsed,
            current: self.current.clone(),
            current_done: self.current_done,
            current_total: self.current_total,
        }
    }

    fn emit(&mut self, force: bool, now: Instant) {
        if let Some(last) = self.last_emit {
            if !force && now.duration_since(last) < self.every {
                return;
            }
        }
        self.last_emit = Some(now);
        self.samples.push_back((now, self.done));
        // Keep one sample at or before the window's start, so the window is always covered.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| now.duration_since(t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        if let Some(sink) = &self.sink {
            // A front end that went away must not stop the job.
            let _ = sink.send(self.snapshot_at(now));
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

    /// Chunks finishing in bursts after a fast start (level 19 compression): the rate is that of the
    /// recent past, not of the first bursts, and a burst of short events does not make it jump; no rate is
    /// claimed in the first seconds.
    #[test]
    fn the_rate_follows_bytes_finished_over_the_recent_past() {
        const MIB: u64 = 1 << 20;
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut m = Meter::starting_at("capture", 1000 * MIB, Some(tx), t0);
        // 16 MiB in the first 100 ms: no claim yet.
        m.advance_at(16 * MIB, 0, at(100));
        assert_eq!(m.snapshot_at(at(1000)).eta_seconds, None);
        // Then two 8 MiB chunks every second (16 MiB/s) for 30 s, each pair finishing 1 ms apart.
        for s in 1..=30u64 {
            m.advance_at(8 * MIB, 0, at(s * 1000));
            m.advance_at(8 * MIB, 0, at(s * 1000 + 1));
        }
        let p = m.snapshot_at(at(30_001));
        let rate = p.rate / MIB as f64;
        assert!((14.0..=18.0).contains(&rate), "rate {rate} MiB/s");
        let left = (400 - 16 - 30 * 16) as f64;
        let eta = p.eta_seconds.unwrap();
        assert!(left < 0.0 || (eta - left / 16.0).abs() < 2.0, "eta {eta}");
        // No event carried an absurd rate.
        for e in rx.try_iter() {
            assert!(e.rate < 64.0 * MIB as f64, "{e:?}");
        }
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
