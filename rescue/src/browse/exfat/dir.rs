//! exFAT directory entry sets and the up-case table.

use crate::browse::{byte, le16, le32, le64, Entry, Id, Kind, Time};

const FILE: u8 = 0x85;
const STREAM: u8 = 0xC0;
const NAME: u8 = 0xC1;
const ATTR_READONLY: u16 = 0x01;
const ATTR_HIDDEN: u16 = 0x02;
const ATTR_SYSTEM: u16 = 0x04;
const ATTR_DIR: u16 = 0x10;

/// The files and folders of a folder's raw entries, and how many entry sets were damaged (a wrong
/// checksum, a missing stream extension, cut short) and left out.
pub(super) fn parse(data: &[u8]) -> (Vec<Entry>, usize) {
    let entries: Vec<&[u8]> = data.chunks_exact(32).collect();
    let mut out = Vec::new();
    let mut damaged = 0;
    let mut i = 0;
    while let Some(e) = entries.get(i) {
        let t = e[0];
        if t == 0 {
            break;
        }
        i += 1;
        if t != FILE {
            // Deleted entries (bit 7 clear), the bitmap, up-case table, label, GUID and the like.
            continue;
        }
        let secondaries = usize::from(e[1]);
        let Some(set) = entries.get(i - 1..i + secondaries) else {
            damaged += 1;
            break;
        };
        match entry(set) {
            Some(en) => {
                out.push(en);
                i += secondaries;
            }
            None => damaged += 1,
        }
    }
    (out, damaged)
}

/// The entry an entry set describes, if the set is whole and its checksum agrees.
fn entry(set: &[&[u8]]) -> Option<Entry> {
    let (file, rest) = set.split_first()?;
    let mut sum = 0u16;
    for (k, &x) in set.iter().flat_map(|e| e.iter()).enumerate() {
        if k == 2 || k == 3 {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u16::from(x));
    }
    if sum != le16(file, 2) || rest.len() < 2 {
        return None;
    }
    let stream = rest[0];
    if stream[0] != STREAM {
        return None;
    }
    let name_len = usize::from(byte(stream, 3));
    let mut units: Vec<u16> = Vec::with_capacity(name_len);
    for n in rest[1..].iter().take_while(|n| n[0] == NAME) {
        units.extend((0..15).map(|k| le16(n, 2 + 2 * k)));
    }
    if name_len == 0 || units.len() < name_len {
        return None;
    }
    units.truncate(name_len);
    let attr = le16(file, 4);
    let kind = if attr & ATTR_DIR != 0 {
        Kind::Dir
    } else {
        Kind::File
    };
    let mut e = Entry::new(
        String::from_utf16_lossy(&units),
        kind,
        Id {
            node: u64::from(le32(stream, 20)),
            aux: u64::from(byte(stream, 1)),
            aux2: le64(stream, 8),
        },
    );
    e.size = le64(stream, 24);
    e.created = stamp(le32(file, 8), byte(file, 20), byte(file, 22));
    e.modified = stamp(le32(file, 12), byte(file, 21), byte(file, 23));
    e.accessed = stamp(le32(file, 16), 0, byte(file, 24));
    e.flags.readonly = attr & ATTR_READONLY != 0;
    e.flags.hidden = attr & ATTR_HIDDEN != 0;
    e.flags.system = attr & ATTR_SYSTEM != 0;
    Some(e)
}

/// A timestamp with its 10 ms increment and UTC offset (bit 7: valid; 7-bit signed quarter hours).
fn stamp(ts: u32, centis: u8, utc: u8) -> Option<Time> {
    let offset = if utc & 0x80 != 0 {
        i32::from(((utc << 1) as i8) >> 1) * 15
    } else {
        0
    };
    Time::dos((ts >> 16) as u16, ts as u16, centis, offset)
}

/// The up-case table, expanded from its stored form (a run `0xFFFF, n` stands for n characters that
/// map to themselves): the upper case of every UTF-16 unit.
pub(super) fn expand_upcase(data: &[u8]) -> Vec<u16> {
    let mut map: Vec<u16> = (0..=u16::MAX).collect();
    let mut at = 0usize;
    let mut units = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    while let Some(v) = units.next() {
        if at >= map.len() {
            break;
        }
        if v == 0xFFFF {
            if let Some(skip) = units.next() {
                at += usize::from(skip);
                continue;
            }
        }
        map[at] = v;
        at += 1;
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upcase_runs_and_offsets() {
        // 'a'..'c' upper-cased after 0x61 identity entries.
        let mut t: Vec<u8> = Vec::new();
        for v in [0xFFFFu16, 0x61, 0x41, 0x42, 0x43] {
            t.extend_from_slice(&v.to_le_bytes());
        }
        let m = expand_upcase(&t);
        assert_eq!(
            (m[0x20], m[0x61], m[0x63], m[0x64]),
            (0x20, 0x41, 0x43, 0x64)
        );
        // UTC+1 (4 quarter hours) and UTC-5.
        let ts = ((44u32 << 9 | 1 << 5 | 1) << 16) | (1 << 11);
        assert_eq!(stamp(ts, 0, 0x84).unwrap().secs, 1_704_070_800 - 3600);
        assert_eq!(
            stamp(ts, 0, 0x80 | 0x6C).unwrap().secs,
            1_704_070_800 + 5 * 3600
        );
        assert_eq!(stamp(ts, 0, 0x04).unwrap().secs, 1_704_070_800);
    }
}
