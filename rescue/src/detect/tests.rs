//! End-to-end detection tests on images made by the real tools (sgdisk, sfdisk, fdisk, mkfs.*).
//! Each tool must be installed: a missing tool fails the test with the package to install, it never
//! skips. blkid (util-linux) serves as the oracle for filesystem labels and UUIDs.

use super::*;
use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{symlink, FileExt};
use std::process::{Command, Stdio};

mod fs_probes;
mod system;

const TOOLS_HINT: &str = "install the Debian packages gdisk, fdisk, util-linux, dosfstools, \
                          e2fsprogs, ntfs-3g and exfatprogs; these fixture tests never skip";

fn tool(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| panic!("required tool `{name}` not found: {TOOLS_HINT}"))
}

fn run(name: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(tool(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blank(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn detect_file(path: &Path) -> Disk {
    let mut r = detect_paths(&[path.to_path_buf()], &DetectOptions::default());
    assert_eq!(r.disks.len(), 1);
    r.disks.remove(0)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (start sector, size in sectors, type) as sfdisk sees the table.
fn sfdisk_view(path: &Path) -> Vec<(u64, u64, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["-J", s(path)], None)).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_uppercase(),
            )
        })
        .collect()
}

fn our_view(d: &Disk) -> Vec<(u64, u64, String)> {
    let ss = u64::from(d.logical_sector_size);
    d.partitions
        .iter()
        .map(|p| {
            (
                p.start_bytes / ss,
                p.size_bytes / ss,
                p.part_type
                    .trim_start_matches("0x0")
                    .trim_start_matches("0x")
                    .to_uppercase(),
            )
        })
        .collect()
}

fn blkid(path: &Path) -> HashMap<String, String> {
    run("blkid", &["-p", "-o", "export", s(path)], None)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn flip(path: &Path, offset: u64) {
    let f = OpenOptionsRw::open(path);
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xFF;
    f.write_all_at(&b, offset).unwrap();
}

struct OpenOptionsRw;
impl OpenOptionsRw {
    fn open(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap()
    }
}

const ESP_GUID: &str = "11111111-2222-3333-4444-555555555555";
const DISK_GUID: &str = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE";

/// 64 MiB, GPT by sgdisk: ESP (legacy-bootable), Linux root, swap.
fn sgdisk_disk(dir: &Path) -> PathBuf {
    let p = blank(dir, "gpt.img", 64 << 20);
    run(
        "sgdisk",
        &[
            "-U",
            DISK_GUID,
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-c",
            "1:ESP",
            "-u",
            &format!("1:{ESP_GUID}"),
            "-A",
            "1:set:2",
            "-n",
            "2:0:+16M",
            "-t",
            "2:8300",
            "-c",
            "2:root",
            "-n",
            "3:0:0",
            "-t",
            "3:8200",
            "-c",
            "3:swap",
            s(&p),
        ],
        None,
    );
    p
}

#[test]
fn sgdisk_gpt_is_read_completely() {
    let t = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(t.path());
    let d = detect_file(&p);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(
        (d.table, d.transport, d.logical_sector_size),
        (PartitionTable::Gpt, Transport::File, 512)
    );
    assert_eq!(
        (d.size_bytes, d.name.as_str(), d.removable, d.rotational),
        (64 << 20, "gpt.img", false, false)
    );
    let g = d.gpt.as_ref().unwrap();
    assert_eq!(g.disk_guid.as_deref(), Some(DISK_GUID));
    assert!(g.primary_header_valid && g.backup_header_valid && g.protective_mbr && !g.hybrid_mbr);
    assert_eq!(
        (g.primary_entries_valid, g.backup_entries_valid),
        (Some(true), Some(true))
    );
    assert_eq!(
        (g.first_usable_lba, g.last_usable_lba),
        (34, (64 << 11) - 34)
    );
    assert_eq!(
        (g.partition_entry_count, g.backup_header_lba),
        (128, Some((64 << 11) - 1))
    );
    assert_eq!(our_view(&d), sfdisk_view(&p));
    let names: Vec<_> = d
        .partitions
        .iter()
        .map(|p| (p.type_name.as_str(), p.name.as_deref()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("EFI System", Some("ESP")),
            ("Linux filesystem", Some("root")),
            ("Linux swap", Some("swap"))
        ]
    );
    assert_eq!(d.partitions[0].uuid.as_deref(), Some(ESP_GUID));
    assert!(d.partitions[0].bootable && !d.partitions[1].bootable);
    assert!(d
        .partitions
        .iter()
        .all(|p| p.path.is_none() && p.mounts.is_empty() && p.fs.is_none()));
    assert!(!d.boot_medium);
    let opts = DetectOptions {
        boot_disk_guid: Some(DISK_GUID.to_lowercase()),
        ..DetectOptions::default()
    };
    assert!(detect_paths(&[p], &opts).disks[0].boot_medium);
}

#[test]
fn damaged_primary_gpt_falls_back_to_backup() {
    let t = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(t.path());
    let good = detect_file(&p);
    flip(&p, 512 + 0x30); // last_usable in the primary header: CRC mismatch
    let d = detect_file(&p);
    let g = d.gpt.as_ref().unwrap();
    assert!(!g.primary_header_valid && g.backup_header_valid);
    assert_eq!(
        (g.primary_entries_valid, g.backup_entries_valid),
        (None, Some(true))
    );
    assert_eq!(d.partitions, good.partitions);
    assert!(
        d.problems
            .iter()
            .any(|p| p.contains("primary GPT header (LBA 1) is damaged")),
        "{:?}",
        d.problems
    );
    assert!(
        d.problems
            .iter()
            .any(|p| p.contains("read from the backup")),
        "{:?}",
        d.problems
    );
    assert_eq!(g.problems.len(), 2, "{:?}", g.problems);

    // Primary wiped entirely: still found through the backup.
    OpenOptionsRw::open(&p)
        .write_all_at(&[0u8; 512], 512)
        .unwrap();
    let d = detect_file(&p);
    assert_eq!(d.table, PartitionTable::Gpt);
    assert_eq!(d.partitions, good.partitions);
    assert!(
        d.problems.iter().any(|p| p.contains("missing")),
        "{:?}",
        d.problems
    );
}

#[test]
fn damaged_primary_entries_use_the_backup_array() {
    let t = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(t.path());
    let good = detect_file(&p);
    flip(&p, 1024 + 40); // first_lba of entry 1 in the primary array
    let d = detect_file(&p);
    let g = d.gpt.as_ref().unwrap();
    assert!(g.primary_header_valid && g.backup_header_valid);
    assert_eq!(
        (g.primary_entries_valid, g.backup_entries_valid),
        (Some(false), Some(true))
    );
    assert_eq!(d.partitions, good.partitions);
    assert!(d
        .problems
        .iter()
        .any(|p| p.contains("primary GPT partition entry array is damaged")));
}

#[test]
fn damaged_backup_gpt_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(t.path());
    let good = detect_file(&p);
    flip(&p, (64 << 20) - 512 + 0x40);
    let d = detect_file(&p);
    let g = d.gpt.as_ref().unwrap();
    assert!(g.primary_header_valid && !g.backup_header_valid);
    assert_eq!(d.partitions, good.partitions);
    assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    assert!(d.problems[0].contains("backup GPT header"));

    // Both headers gone: a GPT is still announced by the protective MBR, with no partitions.
    flip(&p, 512 + 0x30);
    let d = detect_file(&p);
    assert_eq!(d.table, PartitionTable::Gpt);
    assert!(d.partitions.is_empty());
    assert!(
        d.problems.iter().any(|p| p.contains("no valid GPT header")),
        "{:?}",
        d.problems
    );
}

#[test]
fn truncated_gpt_image() {
    let t = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(t.path());
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(20 << 20)
        .unwrap();
    let d = detect_file(&p);
    let g = d.gpt.as_ref().unwrap();
    assert!(g.primary_header_valid && !g.backup_header_valid);
    assert_eq!(d.partitions.len(), 3);
    assert!(
        d.problems
            .iter()
            .any(|p| p.contains("past the end of the disk")),
        "{:?}",
        d.problems
    );
}

#[test]
fn hybrid_mbr_is_recognised() {
    let t = tempfile::tempdir().unwrap();
    let p = sgdisk_disk(t.path());
    run("sgdisk", &["-h", "1", s(&p)], None);
    let d = detect_file(&p);
    let g = d.gpt.as_ref().unwrap();
    assert!(g.hybrid_mbr && !g.protective_mbr);
    assert_eq!(d.table, PartitionTable::Gpt);
    assert_eq!(d.partitions.len(), 3);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert!(d.mbr.is_some());
}

#[test]
fn fdisk_gpt_with_4096_byte_sectors() {
    let t = tempfile::tempdir().unwrap();
    let p = blank(t.path(), "4k.img", 64 << 20);
    run(
        "fdisk",
        &["-b", "4096", s(&p)],
        Some("g\nn\n1\n\n+16M\nt\n1\nn\n2\n\n\nw\n"),
    );
    let ext = blank(t.path(), "ext.fs", 8 << 20);
    run(
        "mkfs.ext4",
        &["-q", "-b", "4096", "-L", "big", s(&ext)],
        None,
    );
    OpenOptionsRw::open(&p)
        .write_all_at(&std::fs::read(&ext).unwrap(), 4352 * 4096)
        .unwrap();
    let d = detect_file(&p);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    assert_eq!(
        (d.logical_sector_size, d.physical_sector_size),
        (4096, 4096)
    );
    let g = d.gpt.as_ref().unwrap();
    assert_eq!((g.first_usable_lba, g.last_usable_lba), (256, 16384 - 6));
    let v: Vec<_> = d
        .partitions
        .iter()
        .map(|p| (p.start_bytes, p.size_bytes, p.type_name.as_str()))
        .collect();
    assert_eq!(
        v,
        vec![
            (256 * 4096, 4096 * 4096, "EFI System"),
            (4352 * 4096, 11776 * 4096, "Linux filesystem")
        ]
    );
    assert_eq!(
        (d.partitions[1].fs, d.partitions[1].fs_label.as_deref()),
        (Some(FsKind::Ext4), Some("big"))
    );
}

#[test]
fn sfdisk_mbr_with_logical_partitions() {
    let t = tempfile::tempdir().unwrap();
    let p = blank(t.path(), "mbr.img", 64 << 20);
    let script = "label: dos\nlabel-id: 0x12345678\n,8MiB,83,*\n,,E\n,4MiB,82\n,4MiB,83\n,,7\n";
    run("sfdisk", &[s(&p)], Some(script));
    let ext = blank(t.path(), "ext.fs", 4 << 20);
    run("mkfs.ext3", &["-q", "-L", "logical6", s(&ext)], None);
    let d = detect_file(&p);
    assert_eq!(d.table, PartitionTable::Mbr);
    assert!(d.gpt.is_none());
    assert_eq!(d.mbr.as_ref().unwrap().disk_signature, "0x12345678");
    assert_eq!(our_view(&d), sfdisk_view(&p));
    let n: Vec<_> = d
        .partitions
        .iter()
        .map(|p| (p.number, p.logical, p.extended, p.type_name.as_str()))
        .collect();
    assert_eq!(
        n,
        vec![
            (1, false, false, "Linux"),
            (2, false, true, "Extended"),
            (5, true, false, "Linux swap"),
            (6, true, false, "Linux"),
            (7, true, false, "HPFS/NTFS/exFAT"),
        ]
    );
    assert!(d.partitions[0].bootable && !d.partitions[1].bootable);
    assert!(d.problems.is_empty(), "{:?}", d.problems);

    let p6 = &d.partitions[3];
    OpenOptionsRw::open(&p)
        .write_all_at(&std::fs::read(&ext).unwrap(), p6.start_bytes)
        .unwrap();
    let d = detect_file(&p);
    assert_eq!(
        (d.partitions[3].fs, d.partitions[3].fs_label.as_deref()),
        (Some(FsKind::Ext3), Some("logical6"))
    );
    assert_eq!(
        d.partitions[1].fs, None,
        "the extended container is never probed"
    );
}

#[test]
fn mbr_lbas_scale_with_4096_byte_sectors() {
    let t = tempfile::tempdir().unwrap();
    let p = blank(t.path(), "mbr4k.img", 64 << 20);
    run(
        "fdisk",
        &["-b", "4096", s(&p)],
        Some("o\nn\np\n1\n\n+8M\nn\ne\n2\n\n\nn\n\n+4M\nw\n"),
    );
    let bytes = std::fs::read(&p).unwrap();
    let len = bytes.len() as u64;
    let mut src = DiskReader::new(std::io::Cursor::new(bytes), len);
    let l = layout::probe(&mut src, SectorSize::Device(4096));
    let v: Vec<_> = l
        .partitions
        .iter()
        .map(|p| (p.number, p.start_bytes, p.size_bytes))
        .collect();
    // fdisk aligns to 1 MiB = 256 sectors of 4 KiB; the logical starts one alignment step in.
    assert_eq!(v[0], (1, 256 * 4096, 2048 * 4096));
    assert_eq!((v[1].0, v[1].1), (2, 2304 * 4096));
    assert_eq!((v[2].0, v[2].1, v[2].2), (5, 2560 * 4096, 1024 * 4096));
    assert!(l.problems.is_empty(), "{:?}", l.problems);
}
