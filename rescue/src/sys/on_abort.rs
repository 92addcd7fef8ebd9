//! A file to remove if the process is ended at once (a second Ctrl-C), when no destructor runs: the
//! partial image of a capture. The signal handler may only do async-signal-safe work, so the path is kept
//! as a ready C string behind an atomic pointer, and removal is a plain `unlink(2)`.

use std::ffi::{c_char, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

static PATH: AtomicPtr<c_char> = AtomicPtr::new(ptr::null_mut());

/// While held, [`remove_now`] removes `path`. One at a time: a newer guard replaces the older's path.
pub struct RemoveOnAbort(());

impl RemoveOnAbort {
    pub fn new(path: &Path) -> RemoveOnAbort {
        if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
            let old = PATH.swap(c.into_raw(), Ordering::SeqCst);
            free(old);
        }
        RemoveOnAbort(())
    }
}

impl Drop for RemoveOnAbort {
    fn drop(&mut self) {
        free(PATH.swap(ptr::null_mut(), Ordering::SeqCst));
    }
}

fn free(p: *mut c_char) {
    if !p.is_null() {
        // SAFETY: every non-null pointer stored in PATH came from `CString::into_raw`, and the swap that
        // took it out of PATH made it ours alone.
        drop(unsafe { CString::from_raw(p) });
    }
}

/// Removes the registered file, if any. Async-signal-safe: one atomic load and `unlink`. The string is
/// not freed (the process is about to end).
pub fn remove_now() {
    let p = PATH.swap(ptr::null_mut(), Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `p` is a NUL-terminated string from `CString::into_raw`, taken out of PATH by the swap
        // so no guard frees it meanwhile.
        unsafe {
            libc::unlink(p);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_registered_file_is_removed_only_while_registered() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.partial");
        std::fs::write(&a, b"x").unwrap();
        let guard = RemoveOnAbort::new(&a);
        drop(guard);
        remove_now();
        assert!(a.exists(), "removed after the guard was dropped");
        let _guard = RemoveOnAbort::new(&a);
        remove_now();
        assert!(!a.exists());
    }
}
