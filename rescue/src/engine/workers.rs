//! The worker pool of restores and clones: items taken in order by a few threads, each with buffers of its
//! own; the first error (or a cancel) stops them all.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::EngineError;
use crate::sys::AlignedBuf;

/// Workers beyond the decompression threads: each worker waits for the disk part of the time (reading a
/// frame, writing pieces, reading back), so two more keep the disk busy while the others compute. Measured
/// on the benchmark: 2 workers on 2 cores 4.0-4.8 s, 3 or 4 workers 3.5-4.2 s, in alternating runs.
const IO_WORKERS: usize = 2;

/// The most workers: each holds up to 24 MiB of buffers (a chunk, its frame; a read-back span).
const MAX_WORKERS: usize = 8;

/// How many workers a job with `threads` compute threads runs: [`IO_WORKERS`] more, at most
/// [`MAX_WORKERS`].
pub(crate) fn count(threads: usize) -> usize {
    (threads.max(1) + IO_WORKERS).min(MAX_WORKERS)
}

/// Run `f` over `items` on `workers` threads, each with two page-aligned buffers of its own to reuse (a
/// chunk's bytes, and a frame's or a piece's); the first error, or `cancel`, stops the rest.
pub(crate) fn parallel<T: Sync>(
    items: &[T],
    workers: usize,
    cancel: &AtomicBool,
    f: impl Fn(&mut AlignedBuf, &mut AlignedBuf, &T) -> Result<(), EngineError> + Sync,
) -> Result<(), EngineError> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<EngineError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                let mut buf = AlignedBuf::with_capacity(crate::image::DEFAULT_CHUNK_SIZE as usize);
                let mut scratch = AlignedBuf::with_capacity(0);
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if cancel.load(Ordering::Relaxed) {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = failed.lock() {
                            slot.get_or_insert(EngineError::Cancelled);
                        }
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { return };
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        f(&mut buf, &mut scratch, item)
                    }))
                    .unwrap_or_else(|_| {
                        Err(EngineError::Internal("a worker thread panicked".into()))
                    });
                    if let Err(e) = r {
                        stop.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = failed.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
