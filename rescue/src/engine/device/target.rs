//! A disk or file being written: exclusive on block devices, direct I/O for aligned buffers, write errors
//! reported with the offset of the first failing sector.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{is_block, lock_file, open_error, DeviceError};
use crate::sys;
use crate::sys::direct::Direct;

/// A disk or file being written (restore, clone).
pub struct Target {
    file: File,
    /// The same device or file opened with O_DIRECT: large aligned writes and read-backs go through it,
    /// with no copy into the page cache and each write's error reported by that write.
    direct: Direct,
    path: PathBuf,
    size: u64,
    sector: u32,
    block: bool,
}

impl Target {
    /// Open for writing. Block devices are opened exclusively (`O_EXCL`): the kernel refuses while any
    /// partition is mounted or another program holds it exclusively.
    pub fn open(path: &Path) -> Result<Target, DeviceError> {
        let probe = File::open(path).map_err(|e| open_error(path, e))?;
        let block = is_block(&probe);
        if !block {
            if let Some(f) = crate::vdisk::sniff(&probe) {
                return Err(DeviceError::VirtualDiskTarget {
                    path: path.to_path_buf(),
                    format: f.name(),
                });
            }
        }
        drop(probe);
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if block {
            opts.custom_flags(libc::O_EXCL);
        }
        let file = opts.open(path).map_err(|e| open_error(path, e))?;
        let (size, sector) = if block {
            let fd = file.as_fd();
            let size = sys::block_size_bytes(fd).map_err(|e| open_error(path, e))?;
            (
                size,
                sys::block_sector_sizes(fd).map(|s| s.0).unwrap_or(512),
            )
        } else {
            lock_file(
                &file,
                path,
                true,
                "being written or captured by another job",
            )?;
            (file.metadata().map_err(|e| open_error(path, e))?.len(), 512)
        };
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        Ok(Target {
            file,
            direct: Direct::new(direct),
            path: path.to_path_buf(),
            size,
            sector,
            block,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn sector(&self) -> u32 {
        self.sector
    }

    pub fn is_block_device(&self) -> bool {
        self.block
    }

    /// The open device or file, for code that works through `Read`/`Write`/`Seek` (`&File` implements
    /// them), such as a filesystem formatter writing into a [`crate::store::region::Region`].
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Write `data` at `offset`. On a block device the range is also flushed to the device before this
    /// returns, so that a write error is reported here, with its offset, rather than later by a flush that
    /// cannot say where; a failing range is then narrowed to the first failing sector.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<(), DeviceError> {
        let err = |offset, source| DeviceError::Write {
            path: self.path.clone(),
            offset,
            source,
        };
        // A direct write is on the device (or its cache, flushed by `sync`) when it returns.
        let result = self.direct.io(
            sys::aligned::fits_direct_io(data, offset, self.sector),
            |direct| direct.write_all_at(data, offset),
            || self.buffered_write(data, offset),
        );
        match result {
            Ok(()) => Ok(()),
            Err(source) if self.block && data.len() > self.sector as usize => {
                let sector = self.sector as usize;
                for (i, piece) in data.chunks(sector).enumerate() {
                    let at = offset + (i * sector) as u64;
                    if let Err(e) = self
                        .file
                        .write_all_at(piece, at)
                        .and_then(|()| self.flush_range(at, piece.len() as u64))
                    {
                        return Err(err(at, e));
                    }
                }
                Err(err(offset, source))
            }
            Err(source) => Err(err(offset, source)),
        }
    }

    fn buffered_write(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file
            .write_all_at(data, offset)
            .and_then(|()| self.flush_range(offset, data.len() as u64))
    }

    fn flush_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.block {
            sys::flush_range(self.file.as_fd(), offset, len)
        } else {
            Ok(())
        }
    }

    /// Read from the device (direct I/O when `buf` is aligned, so the read-back sees the device rather than
    /// the page cache).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        let result = self
            .direct
            .read_exact_at(buf, offset, self.sector, |b, at| {
                FileExt::read_exact_at(&self.file, b, at)
            });
        result.map_err(|source| DeviceError::Read {
            path: self.path.clone(),
            offset,
            source,
        })
    }

    /// Make `[offset, offset+len)` read as zeros: the device's zero-out, else plain zero writes.
    pub fn zero(&self, offset: u64, len: u64) -> Result<(), DeviceError> {
        if self.block && sys::zero_out(self.file.as_fd(), offset, len).is_ok() {
            return Ok(());
        }
        if !self.block {
            // A file target (an image of a disk): punch a hole, which reads as zeros and costs no writes.
            use nix::fcntl::{fallocate, FallocateFlags};
            let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            if let (Ok(off), Ok(l)) = (i64::try_from(offset), i64::try_from(len)) {
                if fallocate(&self.file, flags, off, l).is_ok() {
                    return Ok(());
                }
            }
        }
        let buf = vec![0u8; 1 << 20];
        let mut pos = offset;
        while pos < offset + len {
            let n = (offset + len - pos).min(buf.len() as u64) as usize;
            self.write_at(&buf[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Tell the device a range is unused (TRIM). Best effort: devices without discard just keep the bytes.
    pub fn discard(&self, offset: u64, len: u64) {
        if self.block {
            let _ = sys::discard(self.file.as_fd(), offset, len);
        }
    }

    pub fn sync(&self) -> Result<(), DeviceError> {
        self.file.sync_all().map_err(|source| DeviceError::Sync {
            path: self.path.clone(),
            source,
        })
    }

    /// Drop the target's pages from the page cache (after `sync`), so that a read-back verification reads
    /// the device rather than our own writes still in memory.
    pub fn drop_cache(&self) {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        let _ = posix_fadvise(&self.file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }

    /// Have the kernel pick up the new partition table. Best effort: a busy disk keeps the old view until
    /// reboot, which the caller reports.
    pub fn reread_partitions(&self) -> io::Result<()> {
        if self.block {
            sys::reread_partition_table(self.file.as_fd())
        } else {
            Ok(())
        }
    }
}
