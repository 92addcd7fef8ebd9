//! The directory reader on small hand-made directories (the real ones, made by ocs-sr, are in
//! `rescue/tests/clonezilla.rs`).

#![allow(clippy::unwrap_used)]

use super::*;

const PT: &str = "label: dos\nlabel-id: 0x5a0c1e2d\ndevice: /dev/sdb\nunit: sectors\n\n\
/dev/sdb1 : start=2048, size=40960, type=83, bootable\n/dev/sdb2 : start=43008, size=98304, type=5\n\
/dev/sdb5 : start=45056, size=32768, type=83\n/dev/sdb6 : start=79872, size=16384, type=82\n";

fn mbr() -> Vec<u8> {
    let mut m = vec![0u8; 512];
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

/// An MBR image directory of disk `sdb`; `files` are written into it as well.
fn dir(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("disk"), "sdb\n").unwrap();
    std::fs::write(p.join("parts"), "sdb1 sdb5\n").unwrap();
    std::fs::write(p.join("sdb-pt.sf"), PT).unwrap();
    std::fs::write(p.join("sdb-mbr"), mbr()).unwrap();
    std::fs::write(
        p.join("sdb-pt.parted"),
        "Model: x\nDisk /dev/sdb: 163840s\n",
    )
    .unwrap();
    std::fs::write(
        p.join("clonezilla-img"),
        "This image was saved by Clonezilla at 2026-12-07 19:09:31 UTC.\n",
    )
    .unwrap();
    std::fs::write(
        p.join("swappt-sdb6.info"),
        "UUID=\"0d1e2f3a-4b5c-4d6e-8f7a-8b9c0d1e2f3a\"\nLABEL=\"sw\"\n",
    )
    .unwrap();
    std::fs::write(p.join("sdb1.ext4-ptcl-img.gz.aa"), b"x").unwrap();
    std::fs::write(p.join("sdb1.ext4-ptcl-img.gz.ab"), b"x").unwrap();
    std::fs::write(p.join("sdb5.vfat-ptcl-img.zst"), b"x").unwrap();
    for (name, bytes) in files {
        std::fs::write(p.join(name), bytes).unwrap();
    }
    d
}

#[test]
fn a_savedisk_directory_is_read_with_its_partitions_and_chain() {
    let d = dir(&[]);
    assert!(is_image_dir(d.path()));
    let img = open(d.path()).unwrap();
    let disk = img.disk.as_ref().unwrap();
    assert_eq!(disk.size_bytes, 163840 * 512);
    assert!(disk.size_known);
    assert_eq!(disk.ebrs.len(), 2, "one EBR per logical partition");
    assert_eq!(disk.ebrs[0].0, 43008 * 512);
    assert_eq!(img.saved_at.as_deref(), Some("2026-12-07 19:09:31 UTC"));
    let kinds: Vec<(u32, &Content)> = img
        .partitions
        .iter()
        .map(|p| (p.number, &p.content))
        .collect();
    assert!(
        matches!(kinds[0], (1, Content::Partclone { fs, first }) if fs == "ext4" && first.ends_with("sdb1.ext4-ptcl-img.gz.aa"))
    );
    assert!(matches!(kinds[1], (2, Content::Extended)));
    assert!(matches!(kinds[2], (5, Content::Partclone { fs, .. }) if fs == "vfat"));
    assert!(matches!(kinds[3], (6, Content::Swap { label: Some(l), .. }) if l == "sw"));
    assert_eq!(img.partitions[2].start, 45056 * 512);
}

#[test]
fn old_and_foreign_forms_are_named() {
    let d = dir(&[("sdb6.000", b"x")]);
    std::fs::remove_file(d.path().join("swappt-sdb6.info")).unwrap();
    let img = open(d.path()).unwrap();
    let p6 = img.partitions.iter().find(|p| p.number == 6).unwrap();
    assert!(matches!(&p6.content, Content::Unsupported { why, .. } if why.contains("partimage")));
    // An old partclone name is a partclone image until its content says otherwise.
    let d = dir(&[("sdb6.ntfs-img.aa", b"x")]);
    std::fs::remove_file(d.path().join("swappt-sdb6.info")).unwrap();
    let img = open(d.path()).unwrap();
    let p6 = img.partitions.iter().find(|p| p.number == 6).unwrap();
    assert!(matches!(&p6.content, Content::Partclone { fs, .. } if fs == "ntfs"));
}

#[test]
fn what_is_missing_or_unsupported_is_refused_by_name() {
    let d = dir(&[]);
    std::fs::write(d.path().join("disk"), "sdb sdc\n").unwrap();
    assert!(open(d.path()).unwrap_err().to_string().contains("2 disks"));

    let d = dir(&[]);
    std::fs::remove_file(d.path().join("sdb-pt.sf")).unwrap();
    assert!(open(d.path())
        .unwrap_err()
        .to_string()
        .contains("sdb-pt.sf"));

    let d = dir(&[]);
    std::fs::write(d.path().join("sdb-mbr"), [0u8; 512]).unwrap();
    assert!(open(d.path()).unwrap_err().to_string().contains("55 AA"));

    let d = dir(&[]);
    std::fs::remove_file(d.path().join("sdb5.vfat-ptcl-img.zst")).unwrap();
    assert!(open(d.path()).unwrap_err().to_string().contains("sdb5"));

    let d = dir(&[]);
    std::fs::write(d.path().join("parts"), "sdb1 sdb9\n").unwrap();
    assert!(open(d.path()).unwrap_err().to_string().contains("sdb9"));

    let e = tempfile::tempdir().unwrap();
    assert!(!is_image_dir(e.path()));
    assert!(open(e.path())
        .unwrap_err()
        .to_string()
        .contains("no Clonezilla image"));
}

#[test]
fn a_gpt_directory_needs_its_saved_gpt() {
    let d = dir(&[]);
    std::fs::write(
        d.path().join("sdb-pt.sf"),
        "label: gpt\nunit: sectors\n\n/dev/sdb1 : start=2048, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    )
    .unwrap();
    std::fs::write(d.path().join("parts"), "sdb1\n").unwrap();
    assert!(open(d.path()).unwrap_err().to_string().contains("gpt-1st"));
    std::fs::write(d.path().join("sdb-gpt-1st"), vec![0u8; 17408]).unwrap();
    assert!(open(d.path())
        .unwrap_err()
        .to_string()
        .contains("GPT header"));
}
