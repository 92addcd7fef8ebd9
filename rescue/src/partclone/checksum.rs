//! The checksums partclone writes after each group of blocks, computed the way partclone computes them.
//!
//! - CRC32 is zlib's polynomial with partclone's own table code: seeded with `0xFFFFFFFF` and stored without
//!   the final inversion, so the value on disk is the bitwise NOT of zlib's `crc32` of the same bytes (and of
//!   all bytes since the last reseed, when groups are chained). The header and the bitmap use it too.
//! - XXH64 (seed 0) and XXH3-128 (newer partclone, built with libxxhash) are stored as the digest in memory
//!   on a little-endian machine: XXH64's `u64` little-endian, XXH128's low half and then its high half.
//! - Version 0001 images used a CRC32 routine with a bug (it read the block's first byte over and over, so
//!   only that byte of each block counts) and chained it over the whole image: `Crc32V1`.

use std::hash::Hasher as _;

/// A checksum algorithm of a partclone image, with its code in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    /// No checksums (`-a 0`): the blocks follow each other.
    None,
    /// CRC32 (`-a 1`, partclone's default), code `0x20`.
    Crc32,
    /// XXH64, code `0x30` (partclone 0.3.39 and later built with libxxhash, `-a 2`).
    Xxh64,
    /// XXH3-128, code `0x31` (partclone 0.3.46 and later built with libxxhash, `-a 3`).
    Xxh128,
    /// Version 0001's CRC32 (never in a header: a version 0001 image has no checksum field).
    Crc32V1,
}

impl ChecksumMode {
    /// The mode a version 0002 header's code stands for.
    pub fn from_code(code: u16) -> Option<ChecksumMode> {
        match code {
            0x00 => Some(ChecksumMode::None),
            0x20 => Some(ChecksumMode::Crc32),
            0x30 => Some(ChecksumMode::Xxh64),
            0x31 => Some(ChecksumMode::Xxh128),
            _ => None,
        }
    }

    /// The code a version 0002 header holds for this mode (`0xFF` is partclone's in-memory code for
    /// version 0001's CRC).
    pub fn code(self) -> u16 {
        match self {
            ChecksumMode::None => 0x00,
            ChecksumMode::Crc32 => 0x20,
            ChecksumMode::Xxh64 => 0x30,
            ChecksumMode::Xxh128 => 0x31,
            ChecksumMode::Crc32V1 => 0xFF,
        }
    }

    /// Bytes of one checksum in the stream.
    pub fn size(self) -> usize {
        match self {
            ChecksumMode::None => 0,
            ChecksumMode::Crc32 | ChecksumMode::Crc32V1 => 4,
            ChecksumMode::Xxh64 => 8,
            ChecksumMode::Xxh128 => 16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ChecksumMode::None => "none",
            ChecksumMode::Crc32 => "CRC32",
            ChecksumMode::Xxh64 => "XXH64",
            ChecksumMode::Xxh128 => "XXH128",
            ChecksumMode::Crc32V1 => "CRC32 (version 0001)",
        }
    }
}

/// Partclone's CRC32 of `data` (seeded, not inverted at the end): the header's and the bitmap's.
pub fn crc32(data: &[u8]) -> u32 {
    !crc32fast::hash(data)
}

/// A running checksum over the blocks of one group (or of the whole stream, without reseed).
pub(crate) enum Sum {
    None,
    /// zlib's running CRC (partclone's value is its inversion).
    Crc32(crc32fast::Hasher),
    /// The raw register of version 0001's routine.
    Crc32V1(u32),
    Xxh64(twox_hash::XxHash64),
    Xxh128(Box<twox_hash::XxHash3_128>),
}

impl Sum {
    pub(crate) fn new(mode: ChecksumMode) -> Sum {
        match mode {
            ChecksumMode::None => Sum::None,
            ChecksumMode::Crc32 => Sum::Crc32(crc32fast::Hasher::new()),
            ChecksumMode::Crc32V1 => Sum::Crc32V1(!0),
            ChecksumMode::Xxh64 => Sum::Xxh64(twox_hash::XxHash64::with_seed(0)),
            ChecksumMode::Xxh128 => Sum::Xxh128(Box::new(twox_hash::XxHash3_128::new())),
        }
    }

    pub(crate) fn update(&mut self, block: &[u8]) {
        match self {
            Sum::None => {}
            Sum::Crc32(h) => h.update(block),
            Sum::Crc32V1(reg) => {
                // The first byte, as many times as the block is long (see the module's notes).
                let Some(&first) = block.first() else { return };
                let run = [first; 4096];
                let mut h = crc32fast::Hasher::new_with_initial(!*reg);
                let mut left = block.len();
                while left > 0 {
                    let n = left.min(run.len());
                    h.update(&run[..n]);
                    left -= n;
                }
                *reg = !h.finalize();
            }
            Sum::Xxh64(h) => h.write(block),
            Sum::Xxh128(h) => h.write(block),
        }
    }

    /// The checksum so far, as the stream stores it (the first `ChecksumMode::size` bytes).
    pub(crate) fn value(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        match self {
            Sum::None => {}
            Sum::Crc32(h) => v[..4].copy_from_slice(&(!h.clone().finalize()).to_le_bytes()),
            Sum::Crc32V1(reg) => v[..4].copy_from_slice(&reg.to_le_bytes()),
            Sum::Xxh64(h) => v[..8].copy_from_slice(&h.finish().to_le_bytes()),
            Sum::Xxh128(h) => v.copy_from_slice(&h.finish_128().to_le_bytes()),
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partclone_crc32_is_zlib_crc32_without_its_final_inversion() {
        assert_eq!(crc32(b"123456789"), !0xCBF4_3926);
        assert_eq!(crc32(b""), 0xFFFF_FFFF);
        let mut s = Sum::new(ChecksumMode::Crc32);
        s.update(b"1234");
        s.update(b"56789");
        assert_eq!(s.value()[..4], (!0xCBF4_3926u32).to_le_bytes());
    }

    #[test]
    fn version_0001_crc_counts_only_the_first_byte_of_each_block() {
        let mut a = Sum::new(ChecksumMode::Crc32V1);
        a.update(&[7, 1, 2, 3, 4]);
        let mut b = Sum::new(ChecksumMode::Crc32V1);
        b.update(&[7; 5]);
        assert_eq!(a.value(), b.value());
        assert_eq!(a.value()[..4], crc32(&[7; 5]).to_le_bytes());
        // Longer than the repeated buffer, and chained over blocks.
        let mut c = Sum::new(ChecksumMode::Crc32V1);
        c.update(&[9; 5000]);
        c.update(&[3; 10]);
        let mut all = vec![9u8; 5000];
        all.extend_from_slice(&[3; 10]);
        assert_eq!(c.value()[..4], crc32(&all).to_le_bytes());
    }

    #[test]
    fn xxhash_values_are_the_little_endian_digests() {
        assert_eq!(
            twox_hash::XxHash64::oneshot(0, b"abc"),
            0x44BC_2CF5_AD77_0999
        );
        let mut s = Sum::new(ChecksumMode::Xxh64);
        s.update(b"abc");
        assert_eq!(
            s.value()[..8],
            twox_hash::XxHash64::oneshot(0, b"abc").to_le_bytes()
        );
        let mut s = Sum::new(ChecksumMode::Xxh128);
        s.update(b"ab");
        s.update(b"c");
        assert_eq!(
            s.value(),
            twox_hash::XxHash3_128::oneshot(b"abc").to_le_bytes()
        );
        assert_eq!(ChecksumMode::from_code(0x30), Some(ChecksumMode::Xxh64));
        assert_eq!(ChecksumMode::from_code(1), None);
    }
}
