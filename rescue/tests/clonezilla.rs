//! Clonezilla images made by the real Clonezilla (Debian 12's `ocs-sr savedisk`, through
//! `scripts/clonezilla-fixture`), restored, verified and inspected by `rescue`, and checked with
//! independent tools: `sgdisk -v`/`sfdisk -V` for the tables, the saved MBR, EBR chain and hidden data
//! compared sector by sector with the source disk, every filesystem checked clean (e2fsck, fsck.vfat,
//! ntfsfix) and its whole tree compared with the source's (debugfs rdump, mcopy, ntfs-3g), the raw
//! partition byte for byte, the swap's UUID and label. Damaged copies (a flipped byte, a missing piece, a
//! truncated piece) are named by `verify` and refused by `restore` with the target untouched.
//! Needs root (loop devices for ocs-sr, FUSE for ntfs-3g), as CI has.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use builder::checks::{partition_entries, read_sectors};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cmd` and fails the test with its output unless it succeeds.
fn sh(cmd: &mut Command) -> String {
    let (ok, out) = builder::checks::tool(cmd.env("LC_ALL", "C.UTF-8"));
    assert!(ok, "{cmd:?}:\n{out}");
    out
}

/// A folder for one test, outside /tmp (ocs-sr works with a /tmp of its own, where the fixture's files
/// would not be).
fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A Clonezilla image of a fresh fixture disk, in `dir`: (the source disk, the image directory).
fn fixture(dir: &Path, layout: &str, compress: &str, split_mb: u32) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clonezilla-fixture");
    let disk = dir.join(format!("{layout}.disk"));
    let image = dir.join(format!("{layout}-{compress}"));
    sh(Command::new(&script)
        .args(["--layout", layout, "--compress", compress])
        .args(["--split-mb", &split_mb.to_string()])
        .arg("--disk")
        .arg(&disk)
        .arg("--image-dir")
        .arg(&image));
    (disk, image)
}

/// The file of `image` whose name holds `part`.
fn piece_path(image: &Path, part: &str) -> PathBuf {
    fs::read_dir(image)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(part))
        .unwrap_or_else(|| panic!("{} holds no {part}", image.display()))
}

fn blake(path: &Path) -> String {
    blake3::hash(&fs::read(path).unwrap()).to_hex().to_string()
}

/// Partition `n` of `disk` copied into a file of its own.
fn part(disk: &Path, n: u32, out: &Path) -> PathBuf {
    let (start, len) = partition_bytes(disk, n);
    let file = out.join(format!(
        "{}-p{n}.part",
        disk.file_stem().unwrap().to_string_lossy()
    ));
    builder::checks::copy_sparse(disk, start, &file, 0, len, true);
    file
}

/// Every file of the filesystem in `part` (of kind `fs`) copied out into a new folder, by a tool that is
/// not ours; the filesystem is checked clean first.
fn tree(fs_kind: &str, part: &Path) -> PathBuf {
    let out = tempfile::Builder::new()
        .prefix(part.file_name().unwrap())
        .tempdir_in(part.parent().unwrap())
        .unwrap()
        .keep();
    match fs_kind {
        "ext4" => {
            sh(Command::new("e2fsck").arg("-fn").arg(part));
            sh(Command::new("debugfs")
                .arg("-R")
                .arg(format!("rdump / {}", out.display()))
                .arg(part));
        }
        "vfat" => {
            sh(Command::new("fsck.vfat").arg("-n").arg(part));
            sh(Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .args(["-s", "-n", "-i"])
                .arg(part)
                .arg("::/")
                .arg(&out));
        }
        "ntfs" => {
            sh(Command::new("ntfsfix").arg("-n").arg(part));
            let mnt = tempfile::tempdir_in(part.parent().unwrap()).unwrap().keep();
            sh(Command::new("ntfs-3g")
                .arg("-o")
                .arg("ro")
                .arg(part)
                .arg(&mnt));
            let copied = Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", mnt.display()))
                .arg(&out)
                .status();
            let _ = Command::new("umount").arg(&mnt).status();
            assert!(copied.unwrap().success());
        }
        other => panic!("no tree reader for {other}"),
    }
    out
}

/// The filesystem in partition `n` of `restored` is clean and holds the same tree as the source's.
fn same_tree(source: &Path, restored: &Path, n: u32, fs_kind: &str, work: &Path) {
    let a = tree(fs_kind, &part(source, n, work));
    let b = tree(fs_kind, &part(restored, n, work));
    let files = fs::read_dir(&a).unwrap().count();
    assert!(files > 0, "partition {n} of the source holds no files");
    sh(Command::new("diff").arg("-r").arg(&a).arg(&b));
}

fn new_target(path: &Path, mib: u64) {
    let _ = fs::remove_file(path);
    let f = fs::File::create(path).unwrap();
    f.set_len(mib << 20).unwrap();
}

/// A damaged copy of `image` (hard links to every file but `changed`, which `damage` rewrites).
fn damaged_copy(image: &Path, to: &Path, changed: &str, damage: impl FnOnce(&Path)) {
    fs::create_dir(to).unwrap();
    for e in fs::read_dir(image).unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy() == changed {
            fs::copy(e.path(), to.join(&name)).unwrap();
        } else {
            fs::hard_link(e.path(), to.join(&name)).unwrap();
        }
    }
    damage(&to.join(changed));
}

/// `verify` fails naming `name`; `restore` is refused, naming it too, and the target is untouched.
fn refused(image: &Path, name: &str, target: &Path) {
    let (rc, out) = rescue(&["verify", s(image)]);
    assert_ne!(rc, 0, "verify passed a damaged image:\n{out}");
    assert!(out.contains(name), "verify does not name {name}:\n{out}");
    let before = blake(target);
    let (rc, out) = rescue(&["restore", s(image), s(target), "--yes"]);
    assert_ne!(rc, 0, "restore accepted a damaged image:\n{out}");
    assert!(out.contains(name), "restore does not name {name}:\n{out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert_eq!(
        blake(target),
        before,
        "the refused restore wrote to the target"
    );
}

/// A GPT disk (FAT32 ESP, ext4, NTFS, a raw BIOS boot partition) saved with zstd: verified, inspected,
/// restored onto a larger disk (GPT moved) with every tree identical; too small a disk refused with the
/// size needed; one partition's partclone image alone restored onto a file; a flipped byte refused.
#[test]
fn a_gpt_disk_saved_by_clonezilla_restores_onto_a_larger_disk() {
    let t = tempdir();
    let work = t.path();
    let (disk, image) = fixture(work, "gpt", "zstd", 0);

    let (rc, out) = rescue(&["verify", s(&image)]);
    assert_eq!(rc, 0, "{out}");
    for want in ["partition 2", "checksums", "raw copy"] {
        assert!(out.contains(want), "verify does not say {want:?}:\n{out}");
    }
    let (rc, o, e) = rescue_split(&["inspect", "--json", s(&image)]);
    assert_eq!(rc, 0, "{o}{e}");
    let info: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert!(o.contains("Clonezilla"), "{o}");
    assert_eq!(info["partitions"].as_array().map(Vec::len), Some(4), "{o}");

    // Onto a larger disk: the GPT moves to its end.
    let target = work.join("larger.img");
    let size = fs::metadata(&disk).unwrap().len();
    new_target(&target, (size >> 20) + 32);
    let (rc, out) = rescue(&["restore", s(&image), s(&target), "--yes"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("read back"), "{out}");
    let v = sh(Command::new("sgdisk").arg("-v").arg(&target));
    assert!(v.contains("No problems found"), "{v}");
    assert_eq!(partition_entries(&target), partition_entries(&disk));
    assert_eq!(
        read_sectors(&target, 0, 1)[..440],
        read_sectors(&disk, 0, 1)[..440]
    );
    same_tree(&disk, &target, 1, "vfat", work);
    same_tree(&disk, &target, 2, "ext4", work);
    same_tree(&disk, &target, 3, "ntfs", work);
    assert_eq!(
        fs::read(part(&disk, 4, work)).unwrap(),
        fs::read(part(&target, 4, work)).unwrap(),
        "the raw partition differs"
    );

    // Imported into an image of ours, which restores to the same trees; no temporary disk stays behind.
    let ours = work.join("imported.rimg");
    let (rc, out) = rescue(&["import", s(&image), "-o", s(&ours)]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("verified"), "{out}");
    let left: Vec<_> = fs::read_dir(work)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("clonezilla-import")
        })
        .collect();
    assert!(left.is_empty(), "the temporary disk was left: {left:?}");
    let back = work.join("back.img");
    new_target(&back, fs::metadata(&disk).unwrap().len() >> 20);
    let (rc, out) = rescue(&["restore", s(&ours), s(&back), "--yes"]);
    assert_eq!(rc, 0, "{out}");
    assert_eq!(partition_entries(&back), partition_entries(&disk));
    same_tree(&disk, &back, 2, "ext4", work);
    same_tree(&disk, &back, 3, "ntfs", work);

    // A piece of the image named as the target: refused as the image itself, nothing written.
    let piece_before = blake(&piece_path(&image, "p4.dd-ptcl-img"));
    let (rc, out) = rescue(&[
        "restore",
        s(&image),
        s(&piece_path(&image, "p4.dd-ptcl-img")),
        "--yes",
    ]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("is the image"), "{out}");
    assert_eq!(blake(&piece_path(&image, "p4.dd-ptcl-img")), piece_before);

    // Too small: refused with the size needed, nothing written.
    let small = work.join("small.img");
    new_target(&small, 48);
    let before = blake(&small);
    let (rc, out) = rescue(&["restore", s(&image), s(&small), "--yes"]);
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains("too small") && out.contains("at least"),
        "{out}"
    );
    assert_eq!(blake(&small), before);

    // One partclone image alone, onto a file the size of its partition.
    let piece = piece_path(&image, "p2.ext4-ptcl-img");
    let (_, len) = partition_bytes(&disk, 2);
    let alone = work.join("alone.ext4");
    new_target(&alone, len >> 20);
    let (rc, out) = rescue(&["restore", s(&piece), s(&alone), "--yes"]);
    assert_eq!(rc, 0, "{out}");
    let a = tree("ext4", &part(&disk, 2, work));
    let b = tree("ext4", &alone);
    sh(Command::new("diff").arg("-r").arg(&a).arg(&b));

    // A flipped byte in the middle of the ext4 stream.
    let bad = work.join("flipped");
    let name = piece.file_name().unwrap().to_string_lossy().into_owned();
    damaged_copy(&image, &bad, &name, |f| {
        let mut bytes = fs::read(f).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        fs::write(f, bytes).unwrap();
    });
    refused(&bad, &name, &target);
}

/// An MBR disk (primary ext4, an extended partition with a logical ext4, a logical swap and a logical
/// FAT16, boot code and hidden data after the MBR) saved with gzip in 1 MB pieces: restored onto a disk
/// of the same size with the MBR, every EBR and the hidden data as the source had them, the swap made
/// again with its UUID and label, every tree identical; one logical partition restored alone into the
/// restored disk; a missing piece and a truncated piece refused.
#[test]
fn an_mbr_disk_with_logical_partitions_restores_from_split_gzip() {
    let t = tempdir();
    let work = t.path();
    let (disk, image) = fixture(work, "mbr", "gzip", 1);
    let names: Vec<String> = fs::read_dir(&image)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".gz.ab")),
        "the fixture is not split: {names:?}"
    );

    // Restored by an unattended job (the target chosen by a rule), with its log beside the directory.
    let target = work.join("same.img");
    new_target(&target, fs::metadata(&disk).unwrap().len() >> 20);
    let job = format!("action=restore image.file={} target.size=1M..1T", s(&image));
    let (rc, out) = rescue(&["job", &job, "--disk", s(&target)]);
    assert_eq!(rc, 0, "{out}");
    let log = fs::read_to_string(image.with_extension("log"))
        .unwrap_or_else(|e| panic!("no log beside {}: {e}\n{out}", image.display()));
    assert!(log.contains("restore: OK"), "{log}");
    sh(Command::new("sfdisk").arg("-V").arg(&target));
    assert_eq!(partition_entries(&target), partition_entries(&disk));
    // LBA 0 and the hidden data after it, and each EBR of the chain, sector for sector.
    assert_eq!(read_sectors(&target, 0, 2048), read_sectors(&disk, 0, 2048));
    let ebrs = builder::checks::ebr_sectors(&disk);
    assert_eq!(ebrs.len(), 3, "the fixture has three logical partitions");
    for ebr in ebrs {
        assert_eq!(
            read_sectors(&target, ebr, 1),
            read_sectors(&disk, ebr, 1),
            "EBR at {ebr}"
        );
    }
    same_tree(&disk, &target, 1, "ext4", work);
    same_tree(&disk, &target, 5, "ext4", work);
    same_tree(&disk, &target, 7, "vfat", work);
    let id = |d: &Path| {
        let (start, _) = partition_bytes(d, 6);
        sh(Command::new("blkid")
            .args(["-p", "-o", "export", "-O", &start.to_string()])
            .arg(d))
        .lines()
        .filter(|l| !l.starts_with("DEVNAME="))
        .collect::<Vec<_>>()
        .join("\n")
    };
    let swap = id(&target);
    assert!(swap.contains("TYPE=swap"), "{swap}");
    assert_eq!(swap, id(&disk));

    // One logical partition alone, into its place on the restored disk (zeroed first).
    let (start, len) = partition_bytes(&target, 5);
    builder::checks::copy_sparse(Path::new("/dev/zero"), 0, &target, start, len, false);
    let (rc, out) = rescue(&[
        "restore",
        s(&image),
        s(&target),
        "--partition",
        "5",
        "--to-partition",
        "5",
        "--yes",
    ]);
    assert_eq!(rc, 0, "{out}");
    same_tree(&disk, &target, 5, "ext4", work);

    // A missing middle piece, and a truncated last piece.
    let first = names
        .iter()
        .find(|n| n.contains("p1.ext4-ptcl-img.gz.ab"))
        .unwrap()
        .clone();
    let gone = work.join("missing");
    damaged_copy(&image, &gone, &first, |f| fs::remove_file(f).unwrap());
    refused(&gone, "p1.ext4-ptcl-img", &target);
    let mut pieces: Vec<&String> = names
        .iter()
        .filter(|n| n.contains("p5.ext4-ptcl-img.gz."))
        .collect();
    pieces.sort();
    let last = pieces.last().unwrap().to_string();
    let cut = work.join("truncated");
    damaged_copy(&image, &cut, &last, |f| {
        let len = fs::metadata(f).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    });
    refused(&cut, "p5.ext4-ptcl-img", &target);
}
