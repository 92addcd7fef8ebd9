//! Verifying and restoring a Clonezilla image through the TUI, in the rescue system: an MBR disk (a
//! primary ext4, an extended partition with a logical ext4, a logical swap and a logical FAT16, boot code
//! and hidden data after the MBR) saved by the real Clonezilla (`ocs-sr savedisk`, zstd, in 1 MB pieces)
//! into a folder of an ext4 drive; the verify wizard checks the directory, and the restore wizard lists
//! it, says what it is, and restores it onto a larger disk. On the host afterwards: the table is valid and
//! the source's, the first MiB (MBR, hidden data) and every EBR are the source's sector for sector, the
//! filesystems are clean and hold the source's trees, the swap has its UUID and label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use builder::checks::{partition_entries, read_sectors};
use builder::qemu::{Bus, Disk};

mod common;
use common::*;

fn sh(cmd: &mut Command) -> String {
    let (ok, out) = tool(cmd.env("LC_ALL", "C.UTF-8"));
    assert!(ok, "{cmd:?}:\n{out}");
    out
}

/// Partition `n` of `disk` (by the MBR/EBR chain `sfdisk` reads) copied into a file.
fn part(disk: &Path, n: u32, out: &Path) -> std::path::PathBuf {
    let dump = sh(Command::new("sfdisk").arg("--dump").arg(disk));
    let line = dump
        .lines()
        .find(|l| {
            l.split(" : ")
                .next()
                .is_some_and(|d| d.ends_with(&n.to_string()))
        })
        .unwrap();
    let field = |k: &str| -> u64 {
        line.split(&format!("{k}="))
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let file = out.join(format!(
        "{}-{n}.part",
        disk.file_stem().unwrap().to_string_lossy()
    ));
    builder::checks::copy_sparse(
        disk,
        field("start") * 512,
        &file,
        0,
        field("size") * 512,
        true,
    );
    file
}

/// The ext4 filesystem in `part` is clean; its tree, copied out by debugfs.
fn ext4_tree(part: &Path) -> std::path::PathBuf {
    sh(Command::new("e2fsck").arg("-fn").arg(part));
    let out = part.with_extension("tree");
    std::fs::create_dir(&out).unwrap();
    sh(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", out.display()))
        .arg(part));
    out
}

#[test]
fn a_clonezilla_directory_is_restored_through_the_tui() {
    // Outside /tmp: ocs-sr works with a /tmp of its own.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let work = dir.path();
    let source = work.join("source.disk");
    let folder = work.join("drive");
    let image = folder.join("saved-by-clonezilla");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clonezilla-fixture");
    sh(Command::new(&script)
        .args(["--layout", "mbr", "--compress", "zstd", "--split-mb", "1"])
        .arg("--disk")
        .arg(&source)
        .arg("--image-dir")
        .arg(&image));
    let drive = work.join("images.img");
    blank(&drive, 256);
    sh(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-d"])
        .arg(&folder)
        .arg(&drive));
    let target = work.join("target.img");
    blank(&target, 96);

    let mut vm = vm();
    vm.disks.push(Disk::new(&drive, Bus::Virtio).serial("IMG"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    let mut s = Session::boot(vm, "Disks (2)");
    // Verified first through the verify wizard: every stream and checksum.
    s.send("v");
    s.wait("Step 1 of 2", STEP);
    s.select("256.0 MiB");
    s.send(ENTER);
    let screen = s.wait("saved-by-clonezilla", STEP);
    assert!(screen.contains("Step 2 of 2"), "{screen}");
    s.select("saved-by-clonezilla");
    s.send(ENTER);
    s.wait("SUCCESS", JOB_TIMEOUT);
    s.send(ENTER);
    s.wait("Disks (2)", STEP);
    s.send("r");
    s.wait("Step 1 of 5", STEP);
    s.select("256.0 MiB");
    s.send(ENTER);
    let screen = s.wait("saved-by-clonezilla", STEP);
    assert!(screen.contains("Step 2 of 5"), "{screen}");
    s.select("saved-by-clonezilla");
    s.send(ENTER);
    let screen = s.wait("Step 3 of 5", JOB_TIMEOUT);
    assert!(screen.contains("Clonezilla image"), "{screen}");
    s.send(ENTER);
    s.wait("Step 4 of 5", STEP);
    let seconds = s.restore_onto("96.0 MiB", "Disks (2)");
    s.power_off();
    eprintln!("Clonezilla directory restored through the TUI under TCG in {seconds:.1} s");

    // On the host.
    sh(Command::new("sfdisk").arg("-V").arg(&target));
    assert_eq!(partition_entries(&target), partition_entries(&source));
    assert_eq!(
        read_sectors(&target, 0, 2048),
        read_sectors(&source, 0, 2048)
    );
    let ebrs = builder::checks::ebr_sectors(&source);
    assert_eq!(ebrs.len(), 3, "the fixture has three logical partitions");
    for ebr in ebrs {
        assert_eq!(
            read_sectors(&target, ebr, 1),
            read_sectors(&source, ebr, 1),
            "EBR at {ebr}"
        );
    }
    for n in [1, 5] {
        let a = ext4_tree(&part(&source, n, work));
        let b = ext4_tree(&part(&target, n, work));
        sh(Command::new("diff").arg("-r").arg(&a).arg(&b));
    }
    let fat = part(&target, 7, work);
    sh(Command::new("fsck.vfat").arg("-n").arg(&fat));
    let swap = |d: &Path| {
        sh(Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(part(d, 6, work)))
        .lines()
        .filter(|l| !l.starts_with("DEVNAME="))
        .collect::<Vec<_>>()
        .join("\n")
    };
    let got = swap(&target);
    assert!(got.contains("TYPE=swap"), "{got}");
    assert_eq!(got, swap(&source));
}
