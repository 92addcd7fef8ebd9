//! Imaging inside the rescue system, end to end: PID 1 runs a chain of commands from the kernel command
//! line — mount an ext4 drive, capture a disk into an image on it, verify it, restore it onto a third
//! disk, unmount — and the host then checks the results with independent tools (debugfs, sgdisk, e2fsck,
//! fsck.vfat, ntfsfix, mtools, ntfscat). A second boot checks that restoring onto the disk that holds the
//! image is refused by the plan, with nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use builder::fixtures;
use builder::qemu::{Bus, Disk};
use qemu_tests::CmdRun;

mod common;
use common::*;

/// How long PID 1 says the command `name` of a chain took (`command 3 of 6 (capture) done in 12.3 s`).
fn command_seconds(text: &str, name: &str) -> Option<f64> {
    let needle = format!("({name}) done in ");
    text.lines().find_map(|l| {
        let rest = &l[l.find(&needle)? + needle.len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The kernel name (`/dev/vdb`) the guest gave the disk with this serial number, from its own report.
/// Kernel names follow probe order, which is not stable, so the commands name disks by serial (selectors)
/// and the assertions look the names up here.
fn path_of(run: &CmdRun, serial: &str) -> String {
    let report = first_json_block(&run.stdout).unwrap_or_else(|| {
        panic!(
            "no `disks --json` report in the output:\n{}",
            tail(&run.serial, 80)
        )
    });
    report["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["serial"] == serial)
        .and_then(|d| d["path"].as_str())
        .unwrap_or_else(|| {
            panic!("no disk with serial {serial} in the guest's report:\n{report:#}")
        })
        .to_string()
}

/// `rescue verify IMAGE [--against DEV]` on the host, through the same code the CLI runs.
fn host_verify(image: &Path, against: Option<&Path>) {
    let rc = rescue::cli::imaging::verify(image, against, false, &Default::default())
        .unwrap_or_else(|e| panic!("verify {} failed: {e:#}", image.display()));
    assert_eq!(
        rc,
        0,
        "verify {}{} found problems (see above)",
        image.display(),
        against
            .map(|a| format!(" --against {}", a.display()))
            .unwrap_or_default()
    );
}

#[test]
fn capture_and_restore_in_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    // Stale data in the unallocated space after the last partition (it ends at 153 MiB of 168): the
    // capture leaves it out, and the restore leaves the target's bytes there.
    const MIB: usize = 1 << 20;
    let stale = 155 * MIB..166 * MIB;
    let mut bytes = std::fs::read(&src.path).unwrap();
    bytes[stale.clone()].copy_from_slice(&builder::fixtures::noise(stale.len(), 9));
    std::fs::write(&src.path, &bytes).unwrap();
    let image_drive = work.join("images.img");
    ext4_drive(&image_drive, 256);
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);

    let mut vm = vm();
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks
        .push(Disk::new(&image_drive, Bus::Virtio).serial("IMG"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    let chain =
        "disks --json ; mount serial=IMG /mnt/t ; capture serial=SRC -o /mnt/t/disk.rimg --json ; \
                 verify /mnt/t/disk.rimg --against serial=SRC ; inspect /mnt/t/disk.rimg ; \
                 restore /mnt/t/disk.rimg serial=DST --yes --json ; umount /mnt/t";
    let booted = Instant::now();
    let run = run_chain(vm, chain);
    let boot_seconds = booted.elapsed().as_secs_f64();
    assert_eq!(
        run.rc,
        0,
        "the imaging chain failed in the guest; serial log tail:\n{}",
        tail(&run.serial, 80)
    );
    let img = path_of(&run, "IMG");
    assert!(
        run.stdout.contains(&format!("rescue: serial=IMG is {img}")),
        "{}",
        tail(&run.serial, 80)
    );
    assert!(
        run.stdout
            .contains(&format!("mounted {img} (ext4) on /mnt/t")),
        "{}",
        tail(&run.serial, 80)
    );
    assert!(
        run.stdout.contains("OK, every chunk"),
        "the in-guest verify did not report success:\n{}",
        tail(&run.serial, 80)
    );
    assert!(
        run.stdout.contains("unmounted /mnt/t"),
        "{}",
        tail(&run.serial, 80)
    );
    let captured = json_lines_with(&run.stdout, "root_hash");
    let restored = json_lines_with(&run.stdout, "bytes_written");
    assert!(
        captured.len() == 1 && restored.len() == 1,
        "expected one capture and one restore summary:\n{}",
        tail(&run.serial, 80)
    );
    let (captured, restored) = (&captured[0], &restored[0]);
    assert_eq!(restored["verified"], true, "{restored}");
    // The unallocated tail was neither read nor written, and inspect lists it.
    assert!(
        run.stdout.contains("unallocated bytes"),
        "inspect lists no unallocated range:\n{}",
        tail(&run.serial, 80)
    );
    assert!(
        captured["used_bytes"].as_u64().unwrap() < 150 * MIB as u64,
        "the unallocated tail was read: {captured}"
    );
    assert!(
        std::fs::read(&target).unwrap()[stale]
            .iter()
            .all(|&b| b == 0),
        "the restore wrote into the unallocated tail"
    );
    let took = |name: &str| command_seconds(&run.stdout, name).unwrap_or(f64::NAN);
    eprintln!(
        "in the guest (TCG): capture {:.1} s as a command, {:.1} s by its summary ({} bytes used, image {} \
         bytes); verify --against {:.1} s; restore with read-back {:.1} s as a command, {:.1} s by its summary \
         ({} bytes written); whole boot {boot_seconds:.1} s",
        took("capture"),
        captured["seconds"].as_f64().unwrap_or(f64::NAN),
        captured["used_bytes"],
        captured["image_bytes"],
        took("verify"),
        took("restore"),
        restored["seconds"].as_f64().unwrap_or(f64::NAN),
        restored["bytes_written"],
    );

    // The image is a finished file in the ext4 of disk 2, and the filesystem was unmounted cleanly.
    let (ok, out) = tool(Command::new("e2fsck").arg("-fn").arg(&image_drive));
    assert!(
        ok,
        "the image drive's ext4 is not clean after umount:\n{out}"
    );
    let (_, listing) = tool(
        Command::new("debugfs")
            .args(["-R", "ls -l /"])
            .arg(&image_drive),
    );
    assert!(
        !listing.contains("disk.rimg.partial"),
        "a .partial file was left behind:\n{listing}"
    );
    let image = work.join("disk.rimg");
    tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /disk.rimg {}", image.display()))
            .arg(&image_drive),
    );
    let image_len = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
    assert!(
        image_len > 0,
        "no /disk.rimg in the image drive's ext4:\n{listing}"
    );
    assert_eq!(captured["image_bytes"], image_len, "{captured}");
    let reader = rescue::image::SharedReader::open(std::sync::Arc::new(
        rescue::image::ImageFile::open(&image).unwrap(),
    ))
    .unwrap();
    assert_eq!(
        captured["root_hash"],
        reader.root_hash().to_string().as_str(),
        "{captured}"
    );
    // The same random.bin is in every filesystem: the guest's capture stored it once, and the restore
    // below put every copy back (the files are compared).
    assert!(
        reader.index().has_slices() && reader.index().repeated_bytes() >= 3 << 20,
        "block deduplication in the guest: {} bytes repeated",
        reader.index().repeated_bytes()
    );
    host_verify(&image, None);
    host_verify(&image, Some(&src.path));

    // Disk 3 now has the source's partition table and filesystems.
    let (_, out) = tool(Command::new("sgdisk").arg("-v").arg(&target));
    assert!(
        out.contains("No problems found"),
        "sgdisk -v on the restored disk:\n{out}"
    );
    let (want, have) = (host_report(&src.path), host_report(&target));
    assert_eq!(have["table"], "gpt", "{have:#}");
    assert_eq!(
        have["gpt"]["disk_guid"], want["gpt"]["disk_guid"],
        "disk GUID: {have:#}"
    );
    assert_eq!(
        have["partitions"], want["partitions"],
        "partitions of the restored disk differ from the source's:\nsource: {want:#}\nrestored: {have:#}"
    );
    for (e, p) in src.expected.iter().zip(&src.spec.parts) {
        let part = work.join(format!("restored-part{}.img", e.number));
        extract(&target, e, &part);
        check_filesystem(p.fs, &part, &src.content, work);
        std::fs::remove_file(&part).unwrap();
    }
}

#[test]
fn restore_onto_the_disk_holding_the_image_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    // An image made on the host and copied into the drive's ext4, as if captured earlier.
    let image = work.join("disk.rimg");
    host_capture(&src.path, &image);
    let image_drive = work.join("images.img");
    ext4_drive(&image_drive, 64);
    put_file(&image_drive, &image, "disk.rimg");
    let before = std::fs::read(&image_drive).unwrap();

    let mut vm = vm();
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks
        .push(Disk::new(&image_drive, Bus::Virtio).serial("IMG"));
    // Read-only, so that the drive is byte-for-byte unchanged unless the restore wrote to it (a read-write
    // mount updates the superblock). The plan refuses the same way either way.
    let chain =
        "disks --json ; mount serial=IMG /mnt/t --read-only ; restore /mnt/t/disk.rimg serial=IMG --yes";
    let run = run_chain(vm, chain);
    let img = path_of(&run, "IMG");
    assert!(
        run.stdout
            .contains(&format!("mounted {img} (ext4, read-only) on /mnt/t")),
        "{}",
        tail(&run.serial, 60)
    );
    assert_ne!(
        run.rc,
        0,
        "restoring onto the disk holding the image was not refused:\n{}",
        tail(&run.serial, 60)
    );
    let refusal = format!(
        "the image /mnt/t/disk.rimg is on {img}, the disk being overwritten; put the image on another disk"
    );
    assert!(
        run.stdout.contains(&refusal),
        "the refusal does not say that the image is on the target (the plan must refuse before the \
         device is opened):\n{}",
        tail(&run.serial, 60)
    );
    assert!(
        !run.stdout.contains("in use (mounted"),
        "the kernel's EBUSY answered before the plan did:\n{}",
        tail(&run.serial, 60)
    );
    let after = std::fs::read(&image_drive).unwrap();
    assert!(
        before == after,
        "the disk holding the image changed although the restore was refused"
    );
}

/// USB sticks and external drives usually come formatted FAT32 or exFAT: images are written to both in the
/// guest (the kernel drivers the initramfs loads), verified there, and the drives stay clean. The FAT32 one is
/// captured with `--no-dedup`: an image format 1.0 readers can read, checked on the host.
#[test]
fn images_are_written_to_fat32_and_exfat_partitions_in_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    // Primary ext4 (1), then logical FAT32 "DATA" (5) and exFAT "MEDIA" (6), 40 MiB each.
    let drive_spec = fixtures::demo_mbr();
    let drive = work.join("drive.img");
    let drive_parts = fixtures::create_disk(&drive, &drive_spec).unwrap();

    let mut vm = vm();
    vm.disks
        .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
    vm.disks
        .push(Disk::new(&drive, Bus::Virtio).serial("DRIVE"));
    // Partitions by filesystem label, the source by serial: kernel names are not stable.
    let chain = "disks --json ; mount label=DATA /mnt/fat ; mount serial=DRIVE,part=6 /mnt/exfat ; \
                 capture serial=SRC -o /mnt/fat/disk.rimg --no-dedup ; capture serial=SRC -o /mnt/exfat/disk.rimg ; \
                 umount /mnt/fat ; umount /mnt/exfat ; \
                 mount label=DATA /mnt/fat --read-only ; mount label=MEDIA /mnt/exfat --read-only ; \
                 verify /mnt/fat/disk.rimg --against serial=SRC ; verify /mnt/exfat/disk.rimg --against serial=SRC";
    let run = run_chain(vm, chain);
    assert_eq!(
        run.rc,
        0,
        "the chain failed in the guest; serial log tail:\n{}",
        tail(&run.serial, 80)
    );
    let drive_dev = path_of(&run, "DRIVE");
    for needle in [
        format!("mounted {drive_dev}5 (vfat, \"DATA\") on /mnt/fat"),
        format!("mounted {drive_dev}6 (exfat, \"MEDIA\") on /mnt/exfat"),
        format!("mounted {drive_dev}5 (vfat, \"DATA\", read-only) on /mnt/fat"),
        "/mnt/fat/disk.rimg: OK, every chunk".to_string(),
        "/mnt/exfat/disk.rimg: OK, every chunk".to_string(),
    ] {
        assert!(
            run.stdout.contains(&needle),
            "no {needle:?} in the output:\n{}",
            tail(&run.serial, 80)
        );
    }
    eprintln!(
        "in the guest (TCG): capture onto FAT32 {:.1} s",
        command_seconds(&run.stdout, "capture").unwrap_or(f64::NAN)
    );

    // Both filesystems are clean after the guest's umount, and the FAT32 copy verifies on the host too.
    let fat = work.join("fat.img");
    extract(&drive, &drive_parts[1], &fat);
    let (ok, out) = tool(Command::new("fsck.vfat").arg("-n").arg(&fat));
    assert!(ok, "fsck.vfat -n after the guest wrote the image:\n{out}");
    let image = work.join("from-fat.rimg");
    let (ok, out) = tool(
        Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-n")
            .arg("-i")
            .arg(&fat)
            .arg("::/disk.rimg")
            .arg(&image),
    );
    assert!(ok, "mcopy of the image out of the FAT32 partition: {out}");
    host_verify(&image, Some(&src.path));
    let reader = rescue::image::SharedReader::open(std::sync::Arc::new(
        rescue::image::ImageFile::open(&image).unwrap(),
    ))
    .unwrap();
    assert_eq!(
        (reader.header().minor, reader.header().required_features),
        (1, 0),
        "--no-dedup: no slice feature, so format 1.0 readers can read it"
    );
    assert!(!reader.index().has_slices());
    let exfat = work.join("exfat.img");
    extract(&drive, &drive_parts[2], &exfat);
    let (ok, out) = tool(Command::new("fsck.exfat").arg("-n").arg(&exfat));
    assert!(ok, "fsck.exfat -n after the guest wrote the image:\n{out}");
}
