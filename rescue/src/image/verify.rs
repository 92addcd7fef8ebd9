//! Full verification of an image: every chunk read and checked against its hash, every stream's
//! extent cover, the root hash. It reports every problem it finds instead of stopping at the first,
//! so the user learns exactly which parts of the disk an image can and cannot restore.

use std::io::{Read, Seek};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;

use super::index::ExtentKind;
use super::reader::{ImageReader, Opened, ReadAt, SharedReader};
use super::{ChunkId, Hash, ImageError};
use crate::sys::AlignedBuf;

/// Chunk errors kept in a report; beyond this a damaged image is only counted, to bound memory.
const MAX_CHUNK_ERRORS: usize = 1000;

/// Where a verify run is, for progress displays (bytes are uncompressed chunk bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyProgress {
    pub chunks_done: u64,
    pub chunks_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// The outcome of a verify run.
#[derive(Debug)]
pub struct VerifyReport {
    /// Checked when the image was opened; a mismatch would have failed the open.
    pub root_hash: Hash,
    pub chunks_checked: u64,
    pub chunks_ok: u64,
    /// Uncompressed bytes of the chunks that passed.
    pub bytes_ok: u64,
    /// Structural problems of the index (holes in a stream's extents, dangling chunk references…).
    pub index_problems: Vec<String>,
    /// One error per damaged or unreadable chunk, naming where it belongs (first [`MAX_CHUNK_ERRORS`]).
    pub chunk_errors: Vec<ImageError>,
    /// All damaged or unreadable chunks, including those not listed.
    pub bad_chunks: u64,
    /// Chunks no stream references: harmless, but a sign of an engine bug.
    pub unreferenced_chunks: u64,
    /// Source bytes recorded as unreadable at capture: not damage to the image, but bytes it does
    /// not hold, which restore will write as zeros.
    pub unreadable_source_bytes: u64,
}

impl VerifyReport {
    /// True when every chunk checked out and the index is consistent.
    pub fn is_ok(&self) -> bool {
        self.index_problems.is_empty() && self.bad_chunks == 0
    }

    /// Every problem as a line for the user.
    pub fn problems(&self) -> Vec<String> {
        let mut v = self.index_problems.clone();
        v.extend(self.chunk_errors.iter().map(|e| crate::units::chain(e)));
        let unlisted = self.bad_chunks - self.chunk_errors.len() as u64;
        if unlisted > 0 {
            v.push(format!("… and {unlisted} more damaged chunks not listed"));
        }
        v
    }
}

/// The report before any chunk is checked, and the progress to count them with.
fn start(o: &Opened, root_hash: Hash) -> (VerifyReport, VerifyProgress) {
    let index = &o.index;
    let mut referenced = vec![false; index.chunks.len()];
    let mut unreadable = 0u64;
    for x in index.streams.iter().flat_map(|s| &s.extents) {
        match x.kind {
            ExtentKind::Data(id) | ExtentKind::Slice { chunk: id, .. } => {
                if let Some(r) = referenced.get_mut(id.0 as usize) {
                    *r = true;
                }
            }
            ExtentKind::Unreadable => unreadable = unreadable.saturating_add(x.len),
            ExtentKind::Zero | ExtentKind::Unused => {}
        }
    }
    let p = VerifyProgress {
        chunks_done: 0,
        chunks_total: index.chunks.len() as u64,
        bytes_done: 0,
        bytes_total: index
            .chunks
            .iter()
            .map(|c| u64::from(c.uncompressed_len))
            .sum(),
    };
    let report = VerifyReport {
        root_hash,
        chunks_checked: 0,
        chunks_ok: 0,
        bytes_ok: 0,
        index_problems: o.problems.clone(),
        chunk_errors: Vec::new(),
        bad_chunks: 0,
        unreferenced_chunks: referenced.iter().filter(|r| !**r).count() as u64,
        unreadable_source_bytes: unreadable,
    };
    (report, p)
}

impl VerifyReport {
    /// Counts one checked chunk: its uncompressed length if it checked out, else why not.
    fn record(&mut self, p: &mut VerifyProgress, len: u32, checked: Result<u64, ImageError>) {
        match checked {
            Ok(n) => {
                self.chunks_ok += 1;
                self.bytes_ok += n;
            }
            Err(e) => {
                self.bad_chunks += 1;
                if self.chunk_errors.len() < MAX_CHUNK_ERRORS {
                    self.chunk_errors.push(e);
                }
            }
        }
        self.chunks_checked += 1;
        p.chunks_done += 1;
        p.bytes_done += u64::from(len);
    }
}

fn verify_opened(
    o: &Opened,
    root_hash: Hash,
    mut fetch: impl FnMut(ChunkId) -> Result<Vec<u8>, ImageError>,
    progress: &mut dyn FnMut(&VerifyProgress),
) -> VerifyReport {
    let (mut report, mut p) = start(o, root_hash);
    progress(&p);
    // Chunk ids follow file order, so this reads the image sequentially.
    for (i, c) in o.index.chunks.iter().enumerate() {
        let checked = fetch(ChunkId(i as u64)).map(|data| data.len() as u64);
        report.record(&mut p, c.uncompressed_len, checked);
        progress(&p);
    }
    report
}

impl<R: Read + Seek> ImageReader<R> {
    /// Reads and checks every chunk, and reports every problem found (including the index problems
    /// kept by [`ImageReader::open_for_verify`]). `progress` is called after each chunk.
    pub fn verify(&mut self, mut progress: impl FnMut(&VerifyProgress)) -> VerifyReport {
        let root = self.root_hash();
        // The Arc'd state is cloned so chunks can be read through `self` meanwhile.
        let o = self.state();
        verify_opened(&o, root, |id| self.read_chunk(id), &mut progress)
    }
}

impl<F: ReadAt> SharedReader<F> {
    /// [`ImageReader::verify`] over positional reads, on every core (see [`Self::check_chunks`]).
    /// Damaged chunks are listed in chunk order.
    pub fn verify(&self, mut progress: impl FnMut(&VerifyProgress)) -> VerifyReport {
        let o = self.state();
        let (mut report, mut p) = start(&o, self.root_hash());
        progress(&p);
        let chunks = &o.index.chunks;
        let ids: Vec<ChunkId> = (0..chunks.len() as u64).map(ChunkId).collect();
        let never = AtomicBool::new(false);
        self.check_chunks(&ids, &never, |id, checked| {
            report.record(&mut p, chunks[id.0 as usize].uncompressed_len, checked);
            progress(&p);
        });
        report.chunk_errors.sort_by_key(|e| e.chunk());
        report
    }

    /// Reads, decompresses and hashes each chunk of `ids` on every core (at most [`MAX_THREADS`]): each
    /// thread works into buffers of its own, taking the next id in turn, so ids in file order are read
    /// front to back. `checked` gets every chunk's outcome (its uncompressed length, or why it failed),
    /// in the order they finish. Returns false when `cancel` stopped it before every chunk was checked.
    pub fn check_chunks(
        &self,
        ids: &[ChunkId],
        cancel: &AtomicBool,
        mut checked: impl FnMut(ChunkId, Result<u64, ImageError>),
    ) -> bool {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS)
            .min(ids.len().max(1));
        let next = AtomicUsize::new(0);
        let (tx, rx) = sync_channel::<(ChunkId, Result<u64, ImageError>)>(2 * threads);
        let mut finished = 0;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let (tx, next) = (tx.clone(), &next);
                scope.spawn(move || {
                    let (mut buf, mut scratch) =
                        (AlignedBuf::with_capacity(0), AlignedBuf::with_capacity(0));
                    loop {
                        if cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        let Some(&id) = ids.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            return;
                        };
                        let r = self
                            .read_chunk_into(id, &mut buf, &mut scratch)
                            .map(|()| buf.len() as u64);
                        if tx.send((id, r)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            for (id, r) in rx {
                finished += 1;
                checked(id, r);
            }
        });
        finished == ids.len()
    }
}

/// Most threads [`SharedReader::verify`] uses: beyond this the disk holding the image is the limit.
pub const MAX_THREADS: usize = 8;
