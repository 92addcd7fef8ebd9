//! Properties: any bytes are read or refused without a panic; any stream the writer makes reads back as
//! its filesystem; any flipped byte after the header of a checksummed stream is found.

use proptest::prelude::*;

use super::tests::rebuild;
use super::write::{write, Options};
use super::*;

fn mode() -> impl Strategy<Value = ChecksumMode> {
    prop_oneof![
        Just(ChecksumMode::None),
        Just(ChecksumMode::Crc32),
        Just(ChecksumMode::Xxh64),
        Just(ChecksumMode::Xxh128),
    ]
}

fn options() -> impl Strategy<Value = Options> {
    (
        any::<bool>(),
        prop_oneof![Just(1u32), Just(16), Just(512)],
        mode(),
        1u32..9,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(v1, block_size, checksum, bpc, reseed, all)| {
            if v1 {
                return Options {
                    version: Version::V1,
                    block_size,
                    ..Options::default()
                };
            }
            let none = checksum == ChecksumMode::None;
            Options {
                version: Version::V2,
                block_size,
                checksum,
                blocks_per_checksum: if none { 0 } else { bpc },
                reseed: reseed || none,
                bitmap: if all {
                    BitmapMode::None
                } else {
                    BitmapMode::Bit
                },
            }
        })
}

fn filesystem(o: &Options, used: &[bool], seed: u8) -> Vec<Option<Vec<u8>>> {
    used.iter()
        .enumerate()
        .map(|(n, &u)| {
            (u || o.bitmap == BitmapMode::None).then(|| {
                (0..o.block_size)
                    .map(|i| seed ^ (n as u8).wrapping_mul(13) ^ i as u8)
                    .collect()
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any bytes behind a partclone signature: refused or read, never a panic.
    #[test]
    fn any_bytes_are_refused_or_read_never_a_panic(
        mut data in proptest::collection::vec(any::<u8>(), 0..6000),
        v1 in any::<bool>(),
        fix_crc in any::<bool>(),
        run_bytes in 1usize..3000,
    ) {
        if data.len() >= 110 {
            data[..15].copy_from_slice(b"partclone-image");
            data[30..34].copy_from_slice(if v1 { b"0001" } else { b"0002" });
            if fix_crc {
                // Past the header CRC, so that the fields and the bitmap are looked at.
                data[34..36].copy_from_slice(&0xC0DEu16.to_le_bytes());
                data[88..92].copy_from_slice(&18u32.to_le_bytes());
                data[92..94].copy_from_slice(&2u16.to_le_bytes());
                data[60..64].iter_mut().for_each(|b| *b &= 0x3F);
                data[64..68].fill(0);
                let crc = super::checksum::crc32(&data[..106]);
                data[106..110].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let limits = Limits { run_bytes, max_bitmap_bytes: 1 << 20, ..Limits::default() };
        if let Ok(mut s) = Stream::with_limits(&data[..], "any.img", limits) {
            while let Ok(Some(run)) = s.next_run() {
                prop_assert!(run.blocks.end <= s.header().total_blocks);
            }
        }
        let _ = verify(&data[..], "any.img");
    }

    /// Whatever the layout, the stream reads back as the filesystem it was written from.
    #[test]
    fn written_streams_read_back_as_their_filesystem(
        o in options(),
        used in proptest::collection::vec(any::<bool>(), 1..80),
        seed in any::<u8>(),
    ) {
        let fs = filesystem(&o, &used, seed);
        let stream = write(&o, &fs);
        let (h, got) = rebuild(&stream, "w.img").map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want: Vec<u8> = fs.iter()
            .flat_map(|b| b.clone().unwrap_or_else(|| vec![0; o.block_size as usize]))
            .collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(h.block_size, o.block_size);
    }

    /// A flipped byte anywhere after the header is found (as a checksum error, or as a stream that ends
    /// early or late), except where version 0001's CRC never looks.
    #[test]
    fn a_flipped_byte_of_a_checksummed_stream_is_found(
        o in options(),
        used in proptest::collection::vec(any::<bool>(), 1..60),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        prop_assume!(o.version == Version::V2 && o.checksum != ChecksumMode::None);
        let stream = write(&o, &filesystem(&o, &used, 0x5A));
        let at = at.index(stream.len());
        let mut bad = stream.clone();
        bad[at] ^= 1 << bit;
        match verify(&bad[..], "flip.img") {
            Err(e) => prop_assert!(e.offset <= bad.len() as u64),
            Ok(r) => prop_assert!(false, "byte {} of {} flipped, not found: {:?}", at, stream.len(), r),
        }
    }
}
