//! Exported virtual disks boot: a small bootable disk (builder::bootdisk: boot code in the MBR that loads a
//! checksummed second stage from the middle of its partition and prints a marker on the serial port) is
//! captured, exported to every format, and each file boots under QEMU (SeaBIOS) through QEMU's own driver
//! for that format. The raw disk boots first (the fixture works), and a copy with one payload byte changed
//! prints the damage marker instead (the check can fail). The image served over NBD with an overlay
//! (`ops::serve`, as `rescue serve --overlay`) boots too, and its file is unchanged afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::path::Path;
use std::time::{Duration, Instant};

use builder::bootdisk;
use builder::qemu::{Bus, Disk};
use qemu_tests::Guest;
use rescue::ops::{self, Compress, DiskFormat};

/// Boot `path` (in QEMU's format `format`) from SeaBIOS; what the second stage printed.
fn boot(path: &Path, format: &'static str) -> &'static str {
    boot_disk(Disk::new(path, Bus::Virtio).format(format), path, format)
}

fn boot_disk(disk: Disk, path: &Path, format: &'static str) -> &'static str {
    let mut vm = vm();
    vm.bios = true;
    vm.memory_mib = 64;
    vm.disks.push(disk.boot_first());
    let started = Instant::now();
    let g = Guest::boot(vm).unwrap();
    for _ in 0..600 {
        let out = g.output();
        for marker in [bootdisk::BOOTED, bootdisk::DAMAGED] {
            if out.contains(marker) {
                eprintln!(
                    "{} ({format}): {marker} after {:.1} s",
                    path.display(),
                    started.elapsed().as_secs_f64()
                );
                return marker;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{} ({format}) printed no marker in 60 s:\n{}",
        path.display(),
        tail(&g.output(), 30)
    );
}

#[test]
fn exported_disks_boot_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("boot.raw");
    bootdisk::create(&src, 64).unwrap();
    assert_eq!(boot(&src, "raw"), bootdisk::BOOTED, "the fixture itself");

    let image = d.join("boot.rimg");
    host_capture(&src, &image);
    let mut formats: Vec<(DiskFormat, Compress)> = DiskFormat::ALL
        .iter()
        .map(|&f| (f, Compress::None))
        .collect();
    formats.push((DiskFormat::Qcow2, Compress::Zlib));
    formats.push((DiskFormat::Qcow2, Compress::Zstd));
    for (format, compress) in formats {
        let out = d.join(format!("boot-{}-{compress:?}", format.name()));
        let spec = ops::ExportSpec {
            image: ops::Location::Local(image.clone()),
            output: out.clone(),
            format,
            compress,
            partition: None,
            as_disk: false,
            verify: true,
        };
        let e = ops::export_disk(&spec, &ops::NetOptions::default(), ops::Control::default())
            .unwrap_or_else(|e| panic!("{}: {e:#}", format.name()));
        assert!(e.verified);
        assert_eq!(
            boot(&out, format.qemu_name()),
            bootdisk::BOOTED,
            "{} {compress:?}",
            format.name()
        );
        std::fs::remove_file(&out).unwrap();
    }

    // One byte of the payload changed: the second stage says so (the marker proves the bytes).
    let bad = d.join("bad.raw");
    std::fs::copy(&src, &bad).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&bad).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x42, 0x24], bootdisk::STAGE2_LBA * 512 + 4096)
        .unwrap();
    assert_eq!(boot(&bad, "raw"), bootdisk::DAMAGED);
}

#[test]
fn an_image_served_over_nbd_boots_through_an_overlay_and_stays_unchanged() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("boot.raw");
    bootdisk::create(&src, 64).unwrap();
    let image = d.join("boot.rimg");
    host_capture(&src, &image);
    let before = std::fs::read(&image).unwrap();

    let socket = d.join("boot.nbd");
    let overlay = d.join("boot.overlay");
    let spec = ops::ServeSpec {
        image: ops::Location::Local(image.clone()),
        socket: Some(socket.clone()),
        overlay: Some(overlay.clone()),
        ..ops::ServeSpec::default()
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let ctl = ops::Control {
        cancel: cancel.clone(),
        ..ops::Control::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        ops::serve(&spec, &ops::NetOptions::default(), ctl, |s| {
            tx.send(s.clone()).unwrap();
        })
    });
    let serving = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(serving.writable);
    assert_eq!(
        boot_disk(Disk::nbd(&socket, Bus::Virtio), &socket, "raw"),
        bootdisk::BOOTED,
        "{}",
        serving.url
    );
    cancel.store(true, Ordering::SeqCst);
    server.join().unwrap().unwrap();
    assert!(!socket.exists(), "the socket is gone once the server stops");
    assert!(overlay.exists());
    assert!(
        std::fs::read(&image).unwrap() == before,
        "the image file is byte-identical after the guest ran on it"
    );
}
