//! NTFS maps against volumes made by mkntfs and filled by ntfscp (no mount needed): a copy that
//! keeps only the mapped bytes (garbage elsewhere) must pass `ntfsfix -n` and give every file back
//! through `ntfscat`, and the map must hold exactly the clusters ntfscluster counts as used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ntfs::{attributes, fixup};
use super::testutil::*;
use crate::detect::FsKind;

struct Made {
    dir: tempfile::TempDir,
    img: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
}

fn make(size: u64, opts: &[&str], seed: u64) -> Made {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let tree = populate(&src, seed, 2);
    let img = sparse(dir.path(), "ntfs.img", size);
    run(tool("mkntfs").args(["-F", "-Q"]).args(opts).arg(&img));
    // ntfscp needs existing directories, so the tree is flattened into the root.
    let mut files = BTreeMap::new();
    for (rel, data) in tree {
        let name = rel.replace('/', "_");
        run(tool("ntfscp")
            .arg(&img)
            .arg(src.join(&rel))
            .arg(format!("/{name}")));
        files.insert(name, data);
    }
    Made { dir, img, files }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn check(name: &str, m: &Made) {
    let map = map_ok(&m.img, FsKind::Ntfs);
    report(name, &map);
    let out = run(tool("ntfscluster").arg("-i").arg(&m.img));
    let free: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("clusters of free space"))
        .and_then(|v| v.trim_start_matches([' ', ':']).trim().parse().ok())
        .unwrap_or_else(|| panic!("no free cluster count from ntfscluster:\n{out}"));
    let boot = read_at(&m.img, 0, 512);
    let spc = u64::from(boot[13]);
    let cs = map.block_size;
    let clusters = u64_at(&boot, 0x28) / spc;
    let outside: u64 = map
        .used_within(clusters * cs..map.size)
        .map(|r| r.end - r.start)
        .sum();
    assert_eq!(
        map.used_bytes - outside,
        (clusters - free) * cs,
        "{name}: clusters in the map vs ntfscluster's used clusters"
    );
    assert!(
        map.used_bytes < map.size / 2,
        "{name}: map is not much smaller than the volume"
    );

    let copy = m.dir.path().join("copy.img");
    poisoned_copy(&m.img, &map, &copy);
    let out = run(tool("ntfsfix").arg("-n").arg(&copy));
    assert!(
        out.contains("processed successfully"),
        "{name}: ntfsfix on the copy:\n{out}"
    );
    for (file, data) in &m.files {
        let o = tool("ntfscat")
            .arg(&copy)
            .arg(format!("/{file}"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ntfscat {file}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.stdout == *data, "{name}: {file} differs in the copy");
    }
}

#[test]
fn ntfs_4k_clusters() {
    check("NTFS 4K clusters", &make(64 << 20, &[], 31));
}

#[test]
fn ntfs_512_byte_clusters_records_straddle_clusters() {
    check("NTFS 512 B clusters", &make(64 << 20, &["-c", "512"], 32));
}

#[test]
fn ntfs_4k_sectors_and_64k_clusters() {
    check(
        "NTFS 4Kn",
        &make(64 << 20, &["-s", "4096", "-c", "4096"], 33),
    );
    check("NTFS 64K clusters", &make(128 << 20, &["-c", "65536"], 34));
}

#[test]
fn empty_ntfs_map_is_small() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "n.img", 1 << 30);
    run(tool("mkntfs").args(["-F", "-Q"]).arg(&img));
    let map = map_ok(&img, FsKind::Ntfs);
    report("empty NTFS 1 GiB", &map);
    assert!(map.used_bytes < map.size / 20);
    // The backup boot sector, past the last cluster, is kept.
    assert!(map.contains(map.size - 1));
}

/// Byte offset of MFT record `n` (the first records are contiguous at the MFT cluster).
fn record_at(img: &Path, n: u64) -> (u64, u64) {
    let boot = read_at(img, 0, 512);
    let cs = u64::from(u16::from_le_bytes([boot[11], boot[12]])) * u64::from(boot[13]);
    let per = boot[0x40] as i8;
    let rec = if per > 0 {
        cs * per as u64
    } else {
        1 << (-per)
    };
    (u64_at(&boot, 0x30) * cs + n * rec, rec)
}

#[test]
fn damage_and_dirty_state_are_detected() {
    let m = make(64 << 20, &[], 35);
    let img = &m.img;
    let fresh = std::fs::read(img).unwrap();
    let restore = || std::fs::write(img, &fresh).unwrap();
    let (rec6, _) = record_at(img, 6);

    patch(img, rec6, b"FILX");
    let e = expect_inconsistent(map_file(img, FsKind::Ntfs), "record signature");
    assert!(e.contains("record 6"), "{e}");
    restore();

    // A torn write: the end of the record's first 512 bytes lost its update sequence number.
    let tail = read_at(img, rec6 + 510, 2);
    patch(img, rec6 + 510, &[tail[0] ^ 0xFF, tail[1]]);
    let e = expect_inconsistent(map_file(img, FsKind::Ntfs), "fixup");
    assert!(e.contains("torn"), "{e}");
    restore();

    // Mark $Volume dirty, as Windows does while mounted or after a crash.
    let (rec3, size) = record_at(img, 3);
    let mut rec = read_at(img, rec3, size as usize);
    fixup(&mut rec).unwrap();
    let start = rec.as_ptr() as usize;
    let (_, info) = attributes(&rec).find(|(t, _)| *t == 0x70).unwrap();
    let value =
        info.as_ptr() as usize - start + usize::from(u16::from_le_bytes([info[0x14], info[0x15]]));
    assert!(
        (value + 10) % 512 < 510,
        "flags sit on an update sequence slot"
    );
    patch(img, rec3 + value as u64 + 10, &[0x01]);
    let e = expect_unsupported(map_file(img, FsKind::Ntfs), "dirty");
    assert!(e.contains("dirty"), "{e}");
    restore();

    std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    expect_inconsistent(map_file(img, FsKind::Ntfs), "truncated partition");
    restore();
    map_ok(img, FsKind::Ntfs);
}
