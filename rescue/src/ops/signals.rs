//! Ctrl-C (SIGINT), SIGTERM and SIGHUP during a capture, restore, clone or verify: the job stops at its
//! next chunk and cleans up as after any failure (the source's read-only flag put back, the partial image
//! removed, a target's tables taken away, the error saying what state the target is in) rather than dying
//! with the source disk still read-only. A second signal ends the program at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A cancel flag for a job, set when one of the signals arrives (caught by `sys::signals`); the
/// message printed then is for a terminal.
pub fn cancel_on_signals() -> Arc<AtomicBool> {
    crate::sys::signals::catch_interrupts();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    std::thread::spawn(move || loop {
        if crate::sys::signals::interrupted() {
            eprintln!(
                "\nrescue: interrupted: stopping and cleaning up (a second Ctrl-C quits at once, removing a \
                 partial image but leaving a source disk read-only until `blockdev --setrw`)"
            );
            flag.store(true, Ordering::SeqCst);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    });
    cancel
}

/// For a program that only lists (disks, an image's contents): end quietly when the reader of its output
/// goes away (`rescue disks | head`), as other tools do.
pub fn end_on_closed_pipe() {
    crate::sys::signals::default_sigpipe();
}
