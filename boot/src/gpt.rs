//! The GUID partition table, written directly: a protective MBR, the primary header and entry array at the
//! start, the backup array and header at the end. Written by hand rather than with the `gpt` crate because
//! that crate assumes nothing about the sector size (it must be told) and `add_partition(.., None)` does
//! not align partitions; here every field is chosen by us, so two builds are byte-identical.

use std::io::{self, Seek, SeekFrom, Write};

/// The stick is always 512-byte sectors: USB sticks present 512-byte logical blocks.
pub const SECTOR: u64 = 512;
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
/// Sectors taken by the 128 × 128-byte entry array.
const ARRAY_SECTORS: u64 = (ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;

/// A GUID in the byte order of its text form (RFC 4122); GPT stores the first three fields little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// EFI System Partition.
    pub const ESP: Guid = Guid([
        0xC1, 0x2A, 0x73, 0x28, 0xF8, 0x1F, 0x11, 0xD2, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9,
        0x3B,
    ]);
    /// Microsoft basic data: the type Windows and macOS mount a FAT data partition from.
    pub const BASIC_DATA: Guid = Guid([
        0xEB, 0xD0, 0xA0, 0xA2, 0xB9, 0xE5, 0x44, 0x33, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99,
        0xC7,
    ]);
    /// Linux filesystem data (an ext4 data partition).
    pub const LINUX_DATA: Guid = Guid([
        0x0F, 0xC6, 0x3D, 0xAF, 0x84, 0x83, 0x47, 0x72, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D,
        0xE4,
    ]);
    /// BIOS boot partition: GRUB's i386-pc core image ("Hah!IdontNeedEFI").
    pub const BIOS_BOOT: Guid = Guid([
        0x21, 0x68, 0x61, 0x48, 0x64, 0x49, 0x6E, 0x6F, 0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46,
        0x49,
    ]);

    /// A version-4-shaped GUID from hash bytes: deterministic, yet valid for tools that check the variant.
    pub fn from_hash(bytes: &[u8; 32]) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&bytes[..16]);
        g[6] = (g[6] & 0x0F) | 0x40;
        g[8] = (g[8] & 0x3F) | 0x80;
        Guid(g)
    }

    /// The on-disk (mixed-endian) encoding.
    pub fn to_disk(self) -> [u8; 16] {
        let b = self.0;
        let mut d = b;
        d[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        d[4..6].copy_from_slice(&[b[5], b[4]]);
        d[6..8].copy_from_slice(&[b[7], b[6]]);
        d
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Partition {
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as GPT stores it.
    pub last_lba: u64,
    pub name: String,
}

impl Partition {
    pub fn byte_range(&self) -> (u64, u64) {
        (
            self.first_lba * SECTOR,
            (self.last_lba + 1 - self.first_lba) * SECTOR,
        )
    }
}

/// First and last LBA a partition may use on a disk of `total_sectors`.
pub fn usable(total_sectors: u64) -> (u64, u64) {
    (2 + ARRAY_SECTORS, total_sectors - 2 - ARRAY_SECTORS)
}

fn entry_array(parts: &[Partition]) -> Vec<u8> {
    let mut a = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (p, e) in parts.iter().zip(a.chunks_mut(ENTRY_SIZE as usize)) {
        e[0..16].copy_from_slice(&p.type_guid.to_disk());
        e[16..32].copy_from_slice(&p.guid.to_disk());
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        // Attributes (48..56) stay zero.
        for (i, u) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
    }
    a
}

fn header(disk: Guid, total: u64, backup: bool, array_crc: u32) -> [u8; SECTOR as usize] {
    let last = total - 1;
    let (my_lba, alt_lba, array_lba) = if backup {
        (last, 1, last - ARRAY_SECTORS)
    } else {
        (1, last, 2)
    };
    let (first_usable, last_usable) = usable(total);
    let mut h = [0u8; SECTOR as usize];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my_lba.to_le_bytes());
    h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
    h[40..48].copy_from_slice(&first_usable.to_le_bytes());
    h[48..56].copy_from_slice(&last_usable.to_le_bytes());
    h[56..72].copy_from_slice(&disk.to_disk());
    h[72..80].copy_from_slice(&array_lba.to_le_bytes());
    h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
    h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
    h[88..92].copy_from_slice(&array_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The protective MBR alone: one 0xEE entry over the whole disk and no boot code.
pub fn protective_mbr(total: u64) -> [u8; SECTOR as usize] {
    let mut m = [0u8; SECTOR as usize];
    let e = &mut m[446..462];
    // Status 0, CHS start 0/0/2, type 0xEE, CHS end saturated: what the UEFI spec asks of a protective MBR.
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = 0xEE;
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(total - 1).unwrap_or(u32::MAX);
    e[12..16].copy_from_slice(&size.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

/// Writes the protective MBR and both GPT copies for a disk of `total_sectors` onto `out`.
pub fn write_gpt<W: Write + Seek>(
    out: &mut W,
    total_sectors: u64,
    disk_guid: Guid,
    parts: &[Partition],
) -> io::Result<()> {
    let array = entry_array(parts);
    let array_crc = crc32fast::hash(&array);
    let last = total_sectors - 1;
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&protective_mbr(total_sectors))?;
    out.write_all(&header(disk_guid, total_sectors, false, array_crc))?;
    out.write_all(&array)?;
    out.seek(SeekFrom::Start((last - ARRAY_SECTORS) * SECTOR))?;
    out.write_all(&array)?;
    out.write_all(&header(disk_guid, total_sectors, true, array_crc))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_and_disk_order() {
        assert_eq!(
            Guid::ESP.to_string(),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
        assert_eq!(
            &Guid::ESP.to_disk()[..8],
            &[0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11]
        );
        let g = Guid::from_hash(&[0xFF; 32]);
        assert_eq!(g.0[6] >> 4, 4);
        assert_eq!(g.0[8] >> 6, 0b10);
        assert_eq!(
            Guid::BIOS_BOOT.to_string(),
            "21686148-6449-6E6F-744E-656564454649"
        );
        assert_eq!(
            Guid::LINUX_DATA.to_string(),
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        );
    }
}
