//! VirtualBox's VDI, read: a little-endian header (signature `0xBEDA107F` at byte 64), a block map of
//! 32-bit block numbers, and the blocks in the order they were allocated. `0xFFFFFFFF` (never written) and
//! `0xFFFFFFFE` (discarded) both read as zeros. Fixed ("static") and dynamic images are read; differencing
//! and undo images need their parent and are refused.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{invalid, le32, le64, read_blocks, read_table, unsupported, Place};
use crate::image::ReadAt;

const SIGNATURE: u32 = 0xBEDA_107F;
/// Block map entries at or above this hold no data.
const FIRST_FREE: u32 = 0xFFFF_FFFE;
const HEADER_END: u64 = 0x1C8;

pub fn is_vdi(head: &[u8]) -> bool {
    head.len() >= 0x44 && le32(head, 0x40) == SIGNATURE
}

pub struct Vdi {
    file: Arc<dyn ReadAt>,
    path: PathBuf,
    size: u64,
    block: u64,
    /// Where block 0 of the data starts, plus the per-block extra bytes.
    data: u64,
    extra: u64,
    map: Vec<u32>,
    fixed: bool,
}

impl Vdi {
    pub fn open(file: Arc<dyn ReadAt>, path: &Path) -> io::Result<Vdi> {
        let file_size = file.size()?;
        if file_size < HEADER_END {
            return Err(invalid(path, "shorter than a VDI header"));
        }
        let mut h = vec![0u8; HEADER_END as usize];
        file.read_exact_at(&mut h, 0)?;
        if !is_vdi(&h) {
            return Err(invalid(path, "no VDI signature at byte 64"));
        }
        let version = le32(&h, 0x44);
        if version >> 16 != 1 {
            return Err(unsupported(
                path,
                format!(
                    "VDI version {}.{} (this program reads 1.x)",
                    version >> 16,
                    version & 0xffff
                ),
            ));
        }
        let fixed = match le32(&h, 0x4C) {
            1 => false,
            2 => true,
            3 | 4 => return Err(unsupported(
                path,
                "a differencing (or undo) VDI holds only the changes over its parent; clone the \
                     whole disk first (VBoxManage clonemedium)",
            )),
            t => return Err(invalid(path, format!("VDI image type {t}"))),
        };
        let map_at = u64::from(le32(&h, 0x154));
        let data = u64::from(le32(&h, 0x158));
        let sector = le32(&h, 0x168);
        let size = le64(&h, 0x170);
        let block = u64::from(le32(&h, 0x178));
        let extra = u64::from(le32(&h, 0x17C));
        let blocks = u64::from(le32(&h, 0x180));
        if sector != 512 {
            return Err(unsupported(
                path,
                format!("{sector}-byte sectors (VDI uses 512)"),
            ));
        }
        if !block.is_power_of_two() || !(512..=(256 << 20)).contains(&block) {
            return Err(invalid(path, format!("block size {block}")));
        }
        let needed = size.div_ceil(block);
        if blocks < needed {
            return Err(invalid(
                path,
                format!(
                    "its block map has {blocks} entries; a disk of {size} bytes needs {needed}"
                ),
            ));
        }
        let raw = read_table(file.as_ref(), path, "block map", map_at, needed, 4)?;
        let map = raw.chunks_exact(4).map(|c| le32(c, 0)).collect();
        Ok(Vdi {
            file,
            path: path.to_path_buf(),
            size,
            block,
            data,
            extra,
            map,
            fixed,
        })
    }

    pub fn notes(&self) -> Vec<String> {
        vec![format!(
            "VDI, {}, {} KiB blocks",
            if self.fixed { "fixed" } else { "dynamic" },
            self.block / 1024
        )]
    }
}

impl ReadAt for Vdi {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_blocks(
            self.file.as_ref(),
            &self.path,
            (self.size, self.block),
            buf,
            offset,
            |index| {
                Ok(match self.map[index as usize] {
                    e if e >= FIRST_FREE => Place::Zeros,
                    e => {
                        Place::At(self.data + u64::from(e) * (self.block + self.extra) + self.extra)
                    }
                })
            },
        )
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}
