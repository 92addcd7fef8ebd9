//! Read-only detection of disks, partition tables and filesystems.
//!
//! Works the same as PID 1 in the initramfs (devtmpfs, sysfs and proc only; no udev) and on an
//! ordinary host, on block devices or disk image files. Nothing here ever opens a device for
//! writing. Partition tables are read from the device's bytes, not from the kernel's partition
//! nodes, so damaged or unusual tables are seen as they are on disk; the kernel's view (sysfs)
//! only supplies device identity, partition device nodes and the device numbers mounts refer to.
//!
//! Detection never fails as a whole: every difficulty (unreadable device, damaged table, read
//! errors) becomes a human-readable entry in a `problems` list and detection moves on.
//!
//! Layout: `model` (what a detection returns: [`Report`], [`Disk`], [`Partition`], …, re-exported
//! here), `sysfs` (the kernel's view), `mounts` (mountinfo), `layout` (which table is authoritative,
//! sanity checks) over `gpt`, `mbr`, `fs` (superblock probes) and `names` (friendly type names), all
//! reading through `io::DiskReader`, which bounds every read; `select` picks disks by their
//! properties (serial, bus, size, label) rather than their kernel names.

mod fs;
mod gpt;
pub(crate) mod io;
mod layout;
mod mbr;
mod model;
mod mounts;
mod names;
pub mod select;
mod sysfs;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod proptests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use self::model::{
    Disk, FsKind, GptInfo, Identity, MbrInfo, Partition, PartitionTable, Report, Transport,
};

use self::io::DiskReader;
use self::layout::SectorSize;
use self::mounts::{DevNum, MountTable};
use self::sysfs::SysDisk;

/// Where to look: the defaults are the running system's; tests point them at fake trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectOptions {
    /// Mounted sysfs (`/sys`).
    pub sysfs: PathBuf,
    /// Device nodes (`/dev`, devtmpfs in the initramfs).
    pub dev: PathBuf,
    /// The mount table (`/proc/self/mountinfo`).
    pub mountinfo: PathBuf,
    /// GPT disk GUID of the medium we booted from (kernel command line `rescue.stick=GUID`).
    pub boot_disk_guid: Option<String>,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            sysfs: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            boot_disk_guid: None,
        }
    }
}

/// Why something could not be detected. Detection itself never fails; these end up as text in
/// `problems`, so each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot list block devices in {path} (is sysfs mounted on /sys?)")]
    ListDevices {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read the mount table {path} (mount status is unknown, treat every disk as possibly \
         in use)"
    )]
    MountTable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open {path} read-only (check the path; reading disks needs root)")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot inspect {path}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not exist; check the name (`rescue disks` lists every disk)")]
    Missing { path: PathBuf },
    #[error("{path} is empty (0 bytes): it holds no disk; check that you named the right file")]
    EmptyFile { path: PathBuf },
    /// A virtual machine's disk file that cannot be read (the message names the file).
    #[error("{source}")]
    VirtualDisk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is neither a block device nor a regular file; give a disk (/dev/sda) or an image file")]
    NotADisk { path: PathBuf },
    #[error("{path} has a size of 0 bytes (no medium inserted?)")]
    Empty { path: PathBuf },
    #[error(
        "read error on {path} at byte {offset} (the disk may be failing, so image it before \
         anything else, or the image file is truncated)"
    )]
    Read {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error(
        "stopped reading {path} after repeated read errors; what is shown for it is incomplete"
    )]
    GaveUp { path: PathBuf },
}

/// Every block device the kernel lists in `<sysfs>/block`, except ramdisks, zram, optical and
/// floppy drives and unused loop/nbd devices.
pub fn detect_all(opts: &DetectOptions) -> Report {
    let mut report = Report::default();
    let mounts = load_mounts(opts, &mut report.problems);
    let names = match sysfs::list_disks(&opts.sysfs) {
        Ok(n) => n,
        Err(source) => {
            let path = opts.sysfs.join("block");
            report
                .problems
                .push(crate::units::chain(&DetectError::ListDevices {
                    path,
                    source,
                }));
            return report;
        }
    };
    for name in names {
        let sys = sysfs::read_disk(&opts.sysfs.join("block").join(&name));
        let path = opts.dev.join(&name);
        report.disks.push(block_device(sys, &path, &mounts, opts));
    }
    report
}

/// The given block devices (whole disks or single partitions) and image files, in order. A path
/// that cannot be inspected still gets an entry, with the reason in its `problems`.
pub fn detect_paths(paths: &[PathBuf], opts: &DetectOptions) -> Report {
    let mut report = Report::default();
    let mounts = load_mounts(opts, &mut report.problems);
    for path in paths {
        let meta = std::fs::metadata(path);
        let identity = meta.as_ref().ok().map(Identity::from_metadata);
        let mut disk = match meta {
            Err(source) => {
                let err = if source.kind() == std::io::ErrorKind::NotFound {
                    DetectError::Missing { path: path.clone() }
                } else {
                    DetectError::Stat {
                        path: path.clone(),
                        source,
                    }
                };
                failed_disk(path, Transport::Unknown, err)
            }
            Ok(meta) if meta.file_type().is_block_device() => {
                let dev = devnum(meta.rdev());
                match sysfs::dir_of_devnum(&opts.sysfs, dev) {
                    Some(dir) => {
                        let mut sys = sysfs::read_disk(&dir);
                        sys.dev = sys.dev.or(Some(dev));
                        let mut disk = block_device(sys, path, &mounts, opts);
                        whole_disk_of_partition(&mut disk, &dir, opts);
                        disk
                    }
                    None => block_device_without_sysfs(path, dev, &mounts, opts),
                }
            }
            Ok(meta) if meta.is_file() && meta.len() == 0 => failed_disk(
                path,
                Transport::File,
                DetectError::EmptyFile { path: path.clone() },
            ),
            Ok(meta) if meta.file_type().is_file() => match File::open(path) {
                Ok(file) => {
                    let mut disk = match virtual_disk(&file, path) {
                        Ok(Some((v, cursor, size))) => {
                            let mut disk =
                                detect_image(cursor, size, &path.to_string_lossy(), opts);
                            disk.model = Some(format!("{} virtual disk", v.format.name()));
                            disk
                        }
                        Ok(None) => detect_image(file, meta.len(), &path.to_string_lossy(), opts),
                        Err(source) => failed_disk(
                            path,
                            Transport::File,
                            DetectError::VirtualDisk {
                                path: path.clone(),
                                source,
                            },
                        ),
                    };
                    disk.name = file_name(path);
                    disk.read_only =
                        nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_err();
                    disk
                }
                Err(source) => failed_disk(
                    path,
                    Transport::File,
                    DetectError::Open {
                        path: path.clone(),
                        source,
                    },
                ),
            },
            Ok(_) => failed_disk(
                path,
                Transport::Unknown,
                DetectError::NotADisk { path: path.clone() },
            ),
        };
        disk.identity = identity;
        report.disks.push(disk);
    }
    report
}

/// The virtual machine disk `file` holds ([`crate::vdisk`]), with a cursor over its guest disk and that
/// disk's size; `None` for any other file (a raw disk image).
fn virtual_disk(
    file: &File,
    path: &Path,
) -> std::io::Result<Option<(crate::vdisk::VirtualDisk, crate::vdisk::Cursor, u64)>> {
    let Some(v) = crate::vdisk::open(std::sync::Arc::new(file.try_clone()?), path)? else {
        return Ok(None);
    };
    let cursor = crate::vdisk::Cursor::new(v.disk.clone())?;
    let size = v.size()?;
    Ok(Some((v, cursor, size)))
}

/// When `dir` (sysfs) is a partition's: names its whole disk, and marks the partition as part of the boot
/// medium when its disk is.
fn whole_disk_of_partition(disk: &mut Disk, dir: &Path, opts: &DetectOptions) {
    if !dir.join("partition").exists() {
        return;
    }
    let Some(name) = dir.parent().and_then(|p| p.file_name()) else {
        return;
    };
    let whole = opts.dev.join(name);
    if opts.boot_disk_guid.is_some() {
        let report = detect_paths(std::slice::from_ref(&whole), opts);
        disk.boot_medium |= report.disks.iter().any(|d| d.boot_medium);
    }
    disk.whole_disk = Some(whole.to_string_lossy().into_owned());
}

/// Detects the layout of a disk image already open as `reader` (`size_bytes` long). `path` is
/// only used in messages and the `path` field. The sector size is 512 bytes unless a GPT is found
/// where 4096-byte sectors put it.
pub fn detect_image<R: Read + Seek>(
    reader: R,
    size_bytes: u64,
    path: &str,
    opts: &DetectOptions,
) -> Disk {
    let mut disk = empty_disk(path, file_name(Path::new(path)), Transport::File);
    disk.size_bytes = size_bytes;
    let mut src = DiskReader::new(reader, size_bytes);
    fill_layout(&mut disk, &mut src, SectorSize::Image, opts);
    disk.physical_sector_size = disk.logical_sector_size;
    disk
}

fn block_device(sys: SysDisk, path: &Path, mounts: &MountTable, opts: &DetectOptions) -> Disk {
    let mut disk = empty_disk(&path.to_string_lossy(), sys.name.clone(), sys.transport);
    disk.size_bytes = sys.size_bytes;
    disk.logical_sector_size = sys.logical_sector_size;
    disk.physical_sector_size = sys.physical_sector_size;
    disk.model = sys.model.clone();
    disk.serial = sys.serial.clone();
    disk.removable = sys.removable;
    disk.read_only = sys.read_only;
    disk.rotational = sys.rotational;
    disk.mounts = mounts.mounts_of(sys.dev);
    if sys.size_bytes == 0 {
        disk.problems.push(
            DetectError::Empty {
                path: path.to_path_buf(),
            }
            .to_string(),
        );
        return disk;
    }
    match File::open(path) {
        Ok(file) => {
            let mut src = DiskReader::new(file, sys.size_bytes);
            fill_layout(
                &mut disk,
                &mut src,
                SectorSize::Device(sys.logical_sector_size),
                opts,
            );
            attach_kernel_partitions(&mut disk, &sys, mounts, opts);
        }
        Err(source) => {
            let err = DetectError::Open {
                path: path.to_path_buf(),
                source,
            };
            disk.problems.push(crate::units::chain(&err));
        }
    }
    disk
}

/// A block device whose sysfs entry cannot be found (sysfs not mounted): the size comes from the
/// device itself and the identity fields stay unknown.
fn block_device_without_sysfs(
    path: &Path,
    dev: DevNum,
    mounts: &MountTable,
    opts: &DetectOptions,
) -> Disk {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(source) => {
            return failed_disk(
                path,
                Transport::Unknown,
                DetectError::Open {
                    path: path.to_path_buf(),
                    source,
                },
            )
        }
    };
    let size = match file.seek(std::io::SeekFrom::End(0)) {
        Ok(s) => s,
        Err(source) => {
            return failed_disk(
                path,
                Transport::Unknown,
                DetectError::Stat {
                    path: path.to_path_buf(),
                    source,
                },
            )
        }
    };
    let sys = SysDisk {
        name: file_name(path),
        dev: Some(dev),
        size_bytes: size,
        logical_sector_size: 512,
        physical_sector_size: 512,
        removable: false,
        read_only: false,
        rotational: false,
        model: None,
        serial: None,
        transport: Transport::Unknown,
        partitions: Vec::new(),
    };
    let mut disk = block_device(sys, path, mounts, opts);
    disk.problems.push(format!(
        "no sysfs entry for {path:?} (is sysfs mounted?): sector size, identity and partition \
         device nodes are unknown; 512-byte sectors were assumed"
    ));
    disk
}

fn fill_layout<R: Read + Seek>(
    disk: &mut Disk,
    src: &mut DiskReader<R>,
    sector: SectorSize,
    opts: &DetectOptions,
) {
    let l = layout::probe(src, sector);
    if sector == SectorSize::Image {
        disk.logical_sector_size = l.sector_size;
    }
    disk.table = l.table;
    disk.gpt = l.gpt;
    disk.mbr = l.mbr;
    disk.partitions = l.partitions;
    if let Some(fs) = l.fs {
        disk.fs = Some(fs.kind);
        disk.fs_label = fs.label;
        disk.fs_uuid = fs.uuid;
    }
    disk.problems.extend(l.problems);
    let (failures, gave_up) = src.take_failures();
    let path = PathBuf::from(&disk.path);
    for f in failures {
        let err = DetectError::Read {
            path: path.clone(),
            offset: f.offset,
            source: f.source,
        };
        disk.problems.push(crate::units::chain(&err));
    }
    if gave_up {
        disk.problems.push(DetectError::GaveUp { path }.to_string());
    }
    disk.boot_medium = match (
        &opts.boot_disk_guid,
        disk.gpt.as_ref().and_then(|g| g.disk_guid.as_ref()),
    ) {
        (Some(want), Some(have)) => want.trim().eq_ignore_ascii_case(have),
        _ => false,
    };
}

/// Gives partitions their device nodes and mounts, and notes where the kernel's idea of the
/// partitions differs from the table on disk (a table changed without a re-read is dangerous:
/// the kernel would read and write the old ranges).
fn attach_kernel_partitions(
    disk: &mut Disk,
    sys: &SysDisk,
    mounts: &MountTable,
    opts: &DetectOptions,
) {
    for p in disk.partitions.iter_mut() {
        let Some(k) = sys.partitions.iter().find(|k| k.number == p.number) else {
            continue;
        };
        let node = opts.dev.join(&k.name);
        if node.exists() {
            p.path = Some(node.to_string_lossy().into_owned());
        }
        p.mounts = mounts.mounts_of(k.dev);
        // The kernel sizes an extended container at 1 KiB; only data partitions are compared.
        let differs = !p.extended
            && (k.start_bytes.is_some_and(|s| s != p.start_bytes)
                || k.size_bytes.is_some_and(|s| s != p.size_bytes));
        if differs {
            disk.problems.push(format!(
                "the kernel's partition {} ({}) does not match the table on disk; the table was \
                 changed without being re-read (run `blockdev --rereadpt` or reboot before using it)",
                p.number, k.name
            ));
        }
    }
    for k in &sys.partitions {
        if !disk.partitions.iter().any(|p| p.number == k.number) {
            disk.problems.push(format!(
                "the kernel knows partition {} ({}) which is not in the table on disk; the table \
                 was changed or damaged after the kernel read it",
                k.number, k.name
            ));
        }
    }
}

fn load_mounts(opts: &DetectOptions, problems: &mut Vec<String>) -> MountTable {
    match std::fs::read_to_string(&opts.mountinfo) {
        Ok(text) => mounts::parse_mountinfo_with(&text, block_dev_of),
        Err(source) => {
            let path = opts.mountinfo.clone();
            problems.push(crate::units::chain(&DetectError::MountTable {
                path,
                source,
            }));
            MountTable::default()
        }
    }
}

fn empty_disk(path: &str, name: String, transport: Transport) -> Disk {
    Disk {
        path: path.to_string(),
        name,
        size_bytes: 0,
        logical_sector_size: 512,
        physical_sector_size: 512,
        model: None,
        serial: None,
        transport,
        removable: false,
        read_only: false,
        rotational: false,
        table: PartitionTable::None,
        gpt: None,
        mbr: None,
        partitions: Vec::new(),
        fs: None,
        fs_label: None,
        fs_uuid: None,
        mounts: Vec::new(),
        boot_medium: false,
        problems: Vec::new(),
        whole_disk: None,
        identity: None,
    }
}

fn failed_disk(path: &Path, transport: Transport, err: DetectError) -> Disk {
    let mut disk = empty_disk(&path.to_string_lossy(), file_name(path), transport);
    disk.problems.push(crate::units::chain(&err));
    disk
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string_lossy().into_owned())
}

/// The device number of the block device node `path` (the source of a FUSE mount), if it is one.
fn block_dev_of(path: &str) -> Option<DevNum> {
    let meta = std::fs::metadata(path).ok()?;
    meta.file_type()
        .is_block_device()
        .then(|| devnum(meta.rdev()))
}

/// Splits a `st_rdev` into major and minor the way glibc encodes it.
fn devnum(rdev: u64) -> DevNum {
    let major = ((rdev >> 32) & 0xFFFF_F000) | ((rdev >> 8) & 0x0FFF);
    let minor = ((rdev >> 12) & 0xFFFF_FF00) | (rdev & 0xFF);
    // Both are masked to 32 bits above, so the conversions cannot fail.
    (
        u32::try_from(major).unwrap_or(0),
        u32::try_from(minor).unwrap_or(0),
    )
}

/// The whole disk (`/dev/NAME`) whose filesystem holds `path`, found through the file's device number
/// and sysfs. `None` for files on non-disk filesystems (tmpfs, network, overlay) or when sysfs is missing.
/// The plan uses it to refuse writing onto the disk that holds the image being read (or written).
pub fn disk_holding(path: &Path, opts: &DetectOptions) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let dir = sysfs::dir_of_devnum(&opts.sysfs, devnum(meta.dev()))?;
    let disk_dir = if dir.join("partition").exists() {
        dir.parent()?.to_path_buf()
    } else {
        dir
    };
    let name = disk_dir.file_name()?.to_string_lossy().into_owned();
    Some(opts.dev.join(name).to_string_lossy().into_owned())
}
