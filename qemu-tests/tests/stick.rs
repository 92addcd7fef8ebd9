//! The stick image booted the way a PC boots it: the image as a USB mass-storage device on an xHCI
//! controller, through OVMF (UEFI: shim → signed grub, with and without Secure Boot) or SeaBIOS (legacy
//! BIOS: GRUB's boot.img → core.img), the serial menu entry → our kernel and initramfs. And the network
//! boot files, through SeaBIOS's iPXE from QEMU's TFTP server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use builder::image::{write_image, write_ipxe_script, ImageOptions, ImageReport};
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

#[derive(Debug, Clone, Copy)]
enum Firmware {
    Uefi { secure: bool },
    Bios,
}

/// Boots `image` and checks the UI came up and recognised the stick; returns the serial log.
fn boot_to_ui(report: &ImageReport, dir: &Path, firmware: Firmware) -> String {
    let start = Instant::now();
    let files = boot_files();
    let mut vm = Vm::new(&files.vmlinuz, &files.initramfs);
    match firmware {
        Firmware::Uefi { secure } => {
            vm.uefi = Some(
                Uefi::new(secure, dir)
                    .expect("OVMF firmware files (install the ovmf package: scripts/setup)"),
            )
        }
        Firmware::Bios => vm.bios = true,
    }
    vm.usb_controller = true;
    vm.disks
        .push(Disk::new(&report.path, Bus::Usb).boot_first());
    let mut g = Guest::boot(vm).unwrap();
    let ui = g
        .wait_for(rescue::init::READY, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{firmware:?}: {e:#}"));
    let ready = start.elapsed();
    // The full-screen UI marks the stick in the disk list (read through a terminal emulator).
    g.wait_screen(ui, "this rescue stick", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{firmware:?}: {e:#}"));
    let out = g.output();
    assert!(
        out.contains(&format!("rescue.stick={}", report.info.disk_guid)),
        "{firmware:?}: the menu entry passes the stick's disk GUID; tail:\n{}",
        g.tail(60)
    );
    // The stick has no job file: the check for one prints no command markers on a normal boot.
    assert!(
        !out.contains("@@RESCUE-CMD"),
        "{firmware:?}: command markers on a boot without a job; tail:\n{}",
        g.tail(60)
    );
    eprintln!(
        "stick: {} bytes ({:.1} MB), written in {:.2} s; {firmware:?}: firmware start to `{}` in {:.1} s",
        report.info.size,
        report.info.size as f64 / 1e6,
        report.seconds,
        rescue::init::READY,
        ready.as_secs_f64()
    );
    out
}

fn checked(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
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
    let text = checked(Command::new("sgdisk").arg("-v").arg(&a.path));
    assert!(text.contains("No problems found"), "sgdisk -v: {text}");
    // The ESP with the real bootloaders and kernel, and the exFAT data partition, checked on copies of
    // their bytes.
    let bytes = std::fs::read(&a.path).unwrap();
    let copy = |p: &builder::boot::gpt::Partition, name: &str| {
        let (off, len) = p.byte_range();
        let to = dir.path().join(name);
        std::fs::write(&to, &bytes[off as usize..(off + len) as usize]).unwrap();
        to
    };
    checked(
        Command::new("fsck.vfat")
            .arg("-n")
            .arg(copy(&a.info.esp, "esp.img")),
    );
    assert_eq!(a.info.data_fs, builder::boot::DataFs::Exfat);
    checked(
        Command::new("fsck.exfat")
            .arg("-n")
            .arg(copy(&a.info.data, "data.img")),
    );
    assert!(
        a.info.bios_boot.is_some(),
        "the default stick boots on BIOS too"
    );
    let out = boot_to_ui(&a, dir.path(), Firmware::Uefi { secure: false });
    assert!(out.contains("console=ttyS0,115200"), "serial entry booted");
}

#[test]
fn bios_usb_stick_boots_to_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let a = stick(dir.path(), "bios.img");
    let out = boot_to_ui(&a, dir.path(), Firmware::Bios);
    // GRUB's i386-pc core read the same menu from the ESP.
    assert!(
        out.contains("GNU GRUB"),
        "GRUB's menu on the serial console"
    );
    assert!(out.contains("console=ttyS0,115200"), "serial entry booted");
    assert!(
        !out.contains("secureboot: Secure boot enabled"),
        "a BIOS boot has no Secure Boot"
    );
    let grub = out.split("Linux version").next().unwrap_or_default();
    assert!(!grub.contains("error:"), "GRUB reported an error:\n{grub}");
}

#[test]
fn secure_boot_verifies_the_chain_and_loads_signed_modules() {
    let dir = tempfile::tempdir().unwrap();
    let a = stick(dir.path(), "sb.img");
    let out = boot_to_ui(&a, dir.path(), Firmware::Uefi { secure: true });
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

#[test]
fn netboot_files_boot_through_ipxe_to_the_ui() {
    let dir = tempfile::tempdir().unwrap();
    let files = boot_files();
    std::fs::copy(
        &files.vmlinuz,
        dir.path().join(builder::boot::ipxe::KERNEL_NAME),
    )
    .unwrap();
    std::fs::copy(
        &files.initramfs,
        dir.path().join(builder::boot::ipxe::INITRD_NAME),
    )
    .unwrap();
    write_ipxe_script(dir.path(), true, "").unwrap();
    let start = Instant::now();
    let mut vm = Vm::new(&files.vmlinuz, &files.initramfs);
    vm.netboot = Some(dir.path().to_path_buf());
    let mut g = Guest::boot(vm).unwrap();
    g.wait_for(rescue::init::READY, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let out = g.output();
    assert!(
        out.contains("initrd=initramfs.img console=tty0 console=ttyS0,115200"),
        "the serial entry of boot.ipxe booted; tail:\n{}",
        g.tail(60)
    );
    assert!(!out.contains("rescue.stick="), "no stick on a network boot");
    eprintln!(
        "netboot: SeaBIOS + iPXE over TFTP to `{}` in {:.1} s",
        rescue::init::READY,
        start.elapsed().as_secs_f64()
    );
}
