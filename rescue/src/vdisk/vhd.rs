//! Microsoft's VHD (Virtual PC, Hyper-V before VHDX, Azure), read: a 512-byte big-endian footer at the
//! end of the file (and a copy at its start for dynamic disks); a fixed disk is the raw disk followed by
//! the footer, a dynamic one a header (`cxsparse`), a block allocation table of sector numbers, and
//! blocks each made of a sector bitmap and the block's data. Differencing disks need their parent and
//! are refused.
//!
//! The disk's size: Virtual PC sized disks by their CHS geometry, Hyper-V and most tools since by the
//! footer's `current_size`. As QEMU does, `current_size` is taken when the creator is one that means it
//! (`win `, `qem2`, `d2v `, `CTXS`, `tap\0`, `wa\0\0`) or the geometry is the largest there is, and the
//! geometry otherwise. The sector bitmaps are not needed to read a fixed or dynamic disk (QEMU ignores
//! them too): unwritten sectors of an allocated block hold zeros.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{be16, be32, be64, invalid, read_blocks, read_table, unsupported, Place};
use crate::image::ReadAt;

const COOKIE: &[u8; 8] = b"conectix";
const DYNAMIC_COOKIE: &[u8; 8] = b"cxsparse";
const FOOTER: u64 = 512;
const UNALLOCATED: u32 = 0xFFFF_FFFF;

/// The one's complement of the byte sum, the checksum field (4 bytes at `field`) taken as zero.
pub(crate) fn checksum(b: &[u8], field: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)));
    !sum
}

/// Whether the file's last 512 bytes (or, for a dynamic disk, its first) are a VHD footer.
pub fn is_vhd(head: &[u8], tail: &[u8]) -> bool {
    tail.get(..8) == Some(&COOKIE[..]) || head.get(..8) == Some(&COOKIE[..])
}

#[derive(Debug)]
enum Kind {
    Fixed,
    /// The block allocation table (sector numbers), and the block size.
    Dynamic {
        bat: Vec<u32>,
        block: u64,
        bitmap: u64,
    },
}

pub struct Vhd {
    file: Arc<dyn ReadAt>,
    path: PathBuf,
    size: u64,
    kind: Kind,
    creator: String,
}

impl Vhd {
    pub fn open(file: Arc<dyn ReadAt>, path: &Path) -> io::Result<Vhd> {
        let file_size = file.size()?;
        if file_size < FOOTER {
            return Err(invalid(path, "shorter than a VHD footer"));
        }
        let mut footer = [0u8; 512];
        file.read_exact_at(&mut footer, file_size - FOOTER)?;
        if &footer[..8] != COOKIE {
            // A dynamic disk whose trailing footer is lost still has its copy at the start.
            file.read_exact_at(&mut footer, 0)?;
            if &footer[..8] != COOKIE {
                return Err(invalid(
                    path,
                    "no VHD footer (`conectix`) at its end or start",
                ));
            }
        }
        if checksum(&footer, 64) != be32(&footer, 64) {
            return Err(invalid(
                path,
                "the VHD footer's checksum is wrong: the footer is damaged",
            ));
        }
        let creator: String = footer[28..32]
            .iter()
            .map(|&c| {
                if c.is_ascii_graphic() || c == b' ' {
                    c as char
                } else {
                    '.'
                }
            })
            .collect();
        let current = be64(&footer, 48);
        let (cyl, heads, spt) = (
            u64::from(be16(&footer, 56)),
            u64::from(footer[58]),
            u64::from(footer[59]),
        );
        let by_current = matches!(
            &footer[28..32],
            b"win " | b"qem2" | b"d2v " | b"CTXS" | b"tap\0" | b"wa\0\0"
        ) || (cyl == 65535 && heads == 16 && spt == 255);
        let size = if by_current {
            current
        } else {
            cyl * heads * spt * 512
        };
        let kind = match be32(&footer, 60) {
            2 => {
                if size > file_size - FOOTER {
                    return Err(invalid(
                        path,
                        format!(
                            "a fixed VHD of {size} bytes needs {} bytes of file; it has {file_size}",
                            size + FOOTER
                        ),
                    ));
                }
                Kind::Fixed
            }
            3 => dynamic(file.as_ref(), path, &footer, file_size, size)?,
            4 => return Err(unsupported(
                path,
                "a differencing VHD holds only the changes over its parent disk; merge it into \
                     its parent first (Hyper-V's Edit Disk, or qemu-img convert)",
            )),
            t => {
                return Err(invalid(
                    path,
                    format!("VHD disk type {t} (2 fixed, 3 dynamic, 4 differencing)"),
                ))
            }
        };
        Ok(Vhd {
            file,
            path: path.to_path_buf(),
            size,
            kind,
            creator,
        })
    }

    pub fn notes(&self) -> Vec<String> {
        vec![format!(
            "VHD, {}, made by `{}`",
            match &self.kind {
                Kind::Fixed => "fixed".to_string(),
                Kind::Dynamic { block, .. } => format!("dynamic with {} KiB blocks", block / 1024),
            },
            self.creator.trim()
        )]
    }
}

/// A dynamic disk's header and block allocation table.
fn dynamic(
    file: &dyn ReadAt,
    path: &Path,
    footer: &[u8],
    file_size: u64,
    size: u64,
) -> io::Result<Kind> {
    let at = be64(footer, 16);
    if at.saturating_add(1024) > file_size {
        return Err(invalid(
            path,
            format!("its dynamic header at byte {at} is past the end"),
        ));
    }
    let mut h = [0u8; 1024];
    file.read_exact_at(&mut h, at)?;
    if &h[..8] != DYNAMIC_COOKIE {
        return Err(invalid(
            path,
            format!("no dynamic header (`cxsparse`) at byte {at}"),
        ));
    }
    if checksum(&h, 36) != be32(&h, 36) {
        return Err(invalid(
            path,
            "the dynamic header's checksum is wrong: the header is damaged",
        ));
    }
    let table = be64(&h, 16);
    let entries = u64::from(be32(&h, 28));
    let block = u64::from(be32(&h, 32));
    if !block.is_power_of_two() || !(512..=(256 << 20)).contains(&block) {
        return Err(invalid(
            path,
            format!("block size {block} (a power of two up to 256 MiB)"),
        ));
    }
    let needed = size.div_ceil(block);
    if entries < needed {
        return Err(invalid(
            path,
            format!("its block table has {entries} entries; a disk of {size} bytes needs {needed}"),
        ));
    }
    let raw = read_table(file, path, "block table", table, needed, 4)?;
    let bat = raw.chunks_exact(4).map(|c| be32(c, 0)).collect();
    let bitmap = (block / 512).div_ceil(8).next_multiple_of(512);
    Ok(Kind::Dynamic { bat, block, bitmap })
}

impl ReadAt for Vhd {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (bat, block, bitmap) = match &self.kind {
            Kind::Fixed => (None, self.size.max(1), 0),
            Kind::Dynamic { bat, block, bitmap } => (Some(bat), *block, *bitmap),
        };
        read_blocks(
            self.file.as_ref(),
            &self.path,
            (self.size, block),
            buf,
            offset,
            |index| {
                Ok(match bat.map(|b| b[index as usize]) {
                    None => Place::At(0),
                    Some(UNALLOCATED) => Place::Zeros,
                    Some(sector) => Place::At(u64::from(sector) * 512 + bitmap),
                })
            },
        )
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}
