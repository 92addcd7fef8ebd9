//! Read-back verification of a restore. As the restore writes each piece of a chunk (whose bytes were
//! checked against the chunk's blake3 hash just before), it notes the piece's place and a 64-bit checksum
//! of its bytes (XXH3 with a seed drawn for the restore). Once every write is flushed, the target is read
//! back in large requests in device order (pieces close together, of any chunks, in one request) and each
//! piece's checksum compared: a device that lost, misplaced or corrupted a write (a failing disk, a
//! fake-capacity stick that wraps around) is caught, and the message names the exact range. Reading in
//! device order rather than chunk by chunk turns the thousands of small copies deduplication places
//! into a few large reads.

use std::hash::{BuildHasher, RandomState};
use std::ops::Range;
use std::sync::Mutex;

use twox_hash::XxHash3_64;

use super::pieces::{self, Piece, ReadDevice};
use super::EngineError;
use crate::image::ChunkId;
use crate::sys::AlignedBuf;

/// A piece as written: where, how long, its checksum, and the chunk it came from (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub device: u64,
    pub len: u64,
    sum: u64,
    pub chunk: ChunkId,
}

/// What the restore wrote, noted piece by piece from several threads.
pub(crate) struct Ledger {
    seed: u64,
    written: Mutex<Vec<Written>>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger {
            seed: RandomState::new().hash_one(0u64),
            written: Mutex::new(Vec::new()),
        }
    }

    /// Notes the pieces of chunk `chunk` written from `bytes` (the chunk's bytes).
    pub fn note(&self, chunk: ChunkId, pieces: &[Piece], bytes: &[u8]) {
        let noted: Vec<Written> = pieces
            .iter()
            .map(|p| Written {
                device: p.device,
                len: p.len,
                sum: self.sum(&bytes[p.at as usize..(p.at + p.len) as usize]),
                chunk,
            })
            .collect();
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(noted);
    }

    fn sum(&self, bytes: &[u8]) -> u64 {
        XxHash3_64::oneshot_with_seed(self.seed, bytes)
    }

    /// The pieces in device order, and the reads that cover them ([`pieces::spans`]).
    pub fn into_spans(self) -> (Checker, Vec<Range<usize>>) {
        let mut written = self.written.into_inner().unwrap_or_else(|p| p.into_inner());
        written.sort_unstable_by_key(|w| w.device);
        let spans = pieces::spans(&written, |w| (w.device, w.len));
        let checker = Checker {
            seed: self.seed,
            written,
        };
        (checker, spans)
    }
}

/// Compares what the device holds with the pieces noted.
pub(crate) struct Checker {
    seed: u64,
    written: Vec<Written>,
}

impl Checker {
    /// Bytes of the pieces in `span`.
    pub fn bytes(&self, span: &Range<usize>) -> u64 {
        self.written[span.clone()].iter().map(|w| w.len).sum()
    }

    /// Reads the pieces of `span` (one of [`Ledger::into_spans`]'s) with one request into `buf` and returns
    /// the first that differs from what was written.
    pub fn check(
        &self,
        span: &Range<usize>,
        read: &ReadDevice,
        buf: &mut AlignedBuf,
    ) -> Result<Option<Written>, EngineError> {
        let pieces = &self.written[span.clone()];
        let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
            return Ok(None);
        };
        let start = first.device;
        buf.fit((last.device + last.len - start) as usize);
        read(buf, start)?;
        Ok(pieces.iter().copied().find(|w| {
            let at = (w.device - start) as usize;
            XxHash3_64::oneshot_with_seed(self.seed, &buf[at..at + w.len as usize]) != w.sum
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(at: u64, device: u64, len: u64) -> Piece {
        Piece {
            at,
            device,
            len,
            stream: 0,
        }
    }

    #[test]
    fn pieces_are_read_back_in_device_order_and_a_changed_byte_is_named() {
        let chunk: Vec<u8> = (0..64 << 10).map(|i| (i * 13 % 251) as u8).collect();
        let ledger = Ledger::new();
        // Chunk 1 went to three places: two close together (one read), one 4 MiB further (another read).
        let placed = [
            piece(0, 4 << 20, 8192),
            piece(8192, 8192, 4096),
            piece(4096, 20480, 4096),
        ];
        ledger.note(ChunkId(1), &placed, &chunk);
        let (checker, spans) = ledger.into_spans();
        assert_eq!(spans, [0..2, 2..3]);
        assert_eq!(checker.bytes(&spans[0]), 8192);
        let mut device = vec![0u8; 5 << 20];
        for p in &placed {
            device[p.device as usize..(p.device + p.len) as usize]
                .copy_from_slice(&chunk[p.at as usize..(p.at + p.len) as usize]);
        }
        let mut buf = AlignedBuf::with_capacity(0);
        for damaged in [None, Some(20480 + 100)] {
            let mut device = device.clone();
            if let Some(at) = damaged {
                device[at] ^= 1;
            }
            let read: &ReadDevice = &|buf, at| {
                buf.copy_from_slice(&device[at as usize..at as usize + buf.len()]);
                Ok(())
            };
            let found: Vec<_> = spans
                .iter()
                .filter_map(|s| checker.check(s, read, &mut buf).unwrap())
                .map(|w| (w.device, w.len, w.chunk))
                .collect();
            match damaged {
                None => assert!(found.is_empty()),
                Some(_) => assert_eq!(found, [(20480, 4096, ChunkId(1))]),
            }
        }
    }
}
