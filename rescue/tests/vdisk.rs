//! Virtual machines' disks as the disks they hold, on the host CLI: a qcow2 file made by `qemu-img` from a
//! fixture disk is listed with the fixture's partitions and filesystems, captured (used blocks only,
//! through its tables) into an image that verifies against the raw disk, verified and restored onto a
//! disk as it is (V2P; what its filesystems use is the source's) or one partition of it onto a partition,
//! inspected as the disk it holds, named
//! for what it is where only an image of ours will do, and refused as a restore target (writing a raw
//! disk into it would destroy it), left unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::process::Command;

use builder::fixtures;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_qcow2_disk_is_listed_captured_and_never_written_as_raw() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw = d.join("disk.raw");
    fixtures::create_disk(&raw, &fixtures::demo_gpt()).unwrap();
    let vm = d.join("vm.qcow2");
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-c", "-O", "qcow2"])
        .args([&raw, &vm])
        .output()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Listed as the disk it holds.
    let (rc, o, e) = rescue_split(&["disks", s(&raw), s(&vm), "--json"]);
    assert_eq!(rc, 0, "{o}{e}");
    let report = json(&o);
    let (r, v) = (&report["disks"][0], &report["disks"][1]);
    assert_eq!(v["size_bytes"], r["size_bytes"], "{v}");
    assert_eq!(v["model"], "qcow2 virtual disk", "{v}");
    assert_eq!(
        v["partitions"].as_array().unwrap().len(),
        r["partitions"].as_array().unwrap().len()
    );
    for (pv, pr) in v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["partitions"].as_array().unwrap())
    {
        assert_eq!(pv["start_bytes"], pr["start_bytes"]);
        assert_eq!(pv["fs"], pr["fs"], "{pv}");
    }

    // Captured through its tables; the image verifies against the raw disk.
    let image = d.join("vm.rimg");
    let (rc, o, e) = rescue_split(&["capture", s(&vm), "-o", s(&image), "--json"]);
    assert_eq!(rc, 0, "{o}{e}");
    let (rc, o) = rescue(&["verify", s(&image), "--against", s(&raw)]);
    assert_eq!(rc, 0, "{o}");

    // Inspected, it says what it is, what the format says, and the disk it holds.
    let (rc, o) = rescue(&["inspect", s(&vm)]);
    assert_eq!(rc, 0, "{o}");
    assert!(
        o.contains("virtual disk") && o.contains("qcow2 version 3") && o.contains("rescue restore"),
        "{o}"
    );
    let (rc, o, e) = rescue_split(&["inspect", s(&vm), "--json"]);
    assert_eq!(rc, 0, "{o}{e}");
    let j = json(&o);
    assert_eq!(j["virtual_disk"]["format"], "qcow2", "{j}");
    assert_eq!(j["disk"]["size_bytes"], r["size_bytes"], "{j}");
    assert_eq!(j["disk"]["partitions"], v["partitions"], "{j}");
    // As the restore wizard sees it (`ops::inspect`): the disk it holds, laid out as a capture of it
    // would be, and marked as a virtual disk (restored whole).
    let info = rescue::ops::inspect(
        &rescue::ops::Location::Local(vm.clone()),
        &rescue::ops::NetOptions::default(),
    )
    .unwrap();
    assert_eq!(info.virtual_format, Some("qcow2"));
    assert_eq!(info.disk.size, r["size_bytes"].as_u64().unwrap());
    assert_eq!(
        info.disk.partitions.len(),
        r["partitions"].as_array().unwrap().len()
    );
    let last_end = r["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["start_bytes"].as_u64().unwrap() + p["size_bytes"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(info.layout.min_target_size() >= last_end);
    assert!(info.layout.min_target_size() <= r["size_bytes"].as_u64().unwrap());
    // Read as an image of ours where only our images go, it says what it is and what can be done.
    let (rc, o) = rescue(&["export", s(&vm), "-o", s(&d.join("x.rimg"))]);
    assert_ne!(rc, 0, "{o}");
    assert!(
        o.contains("it is a qcow2 virtual disk") && o.contains("rescue capture"),
        "{o}"
    );

    // Verified by reading its whole disk through its tables, and restored onto a disk (V2P): the
    // result is the disk it holds, as QEMU reads it.
    let (rc, o) = rescue(&["verify", s(&vm), "--against", s(&raw)]);
    assert_eq!(rc, 0, "{o}");
    let target = d.join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(std::fs::metadata(&raw).unwrap().len())
        .unwrap();
    let (rc, o) = rescue(&["restore", s(&vm), s(&target), "--yes"]);
    assert_eq!(rc, 0, "{o}");
    assert!(o.contains("read back and verified"), "{o}");
    // What the filesystems use (a restore copies no free space) is the same as on the source.
    let (rc, o) = rescue(&["verify", s(&image), "--against", s(&target)]);
    assert_eq!(rc, 0, "{o}");
    // One partition of it onto a partition of another disk: partition 2 of the target wiped first,
    // then restored from the VM disk's partition 2; what its filesystem uses equals the source's.
    let (start, len) = partition_bytes(&target, 2);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &vec![0u8; len as usize], start).unwrap();
    drop(f);
    let part_image = d.join("p2.rimg");
    let (rc, o) = rescue(&["capture", s(&raw), "--partition", "2", "-o", s(&part_image)]);
    assert_eq!(rc, 0, "{o}");
    let (rc, o) = rescue(&["verify", s(&part_image), "--against", s(&target)]);
    assert_ne!(rc, 0, "the wiped partition differs: {o}");
    let (rc, o) = rescue(&[
        "restore",
        s(&vm),
        s(&target),
        "--yes",
        "--partition",
        "2",
        "--to-partition",
        "2",
    ]);
    assert_eq!(rc, 0, "{o}");
    assert!(o.contains("read back and verified"), "{o}");
    let (rc, o) = rescue(&["verify", s(&part_image), "--against", s(&target)]);
    assert_eq!(rc, 0, "{o}");
    // A partition it does not have, or a partitioned disk as the target of one partition: refused.
    let (rc, o) = rescue(&["restore", s(&vm), s(&target), "--yes", "--partition", "9"]);
    assert_ne!(rc, 0, "{o}");
    assert!(o.contains("no partition 9"), "{o}");
    let (rc, o) = rescue(&["restore", s(&vm), s(&target), "--yes", "--partition", "2"]);
    assert_ne!(rc, 0, "{o}");
    // A damaged table is named by verify.
    let mut bytes = std::fs::read(&vm).unwrap();
    let l1 = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    bytes[l1..l1 + 8].copy_from_slice(&(1u64 << 50).to_be_bytes());
    let bad = d.join("bad.qcow2");
    std::fs::write(&bad, &bytes).unwrap();
    let (rc, o) = rescue(&["verify", s(&bad)]);
    assert_ne!(rc, 0, "{o}");
    assert!(o.contains("L1 entry 0"), "{o}");

    // Never a restore target: nothing written, the file unchanged.
    let before = std::fs::read(&vm).unwrap();
    let (rc, o) = rescue(&["restore", s(&image), s(&vm), "--yes"]);
    assert_ne!(rc, 0, "{o}");
    assert!(
        o.contains("qcow2 virtual disk file") && o.contains("nothing was written"),
        "{o}"
    );
    assert!(
        std::fs::read(&vm).unwrap() == before,
        "the qcow2 file was changed"
    );
}
