//! Partclone's image streams, read (docs/CLONEZILLA.md): the header, the bitmap of used blocks and the used
//! blocks with their checksums, as partclone writes them (0.3.x writes version 0002; version 0001, from
//! partclone before 0.3.0, is read too). Clonezilla stores a partition as such a stream, compressed and
//! split: [`stored`] joins the pieces and decompresses them, the rest of this module reads the stream.
//!
//! Streaming and read-only: [`Stream`] reads the header ([`Header::parse`]) and the bitmap (checking their
//! CRCs), then yields the used blocks in order as [`Run`]s of consecutive blocks, checking every checksum
//! as soon as its group of blocks has been read; [`verify`] reads a whole stream and reports. Nothing is
//! allocated from the stream's sizes beyond the [`Limits`], and damaged input is an [`Error`] naming the
//! stream, the byte offset and the blocks concerned, never a panic.

use std::fmt;
use std::io;
use std::ops::RangeInclusive;

mod checksum;
mod header;
pub mod stored;
mod stream;

pub use checksum::ChecksumMode;
pub use header::{BitmapMode, Header, Version, HEADER_V1_LEN, HEADER_V2_LEN, MAGIC};
pub use stream::{verify, Report, Run, Stream};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tool_tests;
#[cfg(test)]
mod write;

/// What a [`Stream`] may allocate, whatever its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest block this reader accepts (partclone's are 512 bytes to a few MiB: NTFS clusters).
    pub max_block_size: u32,
    /// The largest bitmap kept in memory, in bytes (one bit per block of the filesystem): 512 MiB is a
    /// 16 TiB filesystem of 4 KiB blocks. It grows only as the stream delivers it.
    pub max_bitmap_bytes: u64,
    /// How many bytes of data one [`Run`] holds at most (at least one block).
    pub run_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_block_size: 16 << 20,
            max_bitmap_bytes: 512 << 20,
            run_bytes: 1 << 20,
        }
    }
}

/// What went wrong, for callers that decide by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reading the stream failed (the source's error is attached).
    Io,
    /// The stream ends before what its header announces.
    Truncated,
    /// A CRC or checksum does not match what the stream holds: damaged bytes.
    Checksum,
    /// A field holds a value partclone never writes.
    Invalid,
    /// A partclone feature this reader does not read (a big-endian image, a newer header layout).
    Unsupported,
}

/// An error about partclone stream `stream`, at byte `offset` of it, about `blocks` (block numbers of the
/// filesystem) when it concerns blocks.
#[derive(Debug)]
pub struct Error {
    pub stream: String,
    pub offset: u64,
    pub blocks: Option<RangeInclusive<u64>>,
    pub kind: Kind,
    pub what: String,
    pub source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(stream: &str, offset: u64, kind: Kind, what: impl Into<String>) -> Error {
        Error {
            stream: stream.to_owned(),
            offset,
            blocks: None,
            kind,
            what: what.into(),
            source: None,
        }
    }

    pub(crate) fn blocks(mut self, blocks: RangeInclusive<u64>) -> Error {
        self.blocks = Some(blocks);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: byte {}", self.stream, self.offset)?;
        match &self.blocks {
            Some(b) if b.start() == b.end() => write!(f, ", block {}", b.start())?,
            Some(b) => write!(f, ", blocks {}..={}", b.start(), b.end())?,
            None => {}
        }
        write!(f, ": {}", self.what)?;
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind {
            Kind::Io => e
                .source
                .as_ref()
                .map_or(io::ErrorKind::Other, io::Error::kind),
            Kind::Truncated => io::ErrorKind::UnexpectedEof,
            Kind::Checksum | Kind::Invalid => io::ErrorKind::InvalidData,
            Kind::Unsupported => io::ErrorKind::Unsupported,
        };
        io::Error::new(kind, e)
    }
}
