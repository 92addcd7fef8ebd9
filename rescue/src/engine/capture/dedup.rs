//! Block deduplication: every 4 KiB block of the data read (on a 4 KiB grid of the stream, where
//! filesystems put their blocks) is looked up by its blake3 hash; a block seen before is not compressed or
//! stored again but referenced where it already is (a Slice extent: bytes of an earlier step's chunk). Real
//! disks hold many copies of the same files (hard links copied as files, the same libraries and licences in
//! many packages, the same file in several partitions); identical whole chunks were already stored once,
//! but copies of a file rarely fall on the same chunk boundaries.
//!
//! The table of blocks seen is bounded ([`MAX_BLOCKS`] entries, about 26 MiB, covering 3.5 GiB of distinct
//! data); when it is full it starts over, so memory stays the same whatever the disk's size and later
//! copies are matched against the most recently seen data.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, OnceLock};

use super::worker::BufferPool;
use super::Op;
use crate::image::{ChunkCompressor, ImageError};
use crate::sys::AlignedBuf;

/// The deduplication unit: the block size of ext4, NTFS and most FAT volumes, and the page size.
pub(super) const BLOCK: usize = 4096;

/// Entries of the table before it starts over: 7/8 of 2^20, the most a table of 2^20 slots holds.
const MAX_BLOCKS: usize = 917_504;

/// The fewest blocks in a row, found in a row where they are stored, worth a slice: shorter runs (a block
/// of a file that is often the same, metadata) save little and cut the restore's writes into small ones.
const MIN_RUN: usize = 4;

/// A block's identity: the first 128 bits of its blake3 hash.
type Key = [u8; 16];

/// Where a block's bytes are stored: the step whose chunk holds them, and the offset in that chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    step: u32,
    at: u32,
}

/// The keys are hashes already: their first 8 bytes are as good a hash as any.
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
}

/// The blocks seen so far in this capture, shared by the compressors.
pub(super) struct Dedup {
    seen: Mutex<HashMap<Key, Place, BuildHasherDefault<KeyHasher>>>,
}

impl Default for Dedup {
    /// The table at its full size from the start (the pages are only used as entries land in them), so
    /// it never holds two copies of itself while growing.
    fn default() -> Dedup {
        Dedup {
            seen: Mutex::new(HashMap::with_capacity_and_hasher(
                MAX_BLOCKS,
                BuildHasherDefault::default(),
            )),
        }
    }
}

/// What one 4 KiB block of a read turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Kept in this step's chunk at this offset.
    Kept(u32),
    /// Already stored there.
    Found(Place),
}

impl Dedup {
    /// The image operations for the bytes in `data`, read at stream offset `offset` in step `step`, when some
    /// of its blocks were seen before: the chunk of the blocks not seen before (if any, moved together in
    /// `data` itself) and the slices that place every range. `Err(data)` when every block is new: the
    /// caller stores the bytes as one chunk, at the offsets recorded here.
    pub fn reduce(
        &self,
        step: u64,
        offset: u64,
        mut data: AlignedBuf,
        compressor: &mut ChunkCompressor,
        pool: &BufferPool,
    ) -> Result<Result<Vec<Op>, AlignedBuf>, ImageError> {
        // Places name steps in 32 bits (4 billion steps: 32 PB of 8 MiB reads); beyond, nothing is looked up.
        let Ok(step32) = u32::try_from(step) else {
            return Ok(Err(data));
        };
        // Bytes before the first whole block of the grid, then whole blocks, then what is left: the partial
        // blocks at either end are always kept.
        let head = ((BLOCK as u64 - offset % BLOCK as u64) % BLOCK as u64).min(data.len() as u64);
        let head = head as usize;
        let blocks = (data.len() - head) / BLOCK;
        let keys: Vec<Option<Key>> = (0..blocks)
            .map(|i| key(&data[head + i * BLOCK..head + (i + 1) * BLOCK]))
            .collect();
        let fates = self.decide(step32, head, &keys);
        if !fates.iter().any(|f| matches!(f, Fate::Found(_))) {
            return Ok(Err(data));
        }
        // The kept bytes moved together, in order: the head (in place), the new blocks, the tail.
        let (len, tail) = (data.len(), head + blocks * BLOCK);
        let mut n = head;
        for (i, f) in fates.iter().enumerate() {
            if let Fate::Kept(_) = f {
                data.copy_within(head + i * BLOCK..head + (i + 1) * BLOCK, n);
                n += BLOCK;
            }
        }
        data.copy_within(tail..len, n);
        n += len - tail;
        data.set_len(n);

        let mut ops = Vec::new();
        if n > 0 {
            let (chunk, spare) = compressor.compress_buf(data, pool.take(n))?;
            pool.give(spare);
            ops.push(Op::Chunk(chunk));
        } else {
            pool.give(data);
        }
        let own = |at| Place { step: step32, at };
        push_slice(&mut ops, offset, head as u64, own(0));
        for (i, f) in fates.iter().enumerate() {
            let place = match *f {
                Fate::Kept(at) => own(at),
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
        Ok(Ok(ops))
    }

    /// Each block's fate: found where it is stored when it is part of a run of at least [`MIN_RUN`] blocks
    /// stored in a row, else kept at the offset it gets in this step's chunk (after the `head` bytes and the
    /// blocks kept before it), and recorded there if it was new. Zero blocks are never recorded or matched:
    /// they cost nothing to compress, and they are everywhere.
    fn decide(&self, step: u32, head: usize, keys: &[Option<Key>]) -> Vec<Fate> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut found: Vec<Option<Place>> = keys
            .iter()
            .map(|k| k.and_then(|k| seen.get(&k).copied()))
            .collect();
        let mut i = 0;
        while i < found.len() {
            let Some(first) = found[i] else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < found.len()
                && found[j]
                    == Some(Place {
                        step: first.step,
                        at: first.at + ((j - i) * BLOCK) as u32,
                    })
            {
                j += 1;
            }
            if j - i < MIN_RUN {
                found[i..j].fill(None);
            }
            i = j;
        }
        let mut at = head as u32;
        let mut fates = Vec::with_capacity(keys.len());
        for (k, f) in keys.iter().zip(found) {
            fates.push(match f {
                Some(place) => Fate::Found(place),
                None => {
                    if let Some(k) = k {
                        if seen.len() >= MAX_BLOCKS {
                            seen.clear();
                        }
                        seen.entry(*k).or_insert(Place { step, at });
                    }
                    at += BLOCK as u32;
                    Fate::Kept(at - BLOCK as u32)
                }
            });
        }
        fates
    }
}

/// A block's key; `None` for a block of zeros (told by its key: checking the bytes first would cost a
/// pass over every block for the few that are zeros).
fn key(block: &[u8]) -> Option<Key> {
    static ZERO: OnceLock<Key> = OnceLock::new();
    let zero = ZERO.get_or_init(|| first_128_bits(&[0u8; BLOCK]));
    let k = first_128_bits(block);
    (k != *zero).then_some(k)
}

fn first_128_bits(block: &[u8]) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&blake3::hash(block).as_bytes()[..16]);
    k
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
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k[8] = 1;
        Some(k)
    }

    #[test]
    fn only_runs_of_blocks_stored_in_a_row_are_found() {
        let d = Dedup::default();
        // Step 1 keeps blocks 1..=10 (after 512 bytes of head).
        let keys: Vec<_> = (1..=10).map(k).collect();
        let f = d.decide(1, 512, &keys);
        assert!(f
            .iter()
            .enumerate()
            .all(|(i, f)| *f == Fate::Kept(512 + (i * BLOCK) as u32)));
        // Step 2: blocks 1..=4 in a row (found), 7 alone (too short: kept), 9 and 8 (out of order: kept),
        // a zero block, and a new one.
        let keys = [k(1), k(2), k(3), k(4), k(7), k(9), k(8), None, k(11)];
        let f = d.decide(2, 0, &keys);
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
        let f = d.decide(3, 0, &[k(11), k(7), k(8), k(9), k(10)]);
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
    fn the_table_starts_over_when_full() {
        let d = Dedup::default();
        let keys: Vec<_> = (0..MAX_BLOCKS as u32 + 10).map(k).collect();
        for (step, part) in keys.chunks(2048).enumerate() {
            d.decide(step as u32, 0, part);
        }
        let seen = d.seen.lock().unwrap_or_else(|p| p.into_inner());
        assert!(seen.len() <= MAX_BLOCKS);
        assert!(
            seen.capacity() < 2 * MAX_BLOCKS,
            "the table never grew past its size"
        );
    }
}
