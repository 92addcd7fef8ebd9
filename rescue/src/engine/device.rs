//! The source and target of a job: a block device or an image file. A source is opened read-only and, when
//! it is a block device, also set read-only in the kernel for as long as we hold it, so that nothing — not
//! us, not a stray mount — can write to the disk being rescued. Reads survive bad sectors: a failing read
//! is retried, then narrowed down to the sector, and the unreadable sectors are reported, not fatal.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use crate::sys;
use crate::sys::direct::Direct;

mod target;
pub use target::Target;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("cannot open {path}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is in use (mounted, or open by another program; unmount it and close whatever uses it)")]
    Busy { path: PathBuf, source: io::Error },
    #[error("{path} is {what} right now; wait for that to finish")]
    InUse { path: PathBuf, what: &'static str },
    #[error("writing {path} at byte {offset} failed (the target may be failing)")]
    Write {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("reading {path} at byte {offset} failed")]
    Read {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error(
        "{path} is a {format} virtual disk file: writing a disk into it byte for byte would destroy \
         it, so nothing was written. Restore onto a disk or a raw image file (qemu-img convert makes \
         a {format} file of that)"
    )]
    VirtualDiskTarget { path: PathBuf, format: &'static str },
    #[error("flushing {path} failed (the data may not all be on the disk)")]
    Sync { path: PathBuf, source: io::Error },
}

/// Bytes read from a range, with the sub-ranges that could not be read (zero-filled in `data`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TolerantRead {
    pub data: Vec<u8>,
    pub unreadable: Vec<Range<u64>>,
}

/// Positional reads; a `File` in production, a medium with injected bad sectors in tests.
pub trait Medium: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Medium for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// A virtual machine's guest disk ([`crate::vdisk`]) as a medium.
struct VirtualMedium(std::sync::Arc<dyn crate::image::ReadAt>);

impl Medium for VirtualMedium {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }
}

/// A disk or image file being read.
pub struct Source {
    file: Box<dyn Medium>,
    /// Kept to clear the kernel read-only flag again on drop.
    block_fd: Option<File>,
    path: PathBuf,
    size: u64,
    sector: u32,
    /// Restores the kernel read-only flag to its previous value on drop.
    restore_rw: bool,
    /// How often a failing sector is retried before it is declared unreadable.
    pub retries: u32,
    /// The disk or file opened with O_DIRECT: for large aligned reads, and for narrowing failed reads
    /// down to the sector.
    direct: Direct,
}

pub(super) fn open_error(path: &Path, source: io::Error) -> DeviceError {
    if source.raw_os_error() == Some(libc::EBUSY) {
        DeviceError::Busy {
            path: path.to_path_buf(),
            source,
        }
    } else {
        DeviceError::Open {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A `flock` on a regular file, held while `file` is open: shared for sources, exclusive for targets, so
/// two jobs never write one file and none captures a file another writes (block devices have `O_EXCL` and
/// the kernel's read-only flag instead).
pub(super) fn lock_file(
    file: &File,
    path: &Path,
    exclusive: bool,
    what: &'static str,
) -> Result<(), DeviceError> {
    let r = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match r {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(DeviceError::InUse {
            path: path.to_path_buf(),
            what,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(open_error(path, e)),
    }
}

pub(super) fn is_block(file: &File) -> bool {
    file.metadata()
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

impl Source {
    /// Open a disk to capture it: on a block device the kernel's read-only flag is set while the source
    /// is held, so that nothing (not even a mount) changes it under the capture. Only for disks that
    /// nothing has mounted (the plan refuses mounted sources).
    pub fn open(path: &Path) -> Result<Source, DeviceError> {
        Source::open_with(path, true)
    }

    /// Open a disk only to look at it (used-space scans, comparing a device with an image) without
    /// touching the kernel's read-only flag: the disk may hold a mounted, writable filesystem.
    pub fn open_unlocked(path: &Path) -> Result<Source, DeviceError> {
        Source::open_with(path, false)
    }

    fn open_with(path: &Path, lock: bool) -> Result<Source, DeviceError> {
        let file = File::open(path).map_err(|e| open_error(path, e))?;
        let mut restore_rw = false;
        let (size, sector) = if is_block(&file) {
            let fd = file.as_fd();
            // Setting the flag needs CAP_SYS_ADMIN; without it we still only ever read.
            if lock && matches!(sys::block_read_only(fd), Ok(false)) {
                restore_rw = sys::set_block_read_only(fd, true).is_ok();
            }
            let size = sys::block_size_bytes(fd).map_err(|e| open_error(path, e))?;
            let (logical, _) = sys::block_sector_sizes(fd).unwrap_or((512, 512));
            (size, logical)
        } else {
            // A file being written by a restore or clone (which holds it exclusively) is not captured.
            if lock {
                lock_file(&file, path, false, "being written by a restore or clone")?;
            }
            // A virtual machine's disk file: its guest disk is the source (read through its tables,
            // never directly).
            let shared = file.try_clone().map_err(|e| open_error(path, e))?;
            if let Some(v) = crate::vdisk::open(std::sync::Arc::new(shared), path)
                .map_err(|e| open_error(path, e))?
            {
                let size = v.size().map_err(|e| open_error(path, e))?;
                // The reader holds a handle of the same open file: the lock stays while it is read.
                return Ok(Source::from_medium(
                    Box::new(VirtualMedium(v.disk)),
                    path,
                    size,
                    512,
                ));
            }
            (file.metadata().map_err(|e| open_error(path, e))?.len(), 512)
        };
        let block_fd = if restore_rw {
            file.try_clone().ok()
        } else {
            None
        };
        let direct = sys::open_direct(path);
        Ok(Source {
            file: Box::new(file),
            block_fd,
            path: path.to_path_buf(),
            size,
            sector,
            restore_rw,
            retries: 1,
            direct: Direct::new(direct),
        })
    }

    /// A source over any medium (tests inject read errors this way).
    pub fn from_medium(medium: Box<dyn Medium>, path: &Path, size: u64, sector: u32) -> Source {
        Source {
            file: medium,
            block_fd: None,
            path: path.to_path_buf(),
            size,
            sector,
            restore_rw: false,
            retries: 1,
            direct: Direct::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The device's logical sector size (512 for files): the precision of bad-sector reports.
    pub fn sector(&self) -> u32 {
        self.sector
    }

    /// Use another sector size for files (an image of a 4Kn disk).
    pub fn set_sector(&mut self, sector: u32) {
        self.sector = sector.max(512);
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| DeviceError::Read {
                path: self.path.clone(),
                offset,
                source,
            })
    }

    /// Read `len` bytes at `offset`, never failing on bad sectors: unreadable sectors are zero-filled and
    /// listed. Only a read past the end of the source is an error.
    pub fn read_tolerant(&self, offset: u64, len: usize) -> Result<TolerantRead, DeviceError> {
        let mut data = vec![0; len];
        let unreadable = self.read_tolerant_into(&mut data, offset)?;
        Ok(TolerantRead { data, unreadable })
    }

    /// [`Self::read_tolerant`] into the caller's buffer (all of it), so that buffers can be reused: returns
    /// the unreadable ranges (device offsets), which are zero-filled in `buf`.
    pub fn read_tolerant_into(
        &self,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<Vec<Range<u64>>, DeviceError> {
        if offset + buf.len() as u64 > self.size {
            return Err(DeviceError::Read {
                path: self.path.clone(),
                offset,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the device",
                ),
            });
        }
        // The usual case: one read, direct when the buffer and range allow it (no copy through the page
        // cache, which a rescue system's small memory cannot spare), else buffered. Only a failure is
        // narrowed down.
        if self.read_once(buf, offset) {
            return Ok(Vec::new());
        }
        let mut unreadable = Vec::new();
        let len = buf.len();
        self.fill(buf, &mut unreadable, offset, 0, len);
        Ok(unreadable)
    }

    /// One attempt at the whole range, nothing narrowed or retried: direct I/O where possible, buffered
    /// otherwise. False when it failed.
    pub fn read_once(&self, buf: &mut [u8], offset: u64) -> bool {
        self.direct
            .read_exact_at(buf, offset, self.sector, |b, at| {
                self.file.read_exact_at(b, at)
            })
            .is_ok()
    }

    fn try_read(&self, buf: &mut [u8], offset: u64) -> bool {
        (0..=self.retries).any(|_| self.narrow_read(buf, offset).is_ok())
    }

    /// Reads after a failure: direct I/O on a block device, so that a failing sector fails alone rather
    /// than with the rest of its page.
    fn narrow_read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self.direct.file() {
            Some(f) => sys::pread_direct(f, buf, offset),
            None => self.file.read_exact_at(buf, offset),
        }
    }

    /// Read `[at, at+len)` of `data` from `base + at`, halving failing ranges down to one sector.
    fn fill(
        &self,
        data: &mut [u8],
        unreadable: &mut Vec<Range<u64>>,
        base: u64,
        at: usize,
        len: usize,
    ) {
        let sector = self.sector as usize;
        let whole = len <= sector || !len.is_multiple_of(sector);
        let buf = &mut data[at..at + len];
        if whole || !at.is_multiple_of(sector) {
            if !self.try_read(buf, base + at as u64) {
                buf.fill(0);
                let start = base + at as u64;
                push_merged(unreadable, start..start + len as u64);
            }
            return;
        }
        if self.narrow_read(buf, base + at as u64).is_ok() {
            return;
        }
        let sectors = len / sector;
        let half = sectors / 2 * sector;
        self.fill(data, unreadable, base, at, half);
        self.fill(data, unreadable, base, at + half, len - half);
    }
}

fn push_merged(v: &mut Vec<Range<u64>>, r: Range<u64>) {
    if let Some(last) = v.last_mut() {
        if last.end == r.start {
            last.end = r.end;
            return;
        }
    }
    v.push(r);
}

impl Drop for Source {
    fn drop(&mut self) {
        if let (true, Some(f)) = (self.restore_rw, &self.block_fd) {
            let _ = sys::set_block_read_only(f.as_fd(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_read_and_write_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let t = Target::open(&p).unwrap();
        t.write_at(b"hello", 4096).unwrap();
        t.zero(0, 512).unwrap();
        t.sync().unwrap();
        drop(t);
        let s = Source::open(&p).unwrap();
        assert_eq!(s.size(), 8192);
        let r = s.read_tolerant(0, 8192).unwrap();
        assert!(r.unreadable.is_empty());
        assert_eq!(&r.data[4096..4101], b"hello");
        assert!(r.data[..512].iter().all(|&b| b == 0));
        assert_eq!(r.data[512], 7);
        assert!(s.read_tolerant(8000, 512).is_err(), "past the end");
    }

    /// Fails every read that touches a bad sector, like a disk with media errors.
    struct Flaky {
        data: Vec<u8>,
        bad: Vec<Range<u64>>,
    }

    impl Medium for Flaky {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let r = offset..offset + buf.len() as u64;
            if self.bad.iter().any(|b| b.start < r.end && r.start < b.end) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            buf.copy_from_slice(&self.data[r.start as usize..r.end as usize]);
            Ok(())
        }
    }

    #[test]
    fn bad_sectors_are_narrowed_to_the_sector() {
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 + 1).collect();
        let bad = vec![4096..4608, 5120..6144, 1_000_448..1_000_960];
        let s = Source::from_medium(
            Box::new(Flaky {
                data: data.clone(),
                bad: bad.clone(),
            }),
            Path::new("flaky"),
            1 << 20,
            512,
        );
        let r = s.read_tolerant(0, 1 << 20).unwrap();
        assert_eq!(r.unreadable, bad);
        for (i, (&got, &want)) in r.data.iter().zip(&data).enumerate() {
            let is_bad = bad.iter().any(|b| b.contains(&(i as u64)));
            assert_eq!(got, if is_bad { 0 } else { want }, "byte {i}");
        }
    }

    /// Needs root and loop devices (CI and the development machines have both).
    #[test]
    fn a_block_device_source_is_read_only_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        std::fs::write(&file, vec![1u8; 4 << 20]).unwrap();
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
            .expect("losetup (util-linux) runs");
        assert!(
            out.status.success(),
            "losetup failed (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let loopdev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let ro = || {
            std::fs::read_to_string(format!(
                "/sys/block/{}/ro",
                loopdev.trim_start_matches("/dev/")
            ))
            .unwrap()
        };
        let result = std::panic::catch_unwind(|| {
            let source = Source::open(Path::new(&loopdev)).unwrap();
            assert_eq!(
                ro().trim(),
                "1",
                "the kernel read-only flag is set while the source is held"
            );
            assert_eq!(source.size(), 4 << 20);
            assert!(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&loopdev)
                    .and_then(|f| {
                        use std::io::Write;
                        (&f).write_all(&[0u8; 512])
                    })
                    .is_err(),
                "writes to the held source are refused"
            );
            drop(source);
            assert_eq!(ro().trim(), "0", "the flag is cleared again afterwards");
            // Looking at a disk (which may hold a mounted filesystem) leaves the flag alone.
            let look = Source::open_unlocked(Path::new(&loopdev)).unwrap();
            assert_eq!(
                ro().trim(),
                "0",
                "open_unlocked must not set the read-only flag"
            );
            assert_eq!(look.size(), 4 << 20);
        });
        let _ = std::process::Command::new("losetup")
            .arg("-d")
            .arg(&loopdev)
            .status();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }

    #[test]
    fn missing_paths_are_named() {
        let e = Source::open(Path::new("/nonexistent/disk")).err().unwrap();
        assert!(e.to_string().contains("/nonexistent/disk"), "{e}");
    }
}
