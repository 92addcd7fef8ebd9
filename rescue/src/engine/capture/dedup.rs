//! Block deduplication: every 4 KiB block of the data read (on a 4 KiB grid of the stream, where
//! filesystems put their blocks) is looked up by a 64-bit key (XXH3 with a seed drawn for the capture); a
//! run of blocks seen before is not compressed or stored again but referenced where it already is (a
//! Slice extent: bytes of an earlier step's chunk). Real disks hold many copies of the same files (hard
//! links copied as files, the same libraries and licences in many packages, the same file in several
//! partitions); identical whole chunks were already stored once, but copies of a file rarely fall on the
//! same chunk boundaries.
//!
//! A key only proposes a match: before a run becomes a slice, the blocks it would point at are read again
//! from the source and compared with the new ones byte for byte, so two different blocks with the same key
//! cost one extra read, never a wrong byte in the image. (A cryptographic key would make the comparison
//! unnecessary but cost a fifth of the capture's CPU: keys are computed for every block, comparisons only
//! for the few that repeat.)
//!
//! The table of blocks seen is bounded ([`MAX_BLOCKS`] entries, about 26 MiB, covering 3.5 GiB of distinct
//! data); when it is full it starts over, so memory stays the same whatever the disk's size and later
//! copies are matched against the most recently seen data.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::Mutex;

use twox_hash::XxHash3_64;

use super::Op;
use crate::sys::AlignedBuf;

/// The deduplication unit: the block size of ext4, NTFS and most FAT volumes, and the page size.
pub(super) const BLOCK: usize = 4096;

/// Entries of the table before it starts over: 7/8 of 2^20, the most a table of 2^20 slots holds.
const MAX_BLOCKS: usize = 917_504;

/// The fewest blocks in a row, found in a row where they are stored, worth a slice: shorter runs (a block
/// of a file that is often the same, metadata) save little and cut the restore's writes into small ones.
const MIN_RUN: usize = 4;

/// The most blocks compared with one read of the source.
const CONFIRM_BLOCKS: usize = 256;

/// A block's key: its XXH3 hash.
type Key = u64;

/// Computes a block's key with a seed.
type KeyFn = fn(u64, &[u8]) -> Key;

/// Where a block's bytes are stored: the step whose chunk holds them, and the offset in that chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    step: u32,
    at: u32,
}

/// A block in the table: where it is stored, and where it was read on the source (to compare a
/// candidate copy with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    place: Place,
    device: u64,
}

/// The keys are hashes already: they are their own hash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*b) << (8 * i);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Reads `buf.len()` bytes of the source at a device offset; false when it could not.
pub(super) type ReadSource<'a> = dyn Fn(&mut [u8], u64) -> bool + Sync + 'a;

/// The blocks seen so far in this capture, shared by the compressors.
pub(super) struct Dedup<'a> {
    seen: Mutex<HashMap<Key, Seen, BuildHasherDefault<KeyHasher>>>,
    /// The key function (XXH3 with the capture's seed; another one in tests) and the seed.
    key: KeyFn,
    seed: u64,
    /// The key of a block of zeros.
    zero: Key,
    read: &'a ReadSource<'a>,
}

/// What one 4 KiB block of a read turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Kept in this step's chunk at this offset.
    Kept(u32),
    /// Already stored there.
    Found(Place),
    /// A candidate whose bytes differ from the block it matched, or could not be compared with it: kept
    /// in this step's chunk at this offset, after the tail.
    Refused(u32),
}

/// What [`Dedup::decide`] needs to know of a read besides its keys.
#[derive(Debug, Clone, Copy)]
struct Shape {
    step: u32,
    /// Bytes before the first whole block, and after the last.
    head: usize,
    tail: usize,
    /// Device offset of the first whole block.
    device: u64,
}

impl<'a> Dedup<'a> {
    /// A table for a capture that reads the source with `read`. The table is at its full size from the
    /// start (the pages are only used as entries land in them), so it never holds two copies of itself
    /// while growing.
    pub fn new(read: &'a ReadSource<'a>) -> Dedup<'a> {
        Dedup::with_key(read, XxHash3_64::oneshot_with_seed)
    }

    fn with_key(read: &'a ReadSource<'a>, key: KeyFn) -> Dedup<'a> {
        // A seed of its own for each capture, so that no fixed set of blocks can be made to share keys.
        let seed = RandomState::new().hash_one(0u64);
        Dedup {
            seen: Mutex::new(HashMap::with_capacity_and_hasher(
                MAX_BLOCKS,
                BuildHasherDefault::default(),
            )),
            zero: key(seed, &[0u8; BLOCK]),
            key,
            seed,
            read,
        }
    }

    /// A block's key; `None` for a block of zeros (told by its key: checking the bytes first would cost a
    /// pass over every block for the few that are zeros; a block that merely shares the key is kept).
    fn key(&self, block: &[u8]) -> Option<Key> {
        Some((self.key)(self.seed, block)).filter(|k| *k != self.zero)
    }

    /// Arranges a clean read for storing: when some of the blocks in `data`, read at stream offset
    /// `offset` (device offset `device`) in step `step`, are stored already, moves the others together in
    /// `data` itself (the bytes of the step's chunk, which may be none) and returns the slices that place
    /// every range of the read. `None` when every block is new: `data` is the chunk as it is, at the
    /// offsets recorded here. `scratch` holds the source's bytes while candidates are compared.
    pub fn arrange(
        &self,
        step: u64,
        offset: u64,
        device: u64,
        data: &mut AlignedBuf,
        scratch: &mut AlignedBuf,
    ) -> Option<Vec<Op>> {
        // Places name steps in 32 bits (4 billion steps: 32 PB of 8 MiB reads); beyond, nothing is looked up.
        let step32 = u32::try_from(step).ok()?;
        // Bytes before the first whole block of the grid, then whole blocks, then what is left: the partial
        // blocks at either end are always kept.
        let head = ((BLOCK as u64 - offset % BLOCK as u64) % BLOCK as u64).min(data.len() as u64);
        let head = head as usize;
        let blocks = (data.len() - head) / BLOCK;
        let block = |i: usize| head + i * BLOCK..head + (i + 1) * BLOCK;
        let (len, tail) = (data.len(), head + blocks * BLOCK);
        let keys: Vec<Option<Key>> = (0..blocks).map(|i| self.key(&data[block(i)])).collect();
        let shape = Shape {
            step: step32,
            head,
            tail: len - tail,
            device: device + head as u64,
        };
        let fates = self.decide(shape, &keys, |found| {
            self.confirm(found, |i| &data[block(i)], scratch)
        });
        if fates.iter().all(|f| matches!(f, Fate::Kept(_))) {
            return None;
        }
        // The chunk: the head (in place), the new blocks and the tail moved together in order, then the
        // candidates that were not found after all (copied out first: the moves may overwrite them).
        let refused: Vec<u8> = fates
            .iter()
            .enumerate()
            .filter(|(_, f)| matches!(f, Fate::Refused(_)))
            .flat_map(|(i, _)| data[block(i)].to_vec())
            .collect();
        let mut n = head;
        for (i, f) in fates.iter().enumerate() {
            if let Fate::Kept(_) = f {
                data.copy_within(block(i), n);
                n += BLOCK;
            }
        }
        data.copy_within(tail..len, n);
        n += len - tail;
        data[n..n + refused.len()].copy_from_slice(&refused);
        data.set_len(n + refused.len());

        let mut ops = Vec::new();
        let own = |at| Place { step: step32, at };
        push_slice(&mut ops, offset, head as u64, own(0));
        for (i, f) in fates.iter().enumerate() {
            let place = match *f {
                Fate::Kept(at) | Fate::Refused(at) => own(at),
                Fate::Found(place) => place,
            };
            push_slice(
                &mut ops,
                offset + (head + i * BLOCK) as u64,
                BLOCK as u64,
                place,
            );
        }
        let tail_len = len - tail;
        push_slice(
            &mut ops,
            offset + tail as u64,
            tail_len as u64,
            own((n - tail_len) as u32),
        );
        Some(ops)
    }

    /// Each block's fate. A block that is part of a run of at least [`MIN_RUN`] blocks found in a row where
    /// they are stored is a candidate: it is found there if `confirm` (called without the table locked;
    /// it clears the candidates whose bytes differ) leaves it in such a run. The other blocks are kept in
    /// this step's chunk, after the head and the blocks kept before them, and recorded there (with the
    /// device offset they were read at) if they are new; candidates that are not found after all are kept
    /// after the tail. Zero blocks (`None` keys) are never recorded or matched: they cost nothing to
    /// compress, and they are everywhere. New blocks are recorded in the same lock as the look-up, so that
    /// a step read at the same time finds them.
    fn decide(
        &self,
        shape: Shape,
        keys: &[Option<Key>],
        confirm: impl FnOnce(&mut [Option<Seen>]),
    ) -> Vec<Fate> {
        let mut at = shape.head as u32;
        let mut fates = Vec::with_capacity(keys.len());
        let mut found: Vec<Option<Seen>> = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let mut found: Vec<Option<Seen>> = keys
                .iter()
                .map(|k| k.and_then(|k| seen.get(&k).copied()))
                .collect();
            keep_runs(&mut found);
            for (i, (k, f)) in keys.iter().zip(&found).enumerate() {
                fates.push(match f {
                    Some(s) => Fate::Found(s.place),
                    None => {
                        if let Some(k) = k {
                            if seen.len() >= MAX_BLOCKS {
                                seen.clear();
                            }
                            seen.entry(*k).or_insert(Seen {
                                place: Place {
                                    step: shape.step,
                                    at,
                                },
                                device: shape.device + (i * BLOCK) as u64,
                            });
                        }
                        at += BLOCK as u32;
                        Fate::Kept(at - BLOCK as u32)
                    }
                });
            }
            found
        };
        if found.iter().any(Option::is_some) {
            confirm(&mut found);
            keep_runs(&mut found);
        }
        // Candidates not found after all go after the tail.
        let mut at = at + shape.tail as u32;
        for (f, s) in fates.iter_mut().zip(found) {
            if matches!(f, Fate::Found(_)) && s.is_none() {
                *f = Fate::Refused(at);
                at += BLOCK as u32;
            }
        }
        fates
    }

    /// Compares each candidate block (`block(i)` for `found[i]`) with the source's bytes where the block it
    /// matched was read, and clears the candidates that differ or could not be read. Candidates read one
    /// after the other on the source are read together.
    fn confirm<'b>(
        &self,
        found: &mut [Option<Seen>],
        block: impl Fn(usize) -> &'b [u8],
        scratch: &mut AlignedBuf,
    ) {
        let next_on_source = |first: &Seen, k: usize, s: &Seen| {
            k < CONFIRM_BLOCKS && s.device == first.device + (k * BLOCK) as u64
        };
        for run in runs(found, next_on_source) {
            let (len, device) = (run.len() * BLOCK, found[run.start].map_or(0, |s| s.device));
            if scratch.capacity() < len {
                *scratch = AlignedBuf::with_capacity(CONFIRM_BLOCKS * BLOCK);
            }
            scratch.set_len(len);
            let read = (self.read)(scratch, device);
            for (n, i) in run.enumerate() {
                if !read || scratch[n * BLOCK..(n + 1) * BLOCK] != *block(i) {
                    found[i] = None;
                }
            }
        }
    }
}

/// Clears the candidates that are not part of a run of at least [`MIN_RUN`] blocks stored in a row.
fn keep_runs(found: &mut [Option<Seen>]) {
    let next_in_chunk = |first: &Seen, k: usize, s: &Seen| {
        s.place.step == first.place.step && s.place.at == first.place.at + (k * BLOCK) as u32
    };
    for run in runs(found, next_in_chunk) {
        if run.len() < MIN_RUN {
            found[run].fill(None);
        }
    }
}

/// The runs of candidates in `found`: ranges of `Some` where each one `k` places after the run's first
/// `follows` it (`follows(first, k, candidate)`).
fn runs(
    found: &[Option<Seen>],
    follows: impl Fn(&Seen, usize, &Seen) -> bool,
) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < found.len() {
        let Some(first) = &found[i] else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while found
            .get(j)
            .and_then(Option::as_ref)
            .is_some_and(|s| follows(first, j - i, s))
        {
            j += 1;
        }
        runs.push(i..j);
        i = j;
    }
    runs
}

/// Appends the slice placing `len` bytes at stream offset `offset`, merged into the previous one when it
/// continues it (same chunk, next bytes).
fn push_slice(ops: &mut Vec<Op>, offset: u64, len: u64, place: Place) {
    if len == 0 {
        return;
    }
    if let Some(Op::Slice {
        offset: o,
        len: l,
        step,
        at,
    }) = ops.last_mut()
    {
        if *step == u64::from(place.step)
            && *o + *l == offset
            && u64::from(*at) + *l == u64::from(place.at)
        {
            *l += len;
            return;
        }
    }
    ops.push(Op::Slice {
        offset,
        len,
        step: u64::from(place.step),
        at: place.at,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u32) -> Option<Key> {
        Some(u64::from(i) | 1 << 40)
    }

    fn shape(step: u32, head: usize, device: u64) -> Shape {
        Shape {
            step,
            head,
            tail: 0,
            device,
        }
    }

    /// A source nothing is read from: the tests of the run rule confirm every candidate.
    fn no_source(_: &mut [u8], _: u64) -> bool {
        unreachable!("the run rule's tests read nothing")
    }

    #[test]
    fn only_runs_of_blocks_stored_in_a_row_are_found() {
        let d = Dedup::new(&no_source);
        let decide =
            |step, head, keys: &[Option<Key>]| d.decide(shape(step, head, 0), keys, |_| {});
        // Step 1 keeps blocks 1..=10 (after 512 bytes of head).
        let keys: Vec<_> = (1..=10).map(k).collect();
        let f = decide(1, 512, &keys);
        assert!(f
            .iter()
            .enumerate()
            .all(|(i, f)| *f == Fate::Kept(512 + (i * BLOCK) as u32)));
        // Step 2: blocks 1..=4 in a row (found), 7 alone (too short: kept), 9 and 8 (out of order: kept),
        // a zero block, and a new one.
        let keys = [k(1), k(2), k(3), k(4), k(7), k(9), k(8), None, k(11)];
        let f = decide(2, 0, &keys);
        let at = |i: u32| 512 + i * BLOCK as u32;
        let found = |i| Fate::Found(Place { step: 1, at: at(i) });
        let kept = |n: u32| Fate::Kept(n * BLOCK as u32);
        assert_eq!(
            f,
            [
                found(0),
                found(1),
                found(2),
                found(3),
                kept(0),
                kept(1),
                kept(2),
                kept(3),
                kept(4)
            ]
        );
        // The new block is recorded at its place in step 2's chunk; the kept copies keep pointing at step 1.
        let f = decide(3, 0, &[k(11), k(7), k(8), k(9), k(10)]);
        assert_eq!(f[0], kept(0), "a single block is never worth a slice");
        assert_eq!(
            f[1..],
            [
                Fate::Found(Place { step: 1, at: at(6) }),
                Fate::Found(Place { step: 1, at: at(7) }),
                Fate::Found(Place { step: 1, at: at(8) }),
                Fate::Found(Place { step: 1, at: at(9) }),
            ]
        );
    }

    #[test]
    fn blocks_with_the_same_key_but_other_bytes_are_kept() {
        // A source of 12 distinct blocks; the key only looks at a block's first 8 bytes, so blocks that
        // share them collide.
        let block = |tag: u8, rest: u8| {
            let mut b = vec![rest; BLOCK];
            b[..8].fill(tag);
            b
        };
        let source: Vec<u8> = (1..=12).flat_map(|i| block(i, i)).collect();
        let reads = Mutex::new(Vec::new());
        let read = |buf: &mut [u8], at: u64| {
            reads.lock().unwrap().push((at, buf.len()));
            let at = at as usize;
            match source.get(at..at + buf.len()) {
                Some(bytes) => {
                    buf.copy_from_slice(bytes);
                    true
                }
                None => false,
            }
        };
        let d = Dedup::with_key(&read, |_, b| u64::from_le_bytes(b[..8].try_into().unwrap()));
        let keys: Vec<_> = source.chunks(BLOCK).map(|b| d.key(b)).collect();
        d.decide(shape(1, 0, 0), &keys, |_| {
            unreachable!("nothing to confirm")
        });
        // A read holding true copies of blocks 1..=5, then blocks keyed like 7..=12 with other bytes, then
        // a copy of blocks 9..=12 again.
        let data: Vec<u8> = (1..=5)
            .flat_map(|i| block(i, i))
            .chain((7..=12).flat_map(|i| block(i, 99)))
            .chain((9..=12).flat_map(|i| block(i, i)))
            .collect();
        let keys: Vec<_> = data.chunks(BLOCK).map(|b| d.key(b)).collect();
        let mut scratch = AlignedBuf::with_capacity(0);
        let fates = d.decide(shape(2, 0, 1 << 30), &keys, |found| {
            d.confirm(found, |i| &data[i * BLOCK..(i + 1) * BLOCK], &mut scratch)
        });
        let found = |i: u32| {
            Fate::Found(Place {
                step: 1,
                at: i * BLOCK as u32,
            })
        };
        let refused = |n: u32| Fate::Refused(n * BLOCK as u32);
        assert_eq!(
            fates,
            [
                found(0),
                found(1),
                found(2),
                found(3),
                found(4),
                refused(0),
                refused(1),
                refused(2),
                refused(3),
                refused(4),
                refused(5),
                found(8),
                found(9),
                found(10),
                found(11),
            ]
        );
        // One read per run of candidates that lie one after the other on the source.
        assert_eq!(
            *reads.lock().unwrap(),
            [
                (0, 5 * BLOCK),
                (6 * BLOCK as u64, 6 * BLOCK),
                (8 * BLOCK as u64, 4 * BLOCK)
            ]
        );
    }

    /// The bytes `ops` place from stream offset `offset` on, from the chunks' bytes by step.
    fn rebuild(ops: &[Op], offset: u64, chunks: &HashMap<u64, Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            if let Op::Slice {
                offset: o,
                len,
                step,
                at,
            } = *op
            {
                assert_eq!(o, offset + out.len() as u64, "slices follow each other");
                out.extend_from_slice(&chunks[&step][at as usize..at as usize + len as usize]);
            }
        }
        out
    }

    #[test]
    fn an_arranged_read_puts_every_byte_back_whatever_was_found_or_refused() {
        // Blocks share a key when they share their first 8 bytes.
        let block = |tag: u8, rest: u8| {
            let mut b = vec![rest; BLOCK];
            b[..8].fill(tag);
            b
        };
        // Step 1 reads 300 bytes of head, blocks 1..=8 and 50 bytes of tail.
        let first: Vec<u8> = std::iter::repeat_n(5u8, 300)
            .chain((1..=8).flat_map(|i| block(i, i)))
            .chain(std::iter::repeat_n(6u8, 50))
            .collect();
        let source = first.clone();
        let read = |buf: &mut [u8], at: u64| {
            let at = at as usize - 1000;
            buf.copy_from_slice(&source[at..at + buf.len()]);
            true
        };
        let d = Dedup::with_key(&read, |_, b| u64::from_le_bytes(b[..8].try_into().unwrap()));
        let mut scratch = AlignedBuf::with_capacity(0);
        let mut data = AlignedBuf::copy_of(&first);
        // At stream offset 4096 - 300 the 4 KiB grid starts 300 bytes into the read (device offset 1000).
        assert!(d
            .arrange(1, 4096 - 300, 1000, &mut data, &mut scratch)
            .is_none());
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
        let ops = d
            .arrange(2, (1 << 20) - 300, 1 << 30, &mut data, &mut scratch)
            .expect("blocks 1..=4 are found");
        // Stored: head, the two new blocks, the tail, then the four refused blocks.
        assert_eq!(data.len(), 300 + 2 * BLOCK + 10 + 4 * BLOCK);
        let chunks = HashMap::from([(1, first), (2, data.to_vec())]);
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
    fn candidates_the_source_cannot_read_again_are_kept() {
        let read = |_: &mut [u8], _: u64| false;
        let d = Dedup::new(&read);
        let keys: Vec<_> = (1..=8).map(k).collect();
        d.decide(shape(1, 0, 0), &keys, |_| {});
        let data = vec![7u8; 8 * BLOCK];
        let mut scratch = AlignedBuf::with_capacity(0);
        let fates = d.decide(shape(2, 0, 1 << 30), &keys, |found| {
            d.confirm(found, |i| &data[i * BLOCK..(i + 1) * BLOCK], &mut scratch)
        });
        assert!(fates.iter().all(|f| matches!(f, Fate::Refused(_))));
    }

    #[test]
    fn the_table_starts_over_when_full() {
        let d = Dedup::new(&no_source);
        let keys: Vec<_> = (0..MAX_BLOCKS as u32 + 10).map(k).collect();
        for (step, part) in keys.chunks(2048).enumerate() {
            d.decide(shape(step as u32, 0, 0), part, |_| {});
        }
        let seen = d.seen.lock().unwrap_or_else(|p| p.into_inner());
        assert!(seen.len() <= MAX_BLOCKS);
        assert!(
            seen.capacity() < 2 * MAX_BLOCKS,
            "the table never grew past its size"
        );
    }
}
