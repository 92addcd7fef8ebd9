//! The chunk-by-chunk view of an image's data that restore and device comparison work from: every Data or
//! Slice extent is a **piece** of a chunk placed at a device offset. With block deduplication one chunk's
//! bytes go to several places, even in several streams; grouping the pieces by chunk lets each chunk be
//! read and decompressed once, however many places take its bytes.

use std::collections::HashMap;

use super::EngineError;
use crate::image::{ChunkId, Extent, Hash, ReadAt, SharedReader};
use crate::sys::AlignedBuf;

/// Bytes `at..at + len` of a chunk, which belong at `device` on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub at: u64,
    pub device: u64,
    pub len: u64,
    /// The stream it belongs to (for messages).
    pub stream: usize,
}

/// One chunk and every place its bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkWork {
    pub id: ChunkId,
    pub pieces: Vec<Piece>,
}

impl ChunkWork {
    pub fn bytes(&self) -> u64 {
        self.pieces.iter().map(|p| p.len).sum()
    }
}

/// Groups the pieces of `extents` (stream index, device offset of the stream's byte 0, extent) by chunk,
/// the chunks in the order of their first piece, the pieces in the order given.
pub(crate) fn group<'a>(
    extents: impl IntoIterator<Item = (usize, u64, &'a Extent)>,
) -> Vec<ChunkWork> {
    let mut work: Vec<ChunkWork> = Vec::new();
    let mut slot: HashMap<ChunkId, usize> = HashMap::new();
    for (stream, base, e) in extents {
        let Some((id, at)) = e.chunk_piece() else {
            continue;
        };
        let piece = Piece {
            at,
            device: base + e.offset,
            len: e.len,
            stream,
        };
        let i = *slot.entry(id).or_insert_with(|| {
            work.push(ChunkWork {
                id,
                pieces: Vec::new(),
            });
            work.len() - 1
        });
        work[i].pieces.push(piece);
    }
    work
}

/// Reads `len` bytes of the device at an offset into a buffer.
pub(crate) type ReadDevice<'a> = dyn Fn(&mut [u8], u64) -> Result<(), EngineError> + Sync + 'a;

/// Pieces further apart on the device than this are read separately.
const SPAN_GAP: u64 = 1 << 20;
/// The most one read covers.
pub(crate) const SPAN_MAX: u64 = 16 << 20;

/// Compares what the device holds at each piece of `work` with the chunk; returns the pieces that differ.
///
/// Usually without decompressing anything: the pieces that tile the chunk (the whole chunk, or the runs of
/// a deduplicated read) are read, put back together and checked against the chunk's hash, and the other
/// pieces (copies of its blocks elsewhere) are compared with those verified bytes. Only when the tiles do
/// not cover the chunk or do not match its hash is the chunk read from the image and each piece compared
/// with it, which names exactly the pieces that differ. Pieces close together on the device are read with
/// one request.
pub(crate) fn compare<F: ReadAt>(
    image: &SharedReader<F>,
    work: &ChunkWork,
    read: &ReadDevice,
    buf: &mut AlignedBuf,
    scratch: &mut AlignedBuf,
) -> Result<Vec<Piece>, EngineError> {
    let record = image
        .index()
        .chunks
        .get(work.id.0 as usize)
        .ok_or_else(|| EngineError::Internal(format!("{} is not in the image", work.id)))?;
    let (len, hash) = (u64::from(record.uncompressed_len), record.hash);
    let mut differ = Vec::new();
    if let Some((tiles, copies)) = tiles(work, len) {
        buf.fit(len as usize);
        match tiles.as_slice() {
            // The usual case: one piece that is the whole chunk, read straight into place.
            [p] => read(buf, p.device)?,
            _ => read_spans(&tiles, read, scratch, |p, bytes| {
                buf[p.at as usize..(p.at + p.len) as usize].copy_from_slice(bytes)
            })?,
        }
        if Hash::of(buf) == hash {
            read_spans(&copies, read, scratch, |p, bytes| {
                if bytes != &buf[p.at as usize..(p.at + p.len) as usize] {
                    differ.push(*p);
                }
            })?;
            return Ok(differ);
        }
    }
    image.read_chunk_into(work.id, buf, scratch)?;
    let all: Vec<&Piece> = work.pieces.iter().collect();
    read_spans(&all, read, scratch, |p, bytes| {
        if bytes != &buf[p.at as usize..(p.at + p.len) as usize] {
            differ.push(*p);
        }
    })?;
    Ok(differ)
}

/// The pieces that tile the chunk (`len` bytes) one after the other from byte 0, and the others; `None`
/// when the pieces leave a gap.
fn tiles(work: &ChunkWork, len: u64) -> Option<(Vec<&Piece>, Vec<&Piece>)> {
    let mut sorted: Vec<&Piece> = work.pieces.iter().collect();
    sorted.sort_by_key(|p| p.at);
    let (mut tiles, mut copies) = (Vec::new(), Vec::new());
    let mut filled = 0u64;
    for p in sorted {
        if p.at == filled && p.at + p.len <= len {
            filled += p.len;
            tiles.push(p);
        } else if p.at < filled && p.at + p.len <= filled {
            copies.push(p);
        } else {
            return None;
        }
    }
    (filled == len).then_some((tiles, copies))
}

/// Reads the device's bytes of `pieces` and hands each piece's to `f`, in device order; pieces close
/// together are read with one request.
fn read_spans(
    pieces: &[&Piece],
    read: &ReadDevice,
    scratch: &mut AlignedBuf,
    mut f: impl FnMut(&Piece, &[u8]),
) -> Result<(), EngineError> {
    let mut order = pieces.to_vec();
    order.sort_by_key(|p| p.device);
    for span in spans(&order, |p| (p.device, p.len)) {
        let (first, last) = (order[span.start], order[span.end - 1]);
        let start = first.device;
        scratch.fit((last.device + last.len - start) as usize);
        read(scratch, start)?;
        for p in &order[span] {
            let o = (p.device - start) as usize;
            f(p, &scratch[o..o + p.len as usize]);
        }
    }
    Ok(())
}

/// The runs of `sorted` (places on the device, in device order, not overlapping) to read with one request
/// each: places less than [`SPAN_GAP`] apart, at most [`SPAN_MAX`] from the first byte to the last (a
/// longer place is a run of its own).
pub(crate) fn spans<T>(
    sorted: &[T],
    place: impl Fn(&T) -> (u64, u64),
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let (start, len) = place(&sorted[i]);
        let mut end = start + len;
        let mut j = i + 1;
        while let Some((at, len)) = sorted.get(j).map(&place) {
            if at < end || at - end > SPAN_GAP || at + len - start > SPAN_MAX {
                break;
            }
            end = at + len;
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}
