//! Fault tolerance in the guest: bad sectors on the source (QEMU blkdebug), a power cut in the middle of a
//! capture, damaged images, a large disk in a 512 MiB guest, and Ctrl-Alt-Del during a restore (failing
//! targets are in `targets.rs`). One test per case; the host checks the results with independent tools.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use builder::fixtures;
use builder::qemu::{blkdebug_config, Bus, Disk};
use qemu_tests::{Guest, BOOT_TIMEOUT};

mod common;
use common::*;

/// The physical 512-byte sectors holding logical block `block` of `file` in the ext4 partition `e` of
/// `disk`, from debugfs (an independent reading of the filesystem).
fn file_sectors(disk: &Path, e: &fixtures::Expected, file: &str, block: u64, work: &Path) -> u64 {
    let part = work.join("ext4-part.img");
    extract(disk, e, &part);
    let (_, out) = tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("bmap {file} {block}"))
            .arg(&part),
    );
    let pblk: u64 = out
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("debugfs bmap {file} {block}: {out}"));
    let (_, out) = tool(Command::new("dumpe2fs").arg("-h").arg(&part));
    let bs: u64 = out
        .lines()
        .find(|l| l.starts_with("Block size:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap();
    std::fs::remove_file(&part).unwrap();
    (e.start_bytes + pblk * bs) / 512
}

/// Dump `file` from an ext4 partition image.
fn dump(part: &Path, file: &str, work: &Path) -> Vec<u8> {
    let out = work.join("dumped.bin");
    let _ = std::fs::remove_file(&out);
    tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump {file} {}", out.display()))
            .arg(part),
    );
    std::fs::read(&out).unwrap_or_default()
}

#[test]
fn bad_sectors_on_the_source_are_recorded_to_the_sector_and_the_rest_restores() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let e = ext4_of(&src).clone();
    // One bad sector in the first block of random.bin, four in its third block.
    let a = file_sectors(&src.path, &e, "/random.bin", 0, work) + 3;
    let b = file_sectors(&src.path, &e, "/random.bin", 2, work);
    let bad: Vec<u64> = [a, b, b + 1, b + 2, b + 3].to_vec();
    let conf = work.join("blkdebug.conf");
    std::fs::write(&conf, blkdebug_config(&bad, false)).unwrap();
    let images = work.join("images.img");
    ext4_drive(&images, 256);
    let target = work.join("target.img");
    blank(&target, src.spec.size_mib);

    let mut vm = vm();
    vm.disks.push(
        Disk::new(&src.path, Bus::Virtio)
            .serial("SRC")
            .blkdebug(&conf),
    );
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    let run = run_chain(
        vm,
        "mount serial=IMG /mnt/t ; capture serial=SRC -o /mnt/t/d.rimg --json ; \
         inspect /mnt/t/d.rimg ; verify /mnt/t/d.rimg ; restore /mnt/t/d.rimg serial=DST --yes --json ; \
         umount /mnt/t",
    );
    assert_eq!(run.rc, 0, "{}", tail(&run.serial, 60));
    let captured = &json_lines_with(&run.stdout, "root_hash")[0];
    let got: Vec<(u64, u64)> = captured["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["start"].as_u64().unwrap(), u["end"].as_u64().unwrap()))
        .collect();
    let want = vec![(a * 512, (a + 1) * 512), (b * 512, (b + 4) * 512)];
    assert_eq!(
        got, want,
        "the capture must record exactly the injected sectors: {captured}"
    );
    for (s, end) in &want {
        assert!(
            run.stdout.contains(&format!("\"start\":{s}"))
                || run.stdout.contains(&format!("\"start\": {s}")),
            "inspect does not list {s}..{end}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout
            .contains("2560 bytes of the source could not be read when it was captured"),
        "verify does not report the unreadable bytes:\n{}",
        run.stdout
    );
    let restored = &json_lines_with(&run.stdout, "bytes_written")[0];
    assert_eq!(restored["verified"], true, "{restored}");
    assert_eq!(
        restored["unreadable"].as_array().map(Vec::len),
        Some(2),
        "the restore reports the holes it wrote as zeros: {restored}"
    );

    // Every file but random.bin is intact; random.bin differs exactly in the bad sectors (zeros).
    let (src_part, dst_part) = (work.join("src-ext4.img"), work.join("dst-ext4.img"));
    extract(&src.path, &e, &src_part);
    extract(&target, &e, &dst_part);
    let (ok, out) = tool(Command::new("e2fsck").arg("-fn").arg(&dst_part));
    assert!(ok, "e2fsck on the restored ext4:\n{out}");
    for f in fixtures::files_under(&src.content).unwrap() {
        let rel = format!("/{}", f.strip_prefix(&src.content).unwrap().display());
        let (want, have) = (dump(&src_part, &rel, work), dump(&dst_part, &rel, work));
        if rel != "/random.bin" {
            assert!(want == have, "{rel} differs after the restore");
            continue;
        }
        assert_eq!(want.len(), have.len());
        let differing: Vec<usize> = (0..want.len()).filter(|&i| want[i] != have[i]).collect();
        assert!(
            !differing.is_empty(),
            "the unreadable sectors were not zeroed"
        );
        assert!(
            differing.iter().all(|&i| have[i] == 0),
            "random.bin differs by more than zeroed sectors"
        );
        assert!(
            differing.len() <= 5 * 512,
            "random.bin differs in {} bytes, more than the 5 bad sectors",
            differing.len()
        );
    }
}

/// What the guest printed between the command markers, and its status.
fn chain_of(g: &mut Guest, timeout: Duration) -> (String, i32) {
    g.marked_output(timeout).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn a_power_cut_during_capture_leaves_no_image_and_the_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = work.join("big.img");
    big_source(&src, 512, 300);
    let images = work.join("images.img");
    ext4_drive(&images, 768);
    let job = "rescue.job=\"action=capture source.serial=SRC image.device=serial=IMG image.path=big.rimg after=poweroff\"";
    let make_vm = || {
        let mut vm = vm();
        vm.disks.push(Disk::new(&src, Bus::Virtio).serial("SRC"));
        vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
        vm.append = job.into();
        vm
    };
    // Cut the power once the capture is under way.
    let mut g = Guest::boot(make_vm()).unwrap();
    let begin = g.wait_for(rescue::init::CMD_BEGIN, BOOT_TIMEOUT).unwrap();
    g.wait_for_from("capture ", begin, CHAIN_TIMEOUT).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let cut_at = g.tail(2);
    drop(g); // kills QEMU: no flush, no unmount
    let (_, listing) = tool(Command::new("debugfs").args(["-R", "ls -l /"]).arg(&images));
    assert!(
        !listing.contains(" big.rimg\n") && !listing.split_whitespace().any(|w| w == "big.rimg"),
        "a file under the image's name exists after a power cut:\n{listing}"
    );
    // A partial file (if the journal kept it) is rejected by inspect.
    if listing.contains("big.rimg.partial") {
        let partial = work.join("big.rimg.partial");
        tool(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("dump /big.rimg.partial {}", partial.display()))
                .arg(&images),
        );
        let err = match rescue::ops::inspect(&partial.clone().into(), &Default::default()) {
            Ok(_) => panic!("an interrupted capture was accepted as an image"),
            Err(e) => format!("{e:#}"),
        };
        assert!(!err.is_empty());
    }
    // Boot again with the same job: it starts afresh, completes, verifies, powers off.
    let started = Instant::now();
    let mut g = Guest::boot(make_vm()).unwrap();
    let (text, rc) = chain_of(&mut g, CHAIN_TIMEOUT);
    assert_eq!(rc, rescue::init::EXIT_POWEROFF, "{}", tail(&text, 30));
    assert!(text.contains("capture: OK"), "{}", tail(&text, 30));
    g.wait_exit(Duration::from_secs(60)).unwrap();
    eprintln!(
        "power cut at: {cut_at:?}; the rerun took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (ok, out) = tool(Command::new("e2fsck").arg("-fn").arg(&images));
    assert!(ok, "{out}");
    let image = work.join("big.rimg");
    tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /big.rimg {}", image.display()))
            .arg(&images),
    );
    let outcome = verify_on_host(&image, Some(&src));
    assert!(outcome.problems.is_empty(), "{:?}", outcome.problems);
}

#[test]
fn damaged_images_are_named_by_verify_and_refused_by_restore_in_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let image = work.join("d.rimg");
    host_capture(&src.path, &image);
    let mut bytes = std::fs::read(&image).unwrap();
    // Flip a byte in the middle of the chunk data (well before the index at the end).
    let at = bytes.len() / 3;
    bytes[at] ^= 0x5a;
    let flipped = work.join("flipped.rimg");
    std::fs::write(&flipped, &bytes).unwrap();
    let truncated = work.join("truncated.rimg");
    std::fs::write(
        &truncated,
        &std::fs::read(&image).unwrap()[..bytes.len() - 4096],
    )
    .unwrap();
    let images = work.join("images.img");
    ext4_drive(&images, 256);
    put_file(&images, &flipped, "flipped.rimg");
    put_file(&images, &truncated, "truncated.rimg");
    // The target holds a valid GPT before: a refused restore must not leave a valid-looking one.
    let target = work.join("target.img");
    std::fs::copy(&src.path, &target).unwrap();

    for (name, cmd, says) in [
        ("flipped", "verify /mnt/t/flipped.rimg", "hash"),
        (
            "flipped",
            "restore /mnt/t/flipped.rimg serial=DST --yes",
            "nothing was written",
        ),
        ("truncated", "verify /mnt/t/truncated.rimg", "truncated"),
    ] {
        let mut vm = vm();
        vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
        vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
        let run = run_chain(vm, &format!("mount serial=IMG /mnt/t --read-only ; {cmd}"));
        assert_ne!(run.rc, 0, "{name}: `{cmd}` succeeded:\n{}", run.stdout);
        assert!(
            run.stdout.to_lowercase().contains(says),
            "{name}: `{cmd}` does not name the problem ({says}):\n{}",
            tail(&run.stdout, 20)
        );
    }
    // The image was checked before the first write: the refused restore left the target as it was.
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(&src.path).unwrap(),
        "the refused restore of a damaged image changed the target"
    );
}

#[test]
fn a_large_disk_is_captured_in_a_512_mib_guest() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = work.join("large.img");
    big_source(&src, 8192, 256);
    let images = work.join("images.img");
    ext4_drive(&images, 768);
    let mut vm = vm();
    assert_eq!(vm.memory_mib, 512);
    vm.disks.push(Disk::new(&src, Bus::Virtio).serial("SRC"));
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    let started = Instant::now();
    let run = run_chain(
        vm,
        "mount serial=IMG /mnt/t ; capture serial=SRC -o /mnt/t/large.rimg --json ; umount /mnt/t",
    );
    assert_eq!(run.rc, 0, "{}", tail(&run.serial, 40));
    let c = &json_lines_with(&run.stdout, "root_hash")[0];
    let rss = c["peak_rss_bytes"].as_u64().unwrap_or(0);
    eprintln!(
        "8 GiB disk ({} bytes used) captured in a 512 MiB guest: image {} bytes, {:.1} s in the guest \
         ({:.1} s wall), peak RSS of rescue {:.1} MiB",
        c["used_bytes"],
        c["image_bytes"],
        c["seconds"].as_f64().unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64(),
        rss as f64 / MIB as f64
    );
    assert!(rss > 0 && rss <= 256 * MIB, "peak RSS {rss} bytes");
}

#[test]
fn ctrl_alt_del_during_a_restore_does_not_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = work.join("big.img");
    big_source(&src, 512, 200);
    let image = work.join("big.rimg");
    host_capture(&src, &image);
    let images = work.join("images.img");
    ext4_drive(&images, 512);
    put_file(&images, &image, "big.rimg");
    let target = work.join("target.img");
    blank(&target, 512);
    let mut vm = vm();
    vm.disks.push(Disk::new(&images, Bus::Virtio).serial("IMG"));
    vm.disks.push(Disk::new(&target, Bus::Virtio).serial("DST"));
    vm.append = "rescue.cmd=\"mount serial=IMG /mnt/t --read-only ; restore /mnt/t/big.rimg serial=DST --yes --json\"".into();
    let mut g = Guest::boot(vm).unwrap();
    let begin = g.wait_for(rescue::init::CMD_BEGIN, BOOT_TIMEOUT).unwrap();
    g.wait_for_from("restore ", begin, CHAIN_TIMEOUT).unwrap();
    for _ in 0..3 {
        g.qmp(
            "send-key",
            serde_json::json!({"keys": [
                {"type": "qcode", "data": "ctrl"},
                {"type": "qcode", "data": "alt"},
                {"type": "qcode", "data": "delete"}]}),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let (text, rc) = chain_of(&mut g, CHAIN_TIMEOUT);
    assert_eq!(rc, 0, "the restore did not complete:\n{}", tail(&text, 30));
    let boots = g.output().matches("Linux version").count();
    assert_eq!(boots, 1, "the machine rebooted during the restore");
    g.wait_exit(Duration::from_secs(60)).unwrap();
    let outcome = verify_on_host(&image, None);
    assert!(outcome.problems.is_empty());
}
