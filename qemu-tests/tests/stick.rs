//! The stick image booted the way a PC boots it: OVMF (UEFI) firmware, the image as a USB mass-storage
//! device on an xHCI controller, shim → signed grub → the serial menu entry → our kernel and initramfs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use builder::image::{write_image, ImageOptions, ImageReport};
use builder::qemu::{Bus, Disk, Uefi, Vm};
use qemu_tests::{boot_files, Guest, BOOT_TIMEOUT};

/// The stick with the serial entry as default, from the test boot files.
fn stick(dir: &Path, name: &str) -> ImageReport {
    let files = boot_files();
    let opts = ImageOptions {
        serial_default: true,
        epoch: 1_700_000_000,
        ..Default::default()
    };
    write_image(&dir.join(name), &files.vmlinuz, &files.initramfs, &opts).unwrap()
}

/// Boots `image` and checks the UI came up and recognised the stick; returns the serial log.
fn boot_to_ui(report: &ImageReport, dir: &Path, secure: bool) -> String {
    let start = Instant::now();
    let files = boot_files();
    let mut vm = Vm::new(&files.vmlinuz, &files.initramfs);
    vm.uefi = Some(
        Uefi::new(secure, dir)
            .expect("OVMF firmware files (install the ovmf package: scripts/setup)"),
    );
    vm.usb_controller = true;
    vm.disks
        .push(Disk::new(&report.path, Bus::Usb).boot_first());
    let mut g = Guest::boot(vm).unwrap();
    g.wait_for(rescue::init::READY, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    g.wait_for("this rescue stick", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let out = g.output();
    assert!(
        out.contains(&format!("rescue.stick={}", report.info.disk_guid)),
        "the menu entry passes the stick's disk GUID; tail:\n{}",
        g.tail(60)
    );
    eprintln!(
        "stick: {} bytes ({:.1} MB), written in {:.2} s; firmware to `{}` in {:.1} s (secure boot: {secure})",
        report.info.size,
        report.info.size as f64 / 1e6,
        report.seconds,
        rescue::init::READY,
        start.elapsed().as_secs_f64()
    );
    out
}

#[test]
fn uefi_usb_stick_boots_to_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let a = stick(dir.path(), "a.img");
    let b = stick(dir.path(), "b.img");
    assert!(a.info.size <= 48_000_000, "{} bytes", a.info.size);
    assert!(
        std::fs::read(&a.path).unwrap() == std::fs::read(&b.path).unwrap(),
        "two stick builds from the same inputs differ"
    );
    let v = Command::new("sgdisk")
        .arg("-v")
        .arg(&a.path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("No problems found"), "sgdisk -v: {text}");
    // The ESP with the real bootloaders and kernel, checked by fsck.vfat on a copy of its bytes.
    let (off, len) = a.info.esp.byte_range();
    let bytes = std::fs::read(&a.path).unwrap();
    let esp = dir.path().join("esp.img");
    std::fs::write(&esp, &bytes[off as usize..(off + len) as usize]).unwrap();
    let f = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&esp)
        .output()
        .unwrap();
    assert!(
        f.status.success(),
        "fsck.vfat -n: {}",
        String::from_utf8_lossy(&f.stdout)
    );
    let out = boot_to_ui(&a, dir.path(), false);
    assert!(out.contains("console=ttyS0,115200"), "serial entry booted");
}

#[test]
fn secure_boot_verifies_the_chain_and_loads_signed_modules() {
    let dir = tempfile::tempdir().unwrap();
    let a = stick(dir.path(), "sb.img");
    let out = boot_to_ui(&a, dir.path(), true);
    assert!(
        out.contains("secureboot: Secure boot enabled"),
        "the kernel runs with Secure Boot on"
    );
    // Under Secure Boot the kernel is locked down and refuses unsigned modules: the USB stick is only
    // found (`this rescue stick`, checked above) if xhci, usb-storage and sd_mod loaded.
    assert!(
        !out.contains("Key was rejected") && !out.contains("EKEYREJECTED"),
        "a module was rejected"
    );
    let loaded = out
        .lines()
        .find(|l| l.contains("modules loaded ("))
        .expect("the module report line");
    let n: usize = loaded
        .trim_start_matches("rescue: ")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a module count");
    assert!(n > 10, "{loaded}");
}
