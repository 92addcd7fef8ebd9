//! GUID partition tables: both headers and both entry arrays validated independently, partitions
//! taken from the best surviving copy.
//!
//! Division of labour with the `gpt` crate: headers are parsed and validated here, because
//! `GptConfig::open_from_device` only checks the signature and a 92-byte CRC, not `my_lba`, the
//! header size or the entry geometry; it panics (`assert_eq!`) on an entry size other than 128,
//! allocates `num_parts × part_size` bytes straight from the (untrusted) header, and fails outright
//! when the entry array's CRC is wrong instead of falling back to the other copy. The crate does
//! decode the entry array (type and unique GUIDs, LBAs, attributes, UTF-16 names): we hand it an
//! in-memory copy of the array, already read with bounds and checked, so it never touches the disk.
//! The crate's partition-type constants key the friendly-name table (`names`).

use std::io::{Cursor, Read, Seek};

use gpt::partition_types as pt;

use super::io::{crc32, guid_mixed, has, le32, le64, DiskReader};
use super::names;
use super::{GptInfo, Partition};

/// Most partition entries accepted. Every real GPT has 128; anything past a few hundred means a
/// corrupted header, and the cap bounds memory and I/O.
pub(crate) const MAX_ENTRIES: u32 = 1024;
/// Largest entry size accepted (the spec allows 128 × 2^n).
const MAX_ENTRY_SIZE: u32 = 1024;

const SIGNATURE: &[u8] = b"EFI PART";

/// A header as found on disk (signature present; validity is tracked separately).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub lba: u64,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: String,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

/// The outcome of reading one header location.
#[derive(Debug, Default)]
struct HeaderCheck {
    /// Parsed when the signature is there.
    header: Option<Header>,
    /// Why the header cannot be trusted; empty when valid.
    errors: Vec<String>,
    /// Oddities that do not invalidate the header.
    warnings: Vec<String>,
    unreadable: bool,
}

impl HeaderCheck {
    fn valid(&self) -> Option<&Header> {
        self.header.as_ref().filter(|_| self.errors.is_empty())
    }

    fn describe(&self) -> String {
        if self.unreadable {
            "could not be read (I/O error)".to_string()
        } else if self.header.is_none() {
            "is missing (no \"EFI PART\" signature)".to_string()
        } else {
            format!("is damaged: {}", self.errors.join("; "))
        }
    }
}

/// Whether a GPT signature sits where `sector_size` puts the primary (LBA 1) or the backup (last
/// LBA) header. Image files have no sector size of their own; this is how it is found.
pub(crate) fn has_signature<R: Read + Seek>(src: &mut DiskReader<R>, sector_size: u32) -> bool {
    let ss = u64::from(sector_size);
    let at = |src: &mut DiskReader<R>, off: u64| matches!(src.read_at(off, SIGNATURE.len()), Ok(Some(b)) if b == SIGNATURE);
    let last = (src.size() / ss).saturating_sub(1);
    at(src, ss) || (last > 1 && at(src, last * ss))
}

/// The partitions of a GPT disk and the table's health; `None` when neither header location has a
/// GPT signature. `protective_mbr`/`hybrid_mbr` are left for the caller, who has read LBA 0.
pub(crate) fn probe<R: Read + Seek>(
    src: &mut DiskReader<R>,
    sector_size: u32,
) -> Option<(GptInfo, Vec<Partition>)> {
    let ss = u64::from(sector_size);
    let total = src.size() / ss;
    if total < 3 {
        return None;
    }
    let last = total - 1;
    let primary = check_header(src, 1, ss, total);
    let mut backup = check_header(src, last, ss, total);
    let mut problems = Vec::new();
    // A disk that was enlarged (or an image restored to a bigger disk) keeps its backup where the
    // primary says, not at the new end.
    if let Some(alt) = primary.header.as_ref().map(|h| h.alternate_lba) {
        if alt != last && alt > 1 && alt < last {
            let moved = check_header(src, alt, ss, total);
            if backup.header.is_none() && moved.header.is_some() {
                backup = moved;
            }
            problems.push(format!(
                "the primary GPT header places the backup header at LBA {alt}, but the disk's last \
                 LBA is {last}: the disk was resized or the image comes from a disk of another \
                 size (gdisk/sgdisk -e moves the backup to the end)"
            ));
        }
    }
    if primary.header.is_none() && backup.header.is_none() && !primary.unreadable {
        return None;
    }

    let primary_entries = primary.valid().and_then(|h| read_entries(src, h, ss));
    let backup_entries = backup.valid().and_then(|h| read_entries(src, h, ss));
    let ok = |e: &Option<(Vec<u8>, bool)>| matches!(e, Some((_, true)));

    for w in primary.warnings.iter().chain(&backup.warnings) {
        if !problems.contains(w) {
            problems.push(w.clone());
        }
    }
    if primary.valid().is_none() {
        problems.push(format!(
            "the primary GPT header (LBA 1) {}",
            primary.describe()
        ));
    }
    if backup.valid().is_none() {
        problems.push(format!(
            "the backup GPT header (LBA {}) {}",
            backup.header.as_ref().map_or(last, |h| h.lba),
            backup.describe()
        ));
    }
    if primary.valid().is_some() && !ok(&primary_entries) {
        problems.push(entries_problem("primary", &primary_entries));
    }
    if backup.valid().is_some() && !ok(&backup_entries) {
        problems.push(entries_problem("backup", &backup_entries));
    }

    // Best surviving copy: a valid header with a valid array, primary first; then a valid header
    // with a damaged array (best effort, flagged).
    let chosen = if ok(&primary_entries) {
        Some((primary.valid(), primary_entries.as_ref(), "primary"))
    } else if ok(&backup_entries) {
        Some((backup.valid(), backup_entries.as_ref(), "backup"))
    } else if primary_entries.is_some() {
        Some((primary.valid(), primary_entries.as_ref(), "primary"))
    } else if backup_entries.is_some() {
        Some((backup.valid(), backup_entries.as_ref(), "backup"))
    } else {
        None
    };

    let mut partitions = Vec::new();
    let mut header_used = None;
    match chosen {
        Some((Some(h), Some((entries, crc_ok)), which)) => {
            if which == "backup" {
                problems.push(format!(
                    "partitions were read from the backup GPT (LBA {}); the primary copy is not \
                     usable. Rewrite the primary before trusting this disk (gdisk: recovery menu, \
                     'use backup GPT header' then 'w')",
                    h.lba
                ));
            }
            if !crc_ok {
                problems.push(
                    "no partition entry array has a valid checksum; the partitions shown are \
                     decoded from a damaged array and may be wrong"
                        .to_string(),
                );
            }
            partitions = decode_entries(h, entries, ss, &mut problems);
            header_used = Some(h.clone());
        }
        _ => {
            if primary.valid().is_none() && backup.valid().is_none() {
                problems.push(
                    "no valid GPT header remains; no partitions can be shown. Do not write to this \
                     disk; tools like testdisk can search for lost partitions"
                        .to_string(),
                );
            }
        }
    }

    if let (Some(p), Some(b)) = (primary.valid(), backup.valid()) {
        if p.disk_guid != b.disk_guid
            || p.first_usable != b.first_usable
            || p.last_usable != b.last_usable
            || p.entry_count != b.entry_count
            || p.entries_crc != b.entries_crc
        {
            problems.push(
                "the primary and backup GPT headers disagree (disk GUID, usable range or \
                 partition entries); the primary was used"
                    .to_string(),
            );
        }
    }

    let reference = header_used
        .clone()
        .or_else(|| primary.header.clone())
        .or_else(|| backup.header.clone());
    let info = GptInfo {
        disk_guid: reference.as_ref().map(|h| h.disk_guid.clone()),
        primary_header_valid: primary.valid().is_some(),
        backup_header_valid: backup.valid().is_some(),
        primary_entries_valid: primary_entries.as_ref().map(|e| e.1),
        backup_entries_valid: backup_entries.as_ref().map(|e| e.1),
        protective_mbr: false,
        hybrid_mbr: false,
        first_usable_lba: reference.as_ref().map_or(0, |h| h.first_usable),
        last_usable_lba: reference.as_ref().map_or(0, |h| h.last_usable),
        partition_entry_count: reference.as_ref().map_or(0, |h| h.entry_count),
        partition_entry_size: reference.as_ref().map_or(0, |h| h.entry_size),
        primary_entries_lba: primary.valid().map(|h| h.entries_lba),
        backup_header_lba: backup.valid().map(|h| h.lba),
        backup_entries_lba: backup.valid().map(|h| h.entries_lba),
        problems,
    };
    Some((info, partitions))
}

fn entries_problem(which: &str, entries: &Option<(Vec<u8>, bool)>) -> String {
    match entries {
        Some(_) => format!("the {which} GPT partition entry array is damaged (checksum mismatch)"),
        None => format!("the {which} GPT partition entry array could not be read"),
    }
}

/// Reads and validates the header at `lba`.
fn check_header<R: Read + Seek>(
    src: &mut DiskReader<R>,
    lba: u64,
    ss: u64,
    total: u64,
) -> HeaderCheck {
    let mut check = HeaderCheck::default();
    let block = match src.read_at(lba * ss, ss as usize) {
        Ok(Some(b)) => b,
        Ok(None) => return check,
        Err(()) => {
            check.unreadable = true;
            return check;
        }
    };
    if !has(&block, 0, SIGNATURE) {
        return check;
    }
    let h = Header {
        lba,
        my_lba: le64(&block, 24),
        alternate_lba: le64(&block, 32),
        first_usable: le64(&block, 40),
        last_usable: le64(&block, 48),
        disk_guid: guid_mixed(block.get(56..72).unwrap_or(&[])),
        entries_lba: le64(&block, 72),
        entry_count: le32(&block, 80),
        entry_size: le32(&block, 84),
        entries_crc: le32(&block, 88),
    };
    let errors = &mut check.errors;
    let header_size = le32(&block, 12) as usize;
    if header_size < 92 || header_size > block.len() {
        errors.push(format!("header size {header_size} is invalid"));
    } else {
        let mut copy = block[..header_size].to_vec();
        copy[16..20].fill(0);
        if crc32(&copy) != le32(&block, 16) {
            errors.push("header checksum (CRC32) mismatch".to_string());
        }
    }
    if lba != 1 && h.alternate_lba != 1 {
        check.warnings.push(format!(
            "the backup GPT header points to the primary at LBA {} instead of LBA 1",
            h.alternate_lba
        ));
    }
    if h.my_lba != lba {
        errors.push(format!(
            "it says it lives at LBA {} but sits at LBA {lba}",
            h.my_lba
        ));
    }
    if h.entry_size < 128 || h.entry_size > MAX_ENTRY_SIZE || !h.entry_size.is_power_of_two() {
        errors.push(format!("partition entry size {} is invalid", h.entry_size));
    }
    if h.entry_count > MAX_ENTRIES {
        errors.push(format!(
            "it declares {} partition entries (at most {MAX_ENTRIES} are supported)",
            h.entry_count
        ));
    }
    let array_lbas = (u64::from(h.entry_count) * u64::from(h.entry_size)).div_ceil(ss);
    let array_end = h.entries_lba.saturating_add(array_lbas);
    let array_ok = if lba == 1 {
        h.entries_lba >= 2 && array_end <= total
    } else {
        h.entries_lba > 1 && array_end <= lba
    };
    if !array_ok {
        errors.push(format!(
            "its partition entry array (LBA {}..{array_end}) lies outside the disk or over a header",
            h.entries_lba
        ));
    }
    if h.first_usable > h.last_usable.saturating_add(1) {
        errors.push(format!(
            "its usable range (LBA {}..={}) is empty or inverted",
            h.first_usable, h.last_usable
        ));
    } else if h.last_usable >= total {
        // The header itself is intact; the disk is what changed. Its partitions are still the
        // best information there is (a truncated image, a smaller replacement disk).
        check.warnings.push(format!(
            "the GPT was made for a disk of at least {} LBAs but this one has {total}: truncated \
             image, or a disk smaller than the one partitioned",
            h.last_usable.saturating_add(2)
        ));
    }
    check.header = Some(h);
    check
}

/// The entry array repacked to 128-byte entries, and whether its CRC matches. `None` when it
/// cannot be read.
fn read_entries<R: Read + Seek>(
    src: &mut DiskReader<R>,
    h: &Header,
    ss: u64,
) -> Option<(Vec<u8>, bool)> {
    let len = h.entry_count as usize * h.entry_size as usize;
    let raw = src.read_at(h.entries_lba.checked_mul(ss)?, len).ok()??;
    let crc_ok = crc32(&raw) == h.entries_crc;
    let packed = if h.entry_size == 128 {
        raw
    } else {
        // Larger entries start with the same 128-byte layout; the rest is reserved.
        raw.chunks(h.entry_size as usize)
            .flat_map(|c| c.iter().take(128).copied())
            .collect()
    };
    Some((packed, crc_ok))
}

/// Decodes the (already read and bounded) 128-byte entries with the gpt crate.
fn decode_entries(
    h: &Header,
    packed: &[u8],
    ss: u64,
    problems: &mut Vec<String>,
) -> Vec<Partition> {
    let count = u32::try_from(packed.len() / 128).unwrap_or(0);
    // The crate wants a header of its own: the array is at offset 0 of our buffer, entries are 128
    // bytes, and its CRC check is made to pass (ours already ran, on the original array).
    let crate_header = gpt::header::Header {
        signature: "EFI PART".to_string(),
        revision: (1, 0),
        header_size_le: 92,
        crc32: 0,
        reserved: 0,
        current_lba: h.my_lba,
        backup_lba: h.alternate_lba,
        first_usable: h.first_usable,
        last_usable: h.last_usable,
        disk_guid: pt::UNUSED.guid,
        part_start: 0,
        num_parts: count,
        part_size: 128,
        crc32_parts: crc32(packed),
    };
    let decoded = match gpt::partition::file_read_partitions(
        &mut Cursor::new(packed),
        &crate_header,
        gpt::disk::LogicalBlockSize::Lb512,
    ) {
        Ok(d) => d,
        Err(e) => {
            problems.push(format!(
                "the GPT partition entries could not be decoded: {e}"
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (number, p) in decoded.iter().filter(|(_, p)| p.is_used()) {
        if p.first_lba > p.last_lba {
            problems.push(format!(
                "GPT partition {number} ends (LBA {}) before it starts (LBA {}); it is ignored",
                p.last_lba, p.first_lba
            ));
            continue;
        }
        let sectors = (p.last_lba - p.first_lba).checked_add(1);
        let (Some(start), Some(size)) = (
            p.first_lba.checked_mul(ss),
            sectors.and_then(|n| n.checked_mul(ss)),
        ) else {
            problems.push(format!(
                "GPT partition {number} has impossible LBAs; it is ignored"
            ));
            continue;
        };
        if p.first_lba < h.first_usable || p.last_lba > h.last_usable {
            problems.push(format!(
                "GPT partition {number} (LBA {}..={}) lies outside the table's usable range \
                 (LBA {}..={})",
                p.first_lba, p.last_lba, h.first_usable, h.last_usable
            ));
        }
        let type_guid = format!("{:X}", p.part_type_guid.guid);
        let mut part = Partition::new(
            *number,
            start,
            size,
            type_guid.clone(),
            names::gpt_type_name(&p.part_type_guid, &type_guid),
        );
        part.name = (!p.name.is_empty()).then(|| p.name.clone());
        part.uuid = Some(format!("{:X}", p.part_guid));
        // Attribute bit 2: "legacy BIOS bootable", the GPT counterpart of the MBR active flag.
        part.bootable = p.flags & (1 << 2) != 0;
        out.push(part);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    /// A header + entry array with correct CRCs but hostile contents.
    fn handmade(entries: &[(u64, u64)], count: u32, entry_size: u32) -> Vec<u8> {
        let total = 256u64;
        let mut img = vec![0u8; total as usize * 512];
        let mut array = vec![0u8; (count * entry_size) as usize];
        for (i, (first, last)) in entries.iter().enumerate() {
            let e = &mut array[i * entry_size as usize..];
            e[..16].copy_from_slice(&[0x11; 16]);
            e[16..32].copy_from_slice(&[0x22; 16]);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
            e[56..58].copy_from_slice(&u16::from(b'n').to_le_bytes());
        }
        let mut write_header = |lba: u64, alt: u64, entries_lba: u64| {
            let mut h = vec![0u8; 92];
            h[..8].copy_from_slice(SIGNATURE);
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&lba.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[40..48].copy_from_slice(&40u64.to_le_bytes());
            h[48..56].copy_from_slice(&200u64.to_le_bytes());
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&count.to_le_bytes());
            h[84..88].copy_from_slice(&entry_size.to_le_bytes());
            h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
            let crc = crc32(&h);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            let at = (lba * 512) as usize;
            img[at..at + 92].copy_from_slice(&h);
            let at = (entries_lba * 512) as usize;
            img[at..at + array.len()].copy_from_slice(&array);
        };
        write_header(1, total - 1, 2);
        write_header(total - 1, 1, 210);
        img
    }

    fn run(img: Vec<u8>) -> (GptInfo, Vec<Partition>) {
        let len = img.len() as u64;
        probe(&mut DiskReader::new(Cursor::new(img), len), 512).expect("GPT present")
    }

    #[test]
    fn hostile_entries_with_valid_checksums() {
        let entries = [
            (0, u64::MAX),
            (50, 40),
            (u64::MAX, u64::MAX),
            (60, 70),
            (10, 20),
        ];
        let (info, parts) = run(handmade(&entries, 16, 128));
        assert!(info.primary_header_valid && info.backup_header_valid);
        let v: Vec<_> = parts
            .iter()
            .map(|p| (p.number, p.start_bytes / 512, p.size_bytes / 512))
            .collect();
        assert_eq!(v, vec![(4, 60, 11), (5, 10, 11)]);
        assert_eq!(parts[0].name.as_deref(), Some("n"));
        let count = |needle: &str| info.problems.iter().filter(|p| p.contains(needle)).count();
        assert_eq!(count("impossible LBAs"), 2, "{:?}", info.problems);
        assert_eq!(count("ends (LBA 40) before it starts"), 1);
        assert_eq!(count("outside the table's usable range"), 1);
    }

    #[test]
    fn larger_entries_are_repacked() {
        let (info, parts) = run(handmade(&[(60, 70), (80, 90)], 8, 256));
        assert_eq!(info.partition_entry_size, 256);
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        let v: Vec<_> = parts
            .iter()
            .map(|p| (p.number, p.start_bytes / 512, p.size_bytes / 512))
            .collect();
        assert_eq!(v, vec![(1, 60, 11), (2, 80, 11)]);
    }

    #[test]
    fn implausible_entry_geometry_invalidates_headers() {
        for (count, size) in [(2048, 128), (16, 100), (16, 2048), (16, 64)] {
            let mut img = handmade(&[], 16, 128);
            // Patch count/size and re-seal the CRC so only the geometry is wrong.
            for lba in [1usize, 255] {
                let h = &mut img[lba * 512..lba * 512 + 92];
                h[80..84].copy_from_slice(&u32::to_le_bytes(count));
                h[84..88].copy_from_slice(&u32::to_le_bytes(size));
                h[16..20].fill(0);
                let crc = crc32(h);
                h[16..20].copy_from_slice(&crc.to_le_bytes());
            }
            let (info, parts) = run(img);
            assert!(
                !info.primary_header_valid && !info.backup_header_valid,
                "{count}x{size}"
            );
            assert!(parts.is_empty());
        }
    }

    #[test]
    fn tiny_or_blank_sources_have_no_gpt() {
        let mut src = DiskReader::new(Cursor::new(vec![0u8; 1024]), 1024);
        assert!(probe(&mut src, 512).is_none());
        let mut src = DiskReader::new(Cursor::new(vec![0u8; 64 * 1024]), 64 * 1024);
        assert!(probe(&mut src, 512).is_none());
        assert!(!has_signature(&mut src, 512));
    }
}
