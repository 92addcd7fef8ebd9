//! FAT directory entries: 8.3 entries and the VFAT long-name entries before them.

use crate::browse::{byte, le16, le32, Entry, Id, Kind, Time};

const ATTR_READONLY: u8 = 0x01;
const ATTR_HIDDEN: u8 = 0x02;
const ATTR_SYSTEM: u8 = 0x04;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_LFN: u8 = 0x0F;
const LAST_LFN: u8 = 0x40;
/// Short-name case flags (Windows NT): base name, extension in lower case.
const LOWER_BASE: u8 = 0x08;
const LOWER_EXT: u8 = 0x10;

/// Code page 437, bytes 0x80–0xFF: how short names with such bytes are shown.
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// A long name being gathered: its pieces by order number, the checksum they carry.
struct LongName {
    parts: Vec<Option<[u16; 13]>>,
    checksum: u8,
    next: u8,
}

/// The entries of a folder's raw bytes (without `.`, `..`, the volume label and deleted entries).
pub(super) fn parse(data: &[u8], fat32: bool) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut long: Option<LongName> = None;
    for e in data.chunks_exact(32) {
        let first = e[0];
        if first == 0 {
            break;
        }
        if first == 0xE5 {
            long = None;
            continue;
        }
        let attr = e[11];
        if attr & 0x3F == ATTR_LFN {
            let ord = first & 0x1F;
            if first & LAST_LFN != 0 {
                long = (ord > 0).then(|| LongName {
                    parts: vec![None; usize::from(ord)],
                    checksum: e[13],
                    next: ord,
                });
            }
            match long.as_mut() {
                Some(l) if l.next == ord && l.checksum == e[13] && ord > 0 => {
                    let mut units = [0u16; 13];
                    for (k, at) in (1..11)
                        .step_by(2)
                        .chain((14..26).step_by(2))
                        .chain((28..32).step_by(2))
                        .enumerate()
                    {
                        units[k] = le16(e, at);
                    }
                    if let Some(slot) = l.parts.get_mut(usize::from(ord) - 1) {
                        *slot = Some(units);
                    }
                    l.next = ord - 1;
                }
                _ => long = None,
            }
            continue;
        }
        let taken = long.take();
        if attr & ATTR_VOLUME != 0 {
            continue;
        }
        let mut short = [0u8; 11];
        short.copy_from_slice(&e[..11]);
        if short[0] == 0x05 {
            short[0] = 0xE5;
        }
        if &short == b".          " || &short == b"..         " {
            continue;
        }
        let name = taken
            .filter(|l| l.next == 0 && l.checksum == checksum(&e[..11]))
            .and_then(|l| long_text(&l))
            .unwrap_or_else(|| short_text(&short, e[12]));
        let cluster = u64::from(le16(e, 26))
            | if fat32 {
                u64::from(le16(e, 20)) << 16
            } else {
                0
            };
        let kind = if attr & ATTR_DIR != 0 {
            Kind::Dir
        } else {
            Kind::File
        };
        let mut entry = Entry::new(
            name,
            kind,
            Id {
                node: cluster,
                ..Id::default()
            },
        );
        if attr & ATTR_DIR == 0 {
            entry.size = u64::from(le32(e, 28));
        }
        entry.modified = Time::dos(le16(e, 24), le16(e, 22), 0, 0);
        entry.created = Time::dos(le16(e, 16), le16(e, 14), byte(e, 13), 0);
        entry.accessed = Time::dos(le16(e, 18), 0, 0, 0);
        entry.flags.readonly = attr & ATTR_READONLY != 0;
        entry.flags.hidden = attr & ATTR_HIDDEN != 0;
        entry.flags.system = attr & ATTR_SYSTEM != 0;
        out.push(entry);
    }
    out
}

/// The checksum of a short name that its long-name entries carry.
fn checksum(short: &[u8]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &c| sum.rotate_right(1).wrapping_add(c))
}

/// The long name gathered, up to its NUL; `None` if a piece is missing or the name is empty.
fn long_text(l: &LongName) -> Option<String> {
    let mut units = Vec::with_capacity(13 * l.parts.len());
    for p in &l.parts {
        units.extend_from_slice(p.as_ref()?);
    }
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    units.truncate(end);
    (!units.is_empty()).then(|| String::from_utf16_lossy(&units))
}

/// `BASE.EXT` of a short name, lower-cased where the case flags say so.
fn short_text(short: &[u8; 11], case: u8) -> String {
    let text = |b: &[u8], lower: bool| -> String {
        let s: String = b
            .iter()
            .map(|&c| {
                if c < 0x80 {
                    char::from(c)
                } else {
                    CP437_HIGH.chars().nth(usize::from(c - 0x80)).unwrap_or('?')
                }
            })
            .collect();
        let s = s.trim_end_matches(' ').to_owned();
        if lower {
            s.to_ascii_lowercase()
        } else {
            s
        }
    };
    let base = text(&short[..8], case & LOWER_BASE != 0);
    let ext = text(&short[8..], case & LOWER_EXT != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_and_checksums() {
        assert_eq!(CP437_HIGH.chars().count(), 128);
        assert_eq!(short_text(b"README  TXT", 0), "README.TXT");
        assert_eq!(short_text(b"README  TXT", LOWER_BASE), "readme.TXT");
        assert_eq!(short_text(b"NOEXT      ", LOWER_EXT), "NOEXT");
        assert_eq!(short_text(b"\x80BC     D  ", 0), "ÇBC.D");
        // The checksum of "FILENAMETXT" as Windows computes it.
        let mut s = 0u8;
        for &c in b"FILENAMETXT" {
            s = (if s & 1 != 0 { 0x80 } else { 0 }) + (s >> 1);
            s = s.wrapping_add(c);
        }
        assert_eq!(checksum(b"FILENAMETXT"), s);
    }
}
