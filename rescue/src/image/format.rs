//! The fixed-size structures of an image: header, footer and chunk frame header
//! (docs/FORMAT.md, "Header", "Footer", "Chunk frames").
//!
//! Each carries an 8-byte check value (the first 8 bytes of blake3 over the structure with the check
//! field zeroed) so a damaged structure is told apart from a valid one that disagrees with the index.

use super::{ChunkFault, Compression, Hash, ImageError, ImageId, FORMAT_MAJOR, FORMAT_MINOR};

/// Size of the header at the start of every version 1 image.
pub const HEADER_LEN: usize = 64;
/// Size of the footer at the end of every version 1 image.
pub const FOOTER_LEN: usize = 96;
/// Size of the header in front of every chunk payload.
pub const FRAME_HEADER_LEN: usize = 64;
/// Required feature bit 3: extents may be Slices (kind 6), ranges of a chunk referenced where the same
/// bytes occur again (block deduplication, format 1.1).
pub const FEATURE_CHUNK_SLICES: u64 = 1 << 3;
/// Required-feature bits this version understands (bits 0–2 are reserved for encryption, external
/// chunk stores and other compression algorithms; see docs/FORMAT.md).
pub const REQUIRED_FEATURES_KNOWN: u64 = FEATURE_CHUNK_SLICES;
/// Optional-feature bits this version understands (none defined yet; unknown ones are ignored).
pub const OPTIONAL_FEATURES_KNOWN: u64 = 0;

pub(crate) const HEADER_MAGIC: [u8; 8] = *b"\x89RSCIMG\n";
pub(crate) const FOOTER_MAGIC: [u8; 8] = *b"\x89RSCEND\n";
pub(crate) const FRAME_MAGIC: [u8; 4] = *b"RCHK";
/// Bytes at the very end of the file that locate and version the footer, whatever its size.
pub(crate) const FOOTER_TAIL_LEN: usize = 16;

/// First 8 bytes of blake3 over `bytes` with `bytes[at..at + 8]` taken as zero.
fn check_value(bytes: &[u8], at: usize) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(&bytes[..at]);
    h.update(&[0u8; 8]);
    h.update(&bytes[at + 8..]);
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn refuse_version(major: u16, minor: u16) -> Result<(), ImageError> {
    if major != FORMAT_MAJOR {
        return Err(ImageError::UnsupportedVersion { major, minor });
    }
    Ok(())
}

fn refuse_features(required: u64) -> Result<(), ImageError> {
    let unknown = required & !REQUIRED_FEATURES_KNOWN;
    if unknown != 0 {
        return Err(ImageError::UnsupportedFeatures { bits: unknown });
    }
    Ok(())
}

/// What the header at offset 0 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub major: u16,
    pub minor: u16,
    pub required_features: u64,
    pub optional_features: u64,
    pub image_id: ImageId,
    /// The nominal uncompressed chunk size the writer used.
    pub chunk_size: u32,
}

impl Header {
    pub(crate) fn new(image_id: ImageId, chunk_size: u32) -> Header {
        Header {
            major: FORMAT_MAJOR,
            minor: FORMAT_MINOR,
            required_features: 0,
            optional_features: 0,
            image_id,
            chunk_size,
        }
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&HEADER_MAGIC);
        b[8..10].copy_from_slice(&self.major.to_le_bytes());
        b[10..12].copy_from_slice(&self.minor.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.required_features.to_le_bytes());
        b[24..32].copy_from_slice(&self.optional_features.to_le_bytes());
        b[32..48].copy_from_slice(&self.image_id.0);
        b[48..52].copy_from_slice(&self.chunk_size.to_le_bytes());
        // 52..56 reserved, zero.
        let check = check_value(&b, 56);
        b[56..64].copy_from_slice(&check);
        b
    }

    /// Parses and checks the header; the version is checked before the check value because a
    /// future major version may lay the header out differently.
    pub(crate) fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, ImageError> {
        if b[0..8] != HEADER_MAGIC {
            return Err(ImageError::NotAnImage {
                reason: "the file does not start with the rescue image magic".into(),
            });
        }
        let (major, minor) = (le_u16(b, 8), le_u16(b, 10));
        refuse_version(major, minor)?;
        let damaged = |reason: String| ImageError::HeaderDamaged { reason };
        if check_value(b, 56) != b[56..64] {
            return Err(damaged(
                "its check value does not match its contents".into(),
            ));
        }
        let len = le_u32(b, 12);
        if len as usize != HEADER_LEN {
            return Err(damaged(format!(
                "it gives its length as {len}, not {HEADER_LEN}"
            )));
        }
        if le_u32(b, 52) != 0 {
            return Err(damaged("a reserved field is not zero".into()));
        }
        let header = Header {
            major,
            minor,
            required_features: le_u64(b, 16),
            optional_features: le_u64(b, 24),
            image_id: ImageId(array(b, 32)),
            chunk_size: le_u32(b, 48),
        };
        refuse_features(header.required_features)?;
        Ok(header)
    }
}

/// What the footer at the end of the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Footer {
    pub(crate) index_offset: u64,
    pub(crate) index_stored_len: u64,
    pub(crate) index_len: u64,
    pub(crate) root_hash: Hash,
    pub(crate) required_features: u64,
    pub(crate) optional_features: u64,
}

/// What the last 16 bytes of a file say about its footer.
pub(crate) enum Tail {
    /// No footer magic: the image was never finalized or was cut short.
    Missing,
    /// A footer of this length and version ends the file.
    Present { footer_len: u32 },
}

impl Footer {
    pub(crate) fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.index_stored_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.index_len.to_le_bytes());
        b[24..56].copy_from_slice(&self.root_hash.0);
        b[56..64].copy_from_slice(&self.required_features.to_le_bytes());
        b[64..72].copy_from_slice(&self.optional_features.to_le_bytes());
        b[80..84].copy_from_slice(&(FOOTER_LEN as u32).to_le_bytes());
        b[84..86].copy_from_slice(&FORMAT_MAJOR.to_le_bytes());
        b[86..88].copy_from_slice(&FORMAT_MINOR.to_le_bytes());
        b[88..96].copy_from_slice(&FOOTER_MAGIC);
        let check = check_value(&b, 72);
        b[72..80].copy_from_slice(&check);
        b
    }

    /// Reads the tail (footer length, version, magic); refuses other major versions here, before
    /// anything else about the footer is assumed.
    pub(crate) fn parse_tail(t: &[u8; FOOTER_TAIL_LEN]) -> Result<Tail, ImageError> {
        if t[8..16] != FOOTER_MAGIC {
            return Ok(Tail::Missing);
        }
        refuse_version(le_u16(t, 4), le_u16(t, 6))?;
        Ok(Tail::Present {
            footer_len: le_u32(t, 0),
        })
    }

    pub(crate) fn parse(b: &[u8; FOOTER_LEN]) -> Result<Footer, ImageError> {
        if check_value(b, 72) != b[72..80] {
            return Err(ImageError::FooterDamaged {
                reason: "its check value does not match its contents".into(),
            });
        }
        let footer = Footer {
            index_offset: le_u64(b, 0),
            index_stored_len: le_u64(b, 8),
            index_len: le_u64(b, 16),
            root_hash: Hash(array(b, 24)),
            required_features: le_u64(b, 56),
            optional_features: le_u64(b, 64),
        };
        refuse_features(footer.required_features)?;
        Ok(footer)
    }
}

/// The header in front of every chunk payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub(crate) compression: Compression,
    pub(crate) chunk_id: u64,
    pub(crate) stored_len: u32,
    pub(crate) uncompressed_len: u32,
    pub(crate) hash: Hash,
}

impl FrameHeader {
    pub(crate) fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC);
        b[4] = self.compression.code();
        // 5: flags, 6..8: reserved; zero in version 1.
        b[8..16].copy_from_slice(&self.chunk_id.to_le_bytes());
        b[16..20].copy_from_slice(&self.stored_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.uncompressed_len.to_le_bytes());
        b[24..56].copy_from_slice(&self.hash.0);
        let check = check_value(&b, 56);
        b[56..64].copy_from_slice(&check);
        b
    }

    /// Parses a frame header; the caller says where it was.
    pub(crate) fn parse(b: &[u8]) -> Result<FrameHeader, ChunkFault> {
        if b.len() < FRAME_HEADER_LEN || b[0..4] != FRAME_MAGIC {
            return Err(ChunkFault::NoFrame);
        }
        if check_value(&b[..FRAME_HEADER_LEN], 56) != b[56..64] {
            return Err(ChunkFault::FrameDamaged("check value mismatch".into()));
        }
        let compression = Compression::from_code(b[4]).ok_or_else(|| {
            ChunkFault::FrameDamaged(format!("unknown compression kind {}", b[4]))
        })?;
        if b[5] != 0 || b[6] != 0 || b[7] != 0 {
            return Err(ChunkFault::FrameDamaged(
                "reserved bytes are not zero".into(),
            ));
        }
        Ok(FrameHeader {
            compression,
            chunk_id: le_u64(b, 8),
            stored_len: le_u32(b, 16),
            uncompressed_len: le_u32(b, 20),
            hash: Hash(array(b, 24)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fixed_structures_round_trip() {
        let h = Header::new(ImageId([7; 16]), 1 << 20);
        assert_eq!(Header::parse(&h.encode()).unwrap(), h);
        let f = Footer {
            index_offset: 1234,
            index_stored_len: 99,
            index_len: 300,
            root_hash: Hash([9; 32]),
            required_features: 0,
            optional_features: 1 << 40,
        };
        let b = f.encode();
        assert!(matches!(
            Footer::parse_tail(&array(&b, FOOTER_LEN - FOOTER_TAIL_LEN)).unwrap(),
            Tail::Present { footer_len } if footer_len as usize == FOOTER_LEN
        ));
        assert_eq!(Footer::parse(&b).unwrap(), f);
        let fr = FrameHeader {
            compression: Compression::Zstd,
            chunk_id: 5,
            stored_len: 10,
            uncompressed_len: 20,
            hash: Hash([3; 32]),
        };
        assert_eq!(FrameHeader::parse(&fr.encode()).unwrap(), fr);
    }

    #[test]
    fn damage_is_detected() {
        let mut b = Header::new(ImageId([7; 16]), 1 << 20).encode();
        b[40] ^= 1;
        assert!(matches!(
            Header::parse(&b),
            Err(ImageError::HeaderDamaged { .. })
        ));
        let mut newer_minor = Header::new(ImageId([7; 16]), 1 << 20);
        newer_minor.minor = 9;
        assert_eq!(Header::parse(&newer_minor.encode()).unwrap().minor, 9);
        let mut b = Header::new(ImageId([7; 16]), 1 << 20).encode();
        b[8] = 2;
        assert!(matches!(
            Header::parse(&b),
            Err(ImageError::UnsupportedVersion { major: 2, .. })
        ));
        let mut fr = FrameHeader {
            compression: Compression::Stored,
            chunk_id: 1,
            stored_len: 1,
            uncompressed_len: 1,
            hash: Hash::default(),
        }
        .encode();
        fr[30] ^= 0x10;
        assert!(matches!(
            FrameHeader::parse(&fr),
            Err(ChunkFault::FrameDamaged(_))
        ));
    }
}
