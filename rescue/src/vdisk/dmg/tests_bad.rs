//! Damaged, cut, hostile and unsupported DMGs: each is an error that says what and where, never a panic
//! and never an allocation beyond the reader's bounds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;

use proptest::prelude::*;

use super::test_writer::{self as w, chunk};
use super::tests::{disk, dmg, open_bytes};

/// A small DMG of zlib, raw, ADC, xz and zero chunks over 96 sectors, and its disk.
fn sample() -> (Vec<u8>, Vec<u8>) {
    let mut want = disk(96 * 512, 4);
    want[80 * 512..].fill(0);
    let s = |a: usize, b: usize| &want[a * 512..b * 512];
    let file = w::write(
        &[w::table(
            "disk",
            0,
            96,
            vec![
                chunk(w::ZLIB, 0, s(0, 32)),
                chunk(w::RAW, 32, s(32, 40)),
                chunk(w::ADC, 40, s(40, 64)),
                chunk(w::XZ, 64, s(64, 80)),
                chunk(w::ZERO, 80, s(80, 96)),
            ],
        )],
        96,
    );
    (file, want)
}

/// The error opening `file` as a DMG; it must be one.
fn refused(file: Vec<u8>) -> std::io::Error {
    match open_bytes(file) {
        Ok(Some(_)) => panic!("opened"),
        Ok(None) => panic!("not recognised as a DMG"),
        Err(e) => e,
    }
}

fn says(e: &std::io::Error, words: &[&str]) {
    let text = e.to_string();
    assert!(text.starts_with("test.dmg: "), "names the file: {text}");
    for word in words {
        assert!(text.contains(word), "{word:?} in {text}");
    }
}

/// `file` with its trailer's bytes `at` set to `value`.
fn patch(mut file: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
    let k = file.len() - 512;
    file[k + at..k + at + value.len()].copy_from_slice(value);
    file
}

/// One table of the given chunks over `count` sectors.
fn one_table(count: u64, chunks: Vec<w::Chunk>, sectors: u64) -> Vec<u8> {
    w::write(&[w::table("disk", 0, count, chunks)], sectors)
}

/// Open `file` and, if it opens, read these ranges: whatever happens, no panic.
fn open_and_read(file: Vec<u8>, reads: &[(u64, usize)]) {
    if let Ok(Some(v)) = open_bytes(file) {
        for &(at, len) in reads {
            let mut buf = vec![0u8; len];
            let _ = v.disk.read_exact_at(&mut buf, at);
        }
    }
}

#[test]
fn a_damaged_trailer_is_refused_by_what_is_wrong() {
    let (file, _) = sample();
    let len = file.len() as u64;
    // Not a koly: no DMG at all (a raw file); opened as a DMG anyway, it says so.
    let bad = patch(file.clone(), 0, b"kolx");
    assert!(open_bytes(bad.clone()).unwrap().is_none());
    let e = super::Dmg::open(std::sync::Arc::new(bad), std::path::Path::new("test.dmg"))
        .err()
        .unwrap();
    says(&e, &["no DMG trailer"]);
    let e = super::Dmg::open(
        std::sync::Arc::new(vec![0u8; 100]),
        std::path::Path::new("test.dmg"),
    )
    .err()
    .unwrap();
    says(&e, &["shorter than a DMG trailer"]);
    says(
        &refused(patch(file.clone(), 4, &5u32.to_be_bytes())),
        &["version 5"],
    );
    says(
        &refused(patch(file.clone(), 216, &(len - 600).to_be_bytes())),
        &["property list", "past the end of the file"],
    );
    says(
        &refused(patch(file.clone(), 224, &u64::MAX.to_be_bytes())),
        &["property list of 18446744073709551615 bytes"],
    );
    says(
        &refused(patch(file.clone(), 24, &u64::MAX.to_be_bytes())),
        &["data fork", "past the end"],
    );
    says(
        &refused(patch(file.clone(), 60, &3u32.to_be_bytes())),
        &["3 segments", ".dmgpart"],
    );
    let old = patch(
        patch(file.clone(), 224, &0u64.to_be_bytes()),
        48,
        &100u64.to_be_bytes(),
    );
    let e = refused(old);
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    says(&e, &["resource fork", "10.2"]);
    says(
        &refused(patch(file.clone(), 224, &0u64.to_be_bytes())),
        &["no property list"],
    );
    says(
        &refused(patch(file.clone(), 492, &u64::MAX.to_be_bytes())),
        &["sector count", "beyond any disk"],
    );
    says(
        &refused(patch(file, 492, &50u64.to_be_bytes())),
        &["past the disk's 50 sectors"],
    );
}

#[test]
fn a_cut_file_is_no_dmg_or_says_where_its_data_ends() {
    let (file, _) = sample();
    // Cut anywhere: the trailer is gone, so it is not recognised (and reads as a raw file).
    for cut in [600, file.len() / 2, file.len() - 1] {
        assert!(open_bytes(file[..cut].to_vec()).unwrap().is_none());
    }
    // Cut inside the data, its list and trailer kept: the chunks after the cut are past the end.
    let k = file.len() - 512;
    let plist_at = u64::from_be_bytes(file[k + 216..k + 224].try_into().unwrap()) as usize;
    let plist_len = u64::from_be_bytes(file[k + 224..k + 232].try_into().unwrap()) as usize;
    let keep = 1000;
    let mut cut = file[..keep].to_vec();
    cut.extend_from_slice(&file[plist_at..plist_at + plist_len]);
    let trailer = w::koly(keep as u64, (keep as u64, plist_len as u64), 96);
    cut.extend_from_slice(&trailer);
    says(
        &refused(cut),
        &[
            "chunk 0 of block table `disk`",
            "past the end of the file's data",
        ],
    );
}

#[test]
fn chunks_that_overlap_go_backwards_or_leave_the_disk_are_refused_with_their_place() {
    let d = disk(64 * 512, 6);
    let s = |a: usize, b: usize| &d[a * 512..b * 512];
    says(
        &refused(one_table(
            64,
            vec![chunk(w::RAW, 8, s(0, 16)), chunk(w::RAW, 0, s(16, 24))],
            64,
        )),
        &["chunk 1 of block table `disk`", "comes before"],
    );
    says(
        &refused(one_table(16, vec![chunk(w::RAW, 8, s(0, 16))], 64)),
        &["chunk 0", "past the end of its table's sectors"],
    );
    let two = w::write(
        &[
            w::table("first", 0, 16, vec![chunk(w::RAW, 0, s(0, 16))]),
            w::table("second", 8, 16, vec![chunk(w::RAW, 0, s(16, 32))]),
        ],
        64,
    );
    says(
        &refused(two),
        &["`first` and `second` both hold sectors 8..16"],
    );
    let mut far = chunk(w::RAW, 0, s(0, 8));
    far.sector = u64::MAX - 2;
    says(
        &refused(one_table(u64::MAX, vec![far], 64)),
        &["beyond any disk"],
    );
}

#[test]
fn huge_counts_and_lengths_are_refused_before_anything_is_allocated() {
    let d = disk(8 * 512, 8);
    // A zlib chunk claiming a million sectors (512 MiB decompressed).
    let mut big = chunk(w::ZLIB, 0, &d);
    big.count = 1 << 20;
    let e = refused(one_table(1 << 20, vec![big], 1 << 20));
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    says(&e, &["1048576 sectors in one zlib stream", "64 MiB"]);
    // A compressed length far over what its sectors need, and a raw one short of them.
    let mut long = chunk(w::ZLIB, 0, &d);
    long.stored.resize(64 * 1024, 0);
    says(
        &refused(one_table(8, vec![long], 8)),
        &["more than any codec needs"],
    );
    let mut short = chunk(w::RAW, 0, &d);
    short.stored.truncate(100);
    says(
        &refused(one_table(8, vec![short], 8)),
        &["stores 100 raw bytes for 4096"],
    );
    // A table claiming more chunk entries than its data holds.
    let file = w::write_patched(
        &[w::table("disk", 0, 8, vec![chunk(w::RAW, 0, &d)])],
        8,
        |mish| mish[200..204].copy_from_slice(&u32::MAX.to_be_bytes()),
    );
    says(
        &refused(file),
        &["says it has 4294967295 chunks; its 284 bytes hold 2"],
    );
    // A table that is no `mish` table.
    let file = w::write_patched(
        &[w::table("disk", 0, 8, vec![chunk(w::RAW, 0, &d)])],
        8,
        |mish| mish[..4].copy_from_slice(b"mash"),
    );
    says(
        &refused(file),
        &["block table `disk` (`blkx` entry 0) is not a `mish` table"],
    );
}

#[test]
fn unknown_chunk_types_and_bad_lists_are_refused_by_name() {
    let d = disk(8 * 512, 8);
    let mut odd = chunk(w::RAW, 0, &d);
    odd.kind = 0x8000_0009;
    let e = refused(one_table(8, vec![odd], 8));
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    says(&e, &["type 0x80000009", "does not know"]);
    // A list that is not a property list, at the byte where it goes wrong.
    let file = one_table(8, vec![chunk(w::RAW, 0, &d)], 8);
    let k = file.len() - 512;
    let plist_at = u64::from_be_bytes(file[k + 216..k + 224].try_into().unwrap()) as usize;
    let mut bad = file.clone();
    let key = plist_at
        + String::from_utf8_lossy(&file[plist_at..k])
            .find("<key>blkx")
            .unwrap();
    bad[key + 1..key + 4].copy_from_slice(b"kex");
    says(
        &refused(bad),
        &["its property list, at byte", "without its `<key>`"],
    );
    let mut bad = file;
    let data = plist_at
        + String::from_utf8_lossy(&bad[plist_at..k])
            .find("<data>")
            .unwrap();
    bad[data + 7] = b'!';
    says(&refused(bad), &["property list", "base64"]);
}

#[test]
fn a_damaged_compressed_chunk_is_an_error_when_read() {
    let (file, want) = sample();
    // Damage the zlib stream's middle: opening works, reading its sectors says which chunk.
    let mut bad = file.clone();
    for b in &mut bad[100..140] {
        *b ^= 0x55;
    }
    let v = dmg(bad);
    let mut buf = vec![0u8; 512];
    let e = v.disk.read_exact_at(&mut buf, 512).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    says(&e, &["zlib chunk of sectors 0..32", "does not decompress"]);
    // The other chunks still read.
    v.disk.read_exact_at(&mut buf, 33 * 512).unwrap();
    assert!(buf == want[33 * 512..34 * 512]);
    // A stream that gives more than its sectors: a 16-sector zlib stream under an 8-sector entry.
    let d = disk(16 * 512, 2);
    let mut more = chunk(w::ZLIB, 0, &d);
    more.count = 8;
    let v = dmg(one_table(8, vec![more], 8));
    let e = v.disk.read_exact_at(&mut buf, 0).err().unwrap();
    says(&e, &["more than the chunk's 4096 bytes"]);
    // One that gives less: an 8-sector stream under a 16-sector entry.
    let mut less = chunk(w::XZ, 0, &d[..8 * 512]);
    less.count = 16;
    let v = dmg(one_table(16, vec![less], 16));
    let e = v.disk.read_exact_at(&mut buf, 0).err().unwrap();
    says(&e, &["xz chunk", "gives 4096 bytes, not the chunk's 8192"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A valid DMG with bytes changed anywhere (trailer, list, chunks): refused, or read, never a panic;
    /// where only chunk bytes changed, the chunks untouched read as before.
    #[test]
    fn a_mutated_dmg_is_refused_or_read_never_a_panic(
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        reads in proptest::collection::vec((0u64..96 * 512, 1usize..9000), 1..6),
    ) {
        let (mut file, _) = sample();
        let n = file.len();
        for (at, value) in changes {
            file[at.index(n)] = value;
        }
        open_and_read(file, &reads);
    }

    /// Random chunk entries under a valid list and trailer: refused or read, never a panic.
    #[test]
    fn random_chunk_entries_are_refused_or_read_never_a_panic(
        entries in proptest::collection::vec(
            (prop_oneof![Just(0u32), Just(1), Just(2), Just(0x8000_0004), Just(0x8000_0005),
                Just(0x8000_0006), Just(0x8000_0007), Just(0x8000_0008), Just(0x7fff_fffe), any::<u32>()],
             0u64..200, 0u64..100, 0u64..5000, 0u64..5000),
            0..10),
        noise in proptest::collection::vec(any::<u8>(), 0..4096),
        sectors in 0u64..400,
        reads in proptest::collection::vec((0u64..200 * 512, 1usize..9000), 1..6),
    ) {
        let mut chunks = Vec::new();
        for (kind, sector, count, _, len) in &entries {
            chunks.push(w::Chunk {
                kind: *kind,
                sector: *sector,
                count: *count,
                stored: noise.iter().cycle().take(*len as usize % (noise.len() + 1)).copied().collect(),
            });
        }
        let file = one_table(200, chunks, sectors);
        open_and_read(file, &reads);
    }

    /// Each codec's valid stream with bytes changed, or cut: an error or exactly the chunk, never a
    /// panic.
    #[test]
    fn damaged_streams_decode_or_fail_never_a_panic(
        codec in 0usize..5,
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        len in prop_oneof![Just(8 * 512), 0usize..20_000],
    ) {
        let (kind, codec) = [
            (w::ADC, super::Codec::Adc),
            (w::ZLIB, super::Codec::Zlib),
            (w::BZIP2, super::Codec::Bzip2),
            (w::LZFSE, super::Codec::Lzfse),
            (w::XZ, super::Codec::Xz),
        ][codec];
        let mut stream = chunk(kind, 0, &disk(8 * 512, 12)).stored;
        let n = stream.len();
        for (at, value) in changes {
            stream[at.index(n)] = value;
        }
        stream.truncate(n - cut.index(n / 4 + 1));
        if let Ok(out) = super::codec::decompress(codec, &stream, len) {
            prop_assert_eq!(out.len(), len);
        }
    }
}
