//! Unattended jobs in the guest (`rescue.job=` on the kernel command line): a capture and a restore with
//! the disks matched by serial number and the image found by filesystem label, each powering off by
//! itself; and a rule matching more than one disk, refused with the disks it saw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
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
    let begin = g.wait_for(rescue::init::CMD_BEGIN, BOOT_TIMEOUT).unwrap();
    let marker = format!("{} rc=", rescue::init::CMD_END);
    let end = g
        .wait_for_from(&marker, begin, CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    g.wait_for_from("@@", end, Duration::from_secs(10)).unwrap();
    let out = g.output();
    let rc = out[end..]
        .split("@@")
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1);
    let text = out[begin..end].to_string();
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
    std::fs::File::create(&target)
        .unwrap()
        .set_len(src.spec.size_mib * MIB)
        .unwrap();

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
        std::fs::File::create(p).unwrap().set_len(64 * MIB).unwrap();
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
