//! MBR (DOS) partition tables: the four primary entries and the chains of extended boot records
//! (EBRs) that hold logical partitions, numbered 5, 6, … in chain order as Linux numbers them.
//!
//! LBA 0 is decoded with `mbrman` (its `MBRHeader` checks the 0x55AA signature and the boot flags,
//! which is also how Linux tells a partition table from a FAT boot sector). The EBR chains are
//! walked here instead of with `mbrman::MBR::read_from`, because that function adds untrusted
//! 32-bit LBAs without overflow checks (a panic in debug builds on hostile input), has no bound on
//! the chain length, gives up on the whole table (primaries included) at the first inconsistent
//! EBR, and treats types 0xC5/0xD5 as extended unlike Linux.

use std::collections::HashSet;
use std::io::{Cursor, Read, Seek};

use super::io::{le32, DiskReader};
use super::names;
use super::Partition;

/// Longest EBR chain followed. Linux stops after 100 consecutive empty EBRs; real tables have a few
/// dozen logical partitions at most.
const MAX_EBRS: usize = 256;

/// One 16-byte partition entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub boot: u8,
    pub sys: u8,
    pub start_lba: u32,
    pub sectors: u32,
}

impl Entry {
    fn from_bytes(b: &[u8]) -> Entry {
        Entry {
            boot: b.first().copied().unwrap_or(0),
            sys: b.get(4).copied().unwrap_or(0),
            start_lba: le32(b, 8),
            sectors: le32(b, 12),
        }
    }

    pub(crate) fn is_used(&self) -> bool {
        self.sys != 0 && self.sectors != 0
    }

    /// The types Linux follows as extended containers.
    pub(crate) fn is_extended(&self) -> bool {
        matches!(self.sys, 0x05 | 0x0F | 0x85)
    }
}

/// A decoded LBA 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MbrSector {
    pub disk_signature: u32,
    pub entries: [Entry; 4],
}

impl MbrSector {
    pub(crate) fn used(&self) -> impl Iterator<Item = (u32, &Entry)> {
        (1u32..)
            .zip(self.entries.iter())
            .filter(|(_, e)| e.is_used())
    }
}

/// Decodes LBA 0 as an MBR; `None` when it is not one (no 0x55AA, or boot flags other than 0x00 /
/// 0x80, which means a filesystem boot sector or garbage).
pub(crate) fn parse_mbr(sector0: &[u8]) -> Option<MbrSector> {
    let h = mbrman::MBRHeader::read_from(&mut Cursor::new(sector0.get(..512)?)).ok()?;
    let mut entries = [Entry::from_bytes(&[]); 4];
    for (slot, (_, e)) in entries.iter_mut().zip(h.iter()) {
        *slot = Entry {
            boot: e.boot,
            sys: e.sys,
            start_lba: e.starting_lba,
            sectors: e.sectors,
        };
    }
    Some(MbrSector {
        disk_signature: u32::from_le_bytes(h.disk_signature),
        entries,
    })
}

/// The partitions of an MBR disk: primaries, extended containers and logical partitions.
pub(crate) fn partitions<R: Read + Seek>(
    src: &mut DiskReader<R>,
    mbr: &MbrSector,
    sector_size: u32,
    problems: &mut Vec<String>,
) -> Vec<Partition> {
    let ss = u64::from(sector_size);
    let mut out = Vec::new();
    for (number, e) in mbr.used() {
        let mut p = Partition::new(
            number,
            u64::from(e.start_lba) * ss,
            u64::from(e.sectors) * ss,
            format!("{:#04x}", e.sys),
            names::mbr_type_name(e.sys),
        );
        p.bootable = e.boot == 0x80;
        p.extended = e.is_extended();
        if e.start_lba == 0 {
            problems.push(format!(
                "MBR partition {number} starts at sector 0, on top of the partition table itself"
            ));
        }
        out.push(p);
    }
    let mut next_number = 5;
    for (number, e) in mbr.used() {
        if e.is_extended() {
            walk_chain(src, number, e, ss, &mut next_number, &mut out, problems);
        }
    }
    out
}

/// Follows one extended partition's EBR chain. Each EBR describes one logical partition (relative
/// to the EBR itself) and links to the next EBR (relative to the extended partition's start).
fn walk_chain<R: Read + Seek>(
    src: &mut DiskReader<R>,
    container: u32,
    ext: &Entry,
    ss: u64,
    next_number: &mut u32,
    out: &mut Vec<Partition>,
    problems: &mut Vec<String>,
) {
    let ext_start = u64::from(ext.start_lba);
    let ext_end = ext_start + u64::from(ext.sectors);
    let mut ebr = ext_start;
    let mut seen = HashSet::new();
    for hop in 0.. {
        if hop >= MAX_EBRS {
            problems.push(format!(
                "the logical partition chain of extended partition {container} has more than \
                 {MAX_EBRS} links; the rest was not read (the table is probably corrupted)"
            ));
            return;
        }
        if !seen.insert(ebr) {
            problems.push(format!(
                "the logical partition chain of extended partition {container} loops back to \
                 sector {ebr}; logical partitions after that point are not shown (corrupted table)"
            ));
            return;
        }
        if ebr < ext_start || ebr >= ext_end {
            problems.push(format!(
                "the logical partition chain of extended partition {container} points to sector \
                 {ebr}, outside the extended partition (sectors {ext_start}..{ext_end}); the chain \
                 was not followed further"
            ));
            return;
        }
        let sector = match src.read_at(ebr * ss, 512) {
            Ok(Some(s)) => s,
            Ok(None) => {
                problems.push(format!(
                    "the extended boot record at sector {ebr} lies beyond the end of the disk; \
                     logical partitions from there on are missing (truncated image?)"
                ));
                return;
            }
            // DiskReader has recorded the I/O error itself.
            Err(()) => return,
        };
        if sector.get(510..512) != Some(&[0x55, 0xAA][..]) {
            if hop > 0 {
                problems.push(format!(
                    "the extended boot record at sector {ebr} has no 0x55AA signature; the chain of \
                     logical partitions ends there"
                ));
            }
            // An extended partition without any EBR is simply empty.
            return;
        }
        let entries: Vec<Entry> = (0..4)
            .map(|i| Entry::from_bytes(sector.get(446 + 16 * i..462 + 16 * i).unwrap_or(&[])))
            .collect();
        for (i, e) in entries.iter().enumerate() {
            if !e.is_used() || e.is_extended() {
                continue;
            }
            let start = ebr + u64::from(e.start_lba);
            let end = start + u64::from(e.sectors);
            // Slots 3 and 4 of an EBR often hold garbage: like Linux, only believe them when
            // they stay inside the extended partition.
            if i >= 2 && (start < ext_start || end > ext_end) {
                continue;
            }
            let number = *next_number;
            *next_number += 1;
            if start < ext_start || end > ext_end {
                problems.push(format!(
                    "logical partition {number} (sectors {start}..{end}) is not inside its extended \
                     partition {container} (sectors {ext_start}..{ext_end})"
                ));
            }
            let mut p = Partition::new(
                number,
                start * ss,
                u64::from(e.sectors) * ss,
                format!("{:#04x}", e.sys),
                names::mbr_type_name(e.sys),
            );
            p.logical = true;
            p.bootable = e.boot == 0x80;
            out.push(p);
        }
        match entries
            .iter()
            .take(2)
            .find(|e| e.is_used() && e.is_extended())
        {
            Some(link) => ebr = ext_start + u64::from(link.start_lba),
            None => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    fn put_entry(
        buf: &mut [u8],
        sector_off: usize,
        slot: usize,
        boot: u8,
        sys: u8,
        start: u32,
        len: u32,
    ) {
        let o = sector_off + 446 + 16 * slot;
        buf[o] = boot;
        buf[o + 4] = sys;
        buf[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
        buf[o + 12..o + 16].copy_from_slice(&len.to_le_bytes());
        buf[sector_off + 510] = 0x55;
        buf[sector_off + 511] = 0xAA;
    }

    fn probe(buf: Vec<u8>) -> (Vec<Partition>, Vec<String>) {
        let mbr = parse_mbr(&buf).expect("valid MBR");
        let len = buf.len() as u64;
        let mut src = DiskReader::new(Cursor::new(buf), len);
        let mut problems = Vec::new();
        let parts = partitions(&mut src, &mbr, 512, &mut problems);
        (parts, problems)
    }

    #[test]
    fn rejects_non_mbr_sectors() {
        assert!(parse_mbr(&[0u8; 512]).is_none());
        assert!(parse_mbr(&[0u8; 100]).is_none());
        let mut b = vec![0u8; 512];
        put_entry(&mut b, 0, 0, 0x12, 0x83, 1, 1);
        assert!(
            parse_mbr(&b).is_none(),
            "boot flag 0x12 is not a partition table"
        );
    }

    #[test]
    fn logical_chain_numbering_and_names() {
        let mut b = vec![0u8; 200 * 512];
        b[440..444].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        put_entry(&mut b, 0, 0, 0x80, 0x83, 2, 10);
        put_entry(&mut b, 0, 1, 0, 0x0F, 20, 100);
        // EBR 1 at 20: logical at +2, link to EBR at ext+40.
        put_entry(&mut b, 20 * 512, 0, 0, 0x07, 2, 10);
        put_entry(&mut b, 20 * 512, 1, 0, 0x05, 40, 20);
        // EBR 2 at 60: logical at +1, no link.
        put_entry(&mut b, 60 * 512, 0, 0, 0x82, 1, 5);
        let mbr = parse_mbr(&b).unwrap();
        assert_eq!(mbr.disk_signature, 0xDEAD_BEEF);
        let (parts, problems) = probe(b);
        assert!(problems.is_empty(), "{problems:?}");
        let summary: Vec<_> = parts
            .iter()
            .map(|p| {
                (
                    p.number,
                    p.start_bytes / 512,
                    p.size_bytes / 512,
                    p.part_type.as_str(),
                    p.logical,
                    p.extended,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, 2, 10, "0x83", false, false),
                (2, 20, 100, "0x0f", false, true),
                (5, 22, 10, "0x07", true, false),
                (6, 61, 5, "0x82", true, false),
            ]
        );
        assert!(parts[0].bootable);
        assert_eq!(parts[1].type_name, "Extended");
        assert_eq!(parts[3].type_name, "Linux swap");
    }

    #[test]
    fn looping_chain_is_reported_not_followed_forever() {
        let mut b = vec![0u8; 200 * 512];
        put_entry(&mut b, 0, 0, 0, 0x05, 10, 100);
        put_entry(&mut b, 10 * 512, 0, 0, 0x83, 1, 4);
        put_entry(&mut b, 10 * 512, 1, 0, 0x05, 20, 10);
        put_entry(&mut b, 30 * 512, 0, 0, 0x83, 1, 4);
        put_entry(&mut b, 30 * 512, 1, 0, 0x05, 0, 10); // back to the first EBR
        let (parts, problems) = probe(b);
        assert_eq!(parts.iter().filter(|p| p.logical).count(), 2);
        assert!(
            problems.iter().any(|p| p.contains("loops back")),
            "{problems:?}"
        );
    }

    #[test]
    fn chain_leaving_the_container_or_the_disk_is_reported() {
        let mut b = vec![0u8; 64 * 512];
        put_entry(&mut b, 0, 0, 0, 0x85, 10, 1000); // container runs past the 64-sector disk
        put_entry(&mut b, 10 * 512, 0, 0, 0x83, 1, 4);
        put_entry(&mut b, 10 * 512, 1, 0, 0x05, 500, 10); // beyond the end of the disk
        let (parts, problems) = probe(b.clone());
        assert_eq!(parts.iter().filter(|p| p.logical).count(), 1);
        assert!(
            problems.iter().any(|p| p.contains("beyond the end")),
            "{problems:?}"
        );

        put_entry(&mut b, 10 * 512, 1, 0, 0x05, 5000, 10); // outside the container
        let (_, problems) = probe(b);
        assert!(
            problems.iter().any(|p| p.contains("outside the extended")),
            "{problems:?}"
        );
    }

    #[test]
    fn huge_lbas_do_not_overflow() {
        let mut b = vec![0u8; 4 * 512];
        put_entry(&mut b, 0, 0, 0, 0x05, u32::MAX, u32::MAX);
        put_entry(&mut b, 0, 1, 0, 0x83, u32::MAX, u32::MAX);
        let (parts, _) = probe(b);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].start_bytes, u64::from(u32::MAX) * 512);
    }
}
