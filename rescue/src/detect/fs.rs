//! Filesystem (and container) identification by superblock magic, with label and UUID.
//!
//! All reads go through a [`RangeReader`], so a probe never looks past the partition it was given.
//! Order matters: BitLocker, NTFS and exFAT boot sectors carry a jump instruction and a BPB-like
//! layout that a lenient FAT check could accept, so their OEM-name magics are tested first, and
//! FAT's own check is strict (jump, geometry, media byte).

use std::io::{Read, Seek};

use super::io::{
    array, has, le16, le32, le64, slice, text_field, utf16_field, uuid_be, RangeReader,
};
use super::FsKind;

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FsInfo {
    pub kind: FsKind,
    pub label: Option<String>,
    pub uuid: Option<String>,
}

impl FsInfo {
    fn new(kind: FsKind, label: Option<String>, uuid: Option<String>) -> Self {
        FsInfo { kind, label, uuid }
    }
}

/// Directory bytes scanned for a FAT/exFAT volume label (the label entry comes first in practice).
const MAX_DIR_SCAN: u64 = 64 * 1024;

/// Identifies the filesystem in `r`. `Err(())` when a read failed (the source has recorded it).
pub(crate) fn probe<R: Read + Seek>(r: &mut RangeReader<R>) -> Result<Option<FsInfo>, ()> {
    let head_len = r.len().min(4096) as usize;
    if head_len < 512 {
        return Ok(None);
    }
    let Some(head) = r.read(0, head_len)? else {
        return Ok(None);
    };
    if has(&head, 0, b"LUKS\xba\xbe") {
        // Label only exists in LUKS2 (offset 24); the UUID is text at 168 in both versions.
        let label = if u16::from_be_bytes(array(&head, 6)) >= 2 {
            text_field(slice(&head, 24, 48))
        } else {
            None
        };
        return Ok(Some(FsInfo::new(
            FsKind::Luks,
            label,
            text_field(slice(&head, 168, 40)),
        )));
    }
    if has(&head, 3, b"-FVE-FS-") {
        return Ok(Some(FsInfo::new(FsKind::Bitlocker, None, None)));
    }
    if has(&head, 3, b"NTFS    ") {
        let uuid = Some(format!("{:016X}", le64(&head, 0x48)));
        return Ok(Some(FsInfo::new(FsKind::Ntfs, ntfs_label(r, &head)?, uuid)));
    }
    if has(&head, 3, b"EXFAT   ") {
        let uuid = Some(serial_dashed(le32(&head, 100)));
        return Ok(Some(FsInfo::new(
            FsKind::Exfat,
            exfat_label(r, &head)?,
            uuid,
        )));
    }
    if let Some(info) = fat(r, &head)? {
        return Ok(Some(info));
    }
    if has(&head, 0, b"XFSB") {
        let info = FsInfo::new(
            FsKind::Xfs,
            text_field(slice(&head, 108, 12)),
            uuid_be(slice(&head, 32, 16)),
        );
        return Ok(Some(info));
    }
    if let Some(info) = ext(&head) {
        return Ok(Some(info));
    }
    if let Some(sb) = r.read(0x10000, 0x22B + 256)? {
        if has(&sb, 0x40, b"_BHRfS_M") {
            let info = FsInfo::new(
                FsKind::Btrfs,
                text_field(slice(&sb, 0x12B, 256)),
                uuid_be(slice(&sb, 0x20, 16)),
            );
            return Ok(Some(info));
        }
    }
    if let Some(info) = swap(r, &head)? {
        return Ok(Some(info));
    }
    Ok(lvm(&head))
}

fn serial_dashed(serial: u32) -> String {
    format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF)
}

fn ext(head: &[u8]) -> Option<FsInfo> {
    let sb = slice(head, 1024, 1024);
    // s_log_block_size above 6 (64 KiB blocks) would be a stray 0xEF53, not a superblock.
    if le16(sb, 0x38) != 0xEF53 || le32(sb, 0x18) > 6 {
        return None;
    }
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    const HAS_JOURNAL: u32 = 0x4;
    const EXTENTS: u32 = 0x40;
    const BIT64: u32 = 0x80;
    const FLEX_BG: u32 = 0x200;
    let kind = if incompat & (EXTENTS | BIT64 | FLEX_BG) != 0 {
        FsKind::Ext4
    } else if compat & HAS_JOURNAL != 0 {
        FsKind::Ext3
    } else {
        FsKind::Ext2
    };
    Some(FsInfo::new(
        kind,
        text_field(slice(sb, 0x78, 16)),
        uuid_be(slice(sb, 0x68, 16)),
    ))
}

/// FAT12/16/32, recognised by a plausible BIOS parameter block.
fn fat<R: Read + Seek>(r: &mut RangeReader<R>, head: &[u8]) -> Result<Option<FsInfo>, ()> {
    let jump_ok = (head[0] == 0xEB && head[2] == 0x90) || head[0] == 0xE9;
    let bps = u64::from(le16(head, 11));
    let spc = u64::from(head[13]);
    let reserved = u64::from(le16(head, 14));
    let fats = u64::from(head[16]);
    let root_entries = u64::from(le16(head, 17));
    let media = head[21];
    let fat16_size = u64::from(le16(head, 22));
    let fat32_size = u64::from(le32(head, 36));
    let total = match le16(head, 19) {
        0 => u64::from(le32(head, 32)),
        n => u64::from(n),
    };
    let fat_size = if fat16_size != 0 {
        fat16_size
    } else {
        fat32_size
    };
    let plausible = jump_ok
        && matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc != 0
        && spc.is_power_of_two()
        && reserved >= 1
        && (1..=4).contains(&fats)
        && (media == 0xF0 || media >= 0xF8)
        && total != 0
        && fat_size != 0;
    if !plausible {
        return Ok(None);
    }
    let is_fat32 = fat16_size == 0 && root_entries == 0;
    // Extended boot record fields sit after the BPB, which is longer on FAT32.
    let ebr = if is_fat32 { 64 } else { 36 };
    let has_ebr = matches!(head[ebr + 2], 0x28 | 0x29);
    let uuid = has_ebr.then(|| serial_dashed(le32(head, ebr + 3)));
    let boot_label = if has_ebr && head[ebr + 2] == 0x29 {
        text_field(slice(head, ebr + 7, 11))
    } else {
        None
    };
    // Like blkid, prefer the root directory's volume-label entry: Windows renames only update it.
    let first_data = reserved + fats * fat_size;
    let (dir_off, dir_len) = if is_fat32 {
        let root_cluster = u64::from(le32(head, 44)).max(2);
        ((first_data + (root_cluster - 2) * spc) * bps, spc * bps)
    } else {
        (first_data * bps, root_entries * 32)
    };
    let dir_label = match r.read(dir_off, dir_len.min(MAX_DIR_SCAN) as usize)? {
        Some(dir) => fat_dir_label(&dir),
        None => None,
    };
    let label = dir_label.or(boot_label).filter(|l| l != "NO NAME");
    Ok(Some(FsInfo::new(FsKind::Vfat, label, uuid)))
}

fn fat_dir_label(dir: &[u8]) -> Option<String> {
    for e in dir.chunks_exact(32) {
        match e[0] {
            0x00 => return None,
            0xE5 => continue,
            _ => {}
        }
        let attr = e[11];
        if attr != 0x0F && attr & 0x08 != 0 && attr & 0x10 == 0 {
            return text_field(&e[..11]);
        }
    }
    None
}

fn exfat_label<R: Read + Seek>(r: &mut RangeReader<R>, head: &[u8]) -> Result<Option<String>, ()> {
    let sector_shift = u32::from(head[108]);
    let cluster_shift = u32::from(head[109]);
    if !(9..=12).contains(&sector_shift) || cluster_shift > 25 {
        return Ok(None);
    }
    let heap = u64::from(le32(head, 88));
    let root = u64::from(le32(head, 96));
    if root < 2 {
        return Ok(None);
    }
    let offset = (heap + ((root - 2) << cluster_shift)) << sector_shift;
    let len = (1u64 << (cluster_shift + sector_shift)).min(MAX_DIR_SCAN);
    let Some(dir) = r.read(offset, len as usize)? else {
        return Ok(None);
    };
    for e in dir.chunks_exact(32) {
        match e[0] {
            0x00 => break,
            0x83 => {
                let chars = usize::from(e[1]).min(11);
                return Ok(utf16_field(slice(e, 2, chars * 2)));
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The NTFS volume label lives in the `$VOLUME_NAME` attribute of MFT record 3 (`$Volume`).
fn ntfs_label<R: Read + Seek>(r: &mut RangeReader<R>, head: &[u8]) -> Result<Option<String>, ()> {
    let bps = u64::from(le16(head, 11));
    let spc_raw = head[13];
    // Cluster sizes above 64 KiB are stored as a negative power of two.
    let spc = if spc_raw > 0x80 {
        1u64 << (256 - u32::from(spc_raw)).min(16)
    } else {
        u64::from(spc_raw)
    };
    let cluster = bps * spc;
    let per_record = head[0x40] as i8;
    let record_size = if per_record < 0 {
        1u64 << u32::from(per_record.unsigned_abs()).min(20)
    } else {
        u64::try_from(per_record).unwrap_or(0) * cluster
    };
    if !(256..=65536).contains(&record_size) || !matches!(bps, 256..=4096) || cluster == 0 {
        return Ok(None);
    }
    let Some(offset) = le64(head, 0x30)
        .checked_mul(cluster)
        .and_then(|o| o.checked_add(3 * record_size))
    else {
        return Ok(None);
    };
    let Some(mut rec) = r.read(offset, record_size as usize)? else {
        return Ok(None);
    };
    if !has(&rec, 0, b"FILE") {
        return Ok(None);
    }
    // Undo the update-sequence fixups: the last two bytes of every 512-byte stride were swapped
    // out on write and saved in the update sequence array.
    let usa_off = usize::from(le16(&rec, 4));
    let usa_count = usize::from(le16(&rec, 6));
    for i in 1..usa_count {
        let end = i * 512;
        let saved: [u8; 2] = array(&rec, usa_off + 2 * i);
        if let Some(dst) = rec.get_mut(end - 2..end) {
            dst.copy_from_slice(&saved);
        }
    }
    let mut off = usize::from(le16(&rec, 0x14));
    for _ in 0..rec.len() / 16 {
        let kind = le32(&rec, off);
        let len = le32(&rec, off + 4) as usize;
        if kind == 0xFFFF_FFFF || len < 16 {
            break;
        }
        if kind == 0x60 && rec.get(off + 8) == Some(&0) {
            let value_len = le32(&rec, off + 16) as usize;
            let value_off = usize::from(le16(&rec, off + 20));
            return Ok(utf16_field(slice(&rec, off + value_off, value_len)));
        }
        off += len;
    }
    Ok(None)
}

fn swap<R: Read + Seek>(r: &mut RangeReader<R>, head: &[u8]) -> Result<Option<FsInfo>, ()> {
    // The magic ends the first page, whose size depends on the machine that ran mkswap.
    for page in [4096u64, 8192, 16384, 65536] {
        let Some(magic) = r.read(page - 10, 10)? else {
            break;
        };
        if magic == b"SWAPSPACE2" {
            let info = FsInfo::new(
                FsKind::Swap,
                text_field(slice(head, 1024 + 28, 16)),
                uuid_be(slice(head, 1024 + 12, 16)),
            );
            return Ok(Some(info));
        }
        if magic == b"SWAP-SPACE" {
            return Ok(Some(FsInfo::new(FsKind::Swap, None, None)));
        }
    }
    Ok(None)
}

/// An LVM2 physical volume: a "LABELONE" label in one of the first four 512-byte sectors.
fn lvm(head: &[u8]) -> Option<FsInfo> {
    (0..4).map(|i| i * 512).find_map(|off| {
        if !has(head, off, b"LABELONE") || !has(head, off + 24, b"LVM2 001") {
            return None;
        }
        let pv = off + le32(head, off + 20) as usize;
        let raw = slice(head, pv, 32);
        let uuid = (raw.len() == 32 && raw.iter().all(u8::is_ascii_alphanumeric)).then(|| {
            // LVM prints PV UUIDs in groups of 6-4-4-4-4-4-6.
            let s = String::from_utf8_lossy(raw);
            let mut parts = Vec::new();
            let mut at = 0;
            for n in [6, 4, 4, 4, 4, 4, 6] {
                parts.push(&s[at..at + n]);
                at += n;
            }
            parts.join("-")
        });
        Some(FsInfo::new(FsKind::Lvm, None, uuid))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::super::io::DiskReader;
    use super::*;
    use std::io::Cursor;

    fn probe_bytes(b: Vec<u8>) -> Option<FsInfo> {
        let len = b.len() as u64;
        let mut src = DiskReader::new(Cursor::new(b), len);
        let mut r = RangeReader::new(&mut src, 0, len);
        probe(&mut r).expect("in-memory reads cannot fail")
    }

    #[test]
    fn synthetic_superblocks() {
        let mut b = vec![0u8; 1 << 20];
        b[..4].copy_from_slice(b"XFSB");
        b[32..48].copy_from_slice(&[0x11; 16]);
        b[108..113].copy_from_slice(b"xfsvl");
        let i = probe_bytes(b).unwrap();
        assert_eq!((i.kind, i.label.as_deref()), (FsKind::Xfs, Some("xfsvl")));
        assert_eq!(
            i.uuid.as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );

        let mut b = vec![0u8; 1 << 20];
        b[0x10040..0x10048].copy_from_slice(b"_BHRfS_M");
        b[0x10020..0x10030].copy_from_slice(&[0xab; 16]);
        b[0x1012B..0x1012F].copy_from_slice(b"data");
        let i = probe_bytes(b).unwrap();
        assert_eq!((i.kind, i.label.as_deref()), (FsKind::Btrfs, Some("data")));
        assert!(i.uuid.unwrap().starts_with("abababab-"));

        let mut b = vec![0u8; 8192];
        b[..6].copy_from_slice(b"LUKS\xba\xbe");
        b[7] = 2;
        b[24..29].copy_from_slice(b"vault");
        b[168..204].copy_from_slice(b"0a1b2c3d-0000-4000-8000-123456789abc");
        let i = probe_bytes(b).unwrap();
        assert_eq!(i.kind, FsKind::Luks);
        assert_eq!(i.label.as_deref(), Some("vault"));
        assert_eq!(
            i.uuid.as_deref(),
            Some("0a1b2c3d-0000-4000-8000-123456789abc")
        );

        let mut b = vec![0u8; 8192];
        b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
        b[3..11].copy_from_slice(b"-FVE-FS-");
        // A BPB that would pass as FAT must still be reported as BitLocker.
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 8;
        b[14] = 1;
        b[16] = 2;
        b[21] = 0xF8;
        b[22] = 1;
        b[19] = 100;
        assert_eq!(probe_bytes(b).unwrap().kind, FsKind::Bitlocker);

        let mut b = vec![0u8; 8192];
        b[512..520].copy_from_slice(b"LABELONE");
        b[512 + 20] = 32;
        b[512 + 24..512 + 32].copy_from_slice(b"LVM2 001");
        b[512 + 32..512 + 64].copy_from_slice(b"abcdefghijklmnopqrstuvwxyz012345");
        let i = probe_bytes(b).unwrap();
        assert_eq!(i.kind, FsKind::Lvm);
        assert_eq!(
            i.uuid.as_deref(),
            Some("abcdef-ghij-klmn-opqr-stuv-wxyz-012345")
        );

        let mut b = vec![0u8; 4096];
        b[4086..].copy_from_slice(b"SWAPSPACE2");
        b[1024 + 28..1024 + 32].copy_from_slice(b"swp1");
        assert_eq!(probe_bytes(b).unwrap().label.as_deref(), Some("swp1"));
    }

    #[test]
    fn ext_feature_classification() {
        let sb = |compat: u32, incompat: u32| {
            let mut b = vec![0u8; 4096];
            b[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
            b[1024 + 0x5C..1024 + 0x60].copy_from_slice(&compat.to_le_bytes());
            b[1024 + 0x60..1024 + 0x64].copy_from_slice(&incompat.to_le_bytes());
            b
        };
        assert_eq!(probe_bytes(sb(0, 0x2)).unwrap().kind, FsKind::Ext2);
        assert_eq!(probe_bytes(sb(0x4, 0x2)).unwrap().kind, FsKind::Ext3);
        assert_eq!(probe_bytes(sb(0x4, 0x2C2)).unwrap().kind, FsKind::Ext4);
        assert_eq!(probe_bytes(sb(0, 0x200)).unwrap().kind, FsKind::Ext4);
    }

    #[test]
    fn small_or_blank_regions() {
        assert_eq!(probe_bytes(vec![0u8; 100]), None);
        assert_eq!(probe_bytes(vec![0u8; 1 << 17]), None);
        assert_eq!(probe_bytes(vec![0xFF; 1 << 17]), None);
    }

    #[test]
    fn probes_stay_inside_the_region() {
        // An ext superblock just past the end of a 1 KiB region must not be seen.
        let mut b = vec![0u8; 4096];
        b[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        let mut src = DiskReader::new(Cursor::new(b), 4096);
        let mut r = RangeReader::new(&mut src, 0, 1024);
        assert_eq!(probe(&mut r).unwrap(), None);
        let mut r = RangeReader::new(&mut src, 0, 2048);
        assert_eq!(probe(&mut r).unwrap().unwrap().kind, FsKind::Ext2);
    }
}
