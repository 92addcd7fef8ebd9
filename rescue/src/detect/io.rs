//! Bounded, read-only access to a disk or image, and the little-endian/CRC helpers the parsers share.
//!
//! Every parser reads through [`DiskReader`], which clips reads to the device size, caps their length, and
//! remembers I/O failures so that a dying disk is reported once per bad spot and then given up on
//! (each failed read on a failing disk can take many seconds inside the kernel's retries).

use std::io::{self, Read, Seek, SeekFrom};

/// Largest single read any parser may ask for. The biggest legitimate one is a GPT entry array
/// (1024 entries of up to 1 KiB, see `gpt::MAX_ENTRY_BYTES`).
pub(crate) const MAX_READ: usize = 1 << 20;

/// After this many failed reads on one device, stop touching it: the rest of the report for that
/// device is marked incomplete instead of stalling for minutes on kernel retries.
const MAX_FAILURES: usize = 3;

/// An I/O failure at a byte offset of the device being probed.
#[derive(Debug)]
pub(crate) struct ReadFailure {
    pub offset: u64,
    pub source: io::Error,
}

/// A read-only view of a device or image of a known size.
pub(crate) struct DiskReader<R> {
    inner: R,
    size: u64,
    failures: Vec<ReadFailure>,
    gave_up: bool,
}

impl<R: Read + Seek> DiskReader<R> {
    pub(crate) fn new(inner: R, size: u64) -> Self {
        DiskReader {
            inner,
            size,
            failures: Vec::new(),
            gave_up: false,
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Reads `len` bytes at `offset`. `Ok(None)` when the range lies (partly) outside the device:
    /// absent data is a normal outcome for probes, not an I/O failure.
    pub(crate) fn read_at(&mut self, offset: u64, len: usize) -> Result<Option<Vec<u8>>, ()> {
        let Some(end) = offset.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.size || len > MAX_READ {
            return Ok(None);
        }
        if self.gave_up {
            return Err(());
        }
        let mut buf = vec![0u8; len];
        let res = self
            .inner
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.inner.read_exact(&mut buf));
        match res {
            Ok(()) => Ok(Some(buf)),
            Err(source) => {
                let source = if source.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the device ended before its reported size (truncated image or shrunk device)",
                    )
                } else {
                    source
                };
                self.failures.push(ReadFailure { offset, source });
                if self.failures.len() >= MAX_FAILURES {
                    self.gave_up = true;
                }
                Err(())
            }
        }
    }

    /// The read failures seen so far, and whether probing stopped early because of them.
    pub(crate) fn take_failures(&mut self) -> (Vec<ReadFailure>, bool) {
        (std::mem::take(&mut self.failures), self.gave_up)
    }
}

/// A byte range of a [`DiskReader`] (a partition): reads never leave it.
pub(crate) struct RangeReader<'a, R> {
    src: &'a mut DiskReader<R>,
    start: u64,
    len: u64,
}

impl<'a, R: Read + Seek> RangeReader<'a, R> {
    /// The range is clipped to the end of the source so that a partition running past the end of a
    /// truncated image is still probed as far as the data goes.
    pub(crate) fn new(src: &'a mut DiskReader<R>, start: u64, len: u64) -> Self {
        let avail = src.size().saturating_sub(start);
        RangeReader {
            src,
            start,
            len: len.min(avail),
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Like [`DiskReader::read_at`], relative to the range and bounded by it.
    pub(crate) fn read(&mut self, offset: u64, len: usize) -> Result<Option<Vec<u8>>, ()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => self.src.read_at(self.start + offset, len),
            _ => Ok(None),
        }
    }
}

/// The `N` bytes at `off`, or zeros where `b` is too short: parsers check magics first, so missing
/// bytes only ever make a probe fail, never panic.
pub(crate) fn array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut a = [0u8; N];
    if let Some(s) = off.checked_add(N).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    a
}

pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(array(b, off))
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(array(b, off))
}

pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(array(b, off))
}

/// `b[off..off + n]`, or an empty slice when out of range.
pub(crate) fn slice(b: &[u8], off: usize, n: usize) -> &[u8] {
    off.checked_add(n)
        .and_then(|end| b.get(off..end))
        .unwrap_or(&[])
}

/// Whether `b` holds `magic` at `off`.
pub(crate) fn has(b: &[u8], off: usize, magic: &[u8]) -> bool {
    slice(b, off, magic.len()) == magic
}

pub(crate) use crate::units::crc::crc32;

/// Text from a fixed-size, NUL- or space-padded on-disk field (labels), `None` when empty.
pub(crate) fn text_field(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// UTF-16LE text up to the first NUL, `None` when empty.
pub(crate) fn utf16_field(b: &[u8]) -> Option<String> {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let s = String::from_utf16_lossy(&units).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// A big-endian-printed UUID from 16 raw bytes (ext4, xfs, btrfs, swap): `xxxxxxxx-xxxx-...`.
pub(crate) fn uuid_be(b: &[u8]) -> Option<String> {
    let u: [u8; 16] = array(b, 0);
    if u.iter().all(|&x| x == 0) {
        return None;
    }
    let h: Vec<String> = u.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// A GPT-style mixed-endian GUID (first three fields little-endian), upper case.
pub(crate) fn guid_mixed(b: &[u8]) -> String {
    let u: [u8; 16] = array(b, 0);
    let tail: String = u[10..16].iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{tail}",
        le32(&u, 0),
        le16(&u, 4),
        le16(&u, 6),
        u[8],
        u[9]
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn crc32_matches_known_vector() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn reads_are_clipped_to_the_disk_and_range() {
        let mut src = DiskReader::new(Cursor::new((0u8..=255).collect::<Vec<_>>()), 256);
        assert_eq!(
            src.read_at(250, 6).unwrap().unwrap(),
            vec![250, 251, 252, 253, 254, 255]
        );
        assert_eq!(src.read_at(251, 6).unwrap(), None);
        assert_eq!(src.read_at(u64::MAX, 2).unwrap(), None);
        let mut r = RangeReader::new(&mut src, 200, 100);
        assert_eq!(r.len(), 56);
        assert_eq!(r.read(0, 2).unwrap().unwrap(), vec![200, 201]);
        assert_eq!(r.read(55, 2).unwrap(), None);
    }

    #[test]
    fn short_device_is_a_failure_and_probing_gives_up() {
        // Claims 4096 bytes but holds 100: reads past 100 fail like a truncated image.
        let mut src = DiskReader::new(Cursor::new(vec![0u8; 100]), 4096);
        for _ in 0..5 {
            assert!(src.read_at(512, 512).is_err());
        }
        let (failures, gave_up) = src.take_failures();
        assert_eq!(failures.len(), 3);
        assert!(gave_up);
        assert!(failures[0].source.to_string().contains("truncated"));
    }

    #[test]
    fn field_helpers_never_panic() {
        assert_eq!(le32(&[1, 2], 0), 0);
        assert_eq!(le16(&[1, 2, 3], usize::MAX), 0);
        assert!(slice(&[1, 2], 1, 5).is_empty());
        assert_eq!(text_field(b"LABEL\0\0\0"), Some("LABEL".into()));
        assert_eq!(text_field(b"   \0"), None);
        assert_eq!(
            utf16_field(&[b'h', 0, b'i', 0, 0, 0, b'x', 0]),
            Some("hi".into())
        );
        assert_eq!(
            guid_mixed(&[
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!(uuid_be(&[0; 16]), None);
        assert_eq!(
            uuid_be(&(1u8..=16).collect::<Vec<_>>()).unwrap(),
            "01020304-0506-0708-090a-0b0c0d0e0f10"
        );
    }
}
