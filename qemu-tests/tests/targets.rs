//! Failing restore and clone targets in the guest: a sector that fails to be written or read back (QEMU
//! blkdebug), and a counterfeit stick that claims more than it stores (an NBD server that wraps around).
//! Each job must fail, say so, and leave the target without a valid-looking partition table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use builder::qemu::{blkdebug_config, Bus, Disk};
use qemu_tests::nbd::FakeStick;
use qemu_tests::{Guest, BOOT_TIMEOUT};
use serde_json::Value;

mod common;
use common::*;

/// What a job onto a failing target left: the guest's output from the job on, the target drive, the
/// job's result record (a restore's: a clone keeps its records in memory), and the failing sector's byte
/// offset.
struct FailedJob {
    text: String,
    target: PathBuf,
    result: Option<Value>,
    offset: u64,
    _dir: tempfile::TempDir,
}

/// A test's directory, the demo source disk, and its image captured on the host and put on an ext4 image
/// drive (as `d.rimg`).
struct Prepared {
    dir: tempfile::TempDir,
    src: Source,
    images: PathBuf,
    image: PathBuf,
}

fn prepare() -> Prepared {
    let dir = tempfile::tempdir().unwrap();
    let src = source_disk(dir.path());
    let images = dir.path().join("images.img");
    ext4_drive(&images, 256);
    let image = dir.path().join("d.rimg");
    host_capture(&src.path, &image);
    put_file(&images, &image, "d.rimg");
    Prepared {
        dir,
        src,
        images,
        image,
    }
}

/// Runs a restore job (or with `clone`, a clone of the source disk) in the guest onto a target drive one
/// of whose sectors (inside the ext4 partition's data) fails to be written (`write`) or read, waits for
/// the job to fail, and powers off from the menu.
fn job_onto_a_failing_target(clone: bool, write: bool) -> FailedJob {
    let Prepared {
        dir, src, images, ..
    } = prepare();
    let work = dir.path();
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);
    let e = ext4_of(&src).clone();
    let bad = e.start_bytes / 512 + 2048;
    let conf = work.join("blkdebug.conf");
    std::fs::write(&conf, blkdebug_config(&[bad], write)).unwrap();

    let mut vm = vm();
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    vm.disks.push(
        Disk::new(&target, Bus::Virtio)
            .serial("DST")
            .blkdebug(&conf),
    );
    vm.append = if clone {
        vm.disks
            .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
        "rescue.job=\"action=clone source.serial=SRC target.serial=DST\"".into()
    } else {
        "rescue.job=\"action=restore image.device=serial=IMG image.path=d.rimg target.serial=DST\""
            .into()
    };
    let mut g = Guest::boot(vm).unwrap();
    let begin = g.wait_for(rescue::init::CMD_BEGIN, BOOT_TIMEOUT).unwrap();
    g.wait_for_from("THE JOB FAILED", begin, CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    g.wait_for_from("Press Enter for the menu", begin, Duration::from_secs(30))
        .unwrap();
    let text = g.output()[begin..].to_string();
    // Enter leads to the menu; power off from there, which unmounts the image drive cleanly.
    let menu = g.output_len();
    g.send("\r").unwrap();
    g.wait_screen(menu, "Disks (", Duration::from_secs(60))
        .unwrap();
    g.send("p").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    g.send("p").unwrap();
    g.wait_exit(Duration::from_secs(60)).unwrap();
    let action = if clone { "clone" } else { "restore" };
    assert!(
        !text.contains(&format!("{action}: OK")) && !text.contains("verified"),
        "something reported success:\n{text}"
    );
    let offset = bad * 512;
    if clone {
        return FailedJob {
            text,
            target,
            result: None,
            offset,
            _dir: dir,
        };
    }
    // The result file beside the image says it failed.
    let (_, listing) = tool(Command::new("debugfs").args(["-R", "ls -l /"]).arg(&images));
    let name = listing
        .split_whitespace()
        .find(|w| w.starts_with("d.rimg.restore-"))
        .unwrap_or_else(|| panic!("no result file:\n{listing}"))
        .to_string();
    let result = work.join("result.json");
    tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /{name} {}", result.display()))
            .arg(&images),
    );
    let result: Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    assert_eq!(result["ok"], false, "{result:#}");
    FailedJob {
        text,
        target,
        result: Some(result),
        offset,
        _dir: dir,
    }
}

/// The target holds neither an MBR nor a GPT header.
fn assert_no_table(target: &Path) {
    let disk = std::fs::read(target).unwrap();
    assert_ne!(
        disk[510..512],
        [0x55, 0xAA],
        "the MBR is still on the target"
    );
    let size = disk.len();
    assert!(
        disk[size - 512..].iter().all(|&b| b == 0) && disk[512..1024].iter().all(|&b| b == 0),
        "a GPT header is still on the target"
    );
}

#[test]
fn write_errors_on_the_restore_target_fail_the_job_and_name_the_offset() {
    let f = job_onto_a_failing_target(false, true);
    assert!(
        f.text.contains(&format!("at byte {} failed", f.offset)),
        "the failure does not name the failing write's offset ({}):\n{}",
        f.offset,
        tail(&f.text, 30)
    );
    let result = f.result.unwrap();
    assert!(
        result["error"].as_str().unwrap().contains("writing"),
        "{result:#}"
    );
}

/// A sector that reads back wrong or not at all once everything is written (the partition table too)
/// fails the restore, and the table is taken away again: the disk must not look restored.
#[test]
fn a_read_back_error_fails_the_restore_and_leaves_no_table() {
    let f = job_onto_a_failing_target(false, false);
    let result = f.result.unwrap();
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("reading") && error.contains("no valid partition table"),
        "{result:#}\n{}",
        tail(&f.text, 30)
    );
    assert_no_table(&f.target);
}

/// The same for a clone.
#[test]
fn a_read_back_error_fails_the_clone_and_leaves_no_table() {
    let f = job_onto_a_failing_target(true, false);
    assert!(
        f.text.contains("reading") && f.text.contains("no valid partition table"),
        "{}",
        tail(&f.text, 30)
    );
    assert_no_table(&f.target);
}

/// Where a restore of `image` writes on a disk (the source's places: data, runs of zeros, unreadable
/// ranges, tables), from the image's index.
fn written_places(image: &Path) -> Vec<std::ops::Range<u64>> {
    let reader =
        rescue::image::SharedReader::open(std::sync::Arc::new(std::fs::read(image).unwrap()))
            .unwrap();
    let mut places: Vec<_> = reader
        .index()
        .streams
        .iter()
        .flat_map(|s| {
            s.extents
                .iter()
                .filter(|e| e.kind != rescue::image::ExtentKind::Unused)
                .map(move |e| s.info.disk_offset + e.offset..s.info.disk_offset + e.offset + e.len)
        })
        .collect();
    places.sort_by_key(|r| r.start);
    places
}

/// Runs a restore of the demo source's image (or with `clone`, a clone of the source) in the guest onto a
/// counterfeit USB stick that claims the source's size but stores half of it: every write succeeds, and
/// those past the real capacity land on what was written at the start. The job must fail in its
/// read-back and leave no table; returns what the guest printed and the stick's backing file.
fn job_onto_a_fake_stick(clone: bool) -> (String, PathBuf, tempfile::TempDir) {
    let Prepared {
        dir,
        src,
        images,
        image,
    } = prepare();
    let work = dir.path();
    let claimed = src.spec.size_mib * MIB;
    let real = claimed / 2;
    // The test means something only if the job writes past the real capacity onto places it wrote
    // before (a restore and a clone write the same places).
    let places = written_places(&image);
    let lands_on_written = places.iter().filter(|p| p.start >= real).any(|p| {
        let wrapped = p.start - real..p.end - real;
        places
            .iter()
            .any(|q| q.start < wrapped.end && wrapped.start < q.end)
    });
    assert!(lands_on_written, "no write wraps onto another: {places:?}");
    let backing = work.join("stick.img");
    blank(&backing, real / MIB);
    let stick = FakeStick::serve(&backing, claimed, &work.join("stick.sock")).unwrap();

    let mut vm = vm();
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    vm.disks
        .push(Disk::nbd(&stick.socket, Bus::Usb).serial("FAKESTICK"));
    let cmd = if clone {
        vm.disks
            .push(Disk::new(&src.path, Bus::Virtio).serial("SRC"));
        "clone serial=SRC serial=FAKESTICK --yes --json"
    } else {
        "mount serial=IMG /mnt/t ; restore /mnt/t/d.rimg serial=FAKESTICK --yes --json"
    };
    let run = run_chain(vm, cmd);
    stick.finish().unwrap();
    assert_ne!(run.rc, 0, "the job succeeded:\n{}", tail(&run.serial, 40));
    assert!(
        run.serial.contains("read-back verification failed")
            && run.serial.contains("may not hold as much as it claims")
            && run.serial.contains("no valid partition table"),
        "{}",
        tail(&run.serial, 40)
    );
    (run.serial, backing, dir)
}

/// A counterfeit stick fails the restore in its read-back, and is left without a table.
#[test]
fn a_restore_onto_a_fake_capacity_stick_fails_in_the_read_back() {
    let (_, backing, _dir) = job_onto_a_fake_stick(false);
    assert_no_table(&backing);
}

/// The same for a clone.
#[test]
fn a_clone_onto_a_fake_capacity_stick_fails_in_the_read_back() {
    let (_, backing, _dir) = job_onto_a_fake_stick(true);
    assert_no_table(&backing);
}

/// The stick this system booted from (named by its disk GUID on the kernel command line, as the boot
/// loader does) is refused as a target even through one of its partitions' device nodes, and left as it
/// was.
#[test]
fn a_partition_of_the_boot_stick_is_refused_as_a_restore_target() {
    let Prepared {
        dir, src, images, ..
    } = prepare();
    let stick = dir.path().join("stick.img");
    std::fs::copy(&src.path, &stick).unwrap();
    let before = std::fs::read(&stick).unwrap();
    let (ok, guid) = tool(Command::new("sfdisk").arg("--disk-id").arg(&stick));
    assert!(ok, "{guid}");
    let mut vm = vm();
    vm.append = format!("rescue.stick={}", guid.trim());
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    vm.disks
        .push(Disk::new(&stick, Bus::Virtio).serial("STICK"));
    let run = run_chain(
        vm,
        "mount serial=IMG /mnt/t ; restore /mnt/t/d.rimg --partition 2 /dev/vdb2 --yes",
    );
    assert_ne!(run.rc, 0, "the restore ran:\n{}", tail(&run.serial, 30));
    assert!(
        run.stdout.contains(
            "/dev/vdb2 is the rescue stick this system booted from, or one of its partitions"
        ),
        "{}",
        tail(&run.serial, 30)
    );
    assert!(
        std::fs::read(&stick).unwrap() == before,
        "the stick was written"
    );
}
