//! Ctrl-C (SIGINT), SIGTERM and SIGHUP as a flag a job can be cancelled by: the first one sets
//! [`interrupted`]; a second one ends the process at once (after removing a partial image, see
//! [`super::on_abort`]). Also SIGPIPE's default action for listings.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if SIGNALLED.swap(true, Ordering::SeqCst) {
        // The second one: the default action (the process ends), with no partial image left behind.
        // Every call here is async-signal-safe.
        super::on_abort::remove_now();
        // SAFETY: resetting a handler and raising a signal from a signal handler is allowed by POSIX.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Catch SIGINT, SIGTERM and SIGHUP from now on; [`interrupted`] tells whether one arrived.
pub fn catch_interrupts() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches atomics and calls async-signal-safe functions.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// Whether one of the signals of [`catch_interrupts`] has arrived.
pub fn interrupted() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}

/// SIGPIPE's default action (the process ends quietly when its reader goes away), for commands that
/// only print. Call before any thread is started.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition; the caller calls it before starting threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
