//! Filesystem detection on images made by mkfs.*, checked against blkid.

use super::*;

fn make_fs(dir: &Path, kind: &str, size: u64) -> PathBuf {
    let f = blank(dir, &format!("{kind}.fs"), size);
    let f_s = s(&f);
    match kind {
        "ext2" => run("mkfs.ext2", &["-q", "-L", "e2label", f_s], None),
        "ext3" => run("mkfs.ext3", &["-q", "-L", "e3label", f_s], None),
        "ext4" => run(
            "mkfs.ext4",
            &[
                "-q",
                "-L",
                "rootfs",
                "-U",
                "0a1b2c3d-1111-2222-3333-444455556666",
                f_s,
            ],
            None,
        ),
        "fat12" => run(
            "mkfs.vfat",
            &["-F", "12", "-n", "SMALL", "-i", "0000BEEF", f_s],
            None,
        ),
        "fat16" => run(
            "mkfs.vfat",
            &["-F", "16", "-n", "ESP16", "-i", "1234ABCD", f_s],
            None,
        ),
        "fat32" => run(
            "mkfs.vfat",
            &["-F", "32", "-n", "BIG32", "-i", "CAFEF00D", f_s],
            None,
        ),
        "fat4k" => run("mkfs.vfat", &["-S", "4096", "-n", "ESP4K", f_s], None),
        "ntfs4k" => run(
            "mkntfs",
            &["-F", "-Q", "-q", "-s", "4096", "-L", "Win4k", f_s],
            None,
        ),
        "exfat" => run("mkfs.exfat", &["-L", "Exchange", f_s], None),
        "ntfs" => run("mkntfs", &["-F", "-Q", "-L", "Windows", f_s], None),
        "swap" => run(
            "mkswap",
            &[
                "-L",
                "swappy",
                "-U",
                "11111111-2222-3333-4444-555566667777",
                f_s,
            ],
            None,
        ),
        _ => unreachable!(),
    };
    f
}

fn expected_kind(kind: &str) -> FsKind {
    match kind {
        "ext2" => FsKind::Ext2,
        "ext3" => FsKind::Ext3,
        "ext4" => FsKind::Ext4,
        "fat12" | "fat16" | "fat32" | "fat4k" => FsKind::Vfat,
        "exfat" => FsKind::Exfat,
        "ntfs" | "ntfs4k" => FsKind::Ntfs,
        _ => FsKind::Swap,
    }
}

#[test]
fn whole_device_filesystems_match_blkid() {
    let t = tempfile::tempdir().unwrap();
    for (kind, size) in [
        ("ext2", 8u64 << 20),
        ("ext3", 8 << 20),
        ("ext4", 16 << 20),
        ("fat12", 4 << 20),
        ("fat16", 32 << 20),
        ("fat32", 64 << 20),
        ("fat4k", 32 << 20),
        ("ntfs4k", 32 << 20),
        ("exfat", 16 << 20),
        ("ntfs", 16 << 20),
        ("swap", 8 << 20),
    ] {
        let f = make_fs(t.path(), kind, size);
        let d = detect_file(&f);
        let b = blkid(&f);
        assert_eq!(d.table, PartitionTable::None, "{kind}: {:?}", d.problems);
        assert!(d.partitions.is_empty(), "{kind}");
        assert_eq!(d.fs, Some(expected_kind(kind)), "{kind}");
        assert_eq!(d.fs_label.as_ref(), b.get("LABEL"), "{kind} label");
        assert_eq!(d.fs_uuid.as_ref(), b.get("UUID"), "{kind} uuid");
        assert!(d.fs_label.is_some() && d.fs_uuid.is_some(), "{kind}");
        assert!(d.problems.is_empty(), "{kind}: {:?}", d.problems);
    }
}

#[test]
fn filesystems_inside_gpt_partitions() {
    let t = tempfile::tempdir().unwrap();
    let p = blank(t.path(), "fsdisk.img", 160 << 20);
    let kinds = ["fat16", "ext4", "exfat", "ntfs", "swap", "fat32"];
    let mut args = Vec::new();
    for (i, _) in kinds.iter().enumerate() {
        let size = if i == 5 { "+64M" } else { "+16M" };
        args.extend(["-n".to_string(), format!("{}:0:{size}", i + 1)]);
    }
    args.push(s(&p).to_string());
    run(
        "sgdisk",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    let layout = detect_file(&p);
    let f = OpenOptionsRw::open(&p);
    let mut expected = Vec::new();
    for (kind, part) in kinds.iter().zip(&layout.partitions) {
        let fs = make_fs(t.path(), kind, part.size_bytes);
        f.write_all_at(&std::fs::read(&fs).unwrap(), part.start_bytes)
            .unwrap();
        let b = blkid(&fs);
        expected.push((
            Some(expected_kind(kind)),
            b.get("LABEL").cloned(),
            b.get("UUID").cloned(),
        ));
    }
    let d = detect_file(&p);
    assert!(d.problems.is_empty(), "{:?}", d.problems);
    let got: Vec<_> = d
        .partitions
        .iter()
        .map(|p| (p.fs, p.fs_label.clone(), p.fs_uuid.clone()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(d.fs, None);
}
