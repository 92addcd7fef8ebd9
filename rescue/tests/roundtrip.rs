//! Capture → restore round trips through the `rescue` CLI on generated disks: tables valid (`sgdisk -v`,
//! `sfdisk -V`), filesystems clean (`e2fsck -fn`, `fsck.vfat -n`, `ntfsfix -n`), every file identical; raw
//! round trips byte-identical; damaged images named; refusals leave the target untouched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::{attach_loop, attach_loop_with, rescue, s};

use std::path::{Path, PathBuf};
use std::process::Command;

use builder::checks::{check_filesystem, extract, tool};
use builder::fixtures::{self, DiskSpec, Expected, Fs};

const MIB: u64 = 1 << 20;

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    disk: PathBuf,
    spec: DiskSpec,
    expected: Vec<Expected>,
    content: PathBuf,
}

fn fixture(spec: DiskSpec) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let disk = path.join("source.img");
    let expected = fixtures::create_disk(&disk, &spec).unwrap();
    let content = path.join("content");
    fixtures::sample_tree(&content).unwrap();
    std::fs::remove_file(content.join("deleted.bin")).unwrap();
    Fixture {
        _dir: dir,
        dir: path,
        disk,
        spec,
        expected,
        content,
    }
}

fn capture(f: &Fixture, extra: &[&str]) -> PathBuf {
    let image = f.dir.join(format!("image{}.rimg", extra.join("")));
    let mut args = vec!["capture", s(&f.disk), "-o", s(&image)];
    args.extend_from_slice(extra);
    let (rc, out) = rescue(&args);
    assert_eq!(rc, 0, "capture failed:\n{out}");
    assert!(!PathBuf::from(format!("{}.partial", image.display())).exists());
    image
}

fn restore_to(f: &Fixture, image: &Path, size: u64, name: &str) -> PathBuf {
    let target = f.dir.join(name);
    let file = std::fs::File::create(&target).unwrap();
    file.set_len(size).unwrap();
    // Old contents on the target, as a reused disk has.
    std::fs::write(&target, fixtures::noise(size as usize, 42)).unwrap();
    let (rc, out) = rescue(&["restore", s(image), s(&target), "--yes"]);
    assert_eq!(rc, 0, "restore onto {size} bytes failed:\n{out}");
    assert!(out.contains("verified"), "{out}");
    // The restored disk matches the image as the restore placed it (a GPT moved for another size).
    let (rc, out) = rescue(&["verify", s(image), "--against", s(&target)]);
    assert_eq!(
        rc, 0,
        "verify --against right after the restore onto {size} bytes:\n{out}"
    );
    target
}

fn check_restored(f: &Fixture, target: &Path) {
    // A 4Kn disk's table is checked through a loop device with 4096-byte sectors (on a file, the tools
    // assume 512).
    let loopdev = (f.spec.sector_size != 512).then(|| attach_loop_with(target, &["-b", "4096"]));
    let table_on = loopdev.as_deref().map(Path::new).unwrap_or(target);
    let (_, out) = match f.spec.table {
        fixtures::Table::Gpt => tool(Command::new("sgdisk").arg("-v").arg(table_on)),
        fixtures::Table::Mbr => tool(Command::new("sfdisk").arg("-V").arg(table_on)),
    };
    if let Some(dev) = &loopdev {
        let _ = Command::new("losetup").arg("-d").arg(dev).status();
    }
    assert!(
        out.contains("No problems found") || out.contains("No errors detected"),
        "table check on {}:\n{out}",
        target.display()
    );
    let (rc, json) = rescue(&["disks", "--json", s(target)]);
    assert_eq!(rc, 0, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let parts: Vec<&serde_json::Value> = report["disks"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["extended"] != true)
        .collect();
    assert_eq!(parts.len(), f.expected.len(), "{json}");
    for (e, p) in f.expected.iter().zip(&f.spec.parts) {
        let part = f.dir.join(format!("restored-part{}.img", e.number));
        extract(target, e, &part);
        check_filesystem(p.fs, &part, &f.content, &f.dir);
    }
}

#[test]
fn gpt_disk_round_trips_to_same_larger_and_smaller_disks() {
    let f = fixture(fixtures::demo_gpt());
    let image = capture(&f, &[]);
    // Filesystem awareness: the image is much smaller than the disk, deleted data and free space skipped.
    let image_len = std::fs::metadata(&image).unwrap().len();
    assert!(image_len < 20 * MIB, "image of {image_len} bytes");
    // Every filesystem holds the same random.bin: stored once, the other copies slices of its chunk.
    let reader = rescue::image::ImageReader::open(std::fs::File::open(&image).unwrap()).unwrap();
    assert!(
        reader.index().has_slices(),
        "block deduplication found the copies"
    );
    let (rc, inspect) = rescue(&["inspect", "--json", s(&image)]);
    assert_eq!(rc, 0, "{inspect}");
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let repeated = v["repeated_bytes"].as_u64().unwrap();
    assert!(
        repeated >= 3 * MIB,
        "at least one copy of random.bin: {inspect}"
    );
    assert_eq!(v["format"], "1.1", "{inspect}");
    // Each stored byte counts once: the streams' shares add up to no more than the file, and the copies in
    // the other filesystems are shown as shared.
    let streams = v["streams"].as_array().unwrap();
    let sum = |key: &str| -> u64 { streams.iter().map(|s| s[key].as_u64().unwrap()).sum() };
    assert!(
        sum("stored_bytes") <= v["image_bytes"].as_u64().unwrap(),
        "{inspect}"
    );
    assert!(sum("shared_bytes") >= 3 * MIB, "{inspect}");
    let (rc, out) = rescue(&["verify", s(&image), "--against", s(&f.disk)]);
    assert_eq!(rc, 0, "{out}");
    let size = f.spec.size_mib * MIB;
    let last_end = f
        .expected
        .iter()
        .map(|e| e.start_bytes + e.size_bytes)
        .max()
        .unwrap();
    for (target_size, name) in [
        (size, "same.img"),
        (size + 64 * MIB, "larger.img"),
        (last_end + MIB, "smaller.img"),
    ] {
        let target = restore_to(&f, &image, target_size, name);
        check_restored(&f, &target);
    }
}

#[test]
fn mbr_disk_with_logical_partitions_round_trips() {
    let f = fixture(fixtures::demo_mbr());
    let image = capture(&f, &[]);
    let target = restore_to(&f, &image, f.spec.size_mib * MIB, "same.img");
    check_restored(&f, &target);
    let target = restore_to(&f, &image, (f.spec.size_mib + 32) * MIB, "larger.img");
    check_restored(&f, &target);
    // Smaller: down to the end of the extended partition (the last table entry), which the MBR keeps.
    let (rc, json) = rescue(&["disks", "--json", s(&f.disk)]);
    assert_eq!(rc, 0, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entries_end = report["disks"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start_bytes"].as_u64().unwrap() + p["size_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(entries_end < f.spec.size_mib * MIB);
    let target = restore_to(&f, &image, entries_end, "smaller.img");
    check_restored(&f, &target);
    let short = f.dir.join("short.img");
    std::fs::File::create(&short)
        .unwrap()
        .set_len(entries_end - MIB)
        .unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&short), "--yes"]);
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains(&format!("at least {entries_end} bytes")),
        "{out}"
    );
}

#[test]
fn a_4kn_disk_round_trips() {
    let f = fixture(fixtures::demo_4kn());
    let image = capture(&f, &[]);
    let (rc, inspect) = rescue(&["inspect", "--json", s(&image)]);
    assert_eq!(rc, 0, "{inspect}");
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["source"]["logical_sector_size"], 4096, "{inspect}");
    // The same size, larger (the GPT moved to the new end in 4096-byte sectors) and smaller (the last
    // partition's end, plus the backup GPT's 5 sectors, plus a MiB).
    let last_end = f
        .expected
        .iter()
        .map(|e| e.start_bytes + e.size_bytes)
        .max()
        .unwrap();
    let size = f.spec.size_mib * MIB;
    for (bytes, name) in [
        (size, "same.img"),
        (size + 64 * MIB, "larger.img"),
        (last_end + 5 * 4096 + MIB, "smaller.img"),
    ] {
        let target = restore_to(&f, &image, bytes, name);
        check_restored(&f, &target);
        std::fs::remove_file(&target).unwrap();
    }
}

#[test]
fn raw_round_trip_is_byte_identical() {
    let f = fixture(fixtures::demo_mbr());
    let image = capture(&f, &["--raw"]);
    let target = restore_to(&f, &image, f.spec.size_mib * MIB, "raw.img");
    assert!(
        std::fs::read(&target).unwrap() == std::fs::read(&f.disk).unwrap(),
        "raw restore differs from the source"
    );
}

#[test]
fn a_single_partition_is_captured_and_restored_into_a_partition() {
    let f = fixture(fixtures::demo_gpt());
    let image = capture(&f, &["--partition", "2"]);
    let target = f.dir.join("other.img");
    fixtures::create_disk(&target, &fixtures::demo_gpt()).unwrap();
    // inspect lists every partition of the source and marks the one captured.
    let (rc, text) = rescue(&["inspect", s(&image)]);
    assert_eq!(rc, 0, "{text}");
    let marked: Vec<&str> = text.lines().filter(|l| l.starts_with("  * ")).collect();
    assert!(
        marked.len() == 1 && marked[0].contains("ext4") && text.contains("    1 "),
        "{text}"
    );
    // Not as a whole disk: it holds one partition.
    let before = std::fs::read(&target).unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&target), "--yes"]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("holds only partition(s) 2"), "{out}");
    assert!(
        std::fs::read(&target).unwrap() == before,
        "the target was written"
    );
    let (rc, out) = rescue(&[
        "restore",
        s(&image),
        s(&target),
        "--partition",
        "2",
        "--to-partition",
        "3",
        "--yes",
    ]);
    assert_eq!(rc, 0, "{out}");
    // Partition 3 of the target now holds the ext4 from partition 2 (it is as large: 48 MiB each).
    let part = f.dir.join("p3.img");
    extract(&target, &f.expected[2], &part);
    check_filesystem(Fs::Ext4, &part, &f.content, &f.dir);
}

#[test]
fn damaged_images_are_named_and_never_restored() {
    let f = fixture(fixtures::demo_mbr());
    let image = capture(&f, &[]);
    let good = std::fs::read(&image).unwrap();

    // A flipped byte inside chunk data (the first chunk frame starts right after the 64-byte header).
    let mut flipped = good.clone();
    flipped[64 + 200] ^= 0x40;
    let bad = f.dir.join("flipped.rimg");
    std::fs::write(&bad, &flipped).unwrap();
    let (rc, out) = rescue(&["verify", s(&bad)]);
    assert_ne!(rc, 0, "verify passed a damaged image:\n{out}");
    assert!(out.contains("chunk"), "{out}");
    let target = f.dir.join("target.img");
    std::fs::write(&target, vec![0u8; (f.spec.size_mib * MIB) as usize]).unwrap();
    let (rc, out) = rescue(&["restore", s(&bad), s(&target), "--yes"]);
    assert_ne!(rc, 0, "restore of a damaged image succeeded:\n{out}");
    assert!(
        out.contains("the image is damaged") && out.contains("nothing was written"),
        "{out}"
    );
    assert!(
        std::fs::read(&target).unwrap().iter().all(|&b| b == 0),
        "the check before writing let bytes reach the target"
    );

    // A flipped byte in the middle of a file's data chunk, late in the image: refused before the first
    // write, the target as it was. With --no-precheck the restore stops at that chunk, none of its bytes
    // reach the target (its places keep what the target held), and no table is left.
    let reader = rescue::image::ImageReader::open(std::fs::File::open(&image).unwrap()).unwrap();
    let index = reader.index();
    let (id, record) = index
        .chunks
        .iter()
        .enumerate()
        .max_by_key(|(_, c)| c.stored_len)
        .unwrap();
    let places: Vec<(u64, u64)> = index
        .streams
        .iter()
        .flat_map(|s| {
            s.extents.iter().filter_map(move |e| {
                e.chunk_piece()
                    .filter(|(c, _)| c.0 == id as u64)
                    .map(|_| (s.info.disk_offset + e.offset, e.len))
            })
        })
        .collect();
    assert!(!places.is_empty());
    let mut damaged = good.clone();
    damaged[(record.offset + u64::from(record.stored_len) / 2) as usize] ^= 0x40;
    let bad = f.dir.join("damaged-data.rimg");
    std::fs::write(&bad, &damaged).unwrap();
    let (rc, out) = rescue(&["verify", s(&bad)]);
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains(&format!("chunk {id}")),
        "verify does not name chunk {id}:\n{out}"
    );
    std::fs::write(&target, vec![0xAAu8; (f.spec.size_mib * MIB) as usize]).unwrap();
    let (rc, out) = rescue(&["restore", s(&bad), s(&target), "--yes"]);
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains(&format!("chunk {id}")) && out.contains("nothing was written"),
        "the refusal does not name chunk {id}:\n{out}"
    );
    assert!(
        std::fs::read(&target).unwrap().iter().all(|&b| b == 0xAA),
        "the check before writing let bytes reach the target"
    );
    let (rc, out) = rescue(&["restore", s(&bad), s(&target), "--yes", "--no-precheck"]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("no valid partition table"), "{out}");
    let after = std::fs::read(&target).unwrap();
    for (at, len) in places {
        assert!(
            after[at as usize..(at + len) as usize]
                .iter()
                .all(|&b| b == 0xAA),
            "bytes of the damaged chunk were written at {at}"
        );
    }
    assert_ne!(after[510..512], [0x55, 0xAA], "a table was written");

    // A truncated tail: never taken for a complete image.
    let cut = f.dir.join("cut.rimg");
    std::fs::write(&cut, &good[..good.len() - 50]).unwrap();
    for cmd in ["verify", "inspect"] {
        let (rc, out) = rescue(&[cmd, s(&cut)]);
        assert_ne!(rc, 0, "{cmd} accepted a truncated image:\n{out}");
        assert!(
            out.to_lowercase().contains("footer")
                || out.contains("not finalized")
                || out.contains("truncated"),
            "{cmd}: {out}"
        );
    }
    let (rc, _) = rescue(&["restore", s(&cut), s(&target), "--yes"]);
    assert_ne!(rc, 0);

    // A newer major version is refused.
    let mut newer = good.clone();
    newer[8] = 9;
    let v = f.dir.join("v9.rimg");
    std::fs::write(&v, &newer).unwrap();
    let (rc, out) = rescue(&["verify", s(&v)]);
    assert_ne!(rc, 0);
    assert!(out.contains("version"), "{out}");
}

#[test]
fn refused_restores_leave_the_target_untouched() {
    let f = fixture(fixtures::demo_gpt());
    let image = capture(&f, &[]);
    let small = f.dir.join("small.img");
    let before = fixtures::noise((64 * MIB) as usize, 5);
    std::fs::write(&small, &before).unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&small), "--yes", "--json"]);
    assert_ne!(rc, 0);
    assert!(
        out.contains("too small") && out.contains("at least"),
        "{out}"
    );
    // With --json, a script gets the refusal as a document too.
    let doc: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with("{\"")).unwrap()).unwrap();
    assert_eq!(doc["ok"], false, "{out}");
    assert!(
        doc["error"].as_str().unwrap().contains("too small"),
        "{out}"
    );
    assert!(
        std::fs::read(&small).unwrap() == before,
        "a refused restore wrote to the target"
    );

    let big = f.dir.join("big.img");
    let before = fixtures::noise((200 * MIB) as usize, 6);
    std::fs::write(&big, &before).unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&big)]);
    assert_ne!(rc, 0);
    assert!(out.contains("--yes"), "{out}");
    assert!(
        std::fs::read(&big).unwrap() == before,
        "an unconfirmed restore wrote to the target"
    );
}

/// Another name of the same file is the same file: the image is not restored over itself, a disk is not
/// cloned onto itself through a symlink, and a capture does not write its image over its source.
#[test]
fn a_file_under_another_name_is_recognised_and_refused() {
    let f = fixture(fixtures::demo_mbr());
    let image = capture(&f, &[]);
    let image_bytes = std::fs::read(&image).unwrap();
    let source_bytes = std::fs::read(&f.disk).unwrap();
    let alias = f.dir.join("alias.img");
    std::os::unix::fs::symlink(&f.disk, &alias).unwrap();
    let cases: [(&[&str], &str); 3] = [
        (
            &["restore", s(&image), s(&image), "--yes"],
            "is the image being restored",
        ),
        (
            &["clone", s(&f.disk), s(&alias), "--yes"],
            "is the source disk",
        ),
        (
            &["capture", s(&alias), "-o", s(&f.disk)],
            "is the source being captured",
        ),
    ];
    for (args, why) in cases {
        let (rc, out) = rescue(args);
        assert_ne!(rc, 0, "rescue {args:?} was not refused:\n{out}");
        assert!(out.contains(why), "rescue {args:?}:\n{out}");
    }
    assert!(
        std::fs::read(&image).unwrap() == image_bytes,
        "the image changed"
    );
    assert!(
        std::fs::read(&f.disk).unwrap() == source_bytes,
        "the source changed"
    );
}

#[test]
fn clone_copies_a_disk_onto_a_larger_one_and_refuses_itself() {
    let f = fixture(fixtures::demo_gpt());
    let target = f.dir.join("clone.img");
    std::fs::write(
        &target,
        fixtures::noise(((f.spec.size_mib + 40) * MIB) as usize, 11),
    )
    .unwrap();
    let before = std::fs::read(&target).unwrap();
    let (rc, out) = rescue(&["clone", s(&f.disk), s(&target)]);
    assert_ne!(rc, 0);
    assert!(out.contains("--yes"), "{out}");
    assert!(
        std::fs::read(&target).unwrap() == before,
        "an unconfirmed clone wrote to the target"
    );
    let (rc, out) = rescue(&["clone", s(&f.disk), s(&f.disk), "--yes"]);
    assert_ne!(rc, 0);
    assert!(out.contains("source disk"), "{out}");
    let (rc, out) = rescue(&["clone", s(&f.disk), s(&target), "--yes"]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("verified"), "{out}");
    check_restored(&f, &target);
}

/// Needs root, loop devices and an ext4-capable host kernel (CI and the development machines have them).
#[test]
fn a_mounted_target_is_refused_and_untouched() {
    let f = fixture(fixtures::demo_mbr());
    let image = capture(&f, &[]);
    let backing = f.dir.join("mounted.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(256 * MIB)
        .unwrap();
    let (ok, out) = tool(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&backing));
    assert!(ok, "{out}");
    let loopdev = attach_loop(&backing);
    let mnt = f.dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .arg(&loopdev)
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    let result = std::panic::catch_unwind(|| {
        assert!(mounted, "mounting {loopdev} failed");
        std::fs::write(mnt.join("keep.txt"), b"precious").unwrap();
        let (rc, out) = rescue(&["restore", s(&image), &loopdev, "--yes"]);
        assert_ne!(rc, 0, "restore onto a mounted disk succeeded:\n{out}");
        assert!(out.contains("mounted") && out.contains(&loopdev), "{out}");
        let (rc, out) = rescue(&["clone", s(&f.disk), &loopdev, "--yes"]);
        assert_ne!(rc, 0, "clone onto a mounted disk succeeded:\n{out}");
        assert_eq!(std::fs::read(mnt.join("keep.txt")).unwrap(), b"precious");
    });
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").arg("-d").arg(&loopdev).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    let (ok, out) = tool(Command::new("e2fsck").arg("-fn").arg(&backing));
    assert!(ok, "the mounted filesystem was damaged:\n{out}");
}

#[test]
fn capture_streams_to_stdout() {
    let f = fixture(fixtures::demo_mbr());
    let out = Command::new(env!("CARGO_BIN_EXE_rescue"))
        .args(["capture", s(&f.disk), "-o", "-", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let streamed = f.dir.join("streamed.rimg");
    std::fs::write(&streamed, &out.stdout).unwrap();
    // The summary goes to stderr so stdout holds only the image.
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .rfind(|l| l.contains("root_hash"))
            .unwrap(),
    )
    .unwrap();
    let (rc, verify) = rescue(&["verify", "--json", s(&streamed)]);
    assert_eq!(rc, 0, "{verify}");
    // Progress lines (on stderr) while the chunks are checked, then the result.
    assert!(verify.contains("\"phase\":\"verify\""), "{verify}");
    let v: serde_json::Value =
        serde_json::from_str(verify.lines().rfind(|l| l.contains("root_hash")).unwrap()).unwrap();
    assert_eq!(v["root_hash"], summary["root_hash"], "{verify}");
    let target = restore_to(&f, &streamed, f.spec.size_mib * MIB, "from-stdout.img");
    check_restored(&f, &target);
}

/// A filesystem whose used blocks are scattered (every other small file deleted): the used ranges close
/// together are read with one request and stored in one chunk, and every file comes back.
#[test]
fn a_fragmented_ext4_is_read_in_few_chunks_and_restores_file_for_file() {
    let dir = tempfile::tempdir().unwrap();
    let (fs, content) = (dir.path().join("fs.img"), dir.path().join("content"));
    fixtures::fragmented_ext4(&fs, &content).unwrap();

    let image = dir.path().join("fs.rimg");
    let (rc, out) = rescue(&["capture", s(&fs), "-o", s(&image)]);
    assert_eq!(rc, 0, "{out}");
    let reader = rescue::image::ImageReader::open(std::fs::File::open(&image).unwrap()).unwrap();
    let index = reader.index();
    let extents = &index.streams[0].extents;
    let slices = extents
        .iter()
        .filter(|e| matches!(e.kind, rescue::image::ExtentKind::Slice { .. }))
        .count();
    let gaps = extents
        .iter()
        .filter(|e| e.kind == rescue::image::ExtentKind::Unused)
        .count();
    assert!(gaps >= 100, "the files left {gaps} gaps");
    assert!(slices >= 100, "{slices} slices");
    assert!(
        index.chunks.len() < 20,
        "{} chunks for {gaps} gaps: the ranges between them were not read together",
        index.chunks.len()
    );

    let target = dir.path().join("restored.img");
    std::fs::write(&target, fixtures::noise(64 << 20, 7)).unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&target), "--yes"]);
    assert_eq!(rc, 0, "{out}");
    check_filesystem(Fs::Ext4, &target, &content, dir.path());
}

/// Ctrl-C during a capture from a block device: the capture stops at the next chunk, the partial image is
/// removed, and the source is writable again (the kernel's read-only flag set for the capture is put back).
/// Needs root and loop devices (CI and the development machines have both).
#[test]
fn an_interrupted_capture_cleans_up_and_leaves_the_source_writable() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("noise.img");
    std::fs::write(&backing, fixtures::noise(256 << 20, 5)).unwrap();
    let loopdev = attach_loop(&backing);
    let ro_flag = format!("/sys/block/{}/ro", loopdev.trim_start_matches("/dev/"));
    let image = dir.path().join("noise.rimg");
    let result = std::panic::catch_unwind(|| {
        // Interrupt once the capture is under way (its first progress line).
        let (mut child, mut stderr, mut text) =
            common::spawn_until_phase(&["capture", &loopdev, "-o", s(&image), "--json"], "capture");
        assert_eq!(
            std::fs::read_to_string(&ro_flag).unwrap().trim(),
            "1",
            "the source is read-only while captured:\n{text}"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "the capture completed:\n{text}");
        assert!(
            text.contains("interrupted") && text.contains("cancelled"),
            "{text}"
        );
        assert!(!image.exists(), "an image was left");
        let partial = dir.path().join("noise.rimg.partial");
        assert!(!partial.exists(), "the partial image was left:\n{text}");
        assert_eq!(
            std::fs::read_to_string(&ro_flag).unwrap().trim(),
            "0",
            "the source was left read-only"
        );
    });
    let _ = Command::new("losetup").arg("-d").arg(&loopdev).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// An ext4 whose block bitmap does not match its checksum cannot be trusted to say what is used: that
/// partition is captured raw (every sector, zero-skipped), the image and the capture's output say why,
/// and it restores byte for byte.
#[test]
fn an_inconsistent_used_block_map_falls_back_to_raw_and_says_why() {
    let f = fixture(fixtures::demo_gpt());
    let (i, e) = f
        .spec
        .parts
        .iter()
        .zip(&f.expected)
        .enumerate()
        .find(|(_, (p, _))| p.fs == Fs::Ext4)
        .map(|(i, (_, e))| (i, e.clone()))
        .unwrap();
    let part = f.dir.join("ext4.img");
    extract(&f.disk, &e, &part);
    let (ok, out) = tool(Command::new("dumpe2fs").arg(&part));
    assert!(ok, "{out}");
    let number = |prefix: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap();
        let rest = line.trim_start()[prefix.len()..].trim_start_matches([':', ' ']);
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (bitmap, block) = (number("Block bitmap at"), number("Block size"));
    // One bit near the end of group 0's bitmap: the checksum no longer matches (metadata_csum).
    let at = e.start_bytes + bitmap * block + block / 2;
    let mut disk = std::fs::read(&f.disk).unwrap();
    disk[at as usize] ^= 0x01;
    std::fs::write(&f.disk, &disk).unwrap();

    let image = f.dir.join("fallback.rimg");
    let (rc, out) = rescue(&["capture", s(&f.disk), "-o", s(&image)]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("captured raw") && out.contains("checksum"),
        "the capture does not say why:\n{out}"
    );
    let (rc, json) = rescue(&["inspect", "--json", s(&image)]);
    assert_eq!(rc, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let stream = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["disk_offset"] == e.start_bytes)
        .unwrap();
    assert_eq!(stream["capture"], "Raw", "{stream}");
    assert!(
        stream["reason"].as_str().unwrap().contains("checksum"),
        "{stream}"
    );
    assert!(
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("captured raw")),
        "{json}"
    );
    // Raw means every byte of the partition comes back as it was, the flipped bit included.
    let target = restore_to(&f, &image, f.spec.size_mib * MIB, "fallback-target.img");
    let restored = std::fs::read(&target).unwrap();
    let r = e.start_bytes as usize..(e.start_bytes + e.size_bytes) as usize;
    assert!(
        restored[r.clone()] == disk[r],
        "partition {} differs",
        i + 1
    );
}

/// A GPT that cannot be moved to a larger disk (its captured primary header fails its CRC) fails the
/// restore before the first write: the target keeps every byte, and the message says so.
#[test]
fn a_gpt_that_cannot_move_fails_before_anything_is_written() {
    let f = fixture(fixtures::demo_gpt());
    let mut disk = std::fs::read(&f.disk).unwrap();
    disk[512 + 16] ^= 0xFF; // the primary header's CRC
    std::fs::write(&f.disk, &disk).unwrap();
    let image = capture(&f, &[]);
    let target = f.dir.join("larger.img");
    let before = fixtures::noise(((f.spec.size_mib + 16) * MIB) as usize, 8);
    std::fs::write(&target, &before).unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&target), "--yes"]);
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains("CRC") && out.contains("nothing was written to the target"),
        "{out}"
    );
    assert!(
        std::fs::read(&target).unwrap() == before,
        "the target was written"
    );
}
