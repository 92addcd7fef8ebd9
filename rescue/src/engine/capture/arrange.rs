//! Arranging a clean read for storing: the bytes of its step's chunk, and the extents that place every
//! range of the read. A read covers one used range, or several close together in one chunk-aligned window
//! (the free space between them is read too, one request instead of several, but not stored). Blocks
//! already stored elsewhere ([`Dedup`]) and ranges of zeros are left out of the chunk; what is kept is
//! moved together in the read buffer itself.

use super::dedup::{Block, Dedup, Fate, BLOCK};
use super::Op;
use crate::image::ExtentKind;
use crate::sys::AlignedBuf;

/// A used range of a read: `len` bytes at stream offset `offset`, read at device offset `device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Part {
    pub offset: u64,
    pub device: u64,
    pub len: usize,
    /// All zeros: not in the buffer, recorded as a Zero extent.
    pub zero: bool,
}

impl Part {
    /// Bytes before the part's first whole block of the grid, and its whole blocks.
    fn grid(&self) -> (usize, usize) {
        let head = ((BLOCK as u64 - self.offset % BLOCK as u64) % BLOCK as u64) as usize;
        let head = head.min(self.len);
        (head, (self.len - head) / BLOCK)
    }
}

/// `data` holds the parts that are not zeros, one after the other. `None` when it is to be stored as it
/// is, a Data extent: one part, none of whose blocks is stored already. Otherwise moves the bytes to keep
/// together in `data` (the step's chunk, maybe empty) and returns the extents of the read in stream
/// order: slices (of this step's chunk, or of the chunk that holds a block already), zeros, and the
/// unused gaps between the parts. `scratch` holds the source's bytes while candidates are compared.
pub(super) fn arrange(
    dedup: &Dedup,
    step: u64,
    parts: &[Part],
    data: &mut AlignedBuf,
    scratch: &mut AlignedBuf,
) -> Option<Vec<Op>> {
    // The whole blocks of each part, where they are in `data`, and the partial bytes before each.
    let (mut blocks, mut pos) = (Vec::new(), Vec::new());
    let (mut at, mut lead) = (0usize, 0usize);
    for p in parts.iter().filter(|p| !p.zero) {
        let (head, n) = p.grid();
        lead += head;
        for k in 0..n {
            let o = head + k * BLOCK;
            blocks.push(Block {
                lead,
                device: p.device + o as u64,
            });
            pos.push(at + o);
            lead = 0;
        }
        lead += p.len - head - n * BLOCK;
        at += p.len;
    }
    let block = |i: usize| pos[i]..pos[i] + BLOCK;
    // Places name steps in 32 bits (4 billion steps: 32 PB of 8 MiB reads); beyond, nothing is looked up.
    let fates: Vec<Fate> = match u32::try_from(step) {
        Ok(step32) => {
            let keys: Vec<_> = (0..blocks.len())
                .map(|i| dedup.key(&data[block(i)]))
                .collect();
            dedup.decide(step32, &blocks, &keys, lead, |found| {
                dedup.confirm(found, |i| &data[block(i)], scratch)
            })
        }
        Err(_) => pos.iter().map(|&p| Fate::Kept(p as u32)).collect(),
    };
    if parts.len() == 1 && fates.iter().all(|f| matches!(f, Fate::Kept(_))) {
        return None;
    }
    compact(data, &pos, &fates);
    Some(extents(step, parts, &fates))
}

/// Moves the kept bytes of `data` together in order (every byte but the blocks at `pos` that are not
/// kept), then the refused candidates (copied out first: the moves may overwrite them).
fn compact(data: &mut AlignedBuf, pos: &[usize], fates: &[Fate]) {
    let refused: Vec<u8> = pos
        .iter()
        .zip(fates)
        .filter(|(_, f)| matches!(f, Fate::Refused(_)))
        .flat_map(|(&p, _)| data[p..p + BLOCK].to_vec())
        .collect();
    let (len, mut n, mut from) = (data.len(), 0, 0);
    for (&p, f) in pos.iter().zip(fates) {
        if !matches!(f, Fate::Kept(_)) {
            data.copy_within(from..p, n);
            n += p - from;
            from = p + BLOCK;
        }
    }
    data.copy_within(from..len, n);
    n += len - from;
    data[n..n + refused.len()].copy_from_slice(&refused);
    data.set_len(n + refused.len());
}

/// The extents of the read, in stream order, for the chunk [`compact`] made.
fn extents(step: u64, parts: &[Part], fates: &[Fate]) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut fates = fates.iter();
    // Where the previous part ended, and the chunk offset of the next kept byte.
    let (mut end, mut kept) = (parts.first().map_or(0, |p| p.offset), 0u32);
    for p in parts {
        if p.offset > end {
            ops.push(Op::Extent {
                offset: end,
                len: p.offset - end,
                kind: ExtentKind::Unused,
            });
        }
        end = p.offset + p.len as u64;
        if p.zero {
            ops.push(Op::Extent {
                offset: p.offset,
                len: p.len as u64,
                kind: ExtentKind::Zero,
            });
            continue;
        }
        let (head, n) = p.grid();
        push_slice(&mut ops, p.offset, head as u64, step, kept);
        kept += head as u32;
        for k in 0..n {
            let offset = p.offset + (head + k * BLOCK) as u64;
            let (from, at) = match fates.next() {
                Some(Fate::Kept(at)) => {
                    kept = at + BLOCK as u32;
                    (step, *at)
                }
                Some(Fate::Refused(at)) => (step, *at),
                Some(Fate::Found(place)) => (u64::from(place.step), place.at),
                None => unreachable!("a fate for every block"),
            };
            push_slice(&mut ops, offset, BLOCK as u64, from, at);
        }
        let tail = p.len - head - n * BLOCK;
        push_slice(&mut ops, end - tail as u64, tail as u64, step, kept);
        kept += tail as u32;
    }
    ops
}

/// Appends the slice placing `len` bytes at stream offset `offset` from byte `at` of step `step`'s chunk,
/// merged into the previous one when it continues it (same chunk, next bytes).
fn push_slice(ops: &mut Vec<Op>, offset: u64, len: u64, step: u64, at: u32) {
    if len == 0 {
        return;
    }
    if let Some(Op::Slice {
        offset: o,
        len: l,
        step: s,
        at: a,
    }) = ops.last_mut()
    {
        if *s == step && *o + *l == offset && u64::from(*a) + *l == u64::from(at) {
            *l += len;
            return;
        }
    }
    ops.push(Op::Slice {
        offset,
        len,
        step,
        at,
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A block whose key (its first 8 bytes, in these tests) is `tag`'s and whose other bytes are `rest`.
    fn block(tag: u8, rest: u8) -> Vec<u8> {
        let mut b = vec![rest; BLOCK];
        b[..8].fill(tag);
        b
    }

    fn tagged(_: u64, b: &[u8]) -> u64 {
        u64::from_le_bytes(b[..8].try_into().unwrap())
    }

    /// The stream bytes `ops` describe from `offset` on, from the chunks' bytes by step: unused bytes as
    /// 0xEE.
    fn rebuild(ops: &[Op], offset: u64, chunks: &HashMap<u64, Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            let (o, bytes) = match *op {
                Op::Slice {
                    offset,
                    len,
                    step,
                    at,
                } => (
                    offset,
                    chunks[&step][at as usize..(at as u64 + len) as usize].to_vec(),
                ),
                Op::Extent { offset, len, kind } => {
                    let fill = if kind == ExtentKind::Unused { 0xEE } else { 0 };
                    (offset, vec![fill; len as usize])
                }
                _ => panic!("only slices and extents are expected"),
            };
            assert_eq!(o, offset + out.len() as u64, "extents follow each other");
            out.extend(bytes);
        }
        out
    }

    #[test]
    fn a_read_puts_every_byte_back_whatever_was_found_or_refused() {
        // Step 1 reads 300 bytes of head, blocks 1..=8 and 50 bytes of tail.
        let first: Vec<u8> = std::iter::repeat_n(5u8, 300)
            .chain((1..=8).flat_map(|i| block(i, i)))
            .chain(std::iter::repeat_n(6u8, 50))
            .collect();
        let read = |buf: &mut [u8], at: u64| {
            let at = at as usize - 1000;
            buf.copy_from_slice(&first[at..at + buf.len()]);
            true
        };
        let d = Dedup::with_key(&read, tagged);
        let mut scratch = AlignedBuf::with_capacity(0);
        let mut data = AlignedBuf::copy_of(&first);
        // At stream offset 4096 - 300 the 4 KiB grid starts 300 bytes into the read (device offset 1000).
        let part = |offset, device, len| Part {
            offset,
            device,
            len,
            zero: false,
        };
        let one = [part(4096 - 300, 1000, first.len())];
        assert!(arrange(&d, 1, &one, &mut data, &mut scratch).is_none());
        assert_eq!(*data, *first, "a read of new blocks is stored as it is");
        // Step 2: 300 bytes of head, a new block, copies of blocks 1..=4, blocks keyed like 5..=8 with other
        // bytes, a new block, 10 bytes of tail.
        let second: Vec<u8> = std::iter::repeat_n(7u8, 300)
            .chain(block(20, 20))
            .chain((1..=4).flat_map(|i| block(i, i)))
            .chain((5..=8).flat_map(|i| block(i, 99)))
            .chain(block(21, 21))
            .chain(std::iter::repeat_n(8u8, 10))
            .collect();
        let mut data = AlignedBuf::copy_of(&second);
        let two = [part((1 << 20) - 300, 1 << 30, second.len())];
        let ops = arrange(&d, 2, &two, &mut data, &mut scratch).expect("blocks 1..=4 are found");
        // Stored: head, the two new blocks, the tail, then the four refused blocks.
        assert_eq!(data.len(), 300 + 2 * BLOCK + 10 + 4 * BLOCK);
        let chunks = HashMap::from([(1, first.clone()), (2, data.to_vec())]);
        assert_eq!(rebuild(&ops, (1 << 20) - 300, &chunks), second);
        let found: Vec<_> = ops
            .iter()
            .filter_map(|op| match *op {
                Op::Slice {
                    step: 1, len, at, ..
                } => Some((at, len)),
                _ => None,
            })
            .collect();
        assert_eq!(found, [(300, 4 * BLOCK as u64)]);
    }

    #[test]
    fn ranges_read_as_one_keep_their_bytes_and_not_the_gaps() {
        // Step 1 stores blocks 1..=4 (at stream offset 0, device offset 0).
        let first: Vec<u8> = (1..=4).flat_map(|i| block(i, i)).collect();
        let read = |buf: &mut [u8], at: u64| {
            buf.copy_from_slice(&first[at as usize..at as usize + buf.len()]);
            true
        };
        let d = Dedup::with_key(&read, tagged);
        let mut scratch = AlignedBuf::with_capacity(0);
        let whole = Part {
            offset: 0,
            device: 0,
            len: first.len(),
            zero: false,
        };
        assert!(arrange(
            &d,
            1,
            &[whole],
            &mut AlignedBuf::copy_of(&first),
            &mut scratch
        )
        .is_none());
        // Step 2 reads from stream offset 1 MiB: 1000 bytes off the grid, a gap, a range of zeros, a gap,
        // a copy of blocks 1..=4 between two partial blocks, and a last range that ends off the grid.
        let base = 1u64 << 20;
        let a: Vec<u8> = vec![9; 1000];
        let z: Vec<u8> = vec![0; 3 * BLOCK];
        let c: Vec<u8> = std::iter::repeat_n(3u8, 700)
            .chain((1..=4).flat_map(|i| block(i, i)))
            .chain(std::iter::repeat_n(4u8, 20))
            .collect();
        let e: Vec<u8> = block(30, 30).into_iter().chain(vec![6; 5]).collect();
        let layout = [
            (base + 100, &a, false),
            (base + 3 * BLOCK as u64, &z, true),
            (base + 8 * BLOCK as u64 - 700, &c, false),
            (base + 20 * BLOCK as u64, &e, false),
        ];
        let parts: Vec<Part> = layout
            .iter()
            .map(|&(offset, bytes, zero)| Part {
                offset,
                device: (1 << 30) + offset,
                len: bytes.len(),
                zero,
            })
            .collect();
        let kept: Vec<u8> = layout
            .iter()
            .filter(|l| !l.2)
            .flat_map(|l| l.1.iter().copied())
            .collect();
        let mut data = AlignedBuf::copy_of(&kept);
        let ops = arrange(&d, 2, &parts, &mut data, &mut scratch).expect("several ranges");
        assert_eq!(
            data.len(),
            kept.len() - 4 * BLOCK,
            "the copy of blocks 1..=4 is not stored again"
        );
        let chunks = HashMap::from([(1, first.clone()), (2, data.to_vec())]);
        let mut expected = vec![0xEE; (e.len() as u64 + 20 * BLOCK as u64 - 100) as usize];
        for (offset, bytes, _) in layout {
            let at = (offset - base - 100) as usize;
            expected[at..at + bytes.len()].copy_from_slice(bytes);
        }
        assert_eq!(rebuild(&ops, base + 100, &chunks), expected);
        let zeros = ops.iter().filter(|op| {
            matches!(op, Op::Extent { kind: ExtentKind::Zero, len, .. } if *len == 3 * BLOCK as u64)
        });
        assert_eq!(zeros.count(), 1, "the range of zeros is a Zero extent");
    }
}
