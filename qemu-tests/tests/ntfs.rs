//! An NTFS drive as the image store in the rescue system, whose kernel has no NTFS driver: ntfs-3g from
//! the initramfs over FUSE. A job captures a disk onto an NTFS partition made by mkntfs (the store is
//! found by label and mounted by the job) and powers off with the drive still mounted, so PID 1 must
//! unmount it and let ntfs-3g finish; a second boot mounts it read-only from `rescue.cmd=`, verifies
//! the image and restores it onto a third disk. The host then checks the NTFS with `ntfsfix -n`, the
//! files on it with ntfsls/ntfscat, and the restored disk.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use builder::fixtures::{self, DiskSpec, Fs, Table};
use builder::qemu::{Bus, Disk};
use qemu_tests::Guest;

mod common;
use common::*;

/// The NTFS partition of the drive, extracted, checked clean by ntfsfix.
fn assert_ntfs_clean(drive: &Path, part: &fixtures::Expected, work: &Path, when: &str) -> String {
    let file = work.join("ntfs-part.img");
    extract(drive, part, &file);
    let (ok, out) = tool(Command::new("ntfsfix").arg("-n").arg(&file));
    assert!(ok, "ntfsfix -n {when}:\n{out}");
    file.display().to_string()
}

fn ntfsls(part: &str, dir: &str) -> String {
    tool(Command::new("ntfsls").args(["-f", "-p", dir, part])).1
}

#[test]
fn images_are_captured_onto_ntfs_and_restored_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let drive = work.join("ntfs-drive.img");
    let drive_spec = DiskSpec {
        size_mib: 256,
        sector_size: 512,
        table: Table::Gpt,
        parts: vec![fixtures::part(240, Fs::Ntfs, Some("IMAGES"))],
    };
    let drive_parts = fixtures::create_disk(&drive, &drive_spec).unwrap();
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);

    // 1. A job: the store by label, mounted read-write by the job (ntfs-3g.probe, then ntfs-3g).
    let mut vm = vm();
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks.push(Disk::new(&drive, Bus::Virtio).serial("NTFS"));
    vm.append = "rescue.job=\"action=capture source.serial=SRC image.label=IMAGES \
                 image.path=captures/pc.rimg after=poweroff\""
        .to_string();
    let mut g = Guest::boot(vm).unwrap();
    let (text, rc) = g
        .marked_output(CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        rc,
        rescue::init::EXIT_POWEROFF,
        "the capture job failed:\n{}",
        tail(&text, 60)
    );
    // The drive is still mounted: PID 1 unmounts it at power off and waits for ntfs-3g.
    g.wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("no power off after the job: {e:#}"));
    let serial = g.output();
    assert!(
        serial.contains("unmounted /run/rescue/mnt/"),
        "PID 1 did not unmount the NTFS drive:\n{}",
        tail(&serial, 40)
    );
    let part = assert_ntfs_clean(&drive, &drive_parts[0], work, "after the capture job");
    let listing = ntfsls(&part, "/captures");
    assert!(
        listing.contains("pc.rimg") && listing.contains("pc.rimg.log"),
        "{listing}"
    );

    // 2. The CLI in the guest: mounted read-only, verified, restored onto the third disk.
    let mut vm = common::vm();
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks.push(Disk::new(&drive, Bus::Virtio).serial("NTFS"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    let chain = "mount label=IMAGES /mnt/n --read-only ; \
                 verify /mnt/n/captures/pc.rimg --against serial=SRC ; \
                 restore /mnt/n/captures/pc.rimg serial=DST --yes ; umount /mnt/n";
    let run = run_chain(vm, chain);
    assert_eq!(
        run.rc,
        0,
        "the restore chain failed in the guest:\n{}",
        tail(&run.serial, 80)
    );
    for needle in [
        "(ntfs-3g, \"IMAGES\", read-only) on /mnt/n",
        "OK, every chunk",
        "unmounted /mnt/n",
    ] {
        assert!(
            run.stdout.contains(needle),
            "no {needle:?} in the output:\n{}",
            tail(&run.serial, 80)
        );
    }
    assert_ntfs_clean(&drive, &drive_parts[0], work, "after the restore");
    let (_, out) = tool(Command::new("sgdisk").arg("-v").arg(&target));
    assert!(out.contains("No problems found"), "{out}");
    let (want, have) = (host_report(&src.path), host_report(&target));
    assert_eq!(have["partitions"], want["partitions"]);
    let ext4 = ext4_of(&src);
    let restored = work.join("restored-ext4.img");
    extract(&target, ext4, &restored);
    let (ok, out) = tool(Command::new("e2fsck").arg("-fn").arg(&restored));
    assert!(ok, "e2fsck -fn on the restored ext4:\n{out}");
}
