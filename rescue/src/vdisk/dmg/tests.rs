//! The DMG reader against DMGs written by an independent writer (the `udif` crate: zlib, bzip2, LZFSE,
//! raw and zero chunks) and by the tests' own minimal writer (ADC, xz, ignore and comment entries, gaps):
//! every one reads back byte for byte as the disk it was made from.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use super::super::{open, sniff, Format, VirtualDisk};
use super::test_writer::{self as w, chunk};
use crate::image::ReadAt;

/// `len` bytes (a whole number of sectors) in 4 KiB pieces of noise, one repeated byte, a sector-number
/// ramp and zeros, so that every codec has something to compress and writers make zero chunks.
pub(super) fn disk(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut x = seed | 1;
    for (i, piece) in data.chunks_mut(4096).enumerate() {
        match (i as u64 + seed) % 4 {
            0 => {
                for b in piece.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            1 => piece.fill(0x5a),
            2 => piece
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (i * 8 + j / 512) as u8),
            _ => {}
        }
    }
    // A stretch of zeros longer than a chunk (of up to 256 KiB).
    let z = len / 3;
    data[z..(z + 600 * 1024).min(len)].fill(0);
    data
}

pub(super) fn open_bytes(file: Vec<u8>) -> std::io::Result<Option<VirtualDisk>> {
    let file: Arc<dyn ReadAt> = Arc::new(file);
    open(file, Path::new("test.dmg"))
}

/// Opened as a DMG, or the test fails.
pub(super) fn dmg(file: Vec<u8>) -> VirtualDisk {
    let v = open_bytes(file)
        .unwrap()
        .expect("recognised as a virtual disk");
    assert_eq!(v.format, Format::Dmg);
    assert_eq!(v.format.name(), "DMG");
    v
}

/// The disk reads as `want`: whole, and in pieces that start and end inside sectors and chunks.
pub(super) fn reads_as(disk: &dyn ReadAt, want: &[u8]) {
    assert_eq!(disk.size().unwrap(), want.len() as u64);
    let mut all = vec![0u8; want.len()];
    disk.read_exact_at(&mut all, 0).unwrap();
    assert!(all == want, "the whole disk differs");
    let (mut at, mut len) = (0usize, 1usize);
    while at < want.len() {
        let n = len.min(want.len() - at);
        let mut piece = vec![0u8; n];
        disk.read_exact_at(&mut piece, at as u64).unwrap();
        assert!(piece == want[at..at + n], "{n} bytes at {at} differ");
        at += n / 2 + 333;
        len = (len * 5 + 1021) % (700 * 1024);
    }
    let mut past = [0u8; 1];
    assert!(disk.read_exact_at(&mut past, want.len() as u64).is_err());
}

fn udif_file(
    dir: &Path,
    name: &str,
    method: udif::CompressionMethod,
    chunk: usize,
    parts: &[&[u8]],
) -> Vec<u8> {
    let path = dir.join(name);
    let mut b = udif::DmgBuilder::new()
        .compression(method)
        .chunk_size(chunk)
        .skip_checksums(true);
    for (i, p) in parts.iter().enumerate() {
        b = b.add_partition(&format!("part {i}"), p.to_vec());
    }
    b.build(&path).unwrap();
    std::fs::read(&path).unwrap()
}

/// What QEMU's own DMG reader (`qemu-img convert -f dmg`, qemu-utils) reads from `file`: a second,
/// independent reader of zlib, raw, zero and ignore chunks (Debian's QEMU has no bzip2 or LZFSE module,
/// and reads neither ADC nor xz, nor sectors no chunk covers).
fn qemu_reads(dir: &Path, file: &[u8]) -> Vec<u8> {
    let (src, dst) = (dir.join("qemu-in.dmg"), dir.join("qemu-out.raw"));
    std::fs::write(&src, file).unwrap();
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "dmg", "-O", "raw"])
        .args([&src, &dst])
        .output()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(
        out.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&dst).unwrap()
}

#[test]
fn dmgs_written_by_udif_read_back_as_their_disk() {
    use udif::CompressionMethod as M;
    let dir = tempfile::tempdir().unwrap();
    let want = disk(1536 * 1024 + 3 * 512, 7);
    for (method, name, chunk) in [
        (M::Zlib, "zlib", 1 << 20),
        (M::Zlib, "zlib-small", 64 * 1024),
        (M::Bzip2, "bzip2", 256 * 1024),
        (M::Lzfse, "lzfse", 256 * 1024),
        (M::Raw, "raw", 128 * 1024),
    ] {
        let file = udif_file(dir.path(), name, method, chunk, &[&want]);
        if matches!(method, M::Zlib | M::Raw) {
            // With the sector count where Apple's layout has it, QEMU reads it as the disk too.
            let mut fixed = file.clone();
            let k = fixed.len() - 512;
            fixed[k + 492..k + 500].copy_from_slice(&(want.len() as u64 / 512).to_be_bytes());
            assert!(
                qemu_reads(dir.path(), &fixed) == want,
                "{name}: QEMU reads it otherwise"
            );
            reads_as(dmg(fixed).disk.as_ref(), &want);
        }
        let v = dmg(file);
        reads_as(v.disk.as_ref(), &want);
        let notes = v.notes.join("; ");
        let codec = match method {
            M::Zlib => " zlib",
            M::Bzip2 => " bzip2",
            M::Lzfse => " LZFSE",
            M::Raw => " raw",
        };
        assert!(notes.contains(codec), "{name}: {notes}");
        if chunk < 1 << 20 {
            assert!(notes.contains(" zero"), "{name}: zero chunks: {notes}");
        }
        // udif writes the sector count 56 bytes early (at 436, not 492): the disk ends with its runs.
        assert!(notes.contains("no sector count"), "{name}: {notes}");
    }
}

#[test]
fn a_udif_dmg_of_several_partitions_reads_as_their_concatenation() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (disk(96 * 1024, 1), disk(4 * 512, 2), disk(200 * 1024, 3));
    let file = udif_file(
        dir.path(),
        "parts",
        udif::CompressionMethod::Zlib,
        32 * 1024,
        &[&a, &b, &c],
    );
    let v = dmg(file);
    assert!(
        v.notes[0].contains("3 partition block tables"),
        "{:?}",
        v.notes
    );
    reads_as(v.disk.as_ref(), &[a, b, c].concat());
}

#[test]
fn every_chunk_type_of_the_own_writer_reads_back() {
    // Sectors: 0..64 ADC, 64..96 xz, 96..100 raw, 100..110 ignore, a gap 110..120, 120..184 zlib,
    // 184..200 zero; a second table 200..264 of ADC and raw; a gap to the disk's end at 300.
    let want = {
        let mut d = disk(300 * 512, 11);
        d[100 * 512..120 * 512].fill(0);
        d[184 * 512..200 * 512].fill(0);
        d[264 * 512..].fill(0);
        d
    };
    let s = |a: usize, b: usize| &want[a * 512..b * 512];
    let tables = [
        w::table(
            "Driver & partition map",
            0,
            200,
            vec![
                chunk(w::ADC, 0, s(0, 64)),
                w::comment(64, b""),
                chunk(w::XZ, 64, s(64, 96)),
                chunk(w::RAW, 96, s(96, 100)),
                chunk(w::IGNORE, 100, s(100, 110)),
                chunk(w::ZLIB, 120, s(120, 184)),
                chunk(w::ZERO, 184, s(184, 200)),
            ],
        ),
        w::table(
            "Apple_HFS",
            200,
            64,
            vec![
                chunk(w::ADC, 0, s(200, 232)),
                chunk(w::RAW, 32, s(232, 264)),
            ],
        ),
    ];
    let v = dmg(w::write(&tables, 300));
    reads_as(v.disk.as_ref(), &want);
    let notes = v.notes.join("; ");
    for kind in ["2 ADC", "1 xz", "2 raw", "1 zlib", "2 zero"] {
        assert!(notes.contains(kind), "{kind}: {notes}");
    }
    assert!(!notes.contains("no sector count"), "{notes}");
}

#[test]
fn qemu_reads_the_own_writers_dmgs_as_this_reader_does() {
    // The tests' writer checked by an independent reader: two tables, zlib, raw, zero, ignore and
    // comment entries, no gaps (QEMU fails on sectors no chunk covers).
    let dir = tempfile::tempdir().unwrap();
    let mut want = disk(160 * 512, 13);
    want[40 * 512..64 * 512].fill(0);
    let s = |a: usize, b: usize| &want[a * 512..b * 512];
    let file = w::write(
        &[
            w::table("MBR", 0, 1, vec![chunk(w::RAW, 0, s(0, 1))]),
            w::table(
                "Apple_HFS",
                1,
                159,
                vec![
                    chunk(w::ZLIB, 0, s(1, 33)),
                    chunk(w::RAW, 32, s(33, 40)),
                    chunk(w::ZERO, 39, s(40, 52)),
                    w::comment(51, b"+beg"),
                    chunk(w::IGNORE, 51, s(52, 64)),
                    chunk(w::ZLIB, 63, s(64, 160)),
                ],
            ),
        ],
        160,
    );
    assert!(
        qemu_reads(dir.path(), &file) == want,
        "QEMU reads it otherwise"
    );
    reads_as(dmg(file).disk.as_ref(), &want);
}

#[test]
fn adc_streams_with_every_op_decode() {
    // Runs (copies from 1 back), short and long copies, literals longer than 128 bytes.
    let mut data = disk(64 * 1024, 5);
    data[..600].copy_from_slice(&[b"abcabcabcXYZ".repeat(50)].concat());
    data[20000..20000 + 300].fill(7);
    let far = data[1000..1060].to_vec();
    data[40000..40060].copy_from_slice(&far);
    let packed = w::adc(&data);
    assert!(packed.iter().any(|&b| b & 0xc0 == 0x40), "a long copy");
    assert!(packed.len() < data.len(), "it compresses");
    let out = super::codec::decompress(super::codec::Codec::Adc, &packed, data.len()).unwrap();
    assert!(out == data);
    // Short, long, cut, and copying from before the start.
    assert!(super::codec::decompress(
        super::codec::Codec::Adc,
        &packed[..packed.len() - 1],
        data.len()
    )
    .is_err());
    for (bad, why) in [
        (&[0x80u8][..], "ends inside a literal"),
        (&[0x41u8, 0][..], "ends inside a copy"),
        (&[0x80, 1, 0x04, 5][..], "before the chunk's start"),
    ] {
        let e = super::codec::decompress(super::codec::Codec::Adc, bad, data.len()).unwrap_err();
        assert!(e.contains(why), "{why}: {e}");
    }
    let e =
        super::codec::decompress(super::codec::Codec::Adc, &packed, data.len() - 1).unwrap_err();
    assert!(e.contains("more than"), "{e}");
}

#[test]
fn reads_from_several_threads_at_once_agree() {
    let want = disk(600 * 1024, 9);
    let tables = [w::table(
        "disk",
        0,
        1200,
        (0..1200 / 40)
            .map(|i| {
                chunk(
                    w::ZLIB,
                    i * 40,
                    &want[i as usize * 40 * 512..(i as usize + 1) * 40 * 512],
                )
            })
            .collect(),
    )];
    let v = dmg(w::write(&tables, 1200));
    let d = v.disk.clone();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (d, want) = (d.clone(), &want);
            s.spawn(move || {
                for k in 0..200u64 {
                    let at = (k * 7919 + t * 104_729) % (want.len() as u64 - 5000);
                    let mut buf = vec![0u8; 5000];
                    d.read_exact_at(&mut buf, at).unwrap();
                    assert!(buf == want[at as usize..at as usize + 5000]);
                }
            });
        }
    });
}

#[test]
fn sniff_knows_a_dmg_by_its_trailer_and_an_encrypted_one_by_its_signature() {
    let want = disk(8 * 512, 3);
    let file = w::write(&[w::table("disk", 0, 8, vec![chunk(w::RAW, 0, &want)])], 8);
    assert_eq!(sniff(&file), Some(Format::Dmg));
    let mut enc2 = vec![0u8; 4096];
    enc2[..8].copy_from_slice(b"encrcdsa");
    let mut enc1 = vec![0u8; 4096];
    enc1[4088..].copy_from_slice(b"cdsaencr");
    for f in [enc1, enc2] {
        assert_eq!(sniff(&f), Some(Format::Dmg));
        let e = open_bytes(f).err().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("encrypted DMG"), "{e}");
    }
    // A file whose end is cut off has lost its trailer: it is no DMG to sniff (it reads as a raw file).
    assert_eq!(sniff(&file[..file.len() - 100].to_vec()), None);
}
