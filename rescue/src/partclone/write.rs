//! A partclone stream writer for the tests, written from partclone's source (main.c's clone loop,
//! partclone.c's `write_image_desc`/`write_image_bitmap`), for what Debian's partclone 0.3.23 cannot write:
//! version 0001, XXH64/XXH128, no bitmap (tool_tests.rs checks the first two against real partclones when
//! they are at hand).

use super::checksum::{crc32, ChecksumMode, Sum};
use super::header::{BitmapMode, Version, MAGIC};

#[derive(Debug, Clone)]
pub(super) struct Options {
    pub version: Version,
    pub block_size: u32,
    pub checksum: ChecksumMode,
    pub blocks_per_checksum: u32,
    pub reseed: bool,
    pub bitmap: BitmapMode,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            version: Version::V2,
            block_size: 512,
            checksum: ChecksumMode::Crc32,
            blocks_per_checksum: 4,
            reseed: true,
            bitmap: BitmapMode::Bit,
        }
    }
}

/// The stream of a filesystem whose block `n` is `blocks[n]` (`None`: unused; each used block
/// `block_size` bytes).
pub(super) fn write(o: &Options, blocks: &[Option<Vec<u8>>]) -> Vec<u8> {
    let total = blocks.len() as u64;
    let used = blocks.iter().filter(|b| b.is_some()).count() as u64;
    let bs = o.block_size;
    let mut s = Vec::new();
    match o.version {
        Version::V2 => {
            s.extend_from_slice(MAGIC);
            let mut v = [0u8; 14];
            v[..6].copy_from_slice(b"0.3.23");
            s.extend_from_slice(&v);
            s.extend_from_slice(b"0002");
            s.extend_from_slice(&0xC0DEu16.to_le_bytes());
            let mut fs = [0u8; 16];
            fs[..4].copy_from_slice(b"TEST");
            s.extend_from_slice(&fs);
            s.extend_from_slice(&(total * u64::from(bs)).to_le_bytes());
            s.extend_from_slice(&total.to_le_bytes());
            s.extend_from_slice(&used.to_le_bytes());
            s.extend_from_slice(&used.to_le_bytes());
            s.extend_from_slice(&bs.to_le_bytes());
            s.extend_from_slice(&18u32.to_le_bytes());
            s.extend_from_slice(&2u16.to_le_bytes());
            s.extend_from_slice(&64u16.to_le_bytes());
            s.extend_from_slice(&o.checksum.code().to_le_bytes());
            s.extend_from_slice(&(o.checksum.size() as u16).to_le_bytes());
            s.extend_from_slice(&o.blocks_per_checksum.to_le_bytes());
            s.push(u8::from(o.reseed));
            s.push(match o.bitmap {
                BitmapMode::Bit => 1,
                BitmapMode::None => 0,
                BitmapMode::Byte => 8,
            });
            let crc = crc32(&s);
            s.extend_from_slice(&crc.to_le_bytes());
            assert_eq!(s.len(), 110);
            if o.bitmap == BitmapMode::Bit {
                let mut bits = vec![0u8; total.div_ceil(8) as usize];
                for (n, b) in blocks.iter().enumerate() {
                    if b.is_some() {
                        bits[n / 8] |= 1 << (n % 8);
                    }
                }
                s.extend_from_slice(&bits);
                s.extend_from_slice(&crc32(&bits).to_le_bytes());
            }
        }
        Version::V1 => {
            s.extend_from_slice(&MAGIC[..15]);
            let mut fs = [0u8; 15];
            fs[..4].copy_from_slice(b"EXT2");
            s.extend_from_slice(&fs);
            s.extend_from_slice(b"0001");
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(&bs.to_le_bytes());
            s.extend_from_slice(&(total * u64::from(bs)).to_le_bytes());
            s.extend_from_slice(&total.to_le_bytes());
            s.extend_from_slice(&used.to_le_bytes());
            s.resize(4160, 0);
            s.extend(blocks.iter().map(|b| u8::from(b.is_some())));
            s.extend_from_slice(b"BiTmAgIc");
        }
    }
    let (mode, bpc, reseed) = match o.version {
        Version::V2 => (o.checksum, o.blocks_per_checksum, o.reseed),
        Version::V1 => (ChecksumMode::Crc32V1, 1, false),
    };
    let mut sum = Sum::new(mode);
    let mut in_group = 0;
    for b in blocks.iter().flatten() {
        assert_eq!(b.len(), bs as usize);
        s.extend_from_slice(b);
        sum.update(b);
        in_group += 1;
        if bpc > 0 && in_group == bpc {
            s.extend_from_slice(&sum.value()[..mode.size()]);
            in_group = 0;
            if reseed {
                sum = Sum::new(mode);
            }
        }
    }
    if bpc > 0 && in_group > 0 {
        s.extend_from_slice(&sum.value()[..mode.size()]);
    }
    s
}
