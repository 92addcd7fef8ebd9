//! The stick in use, booted through SeaBIOS as a USB stick larger than the image (as after `dd` onto a
//! real stick), driven through the TUI over the serial console: the offer to grow the data partition is
//! shown and carried out (the kernel then mounts the exFAT we wrote), the data partition takes an image of
//! another disk, and the stick is refused as a restore target, on screen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use builder::image::{write_image, ImageOptions};
use builder::qemu::{Bus, Disk};
use qemu_tests::{boot_files, Guest, BOOT_TIMEOUT};

mod common;
use common::*;

#[test]
fn the_stick_grows_holds_an_image_and_is_refused_as_a_restore_target() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let files = boot_files();
    let stick = work.join("stick.img");
    let opts = ImageOptions {
        serial_default: true,
        epoch: 1_700_000_000,
        ..Default::default()
    };
    let report = write_image(&stick, &files.vmlinuz, &files.initramfs, &opts).unwrap();
    // The image written onto a 512 MiB stick.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stick)
        .unwrap()
        .set_len(512 * MIB)
        .unwrap();
    let src = source_disk(work);

    let mut vm = common::vm();
    vm.bios = true;
    vm.usb_controller = true;
    vm.disks.push(Disk::new(&stick, Bus::Usb).boot_first());
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    let booted = Instant::now();
    let mut g = Guest::boot(vm).unwrap();
    let from = g
        .wait_for(rescue::init::READY, BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut s = Session { g, from };
    s.wait("Disks (2)", STEP);
    eprintln!(
        "stick ({} bytes image on a 512 MiB stick) to the UI through SeaBIOS: {:.1} s",
        report.info.size,
        booted.elapsed().as_secs_f64()
    );

    // The offer to grow, and growing.
    let screen = s.wait("press g to grow", STEP);
    assert!(screen.contains("of the rescue stick is unused"), "{screen}");
    s.send("g");
    s.wait("Grow the stick's data partition?", STEP);
    s.send("y");
    let screen = s.wait("SUCCESS", JOB_TIMEOUT);
    s.send(ENTER);
    s.wait("Disks (2)", STEP);
    eprintln!("grown:\n{screen}");

    // Capture the source onto the stick's (new) data partition: the only usable destination.
    s.select_disk("SRC");
    let (screen, result) = s.capture_whole_disk();
    let dest = line_with(&screen, "> ").to_string();
    assert!(
        dest.contains("RESCUE-DATA") && dest.contains("this rescue stick"),
        "the stick's data partition is not offered first:\n{screen}"
    );
    assert!(
        screen.contains("EFI system partition"),
        "the stick's ESP is not refused as a destination:\n{screen}"
    );
    assert!(result.contains("Root hash:"), "{result}");
    s.send(ENTER);
    s.wait("Disks (2)", STEP);

    // Restore: the stick is refused as a target, with the reason on screen.
    s.restore_to_targets("RESCUE-DATA");
    s.select("usb");
    s.send(ENTER);
    let screen = s.wait("refused:", STEP);
    assert!(
        line_with(&screen, "refused:").contains("rescue stick"),
        "{screen}"
    );

    // Power off (flushes and unmounts the stick's data partition), then check the stick on the host.
    s.send("\x1b");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..4 {
        s.send("\x1b");
    }
    s.wait("Disks (2)", STEP);
    s.send("p");
    s.wait("power off", STEP);
    s.send("p");
    s.g.wait_exit(Duration::from_secs(60)).unwrap();
    let (ok, out) = tool(Command::new("sgdisk").arg("-v").arg(&stick));
    assert!(ok && out.contains("No problems found"), "{out}");
    let info = tool(Command::new("sgdisk").args(["-i", "2"]).arg(&stick)).1;
    let last: u64 = info
        .lines()
        .find(|l| l.starts_with("Last sector:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        last * 512 > 500 * MIB,
        "the data partition did not grow to the end of the stick: {info}"
    );
    // The data partition is a clean exFAT holding the image.
    let first: u64 = info
        .lines()
        .find(|l| l.starts_with("First sector:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let part = work.join("data.img");
    let bytes = std::fs::read(&stick).unwrap();
    std::fs::write(
        &part,
        &bytes[(first * 512) as usize..((last + 1) * 512) as usize],
    )
    .unwrap();
    let (ok, out) = tool(Command::new("fsck.exfat").arg("-n").arg(&part));
    assert!(ok, "fsck.exfat on the grown data partition:\n{out}");
}
