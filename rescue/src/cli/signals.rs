//! Ctrl-C (SIGINT), SIGTERM and SIGHUP during a capture, restore, clone or verify: the job stops at its
//! next chunk and cleans up as after any failure (the source's read-only flag put back, the partial image
//! removed, a target's tables taken away, the error saying what state the target is in) rather than dying
//! with the source disk still read-only. A second signal ends the program at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if SIGNALLED.swap(true, Ordering::SeqCst) {
        // The second one: the default action (the process ends), with no partial image left behind.
        // Every call here is async-signal-safe.
        crate::sys::on_abort::remove_now();
        // SAFETY: resetting a handler and raising a signal from a signal handler is allowed by POSIX.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// A cancel flag for a job, set when one of the signals arrives.
pub fn cancel_on_signals() -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches an atomic and calls async-signal-safe functions.
        let _ = unsafe { sigaction(sig, &action) };
    }
    let flag = cancel.clone();
    std::thread::spawn(move || loop {
        if SIGNALLED.load(Ordering::SeqCst) {
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
