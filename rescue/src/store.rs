//! Where images are kept. This file: the drives that can hold images ([`Store`]: [`stores`] to write to,
//! [`readable_stores`] to read from, with the reason a drive cannot, [`unwritable_reason`]), mounting one
//! for an [`Access`] ([`ensure_mounted`]), the images on it ([`find_images`]), its free space and largest
//! file ([`free_bytes`], [`max_file_size_at`], and the [`space_warning`] given before a capture), image
//! names ([`default_image_name`]) and how an image's date and host are shown ([`date_time`],
//! [`on_host`]). The TUI and jobs choose stores; the CLI takes paths (its captures get the same space
//! warning, through `ops`), and `rescue mount`/`umount` are [`mount`].
//!
//! Submodules:
//! - [`mount`]: mounting and unmounting a drive's filesystem (the syscalls; NTFS through [`ntfs`]), and
//!   finding where a device is mounted;
//! - [`ntfs`]: NTFS through ntfs-3g over FUSE, writable only when `ntfs-3g.probe` says so (hibernated
//!   and unclean volumes are refused, or mounted read-only to read images);
//! - [`grow`]: growing the rescue stick's data partition to the end of the stick, as `plan::grow`
//!   planned: the GPT moves, and the data partition is re-created by [`exfat`];
//! - [`exfat`]: an exFAT formatter (the rescue system has no mkfs), with [`upcase`], its up-case table;
//! - [`region`]: a byte range of a disk seen as a device of its own (`Read`/`Write`/`Seek`), which
//!   `grow` and `exfat` write through.
//! - [`remote`]: SMB and NFS shares mounted by the kernel for `smb://` and `nfs://` image locations (the
//!   host resolved by `net`, dialects tried from the newest, encryption when the server can).
//! - [`http`]: images read over HTTP(S) by range requests ([`http::HttpFile`]), small files fetched
//!   (jobs) and results PUT to a WebDAV folder.

pub mod exfat;
pub mod grow;
pub mod http;
pub mod mount;
pub mod ntfs;
pub mod region;
pub mod remote;
pub mod s3;
pub mod sftp;
pub mod upcase;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_exfat;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests_grow;

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

pub use crate::units::{date_stamp, date_time, now_unix};

use crate::detect::{Disk, FsKind, Report};
use crate::units::json_name;

/// File name extension of our images.
pub const IMAGE_EXT: &str = "rimg";
/// Where the TUI mounts filesystems.
pub const MOUNT_ROOT: &str = "/run/rescue/mnt";

/// A filesystem (or a plain directory on a host) that could hold images.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    /// The partition or disk holding the filesystem; `None` for a plain directory.
    pub device: Option<String>,
    /// The whole disk it is on (for refusals: never the disk being captured or overwritten).
    pub disk: Option<String>,
    pub fs: Option<FsKind>,
    pub label: Option<String>,
    pub size_bytes: u64,
    /// Where it is mounted already (or the directory itself).
    pub mounted_on: Option<PathBuf>,
    /// Why it cannot hold images, when it cannot.
    pub unusable: Option<String>,
    pub on_boot_medium: bool,
    /// The drive is write-protected: images can be read from it (mounted read-only), not written.
    pub read_only: bool,
}

impl Store {
    /// A directory given on a host (`rescue tui --images DIR`).
    pub fn directory(dir: &Path) -> Store {
        Store {
            device: None,
            disk: None,
            fs: None,
            label: None,
            size_bytes: 0,
            mounted_on: Some(dir.to_path_buf()),
            unusable: None,
            on_boot_medium: false,
            read_only: false,
        }
    }

    /// One line for lists: device, filesystem, label, size, stick marker.
    pub fn title(&self) -> String {
        match &self.device {
            None => format!(
                "folder {}",
                self.mounted_on
                    .as_deref()
                    .unwrap_or(Path::new("?"))
                    .display()
            ),
            Some(dev) => format!(
                "{dev}  {}  {}{}{}",
                self.fs.map(|f| json_name(&f)).unwrap_or_else(|| "?".into()),
                crate::units::human_size(self.size_bytes),
                self.label
                    .as_ref()
                    .map(|l| format!("  \"{l}\""))
                    .unwrap_or_default(),
                if self.on_boot_medium {
                    "  (this rescue stick)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Why a filesystem of this kind cannot take images in the rescue system, if it cannot. NTFS can (through
/// ntfs-3g); a hibernated or unclean NTFS is only found out when it is mounted ([`ntfs::NtfsError`]).
pub fn unwritable_reason(fs: Option<FsKind>) -> Option<String> {
    match fs {
        Some(
            FsKind::Ext2
            | FsKind::Ext3
            | FsKind::Ext4
            | FsKind::Vfat
            | FsKind::Exfat
            | FsKind::Ntfs,
        ) => None,
        Some(FsKind::Xfs | FsKind::Btrfs) => Some(format!(
            "{} is not mounted by the rescue system; use an ext4, FAT32, exFAT or NTFS drive",
            json_name(&fs)
        )),
        Some(other) => Some(
            match mount::kernel_fstype(other) {
                Err(why) => why,
                Ok(_) => "not supported",
            }
            .to_string(),
        ),
        None => Some("no filesystem recognised".into()),
    }
}

/// The stores to read images from: as [`stores`], except that write-protected drives are usable (they
/// are mounted read-only).
pub fn readable_stores(report: &Report) -> Vec<Store> {
    let mut v: Vec<Store> = stores(report)
        .into_iter()
        .map(|mut s| {
            if s.read_only && s.unusable.as_deref() == Some(READ_ONLY) {
                s.unusable = None;
            }
            s
        })
        .collect();
    v.sort_by_key(|s| s.unusable.is_some());
    v
}

const READ_ONLY: &str = "the drive is read-only (write-protected)";

/// Every filesystem in `report` that could hold images, usable ones first; each unusable one says why.
pub fn stores(report: &Report) -> Vec<Store> {
    let mut out = Vec::new();
    for d in &report.disks {
        if d.partitions.is_empty() {
            if d.fs.is_some() {
                out.push(store_of(
                    d,
                    &d.path,
                    d.fs,
                    &d.fs_label,
                    d.size_bytes,
                    &d.mounts,
                ));
            }
            continue;
        }
        for p in d
            .partitions
            .iter()
            .filter(|p| !p.extended && p.fs.is_some())
        {
            let Some(path) = &p.path else { continue };
            let mut s = store_of(d, path, p.fs, &p.fs_label, p.size_bytes, &p.mounts);
            if s.unusable.is_none() && is_esp(&p.part_type) {
                s.unusable = Some(
                    "it is an EFI system partition (boot files), not a place for images".into(),
                );
            }
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.unusable.is_some());
    out
}

/// The EFI system partition's GPT type or MBR id.
fn is_esp(part_type: &str) -> bool {
    part_type.eq_ignore_ascii_case("C12A7328-F81F-11D2-BA4B-00A0C93EC93B") || part_type == "0xef"
}

fn store_of(
    d: &Disk,
    device: &str,
    fs: Option<FsKind>,
    label: &Option<String>,
    size: u64,
    mounts: &[String],
) -> Store {
    let unusable = if d.read_only {
        Some(READ_ONLY.into())
    } else {
        unwritable_reason(fs)
    };
    Store {
        device: Some(device.to_string()),
        disk: Some(d.path.clone()),
        fs,
        label: label.clone(),
        size_bytes: size,
        mounted_on: mounts.first().map(PathBuf::from),
        unusable,
        on_boot_medium: d.boot_medium,
        read_only: d.read_only,
    }
}

/// What a store is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An image will be written (capture).
    Write,
    /// Images are only read (restore, verify, inspect): a drive that cannot be written will do,
    /// mounted read-only.
    Read,
}

/// Mount `store` (under [`MOUNT_ROOT`]) unless it is mounted already; returns where it is. Stores are
/// mounted read-write where they can be (the log beside an image is written on restores too); for
/// [`Access::Read`] a drive that refuses writing (write-protected, a hibernated or unclean NTFS) is
/// mounted read-only instead.
pub fn ensure_mounted(
    store: &Store,
    access: Access,
    opts: &crate::detect::DetectOptions,
) -> anyhow::Result<PathBuf> {
    let Some(device) = &store.device else {
        return match &store.mounted_on {
            Some(dir) => Ok(dir.clone()),
            None => anyhow::bail!("nothing to mount"),
        };
    };
    // Mounted since the detection the store came from (by an earlier job): use it where it is.
    if let Some(dir) = store
        .mounted_on
        .clone()
        .or_else(|| mount::current_mount_point(Path::new(device)))
    {
        if access == Access::Write && mount::is_read_only(&dir) == Some(true) {
            anyhow::bail!(
                "{device} is mounted read-only on {}, so no image can be written to it; unmount it \
                 (`rescue umount {}`) and open it again",
                dir.display(),
                dir.display()
            );
        }
        return Ok(dir);
    }
    if let Some(why) = &store.unusable {
        anyhow::bail!("{device} cannot hold images: {why}");
    }
    let name = Path::new(device)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "drive".into());
    let dir = Path::new(MOUNT_ROOT).join(name);
    let device = Path::new(device);
    match mount::mount_at(device, &dir, None, store.read_only, opts) {
        Ok(_) => Ok(dir),
        Err(e)
            if access == Access::Read
                && e.downcast_ref::<ntfs::NtfsError>()
                    .is_some_and(ntfs::NtfsError::readable_only) =>
        {
            mount::mount_at(device, &dir, None, true, opts)?;
            Ok(dir)
        }
        Err(e) => Err(e),
    }
}

/// An image file found on a store.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEntry {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub modified_unix: u64,
}

/// The images under `dir` (`*.rimg`, virtual machines' disks and Clonezilla image directories, down to
/// three levels, newest first).
/// Unfinished `.partial` files are not images and are not listed.
pub fn find_images(dir: &Path) -> Vec<ImageEntry> {
    let mut out = Vec::new();
    walk(dir, 0, &mut out);
    out.sort_by(|a, b| {
        b.modified_unix
            .cmp(&a.modified_unix)
            .then(a.path.cmp(&b.path))
    });
    out
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<ImageEntry>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        let path = e.path();
        // A repository's folders hold chunk objects, not images (its snapshots are listed by `ops`).
        if meta.is_dir() && path.join("rescue-repo").is_file() {
            continue;
        }
        // A Clonezilla image directory is one image.
        if meta.is_dir() && crate::clonezilla::is_image_dir(&path) {
            out.push(ImageEntry {
                size_bytes: dir_bytes(&path),
                modified_unix: modified(&meta),
                path,
            });
            continue;
        }
        if meta.is_dir() && depth < 3 {
            walk(&path, depth + 1, out);
        } else if meta.is_file()
            && (path.extension().is_some_and(|x| x == IMAGE_EXT) || is_virtual_disk(&path))
        {
            out.push(ImageEntry {
                path,
                size_bytes: meta.len(),
                modified_unix: modified(&meta),
            });
        }
    }
}

fn modified(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Bytes of the files directly in `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The names virtual machines' disk files go by; such a file is listed when its content is one
/// ([`crate::vdisk::sniff`]): a VMDK's flat extent or a stray `.img` is not.
const VIRTUAL_EXTS: [&str; 8] = ["qcow2", "qcow", "vhd", "vhdx", "vmdk", "vdi", "dmg", "img"];

fn is_virtual_disk(path: &Path) -> bool {
    let named = path
        .extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| VIRTUAL_EXTS.contains(&x.to_ascii_lowercase().as_str()));
    named
        && std::fs::File::open(path)
            .ok()
            .and_then(|f| crate::vdisk::sniff(&f))
            .is_some()
}

/// Bytes an unprivileged writer could still put on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The largest file the filesystem can hold, when it has a limit (FAT32: 4 GiB - 1).
pub fn max_file_size(fs: Option<FsKind>) -> Option<u64> {
    match fs {
        Some(FsKind::Vfat) => Some((4u64 << 30) - 1),
        _ => None,
    }
}

/// The largest file the filesystem holding `dir` can hold, when it has a limit (FAT: 4 GiB - 1).
pub fn max_file_size_at(dir: &Path) -> Option<u64> {
    let st = nix::sys::statfs::statfs(dir).ok()?;
    (st.filesystem_type() == nix::sys::statfs::MSDOS_SUPER_MAGIC).then_some((4u64 << 30) - 1)
}

/// A warning, before a capture starts, that its destination may not have room for an image of up to
/// `to_read` bytes of data (worst case: nothing compresses), given the destination's largest file and
/// free space.
pub fn space_warning(max_file: Option<u64>, free: Option<u64>, to_read: u64) -> Option<String> {
    let h = crate::units::human_size;
    if let Some(max) = max_file {
        if to_read > max {
            return Some(format!(
                "FAT32 cannot hold files over 4 GiB and up to {} will be read: if the image comes out \
                 larger the capture fails; exFAT or ext4 has no such limit",
                h(to_read)
            ));
        }
    }
    match free {
        Some(free) if free < to_read => Some(format!(
            "only {} free for up to {} of data: enough only if it compresses well",
            h(free),
            h(to_read)
        )),
        _ => None,
    }
}

/// A file name for an image of `disk`: model, serial and the date, with only portable characters.
pub fn default_image_name(disk: &Disk, unix: u64) -> String {
    let mut parts: Vec<String> = [disk.model.as_deref(), disk.serial.as_deref()]
        .into_iter()
        .flatten()
        .map(sanitize)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        parts.push(sanitize(&disk.name));
    }
    parts.push(date_stamp(unix));
    format!("{}.{IMAGE_EXT}", parts.join("-"))
}

/// Letters, digits, `.`, `_` and `-` only (valid on FAT and exFAT), runs of others as one `_`.
pub fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time.
/// ` on HOST`, or nothing when an image does not say where it was made (the rescue system has no host
/// name; older images recorded the kernel's "(none)").
pub fn on_host(host: &str) -> String {
    match host.trim() {
        "" | "(none)" => String::new(),
        h => format!(" on {h}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_portable() {
        assert_eq!(sanitize(" Samsung SSD 860/EVO "), "Samsung_SSD_860_EVO");
        assert_eq!(sanitize("***"), "");
    }

    #[test]
    fn images_are_found_and_partials_are_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/one.rimg"), b"x").unwrap();
        std::fs::write(dir.path().join("two.rimg.partial"), b"x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let found = find_images(dir.path());
        assert_eq!(found.len(), 1);
        assert!(found[0].path.ends_with("a/b/one.rimg"));
    }

    #[test]
    fn virtual_machine_disks_are_found_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let vm = dir.path().join("vms/pc.QCOW2");
        std::fs::create_dir_all(vm.parent().unwrap()).unwrap();
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&vm)
            .arg("16M")
            .status()
            .unwrap();
        assert!(made.success());
        // Named like a VM disk, but not one: a stray file, a VMDK's flat extent.
        std::fs::write(dir.path().join("backup.img"), vec![0u8; 4096]).unwrap();
        std::fs::write(dir.path().join("pc-flat.vmdk"), vec![0u8; 4096]).unwrap();
        let found = find_images(dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].path.ends_with("vms/pc.QCOW2"));
    }

    #[test]
    fn write_protected_drives_are_read_from_but_not_written_to() {
        let mut d: crate::detect::Disk = serde_json::from_value(serde_json::json!({
            "path": "/dev/sdb", "name": "sdb", "size_bytes": 1u64 << 30, "logical_sector_size": 512,
            "physical_sector_size": 512, "model": null, "serial": null, "transport": "usb",
            "removable": true, "read_only": true, "rotational": false, "table": "none", "gpt": null,
            "mbr": null, "partitions": [], "fs": "exfat", "fs_label": "IMAGES", "fs_uuid": null,
            "mounts": [], "boot_medium": false, "problems": []
        }))
        .unwrap();
        let report = Report {
            disks: vec![d.clone()],
            problems: vec![],
        };
        assert!(stores(&report)[0].unusable.as_deref() == Some(READ_ONLY));
        let r = readable_stores(&report);
        assert!(r[0].unusable.is_none() && r[0].read_only);
        d.read_only = false;
        assert!(
            !stores(&Report {
                disks: vec![d],
                problems: vec![]
            })[0]
                .read_only
        );
    }

    #[test]
    fn only_writable_filesystems_are_usable() {
        assert!(unwritable_reason(Some(FsKind::Exfat)).is_none());
        assert!(unwritable_reason(Some(FsKind::Ntfs)).is_none());
        assert!(unwritable_reason(Some(FsKind::Xfs))
            .unwrap()
            .contains("NTFS drive"));
        assert!(unwritable_reason(Some(FsKind::Swap))
            .unwrap()
            .contains("swap"));
        assert!(unwritable_reason(None).is_some());
    }
}
