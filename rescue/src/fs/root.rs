//! What a FAT or exFAT volume holds at its top: the names in its root directory, without the volume
//! label and the filesystem's own structures (exFAT's allocation bitmap and up-case table). An empty
//! list means the volume holds no file and no directory at all; that is how the stick's data partition
//! is judged empty before it is re-created.
//!
//! Anything the reader cannot account for counts as content: an exFAT entry of an unknown critical
//! type is listed by its type, so an unfamiliar volume is never taken for an empty one. Deleted
//! entries are not content.

use std::io::{Read, Seek};

use super::{byte, exfat, fat, le16, le32, Disk, FsError};

/// Directory bytes read at once.
const PIECE: u64 = 1 << 20;
/// The FAT specification caps a directory at 65536 entries.
const MAX_FAT_DIR: u64 = 65536 * 32;

/// Collects names up to a limit.
struct Names {
    names: Vec<String>,
    limit: usize,
}

impl Names {
    fn push(&mut self, name: String) -> bool {
        self.names.push(name);
        self.names.len() >= self.limit
    }
}

/// A file's entry set being read: how many secondary entries are still to come, the name length, and
/// the UTF-16 units gathered so far.
struct Pending {
    left: u8,
    len: usize,
    units: Vec<u16>,
}

impl Pending {
    fn name(&self) -> String {
        let n = self.len.min(self.units.len());
        let s = String::from_utf16_lossy(&self.units[..n]);
        if s.is_empty() {
            "(a file with no name)".into()
        } else {
            s
        }
    }
}

pub(super) fn exfat_names<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    limit: usize,
) -> Result<Vec<String>, FsError> {
    let boot = disk.read(0, 512)?;
    let g = exfat::geometry(disk, &boot)?;
    let clusters = exfat::chain(disk, &g, g.root, None)?;
    let mut out = Names {
        names: Vec::new(),
        limit: limit.max(1),
    };
    let mut pending: Option<Pending> = None;
    for c in clusters {
        let at = g.cluster_offset(c);
        for piece in 0..g.cluster.div_ceil(PIECE) {
            let len = PIECE.min(g.cluster - piece * PIECE);
            let dir = disk.read(at + piece * PIECE, len)?;
            for e in dir.chunks_exact(32) {
                let kind = e[0];
                if kind == 0x00 {
                    if let Some(p) = pending.take() {
                        out.push(p.name());
                    }
                    return Ok(out.names);
                }
                let done = match (kind, pending.as_mut()) {
                    (0xC0, Some(p)) => {
                        p.len = usize::from(byte(e, 3));
                        p.left = p.left.saturating_sub(1);
                        p.left == 0
                    }
                    (0xC1, Some(p)) => {
                        p.units.extend(e[2..32].chunks_exact(2).map(|u| le16(u, 0)));
                        p.left = p.left.saturating_sub(1);
                        p.left == 0
                    }
                    _ => {
                        // Any other entry ends a set that was still being read.
                        if let Some(p) = pending.take() {
                            if out.push(p.name()) {
                                return Ok(out.names);
                            }
                        }
                        match kind {
                            0x85 => {
                                pending = Some(Pending {
                                    left: byte(e, 1),
                                    len: 0,
                                    units: Vec::new(),
                                })
                            }
                            // Deleted or unused entries, the volume's own structures, benign primary
                            // entries (volume GUID, padding) and stray secondaries.
                            0x01..=0x7F | 0x81..=0x83 | 0xA0..=0xBF | 0xC0..=0xFF => {}
                            other => {
                                if out.push(format!("(an entry of unknown type {other:#04x})")) {
                                    return Ok(out.names);
                                }
                            }
                        }
                        false
                    }
                };
                if done {
                    if let Some(p) = pending.take() {
                        if out.push(p.name()) {
                            return Ok(out.names);
                        }
                    }
                }
            }
        }
    }
    if let Some(p) = pending.take() {
        out.push(p.name());
    }
    Ok(out.names)
}

pub(super) fn fat_names<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    limit: usize,
) -> Result<Vec<String>, FsError> {
    let boot = disk.read(0, 512)?;
    let bpb = fat::parse_bpb(disk, &boot)?;
    let cluster = bpb.bps * bpb.spc;
    // Byte ranges of the root directory: the fixed area (FAT12/16) or the clusters of its chain.
    let mut ranges = Vec::new();
    if bpb.kind == fat::FatType::Fat32 {
        let fat = bpb.reserved * bpb.bps;
        let mut c = u64::from(le32(&boot, 44));
        let max = (MAX_FAT_DIR.div_ceil(cluster)).min(bpb.clusters);
        loop {
            if c < 2 || c >= bpb.clusters + 2 || ranges.len() as u64 >= max {
                return Err(disk.inconsistent(
                    fat + 4 * c,
                    format!("the root directory's cluster chain reaches cluster {c}"),
                ));
            }
            ranges.push(((bpb.first_data + (c - 2) * bpb.spc) * bpb.bps, cluster));
            let next = u64::from(le32(&disk.read(fat + 4 * c, 4)?, 0) & 0x0FFF_FFFF);
            if next >= 0x0FFF_FFF8 {
                break;
            }
            c = next;
        }
    } else {
        let start = bpb.reserved + bpb.nfats * bpb.fat_sectors;
        ranges.push((start * bpb.bps, (bpb.first_data - start) * bpb.bps));
    }
    let mut out = Names {
        names: Vec::new(),
        limit: limit.max(1),
    };
    // Long-name pieces (sequence number, 13 UTF-16 units) waiting for their short entry.
    let mut long: Vec<(u8, Vec<u16>)> = Vec::new();
    for (at, len) in ranges {
        let mut done = 0;
        while done < len {
            let n = PIECE.min(len - done);
            let dir = disk.read(at + done, n)?;
            done += n;
            for e in dir.chunks_exact(32) {
                match (e[0], e[11]) {
                    (0x00, _) => return Ok(out.names),
                    (0xE5, _) => long.clear(),
                    (_, attr) if attr & 0x3F == 0x0F => {
                        let units = [1..11, 14..26, 28..32]
                            .into_iter()
                            .flat_map(|r| {
                                e[r].chunks_exact(2).map(|u| le16(u, 0)).collect::<Vec<_>>()
                            })
                            .collect();
                        long.push((e[0] & 0x1F, units));
                    }
                    (_, attr) if attr & 0x08 != 0 => long.clear(),
                    _ => {
                        let name = if long.is_empty() {
                            short_name(e)
                        } else {
                            long.sort_by_key(|(seq, _)| *seq);
                            let units: Vec<u16> = long
                                .drain(..)
                                .flat_map(|(_, u)| u)
                                .take_while(|&u| u != 0 && u != 0xFFFF)
                                .collect();
                            String::from_utf16_lossy(&units)
                        };
                        if out.push(name) {
                            return Ok(out.names);
                        }
                    }
                }
            }
        }
    }
    Ok(out.names)
}

/// `NAME.EXT` from an 8.3 entry.
fn short_name(e: &[u8]) -> String {
    let mut base = e[0..8].to_vec();
    if base[0] == 0x05 {
        base[0] = 0xE5; // a name starting with 0xE5 is stored as 0x05
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim_end().to_string();
    let (base, ext) = (text(&base), text(&e[8..11]));
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}
