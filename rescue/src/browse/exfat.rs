//! exFAT: the boot sector, the active FAT, files and folders as entry sets (file, stream extension,
//! names) with their checksums, contiguous ("NoFatChain") or FAT-chained data, bytes past the valid
//! data length read as zeros, and names compared through the volume's up-case table.
//!
//! Times carry 10 ms and the writer's offset from UTC, so they convert to exact UTC (an entry without a
//! valid offset is taken as UTC).

mod dir;

use std::sync::Mutex;

use super::chain::{Len, Table, Width};
use super::read::{FileReader, Pieces};
use super::{byte, le16, le32, le64, Browse, BrowseError, Entry, Id, Vol};

/// A folder may not exceed 256 MiB (specification); bounds a looping chain too.
const MAX_DIR_BYTES: u64 = 256 << 20;
const FLAG_DIRTY: u16 = 0x2;
/// Stream extension flags.
pub(crate) const ALLOCATION_POSSIBLE: u8 = 0x1;
pub(crate) const NO_FAT_CHAIN: u8 = 0x2;
/// Notes kept about damaged entries, at most.
const MAX_NOTES: usize = 100;
/// `Id::aux` of the root folder, which has no stream extension (its chain ends with the FAT).
const ROOT: u64 = 1 << 8;

pub(crate) struct Exfat {
    vol: Vol,
    table: Table,
    root: u64,
    /// Upper case of each UTF-16 unit (identity past the table's end).
    upcase: Vec<u16>,
    notes: Mutex<Vec<String>>,
}

impl Exfat {
    pub(crate) fn open(mut vol: Vol) -> Result<Exfat, BrowseError> {
        vol.fs = "exFAT";
        let b = vol.read(0, 512, "boot sector")?;
        let bad = |at: u64, reason: String| vol.corrupt("boot sector", at, reason);
        if b.get(11..64).is_none_or(|z| z.iter().any(|&x| x != 0)) {
            return Err(bad(11, "its must-be-zero area holds data".into()));
        }
        let rev = le16(&b, 104);
        if rev >> 8 != 1 {
            return Err(vol.unsupported(format!("revision {}.{}", rev >> 8, rev & 0xFF)));
        }
        let (bps_shift, spc_shift) = (u32::from(byte(&b, 108)), u32::from(byte(&b, 109)));
        if !(9..=12).contains(&bps_shift) || bps_shift + spc_shift > 25 {
            return Err(bad(
                108,
                format!(
                    "sector size 2^{bps_shift} or cluster size 2^{spc_shift} sectors is invalid"
                ),
            ));
        }
        let bps = 1u64 << bps_shift;
        let length = le64(&b, 72);
        if length.checked_mul(bps).is_none_or(|l| l > vol.size) {
            return Err(vol.too_big("boot sector", 72, format!("{length} sectors")));
        }
        let fat_offset = u64::from(le32(&b, 80));
        let fat_length = u64::from(le32(&b, 84));
        let heap = u64::from(le32(&b, 88));
        let clusters = u64::from(le32(&b, 92));
        let nfats = u64::from(byte(&b, 110));
        if !(1..=2).contains(&nfats)
            || fat_offset < 24
            || fat_offset + nfats * fat_length > heap
            || fat_length * bps < (clusters + 2) * 4
            || heap + (clusters << spc_shift) > length
        {
            return Err(bad(
                80,
                "the FATs and the cluster heap do not fit the volume".into(),
            ));
        }
        let flags = le16(&b, 106);
        let active = if nfats == 2 { u64::from(flags & 1) } else { 0 };
        let table = Table {
            vol: vol.clone(),
            width: Width::Exfat,
            fat_at: (fat_offset + active * fat_length) * bps,
            fat_bytes: fat_length * bps,
            data_at: heap * bps,
            cluster: bps << spc_shift,
            clusters,
            cache: Mutex::new(None),
        };
        let root = u64::from(le32(&b, 96));
        if !table.valid(root) {
            return Err(bad(
                96,
                format!("the root folder's cluster {root} is invalid"),
            ));
        }
        let mut notes = Vec::new();
        if flags & FLAG_DIRTY != 0 {
            notes.push(
                "the volume is marked dirty (not cleanly unmounted); it is read as it is"
                    .to_owned(),
            );
        }
        let mut fs = Exfat {
            vol,
            table,
            root,
            upcase: Vec::new(),
            notes: Mutex::new(notes),
        };
        let root_bytes = fs.dir_bytes(&fs.root()?)?;
        fs.upcase = fs.load_upcase(&root_bytes)?;
        Ok(fs)
    }

    /// The up-case table the root folder names, expanded; simple upper-casing if it is damaged.
    fn load_upcase(&self, root: &[u8]) -> Result<Vec<u16>, BrowseError> {
        let Some(e) = root
            .chunks_exact(32)
            .take_while(|e| e[0] != 0)
            .find(|e| e[0] == 0x82)
        else {
            self.note("the root folder has no up-case table; names compare by simple upper case");
            return Ok(Vec::new());
        };
        let (first, len) = (u64::from(le32(e, 20)), le64(e, 24));
        if len > 256 << 10 {
            self.note("the up-case table is too long; names compare by simple upper case");
            return Ok(Vec::new());
        }
        let (pieces, _) = self
            .table
            .chain(first, Len::Exact(len), "the up-case table")?;
        let data =
            FileReader::new(self.vol.clone(), len, pieces, "up-case table".into()).read_all(len)?;
        let sum = data
            .iter()
            .fold(0u32, |s, &x| s.rotate_right(1).wrapping_add(u32::from(x)));
        if sum != le32(e, 4) {
            self.note("the up-case table fails its checksum; names compare by simple upper case");
            return Ok(Vec::new());
        }
        Ok(dir::expand_upcase(&data))
    }

    fn note(&self, text: impl Into<String>) {
        if let Ok(mut n) = self.notes.lock() {
            if n.len() < MAX_NOTES {
                n.push(text.into());
            }
        }
    }

    /// The pieces of `len` bytes of data from cluster `first` with stream `flags`.
    fn pieces(&self, first: u64, flags: u8, len: u64, what: &str) -> Result<Pieces, BrowseError> {
        if len == 0 {
            return Ok(Pieces::default());
        }
        if flags & ALLOCATION_POSSIBLE == 0 {
            return Err(self.vol.corrupt(
                "directory entry",
                self.table.data_at,
                format!("{what} holds {len} bytes but no clusters"),
            ));
        }
        if flags & NO_FAT_CHAIN != 0 {
            self.table.contiguous(first, len, what)
        } else {
            Ok(self.table.chain(first, Len::Exact(len), what)?.0)
        }
    }

    /// The raw entries of folder `dir`.
    fn dir_bytes(&self, dir: &Entry) -> Result<Vec<u8>, BrowseError> {
        let what = format!("folder {}", dir.name);
        let (pieces, len) = if dir.id.aux == ROOT {
            self.table
                .chain(self.root, Len::UpTo(MAX_DIR_BYTES), &what)?
        } else {
            if dir.size > MAX_DIR_BYTES {
                return Err(self.vol.corrupt(
                    "directory entry",
                    self.table.data_at,
                    format!("{what} claims {} bytes", dir.size),
                ));
            }
            let p = self.pieces(dir.id.node, dir.id.aux as u8, dir.size, &what)?;
            (p, dir.size)
        };
        FileReader::new(self.vol.clone(), len, pieces, what).read_all(MAX_DIR_BYTES)
    }

    fn fold(&self, u: u16) -> u16 {
        match self.upcase.get(usize::from(u)) {
            Some(&v) => v,
            None if self.upcase.is_empty() => char::from_u32(u32::from(u))
                .and_then(|c| c.to_uppercase().next())
                .and_then(|c| u16::try_from(u32::from(c)).ok())
                .unwrap_or(u),
            None => u,
        }
    }
}

impl Browse for Exfat {
    fn kind(&self) -> &'static str {
        "exFAT"
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn root(&self) -> Result<Entry, BrowseError> {
        Ok(Entry::root(Id {
            node: self.root,
            aux: ROOT,
            aux2: 0,
        }))
    }

    fn children(&self, dir: &Entry) -> Result<Vec<Entry>, BrowseError> {
        dir.expect_dir()?;
        let data = self.dir_bytes(dir)?;
        let (entries, damaged) = dir::parse(&data);
        if damaged > 0 {
            self.note(format!(
                "folder {}: {damaged} entry set(s) fail their checksum or are cut short and are \
                 left out",
                dir.name
            ));
        }
        Ok(entries)
    }

    fn open(&self, file: &Entry) -> Result<FileReader, BrowseError> {
        let what = format!("file {}", file.name);
        // Clusters are read up to the valid data length; the rest of the file reads as zeros.
        let valid = file.id.aux2.min(file.size);
        let pieces = self.pieces(file.id.node, file.id.aux as u8, valid, &what)?;
        Ok(FileReader::new(self.vol.clone(), file.size, pieces, what))
    }

    fn same_name(&self, a: &str, b: &str) -> bool {
        let (a, b): (Vec<u16>, Vec<u16>) = (a.encode_utf16().collect(), b.encode_utf16().collect());
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(&x, &y)| self.fold(x) == self.fold(y))
    }
}
