//! Streams written by the test writer (`write.rs`): every checksum mode and layout, damage and
//! truncation named where they are.

use super::write::{write, Options};
use super::*;

/// The filesystem a stream restores to: its used blocks where they belong, zeros elsewhere.
pub(super) fn rebuild(stream: &[u8], name: &str) -> Result<(Header, Vec<u8>), Error> {
    let mut s = Stream::open(stream, name)?;
    let h = s.header().clone();
    let size = h.filesystem_bytes().expect("checked by the header");
    let mut fs = vec![0u8; size as usize];
    let bs = u64::from(h.block_size);
    let mut next = 0;
    while let Some(run) = s.next_run()? {
        assert!(run.blocks.start >= next, "runs come in order");
        assert_eq!(
            run.data.len() as u64,
            (run.blocks.end - run.blocks.start) * bs
        );
        let at = (run.blocks.start * bs) as usize;
        fs[at..at + run.data.len()].copy_from_slice(run.data);
        next = run.blocks.end;
    }
    assert!(s.ended());
    Ok((h, fs))
}

/// `total` blocks of `bs` bytes; block n is used when `used(n)`, and holds bytes derived from n.
fn blocks(total: u64, bs: u32, used: impl Fn(u64) -> bool) -> Vec<Option<Vec<u8>>> {
    (0..total)
        .map(|n| {
            used(n).then(|| {
                (0..bs)
                    .map(|i| (n as u32).wrapping_mul(31).wrapping_add(i * 7) as u8)
                    .collect()
            })
        })
        .collect()
}

fn flat(blocks: &[Option<Vec<u8>>], bs: u32) -> Vec<u8> {
    blocks
        .iter()
        .flat_map(|b| b.clone().unwrap_or_else(|| vec![0; bs as usize]))
        .collect()
}

fn all_options() -> Vec<Options> {
    let mut v = Vec::new();
    for checksum in [
        ChecksumMode::None,
        ChecksumMode::Crc32,
        ChecksumMode::Xxh64,
        ChecksumMode::Xxh128,
    ] {
        for bpc in [1, 3, 4, 64] {
            for reseed in [true, false] {
                for bitmap in [BitmapMode::Bit, BitmapMode::None] {
                    if checksum == ChecksumMode::None && (bpc != 1 || !reseed) {
                        continue;
                    }
                    v.push(Options {
                        checksum,
                        blocks_per_checksum: if checksum == ChecksumMode::None {
                            0
                        } else {
                            bpc
                        },
                        reseed,
                        bitmap,
                        ..Options::default()
                    });
                }
            }
        }
    }
    v.push(Options {
        version: Version::V1,
        ..Options::default()
    });
    v
}

#[test]
fn every_layout_reads_back_as_its_filesystem() {
    for o in all_options() {
        for total in [1u64, 7, 8, 9, 50] {
            let used = |n: u64| o.bitmap == BitmapMode::None || n % 3 != 1;
            let b = blocks(total, o.block_size, used);
            let stream = write(&o, &b);
            let (h, fs) =
                rebuild(&stream, "t.img").unwrap_or_else(|e| panic!("{o:?} {total}: {e}"));
            assert_eq!(fs, flat(&b, o.block_size), "{o:?} {total}");
            assert_eq!(h.total_blocks, total);
            let r = verify(&stream[..], "t.img").unwrap();
            assert_eq!(r.stream_bytes, stream.len() as u64);
            assert_eq!(r.trailing_bytes, 0);
            assert_eq!(
                r.used_blocks,
                (0..total).filter(|&n| used(n)).count() as u64
            );
            let bpc = u64::from(h.blocks_per_checksum);
            if bpc > 0 {
                assert_eq!(r.checksums, r.used_blocks.div_ceil(bpc), "{o:?}");
            }
        }
    }
}

#[test]
fn small_runs_and_a_large_run_limit_give_the_same_blocks() {
    let o = Options::default();
    let b = blocks(100, 512, |n| n % 10 < 7);
    let stream = write(&o, &b);
    for run_bytes in [1, 512, 1000, 1 << 20] {
        let limits = Limits {
            run_bytes,
            ..Limits::default()
        };
        let mut s = Stream::with_limits(&stream[..], "t", limits).unwrap();
        let mut got = vec![0u8; 100 * 512];
        while let Some(run) = s.next_run().unwrap() {
            assert!(run.data.len() <= run_bytes.max(512));
            let at = run.blocks.start as usize * 512;
            got[at..at + run.data.len()].copy_from_slice(run.data);
        }
        assert_eq!(got, flat(&b, 512));
        assert!(s.next_run().unwrap().is_none());
    }
}

/// Where used block `k` (counting from 0) starts in a stream of `o` whose data starts at `data`.
fn block_offset(o: &Options, data: usize, k: usize) -> usize {
    let size = match o.version {
        Version::V1 => 4,
        Version::V2 => o.checksum.size(),
    };
    let bpc = match o.version {
        Version::V1 => 1,
        Version::V2 => o.blocks_per_checksum as usize,
    };
    let sums = k.checked_div(bpc).unwrap_or(0);
    data + k * o.block_size as usize + sums * size
}

#[test]
fn a_flipped_data_byte_names_the_checksum_group_that_holds_it() {
    let b = blocks(40, 512, |n| n % 4 != 3); // 30 used blocks
    for (checksum, bpc, reseed) in [
        (ChecksumMode::Crc32, 1, true),
        (ChecksumMode::Crc32, 4, true),
        (ChecksumMode::Crc32, 7, false),
        (ChecksumMode::Xxh64, 4, true),
        (ChecksumMode::Xxh128, 64, true),
    ] {
        let o = Options {
            checksum,
            blocks_per_checksum: bpc,
            reseed,
            ..Options::default()
        };
        let stream = write(&o, &b);
        let data = 110 + 5 + 4;
        let used: Vec<u64> = (0..40).filter(|n| n % 4 != 3).collect();
        for k in [0usize, 5, 13, 29] {
            let mut bad = stream.clone();
            bad[block_offset(&o, data, k) + 100] ^= 0x10;
            let e = verify(&bad[..], "sda1.img").unwrap_err();
            assert_eq!(e.kind, Kind::Checksum, "{e}");
            let bpc = bpc as usize;
            let group = k / bpc;
            let first = used[group * bpc];
            let last = used[(group * bpc + bpc - 1).min(used.len() - 1)];
            assert_eq!(e.blocks, Some(first..=last), "{checksum:?} {bpc} {k}: {e}");
            assert!(e.blocks.as_ref().unwrap().contains(&used[k]));
            let last_k = (group * bpc + bpc - 1).min(used.len() - 1);
            let sum_at = block_offset(&o, data, last_k) + 512;
            assert_eq!(e.offset, sum_at as u64, "{e}");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("sda1.img: byte {sum_at}, block")),
                "{text}"
            );
            assert!(text.contains(checksum.name()), "{text}");
        }
    }
}

#[test]
fn version_0001_checks_the_first_byte_of_each_block_only() {
    let o = Options {
        version: Version::V1,
        ..Options::default()
    };
    let b = blocks(20, 512, |n| n != 4);
    let stream = write(&o, &b);
    let data = 4160 + 20 + 8;
    // The first byte of used block 6 (block 7): found, named, at its CRC.
    let mut bad = stream.clone();
    bad[block_offset(&o, data, 6)] ^= 1;
    let e = verify(&bad[..], "old.img").unwrap_err();
    assert_eq!(
        (e.kind, e.blocks.clone()),
        (Kind::Checksum, Some(7..=7)),
        "{e}"
    );
    assert_eq!(e.offset, (block_offset(&o, data, 6) + 512) as u64);
    // Any other byte: version 0001's CRC never saw it, as partclone's did not.
    let mut unseen = stream.clone();
    unseen[block_offset(&o, data, 6) + 1] ^= 1;
    assert!(verify(&unseen[..], "old.img").is_ok());
    // A bitmap byte other than 1 is an unused block; the signature must follow.
    let mut sig = stream.clone();
    sig[4160 + 20] = b'X';
    let e = verify(&sig[..], "old.img").unwrap_err();
    assert_eq!((e.kind, e.offset), (Kind::Invalid, 4180), "{e}");
}

#[test]
fn damaged_headers_and_bitmaps_are_named_at_their_crc() {
    let o = Options::default();
    let b = blocks(30, 512, |n| n % 2 == 0);
    let stream = write(&o, &b);
    for at in [20, 40, 60, 84, 100, 105] {
        let mut bad = stream.clone();
        bad[at] ^= 0x01;
        let e = verify(&bad[..], "h.img").unwrap_err();
        assert_eq!((e.kind, e.offset), (Kind::Checksum, 106), "{at}: {e}");
    }
    let mut bad = stream.clone();
    bad[0] = b'P';
    assert_eq!(verify(&bad[..], "h.img").unwrap_err().kind, Kind::Invalid);
    let mut bad = stream.clone();
    bad[110 + 2] ^= 0x80;
    let e = verify(&bad[..], "h.img").unwrap_err();
    assert_eq!((e.kind, e.offset), (Kind::Checksum, 110 + 4), "{e}");
    assert!(e.to_string().contains("bitmap"), "{e}");
}

/// A version 0002 header with `edit` applied and its CRC made right again.
fn header_with(edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut s = write(&Options::default(), &blocks(8, 512, |_| true));
    edit(&mut s[..110]);
    let crc = super::checksum::crc32(&s[..106]);
    s[106..110].copy_from_slice(&crc.to_le_bytes());
    s
}

#[test]
fn fields_partclone_never_writes_are_refused_by_offset() {
    let cases: Vec<(Vec<u8>, Kind, u64)> = vec![
        (
            header_with(|h| h[34..36].copy_from_slice(&[0xC0, 0xDE])),
            Kind::Unsupported,
            34,
        ),
        (
            header_with(|h| h[30..34].copy_from_slice(b"0003")),
            Kind::Unsupported,
            30,
        ),
        (header_with(|h| h[96] = 1), Kind::Unsupported, 96),
        (header_with(|h| h[98] = 8), Kind::Invalid, 98),
        (header_with(|h| h[100..104].fill(0)), Kind::Invalid, 100),
        (header_with(|h| h[104] = 2), Kind::Invalid, 104),
        (header_with(|h| h[105] = 8), Kind::Unsupported, 105),
        (header_with(|h| h[105] = 3), Kind::Invalid, 105),
        (header_with(|h| h[88] = 20), Kind::Unsupported, 88),
        (header_with(|h| h[84..88].fill(0)), Kind::Invalid, 84),
        (header_with(|h| h[60..68].fill(0xFF)), Kind::Invalid, 84),
    ];
    for (i, (s, kind, offset)) in cases.into_iter().enumerate() {
        let e = verify(&s[..], "f.img").unwrap_err();
        assert_eq!((e.kind, e.offset), (kind, offset), "case {i}: {e}");
    }
}

#[test]
fn sizes_beyond_the_limits_are_refused_before_anything_is_allocated() {
    // 2^40 blocks: a 128 GiB bitmap.
    let s = header_with(|h| h[60..68].copy_from_slice(&(1u64 << 40).to_le_bytes()));
    let e = verify(&s[..], "big.img").unwrap_err();
    assert_eq!(e.kind, Kind::Unsupported, "{e}");
    let s = header_with(|h| h[84..88].copy_from_slice(&(1u32 << 30).to_le_bytes()));
    assert_eq!(
        verify(&s[..], "big.img").unwrap_err().kind,
        Kind::Unsupported
    );
    // Within the limits but longer than the stream: it ends inside the bitmap.
    let s = header_with(|h| h[60..68].copy_from_slice(&(1u64 << 30).to_le_bytes()));
    let e = verify(&s[..], "big.img").unwrap_err();
    assert_eq!((e.kind, e.offset), (Kind::Truncated, s.len() as u64), "{e}");
}

#[test]
fn every_truncation_is_an_error_at_the_end_of_the_stream() {
    for o in [
        Options::default(),
        Options {
            version: Version::V1,
            ..Options::default()
        },
        Options {
            checksum: ChecksumMode::None,
            blocks_per_checksum: 0,
            ..Options::default()
        },
    ] {
        let b = blocks(12, 512, |n| n != 2);
        let stream = write(&o, &b);
        for len in 0..stream.len() {
            let e = verify(&stream[..len], "cut.img").unwrap_err();
            assert_eq!(e.kind, Kind::Truncated, "{len}: {e}");
            assert_eq!(e.offset, len as u64, "{e}");
        }
        // Inside a block, the block is named.
        let data = if o.version == Version::V1 {
            4160 + 12 + 8
        } else {
            110 + 2 + 4
        };
        let e = verify(&stream[..block_offset(&o, data, 4) + 10], "cut.img").unwrap_err();
        assert_eq!(e.blocks, Some(5..=5), "{e}");
    }
}

#[test]
fn trailing_bytes_are_counted_not_read_as_blocks() {
    let mut s = write(&Options::default(), &blocks(8, 512, |_| true));
    let len = s.len() as u64;
    s.extend_from_slice(&[0xAA; 1000]);
    let r = verify(&s[..], "t.img").unwrap();
    assert_eq!((r.stream_bytes, r.trailing_bytes), (len, 1000));
}

#[test]
fn errors_convert_to_io_errors_of_their_kind() {
    let e = verify(&b"partclone-image"[..], "x").unwrap_err();
    assert_eq!(e.kind, Kind::Truncated);
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), std::io::ErrorKind::UnexpectedEof);
    assert!(io.to_string().starts_with("x: byte 15: "), "{io}");
}
