//! The readers against files made by QEMU's own `qemu-img`: every variant reads back byte for byte as the
//! raw disk it was made from; what they refuse is refused by name; damaged files are errors, never
//! panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::image::ReadAt;

const MIB: usize = 1 << 20;

/// A raw 9 MiB disk (not a whole number of 64 KiB clusters... of 2 MiB ones) with noise, runs of one
/// byte, zeros and never-written holes, so that conversions make data, compressed, zero and unallocated
/// clusters.
fn raw_disk(dir: &Path) -> (PathBuf, Vec<u8>) {
    let size = 9 * MIB + 3 * 4096;
    let mut data = vec![0u8; size];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for (i, chunk) in data.chunks_mut(64 * 1024).enumerate() {
        match i % 5 {
            0 => {
                for b in chunk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            1 => chunk.fill(0xa5),
            2 => {
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = (j / 512) as u8;
                }
            }
            // 3 and 4: zeros.
            _ => {}
        }
    }
    let path = dir.join("disk.raw");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn open_path(path: &Path) -> std::io::Result<Option<VirtualDisk>> {
    let file: Arc<dyn ReadAt> = Arc::new(std::fs::File::open(path).unwrap());
    open(file, path)
}

/// Read all of `disk` in pieces of awkward sizes at awkward offsets, and whole.
fn check_reads(disk: &dyn ReadAt, want: &[u8]) {
    assert_eq!(disk.size().unwrap(), want.len() as u64);
    let mut whole = vec![0u8; want.len()];
    disk.read_exact_at(&mut whole, 0).unwrap();
    assert!(whole == want, "the whole disk differs");
    let mut at = 0usize;
    let mut step = 1usize;
    while at < want.len() {
        let n = step.min(want.len() - at);
        let mut buf = vec![0u8; n];
        disk.read_exact_at(&mut buf, at as u64).unwrap();
        assert!(buf == want[at..at + n], "bytes {at}..{} differ", at + n);
        at += n + 777;
        step = (step * 7 + 4093) % (3 * MIB);
    }
    let mut past = [0u8; 2];
    assert!(disk
        .read_exact_at(&mut past, want.len() as u64 - 1)
        .is_err());
}

#[test]
fn qcow2_files_made_by_qemu_img_read_back_as_their_raw_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, want) = raw_disk(dir.path());
    let raw = raw.to_str().unwrap();
    let variants: &[(&str, &[&str])] = &[
        ("plain", &["-O", "qcow2"]),
        ("v2", &["-O", "qcow2", "-o", "compat=0.10"]),
        ("zlib", &["-O", "qcow2", "-c"]),
        (
            "zstd",
            &["-O", "qcow2", "-c", "-o", "compression_type=zstd"],
        ),
        (
            "small-clusters",
            &["-O", "qcow2", "-c", "-o", "cluster_size=512"],
        ),
        ("big-clusters", &["-O", "qcow2", "-o", "cluster_size=2M"]),
        (
            "zstd-big",
            &[
                "-O",
                "qcow2",
                "-c",
                "-o",
                "cluster_size=2M,compression_type=zstd",
            ],
        ),
    ];
    check_variants(dir.path(), Path::new(raw), &want, Format::Qcow2, variants);
    // Zero clusters (v3's zero flag) and unallocated ones: an image written and then partly zeroed.
    let z = dir.path().join("zeroed.qcow2");
    qemu_img(&["convert", "-q", "-O", "qcow2", raw, z.to_str().unwrap()]);
    let o = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -z 0 1M",
            "-c",
            "write -z -u 2M 1M",
        ])
        .arg(&z)
        .output()
        .expect("qemu-io (qemu-utils) is installed");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut want = want.clone();
    want[..MIB].fill(0);
    want[2 * MIB..3 * MIB].fill(0);
    let v = open_path(&z).unwrap().unwrap();
    check_reads(v.disk.as_ref(), &want);
}

#[test]
fn qcow2_features_it_cannot_read_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = raw_disk(d);
    let base = convert(d, &raw, "base.qcow2", &["-O", "qcow2"]);
    let overlay = d.join("overlay.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        overlay.to_str().unwrap(),
    ]);
    let e = open_path(&overlay).err().unwrap().to_string();
    assert!(
        e.contains("backing file") && e.contains("base.qcow2"),
        "{e}"
    );
    let ext = d.join("extl2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        ext.to_str().unwrap(),
        "1M",
    ]);
    let e = open_path(&ext).err().unwrap().to_string();
    assert!(e.contains("extended L2"), "{e}");
    // Unknown incompatible bits.
    let mut bytes = std::fs::read(&base).unwrap();
    bytes[72..80].copy_from_slice(&(1u64 << 40).to_be_bytes());
    let weird = d.join("weird.qcow2");
    std::fs::write(&weird, &bytes).unwrap();
    let e = open_path(&weird).err().unwrap().to_string();
    assert!(e.contains("incompatible features"), "{e}");
}

#[test]
fn damaged_qcow2_files_are_errors_that_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, want) = raw_disk(d);
    let good = convert(d, &raw, "good.qcow2", &["-O", "qcow2"]);
    let bytes = std::fs::read(&good).unwrap();
    // Cut off: the last data clusters are gone.
    let cut = d.join("cut.qcow2");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let v = open_path(&cut).unwrap().unwrap();
    let mut all = vec![0u8; want.len()];
    let e = v.disk.read_exact_at(&mut all, 0).unwrap_err().to_string();
    assert!(e.contains("past the end") || e.contains("cut off"), "{e}");
    // An L1 entry pointing far past the end.
    let l1 = u64::from_be_bytes(bytes[40..48].try_into().unwrap()) as usize;
    let mut bad = bytes.clone();
    bad[l1..l1 + 8].copy_from_slice(&(1u64 << 50).to_be_bytes());
    let p = d.join("badl1.qcow2");
    std::fs::write(&p, &bad).unwrap();
    let v = open_path(&p).unwrap().unwrap();
    let e = v.disk.read_exact_at(&mut all, 0).unwrap_err().to_string();
    assert!(e.contains("L1 entry 0"), "{e}");
    // A header whose L1 table is too small for the disk.
    let mut bad = bytes.clone();
    bad[36..40].copy_from_slice(&0u32.to_be_bytes());
    let p = d.join("nol1.qcow2");
    std::fs::write(&p, &bad).unwrap();
    let e = open_path(&p).err().unwrap().to_string();
    assert!(e.contains("L1 table has 0 entries"), "{e}");
    // Not qcow2 at all: not recognised (read as a raw disk elsewhere).
    assert!(open_path(&raw).unwrap().is_none());
}

/// Open `data` as a file named `name` and, if it opens, read these ranges of its disk: whatever happens,
/// no panic.
fn open_and_read(data: Vec<u8>, name: &str, reads: &[(u64, usize)]) {
    let file: Arc<dyn ReadAt> = Arc::new(data);
    if let Ok(Some(v)) = open(file, Path::new(name)) {
        for &(at, len) in reads {
            let mut buf = vec![0u8; len];
            let _ = v.disk.read_exact_at(&mut buf, at);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any bytes behind a VMDK sparse header: refused or read, never a panic.
    #[test]
    fn any_vmdk_bytes_are_refused_or_read_never_a_panic(
        mut data in proptest::collection::vec(any::<u8>(), 512..8192),
        flags in prop_oneof![Just(0u32), Just(1 << 2), Just(3 << 16)],
        stream in any::<bool>(),
        reads in proptest::collection::vec((0u64..1 << 22, 1usize..5000), 0..8),
    ) {
        data[..4].copy_from_slice(b"KDMV");
        data[4..8].copy_from_slice(&1u32.to_le_bytes());
        data[8..12].copy_from_slice(&flags.to_le_bytes());
        data[20..28].copy_from_slice(&8u64.to_le_bytes());
        data[44..48].copy_from_slice(&512u32.to_le_bytes());
        data[77..79].copy_from_slice(&1u16.to_le_bytes());
        if stream {
            data[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
        }
        open_and_read(data, "fuzz.vmdk", &reads);
    }

    /// Any bytes behind a VDI signature: refused or read, never a panic.
    #[test]
    fn any_vdi_bytes_are_refused_or_read_never_a_panic(
        mut data in proptest::collection::vec(any::<u8>(), 0x1C8..8192),
        block_bits in 9u32..=20,
        reads in proptest::collection::vec((0u64..1 << 22, 1usize..5000), 0..8),
    ) {
        data[0x40..0x44].copy_from_slice(&0xBEDA_107Fu32.to_le_bytes());
        data[0x44..0x48].copy_from_slice(&0x0001_0001u32.to_le_bytes());
        data[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
        data[0x168..0x16C].copy_from_slice(&512u32.to_le_bytes());
        data[0x178..0x17C].copy_from_slice(&(1u32 << block_bits).to_le_bytes());
        open_and_read(data, "fuzz.vdi", &reads);
    }

    /// Any bytes under a VHD footer whose checksum is right: refused or read, never a panic.
    #[test]
    fn any_vhd_bytes_are_refused_or_read_never_a_panic(
        mut data in proptest::collection::vec(any::<u8>(), 1024..8192),
        dynamic in any::<bool>(),
        reads in proptest::collection::vec((0u64..1 << 20, 1usize..5000), 0..8),
    ) {
        let n = data.len();
        let f = n - 512;
        data[f..f + 8].copy_from_slice(b"conectix");
        data[f + 28..f + 32].copy_from_slice(b"qem2");
        data[f + 60..f + 64].copy_from_slice(&(if dynamic { 3u32 } else { 2 }).to_be_bytes());
        let sum = vhd::checksum(&data[f..], 64);
        data[f + 64..f + 68].copy_from_slice(&sum.to_be_bytes());
        open_and_read(data, "fuzz.vhd", &reads);
    }

    /// Any bytes after a qcow2 magic: refused or read, never a panic.
    #[test]
    fn any_qcow2_bytes_are_refused_or_read_never_a_panic(
        mut data in proptest::collection::vec(any::<u8>(), 72..4096),
        version in 2u32..=3,
        cluster_bits in 9u32..=12,
        reads in proptest::collection::vec((0u64..1 << 20, 1usize..5000), 0..8),
    ) {
        data[..4].copy_from_slice(b"QFI\xfb");
        data[4..8].copy_from_slice(&version.to_be_bytes());
        data[8..16].fill(0);
        data[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
        data[32..36].fill(0);
        open_and_read(data, "fuzz.qcow2", &reads);
    }
}

/// What QEMU reads from `path`: `qemu-img convert -O raw`.
fn oracle(path: &Path) -> Vec<u8> {
    let out = path.with_extension("oracle.raw");
    qemu_img(&[
        "convert",
        "-q",
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let data = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    data
}

/// Make `name` from `raw` with `qemu-img convert` and these options.
fn convert(dir: &Path, raw: &Path, name: &str, opts: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["convert", "-q"];
    args.extend_from_slice(opts);
    args.extend([raw.to_str().unwrap(), out.to_str().unwrap()]);
    qemu_img(&args);
    out
}

/// Make each variant of `raw` with `qemu-img convert`, check it is recognised as `format` and that it
/// reads as QEMU reads it, which is the raw disk itself.
fn check_variants(d: &Path, raw: &Path, want: &[u8], format: Format, variants: &[(&str, &[&str])]) {
    for (name, opts) in variants {
        let path = convert(d, raw, name, opts);
        let v = open_path(&path)
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: not recognised"));
        assert_eq!(v.format, format, "{name}");
        let expect = oracle(&path);
        assert!(expect == want, "{name}: qemu itself reads another disk");
        check_reads(v.disk.as_ref(), &expect);
    }
}

#[test]
fn vhd_files_made_by_qemu_img_read_as_qemu_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, want) = raw_disk(d);
    for (name, opts, exact) in [
        // Sized by CHS geometry (creator `qemu`): a little larger than the raw disk.
        ("dynamic.vhd", &["-O", "vpc"][..], false),
        (
            "fixed.vhd",
            &["-O", "vpc", "-o", "subformat=fixed"][..],
            false,
        ),
        // Sized exactly (creator `qem2`, as Hyper-V reads `current_size`).
        (
            "dynamic-exact.vhd",
            &["-O", "vpc", "-o", "force_size=on"][..],
            true,
        ),
        (
            "fixed-exact.vhd",
            &["-O", "vpc", "-o", "subformat=fixed,force_size=on"][..],
            true,
        ),
    ] {
        let path = convert(d, &raw, name, opts);
        let v = open_path(&path)
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: not recognised"));
        assert_eq!(v.format, Format::Vhd, "{name}");
        let mut expect = oracle(&path);
        if name.starts_with("fixed") {
            // QEMU 7.2 shows a fixed VHD's footer as the disk's last sector; the disk is what comes
            // before it (the footer's sizes say so, as Hyper-V reads it).
            let footer = expect.split_off(expect.len() - 512);
            assert_eq!(&footer[..8], b"conectix");
        }
        check_reads(v.disk.as_ref(), &expect);
        assert!(
            expect[..want.len()] == want[..],
            "{name}: qemu itself reads another disk"
        );
        if exact {
            assert_eq!(expect.len(), want.len(), "{name}");
        }
    }
}

#[test]
fn damaged_or_dependent_vhd_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = raw_disk(d);
    let path = convert(d, &raw, "good.vhd", &["-O", "vpc", "-o", "force_size=on"]);
    let bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    let write = |name: &str, b: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // A flipped byte in both footers: the checksum says so.
    let mut bad = bytes.clone();
    bad[n - 512 + 40] ^= 1;
    bad[40] ^= 1;
    let e = open_path(&write("sum.vhd", &bad))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("checksum is wrong"), "{e}");
    // A differencing disk (type 4, checksum made right): refused, with what to do.
    let mut diff = bytes.clone();
    for at in [0, n - 512] {
        diff[at + 60..at + 64].copy_from_slice(&4u32.to_be_bytes());
        let sum = vhd::checksum(&diff[at..at + 512], 64);
        diff[at + 64..at + 68].copy_from_slice(&sum.to_be_bytes());
    }
    let e = open_path(&write("diff.vhd", &diff))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("differencing VHD") && e.contains("parent"),
        "{e}"
    );
    // Cut in the middle: the footer copy at the start still opens it; the lost blocks are named.
    let v = open_path(&write("cut.vhd", &bytes[..n / 2]))
        .unwrap()
        .unwrap();
    let mut all = vec![0u8; v.size().unwrap() as usize];
    let e = v.disk.read_exact_at(&mut all, 0).unwrap_err().to_string();
    assert!(e.contains("past the end of the file"), "{e}");
}

#[test]
fn vdi_files_made_by_qemu_img_read_as_qemu_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, want) = raw_disk(d);
    check_variants(
        d,
        &raw,
        &want,
        Format::Vdi,
        &[
            ("dynamic.vdi", &["-O", "vdi"]),
            ("fixed.vdi", &["-O", "vdi", "-o", "static=on"]),
        ],
    );
    // A discarded block (0xFFFFFFFE) reads as zeros, as in QEMU; a block past the end is named.
    let path = d.join("dynamic.vdi");
    let mut bytes = std::fs::read(&path).unwrap();
    let map = u32::from_le_bytes(bytes[0x154..0x158].try_into().unwrap()) as usize;
    bytes[map..map + 4].copy_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
    let discarded = d.join("discarded.vdi");
    std::fs::write(&discarded, &bytes).unwrap();
    let v = open_path(&discarded).unwrap().unwrap();
    let expect = oracle(&discarded);
    assert!(expect[..MIB].iter().all(|&b| b == 0));
    check_reads(v.disk.as_ref(), &expect);
    bytes[map..map + 4].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let far = d.join("far.vdi");
    std::fs::write(&far, &bytes).unwrap();
    let v = open_path(&far).unwrap().unwrap();
    let mut first = vec![0u8; 4096];
    let e = v.disk.read_exact_at(&mut first, 0).unwrap_err().to_string();
    assert!(e.contains("block 0") && e.contains("past the end"), "{e}");
    // A differencing image (type 4) is refused with what to do.
    bytes[0x4C..0x50].copy_from_slice(&4u32.to_le_bytes());
    let diff = d.join("diff.vdi");
    std::fs::write(&diff, &bytes).unwrap();
    let e = open_path(&diff).err().unwrap().to_string();
    assert!(e.contains("differencing") && e.contains("parent"), "{e}");
}

#[test]
fn vhdx_files_made_by_qemu_img_read_as_qemu_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, want) = raw_disk(d);
    check_variants(
        d,
        &raw,
        &want,
        Format::Vhdx,
        &[
            ("dynamic.vhdx", &["-O", "vhdx"]),
            ("small-blocks.vhdx", &["-O", "vhdx", "-o", "block_size=1M"]),
            ("fixed.vhdx", &["-O", "vhdx", "-o", "subformat=fixed"]),
            (
                "big-blocks.vhdx",
                &["-O", "vhdx", "-o", "block_size=8M,log_size=2M"],
            ),
        ],
    );
}

#[test]
fn damaged_vhdx_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = raw_disk(d);
    let path = convert(d, &raw, "good.vhdx", &["-O", "vhdx"]);
    let bytes = std::fs::read(&path).unwrap();
    let write = |name: &str, b: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    // One header damaged: the other is used. Both: refused.
    let mut one = bytes.clone();
    one[64 * 1024 + 100] ^= 1;
    let v = open_path(&write("one.vhdx", &one)).unwrap().unwrap();
    assert_eq!(
        v.size().unwrap(),
        open_path(&path).unwrap().unwrap().size().unwrap()
    );
    let mut both = one.clone();
    both[128 * 1024 + 100] ^= 1;
    let e = open_path(&write("both.vhdx", &both))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("both VHDX headers"), "{e}");
    // A log with entries (its GUID set in the current header, CRC made right): refused until replayed.
    let mut logged = bytes.clone();
    for at in [64 * 1024usize, 128 * 1024] {
        logged[at + 48..at + 64].fill(0x5a);
        let sum = vhdx::crc32c(&logged[at..at + 4096], 4);
        logged[at + 4..at + 8].copy_from_slice(&sum.to_le_bytes());
    }
    let e = open_path(&write("log.vhdx", &logged))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("log") && e.contains("replayed"), "{e}");
    // Both region tables damaged.
    let mut regions = bytes.clone();
    regions[192 * 1024 + 40] ^= 1;
    regions[256 * 1024 + 40] ^= 1;
    let e = open_path(&write("regions.vhdx", &regions))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("region tables"), "{e}");
}

#[test]
fn vmdk_files_made_by_qemu_img_read_as_qemu_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, want) = raw_disk(d);
    check_variants(
        d,
        &raw,
        &want,
        Format::Vmdk,
        &[
            ("sparse.vmdk", &["-O", "vmdk"]),
            ("zeroed.vmdk", &["-O", "vmdk", "-o", "zeroed_grain=on"]),
            (
                "stream.vmdk",
                &["-O", "vmdk", "-o", "subformat=streamOptimized"],
            ),
            (
                "flat.vmdk",
                &["-O", "vmdk", "-o", "subformat=monolithicFlat"],
            ),
            (
                "split.vmdk",
                &["-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse"],
            ),
            (
                "splitflat.vmdk",
                &["-O", "vmdk", "-o", "subformat=twoGbMaxExtentFlat"],
            ),
        ],
    );
}

#[test]
fn vmdk_descriptors_that_reach_out_or_need_a_parent_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (raw, _) = raw_disk(d);
    let flat = convert(
        d,
        &raw,
        "flat.vmdk",
        &["-O", "vmdk", "-o", "subformat=monolithicFlat"],
    );
    let text = std::fs::read_to_string(&flat).unwrap();
    let write = |name: &str, t: &str| {
        let p = d.join(name);
        std::fs::write(&p, t).unwrap();
        p
    };
    let outside = text.replace("\"flat-flat.vmdk\"", "\"../etc/flat-flat.vmdk\"");
    assert_ne!(outside, text, "{text}");
    let e = open_path(&write("outside.vmdk", &outside))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("outside its folder"), "{e}");
    let absolute = text.replace("\"flat-flat.vmdk\"", "\"/etc/passwd\"");
    let e = open_path(&write("absolute.vmdk", &absolute))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("outside its folder"), "{e}");
    let child = text.replace("parentCID=ffffffff", "parentCID=12345678");
    assert_ne!(child, text);
    let e = open_path(&write("child.vmdk", &child))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("parent disk"), "{e}");
    // A streamOptimized file cut off: its footer is gone, and that is said.
    let stream = convert(
        d,
        &raw,
        "stream.vmdk",
        &["-O", "vmdk", "-o", "subformat=streamOptimized"],
    );
    let bytes = std::fs::read(&stream).unwrap();
    // Cut in the middle: the grains past the cut are named when read.
    let cut = d.join("cutstream.vmdk");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let v = open_path(&cut).unwrap().unwrap();
    let mut all = vec![0u8; v.size().unwrap() as usize];
    let e = v.disk.read_exact_at(&mut all, 0).unwrap_err().to_string();
    assert!(e.contains("grain") || e.contains("grain table"), "{e}");
    // A stream whose header defers to a footer that is not there.
    let mut deferred = bytes.clone();
    deferred[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    let n = deferred.len();
    deferred[n - 1024..n - 1020].fill(0);
    let p = d.join("nofooter.vmdk");
    std::fs::write(&p, &deferred).unwrap();
    let e = open_path(&p).err().unwrap().to_string();
    assert!(e.contains("footer"), "{e}");
}
