//! FAT12/16/32 maps against filesystems made by mkfs.vfat and filled by mcopy: a copy that keeps
//! only the mapped bytes (garbage elsewhere) must pass `fsck.vfat -n` and give every file back
//! through `mcopy`, and the map must hold exactly the clusters fsck.vfat counts as used.

use std::path::{Path, PathBuf};

use super::testutil::*;
use crate::detect::FsKind;

struct Made {
    dir: tempfile::TempDir,
    img: PathBuf,
    files: std::collections::BTreeMap<String, Vec<u8>>,
}

fn make(size: u64, opts: &[&str], scale: usize, seed: u64) -> Made {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = populate(&src, seed, scale);
    let img = sparse(dir.path(), "fat.img", size);
    run(tool("mkfs.vfat").args(opts).arg(&img));
    run(tool("mcopy")
        .args(["-s", "-i"])
        .arg(&img)
        .arg(src.join("data"))
        .arg("::/"));
    Made { dir, img, files }
}

/// (used, total) clusters from `fsck.vfat -n`, failing on any complaint.
fn fsck(img: &Path) -> (u64, u64) {
    let out = run(tool("fsck.vfat").arg("-n").arg(img));
    let counts = out
        .split_whitespace()
        .find_map(|w| w.split_once('/').filter(|(a, _)| a.parse::<u64>().is_ok()))
        .unwrap_or_else(|| panic!("no cluster counts in fsck.vfat output:\n{out}"));
    (
        counts.0.parse().unwrap(),
        counts.1.trim_end_matches(',').parse().unwrap(),
    )
}

fn check(name: &str, m: &Made) -> super::UsedMap {
    let map = map_ok(&m.img, FsKind::Vfat);
    report(name, &map);
    let (used, _) = fsck(&m.img);
    let boot = read_at(&m.img, 0, 512);
    let bps = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let reserved = u64::from(u16::from_le_bytes([boot[14], boot[15]]));
    let root_entries = u64::from(u16::from_le_bytes([boot[17], boot[18]]));
    let fat16 = u64::from(u16::from_le_bytes([boot[22], boot[23]]));
    let fat = if fat16 != 0 {
        fat16
    } else {
        u64::from(u32::from_le_bytes(boot[36..40].try_into().unwrap()))
    };
    let meta =
        (reserved + u64::from(boot[16]) * fat) * bps + (root_entries * 32).div_ceil(bps) * bps;
    assert_eq!(
        (map.used_bytes - meta) / map.block_size,
        used,
        "{name}: clusters in the map vs fsck.vfat's used clusters"
    );
    assert!(
        map.used_bytes < map.size * 3 / 4,
        "{name}: map is not smaller than the filesystem"
    );

    let copy = m.dir.path().join("copy.img");
    poisoned_copy(&m.img, &map, &copy);
    fsck(&copy);
    let out = m.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    run(tool("mcopy")
        .args(["-s", "-n", "-i"])
        .arg(&copy)
        .arg("::/data")
        .arg(&out));
    assert_tree(&out, &m.files);
    map
}

#[test]
fn fat12() {
    let m = make(8 << 20, &["-F", "12"], 1, 21);
    check("FAT12", &m);
}

#[test]
fn fat16_with_deletions() {
    let mut m = make(64 << 20, &["-F", "16"], 2, 22);
    run(tool("mdel")
        .arg("-i")
        .arg(&m.img)
        .arg("::/data/sub/F1X9.BIN"));
    assert!(m.files.remove("data/sub/F1X9.BIN").is_some());
    check("FAT16", &m);
}

#[test]
fn fat32_small_clusters() {
    let m = make(64 << 20, &["-F", "32", "-s", "1"], 2, 23);
    let map = check("FAT32", &m);
    assert_eq!(map.block_size, 512);
}

#[test]
fn fat32_two_fats_one_copy_stale() {
    let m = make(512 << 20, &["-F", "32", "-s", "8"], 1, 24);
    // Zero the second FAT: the union must still keep everything.
    let boot = read_at(&m.img, 0, 512);
    let reserved = u64::from(u16::from_le_bytes([boot[14], boot[15]]));
    let fat = u64::from(u32::from_le_bytes(boot[36..40].try_into().unwrap()));
    let before = map_ok(&m.img, FsKind::Vfat);
    patch(&m.img, (reserved + fat) * 512 + 8, &vec![0u8; 4096]);
    let after = map_ok(&m.img, FsKind::Vfat);
    assert_eq!(before.ranges, after.ranges);
    assert!(
        after.notes.iter().any(|n| n.contains("FAT copies differ")),
        "{:?}",
        after.notes
    );
}

#[test]
fn bad_clusters_are_noted_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "fat.img", 16 << 20);
    let list = dir.path().join("bad.txt");
    std::fs::write(&list, "9000\n9001\n").unwrap();
    run(tool("mkfs.vfat")
        .args(["-F", "16", "-l"])
        .arg(&list)
        .arg(&img));
    let map = map_ok(&img, FsKind::Vfat);
    report("FAT16 with bad blocks", &map);
    assert!(
        map.notes.iter().any(|n| n.contains("marked bad")),
        "{:?}",
        map.notes
    );
    assert!(!map.contains(9000 * 1024) && !map.contains(9001 * 1024 + 1023));
    let copy = dir.path().join("copy.img");
    poisoned_copy(&img, &map, &copy);
    fsck(&copy);
}

#[test]
fn damage_is_detected() {
    let m = make(64 << 20, &["-F", "16"], 1, 25);
    let img = &m.img;
    let fresh = std::fs::read(img).unwrap();
    let restore = || std::fs::write(img, &fresh).unwrap();

    patch(img, 11, &3u16.to_le_bytes());
    expect_inconsistent(map_file(img, FsKind::Vfat), "bytes per sector");
    restore();

    // FAT32-shaped BPB on a volume whose cluster count makes it FAT16.
    let fat = read_at(img, 22, 2);
    patch(img, 17, &[0, 0]);
    patch(img, 22, &[0, 0]);
    patch(img, 36, &[fat[0], fat[1], 0, 0]);
    let e = expect_inconsistent(map_file(img, FsKind::Vfat), "type mismatch");
    assert!(e.contains("FAT16"), "{e}");
    restore();

    let reserved = u64::from(u16::from_le_bytes(read_at(img, 14, 2).try_into().unwrap()));
    patch(img, reserved * 512 + 2 * 3, &0xFFE0u16.to_le_bytes());
    let e = expect_inconsistent(map_file(img, FsKind::Vfat), "entry out of range");
    assert!(e.contains("cluster 3"), "{e}");
    restore();

    std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    expect_inconsistent(map_file(img, FsKind::Vfat), "truncated partition");
    restore();
    map_ok(img, FsKind::Vfat);
}

#[test]
fn empty_fat32_map_is_small() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "fat.img", 1 << 30);
    run(tool("mkfs.vfat").args(["-F", "32"]).arg(&img));
    let map = map_ok(&img, FsKind::Vfat);
    report("empty FAT32 1 GiB", &map);
    assert!(map.used_bytes < map.size / 50);
}
