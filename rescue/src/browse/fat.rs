//! FAT12/16/32: the BPB, the active FAT, cluster chains, the fixed root directory (FAT12/16), and
//! directory entries with their long names (VFAT: UTF-16 pieces checked against the short name's
//! checksum; a long name that does not belong gives way to the short name).
//!
//! The type follows from the cluster count, as the specification defines it. Times are the writer's
//! local time (FAT records no zone) and are given as if they were UTC; modification times have 2 s
//! steps, creation times 10 ms.

mod dir;

use std::sync::Mutex;

use super::chain::{Len, Table, Width};
use super::read::{FileReader, Pieces};
use super::{byte, le16, le32, Browse, BrowseError, Entry, Id, Vol};

/// A folder holds at most 65,536 entries of 32 bytes (specification).
const MAX_DIR_BYTES: u64 = 65_536 * 32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

pub(crate) struct Fat {
    vol: Vol,
    kind: FatType,
    table: Table,
    /// The fixed root directory (FAT12/16): byte offset and length; FAT32 roots are chains.
    fixed_root: Option<(u64, u64)>,
    root_cluster: u64,
}

/// Whether the boot sector `b` carries a plausible FAT BPB (after NTFS and exFAT were ruled out).
pub(crate) fn looks_like_fat(b: &[u8]) -> bool {
    let jump = matches!(byte(b, 0), 0xEB | 0xE9);
    let bps = le16(b, 11);
    let spc = byte(b, 13);
    let media = byte(b, 21);
    jump && matches!(bps, 512 | 1024 | 2048 | 4096)
        && spc.is_power_of_two()
        && le16(b, 14) > 0
        && byte(b, 16) > 0
        && (media == 0xF0 || media >= 0xF8)
}

impl Fat {
    pub(crate) fn open(mut vol: Vol) -> Result<Fat, BrowseError> {
        let b = vol.read(0, 512, "boot sector")?;
        let bad = |vol: &Vol, at: u64, reason: String| vol.corrupt("boot sector (BPB)", at, reason);
        let bps = u64::from(le16(&b, 11));
        let spc = u64::from(byte(&b, 13));
        let reserved = u64::from(le16(&b, 14));
        let nfats = u64::from(byte(&b, 16));
        let root_entries = u64::from(le16(&b, 17));
        let total = match le16(&b, 19) {
            0 => u64::from(le32(&b, 32)),
            n => u64::from(n),
        };
        let fat_sectors = match le16(&b, 22) {
            0 => u64::from(le32(&b, 36)),
            n => u64::from(n),
        };
        let root_sectors = (root_entries * 32).div_ceil(bps.max(1));
        let first_data = reserved + nfats * fat_sectors + root_sectors;
        if bps == 0 || spc == 0 || fat_sectors == 0 || first_data >= total {
            return Err(bad(
                &vol,
                11,
                "the FATs and root folder leave no room for data".into(),
            ));
        }
        if total.checked_mul(bps).is_none_or(|t| t > vol.size) {
            return Err(vol.too_big("boot sector (BPB)", 19, format!("{total} sectors")));
        }
        let clusters = (total - first_data) / spc;
        let kind = if clusters < 4085 {
            FatType::Fat12
        } else if clusters < 65_525 {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        vol.fs = match kind {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        };
        let bits = match kind {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        };
        if fat_sectors * bps * 8 / bits < clusters + 2 {
            return Err(bad(
                &vol,
                22,
                format!("a FAT of {fat_sectors} sectors is too small for {clusters} clusters"),
            ));
        }
        let active = if kind == FatType::Fat32 && le16(&b, 40) & 0x80 != 0 {
            u64::from(le16(&b, 40) & 0xF)
        } else {
            0
        };
        if active >= nfats {
            return Err(bad(
                &vol,
                40,
                format!("the active FAT {active} does not exist"),
            ));
        }
        let root_cluster = u64::from(le32(&b, 44));
        if kind == FatType::Fat32
            && (root_entries != 0 || !(2..clusters + 2).contains(&root_cluster))
        {
            return Err(bad(
                &vol,
                44,
                format!("the root folder's cluster {root_cluster} is invalid"),
            ));
        }
        let table = Table {
            vol: vol.clone(),
            width: match kind {
                FatType::Fat12 => Width::Fat12,
                FatType::Fat16 => Width::Fat16,
                FatType::Fat32 => Width::Fat32,
            },
            fat_at: (reserved + active * fat_sectors) * bps,
            fat_bytes: fat_sectors * bps,
            data_at: first_data * bps,
            cluster: bps * spc,
            clusters,
            cache: Mutex::new(None),
        };
        Ok(Fat {
            kind,
            table,
            fixed_root: (kind != FatType::Fat32)
                .then(|| ((reserved + nfats * fat_sectors) * bps, root_entries * 32)),
            root_cluster,
            vol,
        })
    }

    /// The raw entries of folder `dir`.
    fn dir_bytes(&self, dir: &Entry) -> Result<Vec<u8>, BrowseError> {
        let root = dir.id.aux == 1;
        if root {
            if let Some((at, len)) = self.fixed_root {
                return self.vol.read(at, len as usize, "root folder");
            }
        } else if dir.id.node == 0 {
            return Err(self.vol.corrupt(
                "folder entry",
                self.table.data_at,
                format!("folder {} has no first cluster", dir.name),
            ));
        }
        let first = if root { self.root_cluster } else { dir.id.node };
        let (pieces, len) = self.table.chain(
            first,
            Len::UpTo(MAX_DIR_BYTES),
            &format!("folder {}", dir.name),
        )?;
        let mut r = FileReader::new(
            self.vol.clone(),
            len,
            pieces,
            format!("folder {}", dir.name),
        );
        r.read_all(MAX_DIR_BYTES)
    }
}

impl Browse for Fat {
    fn kind(&self) -> &'static str {
        self.vol.fs
    }

    fn root(&self) -> Result<Entry, BrowseError> {
        Ok(Entry::root(Id {
            node: self.root_cluster,
            aux: 1,
            aux2: 0,
        }))
    }

    fn children(&self, dir: &Entry) -> Result<Vec<Entry>, BrowseError> {
        dir.expect_dir()?;
        let data = self.dir_bytes(dir)?;
        Ok(dir::parse(&data, self.kind == FatType::Fat32))
    }

    fn open(&self, file: &Entry) -> Result<FileReader, BrowseError> {
        let what = format!("file {}", file.name);
        if file.size == 0 {
            return Ok(FileReader::new(
                self.vol.clone(),
                0,
                Pieces::default(),
                what,
            ));
        }
        let (pieces, _) = self
            .table
            .chain(file.id.node, Len::Exact(file.size), &what)?;
        Ok(FileReader::new(self.vol.clone(), file.size, pieces, what))
    }

    fn same_name(&self, a: &str, b: &str) -> bool {
        a.to_uppercase() == b.to_uppercase()
    }
}
