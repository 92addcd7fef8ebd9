//! Exported virtual disks boot: a small bootable disk (builder::bootdisk: boot code in the MBR that loads a
//! checksummed second stage from the middle of its partition and prints a marker on the serial port) is
//! captured, exported to every format, and each file boots under QEMU (SeaBIOS) through QEMU's own driver
//! for that format. The raw disk boots first (the fixture works), and a copy with one payload byte changed
//! prints the damage marker instead (the check can fail).

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
    let mut vm = vm();
    vm.bios = true;
    vm.memory_mib = 64;
    vm.disks
        .push(Disk::new(path, Bus::Virtio).format(format).boot_first());
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
