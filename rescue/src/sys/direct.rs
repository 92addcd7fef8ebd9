//! A second descriptor of a file or device opened with `O_DIRECT`, beside the ordinary one: aligned I/O
//! goes through it (no copy through the page cache), until the file system refuses direct I/O as invalid
//! (`EINVAL`: FUSE, tmpfs), after which everything goes through the ordinary descriptor for good.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

use super::aligned::fits_direct_io;

pub struct Direct {
    file: Option<File>,
    /// Cleared when the direct descriptor refuses a request as invalid.
    works: AtomicBool,
}

impl Direct {
    /// `file` is the `O_DIRECT` descriptor, `None` where it could not be opened.
    pub fn new(file: Option<File>) -> Direct {
        Direct {
            works: AtomicBool::new(file.is_some()),
            file,
        }
    }

    /// The direct descriptor, whether or not it has refused a request (for sector-sized retries, which
    /// must not go through the page cache).
    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// `direct` through the direct descriptor when the request is `aligned` (see [`fits_direct_io`]) and
    /// direct I/O still works, else `buffered`. A request refused as invalid is done `buffered`, and so is
    /// every later one; any other error of `direct` is returned.
    pub fn io<T>(
        &self,
        aligned: bool,
        direct: impl FnOnce(&File) -> io::Result<T>,
        buffered: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        match self.usable(aligned) {
            Some(f) => match direct(f) {
                Err(e) if self.refused(&e) => buffered(),
                r => r,
            },
            None => buffered(),
        }
    }

    /// Fill `buf` from `offset`: directly when the request fits direct I/O on `sector`-sized sectors,
    /// otherwise (or once refused) with `buffered`, as [`Self::io`].
    pub fn read_exact_at(
        &self,
        buf: &mut [u8],
        offset: u64,
        sector: u32,
        buffered: impl FnOnce(&mut [u8], u64) -> io::Result<()>,
    ) -> io::Result<()> {
        match self.usable(fits_direct_io(buf, offset, sector)) {
            Some(f) => match f.read_exact_at(buf, offset) {
                Err(e) if self.refused(&e) => buffered(buf, offset),
                r => r,
            },
            None => buffered(buf, offset),
        }
    }

    fn usable(&self, aligned: bool) -> Option<&File> {
        self.file
            .as_ref()
            .filter(|_| aligned && self.works.load(Ordering::Relaxed))
    }

    /// True (and direct I/O off from now on) when `e` says the file system does not take direct I/O.
    fn refused(&self, e: &io::Error) -> bool {
        let invalid = e.raw_os_error() == Some(libc::EINVAL);
        if invalid {
            self.works.store(false, Ordering::Relaxed);
        }
        invalid
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_request_refused_as_invalid_turns_direct_io_off_for_good() {
        let file = File::open("/dev/null").unwrap();
        let d = Direct::new(Some(file));
        let invalid = |_: &File| Err::<&str, _>(io::Error::from_raw_os_error(libc::EINVAL));
        assert_eq!(
            d.io(true, |_| Ok("direct"), || Ok("buffered")).unwrap(),
            "direct"
        );
        assert_eq!(
            d.io(false, |_| Ok("direct"), || Ok("buffered")).unwrap(),
            "buffered"
        );
        assert_eq!(d.io(true, invalid, || Ok("buffered")).unwrap(), "buffered");
        assert_eq!(
            d.io(true, |_| Ok("direct"), || Ok("buffered")).unwrap(),
            "buffered"
        );
        assert!(d.file().is_some(), "still there for sector retries");
        // Any other error is the request's own.
        let d = Direct::new(Some(File::open("/dev/null").unwrap()));
        let eio = |_: &File| Err::<&str, _>(io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(
            d.io(true, eio, || Ok("buffered"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EIO)
        );
        assert_eq!(
            d.io(true, |_| Ok("direct"), || Ok("buffered")).unwrap(),
            "direct"
        );
        let none = Direct::new(None);
        assert_eq!(
            none.io(true, |_| Ok("direct"), || Ok("buffered")).unwrap(),
            "buffered"
        );
    }
}
