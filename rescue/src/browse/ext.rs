//! ext2/ext3/ext4: the superblock, group descriptors (32- and 64-bit, `meta_bg`), inodes, and their
//! data through extent trees, indirect blocks or inline data; directories linear (an htree's index
//! blocks look like empty entries to a linear reader, and are skipped as such).
//!
//! Checksums (`metadata_csum`) are not verified: browsing reads what is there, and a structure breaks
//! only where its format does. A journal is not replayed; the superblock's "needs recovery" flag is
//! reported as a note.

mod dir;
mod map;

use std::collections::HashMap;
use std::sync::Mutex;

use super::read::{FileReader, Pieces, Src};
use super::{le16, le32, Browse, BrowseError, Entry, Id, Kind, Time, Vol};

const SB: u64 = 1024;
const ROOT_INO: u64 = 2;

/// Superblock feature bits this reader acts on (compat 0x5C, incompat 0x60, ro_compat 0x64).
mod feature {
    pub const HAS_JOURNAL: u32 = 0x4;
    pub const SPARSE_SUPER2: u32 = 0x200;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const INLINE_DATA: u32 = 0x8000;
    /// Incompatible features refused by name.
    pub const REFUSED: [(u32, &str); 3] = [
        (0x1, "ext2 compression (the e2compr patches)"),
        (
            0x8,
            "an external journal device (it holds no files; browse the filesystem that uses it)",
        ),
        (0x1000, "data in directory entries (dirdata, Lustre)"),
    ];
    /// The incompatible features read: filetype, recover, meta_bg, extents, 64bit, inline_data; and
    /// those that change nothing a reader of plain files relies on: mmp 0x100, flex_bg 0x200,
    /// ea_inode 0x400, csum_seed 0x2000, largedir 0x4000, encrypt 0x10000 (content refused per file),
    /// casefold 0x20000.
    pub const READABLE: u32 =
        FILETYPE | RECOVER | META_BG | EXTENTS | BIT64 | INLINE_DATA | 0x3_6700;
    pub const RO_SPARSE_SUPER: u32 = 0x1;
    pub const RO_HUGE_FILE: u32 = 0x8;
    /// Read-only features only an ext4 has (huge_file, gdt_csum, dir_nlink, extra_isize,
    /// metadata_csum).
    pub const RO_EXT4: u32 = 0x78 | 0x400;
}

/// Inode flags.
const FL_COMPRESSED: u32 = 0x4;
const FL_ENCRYPTED: u32 = 0x800;
const FL_HUGE_FILE: u32 = 0x4_0000;
const FL_EXTENTS: u32 = 0x8_0000;
const FL_INLINE: u32 = 0x1000_0000;

/// Inode table locations cached, at most this many groups.
const ITABLE_CACHE: usize = 4096;

pub(crate) struct Ext {
    vol: Vol,
    name: &'static str,
    pub(crate) bs: u64,
    blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    inodes: u64,
    inode_size: u64,
    groups: u64,
    desc_size: u64,
    incompat: u32,
    ro: u32,
    meta_bg: Option<u64>,
    sparse_super: bool,
    sparse_super2: Option<[u64; 2]>,
    notes: Vec<String>,
    itables: Mutex<HashMap<u64, u64>>,
}

/// One inode, parsed.
pub(crate) struct Inode {
    pub ino: u64,
    pub mode: u16,
    pub size: u64,
    pub flags: u32,
    /// Blocks it occupies, in bytes (data, indirect and extent blocks, an xattr block).
    pub blocks_bytes: u64,
    pub file_acl: u64,
    pub block: Vec<u8>,
    pub raw: Vec<u8>,
    pub at: u64,
}

impl Ext {
    pub(crate) fn open(mut vol: Vol) -> Result<Ext, BrowseError> {
        let sb = vol.read(SB, 1024, "superblock")?;
        let bad =
            |vol: &Vol, field: u64, reason: String| vol.corrupt("superblock", SB + field, reason);
        let rev = le32(&sb, 0x4C);
        let (compat, incompat, ro) = if rev == 0 {
            (0, 0, 0)
        } else {
            (le32(&sb, 0x5C), le32(&sb, 0x60), le32(&sb, 0x64))
        };
        let name = if incompat & (feature::EXTENTS | feature::BIT64 | 0x200 | feature::INLINE_DATA)
            != 0
            || ro & feature::RO_EXT4 != 0
        {
            "ext4"
        } else if compat & feature::HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        };
        vol.fs = name;
        if rev > 1 {
            return Err(vol.unsupported(format!("superblock revision {rev}")));
        }
        if let Some((_, what)) = feature::REFUSED.iter().find(|(bit, _)| incompat & bit != 0) {
            return Err(vol.unsupported(*what));
        }
        let unknown = incompat & !feature::READABLE;
        if unknown != 0 {
            return Err(vol.unsupported(format!("incompatible features {unknown:#x}")));
        }
        let log = le32(&sb, 0x18);
        if log > 6 {
            return Err(bad(
                &vol,
                0x18,
                format!("block size 2^{log} KiB is out of range"),
            ));
        }
        let bs = 1024u64 << log;
        let bit64 = incompat & feature::BIT64 != 0;
        let blocks = u64::from(le32(&sb, 0x04))
            | if bit64 {
                u64::from(le32(&sb, 0x150)) << 32
            } else {
                0
            };
        if blocks.checked_mul(bs).is_none_or(|b| b > vol.size) {
            return Err(vol.too_big(
                "superblock",
                SB + 0x04,
                format!("{blocks} blocks of {bs} bytes"),
            ));
        }
        let first_data_block = u64::from(le32(&sb, 0x14));
        let blocks_per_group = u64::from(le32(&sb, 0x20));
        let inodes_per_group = u64::from(le32(&sb, 0x28));
        if blocks_per_group == 0 || first_data_block >= blocks || inodes_per_group == 0 {
            return Err(bad(
                &vol,
                0x20,
                "blocks or inodes per group, or the first data block, are invalid".into(),
            ));
        }
        let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
        let inode_size = if rev == 0 {
            128
        } else {
            u64::from(le16(&sb, 0x58))
        };
        if inode_size < 128 || inode_size > bs || !inode_size.is_power_of_two() {
            return Err(bad(
                &vol,
                0x58,
                format!("inode size {inode_size} is invalid"),
            ));
        }
        let desc_size = if bit64 {
            u64::from(le16(&sb, 0xFE))
        } else {
            32
        };
        if desc_size < 32 || desc_size > bs || !desc_size.is_power_of_two() {
            return Err(bad(
                &vol,
                0xFE,
                format!("group descriptor size {desc_size} is invalid"),
            ));
        }
        let mut notes = Vec::new();
        if incompat & feature::RECOVER != 0 {
            notes.push(
                "the journal holds changes that were never written to their place (the system was \
                 not shut down cleanly); they are not replayed here, so the newest changes may be \
                 missing"
                    .to_owned(),
            );
        }
        Ok(Ext {
            name,
            bs,
            blocks,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inodes: u64::from(le32(&sb, 0x00)),
            inode_size,
            groups,
            desc_size,
            incompat,
            ro,
            meta_bg: (incompat & feature::META_BG != 0).then(|| u64::from(le32(&sb, 0x104))),
            sparse_super: ro & feature::RO_SPARSE_SUPER != 0,
            sparse_super2: (compat & feature::SPARSE_SUPER2 != 0)
                .then(|| [u64::from(le32(&sb, 0x24C)), u64::from(le32(&sb, 0x250))]),
            notes,
            itables: Mutex::new(HashMap::new()),
            vol,
        })
    }

    /// Whether group `g` holds a superblock backup (and so a descriptor copy before its data).
    fn has_super(&self, g: u64) -> bool {
        if let Some(b) = self.sparse_super2 {
            return g == 0 || b.contains(&g);
        }
        if g <= 1 || !self.sparse_super {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                p *= base;
            }
            p == g
        })
    }

    /// The block holding descriptor block `nr` of the group descriptor table.
    fn gdt_block(&self, nr: u64) -> u64 {
        match self.meta_bg {
            Some(first) if nr >= first => {
                let group = nr * (self.bs / self.desc_size);
                self.first_data_block
                    + group * self.blocks_per_group
                    + u64::from(self.has_super(group))
            }
            _ => self.first_data_block + 1 + nr,
        }
    }

    /// The first block of group `g`'s inode table.
    fn inode_table(&self, g: u64) -> Result<u64, BrowseError> {
        if let Some(&t) = self.itables.lock().ok().as_ref().and_then(|m| m.get(&g)) {
            return Ok(t);
        }
        let per = self.bs / self.desc_size;
        let at = self.gdt_block(g / per) * self.bs + (g % per) * self.desc_size;
        let d = self
            .vol
            .read(at, self.desc_size as usize, "group descriptor")?;
        let mut table = u64::from(le32(&d, 0x08));
        if self.desc_size >= 64 {
            table |= u64::from(le32(&d, 0x28)) << 32;
        }
        let itable_blocks = (self.inodes_per_group * self.inode_size).div_ceil(self.bs);
        if table == 0
            || table
                .checked_add(itable_blocks)
                .is_none_or(|e| e > self.blocks)
        {
            return Err(self.vol.corrupt(
                "group descriptor",
                at,
                format!("group {g}'s inode table at block {table} lies outside the filesystem"),
            ));
        }
        if let Ok(mut m) = self.itables.lock() {
            if m.len() < ITABLE_CACHE {
                m.insert(g, table);
            }
        }
        Ok(table)
    }

    pub(crate) fn inode(&self, ino: u64) -> Result<Inode, BrowseError> {
        if ino == 0 || ino > self.inodes || (ino - 1) / self.inodes_per_group >= self.groups {
            return Err(self.vol.corrupt(
                "directory entry",
                0,
                format!(
                    "inode {ino} does not exist (the filesystem has {})",
                    self.inodes
                ),
            ));
        }
        let g = (ino - 1) / self.inodes_per_group;
        let i = (ino - 1) % self.inodes_per_group;
        let at = self.inode_table(g)? * self.bs + i * self.inode_size;
        let raw = self.vol.read(at, self.inode_size as usize, "inode")?;
        let flags = le32(&raw, 0x20);
        let mut blocks = u64::from(le32(&raw, 0x1C)) | u64::from(le16(&raw, 0x74)) << 32;
        blocks *= if self.ro & feature::RO_HUGE_FILE != 0 && flags & FL_HUGE_FILE != 0 {
            self.bs
        } else {
            512
        };
        Ok(Inode {
            ino,
            mode: le16(&raw, 0),
            size: u64::from(le32(&raw, 0x04)) | u64::from(le32(&raw, 0x6C)) << 32,
            flags,
            blocks_bytes: blocks,
            file_acl: u64::from(le32(&raw, 0x68)) | u64::from(le16(&raw, 0x76)) << 32,
            block: raw.get(0x28..0x64).unwrap_or_default().to_vec(),
            at,
            raw,
        })
    }

    /// The time at `secs` with its `extra` field (epoch bits and nanoseconds) where the inode has it.
    fn time(&self, raw: &[u8], secs: usize, extra: Option<usize>) -> Option<Time> {
        let s = i64::from(le32(raw, secs) as i32);
        let extra_isize = if self.inode_size > 128 {
            usize::from(le16(raw, 0x80))
        } else {
            0
        };
        let x = extra
            .filter(|&at| at + 4 <= 128 + extra_isize && at + 4 <= raw.len())
            .map_or(0, |at| le32(raw, at));
        let nanos = x >> 2;
        Some(Time {
            secs: s + (i64::from(x & 3) << 32),
            nanos: if nanos < 1_000_000_000 { nanos } else { 0 },
        })
    }

    /// An entry for `inode`, named `name`.
    pub(crate) fn entry(&self, name: String, inode: &Inode) -> Entry {
        let kind = match inode.mode & 0xF000 {
            0x8000 => Kind::File,
            0x4000 => Kind::Dir,
            0xA000 => match self.link_target(inode) {
                Ok(target) => Kind::Symlink { target },
                Err(e) => {
                    let mut en = Entry::new(name, Kind::Other("symbolic link"), Id::default());
                    en.problem = Some(e.to_string());
                    return en;
                }
            },
            0x1000 => Kind::Other("FIFO"),
            0x2000 => Kind::Other("character device"),
            0x6000 => Kind::Other("block device"),
            0xC000 => Kind::Other("socket"),
            _ => Kind::Other("inode of unknown type"),
        };
        let mut e = Entry::new(
            name,
            kind,
            Id {
                node: inode.ino,
                ..Id::default()
            },
        );
        e.size = inode.size;
        e.mode = Some(u32::from(inode.mode));
        e.modified = self.time(&inode.raw, 0x10, Some(0x88));
        e.accessed = self.time(&inode.raw, 0x08, Some(0x8C));
        e.created = (self.inode_size > 128 && usize::from(le16(&inode.raw, 0x80)) >= 0x18)
            .then(|| self.time(&inode.raw, 0x90, Some(0x94)))
            .flatten()
            .filter(|t| t.secs != 0 || t.nanos != 0);
        e.flags.encrypted = inode.flags & FL_ENCRYPTED != 0;
        e.flags.compressed = inode.flags & FL_COMPRESSED != 0;
        e
    }

    /// Where a symbolic link points: in the inode itself (a fast link), or in its data.
    fn link_target(&self, inode: &Inode) -> Result<String, BrowseError> {
        if inode.size > self.bs.max(4096) {
            return Err(self.vol.corrupt(
                "inode",
                inode.at,
                format!(
                    "symbolic link {} claims a {}-byte target",
                    inode.ino, inode.size
                ),
            ));
        }
        let ea_bytes = if inode.file_acl != 0 { self.bs } else { 0 };
        let fast = inode.flags & (FL_EXTENTS | FL_INLINE) == 0
            && inode.blocks_bytes.saturating_sub(ea_bytes) == 0;
        let bytes = if fast {
            inode
                .block
                .get(..inode.size as usize)
                .ok_or_else(|| {
                    self.vol.corrupt(
                        "inode",
                        inode.at,
                        "a fast symbolic link longer than 60 bytes",
                    )
                })?
                .to_vec()
        } else {
            self.reader(inode)?.read_all(self.bs.max(4096))?
        };
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A reader of `inode`'s data.
    pub(crate) fn reader(&self, inode: &Inode) -> Result<FileReader, BrowseError> {
        let what = format!("data of inode {}", inode.ino);
        let pieces = if inode.flags & FL_INLINE != 0 {
            let mut p = Pieces::default();
            let data = map::inline_data(self, inode)?;
            p.push(0, data.len() as u64, Src::Bytes(std::sync::Arc::new(data)));
            p
        } else if inode.flags & FL_EXTENTS != 0 {
            map::extents(self, inode)?
        } else {
            map::indirect(self, inode)?
        };
        Ok(FileReader::new(self.vol.clone(), inode.size, pieces, what))
    }
}

impl Browse for Ext {
    fn kind(&self) -> &'static str {
        self.name
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn root(&self) -> Result<Entry, BrowseError> {
        let inode = self.inode(ROOT_INO)?;
        let e = self.entry("/".into(), &inode);
        if e.kind != Kind::Dir {
            return Err(self
                .vol
                .corrupt("inode", inode.at, "the root inode is not a folder"));
        }
        Ok(e)
    }

    fn children(&self, dir: &Entry) -> Result<Vec<Entry>, BrowseError> {
        let inode = self.inode(dir.id.node)?;
        let names = dir::read(self, &inode)?;
        Ok(names
            .into_iter()
            .map(|(name, ino)| match self.inode(ino) {
                Ok(i) => self.entry(name, &i),
                Err(err) => {
                    let mut e = Entry::new(name, Kind::Other("damaged entry"), Id::default());
                    e.problem = Some(err.to_string());
                    e
                }
            })
            .collect())
    }

    fn open(&self, file: &Entry) -> Result<FileReader, BrowseError> {
        let inode = self.inode(file.id.node)?;
        if inode.flags & FL_ENCRYPTED != 0 {
            return Err(self.vol.unsupported(format!(
                "reading {}: it is encrypted (fscrypt) and its key is not here",
                file.name
            )));
        }
        self.reader(&inode)
    }
}
