//! Sorted byte-range sets: building them from bitmaps with bounded memory, intersecting them, and
//! walking them in aligned chunks.

use std::ops::Range;

/// Ranges kept before a set starts widening gaps: 16 MiB of `Range<u64>`. Even a badly fragmented
/// multi-TB filesystem fits; past it, extra free space is captured instead of using more memory.
const DEFAULT_MAX_RANGES: usize = 1 << 20;

/// The first gap width tried when a set must shrink; doubled until the set fits.
const FIRST_WIDENED_GAP: u64 = 64 * 1024;

/// A growing set of byte ranges. Appending in ascending order (how bitmaps are read) merges as it
/// goes; out-of-order pushes (fixed metadata locations) are sorted in when the set is normalised.
#[derive(Debug, Clone)]
pub struct RangeSet {
    ranges: Vec<Range<u64>>,
    sorted: bool,
    max_ranges: usize,
    /// Gaps up to this many bytes are merged away; grows only when memory would otherwise grow.
    min_gap: u64,
}

impl Default for RangeSet {
    fn default() -> Self {
        RangeSet::with_limit(DEFAULT_MAX_RANGES)
    }
}

impl RangeSet {
    pub fn new() -> Self {
        RangeSet::default()
    }

    /// A set that holds at most about `max_ranges` ranges (at least 2).
    pub fn with_limit(max_ranges: usize) -> Self {
        RangeSet {
            ranges: Vec::new(),
            sorted: true,
            max_ranges: max_ranges.max(2),
            min_gap: 0,
        }
    }

    /// Adds `r`; empty ranges are ignored.
    pub fn push(&mut self, r: Range<u64>) {
        if r.start >= r.end {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            if self.sorted && r.start >= last.start {
                if r.start <= last.end.saturating_add(self.min_gap) {
                    last.end = last.end.max(r.end);
                    return;
                }
            } else {
                self.sorted = false;
            }
        }
        self.ranges.push(r);
        if self.ranges.len() > self.max_ranges {
            self.shrink();
        }
    }

    /// Adds one range of `unit` bytes per set bit of `bits` (least significant bit first, as in
    /// ext, exFAT and NTFS bitmaps), bit `i` covering `base + i·unit`. Only the first `nbits` bits
    /// count. Returns how many bits were set.
    pub fn push_bits(&mut self, bits: &[u8], nbits: u64, base: u64, unit: u64) -> u64 {
        for_each_run(bits, nbits, |first, count| {
            let start = base.saturating_add(first.saturating_mul(unit));
            self.push(start..start.saturating_add(count.saturating_mul(unit)));
        })
    }

    fn normalize(&mut self) {
        if !self.sorted {
            self.ranges.sort_unstable_by_key(|r| r.start);
            self.sorted = true;
        }
        let gap = self.min_gap;
        let mut out: Vec<Range<u64>> = Vec::with_capacity(self.ranges.len());
        for r in self.ranges.drain(..) {
            match out.last_mut() {
                Some(last) if r.start <= last.end.saturating_add(gap) => {
                    last.end = last.end.max(r.end);
                }
                _ => out.push(r),
            }
        }
        self.ranges = out;
    }

    fn shrink(&mut self) {
        self.normalize();
        while self.ranges.len() > self.max_ranges / 2 {
            self.min_gap = if self.min_gap == 0 {
                FIRST_WIDENED_GAP
            } else {
                self.min_gap.saturating_mul(2)
            };
            self.normalize();
        }
    }

    /// The final ranges clipped to `[0, size)`, and the widest gap merged away to bound memory
    /// (`None` when the ranges are exact).
    pub fn finish(mut self, size: u64) -> (Vec<Range<u64>>, Option<u64>) {
        self.normalize();
        let mut ranges = self.ranges;
        ranges.retain_mut(|r| {
            r.end = r.end.min(size);
            r.start < r.end
        });
        (ranges, (self.min_gap > 0).then_some(self.min_gap))
    }
}

/// Calls `f(first, count)` for each run of set bits among the first `nbits` bits of `bits` (LSB
/// first). Returns the number of set bits.
pub(crate) fn for_each_run(bits: &[u8], nbits: u64, mut f: impl FnMut(u64, u64)) -> u64 {
    let nbits = nbits.min(bits.len() as u64 * 8);
    let mut run: Option<u64> = None;
    let mut set = 0u64;
    let mut i = 0u64;
    while i < nbits {
        let b = bits[(i / 8) as usize];
        // Whole bytes of 0x00 or 0xFF are the common case on real bitmaps.
        if i.is_multiple_of(8) && i + 8 <= nbits && (b == 0 || b == 0xFF) {
            if b == 0 {
                if let Some(s) = run.take() {
                    f(s, i - s);
                }
            } else {
                run.get_or_insert(i);
                set += 8;
            }
            i += 8;
            continue;
        }
        if b & (1 << (i % 8)) != 0 {
            run.get_or_insert(i);
            set += 1;
        } else if let Some(s) = run.take() {
            f(s, i - s);
        }
        i += 1;
    }
    if let Some(s) = run {
        f(s, nbits - s);
    }
    set
}

/// The parts of sorted, non-overlapping `ranges` that lie inside `window`.
pub fn intersect(
    ranges: &[Range<u64>],
    window: Range<u64>,
) -> impl Iterator<Item = Range<u64>> + '_ {
    let first = ranges.partition_point(|r| r.end <= window.start);
    ranges[first..]
        .iter()
        .take_while(move |r| r.start < window.end)
        .map(move |r| r.start.max(window.start)..r.end.min(window.end))
        .filter(|r| r.start < r.end)
}

/// Iterator of [`super::UsedMap::iter_aligned`].
#[derive(Debug, Clone)]
pub struct AlignedChunks<'a> {
    ranges: &'a [Range<u64>],
    chunk: u64,
    size: u64,
    /// Everything below this has been yielded or skipped.
    pos: u64,
}

impl<'a> AlignedChunks<'a> {
    pub(crate) fn new(ranges: &'a [Range<u64>], chunk: u64, size: u64) -> Self {
        AlignedChunks {
            ranges,
            chunk: chunk.max(1),
            size,
            pos: 0,
        }
    }
}

impl Iterator for AlignedChunks<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        let pos = self.pos;
        let skip = self.ranges.partition_point(|r| r.end <= pos);
        self.ranges = &self.ranges[skip..];
        let first = self.ranges.first()?;
        let used = first.start.max(self.pos);
        // Ranges past `size` (callers' maps never have them) must not yield or stall.
        if used >= self.size {
            self.ranges = &[];
            return None;
        }
        let start = used - used % self.chunk;
        let end = start.saturating_add(self.chunk).min(self.size);
        self.pos = end;
        Some(start..end)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits_of(v: &[bool]) -> Vec<u8> {
        let mut b = vec![0u8; v.len().div_ceil(8)];
        for (i, &x) in v.iter().enumerate() {
            if x {
                b[i / 8] |= 1 << (i % 8);
            }
        }
        b
    }

    #[test]
    fn merges_adjacent_and_overlapping_in_any_order() {
        let mut s = RangeSet::new();
        for r in [10..20, 0..5, 20..25, 3..8, 40..41, 30..30] {
            s.push(r);
        }
        assert_eq!(s.finish(100).0, vec![0..8, 10..25, 40..41]);
        let mut s = RangeSet::new();
        s.push(90..200);
        let (r, gap) = s.finish(100);
        assert_eq!((r.len(), r.first(), gap), (1, Some(&(90..100)), None));
    }

    #[test]
    fn aligned_chunks_cover_each_used_byte_once() {
        let ranges = vec![1..2, 3..4, 4096..4097, 8191..8193, 20000..20001];
        let got: Vec<_> = AlignedChunks::new(&ranges, 4096, 20000).collect();
        assert_eq!(got, vec![0..4096, 4096..8192, 8192..12288]);
        let got: Vec<_> = AlignedChunks::new(&ranges, 0, 5).collect();
        assert_eq!(got, vec![1..2, 3..4]);
    }

    proptest! {
        #[test]
        fn push_bits_matches_a_naive_scan(v in proptest::collection::vec(any::<bool>(), 0..300),
                                          cut in 0usize..300, base in 0u64..1000, unit in 1u64..5000) {
            let nbits = cut.min(v.len());
            let mut s = RangeSet::new();
            let set = s.push_bits(&bits_of(&v), nbits as u64, base, unit);
            prop_assert_eq!(set, v[..nbits].iter().filter(|&&x| x).count() as u64);
            let mut naive = RangeSet::new();
            for (i, _) in v[..nbits].iter().enumerate().filter(|(_, &x)| x) {
                let s = base + i as u64 * unit;
                naive.push(s..s + unit);
            }
            prop_assert_eq!(s.finish(u64::MAX), naive.finish(u64::MAX));
        }

        #[test]
        fn a_bounded_set_never_loses_a_byte(v in proptest::collection::vec((0u64..100_000, 1u64..300), 0..400),
                                             limit in 2usize..20) {
            let mut exact = RangeSet::new();
            let mut bounded = RangeSet::with_limit(limit);
            for &(s, l) in &v {
                exact.push(s..s + l);
                bounded.push(s..s + l);
            }
            let (exact, _) = exact.finish(u64::MAX);
            let (bounded, _) = bounded.finish(u64::MAX);
            prop_assert!(bounded.len() <= limit.max(2));
            for r in &exact {
                prop_assert!(bounded.iter().any(|b| b.start <= r.start && r.end <= b.end));
            }
        }

        #[test]
        fn aligned_chunks_and_intersect_agree(v in proptest::collection::vec((0u64..50_000, 1u64..3000), 0..50),
                                              chunk in 1u64..9000, size in 0u64..60_000) {
            let mut s = RangeSet::new();
            for &(a, l) in &v {
                s.push(a..a + l);
            }
            let (ranges, _) = s.finish(size);
            let chunks: Vec<_> = AlignedChunks::new(&ranges, chunk, size).collect();
            let mut covered = 0;
            for c in &chunks {
                prop_assert_eq!(c.start % chunk, 0);
                prop_assert!(c.end <= size);
                let inside: u64 = intersect(&ranges, c.clone()).map(|r| r.end - r.start).sum();
                prop_assert!(inside > 0);
                covered += inside;
            }
            prop_assert_eq!(covered, ranges.iter().map(|r| r.end - r.start).sum::<u64>());
        }
    }
}
