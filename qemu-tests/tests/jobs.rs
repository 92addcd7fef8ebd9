//! Unattended jobs in the guest (`rescue.job=` on the kernel command line): a capture and a restore with
//! the disks matched by serial number and the image found by filesystem label, each powering off by
//! itself; and a rule matching more than one disk, refused with the disks it saw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use builder::qemu::{Bus, Disk, Vm};
use qemu_tests::{Guest, BOOT_TIMEOUT};
use serde_json::Value;

mod common;
use common::*;

fn images_drive(path: &Path) {
    ext4_drive(path, 256);
    let (ok, out) = tool(Command::new("tune2fs").args(["-L", "IMAGES"]).arg(path));
    assert!(ok, "{out}");
}

fn ls(drive: &Path, dir: &str) -> String {
    tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("ls -l {dir}"))
            .arg(drive),
    )
    .1
}

fn cat(drive: &Path, file: &str, work: &Path) -> Vec<u8> {
    let out = work.join("cat.out");
    let _ = std::fs::remove_file(&out);
    tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump {file} {}", out.display()))
            .arg(drive),
    );
    std::fs::read(&out).unwrap_or_default()
}

/// Boot with `job`, wait for the job's end marker and return (output, status).
fn boot_job(mut vm: Vm, job: &str) -> (Guest, String, i32) {
    vm.append = format!("rescue.job=\"{job}\"");
    let mut g = Guest::boot(vm).unwrap();
    let (text, rc) = g
        .marked_output(CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    (g, text, rc)
}

#[test]
fn unattended_capture_and_restore_by_serial_and_label() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let images = work.join("images.img");
    images_drive(&images);
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);

    // Capture: the source by serial, the image on the filesystem labelled IMAGES, named after the source.
    let mut vm = vm();
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC-1234"));
    vm.disks
        .push(Disk::new(&target, Bus::Virtio).serial("DST-5678"));
    let (mut g, text, rc) = boot_job(
        vm,
        "action=capture source.serial=SRC-1234 image.label=IMAGES image.path=captures/{serial}.rimg after=poweroff",
    );
    assert_eq!(rc, rescue::init::EXIT_POWEROFF, "{}", tail(&text, 30));
    g.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the capture job did not power off: {e:#}"));
    let listing = ls(&images, "/captures");
    assert!(listing.contains("SRC-1234.rimg"), "{listing}");
    assert!(listing.contains("SRC-1234.rimg.log"), "{listing}");
    let result_name = listing
        .split_whitespace()
        .find(|w| w.starts_with("SRC-1234.rimg.capture-SRC-1234-"))
        .unwrap_or_else(|| panic!("no result file:\n{listing}"))
        .to_string();
    let result: Value =
        serde_json::from_slice(&cat(&images, &format!("/captures/{result_name}"), work)).unwrap();
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(result["verified"], true, "{result:#}");
    assert_eq!(result["source"]["serial"], "SRC-1234");

    // Restore onto the disk with the other serial, then power off by itself.
    let mut vm = common::vm();
    vm.disks
        .push(Disk::new(&target, Bus::Virtio).serial("DST-5678"));
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    let (mut g, text, rc) = boot_job(
        vm,
        "action=restore image.label=IMAGES image.path=captures/SRC-1234.rimg target.serial=DST-5678 after=poweroff",
    );
    assert_eq!(rc, rescue::init::EXIT_POWEROFF, "{}", tail(&text, 30));
    g.wait_exit(Duration::from_secs(60)).unwrap();
    let (_, out) = tool(Command::new("sgdisk").arg("-v").arg(&target));
    assert!(out.contains("No problems found"), "{out}");
    let (want, have) = (host_report(&src.path), host_report(&target));
    assert_eq!(have["partitions"], want["partitions"]);
    let listing = ls(&images, "/captures");
    assert!(
        listing.contains("SRC-1234.rimg.restore-DST-5678-"),
        "no restore result:\n{listing}"
    );
}

#[test]
fn a_rule_matching_several_disks_is_refused_with_the_disks_seen() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let images = work.join("images.img");
    images_drive(&images);
    let (a, b) = (work.join("a.img"), work.join("b.img"));
    for p in [&a, &b] {
        blank(p, 64);
    }
    let mut vm = vm();
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    vm.disks
        .push(Disk::new(&a, Bus::Virtio).serial("MACHINE-A"));
    vm.disks
        .push(Disk::new(&b, Bus::Virtio).serial("MACHINE-B"));
    let (_g, text, rc) = boot_job(
        vm,
        "action=restore image.label=IMAGES image.path=golden.rimg target.internal=true target.size=64M after=poweroff",
    );
    assert_eq!(rc, 1, "{}", tail(&text, 30));
    for needle in [
        "matches 2 devices",
        "serial=MACHINE-A",
        "serial=MACHINE-B",
        "serial=IMG",
        "THE JOB FAILED",
    ] {
        assert!(
            text.contains(needle),
            "no {needle:?} in:\n{}",
            tail(&text, 30)
        );
    }
    let before = std::fs::read(&a).unwrap();
    assert!(
        before.iter().all(|&x| x == 0),
        "a disk was written after a refusal"
    );
}

/// First and last 512-byte sector of partition `n` of a disk image (sgdisk).
fn partition_sectors(disk: &Path, n: u32) -> (u64, u64) {
    let info = tool(
        Command::new("sgdisk")
            .arg("-i")
            .arg(n.to_string())
            .arg(disk),
    )
    .1;
    let field = |name: &str| -> u64 {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{info}"))
    };
    (field("First sector:"), field("Last sector:"))
}

/// Run debugfs `commands` (read-write) on partition `n` of `disk`, in place.
fn debugfs_in_partition(disk: &Path, n: u32, commands: &[String], work: &Path) -> String {
    use std::io::{Seek, SeekFrom, Write};
    let (first, last) = partition_sectors(disk, n);
    let bytes = std::fs::read(disk).unwrap();
    let part = work.join("partition.img");
    std::fs::write(
        &part,
        &bytes[(first * 512) as usize..((last + 1) * 512) as usize],
    )
    .unwrap();
    let mut out = String::new();
    for c in commands {
        out.push_str(
            &tool(
                Command::new("debugfs")
                    .arg("-w")
                    .arg("-R")
                    .arg(c)
                    .arg(&part),
            )
            .1,
        );
    }
    let mut f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.seek(SeekFrom::Start(first * 512)).unwrap();
    f.write_all(&std::fs::read(&part).unwrap()).unwrap();
    out
}

/// The known-good image a technician restores: `src` captured on the host into `work/golden.rimg`.
fn golden_image(src: &Source, work: &Path) -> PathBuf {
    let golden = work.join("golden.rimg");
    let req = rescue::ops::Request::Capture(rescue::ops::CaptureSpec {
        source: src.path.clone(),
        output: golden.clone().into(),
        threads: 2,
        ..Default::default()
    });
    let out = rescue::ops::run(
        &req,
        &Default::default(),
        &Default::default(),
        Default::default(),
    );
    assert!(out.ok, "{:?}", out.error);
    golden
}

#[test]
fn mass_restore_from_a_job_file_on_the_stick() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let golden = golden_image(&src, work);
    let job = work.join("rescue-job.toml");
    std::fs::write(
        &job,
        "action = \"restore\"\nafter = \"poweroff\"\n[image]\nlabel = \"RESCUE-DATA\"\npath = \"golden.rimg\"\n\
         [target]\ninternal = true\n",
    )
    .unwrap();
    // The stick, built with an ext4 data partition so the host can put files on it (debugfs).
    let files = qemu_tests::boot_files();
    let stick = work.join("stick.img");
    let opts = builder::image::ImageOptions {
        size: 128 * MIB,
        serial_default: true,
        epoch: 1_700_000_000,
        data_fs: boot::DataFs::Ext4,
        ..Default::default()
    };
    builder::image::write_image(&stick, &files.vmlinuz, &files.initramfs, &opts).unwrap();
    let out = debugfs_in_partition(
        &stick,
        2,
        &[
            format!("write {} golden.rimg", golden.display()),
            format!("write {} rescue-job.toml", job.display()),
        ],
        work,
    );
    assert!(!out.contains("rror"), "{out}");

    // A machine with one internal disk boots the stick: no keyboard, no command line.
    let target = work.join("machine-disk.img");
    blank(&target, src.spec.size_mib);
    let mut vm = common::vm();
    vm.bios = true;
    vm.usb_controller = true;
    vm.disks.push(Disk::new(&stick, Bus::Usb).boot_first());
    vm.disks
        .push(Disk::new(&target, Bus::Virtio).serial("MACHINE-1"));
    let mut g = Guest::boot(vm).unwrap();
    g.wait_for("unattended", BOOT_TIMEOUT + Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    g.wait_exit(CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("the mass-restore job did not power off: {e:#}"));
    let out = g.output();
    assert!(out.contains("restore: OK"), "{}", tail(&out, 30));

    let (_, v) = tool(Command::new("sgdisk").arg("-v").arg(&target));
    assert!(v.contains("No problems found"), "{v}");
    let (want, have) = (host_report(&src.path), host_report(&target));
    assert_eq!(have["partitions"], want["partitions"]);
    // The result is recorded on the stick beside the image.
    let listing = debugfs_in_partition(&stick, 2, &["ls -l /".to_string()], work);
    assert!(
        listing.contains("golden.rimg.restore-MACHINE-1-"),
        "no result on the stick:\n{listing}"
    );
}

#[test]
fn a_write_protected_drive_still_serves_images_for_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let golden = golden_image(&src, work);
    let images = work.join("images.img");
    images_drive(&images);
    let (ok, out) = tool(
        Command::new("debugfs")
            .arg("-w")
            .arg("-R")
            .arg(format!("write {} golden.rimg", golden.display()))
            .arg(&images),
    );
    assert!(ok && !out.contains("rror"), "{out}");
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);
    let before = std::fs::read(&images).unwrap();
    let mut vm = common::vm();
    let mut ro = Disk::new(&images, Bus::Virtio).serial("IMG");
    ro.read_only = true;
    vm.disks.push(ro);
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    let (mut g, text, rc) = boot_job(
        vm,
        "action=restore image.label=IMAGES image.path=golden.rimg target.serial=DST after=poweroff",
    );
    assert_eq!(rc, rescue::init::EXIT_POWEROFF, "{}", tail(&text, 30));
    assert!(text.contains("restore: OK"), "{}", tail(&text, 30));
    g.wait_exit(Duration::from_secs(60)).unwrap();
    let (_, v) = tool(Command::new("sgdisk").arg("-v").arg(&target));
    assert!(v.contains("No problems found"), "{v}");
    assert!(
        std::fs::read(&images).unwrap() == before,
        "the write-protected drive changed"
    );
}
