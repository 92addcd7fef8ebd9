//! The image header: version 0002 (110 bytes, little-endian, with its own CRC32) and version 0001 (4160
//! bytes, no CRC). Byte tables in docs/CLONEZILLA.md.

use super::checksum::{crc32, ChecksumMode};
use super::{Error, Kind};

/// The first 16 bytes of a version 0002 image (a version 0001 image has the first 15).
pub const MAGIC: &[u8; 16] = b"partclone-image\0";
/// A version 0002 header's length.
pub const HEADER_V2_LEN: usize = 110;
/// A version 0001 header's length: 64 bytes of fields and 4096 unused.
pub const HEADER_V1_LEN: usize = 4160;
/// `sizeof(image_options_v2)`: the feature section of every version 0002 header so far.
const FEATURE_SIZE: u32 = 18;
const ENDIAN_LE: u16 = 0xC0DE;

/// The image format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `0001`: partclone before 0.3.0; a byte per block in the bitmap, a CRC after every block.
    V1,
    /// `0002`: partclone 0.3.0 and later.
    V2,
}

/// How the used blocks are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapMode {
    /// One bit per block, little-endian bit order, then the bitmap's CRC32 (version 0002: code 1).
    Bit,
    /// One byte per block, 1 = used, then `BiTmAgIc` (version 0001).
    Byte,
    /// No bitmap: every block is in the stream (version 0002: code 0).
    None,
}

/// A partclone image's header, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// The partclone that wrote the image, as it names itself ("0.3.23"); empty in version 0001.
    pub partclone_version: String,
    /// Partclone's name of the filesystem ("EXTFS", "FAT16", "NTFS"…).
    pub fs: String,
    /// The source device's size in bytes, as partclone recorded it.
    pub device_size: u64,
    /// Blocks of the filesystem: the bitmap's length in blocks.
    pub total_blocks: u64,
    /// Used blocks as the filesystem's superblock counts them (the bitmap decides what the stream holds).
    pub used_blocks: u64,
    /// Used blocks as the bitmap counts them, recorded by version 0002.
    pub used_bitmap: Option<u64>,
    pub block_size: u32,
    /// The word size of the machine that wrote the image (version 0002).
    pub cpu_bits: Option<u16>,
    pub checksum: ChecksumMode,
    /// Blocks covered by each checksum; 0 without checksums.
    pub blocks_per_checksum: u32,
    /// Whether each checksum covers its group only (`true`, the default) or every block since the first.
    pub reseed: bool,
    pub bitmap: BitmapMode,
}

impl Header {
    /// The header at the start of `head` (at least [`HEADER_V2_LEN`] bytes; a version 0001 header is
    /// longer, but only its first 64 bytes hold fields) of the stream called `name`.
    pub fn parse(head: &[u8], name: &str) -> Result<Header, Error> {
        let err = |at: usize, kind, what: String| Error::new(name, at as u64, kind, what);
        if head.len() < HEADER_V2_LEN {
            return Err(err(
                head.len(),
                Kind::Truncated,
                format!(
                    "the stream ends after {} bytes, inside the partclone header",
                    head.len()
                ),
            ));
        }
        if head[..15] != MAGIC[..15] {
            return Err(err(
                0,
                Kind::Invalid,
                "no partclone image signature (\"partclone-image\")".into(),
            ));
        }
        match &head[30..34] {
            b"0001" => Ok(Header::parse_v1(head, name)?),
            b"0002" => Ok(Header::parse_v2(head, name)?),
            v => Err(err(
                30,
                Kind::Unsupported,
                format!(
                    "image version {:?} (this program reads 0001 and 0002)",
                    String::from_utf8_lossy(v)
                ),
            )),
        }
    }

    fn parse_v2(h: &[u8], name: &str) -> Result<Header, Error> {
        let err = |at: usize, kind, what: String| Error::new(name, at as u64, kind, what);
        let stored = le32(h, 106);
        let computed = crc32(&h[..106]);
        if stored != computed {
            return Err(err(
                106,
                Kind::Checksum,
                format!("the header's CRC32 is {computed:#010x}, the image says {stored:#010x}"),
            ));
        }
        if h[15] != 0 {
            return Err(err(
                15,
                Kind::Invalid,
                "no NUL after the image signature".into(),
            ));
        }
        match le16(h, 34) {
            ENDIAN_LE => {}
            0xDEC0 => {
                return Err(err(
                    34,
                    Kind::Unsupported,
                    "an image written on a big-endian machine".into(),
                ))
            }
            e => return Err(err(34, Kind::Invalid, format!("endianness mark {e:#06x}"))),
        }
        let feature_size = le32(h, 88);
        if feature_size != FEATURE_SIZE {
            return Err(err(
                88,
                Kind::Unsupported,
                format!(
                    "a feature section of {feature_size} bytes (version 0002 has {FEATURE_SIZE})"
                ),
            ));
        }
        let image_version = le16(h, 92);
        if image_version != 2 {
            return Err(err(
                92,
                Kind::Invalid,
                format!("binary image version {image_version} in a version 0002 header"),
            ));
        }
        let code = le16(h, 96);
        let checksum = ChecksumMode::from_code(code).ok_or_else(|| {
            err(
                96,
                Kind::Unsupported,
                format!("checksum mode {code:#06x} (known: 0x00 none, 0x20 CRC32, 0x30 XXH64, 0x31 XXH128)"),
            )
        })?;
        let size = le16(h, 98);
        if usize::from(size) != checksum.size() {
            return Err(err(
                98,
                Kind::Invalid,
                format!(
                    "a {size}-byte checksum for {} (which takes {})",
                    checksum.name(),
                    checksum.size()
                ),
            ));
        }
        let mut blocks_per_checksum = le32(h, 100);
        if checksum == ChecksumMode::None {
            // partclone writes 0; with no checksum mode any count means no checksums.
            blocks_per_checksum = 0;
        } else if blocks_per_checksum == 0 {
            return Err(err(
                100,
                Kind::Invalid,
                format!("{} checksums over 0 blocks each", checksum.name()),
            ));
        }
        let reseed = match h[104] {
            0 => false,
            1 => true,
            r => return Err(err(104, Kind::Invalid, format!("reseed flag {r}"))),
        };
        let bitmap = match h[105] {
            0x01 => BitmapMode::Bit,
            0x00 => BitmapMode::None,
            0x08 => {
                return Err(err(
                    105,
                    Kind::Unsupported,
                    "a byte-per-block bitmap in a version 0002 image (partclone writes it but \
                     cannot read it back)"
                        .into(),
                ))
            }
            m => return Err(err(105, Kind::Invalid, format!("bitmap mode {m:#04x}"))),
        };
        let header = Header {
            version: Version::V2,
            partclone_version: text(&h[16..30]),
            fs: text(&h[36..52]),
            device_size: le64(h, 52),
            total_blocks: le64(h, 60),
            used_blocks: le64(h, 68),
            used_bitmap: Some(le64(h, 76)),
            block_size: le32(h, 84),
            cpu_bits: Some(le16(h, 94)),
            checksum,
            blocks_per_checksum,
            reseed,
            bitmap,
        };
        header.check_sizes(name, 84)?;
        Ok(header)
    }

    fn parse_v1(h: &[u8], name: &str) -> Result<Header, Error> {
        let header = Header {
            version: Version::V1,
            partclone_version: String::new(),
            fs: text(&h[15..30]),
            device_size: le64(h, 40),
            total_blocks: le64(h, 48),
            used_blocks: le64(h, 56),
            used_bitmap: None,
            block_size: le32(h, 36),
            cpu_bits: None,
            checksum: ChecksumMode::Crc32V1,
            blocks_per_checksum: 1,
            reseed: false,
            bitmap: BitmapMode::Byte,
        };
        header.check_sizes(name, 36)?;
        Ok(header)
    }

    /// The block size is positive (a version 0001 field is a C `int`) and the filesystem's size fits.
    fn check_sizes(&self, name: &str, block_size_at: u64) -> Result<(), Error> {
        if self.block_size == 0 || self.block_size > i32::MAX as u32 {
            return Err(Error::new(
                name,
                block_size_at,
                Kind::Invalid,
                format!("block size {}", self.block_size as i32),
            ));
        }
        if self.filesystem_bytes().is_none() {
            return Err(Error::new(
                name,
                block_size_at,
                Kind::Invalid,
                format!(
                    "{} blocks of {} bytes overflow 64 bits",
                    self.total_blocks, self.block_size
                ),
            ));
        }
        Ok(())
    }

    /// The header's length in the stream.
    pub fn header_len(&self) -> usize {
        match self.version {
            Version::V1 => HEADER_V1_LEN,
            Version::V2 => HEADER_V2_LEN,
        }
    }

    /// The filesystem's size: all its blocks (what a restore writes, unused blocks included).
    pub fn filesystem_bytes(&self) -> Option<u64> {
        self.total_blocks.checked_mul(u64::from(self.block_size))
    }

    /// Bytes of the bitmap in the stream, its CRC or signature not counted.
    pub fn bitmap_bytes(&self) -> u64 {
        match self.bitmap {
            BitmapMode::Bit => self.total_blocks.div_ceil(8),
            BitmapMode::Byte => self.total_blocks,
            BitmapMode::None => 0,
        }
    }
}

/// A fixed-size text field: up to its first NUL.
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}
