//! ext2/3/4 maps against filesystems made by mke2fs: a copy that keeps only the mapped blocks (and
//! garbage everywhere else) must pass `e2fsck -fn` and give back every file through `debugfs`, and
//! the map must count exactly the blocks dumpe2fs reports in use.

use std::path::{Path, PathBuf};

use super::testutil::*;
use crate::detect::FsKind;

struct Made {
    _dir: tempfile::TempDir,
    img: PathBuf,
    files: std::collections::BTreeMap<String, Vec<u8>>,
    work: PathBuf,
}

fn make(mkfs: &str, size: u64, opts: &[&str], seed: u64) -> Made {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = populate(&src, seed, 2);
    let img = sparse(dir.path(), "fs.img", size);
    run(tool(mkfs)
        .args(["-q", "-F"])
        .args(opts)
        .arg("-d")
        .arg(&src)
        .arg(&img));
    Made {
        work: dir.path().to_path_buf(),
        _dir: dir,
        img,
        files,
    }
}

/// (block size, block count, free blocks summed over the groups) from dumpe2fs.
fn dumpe2fs(img: &Path) -> (u64, u64, u64) {
    let out = run(tool("dumpe2fs").arg(img));
    let field = |name: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in dumpe2fs"));
        line[name.len()..].trim().parse().unwrap()
    };
    let bs = field("Block size:");
    // bigalloc filesystems count free clusters per group.
    let ratio = if out.lines().any(|l| l.starts_with("Cluster size:")) {
        field("Cluster size:") / bs
    } else {
        1
    };
    let free: u64 = out
        .lines()
        .filter(|l| l.contains(" free blocks, ") || l.contains(" free clusters, "))
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap() * ratio)
        .sum();
    (bs, field("Block count:"), free)
}

/// The whole property for one filesystem; returns the map for further checks.
fn check(name: &str, m: &Made, kind: FsKind) -> super::UsedMap {
    let map = map_ok(&m.img, kind);
    report(name, &map);
    let (bs, blocks, free) = dumpe2fs(&m.img);
    // Block 0 lies outside every group when blocks are 1 KiB, but it is not free either.
    let cluster = map.block_size;
    let expected = ((blocks - free) * bs).div_ceil(cluster) * cluster;
    assert_eq!(
        map.used_bytes, expected,
        "{name}: map vs dumpe2fs used blocks"
    );
    assert!(
        map.used_bytes < map.size / 2,
        "{name}: map is not much smaller than the filesystem"
    );

    let copy = m.work.join("copy.img");
    poisoned_copy(&m.img, &map, &copy);
    let out = run(tool("e2fsck").args(["-fn"]).arg(&copy));
    assert!(
        !out.contains("Fix?") && !out.contains("ERROR"),
        "{name}: e2fsck on the copy:\n{out}"
    );
    let out_dir = m.work.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let cmd = format!("rdump /data {}", out_dir.display());
    run(tool("debugfs").arg("-R").arg(cmd).arg(&copy));
    assert_tree(&out_dir, &m.files);
    map
}

#[test]
fn ext2_1k_blocks() {
    let m = make("mkfs.ext2", 32 << 20, &["-b", "1024"], 1);
    check("ext2 1K", &m, FsKind::Ext2);
}

#[test]
fn ext3_4k_blocks_many_groups() {
    let m = make("mkfs.ext3", 128 << 20, &["-b", "4096", "-g", "8192"], 2);
    check("ext3 4K", &m, FsKind::Ext3);
}

#[test]
fn ext4_default_features_with_uninit_groups_and_deletions() {
    let m = make("mkfs.ext4", 256 << 20, &["-b", "4096", "-g", "8192"], 3);
    let before = map_ok(&m.img, FsKind::Ext4);
    // Freed blocks must leave the map.
    run(tool("debugfs")
        .args(["-w", "-R", "rm /data/sub/F1X9.BIN"])
        .arg(&m.img));
    let mut m = m;
    assert!(m.files.remove("data/sub/F1X9.BIN").is_some());
    let map = check("ext4 default", &m, FsKind::Ext4);
    assert!(
        map.used_bytes + (2 << 20) <= before.used_bytes,
        "deleting 2 MiB did not shrink the map"
    );
}

#[test]
fn ext4_without_flex_bg_and_crc16_descriptors() {
    let m = make(
        "mkfs.ext4",
        128 << 20,
        &["-O", "^flex_bg,^metadata_csum,uninit_bg", "-g", "4096"],
        4,
    );
    check("ext4 ^flex_bg uninit_bg", &m, FsKind::Ext4);
}

#[test]
fn ext4_32bit_descriptors() {
    let m = make(
        "mkfs.ext4",
        128 << 20,
        &["-b", "4096", "-O", "^64bit", "-g", "4096"],
        5,
    );
    check("ext4 ^64bit", &m, FsKind::Ext4);
}

#[test]
fn ext4_meta_bg_1k() {
    let m = make(
        "mkfs.ext4",
        64 << 20,
        &["-b", "1024", "-g", "1024", "-O", "meta_bg,^resize_inode"],
        6,
    );
    check("ext4 meta_bg 1K", &m, FsKind::Ext4);
}

#[test]
fn ext4_sparse_super2_and_no_sparse_super() {
    let m = make(
        "mkfs.ext4",
        128 << 20,
        &["-g", "2048", "-O", "sparse_super2"],
        7,
    );
    check("ext4 sparse_super2", &m, FsKind::Ext4);
    let m = make(
        "mkfs.ext4",
        128 << 20,
        &["-g", "2048", "-O", "^sparse_super,^resize_inode"],
        8,
    );
    check("ext4 ^sparse_super", &m, FsKind::Ext4);
}

#[test]
fn ext4_bigalloc() {
    let m = make(
        "mkfs.ext4",
        256 << 20,
        &["-O", "bigalloc", "-C", "16384"],
        9,
    );
    check("ext4 bigalloc", &m, FsKind::Ext4);
}

#[test]
fn empty_ext4_map_is_small() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "e.img", 1 << 30);
    run(tool("mkfs.ext4").args(["-q", "-F"]).arg(&img));
    let map = map_ok(&img, FsKind::Ext4);
    report("empty ext4 1 GiB", &map);
    assert!(map.used_bytes < map.size / 20);
}

/// The ext2 1 KiB layout: group descriptor table at block 2, descriptors of 32 bytes.
#[test]
fn ext2_damage_is_detected() {
    let m = make("mkfs.ext2", 16 << 20, &["-b", "1024"], 10);
    let img = &m.img;
    let fresh = std::fs::read(img).unwrap();
    let restore = || std::fs::write(img, &fresh).unwrap();
    let sb = 1024u64;
    let gdt = 2048u64;

    patch(img, sb + 0x38, &[0, 0]);
    expect_inconsistent(map_file(img, FsKind::Ext2), "bad magic");
    restore();

    patch(img, sb + 0x04, &(1u32 << 30).to_le_bytes());
    let e = expect_inconsistent(
        map_file(img, FsKind::Ext2),
        "blocks_count past the partition",
    );
    assert!(e.contains("do not fit"), "{e}");
    restore();

    // The descriptor claims more used blocks than its bitmap marks.
    let free = u16::from_le_bytes(read_at(img, gdt + 0xC, 2).try_into().unwrap());
    patch(img, gdt + 0xC, &(free - 1).to_le_bytes());
    let e = expect_inconsistent(map_file(img, FsKind::Ext2), "descriptor vs bitmap");
    assert!(e.contains("group 0"), "{e}");
    restore();

    // A used block vanishes from group 1's bitmap.
    let bitmap = u32::from_le_bytes(read_at(img, gdt + 32, 4).try_into().unwrap());
    patch(img, u64::from(bitmap) * 1024, &[0]);
    expect_inconsistent(map_file(img, FsKind::Ext2), "bitmap cleared");
    restore();

    patch(img, sb + 0x60, &(0x8000_0002u32).to_le_bytes());
    expect_unsupported(map_file(img, FsKind::Ext2), "unknown incompat feature");
    restore();

    patch(img, sb + 0x60, &(0x6u32).to_le_bytes());
    let e = expect_unsupported(map_file(img, FsKind::Ext2), "needs_recovery");
    assert!(e.contains("journal"), "{e}");
    restore();

    patch(img, sb + 0x3A, &0u16.to_le_bytes());
    expect_unsupported(map_file(img, FsKind::Ext2), "not clean");
    restore();

    // A partition shorter than the filesystem.
    std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    expect_inconsistent(map_file(img, FsKind::Ext2), "truncated partition");
    restore();
    map_ok(img, FsKind::Ext2);
}

#[test]
fn ext4_checksums_catch_damage() {
    let m = make("mkfs.ext4", 64 << 20, &["-b", "4096", "-g", "4096"], 11);
    let img = &m.img;
    let fresh = std::fs::read(img).unwrap();
    let restore = || std::fs::write(img, &fresh).unwrap();
    // 4 KiB blocks: superblock at 1024, GDT in block 1, 64-byte descriptors.
    patch(img, 1024 + 0x78, b"renamed");
    expect_inconsistent(map_file(img, FsKind::Ext4), "superblock checksum");
    restore();

    patch(img, 4096 + 64 + 0xC, &[0x55]);
    let e = expect_inconsistent(map_file(img, FsKind::Ext4), "descriptor checksum");
    assert!(e.contains("descriptor 1"), "{e}");
    restore();

    let bitmap = u32::from_le_bytes(read_at(img, 4096, 4).try_into().unwrap());
    let at = u64::from(bitmap) * 4096 + 100;
    let b = read_at(img, at, 1)[0];
    patch(img, at, &[b ^ 0x10]);
    let e = expect_inconsistent(map_file(img, FsKind::Ext4), "bitmap checksum");
    assert!(e.contains("checksum"), "{e}");
    restore();
    map_ok(img, FsKind::Ext4);
}

/// A group whose bitmap was never initialised may hold only metadata: a descriptor that counts
/// more used blocks than that must not be trusted (its checksum recomputed, so only the count is
/// wrong).
#[test]
fn uninit_group_claiming_more_than_metadata_is_inconsistent() {
    use crate::units::crc::crc16;
    let m = make(
        "mkfs.ext4",
        64 << 20,
        &["-O", "^flex_bg,^metadata_csum,uninit_bg", "-g", "2048"],
        12,
    );
    let sb = read_at(&m.img, 1024, 1024);
    let le16 = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let bs = 1024u64 << sb[0x18];
    let desc_size = if sb[0x60] & 0x80 != 0 {
        usize::from(le16(&sb, 0xFE))
    } else {
        32
    };
    let gdt = (if bs == 1024 { 2 } else { 1 }) * bs;
    let table = read_at(&m.img, gdt, bs as usize);
    let (group, desc) = table
        .chunks(desc_size)
        .enumerate()
        .find(|(_, d)| le16(d, 0x12) & 0x2 != 0)
        .expect("mke2fs made no BLOCK_UNINIT group");
    let mut desc = desc.to_vec();
    let free = le16(&desc, 0xC) - 1;
    desc[0xC..0xE].copy_from_slice(&free.to_le_bytes());
    let mut c = crc16(
        crc16(
            crc16(0xFFFF, &sb[0x68..0x78]),
            &(group as u32).to_le_bytes(),
        ),
        &desc[..0x1E],
    );
    c = crc16(c, &desc[0x20..]);
    desc[0x1E..0x20].copy_from_slice(&c.to_le_bytes());
    patch(&m.img, gdt + (group * desc_size) as u64, &desc);
    let e = expect_inconsistent(map_file(&m.img, FsKind::Ext4), "uninit group count");
    assert!(e.contains("uninitialised"), "{e}");
}
