//! Little-endian binary encoding primitives for the index (docs/FORMAT.md, "Encoding").
//!
//! The decoder is the line of defence against damaged or hostile images: every read is bounds
//! checked, every count is checked against the bytes that remain before anything is allocated, and
//! every failure is a [`DecodeError`] that says which field at which index offset was bad.

use std::fmt;

use super::MAX_STRING_LEN;

/// Why the index could not be decoded, and where (byte offset in the uncompressed index).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("index byte {offset}: {kind}")]
pub struct DecodeError {
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

/// The kinds of decoding failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// A field runs past the end of its section or of the index.
    UnexpectedEnd {
        field: &'static str,
        needed: u64,
        remaining: u64,
    },
    /// The index does not start with the index magic.
    BadMagic,
    /// A string is not valid UTF-8.
    InvalidUtf8 { field: &'static str },
    /// A string is longer than the format allows.
    StringTooLong { field: &'static str, len: u64 },
    /// An enumeration holds a value this version does not define.
    BadEnum { field: &'static str, value: u64 },
    /// A count promises more records than the remaining bytes can hold.
    CountTooLarge {
        field: &'static str,
        count: u64,
        remaining: u64,
    },
    /// A section holds bytes after its last field.
    TrailingBytes { section: u32, extra: u64 },
    /// A required section appears twice.
    DuplicateSection { tag: u32 },
    /// A required section is absent.
    MissingSection { tag: u32 },
    /// A section this version does not know is marked as required for reading.
    UnknownCriticalSection { tag: u32 },
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::UnexpectedEnd {
                field,
                needed,
                remaining,
            } => write!(
                f,
                "{field} needs {needed} bytes but only {remaining} remain (index cut short)"
            ),
            DecodeErrorKind::BadMagic => write!(f, "the index does not start with its magic"),
            DecodeErrorKind::InvalidUtf8 { field } => write!(f, "{field} is not valid UTF-8"),
            DecodeErrorKind::StringTooLong { field, len } => {
                write!(
                    f,
                    "{field} is {len} bytes long, more than the limit of {MAX_STRING_LEN}"
                )
            }
            DecodeErrorKind::BadEnum { field, value } => {
                write!(
                    f,
                    "{field} has value {value}, which format version 1 does not define"
                )
            }
            DecodeErrorKind::CountTooLarge {
                field,
                count,
                remaining,
            } => write!(
                f,
                "{field} is {count} but only {remaining} bytes remain to hold those records"
            ),
            DecodeErrorKind::TrailingBytes { section, extra } => {
                write!(
                    f,
                    "section {section:#x} has {extra} unexpected bytes after its last field"
                )
            }
            DecodeErrorKind::DuplicateSection { tag } => {
                write!(f, "section {tag:#x} appears more than once")
            }
            DecodeErrorKind::MissingSection { tag } => {
                write!(f, "required section {tag:#x} is missing")
            }
            DecodeErrorKind::UnknownCriticalSection { tag } => write!(
                f,
                "section {tag:#x} is required for reading but unknown to this program; \
                 use a newer version of rescue"
            ),
        }
    }
}

/// Appends little-endian fields to a growing buffer.
#[derive(Default)]
pub(crate) struct Enc {
    pub(crate) buf: Vec<u8>,
    /// The first field that could not be encoded.
    pub(crate) error: Option<String>,
}

impl Enc {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A string: u32 byte length, then UTF-8 bytes. An over-long string is recorded as the
    /// encoder's error (and written empty so the output stays decodable).
    pub(crate) fn str(&mut self, field: &'static str, s: &str) {
        if s.len() > MAX_STRING_LEN {
            if self.error.is_none() {
                self.error = Some(format!(
                    "{field} is {} bytes long; the limit is {MAX_STRING_LEN}",
                    s.len()
                ));
            }
            self.u32(0);
            return;
        }
        self.u32(s.len() as u32);
        self.raw(s.as_bytes());
    }
    /// A record count (u64).
    pub(crate) fn count(&mut self, n: usize) {
        self.u64(n as u64);
    }
}

/// Reads little-endian fields from a byte slice, never past its end.
pub(crate) struct Dec<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data[0]` in the whole index, so errors point at the right byte.
    base: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(data: &'a [u8], base: usize) -> Dec<'a> {
        Dec { data, pos: 0, base }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.offset(),
            kind,
        }
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.err(DecodeErrorKind::UnexpectedEnd {
                field,
                needed: n as u64,
                remaining: self.remaining() as u64,
            }));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn bytes32(&mut self, field: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array(field)
    }

    pub(crate) fn str(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let len = self.u32(field)? as usize;
        if len > MAX_STRING_LEN {
            self.pos = start;
            return Err(self.err(DecodeErrorKind::StringTooLong {
                field,
                len: len as u64,
            }));
        }
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => {
                self.pos -= len;
                Err(self.err(DecodeErrorKind::InvalidUtf8 { field }))
            }
        }
    }

    /// A record count, refused when the remaining bytes cannot hold that many records of at least
    /// `min_record` bytes: this is what keeps a hostile count from allocating unbounded memory.
    pub(crate) fn count(
        &mut self,
        field: &'static str,
        min_record: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u64(field)?;
        let fits = (self.remaining() / min_record.max(1)) as u64;
        if n > fits {
            self.pos -= 8;
            return Err(self.err(DecodeErrorKind::CountTooLarge {
                field,
                count: n,
                remaining: self.remaining() as u64 - 8,
            }));
        }
        // `n <= remaining`, which is a usize, so this cannot truncate.
        Ok(n as usize)
    }

    /// Fails unless every byte was consumed (sections have no slack in version 1).
    pub(crate) fn finish(&self, section: u32) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.err(DecodeErrorKind::TrailingBytes {
                section,
                extra: self.remaining() as u64,
            }));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip_and_bounds() {
        let mut e = Enc::default();
        e.u8(7);
        e.u32(0xdead_beef);
        e.u64(u64::MAX);
        e.i64(-5);
        e.str("e", "héllo");
        e.count(2);
        let mut d = Dec::new(&e.buf, 10);
        assert_eq!(d.u8("a").unwrap(), 7);
        assert_eq!(d.u32("b").unwrap(), 0xdead_beef);
        assert_eq!(d.u64("c").unwrap(), u64::MAX);
        assert_eq!(d.i64("d").unwrap(), -5);
        assert_eq!(d.str("e").unwrap(), "héllo");
        let err = d.count("n", 1).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::CountTooLarge { count: 2, .. }
        ));
        assert_eq!(err.offset, 10 + 1 + 4 + 8 + 8 + 4 + 6);
        let err = Dec::new(&[1, 2], 0).u32("x").unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::UnexpectedEnd { needed: 4, .. }
        ));
        let err = Dec::new(&[2, 0, 0, 0, 0xff, 0xfe], 0).str("s").unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::InvalidUtf8 { field: "s" });
        let err = Dec::new(&[0xff, 0xff, 0xff, 0xff], 0).str("s").unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::StringTooLong { .. }));
    }
}
