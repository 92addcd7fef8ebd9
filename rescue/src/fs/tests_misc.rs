//! Swap, the unsupported kinds, the map helpers, that the poisoned-copy method does catch a missed
//! block, and fuzzing: random bytes and randomly damaged real images never panic a parser.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::testutil::*;
use super::{used_map, FsError, UsedMap};
use crate::detect::FsKind;

#[test]
fn swap_keeps_only_the_header_page() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "swap.img", 64 << 20);
    run(tool("mkswap").arg(&img));
    let map = map_ok(&img, FsKind::Swap);
    assert_eq!(map.ranges, vec![0..4096]);
    let img = sparse(dir.path(), "swap64k.img", 64 << 20);
    run(tool("mkswap").args(["-p", "65536"]).arg(&img));
    assert_eq!(map_ok(&img, FsKind::Swap).ranges, vec![0..65536]);

    // A hibernation image replaces the signature: all of it must be captured.
    patch(&img, 65536 - 10, b"S1SUSPEND\0");
    let e = expect_unsupported(map_file(&img, FsKind::Swap), "hibernation");
    assert!(e.contains("hibernation"), "{e}");
    patch(&img, 65536 - 10, b"NOTASWAP!!");
    expect_inconsistent(map_file(&img, FsKind::Swap), "no signature");
}

#[test]
fn unsupported_kinds_say_why() {
    for kind in [
        FsKind::Xfs,
        FsKind::Btrfs,
        FsKind::Luks,
        FsKind::Bitlocker,
        FsKind::Lvm,
    ] {
        let e = used_map(&mut Cursor::new(vec![0u8; 4096]), 4096, kind).unwrap_err();
        assert!(matches!(e, FsError::Unsupported { .. }), "{kind:?}: {e:?}");
        assert!(e.to_string().starts_with("no used-block map for"), "{e}");
        assert_eq!(e.fs(), Some(kind));
    }
    let e = used_map(&mut Cursor::new(vec![0u8; 4096]), 4096, FsKind::Xfs).unwrap_err();
    assert!(e.to_string().contains("XFS"), "{e}");
}

#[test]
fn map_helpers() {
    let whole = UsedMap::whole(10_000, FsKind::Xfs);
    assert_eq!(
        whole.iter_aligned(4096).collect::<Vec<_>>(),
        vec![0..4096, 4096..8192, 8192..10_000]
    );
    assert!(whole.contains(9_999) && !whole.contains(10_000));
    let mut m = whole.clone();
    m.ranges = vec![100..200, 5000..5001];
    m.used_bytes = 101;
    assert!(m.contains(100) && !m.contains(200) && m.contains(5000));
    assert_eq!(
        m.used_within(150..5001).collect::<Vec<_>>(),
        vec![150..200, 5000..5001]
    );
    assert_eq!(
        m.iter_aligned(4096).collect::<Vec<_>>(),
        vec![0..4096, 4096..8192]
    );
    assert_eq!(UsedMap::whole(0, FsKind::Xfs).iter_aligned(512).count(), 0);
}

fn tree_matches(root: &Path, files: &BTreeMap<String, Vec<u8>>) -> bool {
    files
        .iter()
        .all(|(rel, data)| std::fs::read(root.join(rel)).is_ok_and(|d| d == *data))
}

/// The checks the per-filesystem tests rely on must fail when a map misses used blocks.
#[test]
fn a_map_missing_used_blocks_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let files = populate(&dir.path().join("src"), 51, 1);
    let img = sparse(dir.path(), "e.img", 16 << 20);
    run(tool("mkfs.ext2")
        .args(["-q", "-F", "-b", "1024", "-d"])
        .arg(dir.path().join("src"))
        .arg(&img));
    let mut map = map_ok(&img, FsKind::Ext2);
    // Drop 64 KiB from the middle of the largest range.
    let i = (0..map.ranges.len())
        .max_by_key(|&i| map.ranges[i].end - map.ranges[i].start)
        .unwrap();
    let r = map.ranges[i].clone();
    let mid = (r.start + r.end) / 2 / 1024 * 1024;
    map.ranges.splice(i..=i, [r.start..mid, mid + 65536..r.end]);
    let copy = dir.path().join("copy.img");
    poisoned_copy(&img, &map, &copy);
    let (code, _) = run_status(tool("e2fsck").arg("-fn").arg(&copy));
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let _ = run_status(
        tool("debugfs")
            .arg("-R")
            .arg(format!("rdump /data {}", out.display()))
            .arg(&copy),
    );
    assert!(
        code != 0 || !tree_matches(&out, &files),
        "64 KiB of used blocks went missing unnoticed"
    );
}

/// Small real images of every mapped kind, made once for the fuzzers.
fn samples() -> &'static Vec<(FsKind, Vec<u8>)> {
    static SAMPLES: OnceLock<Vec<(FsKind, Vec<u8>)>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let mut make = |kind: FsKind, size: u64, cmd: &str, args: &[&str]| {
            let img = sparse(dir.path(), &format!("{cmd}{}.img", out.len()), size);
            run(tool(cmd).args(args).arg(&img));
            out.push((kind, std::fs::read(&img).unwrap()));
        };
        make(
            FsKind::Ext2,
            2 << 20,
            "mkfs.ext2",
            &["-q", "-F", "-b", "1024", "-g", "1024"],
        );
        make(
            FsKind::Ext4,
            4 << 20,
            "mkfs.ext4",
            &["-q", "-F", "-O", "^metadata_csum,uninit_bg", "-g", "1024"],
        );
        make(FsKind::Vfat, 2 << 20, "mkfs.vfat", &["-F", "12"]);
        make(FsKind::Vfat, 16 << 20, "mkfs.vfat", &["-F", "16"]);
        make(FsKind::Exfat, 8 << 20, "mkfs.exfat", &["-b", "64K"]);
        make(FsKind::Ntfs, 4 << 20, "mkntfs", &["-F", "-Q", "-c", "1024"]);
        make(FsKind::Swap, 64 << 10, "mkswap", &[]);
        out
    })
}

/// A device that reads `base` with some bytes replaced.
struct Damaged<'a> {
    base: &'a [u8],
    patches: BTreeMap<u64, u8>,
    pos: u64,
}

impl Read for Damaged<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = self.pos.min(self.base.len() as u64) as usize;
        let n = buf.len().min(self.base.len() - start);
        buf[..n].copy_from_slice(&self.base[start..start + n]);
        for (&at, &b) in self.patches.range(start as u64..(start + n) as u64) {
            buf[(at - start as u64) as usize] = b;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Damaged<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.base.len() as u64 + d as u64,
            SeekFrom::Current(d) => self.pos.wrapping_add(d as u64),
        };
        Ok(self.pos)
    }
}

fn any_kind() -> impl Strategy<Value = FsKind> {
    prop_oneof![
        Just(FsKind::Ext2),
        Just(FsKind::Ext4),
        Just(FsKind::Vfat),
        Just(FsKind::Exfat),
        Just(FsKind::Ntfs),
        Just(FsKind::Swap),
    ]
}

/// Plants the magic a parser checks first, so random bytes get past it.
fn with_magic(kind: FsKind, mut b: Vec<u8>) -> Vec<u8> {
    let mut put = |at: usize, m: &[u8]| {
        if b.len() >= at + m.len() {
            b[at..at + m.len()].copy_from_slice(m);
        }
    };
    match kind {
        FsKind::Ext2 | FsKind::Ext4 => {
            put(1024 + 0x38, &[0x53, 0xEF, 1, 0]);
            put(1024 + 0x18, &[0, 0, 0, 0]);
        }
        FsKind::Exfat => {
            put(3, b"EXFAT   ");
            put(11, &[0; 53]);
        }
        FsKind::Ntfs => put(3, b"NTFS    "),
        FsKind::Vfat => put(11, &[0, 2, 1, 1, 0, 2]),
        _ => put(4086, b"SWAPSPACE2"),
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(kind in any_kind(), bytes in proptest::collection::vec(any::<u8>(), 0..20_000),
                                magic in any::<bool>(), extra in 0u64..100_000) {
        let bytes = if magic { with_magic(kind, bytes) } else { bytes };
        // The claimed size may exceed what can be read: reads then fail as I/O errors.
        let size = bytes.len() as u64 + extra % 3 * extra;
        if let Ok(map) = used_map(&mut Cursor::new(bytes), size, kind) {
            check_shape(&map);
        }
    }

    #[test]
    fn damaged_real_images_never_panic(which in 0usize..7, hits in proptest::collection::vec((any::<bool>(), any::<u64>(), any::<u8>()), 1..40),
                                       cut in any::<u16>()) {
        let (kind, base) = &samples()[which];
        let len = base.len() as u64;
        let patches = hits.iter().map(|&(near, at, b)| (if near { at % 65536 } else { at % len }, b)).collect();
        let size = if cut % 4 == 0 { len - u64::from(cut) * 16 % len } else { len };
        let mut dev = Damaged { base, patches, pos: 0 };
        if let Ok(map) = used_map(&mut dev, size, *kind) {
            check_shape(&map);
        }
    }
}

#[test]
fn undamaged_samples_map() {
    for (kind, bytes) in samples() {
        let map = used_map(&mut Cursor::new(bytes), bytes.len() as u64, *kind).unwrap();
        check_shape(&map);
    }
}
