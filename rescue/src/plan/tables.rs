//! Partition table bytes for a target of another size. A GPT names its own location and its backup's
//! (the last sector), and the protective MBR records the disk size: restoring onto a larger or smaller
//! disk must move the backup to the new end, update the last usable LBA, and recompute the CRCs. The
//! partition entries themselves are kept byte for byte (their CRC does not change).

use crate::detect::io::{crc32, le32, le64};
use crate::image::TableRole;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the captured GPT header is damaged ({0}); restore the image onto a disk of the original size, or repair the table with gdisk afterwards")]
    BadHeader(String),
    #[error("partition {number} ends at LBA {end}, beyond the last usable LBA {last_usable} of a {target_size}-byte disk")]
    DoesNotFit {
        number: u32,
        end: u64,
        last_usable: u64,
        target_size: u64,
    },
}

/// Table structures to write: what each is, its byte offset on the target and its bytes, in an order that
/// leaves no valid-looking table until the last write lands (entry arrays, the backup header, the primary
/// header, LBA 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableWrites {
    pub writes: Vec<(TableRole, u64, Vec<u8>)>,
}

impl TableWrites {
    /// The offset and bytes of the structure `role`.
    pub fn get(&self, role: TableRole) -> Option<(u64, &[u8])> {
        self.writes
            .iter()
            .find(|(r, _, _)| *r == role)
            .map(|(_, at, bytes)| (*at, bytes.as_slice()))
    }
}

/// Rebuild a GPT for a disk of `target_size` bytes from the captured primary structures:
/// `lba0` (the protective MBR sector) and `primary` (from LBA 1: header sector, then the entry array).
pub fn relocate_gpt(
    lba0: &[u8],
    primary: &[u8],
    sector: u32,
    target_size: u64,
) -> Result<TableWrites, TableError> {
    let ls = sector as usize;
    let ls64 = u64::from(sector);
    if lba0.len() < 512 || primary.len() < ls || ls < 512 {
        return Err(TableError::BadHeader(
            "the captured table is shorter than one sector".into(),
        ));
    }
    let hdr = &primary[..ls];
    if &hdr[0..8] != b"EFI PART" {
        return Err(TableError::BadHeader("no \"EFI PART\" signature".into()));
    }
    let hdr_size = le32(hdr, 12) as usize;
    if !(92..=ls).contains(&hdr_size) {
        return Err(TableError::BadHeader(format!("header size {hdr_size}")));
    }
    let mut check = hdr[..hdr_size].to_vec();
    check[16..20].fill(0);
    if crc32(&check) != le32(hdr, 16) {
        return Err(TableError::BadHeader("header CRC mismatch".into()));
    }
    let entries_lba = le64(hdr, 72);
    let count = le32(hdr, 80) as usize;
    let entry_size = le32(hdr, 84) as usize;
    if entry_size < 128 || count > 65536 || entries_lba != 2 {
        return Err(TableError::BadHeader(format!(
            "unexpected entry array ({count} entries of {entry_size} bytes at LBA {entries_lba})"
        )));
    }
    let entries_len = count * entry_size;
    let entries_sectors = entries_len.div_ceil(ls) as u64;
    let entries = primary
        .get(ls..ls + entries_len)
        .ok_or_else(|| TableError::BadHeader("the captured entry array is incomplete".into()))?;
    if crc32(entries) != le32(hdr, 88) {
        return Err(TableError::BadHeader("entry array CRC mismatch".into()));
    }

    let total = target_size / ls64;
    if total < 2 * entries_sectors + 4 {
        return Err(TableError::DoesNotFit {
            number: 0,
            end: 2 * entries_sectors + 4,
            last_usable: 0,
            target_size,
        });
    }
    let backup_lba = total - 1;
    let backup_entries_lba = backup_lba - entries_sectors;
    let last_usable = backup_entries_lba - 1;
    for (i, e) in entries.chunks_exact(entry_size).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let end = le64(e, 40);
        if end > last_usable {
            return Err(TableError::DoesNotFit {
                number: i as u32 + 1,
                end,
                last_usable,
                target_size,
            });
        }
    }

    let header_for = |my_lba: u64, alternate: u64, entries_at: u64| -> Vec<u8> {
        let mut h = hdr.to_vec();
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[72..80].copy_from_slice(&entries_at.to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32(&h[..hdr_size]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut entries_out = entries.to_vec();
    entries_out.resize(entries_sectors as usize * ls, 0);

    // The protective entry spans the disk (capped at 32 bits); hybrid entries stay as they are.
    let mut mbr = lba0.to_vec();
    for slot in 0..4 {
        let e = 446 + slot * 16;
        if mbr[e + 4] == 0xEE {
            let size = u32::try_from(total - 1).unwrap_or(u32::MAX);
            mbr[e + 12..e + 16].copy_from_slice(&size.to_le_bytes());
        }
    }
    Ok(TableWrites {
        writes: vec![
            (
                TableRole::GptBackupEntries,
                backup_entries_lba * ls64,
                entries_out.clone(),
            ),
            (TableRole::GptPrimaryEntries, 2 * ls64, entries_out),
            (
                TableRole::GptBackupHeader,
                backup_lba * ls64,
                header_for(backup_lba, 1, backup_entries_lba),
            ),
            (
                TableRole::GptPrimaryHeader,
                ls64,
                header_for(1, backup_lba, 2),
            ),
            (TableRole::Mbr, 0, mbr),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sgdisk_verify(path: &std::path::Path) -> String {
        let out = Command::new("sgdisk")
            .arg("-v")
            .arg(path)
            .output()
            .expect("sgdisk (gdisk package) is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn moved_gpt_is_valid_on_larger_and_smaller_disks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        std::fs::File::create(&src)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let st = Command::new("sgdisk")
            .args(["-n", "1:2048:+8M", "-n", "2:0:+16M", "-t", "1:EF00"])
            .arg(&src)
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        let data = std::fs::read(&src).unwrap();
        for size in [128u64 << 20, 40 << 20, 64 << 20] {
            let t = relocate_gpt(&data[..512], &data[512..512 * 34], 512, size).unwrap();
            let dst = dir.path().join(format!("dst{size}.img"));
            let mut img = vec![0u8; size as usize];
            for (_, off, bytes) in &t.writes {
                img[*off as usize..*off as usize + bytes.len()].copy_from_slice(bytes);
            }
            std::fs::write(&dst, &img).unwrap();
            let report = sgdisk_verify(&dst);
            assert!(
                report.contains("No problems found"),
                "size {size}: {report}"
            );
        }
    }

    #[test]
    fn a_partition_beyond_the_new_end_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        std::fs::File::create(&src)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        Command::new("sgdisk")
            .args(["-n", "1:2048:+60M"])
            .arg(&src)
            .output()
            .unwrap();
        let data = std::fs::read(&src).unwrap();
        let e = relocate_gpt(&data[..512], &data[512..512 * 34], 512, 32 << 20).unwrap_err();
        assert!(matches!(e, TableError::DoesNotFit { number: 1, .. }), "{e}");
    }

    #[test]
    fn damaged_headers_are_refused() {
        let mut primary = vec![0u8; 512 * 33];
        primary[..8].copy_from_slice(b"EFI PART");
        assert!(relocate_gpt(&[0u8; 512], &primary, 512, 1 << 30).is_err());
        assert!(relocate_gpt(&[0u8; 512], &[0u8; 100], 512, 1 << 30).is_err());
    }
}
