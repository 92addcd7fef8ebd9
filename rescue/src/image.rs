//! The image file format, version 1 (specification: `docs/FORMAT.md`).
//!
//! An image is one file that is written strictly front to back, so it can go to a pipe or stdout,
//! and read back with random access:
//!
//! ```text
//! header (64 B) │ chunk frame │ chunk frame │ … │ index (zstd) │ footer (96 B)
//! ```
//!
//! A reader starts at the fixed-size footer, which points at the index and holds the root hash
//! (blake3 over the header and the uncompressed index). The index describes the source disk, its
//! streams (partition tables, partitions, gaps, or the whole disk) and, per stream, an exact cover of
//! extents: data (a reference to a chunk), zero, unused (free in the filesystem), unreadable. Chunks
//! are hashed (blake3 of the uncompressed bytes) and compressed independently, so both capture and
//! restore parallelise; every chunk frame carries its own small header so a frame can be identified
//! without the index, and a chunk read from the wrong place is caught.
//!
//! Layout of this module, one concept per file:
//! - `codec`: little-endian encoding primitives that never panic on hostile input;
//! - `format`: the fixed-size structures (header, footer, chunk frame header);
//! - `index`: the index types and their encoding;
//! - `validate`: the structural rules an index must meet, and the chunk → disk location map;
//! - `chunk`: compression and decompression of one chunk (what capture workers call);
//! - `writer`: [`ImageWriter`], the streaming writer;
//! - `reader`: [`ImageReader`] and the thread-shareable [`SharedReader`];
//! - `verify`: the full check of an image, reporting every problem;
//! - `view`: [`DiskView`], an image read as the disk or partition it holds;
//! - `tests`, `damage_tests`, `proptests`: round trips, corruption of every part, hostile input.

mod chunk;
mod codec;
mod error;
mod file;
mod format;
mod index;
mod reader;
mod validate;
mod verify;
mod view;
mod writer;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod damage_tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod proptests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::fmt;

pub use self::chunk::{
    compress_chunk, decompress_chunk, ChunkCompressor, CompressedChunk, DEFAULT_LEVEL,
};
pub use self::codec::{DecodeError, DecodeErrorKind};
pub use self::error::{ChunkFault, ChunkLocation, ImageError};
pub use self::file::ImageFile;
pub(crate) use self::format::{Footer, FrameHeader};
pub use self::format::{
    Header, FEATURE_CHUNK_SLICES, FOOTER_LEN, FRAME_HEADER_LEN, HEADER_LEN,
    OPTIONAL_FEATURES_KNOWN, REQUIRED_FEATURES_KNOWN,
};
pub use self::index::{
    CaptureMode, ChunkRecord, CreationInfo, DiskInfo, Extent, ExtentKind, Index, PartitionInfo,
    RawSection, Stream, StreamInfo, StreamKind, TableKind, TableRole,
};
pub use self::reader::{ImageReader, ReadAt, SharedReader};
pub use self::validate::StreamStorage;
pub use self::verify::{VerifyProgress, VerifyReport};
pub use self::view::{DiskView, Select, Slice, CACHED};
pub use self::writer::{
    ChunkLookup, ChunkSink, FinishedImage, ImageHeaderInfo, ImageWriter, IndexExtras,
};

/// Major format version this code writes and reads. A reader refuses any other major version.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor format version this code writes. Minor versions only add things older readers may ignore.
pub const FORMAT_MINOR: u16 = 1;

/// Default uncompressed chunk size: large enough that per-chunk overhead (frame header, index
/// record, one hash) is negligible and that zstd finds its matches (a frame's window covers the whole
/// chunk; on the benchmark corpus 8 MiB chunks came out 0.7% smaller than 4 MiB ones and compressed
/// faster, the match finder's smaller tables staying in cache), small enough that workers keep several
/// chunks in flight within the memory budget.
pub const DEFAULT_CHUNK_SIZE: u32 = 8 << 20;
/// Smallest nominal chunk size a writer accepts (a final or table chunk may still be shorter).
pub const MIN_CHUNK_SIZE: u32 = 4 << 10;
/// Largest uncompressed chunk: bounds what a reader allocates for one chunk.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Largest string in the index: free text fields are short; this bounds hostile input.
pub const MAX_STRING_LEN: usize = 1 << 20;
/// Largest uncompressed index a reader accepts (about 80 million chunks: a 600 TB disk at 8 MiB).
pub const MAX_INDEX_LEN: u64 = 4 << 30;
/// Default zstd level for chunks: fast enough to keep up with disks on two cores.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// A blake3-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The blake3 hash of `data`, the only hash function of format version 1.
    pub fn of(data: &[u8]) -> Hash {
        Hash(*blake3::hash(data).as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

/// Index of a chunk in the index's chunk table (equal to its position in the file, counting from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub u64);

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chunk {}", self.0)
    }
}

/// Index of a stream in the index's stream table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// How a chunk's payload is stored. Values 2..=255 are reserved (other algorithms, encryption).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// The payload is the uncompressed bytes (used when zstd would not make it smaller).
    Stored,
    /// The payload is one zstd frame.
    Zstd,
}

impl Compression {
    pub(crate) fn code(self) -> u8 {
        match self {
            Compression::Stored => 0,
            Compression::Zstd => 1,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Compression> {
        match code {
            0 => Some(Compression::Stored),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// A random-enough 16-byte identifier of one image, so future chunk stores can name it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ImageId(pub [u8; 16]);

impl ImageId {
    /// Derives an identifier from the clock, the process and a per-process counter. Uniqueness is
    /// what matters, not secrecy, and this avoids a dependency on a random number generator.
    pub fn generate() -> ImageId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = blake3::Hasher::new();
        h.update(b"rescue image id");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.update(&now.to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        ImageId(id)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageId({self})")
    }
}
