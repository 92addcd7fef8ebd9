//! One chunk's hashing, compression and decompression: the work capture and restore spread over
//! threads. Nothing here touches the image file.

use super::{ChunkFault, Compression, Hash, ImageError, MAX_CHUNK_SIZE};
use crate::sys::zstd::{ZstdCompressor, ZstdParams};
use crate::sys::AlignedBuf;

/// A chunk ready for [`super::ImageWriter::write_chunk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedChunk {
    /// blake3 of the uncompressed bytes.
    pub hash: Hash,
    pub uncompressed_len: u32,
    pub compression: Compression,
    /// What goes into the frame: the zstd frame, or the bytes themselves when zstd did not help.
    pub payload: AlignedBuf,
    /// Set when the chunk was not compressed because the repository being written to stores it
    /// already ([`super::ChunkLookup`]): the payload is empty, `compression` and this length are those
    /// of the stored copy.
    pub stored_elsewhere: Option<u32>,
}

/// A reusable compressor, one per worker thread: reusing the zstd context avoids reallocating
/// its tables (megabytes at high levels) for every chunk.
pub struct ChunkCompressor {
    zstd: ZstdCompressor,
    level: i32,
}

/// From this level on a chunk takes seconds to compress; [`ChunkCompressor::compress_buf_until`] then
/// feeds zstd [`SLOW_PIECE`] bytes at a time so that a cancel is noticed within a fraction of a second.
const SLOW_LEVEL: i32 = 10;
const SLOW_PIECE: usize = 256 << 10;

/// The default compression level: with block deduplication, images of real disks come out smaller than
/// Clonezilla's `partclone | zstd -3`; zstd at level 2 takes about two thirds of level 3's time (the
/// benchmark's capture as a whole 10–25% less: the block keys cost part of the gain).
pub const DEFAULT_LEVEL: i32 = 2;

/// zstd's parameters for `level`. Levels 2 and 3 are tuned for disk-image chunks of up to 8 MiB
/// ([`super::DEFAULT_CHUNK_SIZE`]): a window covering the whole chunk (2^23; zstd shrinks it for shorter
/// chunks), and at level 3 zstd's pre-splitter off (6–10% of the time for 0.6% of the size on disk data;
/// at level 2 it costs nothing measurable and saves 0.2%). Level 2 uses a 2^15-entry hash table (zstd's:
/// 2^16): with both cores compressing, the smaller table stays in each core's cache, 6–8% faster for a 1%
/// larger image; level 3 keeps zstd's (a larger one made single-threaded runs smaller but cost more in
/// cache misses than it saved with both cores busy). Other levels are zstd's.
fn zstd_params(level: i32) -> ZstdParams {
    match level {
        2 | 3 => ZstdParams {
            level,
            window_log: 23,
            hash_log: if level == 2 { 15 } else { 0 },
            no_pre_split: level == 3,
        },
        _ => ZstdParams {
            level,
            ..ZstdParams::default()
        },
    }
}

impl ChunkCompressor {
    /// A compressor at zstd `level` (1..=22; negative levels are zstd's fast modes).
    pub fn new(level: i32) -> Result<ChunkCompressor, ImageError> {
        let zstd = ZstdCompressor::new(zstd_params(level)).map_err(|e| ImageError::Compress {
            source: std::io::Error::other(e),
        })?;
        Ok(ChunkCompressor { zstd, level })
    }

    /// Hashes and compresses `data` (1..=[`MAX_CHUNK_SIZE`] bytes), keeping the bytes as they are
    /// when zstd would not make them smaller, so a chunk never costs more than its size.
    pub fn compress(&mut self, data: &[u8]) -> Result<CompressedChunk, ImageError> {
        let out = AlignedBuf::with_capacity(data.len());
        Ok(self.compress_buf(AlignedBuf::copy_of(data), out)?.0)
    }

    /// [`Self::compress`] without copying or allocating: `data` holds the bytes, `out` (of at least
    /// `data.len()` bytes' capacity) receives the zstd frame. One of the two becomes the payload; the
    /// other is handed back for reuse.
    pub fn compress_buf(
        &mut self,
        data: AlignedBuf,
        out: AlignedBuf,
    ) -> Result<(CompressedChunk, AlignedBuf), ImageError> {
        let never = std::sync::atomic::AtomicBool::new(false);
        self.compress_buf_until(data, out, &never)?
            .ok_or_else(|| ImageError::InvalidUse {
                reason: "compression stopped without being asked to".into(),
            })
    }

    /// [`Self::compress_buf`] that gives up (`Ok(None)`) soon after `stop` is set, even in the middle of
    /// a slow, high-level compression.
    pub fn compress_buf_until(
        &mut self,
        data: AlignedBuf,
        mut out: AlignedBuf,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Option<(CompressedChunk, AlignedBuf)>, ImageError> {
        use std::sync::atomic::Ordering;
        let uncompressed_len = chunk_len(data.len())?;
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let hash = Hash::of(&data);
        // Only a frame smaller than the bytes is worth keeping: zstd stops as soon as it cannot fit in
        // one byte less, which also ends the work on incompressible data early. A frame that does not fit
        // (or any other zstd failure) leaves the bytes stored as they are, which is always correct.
        out.set_len(out.capacity().min(data.len() - 1));
        let compressed = if self.level >= SLOW_LEVEL {
            match self.zstd.compress_pieces(&data, &mut out, SLOW_PIECE, &|| {
                stop.load(Ordering::Relaxed)
            }) {
                Ok(None) => return Ok(None),
                Ok(Some(n)) => Some(n),
                Err(_) => None,
            }
        } else {
            self.zstd.compress(&data, &mut out).ok()
        };
        Ok(Some(match compressed {
            Some(n) if n < data.len() => {
                out.set_len(n);
                (chunk(hash, uncompressed_len, Compression::Zstd, out), data)
            }
            _ => (
                chunk(hash, uncompressed_len, Compression::Stored, data),
                out,
            ),
        }))
    }
}

fn chunk(
    hash: Hash,
    uncompressed_len: u32,
    compression: Compression,
    payload: AlignedBuf,
) -> CompressedChunk {
    CompressedChunk {
        hash,
        uncompressed_len,
        compression,
        payload,
        stored_elsewhere: None,
    }
}

fn chunk_len(len: usize) -> Result<u32, ImageError> {
    match u32::try_from(len) {
        Ok(n) if n > 0 && n <= MAX_CHUNK_SIZE => Ok(n),
        _ => Err(ImageError::InvalidUse {
            reason: format!("a chunk must hold 1..={MAX_CHUNK_SIZE} bytes, not {len}"),
        }),
    }
}

/// Hashes and compresses one chunk with a fresh compressor (see [`ChunkCompressor`] to reuse one).
pub fn compress_chunk(data: &[u8], level: i32) -> Result<CompressedChunk, ImageError> {
    ChunkCompressor::new(level)?.compress(data)
}

/// Turns a payload back into the chunk's bytes and checks them against the expected length and
/// hash, so bytes that come out of here can be written to a disk.
pub fn decompress_chunk(
    compression: Compression,
    payload: &[u8],
    uncompressed_len: u32,
    hash: &Hash,
) -> Result<Vec<u8>, ChunkFault> {
    match compression {
        Compression::Stored => check(payload.to_vec(), uncompressed_len, hash),
        Compression::Zstd => check(unzstd(payload, uncompressed_len)?, uncompressed_len, hash),
    }
}

/// [`decompress_chunk`] taking the payload by value, so stored chunks are not copied.
pub(crate) fn decompress_owned(
    compression: Compression,
    payload: Vec<u8>,
    uncompressed_len: u32,
    hash: &Hash,
) -> Result<Vec<u8>, ChunkFault> {
    match compression {
        Compression::Stored => check(payload, uncompressed_len, hash),
        Compression::Zstd => check(unzstd(&payload, uncompressed_len)?, uncompressed_len, hash),
    }
}

/// [`decompress_chunk`] into `out`, a reusable buffer (replaced when smaller than the chunk).
pub(crate) fn decompress_into(
    compression: Compression,
    payload: &[u8],
    uncompressed_len: u32,
    hash: &Hash,
    out: &mut AlignedBuf,
) -> Result<(), ChunkFault> {
    let len = uncompressed_len as usize;
    if uncompressed_len > MAX_CHUNK_SIZE {
        return Err(ChunkFault::Length {
            expected: uncompressed_len.into(),
            got: 0,
        });
    }
    out.fit(len);
    let got = match compression {
        Compression::Stored if payload.len() == len => {
            out.copy_from_slice(payload);
            len
        }
        Compression::Stored => payload.len(),
        // The buffer's length caps what a damaged or hostile frame can write.
        Compression::Zstd => zstd::bulk::decompress_to_buffer(payload, &mut out[..])
            .map_err(|e| ChunkFault::Decompress(e.to_string()))?,
    };
    if got != len {
        return Err(ChunkFault::Length {
            expected: uncompressed_len.into(),
            got: got as u64,
        });
    }
    let got = Hash::of(out);
    if got != *hash {
        return Err(ChunkFault::HashMismatch {
            expected: *hash,
            got,
        });
    }
    Ok(())
}

fn unzstd(payload: &[u8], uncompressed_len: u32) -> Result<Vec<u8>, ChunkFault> {
    if uncompressed_len > MAX_CHUNK_SIZE {
        return Err(ChunkFault::Length {
            expected: uncompressed_len.into(),
            got: 0,
        });
    }
    // The capacity caps what a damaged or hostile frame can make us allocate.
    zstd::bulk::decompress(payload, uncompressed_len as usize)
        .map_err(|e| ChunkFault::Decompress(e.to_string()))
}

fn check(data: Vec<u8>, uncompressed_len: u32, hash: &Hash) -> Result<Vec<u8>, ChunkFault> {
    if data.len() as u64 != u64::from(uncompressed_len) {
        return Err(ChunkFault::Length {
            expected: uncompressed_len.into(),
            got: data.len() as u64,
        });
    }
    let got = Hash::of(&data);
    if got != *hash {
        return Err(ChunkFault::HashMismatch {
            expected: *hash,
            got,
        });
    }
    Ok(data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod owned_tests {
    use super::*;
    use builder::fixtures::noise;

    #[test]
    fn incompressible_chunks_are_stored_without_a_copy_and_round_trip() {
        let mut c = ChunkCompressor::new(3).unwrap();
        let random = noise(1 << 20, 5);
        let out = AlignedBuf::with_capacity(1 << 20);
        let out_ptr = out.as_ptr();
        let (chunk, spare) = c.compress_buf(AlignedBuf::copy_of(&random), out).unwrap();
        assert_eq!(chunk.compression, Compression::Stored);
        assert_eq!(&chunk.payload[..], &random[..]);
        assert_eq!(spare.as_ptr(), out_ptr, "the output buffer is handed back");
        let back = decompress_chunk(
            chunk.compression,
            &chunk.payload,
            chunk.uncompressed_len,
            &chunk.hash,
        )
        .unwrap();
        assert_eq!(back, random);
    }

    #[test]
    fn compressible_and_mixed_chunks_are_compressed() {
        let mut c = ChunkCompressor::new(3).unwrap();
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog\n"
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        let chunk = c.compress(&text).unwrap();
        assert_eq!(chunk.compression, Compression::Zstd);
        // Half random, half text: still compressed, and the input buffer comes back.
        let mut mixed = noise(1 << 19, 9);
        mixed.extend_from_slice(&text[..1 << 19]);
        let data = AlignedBuf::copy_of(&mixed);
        let (chunk, spare) = c
            .compress_buf(data, AlignedBuf::with_capacity(1 << 20))
            .unwrap();
        assert_eq!(&spare[..], &mixed[..]);
        assert_eq!(chunk.compression, Compression::Zstd);
        assert!(chunk.payload.len() < mixed.len() * 3 / 4);
        let back = decompress_chunk(
            chunk.compression,
            &chunk.payload,
            chunk.uncompressed_len,
            &chunk.hash,
        )
        .unwrap();
        assert_eq!(back, mixed);
    }

    #[test]
    fn a_one_byte_chunk_is_stored() {
        let mut c = ChunkCompressor::new(3).unwrap();
        let chunk = c.compress(b"x").unwrap();
        assert_eq!(chunk.compression, Compression::Stored);
        assert_eq!(&chunk.payload[..], b"x");
    }
}
