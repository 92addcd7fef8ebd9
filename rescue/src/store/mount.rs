//! Mounting: put a drive's filesystem somewhere an image can be written to or read from (in the rescue
//! system there is no other mount tool), and take it off again with everything flushed. The filesystem
//! type comes from `detect`; the syscalls from `sys`; NTFS is mounted by ntfs-3g ([`super::ntfs`]).
//! Used by `rescue mount`/`umount`, the TUI and jobs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::mount::MsFlags;

use super::ntfs;
use crate::detect::{self, Disk, FsKind, PartitionTable};
use crate::sys::{self, Unmounted};
use crate::units::json_name;

/// The kernel's name for a detected filesystem (for NTFS the program [`ntfs::FSTYPE`]: the rescue kernel
/// has no NTFS driver), or why it cannot be mounted.
pub fn kernel_fstype(kind: FsKind) -> Result<&'static str, &'static str> {
    match kind {
        // The ext4 driver mounts ext2 and ext3 too; Debian builds no separate drivers for them.
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => Ok("ext4"),
        FsKind::Vfat => Ok("vfat"),
        FsKind::Exfat => Ok("exfat"),
        FsKind::Xfs => Ok("xfs"),
        FsKind::Btrfs => Ok("btrfs"),
        FsKind::Ntfs => Ok(ntfs::FSTYPE),
        FsKind::Swap => Err("it holds swap space, not files"),
        FsKind::Luks => Err("it is encrypted with LUKS; the rescue system cannot unlock it"),
        FsKind::Bitlocker => {
            Err("it is encrypted with BitLocker; the rescue system cannot unlock it")
        }
        FsKind::Lvm => Err("it is an LVM physical volume, not a filesystem"),
    }
}

/// The partitions a person could mount instead of a partitioned disk, for the error message.
fn describe_partitions(disk: &Disk) -> String {
    let parts: Vec<String> = disk
        .partitions
        .iter()
        .filter(|p| !p.extended)
        .map(|p| {
            let fs =
                p.fs.map(|f| json_name(&f))
                    .unwrap_or_else(|| "unknown".into());
            let label = p
                .fs_label
                .as_ref()
                .map(|l| format!(" \"{l}\""))
                .unwrap_or_default();
            match &p.path {
                Some(path) => format!("{path} ({fs}{label})"),
                None => format!("partition {} ({fs}{label})", p.number),
            }
        })
        .collect();
    if parts.is_empty() {
        "it has none".into()
    } else {
        parts.join(", ")
    }
}

/// Decide the filesystem type to mount `disk` (the detection of the device) with.
pub fn choose_fstype(device: &Path, disk: &Disk) -> anyhow::Result<String> {
    let dev = device.display();
    if let Some(kind) = disk.fs {
        return match kernel_fstype(kind) {
            Ok(t) => Ok(t.to_string()),
            Err(why) => bail!("{dev} cannot be mounted: {why}"),
        };
    }
    if disk.table != PartitionTable::None {
        bail!(
            "{dev} is a disk with a{} {} partition table, not a filesystem; mount one of its partitions: {}",
            if disk.table == PartitionTable::Mbr { "n" } else { "" },
            json_name(&disk.table).to_uppercase(),
            describe_partitions(disk)
        );
    }
    let mut msg = format!(
        "no filesystem recognised on {dev}; `rescue disks` shows what each device holds. If you are sure \
         it holds one, give its type with --fstype"
    );
    if !disk.problems.is_empty() {
        msg.push_str(&format!(
            " (while reading it: {})",
            disk.problems.join("; ")
        ));
    }
    bail!(msg)
}

/// Turn the kernel's refusal into what the user should do about it.
fn mount_error(device: &Path, dir: &Path, fstype: &str, read_only: bool, e: &io::Error) -> String {
    let dev = device.display();
    let dir = dir.display();
    let what = match e.raw_os_error() {
        Some(libc::ENODEV) if fstype == "ntfs3" => {
            "this kernel has no ntfs3 driver; leave out --fstype (NTFS is mounted with ntfs-3g)".to_string()
        }
        Some(libc::ENODEV) => format!(
            "this kernel has no {fstype} driver (the rescue system mounts ext4, vfat and exfat); check \
             --fstype, or use a drive with one of those"
        ),
        Some(libc::EINVAL) => format!(
            "it does not hold a valid {fstype} filesystem, or one this kernel cannot mount (unknown \
             features, damage needing repair); check the type with `rescue disks`"
        ),
        Some(libc::EUCLEAN) => {
            "the filesystem is damaged; repair it (fsck) on another machine first".to_string()
        }
        Some(libc::EACCES) | Some(libc::EROFS) if !read_only => {
            "the device is write-protected; mount it with --read-only".to_string()
        }
        Some(libc::EBUSY) => format!(
            "{dev} is in use (already mounted, or held by another program), or {dir} is busy"
        ),
        Some(libc::EPERM) => "mounting needs root (run as root, or with sudo)".to_string(),
        Some(libc::ENOTBLK) => format!("{dev} is not a block device"),
        Some(libc::ENXIO) | Some(libc::ENOENT) => {
            format!("{dev} is gone (unplugged?); `rescue disks` lists what is there now")
        }
        _ => "`rescue disks` shows what the device holds".to_string(),
    };
    format!("mounting {dev} ({fstype}) on {dir} failed: {e}: {what}")
}

/// Undo the kernel's octal escapes in /proc/self/mountinfo (`\040` for a space, ...).
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of `mountinfo` text (the fifth field of each line), in mount order.
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .collect()
}

/// Where `device` is mounted now, from `mountinfo` text: the mount point of the first line whose source
/// (after the ` - ` separator: fstype, then source) is the device.
fn mount_point_in(mountinfo: &str, device: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (head, tail) = l.split_once(" - ")?;
        let source = tail.split(' ').nth(1)?;
        (unescape_mount_path(source) == device)
            .then(|| {
                head.split(' ')
                    .nth(4)
                    .map(|p| PathBuf::from(unescape_mount_path(p)))
            })
            .flatten()
    })
}

/// The filesystem type and mount options of the mount on `dir`, from `mountinfo` text (the last one:
/// it hides the others).
fn mount_on_in(mountinfo: &str, dir: &Path) -> Option<(String, String)> {
    mountinfo.lines().rev().find_map(|l| {
        let (head, tail) = l.split_once(" - ")?;
        let mut h = head.split(' ');
        let point = h.nth(4)?;
        let opts = h.next()?;
        let fstype = tail.split(' ').next()?;
        (Path::new(&unescape_mount_path(point)) == dir)
            .then(|| (fstype.to_string(), opts.to_string()))
    })
}

fn live_mount_on(dir: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_on_in(&info, dir)
}

/// Whether the filesystem on `dir` is mounted read-only, if something is mounted there.
pub fn is_read_only(dir: &Path) -> Option<bool> {
    live_mount_on(dir).map(|(_, opts)| opts.split(',').any(|o| o == "ro"))
}

/// Names `--fstype` may give for NTFS through ntfs-3g (`ntfs3` stays the kernel driver, where there is one).
fn is_ntfs3g(fstype: &str) -> bool {
    matches!(fstype, ntfs::FSTYPE | "ntfs" | "fuseblk")
}

/// Where `device` is mounted now (the live mount table, not an older detection), if anywhere.
pub fn current_mount_point(device: &Path) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_point_in(&info, &device.to_string_lossy())
}

pub fn is_mount_point(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_points(&info).iter().any(|p| p == dir)
}

/// Mount `device` on `dir` (created if missing), with `fstype` or the detected type. Returns what was
/// done, for people ("mounted /dev/sdb1 (vfat, "DATA") on /mnt/x").
pub fn mount_at(
    device: &Path,
    dir: &Path,
    fstype: Option<&str>,
    read_only: bool,
    opts: &detect::DetectOptions,
) -> anyhow::Result<String> {
    let dev = device.display();
    let meta = std::fs::metadata(device).map_err(|e| {
        anyhow::anyhow!("{dev}: {e}; `rescue disks` lists the disks and partitions there are")
    })?;
    if !meta.file_type().is_block_device() {
        bail!(
            "{dev} is not a block device; give a disk or partition such as /dev/sdb1 (`rescue disks` lists them)"
        );
    }
    let disk = match detect::detect_paths(&[device.to_path_buf()], opts)
        .disks
        .into_iter()
        .next()
    {
        Some(d) => d,
        None => bail!("{dev} could not be examined"),
    };
    if !disk.mounts.is_empty() {
        bail!(
            "{dev} is already mounted on {}; use it there, or `rescue umount` it first",
            disk.mounts.join(", ")
        );
    }
    let fstype = match fstype {
        Some(t) => t.to_string(),
        None => choose_fstype(device, &disk)?,
    };
    let created = !dir.exists();
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the mount point {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if is_mount_point(&dir) {
        bail!(
            "{} already has a filesystem mounted on it; choose another directory, or `rescue umount` it first",
            dir.display()
        );
    }
    let result = if is_ntfs3g(&fstype) {
        ntfs::mount(device, &dir, read_only, is_read_only).map_err(anyhow::Error::new)
    } else {
        // Nothing on a drive we only store images on should run or act as a device node.
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        sys::mount_device(device, &dir, &fstype, flags, None)
            .map_err(|e| anyhow::anyhow!(mount_error(device, &dir, &fstype, read_only, &e)))
    };
    if let Err(e) = result {
        if created {
            // Leave no empty directory behind that looks like a mounted drive.
            let _ = std::fs::remove_dir(&dir);
        }
        return Err(e);
    }
    Ok(format!(
        "mounted {dev} ({fstype}{}{}) on {}",
        disk.fs_label
            .as_ref()
            .map(|l| format!(", \"{l}\""))
            .unwrap_or_default(),
        if read_only { ", read-only" } else { "" },
        dir.display()
    ))
}

/// Flush and unmount the filesystem on `dir`. Returns what was done, for people.
pub fn unmount(dir: &Path) -> anyhow::Result<String> {
    let shown = dir.display();
    let dir = dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("{shown}: {e}; nothing to unmount"))?;
    if !is_mount_point(&dir) {
        bail!("{} is not a mount point; nothing to unmount", dir.display());
    }
    // Flush this filesystem first and report a failure: it is the last chance to know that an image
    // written there did not reach the drive.
    let handle = File::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    sys::sync_filesystem(&handle).with_context(|| {
        format!(
            "flushing {} failed; what was written there may be incomplete. Do not unplug the drive",
            dir.display()
        )
    })?;
    drop(handle);
    nix::unistd::sync();
    // A FUSE filesystem is only complete on the drive when its program has closed it: find the program
    // while the mount still names it.
    let daemon = live_mount_on(&dir)
        .filter(|(fstype, _)| ntfs::is_fuse_type(fstype))
        .and_then(|_| ntfs::daemon_of(&dir));
    match sys::unmount_or_detach(&dir) {
        Ok(Unmounted::Now) => {
            if let Some(pid) = daemon {
                ntfs::wait_for_exit(pid, &dir, ntfs::EXIT_WAIT)?;
            }
            Ok(format!(
                "unmounted {}; the drive can be removed",
                dir.display()
            ))
        }
        Ok(Unmounted::Detached) => Ok(format!(
            "{} is still in use by a program: it was flushed and detached, and is unmounted when \
             that program ends; wait before unplugging the drive",
            dir.display()
        )),
        Err(e) => bail!("unmounting {} failed: {e}", dir.display()),
    }
}

/// Unmount every FUSE filesystem (NTFS through ntfs-3g), waiting for each program to finish writing:
/// PID 1 does this at power off before it stops all processes, since a stopped ntfs-3g leaves its
/// volume unclean. What happened, one line per mount.
pub fn unmount_fuse_filesystems() -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dirs: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let fstype = tail.split(' ').next()?;
            ntfs::is_fuse_type(fstype)
                .then(|| {
                    head.split(' ')
                        .nth(4)
                        .map(|p| PathBuf::from(unescape_mount_path(p)))
                })
                .flatten()
        })
        .collect();
    dirs.iter()
        .rev()
        .map(|d| match unmount(d) {
            Ok(m) => m,
            Err(e) => format!("{e:#}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_on_a_directory_has_its_type_and_options() {
        let info = "36 25 8:2 / /mnt/a rw,nosuid - exfat /dev/sda2 rw\n\
                    40 25 0:52 / /mnt/my\\040drive ro,nosuid,nodev - fuseblk /dev/sdb1 ro,user_id=0\n";
        assert_eq!(
            mount_on_in(info, Path::new("/mnt/my drive")),
            Some(("fuseblk".into(), "ro,nosuid,nodev".into()))
        );
        assert_eq!(
            mount_on_in(info, Path::new("/mnt/a")).map(|m| m.0),
            Some("exfat".into())
        );
        assert_eq!(mount_on_in(info, Path::new("/mnt")), None);
        assert!(is_ntfs3g("ntfs") && is_ntfs3g(ntfs::FSTYPE) && !is_ntfs3g("ntfs3"));
    }

    #[test]
    fn a_device_is_found_in_the_mount_table() {
        let info = "36 25 8:2 / /run/rescue/mnt/sda2 rw,nosuid - exfat /dev/sda2 rw\n\
                    40 25 8:17 / /mnt/my\\040drive rw - ext4 /dev/sdb1 rw\n";
        assert_eq!(
            mount_point_in(info, "/dev/sda2"),
            Some(PathBuf::from("/run/rescue/mnt/sda2"))
        );
        assert_eq!(
            mount_point_in(info, "/dev/sdb1"),
            Some(PathBuf::from("/mnt/my drive"))
        );
        assert_eq!(mount_point_in(info, "/dev/sdc1"), None);
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let info = "22 1 0:21 / / rw - rootfs rootfs rw\n\
                    35 22 254:16 / /mnt/my\\040drive rw,nosuid,nodev - ext4 /dev/vdb rw\n\
                    36 22 254:1 / /mnt/back\\134slash rw - vfat /dev/vda1 rw\n";
        assert_eq!(
            mount_points(info),
            [
                PathBuf::from("/"),
                PathBuf::from("/mnt/my drive"),
                PathBuf::from("/mnt/back\\slash")
            ]
        );
        assert_eq!(unescape_mount_path("a\\04"), "a\\04");
        assert_eq!(unescape_mount_path("\\777x"), "\\777x");
    }

    #[test]
    fn every_filesystem_has_a_kernel_type_or_a_reason() {
        assert_eq!(kernel_fstype(FsKind::Ext3), Ok("ext4"));
        assert_eq!(kernel_fstype(FsKind::Vfat), Ok("vfat"));
        assert_eq!(kernel_fstype(FsKind::Exfat), Ok("exfat"));
        assert_eq!(kernel_fstype(FsKind::Ntfs), Ok("ntfs-3g"));
        assert!(kernel_fstype(FsKind::Swap).is_err());
        assert!(kernel_fstype(FsKind::Luks)
            .unwrap_err()
            .contains("encrypted"));
    }

    #[test]
    fn a_partitioned_disk_is_refused_with_its_partitions_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        builder::fixtures::create_disk(&path, &builder::fixtures::demo_gpt()).unwrap();
        let report = detect::detect_paths(
            std::slice::from_ref(&path),
            &detect::DetectOptions::default(),
        );
        let err = choose_fstype(&path, &report.disks[0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("GPT partition table"), "{err}");
        assert!(err.contains("partition 1 (vfat \"ESP\")"), "{err}");
        assert!(err.contains("partition 2 (ext4 \"linux-root\")"), "{err}");
    }

    #[test]
    fn refusals_name_the_device_and_the_remedy() {
        let e = io::Error::from_raw_os_error(libc::ENODEV);
        let m = mount_error(
            Path::new("/dev/sdb1"),
            Path::new("/mnt/t"),
            "ntfs3",
            false,
            &e,
        );
        assert!(m.contains("/dev/sdb1") && m.contains("ntfs-3g"), "{m}");
        let e = io::Error::from_raw_os_error(libc::EROFS);
        let m = mount_error(
            Path::new("/dev/sdb1"),
            Path::new("/mnt/t"),
            "vfat",
            false,
            &e,
        );
        assert!(m.contains("--read-only"), "{m}");
        let e = io::Error::from_raw_os_error(libc::EINVAL);
        let m = mount_error(
            Path::new("/dev/vdb"),
            Path::new("/mnt/t"),
            "ext4",
            false,
            &e,
        );
        assert!(m.contains("/dev/vdb") && m.contains("valid ext4"), "{m}");
    }
}
