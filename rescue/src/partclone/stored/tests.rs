//! Pieces found and joined, compressions recognised and refused, every decoder read back against an
//! in-process encoder (lz4 frames and lzop files from small writers here), and errors named where they
//! are. The real tools are in tool_tests.rs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::joined::Joined;
use super::*;

/// `data` written as pieces of `size` bytes named `stem.aa`, `stem.ab`… in `dir` (as `split -b`
/// without `-a`).
pub(super) fn split_into(dir: &Path, stem: &str, data: &[u8], size: usize) -> Vec<PathBuf> {
    let mut names = Vec::new();
    let mut suffix = "aa".to_owned();
    for chunk in data.chunks(size.max(1)) {
        let p = dir.join(format!("{stem}.{suffix}"));
        std::fs::write(&p, chunk).unwrap();
        names.push(p);
        suffix = successors(&suffix, 2).pop().unwrap();
    }
    names
}

/// The stored error an `io::Error` of the reader carries.
pub(super) fn stored_error(e: &io::Error) -> &Error {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("not a stored::Error: {e}"))
}

/// Opens `first` and reads it all (at most `cap` bytes).
pub(super) fn read_all(first: &Path, cap: u64) -> Result<(Compression, Vec<u8>), Error> {
    let o = open(first)?;
    let mut out = Vec::new();
    o.reader.take(cap).read_to_end(&mut out).map_err(|e| {
        let s = stored_error(&e);
        Error::new(s.kind, &s.path, s.offset, s.what.clone())
    })?;
    Ok((o.compression, out))
}

/// Bytes that compress somewhat: runs, counters and noise, as a filesystem holds.
pub(super) fn semi(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        match x % 4 {
            0 => v.extend(std::iter::repeat_n(
                (x >> 8) as u8,
                (x >> 16) as usize % 300,
            )),
            1 => v.extend((0..(x >> 20) % 500).map(|i| (i as u8).wrapping_mul(3))),
            _ => {
                let mut y = x;
                v.extend((0..(x >> 12) % 200).map(|_| {
                    y = y.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (y >> 24) as u8
                }))
            }
        }
    }
    v.truncate(len);
    v
}

pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(super) fn zstd(data: &[u8]) -> Vec<u8> {
    let mut e = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    e.include_checksum(true).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(super) fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(super) fn lzma(data: &[u8]) -> Vec<u8> {
    let opts = liblzma::stream::LzmaOptions::new_preset(1).unwrap();
    let s = liblzma::stream::Stream::new_lzma_encoder(&opts).unwrap();
    let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(super) fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An lz4 frame of `data`: blocks of up to 64 KiB, linked or not, with block checksums, content
/// checksum and content size as asked; `stored` blocks are kept as they are.
pub(super) fn lz4(data: &[u8], linked: bool, sums: bool, stored: bool) -> Vec<u8> {
    let mut f = 0x184D_2204u32.to_le_bytes().to_vec();
    let flg = 0x40 | if linked { 0 } else { 0x20 } | if sums { 0x10 | 0x04 | 0x08 } else { 0 };
    let mut d = vec![flg, 0x40];
    if sums {
        d.extend_from_slice(&(data.len() as u64).to_le_bytes());
    }
    let hc = (twox_hash::XxHash32::oneshot(0, &d) >> 8) as u8;
    f.extend_from_slice(&d);
    f.push(hc);
    let mut prev: &[u8] = &[];
    for block in data.chunks(64 << 10) {
        let packed = if linked {
            lz4_flex::block::compress_with_dict(block, prev)
        } else {
            lz4_flex::block::compress(block)
        };
        let (bytes, flag) = if stored || packed.len() >= block.len() {
            (block, 0x8000_0000u32)
        } else {
            (&packed[..], 0)
        };
        f.extend_from_slice(&(bytes.len() as u32 | flag).to_le_bytes());
        f.extend_from_slice(bytes);
        if sums {
            f.extend_from_slice(&twox_hash::XxHash32::oneshot(0, bytes).to_le_bytes());
        }
        prev = block;
    }
    f.extend_from_slice(&0u32.to_le_bytes());
    if sums {
        f.extend_from_slice(&twox_hash::XxHash32::oneshot(0, data).to_le_bytes());
    }
    f
}

/// An lzop file of `data` in stored blocks of `block` bytes (this program has no LZO compressor; the
/// real lzop is in tool_tests.rs), with Adler-32 or CRC-32 checksums.
pub(super) fn lzop(data: &[u8], block: usize, crc: bool) -> Vec<u8> {
    let mut f = super::detect::LZOP_MAGIC.to_vec();
    let flags: u32 = if crc { 0x1000 | 0x100 } else { 0x1 } | 0x0300_0000;
    let mut h = Vec::new();
    h.extend_from_slice(&0x1040u16.to_be_bytes());
    h.extend_from_slice(&0x20a0u16.to_be_bytes());
    h.extend_from_slice(&0x0940u16.to_be_bytes());
    h.push(1);
    h.push(3);
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(&[0; 12]);
    h.push(0);
    let sum = if crc {
        crc32fast::hash(&h)
    } else {
        super::lzop::adler32(1, &h)
    };
    f.extend_from_slice(&h);
    f.extend_from_slice(&sum.to_be_bytes());
    for b in data.chunks(block.max(1)) {
        f.extend_from_slice(&(b.len() as u32).to_be_bytes());
        f.extend_from_slice(&(b.len() as u32).to_be_bytes());
        let sum = if crc {
            crc32fast::hash(b)
        } else {
            super::lzop::adler32(1, b)
        };
        f.extend_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(b);
    }
    f.extend_from_slice(&0u32.to_be_bytes());
    f
}

/// A partclone stream header, then `data`: what an uncompressed image starts with.
pub(super) fn plain(data: &[u8]) -> Vec<u8> {
    let mut v = b"partclone-image\0".to_vec();
    v.extend_from_slice(data);
    v
}

/// An encoder's function.
pub(super) type Encode = fn(&[u8]) -> Vec<u8>;
/// An encoder: what it should be recognised as, and whether its output has checksums.
pub(super) type Encoder = (Compression, Encode, bool);

/// Every in-process encoder.
pub(super) fn encoders() -> Vec<Encoder> {
    let checked: Vec<(Compression, Encode)> = vec![
        (Compression::None, plain),
        (Compression::Gzip, gzip),
        (Compression::Zstd, zstd),
        (Compression::Xz, xz),
        (Compression::Lzma, lzma),
        (Compression::Bzip2, bzip2),
        (Compression::Lz4, |d| lz4(d, false, true, false)),
        (Compression::Lzop, |d| lzop(d, 100_000, false)),
        (Compression::Lzop, |d| lzop(d, 77_777, true)),
    ];
    let mut all: Vec<Encoder> = checked.into_iter().map(|(c, f)| (c, f, true)).collect();
    all[0].2 = false;
    all.push((Compression::Lz4, |d| lz4(d, true, false, false), false));
    all
}

fn touch(dir: &Path, names: &[&str]) {
    for n in names {
        std::fs::write(dir.join(n), n.as_bytes()).unwrap();
    }
}

fn names(p: &[PathBuf]) -> Vec<String> {
    p.iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn stored_pieces_follow_split_names_until_the_next_is_missing() {
    let d = tempfile::tempdir().unwrap();
    touch(
        d.path(),
        &["i.gz.aa", "i.gz.ab", "i.gz.ac", "other.aa", "i.gz.log"],
    );
    let p = pieces(&d.path().join("i.gz.aa")).unwrap();
    assert_eq!(names(&p), ["i.gz.aa", "i.gz.ab", "i.gz.ac"]);
    // A bare file, and a name whose last part is no piece suffix.
    touch(d.path(), &["bare.img", "x.zst"]);
    assert_eq!(
        names(&pieces(&d.path().join("bare.img")).unwrap()),
        ["bare.img"]
    );
    assert_eq!(names(&pieces(&d.path().join("x.zst")).unwrap()), ["x.zst"]);
    // Three-letter suffixes (split -a 3).
    touch(d.path(), &["t.aaa", "t.aab"]);
    assert_eq!(
        names(&pieces(&d.path().join("t.aaa")).unwrap()),
        ["t.aaa", "t.aab"]
    );
}

#[test]
fn stored_a_piece_after_a_gap_is_an_error_naming_the_missing_one() {
    let d = tempfile::tempdir().unwrap();
    touch(d.path(), &["i.zst.aa", "i.zst.ab", "i.zst.ad"]);
    let e = pieces(&d.path().join("i.zst.aa")).unwrap_err();
    assert_eq!(e.kind, Kind::MissingPiece);
    assert_eq!(e.path, d.path().join("i.zst.ac"));
    let s = e.to_string();
    assert!(
        s.contains("i.zst.ac: is missing") && s.contains("i.zst.ad"),
        "{s}"
    );
    // Not the first piece.
    let e = pieces(&d.path().join("i.zst.ab")).unwrap_err();
    assert_eq!(e.kind, Kind::MissingPiece);
    assert!(e.to_string().contains("start from"), "{e}");
    // No such file.
    let e = pieces(&d.path().join("nothing.aa")).unwrap_err();
    assert_eq!(e.kind, Kind::Io);
    assert!(e.to_string().contains("nothing.aa"), "{e}");
}

#[test]
fn stored_split_names_widen_after_yz_as_gnu_split_does() {
    assert_eq!(successors("aa", 2), ["ab"]);
    assert_eq!(successors("az", 2), ["ba"]);
    assert_eq!(successors("yz", 2), ["za", "zaaa"]);
    assert_eq!(successors("zz", 2), Vec::<String>::new());
    assert_eq!(successors("zaaa", 2), ["zaab"]);
    assert_eq!(successors("zyzz", 2), ["zzaaaa"]);
    assert_eq!(successors("aaz", 3), ["aba"]);
    // GNU split without -a: aa … yz, zaaa, zaab.
    let d = tempfile::tempdir().unwrap();
    let mut s = "aa".to_owned();
    let mut all = Vec::new();
    for _ in 0..652 {
        std::fs::write(d.path().join(format!("w.{s}")), b"x").unwrap();
        all.push(format!("w.{s}"));
        let next = successors(&s, 2);
        s = next.last().unwrap().clone();
    }
    assert_eq!(all[649], "w.yz");
    assert_eq!(all[650], "w.zaaa");
    assert_eq!(names(&pieces(&d.path().join("w.aa")).unwrap()), all);
    // With -a 2: … yz, za … zz.
    let d = tempfile::tempdir().unwrap();
    let mut s = "aa".to_owned();
    for _ in 0..676 {
        std::fs::write(d.path().join(format!("f.{s}")), b"x").unwrap();
        s = successors(&s, 2).first().cloned().unwrap_or_default();
    }
    let p = pieces(&d.path().join("f.aa")).unwrap();
    assert_eq!((p.len(), names(&p).last().unwrap().as_str()), (676, "f.zz"));
}

#[test]
fn stored_joined_pieces_read_as_one_stream_and_know_where_each_byte_is() {
    let d = tempfile::tempdir().unwrap();
    let data = semi(10_000, 1);
    for size in [1, 7, 4096, 10_000] {
        let sub = d.path().join(size.to_string());
        std::fs::create_dir(&sub).unwrap();
        let p = split_into(&sub, "j", &data, size);
        let mut j = Joined::new(p.clone());
        let mut got = Vec::new();
        let mut consumed = 0usize;
        loop {
            let here = j.here();
            if consumed < data.len() {
                assert_eq!(here.piece, consumed / size, "byte {consumed}");
                assert_eq!(here.offset as usize, consumed % size);
            }
            let b = j.peek(5).unwrap().to_vec();
            assert_eq!(b, data[consumed..(consumed + 5).min(data.len())]);
            let b = j.fill().unwrap();
            if b.is_empty() {
                break;
            }
            let n = b.len().min(3);
            got.extend_from_slice(&b[..n]);
            j.consume(n);
            consumed += n;
        }
        assert_eq!(got, data);
        let end = j.here();
        assert_eq!(end.piece, p.len() - 1);
        assert_eq!(end.offset as usize, data.len() - (p.len() - 1) * size);
    }
}

#[test]
fn stored_every_compression_reads_back_whole_and_split() {
    let d = tempfile::tempdir().unwrap();
    let data = semi(600_000, 2);
    for (i, (want, enc, _)) in encoders().into_iter().enumerate() {
        let packed = enc(&data);
        let expect = if want == Compression::None {
            plain(&data)
        } else {
            data.clone()
        };
        // Bare, then in pieces of several sizes.
        let bare = d.path().join(format!("bare{i}"));
        std::fs::write(&bare, &packed).unwrap();
        let (c, got) = read_all(&bare, u64::MAX).unwrap_or_else(|e| panic!("{want}: {e}"));
        assert_eq!(c, want);
        assert!(got == expect, "{want}: bare read back differs");
        for size in [1 << 20, 65_537, 333] {
            let sub = d.path().join(format!("{i}-{size}"));
            std::fs::create_dir(&sub).unwrap();
            let p = split_into(&sub, "img", &packed, size);
            let (c, got) = read_all(&p[0], u64::MAX).unwrap_or_else(|e| panic!("{want}: {e}"));
            assert_eq!(c, want);
            assert!(
                got == expect,
                "{want}: read back in pieces of {size} differs"
            );
        }
    }
}

#[test]
fn stored_members_one_after_another_read_as_one_stream() {
    let d = tempfile::tempdir().unwrap();
    let a = semi(50_000, 3);
    let b = semi(70_000, 4);
    let both = [a.clone(), b.clone()].concat();
    for (want, enc, _) in encoders() {
        if matches!(want, Compression::None | Compression::Lzma) {
            continue;
        }
        let mut packed = enc(&a);
        packed.extend(enc(&b));
        if want == Compression::Zstd || want == Compression::Lz4 {
            // A skippable frame between the two (pzstd writes them).
            let mut skip = 0x184D_2A53u32.to_le_bytes().to_vec();
            skip.extend_from_slice(&5u32.to_le_bytes());
            skip.extend_from_slice(b"hello");
            packed.splice(0..0, skip.clone());
            packed.extend(skip);
        }
        if want == Compression::Xz {
            // Stream padding after the first stream.
            let first = xz(&a).len();
            packed.splice(first..first, [0u8; 8]);
        }
        let p = d.path().join(format!("m-{want}"));
        std::fs::write(&p, &packed).unwrap();
        let (c, got) = read_all(&p, u64::MAX).unwrap_or_else(|e| panic!("{want}: {e}"));
        assert_eq!(c, want);
        assert!(got == both, "{want}: two members differ");
    }
}

#[test]
fn stored_empty_members_and_frames_read_as_nothing() {
    let d = tempfile::tempdir().unwrap();
    for (want, enc, _) in encoders() {
        if want == Compression::None {
            continue;
        }
        let p = d.path().join(format!("e-{want}"));
        std::fs::write(&p, enc(b"")).unwrap();
        let (c, got) = read_all(&p, u64::MAX).unwrap_or_else(|e| panic!("{want}: {e}"));
        assert_eq!((c, got.len()), (want, 0));
    }
}

/// For each compressed form of `data` (but none: no compression), split into `parts` pieces in a
/// directory of its own and damaged by `damage`: the encoder and the error reading it.
fn each_damaged(
    d: &Path,
    data: &[u8],
    parts: usize,
    checked_only: bool,
    damage: impl Fn(&[PathBuf]),
    check: impl Fn(Compression, &[PathBuf], &Error),
) {
    for (i, (want, enc, checked)) in encoders().into_iter().enumerate() {
        if want == Compression::None || checked_only && !checked {
            continue;
        }
        let packed = enc(data);
        let sub = d.join(i.to_string());
        std::fs::create_dir_all(&sub).unwrap();
        let p = split_into(&sub, "img", &packed, packed.len().div_ceil(parts));
        damage(&p);
        match read_all(&p[0], u64::MAX) {
            Ok(_) => panic!("{want}: damage not found"),
            Err(e) => check(want, &p, &e),
        }
    }
}

#[test]
fn stored_truncated_data_names_the_last_piece_and_says_one_may_be_missing() {
    let data = semi(300_000, 5);
    for cut in [1, 20_000] {
        let d = tempfile::tempdir().unwrap();
        let cut_last = |p: &[PathBuf]| {
            let last = std::fs::read(&p[2]).unwrap();
            std::fs::write(&p[2], &last[..last.len().saturating_sub(cut)]).unwrap();
        };
        each_damaged(d.path(), &data, 3, false, cut_last, |want, p, e| {
            assert_eq!((e.kind, &e.path), (Kind::Truncated, &p[2]), "{want}: {e}");
            let s = e.to_string();
            assert!(s.contains("ends before its compressed data does"), "{s}");
            assert!(s.contains("a piece after img.ac may be missing"), "{s}");
        });
    }
    // The last piece missing altogether.
    let d = tempfile::tempdir().unwrap();
    let gone = |p: &[PathBuf]| std::fs::remove_file(&p[2]).unwrap();
    each_damaged(d.path(), &data, 3, false, gone, |want, p, e| {
        assert_eq!((e.kind, &e.path), (Kind::Truncated, &p[1]), "{want}: {e}");
    });
}

#[test]
fn stored_trailing_garbage_is_named_where_it_begins() {
    let d = tempfile::tempdir().unwrap();
    let append = |p: &[PathBuf]| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p[1])
            .unwrap();
        f.write_all(b"garbage!").unwrap();
    };
    each_damaged(
        d.path(),
        &semi(200_000, 6),
        2,
        false,
        append,
        |want, p, e| {
            assert_eq!(
                (e.kind, &e.path),
                (Kind::TrailingGarbage, &p[1]),
                "{want}: {e}"
            );
            let len = std::fs::metadata(&p[1]).unwrap().len();
            assert_eq!(e.offset, Some(len - 8), "{want}: {e}");
            assert!(e.to_string().contains("67 61 72 62"), "{e}");
        },
    );
}

#[test]
fn stored_a_flipped_byte_is_damage_in_the_piece_it_is_in() {
    let d = tempfile::tempdir().unwrap();
    let flip = |p: &[PathBuf]| {
        let mut b = std::fs::read(&p[1]).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x10;
        std::fs::write(&p[1], b).unwrap();
    };
    each_damaged(d.path(), &semi(400_000, 7), 3, true, flip, |want, p, e| {
        assert_eq!(e.kind, Kind::Damaged, "{want}: {e}");
        // Found in the damaged piece, in a block that spans it, or by a checksum at the end of the
        // member, between its start and there.
        assert!(
            e.path == p[1]
                || e.what.contains("to byte") && e.what.contains("img.ab")
                || e.what.contains("between the two"),
            "{want}: {e}"
        );
    });
}

#[test]
fn stored_compressions_are_recognised_by_content_and_others_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    let cases: &[(&[u8], Kind, &str)] = &[
        (
            b"LZIP\x01\x0c\x00\x00\x00\x00",
            Kind::Unsupported,
            "lzip-compressed, which this program does not read; decompress it with lzip -d first",
        ),
        (b"LRZI\x00\x06", Kind::Unsupported, "lrzip-compressed"),
        (
            b"\x02\x21\x4c\x18\x00\x00",
            Kind::Unsupported,
            "lz4's legacy format",
        ),
        (b"\x1f\x9d\x90", Kind::Unsupported, "compress'ed"),
        (b"\0ntfsclone-image", Kind::Unsupported, "ntfsclone"),
        (
            b"\x25\xb5\x2f\xfd\x00",
            Kind::Unsupported,
            "zstd's format of before 1.0",
        ),
        (
            b"hello, world, not compressed",
            Kind::Unknown,
            "unknown compression (first bytes: 68 65 6c 6c 6f 2c",
        ),
        (b"", Kind::Truncated, "is empty"),
    ];
    for (i, (bytes, kind, what)) in cases.iter().enumerate() {
        let p = d.path().join(format!("r{i}.gz.aa"));
        std::fs::write(&p, bytes).unwrap();
        let e = open(&p).unwrap_err();
        assert_eq!(e.kind, *kind, "{e}");
        assert!(e.to_string().contains(what), "{e}");
        assert!(e.to_string().contains(&format!("r{i}.gz.aa")), "{e}");
    }
    // The name says gzip, the content zstd: the content decides.
    let p = d.path().join("liar.gz");
    std::fs::write(&p, zstd(b"x")).unwrap();
    assert_eq!(open(&p).unwrap().compression, Compression::Zstd);
    // Skippable frames first (pzstd), then a zstd frame; or an lz4 one.
    let mut v = 0x184D_2A50u32.to_le_bytes().to_vec();
    v.extend_from_slice(&4u32.to_le_bytes());
    v.extend_from_slice(&[1, 2, 3, 4]);
    let mut z = v.clone();
    z.extend(zstd(b"abc"));
    let mut l = v.clone();
    l.extend(lz4(b"abc", false, true, false));
    for (bytes, want) in [(z, Compression::Zstd), (l, Compression::Lz4)] {
        std::fs::write(&p, &bytes).unwrap();
        let (c, got) = read_all(&p, u64::MAX).unwrap();
        assert_eq!((c, &got[..]), (want, &b"abc"[..]));
    }
    assert_eq!(Compression::Zstd.name(), "zstd");
}

#[test]
fn stored_sizes_beyond_the_formats_bounds_are_refused_without_allocating() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("b");
    // An lz4 block larger than its frame's maximum.
    let mut l = lz4(b"", false, false, false);
    l.truncate(l.len() - 4);
    l.extend_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    std::fs::write(&p, &l).unwrap();
    let e = read_all(&p, u64::MAX).unwrap_err();
    assert_eq!(e.kind, Kind::Damaged, "{e}");
    // An lzop block of 4 GiB.
    let mut z = lzop(b"", 1, false);
    z.truncate(z.len() - 4);
    z.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    z.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    std::fs::write(&p, &z).unwrap();
    let e = read_all(&p, u64::MAX).unwrap_err();
    assert_eq!(e.kind, Kind::Damaged, "{e}");
    // A zstd frame asking for a 2 GiB window (zstd --long=31).
    let mut e = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    e.window_log(31).unwrap();
    e.long_distance_matching(true).unwrap();
    e.write_all(&semi(1000, 1)).unwrap();
    std::fs::write(&p, e.finish().unwrap()).unwrap();
    let e = read_all(&p, u64::MAX).unwrap_err();
    assert_eq!(e.kind, Kind::Unsupported, "{e}");
    assert!(e.to_string().contains("window"), "{e}");
    // An xz stream whose dictionary needs more memory than the limit.
    let mut opts = liblzma::stream::LzmaOptions::new_preset(1).unwrap();
    opts.dict_size(512 << 20);
    let mut filters = liblzma::stream::Filters::new();
    filters.lzma2(&opts);
    let s = liblzma::stream::Stream::new_stream_encoder(&filters, liblzma::stream::Check::Crc32)
        .unwrap();
    let mut w = liblzma::write::XzEncoder::new_stream(Vec::new(), s);
    w.write_all(b"small").unwrap();
    std::fs::write(&p, w.finish().unwrap()).unwrap();
    let e = read_all(&p, u64::MAX).unwrap_err();
    assert_eq!(e.kind, Kind::Unsupported, "{e}");
    assert!(e.to_string().contains("MiB of memory"), "{e}");
}

#[test]
fn stored_a_reader_that_failed_keeps_failing() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t");
    let z = zstd(&semi(100_000, 9));
    std::fs::write(&p, &z[..z.len() / 2]).unwrap();
    let mut o = open(&p).unwrap();
    let mut sink = Vec::new();
    let e = o.reader.read_to_end(&mut sink).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    let again = o.reader.read(&mut [0u8; 10]).unwrap_err();
    assert_eq!(again.to_string(), e.to_string());
    assert_eq!(stored_error(&again).kind, Kind::Truncated);
}
