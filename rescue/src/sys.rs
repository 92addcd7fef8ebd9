//! The only module that talks to the kernel below what `std` offers: module loading, mounts, the console's
//! controlling tty and window size, the uevent netlink socket, power off. Every function here is safe to call;
//! the few `unsafe` blocks carry a `// SAFETY:` comment.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::MsFlags;

pub mod aligned;
pub mod direct;
pub mod on_abort;
pub mod signals;
pub mod zstd;
pub use aligned::AlignedBuf;

/// Load a kernel module from an open `.ko` file. `Ok(false)` means it was already loaded.
pub fn finit_module(file: &File, params: &str) -> io::Result<bool> {
    let params = std::ffi::CString::new(params).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "module parameters contain a NUL byte",
        )
    })?;
    match nix::kmod::finit_module(file, &params, nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Mount `fstype` at `target`, creating the directory. An already mounted target is not an error.
pub fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    match nix::mount::mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Unmount, falling back to a lazy detach so power off is never blocked by a busy mount.
pub fn unmount(target: &str) -> io::Result<()> {
    match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) => {
            nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).map_err(io::Error::from)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Mount the filesystem on `device` at the existing directory `target`. Unlike [`mount_fs`], every error
/// is reported (EBUSY means the device or the directory is in use), for the user-facing `rescue mount`.
pub fn mount_device(
    device: &Path,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    nix::mount::mount(Some(device), target, Some(fstype), flags, data).map_err(io::Error::from)
}

/// How [`unmount_or_detach`] got the filesystem off its mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Unmounted at once: the filesystem is clean and the device can be removed.
    Now,
    /// Still in use: detached from the tree, the kernel unmounts it when the last user lets go.
    Detached,
}

/// Unmount `target`; if it is busy, detach it lazily and say so.
pub fn unmount_or_detach(target: &Path) -> io::Result<Unmounted> {
    match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(Unmounted::Now),
        Err(Errno::EBUSY) => nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
            .map(|()| Unmounted::Detached)
            .map_err(io::Error::from),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Flush everything written to the filesystem that `file` (any file or directory on it) belongs to.
pub fn sync_filesystem(file: &File) -> io::Result<()> {
    nix::unistd::syncfs(file.as_fd()).map_err(io::Error::from)
}

/// Ctrl-Alt-Del must not cut a running restore short: have the kernel send SIGINT to PID 1 instead.
pub fn disable_ctrl_alt_del() -> io::Result<()> {
    nix::sys::reboot::set_cad_enabled(false).map_err(io::Error::from)
}

pub enum PowerAction {
    PowerOff,
    Reboot,
}

/// Flush and power off or reboot. Only returns on failure.
pub fn power(action: PowerAction) -> io::Error {
    nix::unistd::sync();
    let how = match action {
        PowerAction::PowerOff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
        PowerAction::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
    };
    match nix::sys::reboot::reboot(how) {
        Ok(never) => match never {},
        Err(e) => io::Error::from(e),
    }
}

/// Start a new session and make `tty` its controlling terminal, so that job control and Ctrl-C work
/// on the console (the kernel starts PID 1 without one).
pub fn make_controlling_tty(tty: BorrowedFd<'_>) -> io::Result<()> {
    // Fails with EPERM when we already lead a session (PID 1 does after the first call); harmless.
    let _ = nix::unistd::setsid();
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal from another session) and the fd is
    // borrowed, so it is open for the duration of the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Terminal size as (columns, rows); a serial console reports 0×0.
pub fn window_size(tty: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointed-to struct, which lives for the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ws.ws_col, ws.ws_row))
}

pub fn set_window_size(tty: BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Point stdin, stdout and stderr at `fd`.
pub fn redirect_stdio(fd: BorrowedFd<'_>) -> io::Result<()> {
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; the source fd is borrowed and open, and replacing
        // 0–2 cannot invalidate any Rust-owned descriptor (std never takes ownership of them).
        let rc = unsafe { libc::dup2(fd.as_raw_fd(), target) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A socket on the kernel's uevent multicast group: every device add/remove and its MODALIAS.
pub struct UeventSocket {
    fd: OwnedFd,
}

impl UeventSocket {
    pub fn open() -> io::Result<Self> {
        use nix::sys::socket::{
            bind, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag, SockProtocol,
            SockType,
        };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(io::Error::from)?;
        // A burst of uevents at boot (hundreds of devices) must not overflow the default buffer.
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 * 1024 * 1024));
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1)).map_err(io::Error::from)?;
        Ok(UeventSocket { fd })
    }

    /// Wait up to `timeout_ms` for one uevent; `Ok(None)` on timeout.
    pub fn recv(&self, timeout_ms: u16) -> io::Result<Option<Vec<u8>>> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(timeout_ms)).map_err(io::Error::from)?;
        if n == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; 16 * 1024];
        let len = nix::sys::socket::recv(
            self.fd.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        buf.truncate(len);
        Ok(Some(buf))
    }
}

/// Set the console log level (what printk shows on the console); the rest still reaches the kernel log.
pub fn set_console_loglevel(level: u8) -> io::Result<()> {
    std::fs::write("/proc/sys/kernel/printk", format!("{level}\n"))
}

// Block device ioctls (linux/fs.h). Computed by hand because nix does not export them.
const BLKROSET: libc::c_ulong = 0x125d; // _IO(0x12, 93)
const BLKROGET: libc::c_ulong = 0x125e; // _IO(0x12, 94)
const BLKRRPART: libc::c_ulong = 0x125f; // _IO(0x12, 95)
const BLKSSZGET: libc::c_ulong = 0x1268; // _IO(0x12, 104)
const BLKPBSZGET: libc::c_ulong = 0x127b; // _IO(0x12, 123)
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272; // _IOR(0x12, 114, u64)
const BLKDISCARD: libc::c_ulong = 0x1277; // _IO(0x12, 119)
const BLKZEROOUT: libc::c_ulong = 0x127f; // _IO(0x12, 127)

fn ioctl_int_get(fd: BorrowedFd<'_>, req: libc::c_ulong) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Whether the kernel's read-only flag is set on a block device.
pub fn block_read_only(fd: BorrowedFd<'_>) -> io::Result<bool> {
    ioctl_int_get(fd, BLKROGET).map(|v| v != 0)
}

/// Set or clear the kernel's read-only flag on a block device: with it set, no write from anyone
/// (us, a filesystem mount, another program) reaches the disk.
pub fn set_block_read_only(fd: BorrowedFd<'_>, read_only: bool) -> io::Result<()> {
    let v: libc::c_int = read_only.into();
    // SAFETY: BLKROSET reads one int through the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), BLKROSET, &v) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Size in bytes of a block device.
pub fn block_size_bytes(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), BLKGETSIZE64, &mut v) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// (logical, physical) sector sizes of a block device.
pub fn block_sector_sizes(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let logical = ioctl_int_get(fd, BLKSSZGET)?;
    let physical = ioctl_int_get(fd, BLKPBSZGET).unwrap_or(logical);
    Ok((logical.max(512) as u32, physical.max(logical) as u32))
}

/// Ask the kernel to re-read the partition table (after a restore wrote a new one).
pub fn reread_partition_table(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), BLKRRPART, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn range_ioctl(fd: BorrowedFd<'_>, req: libc::c_ulong, offset: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKDISCARD/BLKZEROOUT read two u64 (start, length) through the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, &range) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Discard (TRIM) a byte range of a block device.
pub fn discard(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    range_ioctl(fd, BLKDISCARD, offset, len)
}

/// Zero a byte range of a block device (the device may do it without transferring zeros).
pub fn zero_out(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    range_ioctl(fd, BLKZEROOUT, offset, len)
}

/// Read exactly `buf.len()` bytes at `offset` from `file`, which was opened with `O_DIRECT`: the page
/// cache is bypassed, so a request covers exactly the sectors asked for (a buffered read of one failing
/// 512-byte sector fails its whole 4 KiB page). `offset` and `buf.len()` must be multiples of the
/// device's logical sector size; the bounce buffer is aligned to 4096 bytes, which satisfies every device.
pub fn pread_direct(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    if buf.is_empty() {
        return Ok(());
    }
    let mut bounce = AlignedBuf::with_capacity(buf.len());
    bounce.set_len(buf.len());
    file.read_exact_at(&mut bounce, offset)?;
    buf.copy_from_slice(&bounce);
    Ok(())
}

/// Open a disk or file for direct reads (see [`pread_direct`]); `None` where O_DIRECT is refused.
pub fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Open an existing file for direct writes; `None` where O_DIRECT is refused (FUSE, tmpfs).
pub fn open_direct_write(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

/// Rename `from` to `to` unless `to` exists (`renameat2` with `RENAME_NOREPLACE`): a finished image never
/// silently replaces another. `EEXIST` when it does; `EINVAL` on file systems without the flag.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        from,
        nix::fcntl::AT_FDCWD,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(io::Error::from)
}

/// Start writing the range's dirty pages to the device without waiting (`sync_file_range` with WRITE).
pub fn start_writeback(fd: BorrowedFd, offset: u64, len: u64) -> io::Result<()> {
    sync_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE)
}

/// Write the range's dirty pages to the device and wait for them (`sync_file_range` with WAIT_BEFORE,
/// WRITE and WAIT_AFTER): a write error on that range is reported here.
pub fn flush_range(fd: BorrowedFd, offset: u64, len: u64) -> io::Result<()> {
    sync_range(
        fd,
        offset,
        len,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    )
}

fn sync_range(fd: BorrowedFd, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "range too large",
        ));
    };
    // SAFETY: plain syscall on a valid descriptor with integer arguments.
    let rc = unsafe { libc::sync_file_range(fd.as_raw_fd(), off, n, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_ioctls_on_a_regular_file_fail_cleanly() {
        let f = tempfile::tempfile().unwrap();
        assert!(block_read_only(f.as_fd()).is_err());
        assert!(block_size_bytes(f.as_fd()).is_err());
        assert!(set_block_read_only(f.as_fd(), true).is_err());
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // _IOR(0x12, 114, size_t) with the generic encoding: dir 2 << 30 | size 8 << 16 | type << 8 | nr.
        assert_eq!(BLKGETSIZE64, (2 << 30) | (8 << 16) | (0x12 << 8) | 114);
        assert_eq!(BLKROSET, (0x12 << 8) | 93);
        assert_eq!(BLKZEROOUT, (0x12 << 8) | 127);
    }
}
