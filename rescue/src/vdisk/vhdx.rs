//! Microsoft's VHDX (Hyper-V since Windows Server 2012), read: two 4 KiB headers at 64 and 128 KiB (the
//! valid one with the higher sequence number is current), two region tables at 192 and 256 KiB naming the
//! block allocation table (BAT) and the metadata region, each structure guarded by a CRC-32C; the
//! metadata gives the block size, the disk size and the logical sector size; the BAT has one 64-bit
//! entry per payload block (a state and a 1 MiB-aligned file offset), with a sector-bitmap entry after
//! every `chunk_ratio` of them. All little-endian; GUIDs in Microsoft's mixed-endian layout.
//!
//! Refused by name: a differencing disk (it needs its parent), and a log that still holds entries (the
//! program that had the disk open did not close it; its metadata is not to be trusted until the log is
//! replayed, which opening it read-write once in Hyper-V or QEMU does).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{invalid, le16, le32, le64, read_blocks, read_table, unsupported, Place};
use crate::image::ReadAt;

const FILE_ID: &[u8; 8] = b"vhdxfile";
const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
const HEADERS: [u64; 2] = [64 * KIB, 128 * KIB];
const REGIONS: [u64; 2] = [192 * KIB, 256 * KIB];

/// A GUID as VHDX stores it: the first three fields little-endian, the last eight bytes as they are.
pub(crate) const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

pub(crate) const BAT_GUID: [u8; 16] = guid(
    0x2DC2_7766,
    0xF623,
    0x4200,
    [0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08],
);
pub(crate) const METADATA_GUID: [u8; 16] = guid(
    0x8B7C_A206,
    0x4790,
    0x4B9A,
    [0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E],
);
pub(crate) const FILE_PARAMETERS: [u8; 16] = guid(
    0xCAA1_6737,
    0xFA36,
    0x4D43,
    [0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B],
);
pub(crate) const DISK_SIZE: [u8; 16] = guid(
    0x2FA5_4224,
    0xCD1B,
    0x4876,
    [0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8],
);
pub(crate) const LOGICAL_SECTOR: [u8; 16] = guid(
    0x8141_BF1D,
    0xA96F,
    0x4709,
    [0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F],
);

const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;

/// CRC-32C (Castagnoli) of `b` with the 4 bytes at `field` taken as zero, as VHDX checksums its
/// structures.
pub(crate) fn crc32c(b: &[u8], field: usize) -> u32 {
    let mut copy = b.to_vec();
    copy[field..field + 4].fill(0);
    !crate::units::crc::crc32c(!0, &copy)
}

pub fn is_vhdx(head: &[u8]) -> bool {
    head.get(..8) == Some(&FILE_ID[..])
}

pub struct Vhdx {
    file: Arc<dyn ReadAt>,
    path: PathBuf,
    size: u64,
    block: u64,
    chunk_ratio: u64,
    bat: Vec<u64>,
}

/// The structure of `len` bytes at `at`, if it has `signature` and its CRC-32C (at byte 4) is right.
fn checked(file: &dyn ReadAt, at: u64, len: usize, signature: &[u8; 4]) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, at).ok()?;
    (&b[..4] == signature && crc32c(&b, 4) == le32(&b, 4)).then_some(b)
}

impl Vhdx {
    pub fn open(file: Arc<dyn ReadAt>, path: &Path) -> io::Result<Vhdx> {
        let file_size = file.size()?;
        if file_size < MIB {
            return Err(invalid(
                path,
                "shorter than the 1 MiB a VHDX's headers take",
            ));
        }
        let header = HEADERS
            .iter()
            .filter_map(|&at| checked(file.as_ref(), at, 4096, b"head"))
            .max_by_key(|h| le64(h, 8))
            .ok_or_else(|| {
                invalid(
                    path,
                    "both VHDX headers (at 64 and 128 KiB) are damaged (signature or CRC-32C)",
                )
            })?;
        if le16(&header, 66) != 1 {
            return Err(unsupported(
                path,
                format!("VHDX version {}", le16(&header, 66)),
            ));
        }
        if header[48..64].iter().any(|&b| b != 0) {
            return Err(unsupported(
                path,
                "its log holds changes not yet written into it (the program that had it open did \
                 not close it): open it read-write once (Hyper-V, or `qemu-img check -r all` on a \
                 copy) so the log is replayed",
            ));
        }
        let regions = REGIONS
            .iter()
            .find_map(|&at| checked(file.as_ref(), at, 64 * KIB as usize, b"regi"))
            .ok_or_else(|| {
                invalid(
                    path,
                    "both VHDX region tables (at 192 and 256 KiB) are damaged",
                )
            })?;
        let count = (le32(&regions, 8) as usize).min((regions.len() - 16) / 32);
        let (mut bat_at, mut meta_at) = (None, None);
        for e in regions[16..16 + count * 32].chunks_exact(32) {
            let place = (le64(e, 16), u64::from(le32(e, 24)));
            if e[..16] == BAT_GUID {
                bat_at = Some(place);
            } else if e[..16] == METADATA_GUID {
                meta_at = Some(place);
            } else if le32(e, 28) & 1 != 0 {
                return Err(unsupported(
                    path,
                    "a region it requires that this program does not know",
                ));
            }
        }
        let (Some((bat_off, bat_len)), Some((meta_off, meta_len))) = (bat_at, meta_at) else {
            return Err(invalid(
                path,
                "its region table lacks the BAT or the metadata region",
            ));
        };
        for (what, off, len) in [
            ("BAT", bat_off, bat_len),
            ("metadata region", meta_off, meta_len),
        ] {
            if off.saturating_add(len) > file_size || off % MIB != 0 {
                return Err(invalid(
                    path,
                    format!("its {what} at byte {off} is misaligned or past the end"),
                ));
            }
        }
        let meta_len = meta_len.min(MIB);
        let mut meta = vec![0u8; meta_len as usize];
        file.read_exact_at(&mut meta, meta_off)?;
        if meta.len() < 32 || &meta[..8] != b"metadata" {
            return Err(invalid(
                path,
                "its metadata region has no `metadata` signature",
            ));
        }
        let item = |id: &[u8; 16], len: usize| -> io::Result<&[u8]> {
            let n = (le16(&meta, 10) as usize).min((meta.len() - 32) / 32);
            let e = meta[32..32 + n * 32]
                .chunks_exact(32)
                .find(|e| &e[..16] == id)
                .ok_or_else(|| invalid(path, "its metadata lacks a required item"))?;
            let (at, l) = (le32(e, 16) as usize, le32(e, 20) as usize);
            if l < len || at.saturating_add(len) > meta.len() {
                return Err(invalid(path, "a metadata item lies outside its region"));
            }
            Ok(&meta[at..at + len])
        };
        let params = item(&FILE_PARAMETERS, 8)?;
        let block = u64::from(le32(params, 0));
        if le32(params, 4) & 2 != 0 {
            return Err(unsupported(
                path,
                "a differencing VHDX holds only the changes over its parent disk; merge it first \
                 (Hyper-V's Edit Disk, or qemu-img convert)",
            ));
        }
        let size = le64(item(&DISK_SIZE, 8)?, 0);
        let sector = u64::from(le32(item(&LOGICAL_SECTOR, 4)?, 0));
        if !block.is_power_of_two() || !(MIB..=256 * MIB).contains(&block) {
            return Err(invalid(
                path,
                format!("block size {block} (1 to 256 MiB, a power of two)"),
            ));
        }
        if sector != 512 && sector != 4096 {
            return Err(invalid(path, format!("logical sector size {sector}")));
        }
        let chunk_ratio = (1u64 << 23) * sector / block;
        let blocks = size.div_ceil(block);
        let entries = if blocks == 0 {
            0
        } else {
            blocks + (blocks - 1) / chunk_ratio
        };
        if entries * 8 > bat_len {
            return Err(invalid(
                path,
                format!(
                    "its BAT holds {} entries; a disk of {size} bytes needs {entries}",
                    bat_len / 8
                ),
            ));
        }
        let raw = read_table(file.as_ref(), path, "BAT", bat_off, entries, 8)?;
        let bat = raw.chunks_exact(8).map(|c| le64(c, 0)).collect();
        Ok(Vhdx {
            file,
            path: path.to_path_buf(),
            size,
            block,
            chunk_ratio,
            bat,
        })
    }

    pub fn notes(&self) -> Vec<String> {
        vec![format!("VHDX, {} MiB blocks", self.block / MIB)]
    }
}

impl ReadAt for Vhdx {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_blocks(
            self.file.as_ref(),
            &self.path,
            (self.size, self.block),
            buf,
            offset,
            |index| {
                let entry = self.bat[(index + index / self.chunk_ratio) as usize];
                match entry & 7 {
                    PAYLOAD_FULLY_PRESENT => Ok(Place::At((entry >> 20) * MIB)),
                    PAYLOAD_PARTIALLY_PRESENT => Err(invalid(
                        &self.path,
                        format!(
                        "block {index} is partially present, which only a differencing disk may be"
                    ),
                    )),
                    // Not present, undefined, zero, unmapped: zeros.
                    _ => Ok(Place::Zeros),
                }
            },
        )
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}
