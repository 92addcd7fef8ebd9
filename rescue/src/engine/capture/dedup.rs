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
pub(super) type Key = u64;

/// Computes a block's key with a seed.
pub(super) type KeyFn = fn(u64, &[u8]) -> Key;

/// Where a block's bytes are stored: the step whose chunk holds them, and the offset in that chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub step: u32,
    pub at: u32,
}

/// A block in the table: where it is stored, and where it was read on the source (to compare a
/// candidate copy with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
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
pub(super) enum Fate {
    /// Kept in this step's chunk at this offset.
    Kept(u32),
    /// Already stored there.
    Found(Place),
    /// A candidate whose bytes differ from the block it matched, or could not be compared with it: kept
    /// in this step's chunk at this offset, after everything else.
    Refused(u32),
}

/// A whole block of a read (on the stream's 4 KiB grid), as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Block {
    /// Bytes kept before it since the block before it (partial blocks at the ends of the read's ranges).
    pub lead: usize,
    /// Where it was read on the source.
    pub device: u64,
}

impl<'a> Dedup<'a> {
    /// A table for a capture that reads the source with `read`. The table is at its full size from the
    /// start (the pages are only used as entries land in them), so it never holds two copies of itself
    /// while growing.
    pub fn new(read: &'a ReadSource<'a>) -> Dedup<'a> {
        Dedup::with_key(read, XxHash3_64::oneshot_with_seed)
    }

    pub(super) fn with_key(read: &'a ReadSource<'a>, key: KeyFn) -> Dedup<'a> {
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
    pub(super) fn key(&self, block: &[u8]) -> Option<Key> {
        Some((self.key)(self.seed, block)).filter(|k| *k != self.zero)
    }

    /// Each block's fate (`keys[i]` is the key of `blocks[i]`, in the order the blocks are kept in the
    /// step's chunk). A block that is part of a run of at least [`MIN_RUN`] blocks found in a row where
    /// they are stored is a candidate: it is found there if `confirm` (called without the table locked; it
    /// clears the candidates whose bytes differ) leaves it in such a run. The other blocks are kept in this
    /// step's chunk, after their lead and the blocks kept before them, and recorded there if they are new;
    /// candidates that are not found after all are kept after the last block's `trailing` bytes. Zero blocks
    /// (`None` keys) are never recorded or matched: they cost nothing to compress, and they are everywhere.
    /// New blocks are recorded in the same lock as the look-up, so that a step read at the same time finds
    /// them.
    pub(super) fn decide(
        &self,
        step: u32,
        blocks: &[Block],
        keys: &[Option<Key>],
        trailing: usize,
        confirm: impl FnOnce(&mut [Option<Seen>]),
    ) -> Vec<Fate> {
        let mut at = 0u32;
        let mut fates = Vec::with_capacity(keys.len());
        let mut found: Vec<Option<Seen>> = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let mut found: Vec<Option<Seen>> = keys
                .iter()
                .map(|k| k.and_then(|k| seen.get(&k).copied()))
                .collect();
            keep_runs(&mut found);
            for ((b, k), f) in blocks.iter().zip(keys).zip(&found) {
                at += b.lead as u32;
                fates.push(match f {
                    Some(s) => Fate::Found(s.place),
                    None => {
                        if let Some(k) = k {
                            if seen.len() >= MAX_BLOCKS {
                                seen.clear();
                            }
                            let place = Place { step, at };
                            seen.entry(*k).or_insert(Seen {
                                place,
                                device: b.device,
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
        // Candidates not found after all go after the rest.
        let mut at = at + trailing as u32;
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
    pub(super) fn confirm<'b>(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u32) -> Option<Key> {
        Some(u64::from(i) | 1 << 40)
    }

    /// `n` blocks read one after the other from `device`, after `head` partial bytes.
    fn blocks(head: usize, n: usize, device: u64) -> Vec<Block> {
        (0..n)
            .map(|i| Block {
                lead: if i == 0 { head } else { 0 },
                device: device + (i * BLOCK) as u64,
            })
            .collect()
    }

    /// A source nothing is read from: the tests of the run rule confirm every candidate.
    fn no_source(_: &mut [u8], _: u64) -> bool {
        unreachable!("the run rule's tests read nothing")
    }

    #[test]
    fn only_runs_of_blocks_stored_in_a_row_are_found() {
        let d = Dedup::new(&no_source);
        let decide = |step, head, keys: &[Option<Key>]| {
            d.decide(step, &blocks(head, keys.len(), 0), keys, 0, |_| {})
        };
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
        d.decide(1, &blocks(0, 12, 0), &keys, 0, |_| {
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
        let fates = d.decide(2, &blocks(0, keys.len(), 1 << 30), &keys, 0, |found| {
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

    #[test]
    fn candidates_the_source_cannot_read_again_are_kept() {
        let read = |_: &mut [u8], _: u64| false;
        let d = Dedup::new(&read);
        let keys: Vec<_> = (1..=8).map(k).collect();
        d.decide(1, &blocks(0, 8, 0), &keys, 0, |_| {});
        let data = vec![7u8; 8 * BLOCK];
        let mut scratch = AlignedBuf::with_capacity(0);
        let fates = d.decide(2, &blocks(0, keys.len(), 1 << 30), &keys, 0, |found| {
            d.confirm(found, |i| &data[i * BLOCK..(i + 1) * BLOCK], &mut scratch)
        });
        assert!(fates.iter().all(|f| matches!(f, Fate::Refused(_))));
    }

    #[test]
    fn the_table_starts_over_when_full() {
        let d = Dedup::new(&no_source);
        let keys: Vec<_> = (0..MAX_BLOCKS as u32 + 10).map(k).collect();
        for (step, part) in keys.chunks(2048).enumerate() {
            d.decide(step as u32, &blocks(0, part.len(), 0), part, 0, |_| {});
        }
        let seen = d.seen.lock().unwrap_or_else(|p| p.into_inner());
        assert!(seen.len() <= MAX_BLOCKS);
        assert!(
            seen.capacity() < 2 * MAX_BLOCKS,
            "the table never grew past its size"
        );
    }
}
