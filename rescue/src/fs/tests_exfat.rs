//! exFAT maps against volumes made by mkfs.exfat. exfatprogs has no tool that adds files without
//! mounting, so the test writes files itself (directory entry sets with checksums and name hashes,
//! both contiguous "NoFatChain" files and FAT-chained fragmented ones); `fsck.exfat -n` on the
//! original vouches for that writer. A copy that keeps only the mapped bytes (garbage elsewhere)
//! must then pass `fsck.exfat -n` and give the files back; exfat2img's metadata-only image and
//! dump.exfat's free count cross-check the map.

use std::path::{Path, PathBuf};

use super::testutil::*;
use crate::detect::FsKind;

pub(super) struct Geo {
    cluster: u64,
    fat: u64,
    heap: u64,
    count: u64,
    root: u64,
}

pub(super) fn geo(img: &Path) -> Geo {
    let b = read_at(img, 0, 512);
    let u32_at = |o: usize| u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()));
    let bps = 1u64 << b[108];
    Geo {
        cluster: bps << b[109],
        fat: u32_at(80) * bps,
        heap: u32_at(88) * bps,
        count: u32_at(92),
        root: u32_at(96),
    }
}

impl Geo {
    fn at(&self, c: u64) -> u64 {
        self.heap + (c - 2) * self.cluster
    }
}

/// Root directory entries as (slot offset, 32 bytes), up to the end marker (one cluster: mkfs's).
fn root_entries(img: &Path, g: &Geo) -> Vec<(u64, Vec<u8>)> {
    let dir = read_at(img, g.at(g.root), g.cluster as usize);
    dir.chunks(32)
        .enumerate()
        .take_while(|(_, e)| e[0] != 0)
        .map(|(i, e)| (g.at(g.root) + 32 * i as u64, e.to_vec()))
        .collect()
}

fn bitmap_entry(img: &Path, g: &Geo) -> (u64, usize) {
    let e = root_entries(img, g)
        .into_iter()
        .find(|(_, e)| e[0] == 0x81)
        .unwrap()
        .1;
    let first = u64::from(u32::from_le_bytes(e[20..24].try_into().unwrap()));
    (
        first,
        u64::from_le_bytes(e[24..32].try_into().unwrap()) as usize,
    )
}

fn name_hash(name: &[u16]) -> u16 {
    let mut h = 0u16;
    for &c in name {
        for b in c.to_le_bytes() {
            h = h.rotate_right(1).wrapping_add(u16::from(b));
        }
    }
    h
}

/// Adds `name` (upper-case ASCII) with `data` to the root directory; `chained` files take every
/// other free cluster and record the chain in the FAT, the others are contiguous without a chain.
pub(super) fn add_file(img: &Path, g: &Geo, name: &str, data: &[u8], chained: bool) {
    let (bm_first, bm_len) = bitmap_entry(img, g);
    let mut bitmap = read_at(img, g.at(bm_first), bm_len);
    let need = (data.len() as u64).div_ceil(g.cluster);
    let free = |bm: &[u8], c: u64| bm[((c - 2) / 8) as usize] & (1 << ((c - 2) % 8)) == 0;
    let mut clusters = Vec::new();
    let mut c = 2;
    while (clusters.len() as u64) < need {
        assert!(c < g.count + 2, "volume full");
        if !chained && clusters.last().is_some_and(|&l| l + 1 != c) {
            clusters.clear();
        }
        if free(&bitmap, c) {
            clusters.push(c);
            c += u64::from(chained);
        } else {
            clusters.clear();
        }
        c += 1;
    }
    for (i, &c) in clusters.iter().enumerate() {
        bitmap[((c - 2) / 8) as usize] |= 1 << ((c - 2) % 8);
        let chunk = &data[i * g.cluster as usize..((i + 1) * g.cluster as usize).min(data.len())];
        patch(img, g.at(c), chunk);
        if chained {
            let next = clusters.get(i + 1).map_or(u32::MAX, |&n| n as u32);
            patch(img, g.fat + 4 * c, &next.to_le_bytes());
        }
    }
    patch(img, g.at(bm_first), &bitmap);

    let utf16: Vec<u16> = name.encode_utf16().collect();
    let name_entries = utf16.len().div_ceil(15);
    let mut set = vec![0u8; 32 * (2 + name_entries)];
    set[0] = 0x85;
    set[1] = (1 + name_entries) as u8;
    set[4] = 0x20; // archive
    let stamp: u32 = (((2024 - 1980) << 9 | 1 << 5 | 1) << 16) | (12 << 11);
    for off in [8, 12, 16] {
        set[off..off + 4].copy_from_slice(&stamp.to_le_bytes());
    }
    let s = &mut set[32..64];
    s[0] = 0xC0;
    // AllocationPossible, plus NoFatChain for contiguous files.
    s[1] = if data.is_empty() || chained {
        0x01
    } else {
        0x03
    };
    s[3] = utf16.len() as u8;
    s[4..6].copy_from_slice(&name_hash(&utf16).to_le_bytes());
    s[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
    s[20..24].copy_from_slice(&(clusters.first().copied().unwrap_or(0) as u32).to_le_bytes());
    s[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
    for (i, part) in utf16.chunks(15).enumerate() {
        let e = &mut set[64 + 32 * i..96 + 32 * i];
        e[0] = 0xC1;
        for (j, ch) in part.iter().enumerate() {
            e[2 + 2 * j..4 + 2 * j].copy_from_slice(&ch.to_le_bytes());
        }
    }
    let mut sum = 0u16;
    for (i, &b) in set.iter().enumerate() {
        if i != 2 && i != 3 {
            sum = sum.rotate_right(1).wrapping_add(u16::from(b));
        }
    }
    set[2..4].copy_from_slice(&sum.to_le_bytes());
    let slot = root_entries(img, g)
        .last()
        .map_or(g.at(g.root), |(o, _)| o + 32);
    patch(img, slot, &set);
}

/// Reads `name` back through the directory and (for chained files) the FAT of `img`.
fn read_file(img: &Path, g: &Geo, name: &str) -> Vec<u8> {
    let entries = root_entries(img, g);
    let utf16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let i = entries
        .iter()
        .position(|(_, e)| {
            e[0] == 0xC1 && e[2..2 + utf16.len().min(30)] == utf16[..utf16.len().min(30)]
        })
        .unwrap_or_else(|| panic!("{name} not in the copy's root directory"));
    let s = &entries[i - 1].1;
    let len = u64::from_le_bytes(s[24..32].try_into().unwrap()) as usize;
    let mut c = u64::from(u32::from_le_bytes(s[20..24].try_into().unwrap()));
    let mut out = Vec::new();
    while out.len() < len {
        out.extend(read_at(
            img,
            g.at(c),
            (len - out.len()).min(g.cluster as usize),
        ));
        c = if s[1] & 0x02 != 0 {
            c + 1
        } else {
            u64::from(u32::from_le_bytes(
                read_at(img, g.fat + 4 * c, 4).try_into().unwrap(),
            ))
        };
    }
    out
}

fn fsck(img: &Path) {
    let out = run(tool("fsck.exfat").arg("-n").arg(img));
    assert!(out.contains("clean"), "fsck.exfat:\n{out}");
}

pub(super) fn make(size: u64, opts: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse(dir.path(), "exfat.img", size);
    run(tool("mkfs.exfat").args(opts).arg(&img));
    (dir, img)
}

/// Every non-zero sector exfat2img keeps (the metadata exfatprogs knows of) is in the map.
fn cross_check_exfat2img(dir: &Path, img: &Path, map: &super::UsedMap) {
    let meta = dir.join("meta.img");
    run(tool("exfat2img").arg("-o").arg(&meta).arg(img));
    let bytes = std::fs::read(&meta).unwrap();
    for (i, sector) in bytes.chunks(512).enumerate() {
        if sector.iter().any(|&b| b != 0) {
            let at = i as u64 * 512;
            assert!(
                map.used_within(at..at + 512)
                    .map(|r| r.end - r.start)
                    .sum::<u64>()
                    == 512,
                "exfat2img keeps sector {i}, the map does not"
            );
        }
    }
}

#[test]
fn exfat_with_contiguous_and_chained_files() {
    let (dir, img) = make(64 << 20, &[]);
    let g = geo(&img);
    let mut rng = XorShift(41);
    let files: Vec<(String, Vec<u8>, bool)> = [
        (0usize, false),
        (1, false),
        (4097, true),
        (3 << 20, false),
        (700_001, true),
        (65_536, false),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(size, chained))| (format!("FILE{i}.BIN"), rng.bytes(size), chained))
    .collect();
    for (name, data, chained) in &files {
        add_file(&img, &g, name, data, *chained);
    }
    fsck(&img);

    let map = map_ok(&img, FsKind::Exfat);
    report("exFAT with files", &map);
    let out = run(tool("dump.exfat").arg(&img));
    let field = |f: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let used = field("Total Clusters:") - field("Free Clusters:");
    let heap: u64 = map
        .used_within(g.heap..map.size)
        .map(|r| r.end - r.start)
        .sum();
    assert_eq!(heap / g.cluster, used, "clusters in the map vs dump.exfat");
    assert!(map.used_bytes < map.size / 4);
    cross_check_exfat2img(dir.path(), &img, &map);

    let copy = dir.path().join("copy.img");
    poisoned_copy(&img, &map, &copy);
    fsck(&copy);
    for (name, data, _) in &files {
        assert!(
            read_file(&copy, &g, name) == *data,
            "{name} differs in the copy"
        );
    }
}

#[test]
fn empty_exfat_variants() {
    for opts in [
        &[][..],
        &["-c", "512"][..],
        &["--pack-bitmap"][..],
        &["-b", "4K"][..],
        &["-c", "1M"][..],
    ] {
        let (dir, img) = make(128 << 20, opts);
        let map = map_ok(&img, FsKind::Exfat);
        report(&format!("empty exFAT {opts:?}"), &map);
        assert!(map.used_bytes < map.size / 10, "{opts:?}");
        cross_check_exfat2img(dir.path(), &img, &map);
        let copy = dir.path().join("copy.img");
        poisoned_copy(&img, &map, &copy);
        fsck(&copy);
    }
}

#[test]
fn damage_and_dirty_state_are_detected() {
    let (_dir, img) = make(64 << 20, &[]);
    let fresh = std::fs::read(&img).unwrap();
    let restore = || std::fs::write(&img, &fresh).unwrap();
    let g = geo(&img);

    patch(&img, 120, &[0x77]); // boot code: covered by the boot checksum
    let e = expect_inconsistent(map_file(&img, FsKind::Exfat), "boot checksum");
    assert!(e.contains("checksum"), "{e}");
    restore();

    patch(&img, 106, &[0x02]); // VolumeDirty (excluded from the checksum)
    let e = expect_unsupported(map_file(&img, FsKind::Exfat), "dirty");
    assert!(e.contains("dirty"), "{e}");
    restore();

    // The bitmap entry vanishes from the root directory.
    let (slot, _) = root_entries(&img, &g)
        .into_iter()
        .find(|(_, e)| e[0] == 0x81)
        .unwrap();
    patch(&img, slot, &[0x01]);
    expect_inconsistent(map_file(&img, FsKind::Exfat), "no bitmap entry");
    restore();

    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    expect_inconsistent(map_file(&img, FsKind::Exfat), "truncated partition");
    restore();
    map_ok(&img, FsKind::Exfat);
}
