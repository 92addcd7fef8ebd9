//! Read-back verification of a restore or a clone. As each piece is written (a restore checked its chunk's
//! blake3 hash just before), the ledger notes the piece's place and a 64-bit checksum of its bytes (XXH3
//! with a seed drawn for the job); runs of zeros are noted as zeros and partition tables by their bytes'
//! checksum. Once every write is flushed, the target is read back in large requests in device order (places
//! close together, of any chunks, in one request) and every noted place compared: a device that lost,
//! misplaced or corrupted a write (a failing disk, a fake-capacity stick that wraps around) is caught, and
//! the message names the exact range. Reading in device order rather than chunk by chunk turns the
//! thousands of small copies deduplication places into a few large reads.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use twox_hash::XxHash3_64;

use super::device::Target;
use super::pieces::{self, Piece, ReadDevice, SPAN_MAX};
use super::progress::{Meter, Progress};
use super::workers::parallel;
use super::{is_zero, EngineError};
use crate::image::ChunkId;
use crate::sys::AlignedBuf;

/// What a written place holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Bytes of this chunk of the image.
    Chunk(ChunkId),
    /// Bytes copied from the source disk (a clone).
    Copied,
    /// Zeros: a run of zeros of the source, or a range it could not read, written as zeros.
    Zeros,
    /// A partition table's bytes.
    Table,
    /// Bytes of a stream of an image of another program (a partclone image in a Clonezilla directory).
    Stored,
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Held::Chunk(id) => write!(f, "{id} of the image"),
            Held::Copied => f.write_str("copied from the source"),
            Held::Zeros => f.write_str("zeros"),
            Held::Table => f.write_str("the partition table"),
            Held::Stored => f.write_str("bytes of the image's partition stream"),
        }
    }
}

/// A place as written: where, how long, what it holds and (unless zeros) its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    pub device: u64,
    pub len: u64,
    sum: u64,
    pub held: Held,
}

/// What the job wrote, noted place by place from several threads.
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
            .map(|p| {
                self.bytes_at(
                    p.device,
                    &bytes[p.at as usize..(p.at + p.len) as usize],
                    Held::Chunk(chunk),
                )
            })
            .collect();
        self.add(noted);
    }

    /// Notes `bytes` written at `device` (a table, or bytes copied from a source).
    pub fn note_bytes(&self, device: u64, bytes: &[u8], held: Held) {
        self.add(vec![self.bytes_at(device, bytes, held)]);
    }

    /// Notes `len` zeros written at `device`, in places of at most [`SPAN_MAX`] so that each reads back
    /// with one request.
    pub fn note_zeros(&self, device: u64, len: u64) {
        let noted = (device..device + len)
            .step_by(SPAN_MAX as usize)
            .map(|at| Written {
                device: at,
                len: (device + len - at).min(SPAN_MAX),
                sum: 0,
                held: Held::Zeros,
            })
            .collect();
        self.add(noted);
    }

    fn bytes_at(&self, device: u64, bytes: &[u8], held: Held) -> Written {
        Written {
            device,
            len: bytes.len() as u64,
            sum: XxHash3_64::oneshot_with_seed(self.seed, bytes),
            held,
        }
    }

    fn add(&self, noted: Vec<Written>) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(noted);
    }

    /// The places in device order, and the reads that cover them ([`pieces::spans`]).
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

/// Compares what the device holds with the places noted.
pub(crate) struct Checker {
    seed: u64,
    written: Vec<Written>,
}

impl Checker {
    /// Bytes of the places in `span`.
    pub fn bytes(&self, span: &Range<usize>) -> u64 {
        self.written[span.clone()].iter().map(|w| w.len).sum()
    }

    /// Reads the places of `span` (one of [`Ledger::into_spans`]'s) with one request into `buf` and
    /// returns the first that differs from what was written.
    pub fn check(
        &self,
        span: &Range<usize>,
        read: &ReadDevice,
        buf: &mut AlignedBuf,
    ) -> Result<Option<Written>, EngineError> {
        let places = &self.written[span.clone()];
        let (Some(first), Some(last)) = (places.first(), places.last()) else {
            return Ok(None);
        };
        let start = first.device;
        buf.fit((last.device + last.len - start) as usize);
        read(buf, start)?;
        Ok(places.iter().copied().find(|w| {
            let at = (w.device - start) as usize;
            let bytes = &buf[at..at + w.len as usize];
            match w.held {
                Held::Zeros => !is_zero(bytes),
                _ => XxHash3_64::oneshot_with_seed(self.seed, bytes) != w.sum,
            }
        }))
    }
}

/// Once every write of a job is flushed: reads back every place `ledger` noted on `target`, on `workers`
/// threads, with "read-back" progress; an error names the first place that differs.
pub(crate) fn read_back(
    ledger: Ledger,
    target: &Target,
    workers: usize,
    cancel: &AtomicBool,
    progress: Option<Sender<Progress>>,
) -> Result<(), EngineError> {
    target.drop_cache();
    let (checker, spans) = ledger.into_spans();
    let total = spans.iter().map(|s| checker.bytes(s)).sum();
    let meter = Mutex::new(Meter::new("read-back", total, progress));
    let read: &ReadDevice = &|buf, at| target.read_exact_at(buf, at).map_err(EngineError::from);
    parallel(&spans, workers, cancel, |buf, _, span| {
        if let Some(w) = checker.check(span, read, buf)? {
            return Err(EngineError::Failed(format!(
                "read-back verification failed: {} bytes at byte {} of {} differ from what was written there \
                 ({}); the target may be failing or may not hold as much as it claims",
                w.len,
                w.device,
                target.path().display(),
                w.held
            )));
        }
        if let Ok(mut m) = meter.lock() {
            m.advance(checker.bytes(span), 0);
        }
        Ok(())
    })
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

    /// The places `checker` finds different on `device` with one bit of byte `damaged` flipped.
    fn differing(
        checker: &Checker,
        spans: &[Range<usize>],
        device: &[u8],
        damaged: Option<usize>,
    ) -> Vec<(u64, u64, Held)> {
        let mut device = device.to_vec();
        if let Some(at) = damaged {
            device[at] ^= 0x40;
        }
        let read: &ReadDevice = &|buf, at| {
            buf.copy_from_slice(&device[at as usize..at as usize + buf.len()]);
            Ok(())
        };
        let mut buf = AlignedBuf::with_capacity(0);
        spans
            .iter()
            .filter_map(|s| checker.check(s, read, &mut buf).unwrap())
            .map(|w| (w.device, w.len, w.held))
            .collect()
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
        for damaged in [None, Some(20480 + 100)] {
            let found = differing(&checker, &spans, &device, damaged);
            match damaged {
                None => assert!(found.is_empty()),
                Some(_) => assert_eq!(found, [(20480, 4096, Held::Chunk(ChunkId(1)))]),
            }
        }
    }

    /// Zeros and tables are read back too: a zero place that holds anything else, or a table that is not
    /// the bytes written, is named with what it should hold. Long runs of zeros are noted in places of at
    /// most a span, so that no read is larger.
    #[test]
    fn zeros_and_tables_are_read_back_and_named() {
        let ledger = Ledger::new();
        let table: Vec<u8> = (0..512).map(|i| (i % 7) as u8 + 1).collect();
        ledger.note_bytes(0, &table, Held::Table);
        ledger.note_zeros(4096, 40 << 20);
        let (checker, spans) = ledger.into_spans();
        assert_eq!(
            checker.written.len(),
            4,
            "40 MiB of zeros in 16 MiB places, and the table"
        );
        assert!(checker.written.iter().all(|w| w.len <= SPAN_MAX));
        assert_eq!(
            spans.iter().map(|s| checker.bytes(s)).sum::<u64>(),
            512 + (40 << 20)
        );
        let mut device = vec![0u8; 41 << 20];
        device[..512].copy_from_slice(&table);
        for (damaged, want) in [
            (None, None),
            (Some(100), Some((0, 512, Held::Table))),
            (
                Some(4096 + (20 << 20)),
                Some((4096 + (16 << 20), 16 << 20, Held::Zeros)),
            ),
        ] {
            let found = differing(&checker, &spans, &device, damaged);
            assert_eq!(found, want.into_iter().collect::<Vec<_>>());
        }
    }
}
