//! What the kernel knows about block devices, from sysfs only (no udev in the initramfs).

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::mounts::{parse_devnum, DevNum};
use super::Transport;

/// One whole block device as sysfs describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SysDisk {
    pub name: String,
    pub dev: Option<DevNum>,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub removable: bool,
    pub read_only: bool,
    pub rotational: bool,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub transport: Transport,
    pub partitions: Vec<SysPartition>,
}

/// A partition the kernel has registered (a child directory with a `partition` file).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SysPartition {
    pub name: String,
    pub number: u32,
    pub dev: Option<DevNum>,
    pub start_bytes: Option<u64>,
    pub size_bytes: Option<u64>,
}

/// Names in `<sysfs>/block` worth showing, in natural order (sda, sdb, …, sdz, sdaa; nvme0n1, nvme0n2,
/// …, nvme0n10). Ramdisks, zram, optical and floppy drives are never imaging sources or targets; idle
/// loop and nbd devices (size 0) are noise.
pub(crate) fn list_disks(sysfs: &Path) -> io::Result<Vec<String>> {
    let block = sysfs.join("block");
    let mut names = Vec::new();
    for entry in fs::read_dir(&block)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["ram", "zram", "sr", "fd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        if (name.starts_with("loop") || name.starts_with("nbd"))
            && read_u64(&block.join(&name), "size").unwrap_or(0) == 0
        {
            continue;
        }
        names.push(name);
    }
    names.sort_by(|a, b| natural_cmp(a, b));
    Ok(names)
}

/// The sysfs directory of the block device with this number (`<sysfs>/dev/block/MAJ:MIN` resolved).
pub(crate) fn dir_of_devnum(sysfs: &Path, dev: DevNum) -> Option<PathBuf> {
    fs::canonicalize(sysfs.join("dev/block").join(format!("{}:{}", dev.0, dev.1))).ok()
}

/// Reads a disk's (or, when `dir` is a partition, that partition's) attributes. Missing attributes
/// get conservative defaults: sysfs layouts vary by driver and kernel version, and none of these
/// values is worth failing detection over.
pub(crate) fn read_disk(dir: &Path) -> SysDisk {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_partition = dir.join("partition").exists();
    // A partition has its own size/dev/ro but shares queue limits and identity with its disk.
    let parent = if is_partition { dir.parent() } else { None };
    let attr = |rel: &str| -> Option<String> {
        read_trim(dir, rel).or_else(|| parent.and_then(|p| read_trim(p, rel)))
    };
    let num = |rel: &str| attr(rel).and_then(|s| s.parse::<u64>().ok());
    let logical = num("queue/logical_block_size")
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v >= 512)
        .unwrap_or(512);
    let physical = num("queue/physical_block_size")
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v >= logical)
        .unwrap_or(logical);
    let identity_dir = parent.unwrap_or(dir);
    SysDisk {
        name,
        dev: read_trim(dir, "dev").and_then(|s| parse_devnum(&s)),
        // sysfs `size` is always in 512-byte units, whatever the logical block size.
        size_bytes: read_u64(dir, "size").unwrap_or(0).saturating_mul(512),
        logical_sector_size: logical,
        physical_sector_size: physical,
        removable: num("removable") == Some(1),
        read_only: read_u64(dir, "ro") == Some(1),
        rotational: num("queue/rotational") == Some(1),
        model: read_trim(identity_dir, "device/model")
            .or_else(|| read_trim(identity_dir, "device/name")),
        serial: serial(identity_dir),
        transport: transport(identity_dir),
        partitions: if is_partition {
            Vec::new()
        } else {
            partitions(dir)
        },
    }
}

fn partitions(dir: &Path) -> Vec<SysPartition> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut parts: Vec<SysPartition> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let number = read_u64(&path, "partition").and_then(|n| u32::try_from(n).ok())?;
            Some(SysPartition {
                name: e.file_name().to_string_lossy().into_owned(),
                number,
                dev: read_trim(&path, "dev").and_then(|s| parse_devnum(&s)),
                start_bytes: read_u64(&path, "start").map(|s| s.saturating_mul(512)),
                size_bytes: read_u64(&path, "size").map(|s| s.saturating_mul(512)),
            })
        })
        .collect();
    parts.sort_by_key(|p| p.number);
    parts
}

/// Serial numbers live in a different place per driver: virtio_blk exposes `serial` on the disk,
/// NVMe and MMC on the controller (`device/serial`), USB disks on the USB device (its iSerial string,
/// what udev calls ID_SERIAL_SHORT), SCSI/SATA only in VPD page 0x80.
fn serial(dir: &Path) -> Option<String> {
    read_trim(dir, "serial")
        .or_else(|| read_trim(dir, "device/serial"))
        .or_else(|| usb_serial(dir))
        .or_else(|| {
            let page = fs::read(dir.join("device/vpd_pg80")).ok()?;
            // Header: device type, page code, 16-bit big-endian page length, then the serial.
            let len = usize::from(u16::from_be_bytes([*page.get(2)?, *page.get(3)?]));
            let body = page.get(4..)?;
            let body = &body[..len.min(body.len())];
            clean(&String::from_utf8_lossy(body))
        })
}

/// The `serial` of the USB device above this disk: the first ancestor of the resolved `device` link
/// that has `idVendor` (USB interfaces and SCSI nodes sit below it).
fn usb_serial(dir: &Path) -> Option<String> {
    let device = fs::canonicalize(dir.join("device")).ok()?;
    device
        .ancestors()
        .take_while(|a| a.as_os_str().len() > 1)
        .find(|a| a.join("idVendor").is_file())
        .and_then(|usb| read_trim(usb, "serial"))
}

fn transport(dir: &Path) -> Transport {
    let device = dir.join("device");
    let resolved = fs::canonicalize(&device)
        .or_else(|_| fs::read_link(&device))
        .map(|p| p.to_string_lossy().into_owned());
    match resolved {
        Ok(p) => transport_from_path(&p),
        Err(_) => Transport::Unknown,
    }
}

/// Classifies the resolved `device` path. USB first: a USB stick also sits under a SCSI host.
pub(crate) fn transport_from_path(p: &str) -> Transport {
    if p.contains("/usb") {
        Transport::Usb
    } else if p.contains("nvme") {
        Transport::Nvme
    } else if p.contains("virtio") {
        Transport::Virtio
    } else if p.contains("/ata") {
        Transport::Sata
    } else if p.contains("mmc") {
        Transport::Mmc
    } else if p.contains("/host") && p.contains("/target") {
        Transport::Scsi
    } else {
        Transport::Unknown
    }
}

fn read_trim(dir: &Path, rel: &str) -> Option<String> {
    fs::read(dir.join(rel))
        .ok()
        .and_then(|b| clean(&String::from_utf8_lossy(&b)))
}

fn clean(s: &str) -> Option<String> {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

fn read_u64(dir: &Path, rel: &str) -> Option<u64> {
    read_trim(dir, rel)?.parse().ok()
}

/// Orders names with embedded numbers numerically: `sdb < sdaa`, `nvme0n2 < nvme0n10`.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn key(s: &str) -> (usize, Vec<(bool, String)>) {
        let mut chunks: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match chunks.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => chunks.push((digit, c.to_string())),
            }
        }
        // Kernel names put the instance letters right after the driver prefix, so a shorter
        // leading alphabetic run means an earlier device (sdz before sdaa).
        let lead = chunks.first().map(|c| c.1.len()).unwrap_or(0);
        (lead, chunks)
    }
    let (la, ka) = key(a);
    let (lb, kb) = key(b);
    let prefix_a: String = a.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let prefix_b: String = b.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let same_driver = prefix_a.get(..2) == prefix_b.get(..2);
    if same_driver && la != lb {
        return la.cmp(&lb);
    }
    for (x, y) in ka.iter().zip(kb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (xs, ys) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xs.len().cmp(&ys.len()).then_with(|| xs.cmp(ys))
            }
            _ => x.1.cmp(&y.1),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ka.len().cmp(&kb.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, content: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// A fake sysfs: real device directories under `devices/`, symlinks from `block/` like the kernel.
    fn fake_sysfs() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        let disk = |name: &str, devpath: &str| -> PathBuf {
            let dev = s.join(devpath);
            let dir = dev.join("block").join(name);
            fs::create_dir_all(&dir).unwrap();
            symlink(&dev, dir.join("device")).unwrap();
            fs::create_dir_all(s.join("block")).unwrap();
            symlink(&dir, s.join("block").join(name)).unwrap();
            dir
        };
        let sda = disk(
            "sda",
            "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
        );
        write(&sda.join("size"), b"2097152\n");
        write(&sda.join("dev"), b"8:0\n");
        write(&sda.join("queue/logical_block_size"), b"512\n");
        write(&sda.join("queue/physical_block_size"), b"4096\n");
        write(&sda.join("queue/rotational"), b"1\n");
        write(&sda.join("removable"), b"0\n");
        write(&sda.join("ro"), b"0\n");
        write(&sda.join("device/model"), b"WDC WD10EZEX    \n");
        // VPD page 0x80: 4-byte header, length 12, space-padded serial.
        write(
            &sda.join("device/vpd_pg80"),
            b"\x00\x80\x00\x0c  WD-1234567",
        );
        for (n, start) in [(1u32, 2048u64), (2, 4096)] {
            let p = sda.join(format!("sda{n}"));
            write(&p.join("partition"), format!("{n}\n").as_bytes());
            write(&p.join("start"), format!("{start}\n").as_bytes());
            write(&p.join("size"), b"2048\n");
            write(&p.join("dev"), format!("8:{n}\n").as_bytes());
        }
        let vda = disk("vda", "devices/pci0000:00/0000:00:02.0/virtio1");
        write(&vda.join("size"), b"8\n");
        write(&vda.join("serial"), b"SER-V\n");
        write(&vda.join("queue/logical_block_size"), b"4096\n");
        let sdb = disk(
            "sdb",
            "devices/pci0000:00/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0",
        );
        write(&sdb.join("size"), b"0\n");
        write(&sdb.join("removable"), b"1\n");
        write(&sdb.join("ro"), b"1\n");
        for (name, size) in [
            ("loop0", "0"),
            ("loop1", "100"),
            ("zram0", "100"),
            ("sr0", "1"),
        ] {
            let d = s.join("devices/virtual/block").join(name);
            write(&d.join("size"), size.as_bytes());
            symlink(&d, s.join("block").join(name)).unwrap();
        }
        t
    }

    #[test]
    fn lists_and_filters_block_devices() {
        let t = fake_sysfs();
        assert_eq!(
            list_disks(t.path()).unwrap(),
            vec!["loop1", "sda", "sdb", "vda"]
        );
        assert!(list_disks(&t.path().join("missing")).is_err());
    }

    #[test]
    fn reads_sata_disk_attributes_and_partitions() {
        let t = fake_sysfs();
        let d = read_disk(&t.path().join("block/sda"));
        assert_eq!(d.name, "sda");
        assert_eq!(d.dev, Some((8, 0)));
        assert_eq!(d.size_bytes, 1 << 30);
        assert_eq!((d.logical_sector_size, d.physical_sector_size), (512, 4096));
        assert!(d.rotational && !d.removable && !d.read_only);
        assert_eq!(d.model.as_deref(), Some("WDC WD10EZEX"));
        assert_eq!(d.serial.as_deref(), Some("WD-1234567"));
        assert_eq!(d.transport, Transport::Sata);
        assert_eq!(d.partitions.len(), 2);
        assert_eq!(d.partitions[1].name, "sda2");
        assert_eq!(d.partitions[1].start_bytes, Some(4096 * 512));
        assert_eq!(d.partitions[1].dev, Some((8, 2)));
    }

    #[test]
    fn reads_virtio_usb_and_partition_dirs() {
        let t = fake_sysfs();
        let v = read_disk(&t.path().join("block/vda"));
        assert_eq!(v.transport, Transport::Virtio);
        assert_eq!(v.serial.as_deref(), Some("SER-V"));
        assert_eq!(v.logical_sector_size, 4096);
        assert_eq!(v.physical_sector_size, 4096);
        assert_eq!(v.size_bytes, 4096);
        assert!(v.model.is_none());
        let u = read_disk(&t.path().join("block/sdb"));
        assert_eq!(u.transport, Transport::Usb);
        assert!(u.removable && u.read_only);
        let l = read_disk(&t.path().join("block/loop1"));
        assert_eq!(l.transport, Transport::Unknown);
        // A partition directory inherits queue limits and identity from its disk.
        let p = read_disk(&fs::canonicalize(t.path().join("block/sda/sda1")).unwrap());
        assert_eq!(p.name, "sda1");
        assert_eq!(p.size_bytes, 2048 * 512);
        assert_eq!(p.physical_sector_size, 4096);
        assert_eq!(p.transport, Transport::Sata);
        assert!(p.partitions.is_empty());
    }

    #[test]
    fn transport_classification() {
        let cases = [
            (
                "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0",
                Transport::Nvme,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:02.0/virtio1",
                Transport::Virtio,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host2/target2:0:0/2:0:0:0",
                Transport::Usb,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0",
                Transport::Sata,
            ),
            (
                "/sys/devices/platform/soc/mmc_host/mmc0/mmc0:0001",
                Transport::Mmc,
            ),
            (
                "/sys/devices/pci0000:00/0000:00:10.0/host0/target0:0:0/0:0:0:0",
                Transport::Scsi,
            ),
            ("/sys/devices/virtual/block/dm-0", Transport::Unknown),
        ];
        for (p, t) in cases {
            assert_eq!(transport_from_path(p), t, "{p}");
        }
    }

    #[test]
    fn natural_order() {
        let mut v = vec![
            "sdaa", "sdb", "nvme0n10", "sda", "nvme0n2", "loop10", "loop2", "vda", "sdz",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["loop2", "loop10", "nvme0n2", "nvme0n10", "sda", "sdb", "sdz", "sdaa", "vda"]
        );
    }
}
