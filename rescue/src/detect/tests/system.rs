//! Orchestration: paths that are not disks, a fake sysfs + /dev, the real system.

use super::*;

#[test]
fn bad_paths_are_reported_not_fatal() {
    let t = tempfile::tempdir().unwrap();
    let empty = blank(t.path(), "empty.img", 0);
    let paths = vec![t.path().join("missing.img"), t.path().to_path_buf(), empty];
    let r = detect_paths(&paths, &DetectOptions::default());
    assert_eq!(r.disks.len(), 3);
    assert!(
        r.disks[0].problems[0].contains("does not exist"),
        "{:?}",
        r.disks[0].problems
    );
    assert!(
        r.disks[1].problems[0].contains("neither a block device"),
        "{:?}",
        r.disks[1].problems
    );
    assert_eq!(
        (r.disks[2].table, r.disks[2].size_bytes),
        (PartitionTable::None, 0)
    );
    assert!(
        r.disks[2].problems[0].contains("empty (0 bytes)"),
        "{:?}",
        r.disks[2].problems
    );
    assert!(r.problems.is_empty());
    let opts = DetectOptions {
        mountinfo: t.path().join("nope"),
        sysfs: t.path().join("nosys"),
        ..DetectOptions::default()
    };
    let r = detect_all(&opts);
    assert!(r.disks.is_empty());
    assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
}

/// A fake sysfs and /dev where the "device nodes" are image files: the whole orchestration
/// (sysfs identity, table from bytes, partition nodes, mounts, boot medium) without root.
#[test]
fn detect_all_on_a_fake_system() {
    let t = tempfile::tempdir().unwrap();
    let (sys, dev) = (t.path().join("sys"), t.path().join("dev"));
    std::fs::create_dir_all(sys.join("block")).unwrap();
    std::fs::create_dir_all(&dev).unwrap();
    let img = sgdisk_disk(t.path());
    std::fs::copy(&img, dev.join("sdb")).unwrap();
    File::create(dev.join("sdb1")).unwrap();
    let devdir =
        sys.join("devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0");
    let disk = devdir.join("block/sdb");
    let w = |rel: &str, v: &str| {
        let f = disk.join(rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, v).unwrap();
    };
    w("size", &format!("{}\n", (64u64 << 20) / 512));
    w("dev", "8:16\n");
    w("removable", "1\n");
    w("sdb1/partition", "1\n");
    w("sdb1/dev", "8:17\n");
    w("sdb1/start", "2048\n");
    w("sdb1/size", &format!("{}\n", 8 << 11));
    w("sdb2/partition", "2\n");
    w("sdb2/start", "4096\n"); // stale: the table on disk says 18432
    w("sdb9/partition", "9\n");
    symlink(&devdir, disk.join("device")).unwrap();
    std::fs::write(devdir.join("model"), "Flash Disk  \n").unwrap();
    symlink(&disk, sys.join("block/sdb")).unwrap();
    let mountinfo = t.path().join("mountinfo");
    std::fs::write(
        &mountinfo,
        "30 1 8:17 / /boot/efi rw - vfat /dev/sdb1 rw\n31 1 8:16 / /mnt/raw\\040disk rw - x y z\n",
    )
    .unwrap();
    let opts = DetectOptions {
        sysfs: sys,
        dev: dev.clone(),
        mountinfo,
        boot_disk_guid: Some(DISK_GUID.into()),
    };
    let r = detect_all(&opts);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let d = &r.disks[0];
    assert_eq!(
        (d.name.as_str(), d.transport, d.removable),
        ("sdb", Transport::Usb, true)
    );
    assert_eq!(d.path, dev.join("sdb").to_string_lossy());
    assert_eq!(d.model.as_deref(), Some("Flash Disk"));
    assert!(d.boot_medium);
    assert_eq!(d.mounts, vec!["/mnt/raw disk".to_string()]);
    assert_eq!(
        d.partitions[0].path.as_deref(),
        Some(&*dev.join("sdb1").to_string_lossy())
    );
    assert_eq!(d.partitions[0].mounts, vec!["/boot/efi".to_string()]);
    assert_eq!(d.partitions[1].path, None, "no node for sdb2");
    assert_eq!(d.problems.len(), 2, "{:?}", d.problems);
    assert!(d.problems[0].contains("partition 2 (sdb2) does not match"));
    assert!(d.problems[1].contains("partition 9 (sdb9) which is not in the table"));

    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    for key in [
        "\"type\":\"C12A7328-F81F-11D2-BA4B-00A0C93EC93B\"",
        "\"transport\":\"usb\"",
        "\"table\":\"gpt\"",
        "\"start_bytes\":1048576",
    ] {
        assert!(json.contains(key), "{key} missing in {json}");
    }
}

#[test]
fn real_system_smoke() {
    // Whatever this machine has (or lacks, without root): no panic, serialisable.
    let r = detect_all(&DetectOptions::default());
    serde_json::to_string(&r).unwrap();
}

#[test]
fn devnum_split_matches_glibc() {
    assert_eq!(devnum(0x0811), (8, 17));
    assert_eq!(devnum((259 << 8) | 3), (259, 3));
    // Large numbers use the high bits.
    let rdev = ((0x1234u64 & 0xFFFF_F000) << 32)
        | ((0x1234 & 0xFFF) << 8)
        | ((0x56789 & !0xFF) << 12)
        | (0x56789 & 0xFF);
    assert_eq!(devnum(rdev), (0x1234, 0x56789));
}
