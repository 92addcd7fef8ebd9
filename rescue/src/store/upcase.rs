//! The exFAT up-case table: how the volume folds file names to upper case when it compares and hashes
//! them. Stored compressed (exFAT specification §7.2.5): each 16-bit value is the upper-case form of the
//! next character, and the pair `0xFFFF, n` stands for `n` characters that are their own upper case.
//!
//! The mapping is made here from Rust's Unicode tables: every character of the Basic Multilingual Plane
//! whose upper-case form is a single BMP character maps to it, all others to themselves. The table
//! covers all 65536 characters: the Linux driver rejects (and replaces by its built-in one) a table
//! that stops short of U+FFFF.

/// Identity runs shorter than this are written out character by character (a run marker costs two
/// values).
const MIN_RUN: u32 = 3;
/// The compression marker.
const RUN: u16 = 0xFFFF;

fn upper(c: u32) -> u16 {
    // Every c passed in is below 0x10000, so the fallback conversions cannot truncate.
    let same = u16::try_from(c).unwrap_or(RUN);
    let Some(ch) = char::from_u32(c) else {
        return same; // a surrogate code point
    };
    let mut up = ch.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u16::try_from(u32::from(u)).unwrap_or(same),
        _ => same,
    }
}

/// The compressed table as stored on disk (little-endian 16-bit values).
pub fn table() -> Vec<u8> {
    let mut out: Vec<u16> = Vec::new();
    let mut c = 0u32;
    while c <= 0xFFFF {
        let mut end = c;
        while end <= 0xFFFF && u32::from(upper(end)) == end {
            end += 1;
        }
        let run = end - c;
        if run >= MIN_RUN || (run > 0 && end > 0xFFFF) {
            let mut left = run;
            while left > 0 {
                let n = left.min(u32::from(u16::MAX));
                out.push(RUN);
                out.push(u16::try_from(n).unwrap_or(u16::MAX));
                left -= n;
            }
            c = end;
        } else if run > 0 {
            // Characters below U+FFFF: never the marker value.
            out.extend((c..end).map(upper));
            c = end;
        } else {
            out.push(upper(c));
            c += 1;
        }
    }
    out.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The up-case table's checksum, recorded in its directory entry.
pub fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0u32, |sum, &b| {
        sum.rotate_right(1).wrapping_add(u32::from(b))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Expands the compressed table the way a reader does.
    fn expand(bytes: &[u8]) -> Vec<u16> {
        let vals: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let mut map = Vec::new();
        let mut i = 0;
        while i < vals.len() {
            if vals[i] == RUN {
                let n = vals[i + 1];
                for _ in 0..n {
                    map.push(map.len() as u16);
                }
                i += 2;
            } else {
                map.push(vals[i]);
                i += 1;
            }
        }
        map
    }

    #[test]
    fn covers_every_character_and_folds_ascii_and_more() {
        let t = table();
        let map = expand(&t);
        assert_eq!(map.len(), 0x10000);
        for c in 0u16..128 {
            let want = (c as u8).to_ascii_uppercase() as u16;
            assert_eq!(map[c as usize], want, "{c:#x}");
        }
        assert_eq!(map[0xE9], 0xC9, "é → É");
        assert_eq!(map[0x3B1], 0x391, "α → Α");
        assert_eq!(map[0x44F], 0x42F, "я → Я");
        assert_eq!(map[0xDF], 0xDF, "ß has no single upper-case character");
        assert!(
            t.len() < 8192,
            "small enough for a cluster or two: {}",
            t.len()
        );
    }

    /// Linux reads the table value by value, taking a value equal to the current index as identity
    /// before it looks for the marker, stops once the index passes U+FFFF, and accepts the table only if
    /// it got that far and the checksum of what it read matches the directory entry.
    #[test]
    fn the_linux_loader_reads_it_to_the_end() {
        let t = table();
        let (mut index, mut skip, mut sum) = (0u32, false, 0u32);
        let mut read = 0;
        for pair in t.chunks_exact(2) {
            if index > 0xFFFF {
                break;
            }
            let uni = u16::from_le_bytes([pair[0], pair[1]]);
            sum = pair
                .iter()
                .fold(sum, |s, &b| s.rotate_right(1).wrapping_add(u32::from(b)));
            read += 2;
            if skip {
                index += u32::from(uni);
                skip = false;
            } else if u32::from(uni) == index || uni != RUN {
                index += 1;
            } else {
                skip = true;
            }
        }
        assert!(index >= 0xFFFF, "stopped at {index:#x}");
        assert_eq!(read, t.len(), "every value is read");
        assert_eq!(sum, checksum(&t));
    }
}
