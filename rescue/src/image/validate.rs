//! Structural checks of a decoded index (docs/FORMAT.md, "Validity rules") and the map from each
//! chunk back to the place on the disk it belongs, which every chunk error message names.
//!
//! A well-formed encoding can still describe an impossible image (an extent list with a hole, a
//! reference to a chunk that does not exist). Restore must not start on such an index, and verify
//! must list every such problem, so the checks collect problems instead of stopping at the first.

use super::index::{ExtentKind, Index, StreamKind};
use super::{ChunkId, ChunkLocation, Compression, StreamId, FRAME_HEADER_LEN, MAX_CHUNK_SIZE};

/// Listing more problems than this helps no one and would let a hostile index use unbounded memory.
const MAX_PROBLEMS: usize = 200;

/// Collects problems up to a limit, counting the rest.
#[derive(Default)]
pub(crate) struct Problems {
    pub(crate) list: Vec<String>,
    dropped: u64,
}

impl Problems {
    pub(crate) fn push(&mut self, p: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("… and {} more problems not listed", self.dropped));
        }
        self.list
    }
}

impl Index {
    /// Every structural problem of the index (empty when it is consistent). File-level checks (frames
    /// inside the file) are made by the reader, which knows the file's layout.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Problems::default();
        self.validate_chunks(&mut p);
        self.validate_streams(&mut p);
        p.into_vec()
    }

    /// Bytes the streams hold that are stored only once for several places (identical chunks, and blocks
    /// found again by deduplication): the Data and Slice extents' bytes minus the referenced chunks' bytes.
    pub fn repeated_bytes(&self) -> u64 {
        let mut referenced = vec![false; self.chunks.len()];
        let mut placed = 0u64;
        for x in self.streams.iter().flat_map(|s| &s.extents) {
            if let Some((id, _)) = x.chunk_piece() {
                placed = placed.saturating_add(x.len);
                if let Some(r) = referenced.get_mut(id.0 as usize) {
                    *r = true;
                }
            }
        }
        let stored: u64 = self
            .chunks
            .iter()
            .zip(referenced)
            .filter(|(_, r)| *r)
            .map(|(c, _)| u64::from(c.uncompressed_len))
            .sum();
        placed.saturating_sub(stored)
    }

    /// How the stored chunks divide among the streams, each stored byte counted once: a chunk belongs to
    /// the first stream (in index order) that references it. Per stream, in index order.
    pub fn stream_storage(&self) -> Vec<StreamStorage> {
        let mut owner: Vec<Option<usize>> = vec![None; self.chunks.len()];
        let mut out = vec![StreamStorage::default(); self.streams.len()];
        for (si, s) in self.streams.iter().enumerate() {
            for x in &s.extents {
                let Some((id, _)) = x.chunk_piece() else {
                    continue;
                };
                let Some(slot) = owner.get_mut(id.0 as usize) else {
                    continue;
                };
                match *slot {
                    None => {
                        *slot = Some(si);
                        out[si].stored_bytes = out[si]
                            .stored_bytes
                            .saturating_add(u64::from(self.chunks[id.0 as usize].stored_len));
                    }
                    Some(o) if o != si => {
                        out[si].shared_bytes = out[si].shared_bytes.saturating_add(x.len)
                    }
                    Some(_) => {}
                }
            }
        }
        out
    }

    /// Whether any extent is a [`ExtentKind::Slice`].
    pub fn has_slices(&self) -> bool {
        self.streams.iter().any(|s| {
            s.extents
                .iter()
                .any(|x| matches!(x.kind, ExtentKind::Slice { .. }))
        })
    }

    fn validate_chunks(&self, p: &mut Problems) {
        let mut prev_end = 0u64;
        for (i, c) in self.chunks.iter().enumerate() {
            if c.uncompressed_len == 0 || c.uncompressed_len > MAX_CHUNK_SIZE {
                p.push(format!(
                    "chunk {i}: uncompressed length {} is outside 1..={MAX_CHUNK_SIZE}",
                    c.uncompressed_len
                ));
            }
            let stored_ok = match c.compression {
                Compression::Stored => c.stored_len == c.uncompressed_len,
                Compression::Zstd => c.stored_len > 0 && c.stored_len <= c.uncompressed_len,
            };
            if !stored_ok {
                p.push(format!(
                    "chunk {i}: stored length {} does not fit {:?} compression of {} bytes",
                    c.stored_len, c.compression, c.uncompressed_len
                ));
            }
            if c.offset < prev_end {
                p.push(format!(
                    "chunk {i}: its frame at image offset {} overlaps the previous frame \
                     (which ends at {prev_end})",
                    c.offset
                ));
            }
            prev_end = c
                .offset
                .saturating_add(FRAME_HEADER_LEN as u64)
                .saturating_add(u64::from(c.stored_len));
        }
    }

    fn validate_streams(&self, p: &mut Problems) {
        // Per chunk, the last stream that counted it towards its stored bytes (index + 1).
        let mut counted_by = vec![0u32; self.chunks.len()];
        for (si, s) in self.streams.iter().enumerate() {
            let name = format!("stream {si} ({})", s.info.describe());
            let info = &s.info;
            match info.disk_offset.checked_add(info.length) {
                Some(end) if end <= self.disk.size => {}
                _ => p.push(format!(
                    "{name}: disk range {}+{} lies beyond the end of the {}-byte disk",
                    info.disk_offset, info.length, self.disk.size
                )),
            }
            if let StreamKind::Partition { number } = info.kind {
                if !self.disk.partitions.iter().any(|q| q.number == number) {
                    p.push(format!(
                        "{name}: partition {number} is not in the disk's partition list"
                    ));
                }
            }
            let (mut pos, mut unused, mut stored) = (0u64, 0u64, 0u64);
            for x in &s.extents {
                if x.offset != pos {
                    p.push(format!(
                        "{name}: extent at stream offset {} should start at {pos} \
                         (extents must be sorted, contiguous and not overlap)",
                        x.offset
                    ));
                }
                if x.len == 0 {
                    p.push(format!(
                        "{name}: empty extent at stream offset {}",
                        x.offset
                    ));
                }
                pos = x.offset.saturating_add(x.len);
                match x.kind {
                    ExtentKind::Unused => unused = unused.saturating_add(x.len),
                    ExtentKind::Data(_) | ExtentKind::Slice { .. } => {
                        let Some((id, at)) = x.chunk_piece() else {
                            continue;
                        };
                        let Some(c) = self.chunks.get(id.0 as usize) else {
                            p.push(format!(
                                "{name}: extent at stream offset {} references chunk {}, \
                                 but the image has {} chunks",
                                x.offset,
                                id.0,
                                self.chunks.len()
                            ));
                            continue;
                        };
                        let holds = u64::from(c.uncompressed_len);
                        if let ExtentKind::Data(_) = x.kind {
                            if x.len != holds {
                                p.push(format!(
                                    "{name}: extent at stream offset {} is {} bytes long but \
                                     chunk {} holds {holds} bytes",
                                    x.offset, x.len, id.0
                                ));
                            }
                        } else if at.saturating_add(x.len) > holds {
                            p.push(format!(
                                "{name}: extent at stream offset {} takes {} bytes from byte {at} \
                                 of chunk {}, which holds {holds} bytes",
                                x.offset, x.len, id.0
                            ));
                        }
                        let mark = si as u32 + 1;
                        if counted_by[id.0 as usize] != mark {
                            counted_by[id.0 as usize] = mark;
                            stored = stored.saturating_add(u64::from(c.stored_len));
                        }
                    }
                    ExtentKind::Zero | ExtentKind::Unreadable => {}
                }
            }
            if pos != info.length {
                p.push(format!(
                    "{name}: extents cover {pos} bytes but the stream is {} bytes long",
                    info.length
                ));
            }
            let used = info.length.saturating_sub(unused);
            if s.used_bytes != used {
                p.push(format!(
                    "{name}: records {} used bytes but its extents give {used}",
                    s.used_bytes
                ));
            }
            if s.stored_bytes != stored {
                p.push(format!(
                    "{name}: records {} stored bytes but its chunks hold {stored}",
                    s.stored_bytes
                ));
            }
        }
    }
}

/// One stream's share of an image file: see [`Index::stream_storage`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStorage {
    /// Payload bytes of the chunks this stream was the first to reference (stored for it).
    pub stored_bytes: u64,
    /// Bytes of this stream held by chunks another stream stored first (shared with it).
    pub shared_bytes: u64,
}

/// For each chunk, the first extent referencing it and how many reference it.
pub(crate) struct RefMap {
    first: Vec<(u32, u64)>,
    count: Vec<u32>,
}

const UNREFERENCED: u32 = u32::MAX;

impl RefMap {
    pub(crate) fn build(index: &Index) -> RefMap {
        let n = index.chunks.len();
        let mut m = RefMap {
            first: vec![(UNREFERENCED, 0); n],
            count: vec![0; n],
        };
        for (si, s) in index.streams.iter().enumerate() {
            for x in &s.extents {
                if let Some((id, _)) = x.chunk_piece() {
                    let Some(slot) = m.first.get_mut(id.0 as usize) else {
                        continue;
                    };
                    if slot.0 == UNREFERENCED {
                        *slot = (si as u32, x.offset);
                    }
                    m.count[id.0 as usize] = m.count[id.0 as usize].saturating_add(1);
                }
            }
        }
        m
    }

    /// Where `chunk` belongs on the disk, for messages.
    pub(crate) fn locate(&self, index: &Index, chunk: ChunkId) -> Option<ChunkLocation> {
        let i = usize::try_from(chunk.0).ok()?;
        let (si, offset) = *self.first.get(i)?;
        let stream = index.streams.get(si as usize)?;
        Some(ChunkLocation {
            stream: StreamId(si),
            stream_desc: stream.info.describe(),
            stream_offset: offset,
            disk_offset: stream.info.disk_offset.saturating_add(offset),
            other_refs: u64::from(self.count[i].saturating_sub(1)),
        })
    }
}
