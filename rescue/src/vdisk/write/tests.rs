//! The writers against QEMU: every format written is clean for `qemu-img check` (where QEMU checks it),
//! equal to the raw disk for `qemu-img compare`, and read back equal by our own readers; bytes outside the
//! data ranges come out as zeros and take no room.

use std::ops::Range;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::vdisk;

const MIB: u64 = 1 << 20;

/// A sparse raw disk of `size` bytes with `pieces` written (offset, bytes); returns its file.
fn sparse_disk(path: &Path, size: u64, pieces: &[(u64, Vec<u8>)]) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(size).unwrap();
    for (at, b) in pieces {
        f.write_all_at(b, *at).unwrap();
    }
    f
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Text-like bytes that compress well.
fn text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"rescue disk imaging "[i % 20]).collect()
}

fn qemu_img(args: &[&str]) -> (bool, String) {
    builder::checks::tool(Command::new("qemu-img").args(args))
}

/// Write `disk` (data in `data`) as `target`, then check the file with qemu-img and our readers against
/// `expected` (a raw file of what the disk must read as).
fn check(
    dir: &Path,
    disk: &File,
    size: u64,
    data: &[Range<u64>],
    expected: &Path,
    target: Target,
    compress: Compress,
) -> Written {
    let name = format!("out-{}-{compress:?}.img", target.name());
    let path = dir.join(&name);
    let out = File::create(&path).unwrap();
    let src = Source {
        disk,
        size,
        data,
        sector: 512,
        name: "the test disk",
    };
    let mut read = 0u64;
    let w = write(target, compress, &src, &out, &path, &mut |n| {
        read += n;
        Ok(())
    })
    .unwrap();
    drop(out);
    assert_eq!(
        w.file_len,
        std::fs::metadata(&path).unwrap().len(),
        "{name}: length"
    );
    let p = path.to_str().unwrap();
    let fmt = target.qemu_name();
    if !matches!(target, Target::Raw | Target::Vhd | Target::VhdFixed) {
        let (ok, says) = qemu_img(&["check", "-f", fmt, p]);
        assert!(
            ok && !says.contains("ERROR") && !says.contains("Leaked"),
            "{name}: qemu-img check:\n{says}"
        );
    }
    let info = qemu_img(&["info", "--output=json", "-f", fmt, p]);
    assert!(info.0, "{name}: qemu-img info: {}", info.1);
    let v: serde_json::Value = serde_json::from_str(&info.1).unwrap();
    assert_eq!(
        v["virtual-size"].as_u64(),
        Some(size),
        "{name}: the size QEMU sees"
    );
    let (same, says) = qemu_img(&[
        "compare",
        "-f",
        fmt,
        "-F",
        "raw",
        p,
        expected.to_str().unwrap(),
    ]);
    assert!(same, "{name}: qemu-img compare: {says}");
    // Our own readers read it back the same.
    let file: Arc<dyn ReadAt> = Arc::new(File::open(&path).unwrap());
    let ours: Arc<dyn ReadAt> = if target == Target::Raw {
        file
    } else {
        let v = vdisk::open(file, &path).unwrap().expect("recognised");
        v.disk
    };
    assert_eq!(ours.size().unwrap(), size, "{name}: the size we read");
    let want = File::open(expected).unwrap();
    for r in data.iter().chain(std::iter::once(&(0..size.min(MIB)))) {
        let mut a = vec![0u8; (r.end - r.start) as usize];
        let mut b = a.clone();
        ours.read_exact_at(&mut a, r.start).unwrap();
        FileExt::read_exact_at(&want, &mut b, r.start).unwrap();
        assert!(a == b, "{name}: bytes {r:?} read back differ");
    }
    w
}

fn all_targets() -> Vec<(Target, Compress)> {
    let mut t: Vec<_> = Target::ALL.iter().map(|&t| (t, Compress::None)).collect();
    t.push((Target::Qcow2, Compress::Zlib));
    t.push((Target::Qcow2, Compress::Zstd));
    t
}

#[test]
fn every_format_reads_back_as_the_disk_for_qemu_and_for_us() {
    let dir = tempfile::tempdir().unwrap();
    // 9 MiB and 3 sectors: no format's block divides it.
    let size = 9 * MIB + 1536;
    let pieces = vec![
        (0, noise(300_000, 1)),
        (MIB, text(2 * MIB as usize)),
        // Inside a data range but zero: must stay unallocated.
        (4 * MIB, vec![0u8; 100_000]),
        // Outside every data range: must read as zeros, whatever the source holds.
        (6 * MIB, noise(200_000, 2)),
        (size - 1536, noise(1536, 3)),
    ];
    let disk = sparse_disk(&dir.path().join("disk.raw"), size, &pieces);
    let data = vec![0..4 * MIB + 200_000, 8 * MIB..size];
    // What it must read as: the data ranges, zeros elsewhere.
    let expected = dir.path().join("expected.raw");
    let e = sparse_disk(&expected, size, &[]);
    for r in &data {
        let mut b = vec![0u8; (r.end - r.start) as usize];
        FileExt::read_exact_at(&disk, &mut b, r.start).unwrap();
        e.write_all_at(&b, r.start).unwrap();
    }
    for (t, c) in all_targets() {
        let w = check(dir.path(), &disk, size, &data, &expected, t, c);
        // Nothing is stored for the source's bytes outside the data ranges.
        // (2 MiB blocks: 0, 1 and 4; the noise in block 3 lies outside the data.)
        assert!(
            w.stored <= 6 * MIB,
            "{} stored {} bytes",
            t.name(),
            w.stored
        );
    }
}

#[test]
fn large_sparse_disks_fill_several_tables() {
    // 9 GiB: several qcow2 L2 tables, VMDK grain tables, and VHDX chunks (the BAT's sector-bitmap entries
    // interleave every 4 GiB at 2 MiB blocks).
    let dir = tempfile::tempdir().unwrap();
    let size = 9 << 30;
    let at = [
        0,
        (4 << 30) - 4096,
        4 << 30,
        (8 << 30) + 12345,
        size - 65536,
    ];
    let pieces: Vec<(u64, Vec<u8>)> = at
        .iter()
        .enumerate()
        .map(|(k, &a)| (a, noise(65536.min((size - a) as usize), k as u64 + 7)))
        .collect();
    let disk = sparse_disk(&dir.path().join("disk.raw"), size, &pieces);
    let data: Vec<Range<u64>> = {
        let mut d: Vec<Range<u64>> = pieces
            .iter()
            .map(|(a, b)| *a..*a + b.len() as u64)
            .collect();
        d.sort_by_key(|r| r.start);
        d.dedup_by(|b, a| {
            if b.start <= a.end {
                a.end = a.end.max(b.end);
                true
            } else {
                false
            }
        });
        d
    };
    let expected = dir.path().join("disk.raw");
    for (t, c) in all_targets() {
        let w = check(dir.path(), &disk, size, &data, &expected, t, c);
        assert!(w.file_len < 64 * MIB || t == Target::Raw || t == Target::VhdFixed);
        let _ = std::fs::remove_file(dir.path().join(format!("out-{}-{c:?}.img", t.name())));
    }
}

#[test]
fn an_empty_disk_and_a_one_sector_disk() {
    let dir = tempfile::tempdir().unwrap();
    for size in [512u64, 3 * MIB] {
        let disk = sparse_disk(&dir.path().join("disk.raw"), size, &[]);
        let expected = dir.path().join("disk.raw");
        for (t, c) in all_targets() {
            let w = check(
                dir.path(),
                &disk,
                size,
                std::slice::from_ref(&(0..size)),
                &expected,
                t,
                c,
            );
            assert_eq!(w.stored, 0, "{} of zeros stored data", t.name());
        }
    }
}

#[test]
fn sizes_beyond_a_format_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let disk = sparse_disk(&dir.path().join("disk.raw"), 4096, &[]);
    let path = dir.path().join("out.vhd");
    let out = File::create(&path).unwrap();
    let src = Source {
        disk: &disk,
        size: 2041 << 30,
        data: &[],
        sector: 512,
        name: "the 2041 GiB disk",
    };
    let e = write(Target::Vhd, Compress::None, &src, &out, &path, &mut |_| {
        Ok(())
    })
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("2041 GiB disk") && text.contains("vhdx or qcow2"),
        "{text}"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    let e = write(Target::Vdi, Compress::Zstd, &src, &out, &path, &mut |_| {
        Ok(())
    })
    .unwrap_err();
    assert!(e.to_string().contains("--compress"), "{e}");
}

#[test]
fn the_vhd_geometry_is_the_one_qemu_computes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.vhd");
    for size in [10 * MIB, 1 << 30, 127 << 30, 300 << 30, 2040 << 30] {
        let p = path.to_str().unwrap();
        let (ok, says) = qemu_img(&["create", "-q", "-f", "vpc", p, &size.to_string()]);
        assert!(ok, "{says}");
        let mut footer = [0u8; 512];
        FileExt::read_exact_at(&File::open(&path).unwrap(), &mut footer, 0).unwrap();
        let theirs = (
            u16::from_be_bytes([footer[56], footer[57]]),
            footer[58],
            footer[59],
        );
        // QEMU rounds a size up to whole cylinders; for that size, both compute the same geometry.
        let chs = u64::from(theirs.0) * u64::from(theirs.1) * u64::from(theirs.2) * 512;
        assert_eq!(vhd::geometry(chs), theirs, "the geometry of {chs} bytes");
        let ours = vhd::geometry(size);
        assert!(u64::from(ours.0) * u64::from(ours.1) * u64::from(ours.2) * 512 <= size);
    }
}
