//! NTFS: the boot sector, `$MFT` (its own runlist, extended by its attribute list when it has one),
//! records with update sequence fixups and attribute lists (attributes kept in other records),
//! resident and non-resident data (runlists with sparse runs, the initialised size, LZNT1-compressed
//! units), `$FILE_NAME` (Win32/POSIX names over DOS 8.3 ones), folders through their `$I30` index or,
//! when that is damaged, through the parent references of every record, alternate data streams,
//! symbolic links and junctions (reparse points) and Interix links (ntfs-3g's), and times in 100 ns.
//!
//! Encrypted (EFS) content and files kept by Windows' WOF compression are refused by name. The
//! filesystem's own files (`$MFT`, `$Bitmap`… and those under `$Extend`) are listed, marked `metadata`.

mod index;
mod lznt1;
pub(crate) mod record;
mod runs;

use std::sync::{Arc, Mutex};

use self::record::{
    Attr, AT_ATTRIBUTE_LIST, AT_DATA, AT_FILE_NAME, AT_REPARSE_POINT, AT_STANDARD_INFORMATION,
    FLAG_COMPRESSED, FLAG_ENCRYPTED, FLAG_SPARSE, RECORD_IN_USE, RECORD_IS_DIR,
};
use super::read::{FileReader, Piece, Pieces, Src};
use super::{
    byte, le16, le32, le64, utf16, Browse, BrowseError, Entry, Id, Kind, Stream, Time, Vol,
};

const ROOT: u64 = 5;
const EXTEND: u64 = 11;
/// Records below this number belong to the filesystem itself.
const FIRST_USER_RECORD: u64 = 24;
/// An attribute list longer than this (or naming more records) is refused as damaged.
const MAX_LIST: u64 = 1 << 20;
const MAX_LIST_RECORDS: usize = 4096;
const SI_READONLY: u32 = 0x1;
const SI_HIDDEN: u32 = 0x2;
const SI_SYSTEM: u32 = 0x4;
const SI_ENCRYPTED: u32 = 0x4000;
const TAG_SYMLINK: u32 = 0xA000_000C;
const TAG_JUNCTION: u32 = 0xA000_0003;
const TAG_WOF: u32 = 0x8000_0017;
const INTERIX_LINK: &[u8] = b"IntxLNK\x01";
const MAX_NOTES: usize = 100;
/// The largest compression unit read (16 clusters of 64 KiB).
const MAX_UNIT: u64 = 1 << 20;

pub(crate) struct Ntfs {
    vol: Vol,
    cluster: u64,
    clusters: u64,
    record: u64,
    mft: Arc<Vec<Piece>>,
    mft_size: u64,
    notes: Mutex<Vec<String>>,
}

/// A file's record(s): its number, sequence, flags and every attribute, from extension records too.
pub(crate) struct File {
    pub n: u64,
    pub seq: u16,
    pub flags: u16,
    pub at: u64,
    pub attrs: Vec<Attr>,
}

impl Ntfs {
    pub(crate) fn open(mut vol: Vol) -> Result<Ntfs, BrowseError> {
        vol.fs = "NTFS";
        let b = vol.read(0, 512, "boot sector")?;
        let bad = |at: u64, reason: String| vol.corrupt("boot sector", at, reason);
        let bps = u64::from(le16(&b, 11));
        if !matches!(bps, 256 | 512 | 1024 | 2048 | 4096) {
            return Err(bad(11, format!("{bps} bytes per sector is invalid")));
        }
        let raw = byte(&b, 13);
        let spc = crate::fs::ntfs::sectors_per_cluster(raw)
            .ok_or_else(|| bad(13, format!("sectors per cluster byte {raw:#x} is invalid")))?;
        let cluster = bps * spc;
        let sectors = le64(&b, 0x28);
        if sectors.checked_mul(bps).is_none_or(|t| t > vol.size) || sectors < spc {
            return Err(vol.too_big("boot sector", 0x28, format!("{sectors} sectors")));
        }
        let clusters = sectors / spc;
        let mft_lcn = le64(&b, 0x30);
        let per = byte(&b, 0x40) as i8;
        let record = if per > 0 {
            cluster * per as u64
        } else {
            1u64.checked_shl(u32::from(per.unsigned_abs())).unwrap_or(0)
        };
        if !(512..=65_536).contains(&record) || !record.is_power_of_two() || mft_lcn >= clusters {
            return Err(bad(
                0x30,
                format!("the MFT (record size {record}) is out of range"),
            ));
        }
        let mut fs = Ntfs {
            vol,
            cluster,
            clusters,
            record,
            mft: Arc::new(Vec::new()),
            mft_size: 0,
            notes: Mutex::new(Vec::new()),
        };
        // $MFT's own record, read where the boot sector says; its runlist then locates the others.
        let at0 = mft_lcn * cluster;
        let mut rec0 = fs.vol.read(at0, record as usize, "MFT record 0")?;
        record::fixup(&mut rec0, b"FILE")
            .and_then(|()| record::header(&rec0).map(|_| ()))
            .map_err(|e| fs.vol.corrupt("MFT record 0", at0, e))?;
        let mut attrs =
            record::attributes(&rec0).map_err(|e| fs.vol.corrupt("MFT record 0", at0, e))?;
        let mut file = File {
            n: 0,
            seq: 0,
            flags: RECORD_IN_USE,
            at: at0,
            attrs: attrs.clone(),
        };
        fs.set_mft(&file)?;
        if attrs.iter().any(|a| a.ty == AT_ATTRIBUTE_LIST) {
            attrs = fs.extension_attrs(&file)?;
            file.attrs = attrs;
            fs.set_mft(&file)?;
        }
        fs.check_volume();
        Ok(fs)
    }

    /// Makes `file`'s unnamed `$DATA` the MFT that records are read from.
    fn set_mft(&mut self, file: &File) -> Result<(), BrowseError> {
        let (size, pieces) = self.data(file, AT_DATA, "")?;
        if size < self.record * FIRST_USER_RECORD {
            return Err(self
                .vol
                .corrupt("MFT record 0", file.at, "$MFT is too small"));
        }
        self.mft = Arc::new(pieces.list);
        self.mft_size = size;
        Ok(())
    }

    /// A note when `$Volume` is marked dirty.
    fn check_volume(&self) {
        const AT_VOLUME_INFORMATION: u32 = 0x70;
        let dirty = self.file(3).ok().and_then(|f| {
            let v = f
                .attrs
                .iter()
                .find(|a| a.ty == AT_VOLUME_INFORMATION)?
                .value
                .clone()?;
            Some(le16(&v, 10) & 1 != 0)
        });
        if dirty == Some(true) {
            self.note("the volume is marked dirty (Windows crashed or a check is pending); it is read as it is");
        }
    }

    fn note(&self, text: impl Into<String>) {
        if let Ok(mut n) = self.notes.lock() {
            if n.len() < MAX_NOTES {
                n.push(text.into());
            }
        }
    }

    /// MFT record `n`, fixed up and checked; `Ok(None)` for a record not in use.
    pub(crate) fn raw_record(&self, n: u64) -> Result<Option<(Vec<u8>, u64)>, BrowseError> {
        let off = n
            .checked_mul(self.record)
            .filter(|&o| {
                o.checked_add(self.record)
                    .is_some_and(|e| e <= self.mft_size)
            })
            .ok_or_else(|| {
                self.vol
                    .corrupt("MFT", 0, format!("record {n} lies past the end of $MFT"))
            })?;
        let mut buf = vec![0u8; self.record as usize];
        let mut r = FileReader::shared(
            self.vol.clone(),
            self.mft_size,
            self.mft.clone(),
            "$MFT".into(),
        );
        r.read_at(off, &mut buf)?;
        let at = self.disk_offset(off);
        if buf.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        record::fixup(&mut buf, b"FILE")
            .map_err(|e| self.vol.corrupt(&format!("MFT record {n}"), at, e))?;
        let h = record::header(&buf)
            .map_err(|e| self.vol.corrupt(&format!("MFT record {n}"), at, e))?;
        if h.flags & RECORD_IN_USE == 0 {
            return Ok(None);
        }
        Ok(Some((buf, at)))
    }

    /// Where byte `off` of the MFT lies on the partition (for messages).
    fn disk_offset(&self, off: u64) -> u64 {
        let i = self.mft.partition_point(|p| p.at + p.len <= off);
        match self.mft.get(i) {
            Some(Piece {
                at,
                src: Src::Disk(d),
                ..
            }) if *at <= off => d + (off - at),
            _ => 0,
        }
    }

    /// File `n` with all its attributes.
    pub(crate) fn file(&self, n: u64) -> Result<File, BrowseError> {
        let (rec, at) = self.raw_record(n)?.ok_or_else(|| {
            self.vol
                .corrupt("MFT", 0, format!("record {n} is not in use"))
        })?;
        let h = record::header(&rec).map_err(|e| self.vol.corrupt("MFT record", at, e))?;
        let attrs = record::attributes(&rec)
            .map_err(|e| self.vol.corrupt(&format!("MFT record {n}"), at, e))?;
        let mut f = File {
            n,
            seq: h.seq,
            flags: h.flags,
            at,
            attrs,
        };
        if f.attrs.iter().any(|a| a.ty == AT_ATTRIBUTE_LIST) {
            f.attrs = self.extension_attrs(&f)?;
        }
        Ok(f)
    }

    /// `file`'s attributes with those its attribute list keeps in extension records.
    fn extension_attrs(&self, file: &File) -> Result<Vec<Attr>, BrowseError> {
        let list = file
            .attrs
            .iter()
            .find(|a| a.ty == AT_ATTRIBUTE_LIST)
            .ok_or_else(|| self.vol.corrupt("attribute list", file.at, "missing"))?;
        let bytes = match &list.value {
            Some(v) => v.clone(),
            None => {
                let runs = runs::decode(list, self.clusters)
                    .map_err(|e| self.vol.corrupt("attribute list", file.at, e))?;
                let size = list.data_size().min(MAX_LIST);
                let p = runs::pieces(&runs, self.cluster, size, list.initialized(), None);
                FileReader::new(self.vol.clone(), size, p, "attribute list".into())
                    .read_all(MAX_LIST)?
            }
        };
        let mut attrs: Vec<Attr> = file
            .attrs
            .iter()
            .filter(|a| a.ty != AT_ATTRIBUTE_LIST)
            .cloned()
            .collect();
        for r in record::list_records(&bytes)
            .into_iter()
            .take(MAX_LIST_RECORDS)
        {
            if r == file.n {
                continue;
            }
            let Some((rec, at)) = self.raw_record(r)? else {
                continue;
            };
            let h = record::header(&rec).map_err(|e| self.vol.corrupt("MFT record", at, e))?;
            if h.base != file.n {
                return Err(self.vol.corrupt(
                    &format!("attribute list of record {}", file.n),
                    file.at,
                    format!("it names record {r}, which belongs to record {}", h.base),
                ));
            }
            attrs.extend(
                record::attributes(&rec)
                    .map_err(|e| self.vol.corrupt(&format!("MFT record {r}"), at, e))?,
            );
        }
        Ok(attrs)
    }

    /// The size and pieces of `file`'s attribute `ty` named `name` (all its segments).
    pub(crate) fn data(
        &self,
        file: &File,
        ty: u32,
        name: &str,
    ) -> Result<(u64, Pieces), BrowseError> {
        let what = format!("record {}'s attribute {ty:#x} {name:?}", file.n);
        let mut segs: Vec<&Attr> = file
            .attrs
            .iter()
            .filter(|a| a.ty == ty && a.name == name)
            .collect();
        let bad = |reason: String| {
            self.vol
                .corrupt(&format!("MFT record {}", file.n), file.at, reason)
        };
        if let Some(v) = segs.iter().find_map(|a| a.value.as_ref()) {
            let mut p = Pieces::default();
            p.push(0, v.len() as u64, Src::Bytes(Arc::new(v.clone())));
            return Ok((v.len() as u64, p));
        }
        segs.sort_by_key(|a| a.lowest_vcn());
        let first = segs
            .first()
            .ok_or_else(|| bad(format!("{what} is missing")))?;
        if first.lowest_vcn() != 0 {
            return Err(bad(format!("{what} lacks its first segment")));
        }
        let (size, init) = (first.data_size(), first.initialized());
        if size > first.allocated() {
            return Err(bad(format!(
                "{what} claims {size} bytes, more than it has allocated"
            )));
        }
        let mut all = Vec::new();
        for s in &segs {
            let runs = runs::decode(s, self.clusters).map_err(|e| bad(format!("{what}: {e}")))?;
            if runs.first().is_some_and(|r| {
                all.last()
                    .is_some_and(|l: &runs::Run| l.vcn + l.len != r.vcn)
            }) {
                return Err(bad(format!("{what}'s segments leave a gap or overlap")));
            }
            all.extend(runs);
        }
        if all.last().is_some_and(|r| {
            (r.vcn + r.len).saturating_mul(self.cluster) > first.allocated().max(size)
        }) {
            return Err(bad(format!(
                "{what}'s runlist maps more than its allocated size"
            )));
        }
        let unit = (first.flags & FLAG_COMPRESSED != 0 && first.compression_unit() > 0)
            .then(|| 1u64 << first.compression_unit().min(16));
        if unit.is_some_and(|u| u * self.cluster > MAX_UNIT) {
            return Err(self.vol.unsupported(format!(
                "{what}: compression units of {} clusters (Windows writes 16 of at most 4 KiB)",
                unit.unwrap_or(0)
            )));
        }
        Ok((size, runs::pieces(&all, self.cluster, size, init, unit)))
    }

    /// An entry for `file` named `name` in folder `parent`.
    fn entry(&self, name: String, file: &File, parent: u64) -> Entry {
        let si = file
            .attrs
            .iter()
            .find(|a| a.ty == AT_STANDARD_INFORMATION)
            .and_then(|a| a.value.clone());
        let si_flags = si.as_ref().map_or(0, |v| le32(v, 0x20));
        let data = file
            .attrs
            .iter()
            .find(|a| a.ty == AT_DATA && a.name.is_empty() && a.lowest_vcn() == 0);
        let kind = match self.link_target(file, si_flags) {
            Some(target) => Kind::Symlink { target },
            None if file.flags & RECORD_IS_DIR != 0 => Kind::Dir,
            None => Kind::File,
        };
        let mut e = Entry::new(
            name,
            kind,
            Id {
                node: file.n,
                aux: u64::from(file.seq),
                aux2: 0,
            },
        );
        e.size = data.map_or(0, Attr::data_size);
        if let Some(v) = &si {
            e.created = Time::ntfs(le64(v, 0));
            e.modified = Time::ntfs(le64(v, 8));
            e.accessed = Time::ntfs(le64(v, 0x18));
        }
        let dflags = data.map_or(0, |a| a.flags);
        e.flags.readonly = si_flags & SI_READONLY != 0;
        e.flags.hidden = si_flags & SI_HIDDEN != 0;
        e.flags.system = si_flags & SI_SYSTEM != 0;
        e.flags.compressed = dflags & FLAG_COMPRESSED != 0;
        e.flags.sparse = dflags & FLAG_SPARSE != 0;
        e.flags.encrypted = dflags & FLAG_ENCRYPTED != 0 || si_flags & SI_ENCRYPTED != 0;
        e.flags.metadata = file.n < FIRST_USER_RECORD
            || (e.name.starts_with('$') && (parent == ROOT || parent == EXTEND));
        let mut streams: Vec<Stream> = Vec::new();
        for a in file
            .attrs
            .iter()
            .filter(|a| a.ty == AT_DATA && !a.name.is_empty() && a.lowest_vcn() == 0)
        {
            streams.push(Stream {
                name: a.name.clone(),
                size: a.data_size(),
            });
        }
        e.streams = streams;
        e
    }

    /// Where a link points: a symbolic-link or junction reparse point, or an Interix link (a system
    /// file holding `IntxLNK\1` and the target in UTF-16), as ntfs-3g makes them.
    fn link_target(&self, file: &File, si_flags: u32) -> Option<String> {
        if let Some(v) = file
            .attrs
            .iter()
            .find(|a| a.ty == AT_REPARSE_POINT)
            .and_then(|a| a.value.as_ref())
        {
            let tag = le32(v, 0);
            let d = v.get(8..)?;
            let buffer = match tag {
                TAG_SYMLINK => d.get(12..)?,
                TAG_JUNCTION => d.get(8..)?,
                _ => return None,
            };
            let (sub_at, sub_len) = (usize::from(le16(d, 0)), usize::from(le16(d, 2)));
            let (print_at, print_len) = (usize::from(le16(d, 4)), usize::from(le16(d, 6)));
            let mut t = utf16(buffer.get(print_at..print_at + print_len)?);
            if t.is_empty() {
                t = utf16(buffer.get(sub_at..sub_at + sub_len)?);
                t = t.strip_prefix("\\??\\").map(str::to_owned).unwrap_or(t);
            }
            return Some(t.replace('\\', "/"));
        }
        if si_flags & SI_SYSTEM == 0 || file.flags & RECORD_IS_DIR != 0 {
            return None;
        }
        let data = file
            .attrs
            .iter()
            .find(|a| a.ty == AT_DATA && a.name.is_empty())?;
        if !(INTERIX_LINK.len() as u64 + 2..=4096).contains(&data.data_size()) {
            return None;
        }
        let (size, pieces) = self.data(file, AT_DATA, "").ok()?;
        let bytes = FileReader::new(self.vol.clone(), size, pieces, "link".into())
            .read_all(4096)
            .ok()?;
        bytes.strip_prefix(INTERIX_LINK).map(utf16)
    }

    /// The entries of folder record `dir` found by their parent references (when its index is damaged).
    fn by_parent(&self, dir: u64) -> Vec<(u64, u16, record::FileName)> {
        let mut out = Vec::new();
        for n in 0..self.mft_size / self.record {
            let Ok(Some((rec, _))) = self.raw_record(n) else {
                continue;
            };
            let Ok(h) = record::header(&rec) else {
                continue;
            };
            if h.base != 0 || n == dir {
                continue;
            }
            for a in record::attributes(&rec).unwrap_or_default() {
                if let Some(f) = a
                    .value
                    .as_deref()
                    .filter(|_| a.ty == AT_FILE_NAME)
                    .and_then(record::file_name)
                {
                    if f.parent == dir {
                        out.push((n, h.seq, f));
                    }
                }
            }
        }
        out
    }
}

impl Browse for Ntfs {
    fn kind(&self) -> &'static str {
        "NTFS"
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    fn root(&self) -> Result<Entry, BrowseError> {
        let f = self.file(ROOT)?;
        let mut e = self.entry("/".into(), &f, ROOT);
        if e.kind != Kind::Dir {
            return Err(self
                .vol
                .corrupt("MFT record 5", f.at, "the root folder is not a folder"));
        }
        e.flags.metadata = false;
        Ok(e)
    }

    fn children(&self, dir: &Entry) -> Result<Vec<Entry>, BrowseError> {
        dir.expect_dir()?;
        let f = self.file(dir.id.node)?;
        let named: Vec<(u64, u16, record::FileName)> = match index::names(self, &f) {
            Ok(v) => v.into_iter().map(|n| (n.record, n.seq, n.name)).collect(),
            Err(e) => {
                self.note(format!(
                    "folder {}: {e}; its entries were found through their parent references",
                    dir.name
                ));
                self.by_parent(dir.id.node)
            }
        };
        // One entry per name, DOS 8.3 names only where a record has no other.
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (n, seq, name) in &named {
            let long_exists = named.iter().any(|(m, _, o)| m == n && o.namespace != 2);
            if *n == dir.id.node
                || (name.namespace == 2 && long_exists)
                || !seen.insert((*n, name.name.clone()))
            {
                continue;
            }
            out.push(match self.file(*n) {
                Ok(f) if f.seq == *seq || *seq == 0 => {
                    self.entry(name.name.clone(), &f, dir.id.node)
                }
                other => {
                    let mut e = Entry::new(
                        name.name.clone(),
                        Kind::Other("damaged entry"),
                        Id::default(),
                    );
                    e.problem = Some(match other {
                        Err(err) => err.to_string(),
                        Ok(_) => {
                            format!("the entry points at record {n}, which now holds another file")
                        }
                    });
                    e
                }
            });
        }
        Ok(out)
    }

    fn open(&self, file: &Entry) -> Result<FileReader, BrowseError> {
        let f = self.file(file.id.node)?;
        let e = self.entry(file.name.clone(), &f, 0);
        if e.flags.encrypted {
            return Err(self.vol.unsupported(format!(
                "reading {}: it is encrypted with EFS and its key is not here",
                file.name
            )));
        }
        let wof = f
            .attrs
            .iter()
            .find(|a| a.ty == AT_REPARSE_POINT)
            .and_then(|a| a.value.as_ref());
        if wof.is_some_and(|v| le32(v, 0) == TAG_WOF) {
            return Err(self.vol.unsupported(format!(
                "reading {}: Windows keeps it compressed by WOF (\"compact\"), which is not read here",
                file.name
            )));
        }
        let stream = file.stream.as_deref().unwrap_or("");
        let (size, pieces) = self.data(&f, AT_DATA, stream)?;
        Ok(FileReader::new(
            self.vol.clone(),
            size,
            pieces,
            format!("file {}", file.name),
        ))
    }

    fn same_name(&self, a: &str, b: &str) -> bool {
        a.to_uppercase() == b.to_uppercase()
    }

    fn stream(&self, file: &Entry, name: &str) -> Result<Option<Entry>, BrowseError> {
        let Some(s) = file
            .streams
            .iter()
            .find(|s| s.name == name)
            .or_else(|| file.streams.iter().find(|s| self.same_name(&s.name, name)))
        else {
            return Ok(None);
        };
        let mut e = file.clone();
        e.name = format!("{}:{}", file.name, s.name);
        e.kind = Kind::File;
        e.size = s.size;
        e.stream = Some(s.name.clone());
        e.streams = Vec::new();
        Ok(Some(e))
    }
}

/// Decompresses one LZNT1 compression unit of `len` bytes stored in `ranges` of the partition.
pub(crate) fn decompress_unit(
    vol: &Vol,
    ranges: &[(u64, u64)],
    len: u64,
    what: &str,
) -> Result<Vec<u8>, BrowseError> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    if total > super::MAX_READ as u64 {
        return Err(vol.corrupt(
            what,
            ranges.first().map_or(0, |r| r.0),
            "a compression unit is too large",
        ));
    }
    let mut src = Vec::with_capacity(total as usize);
    for &(at, n) in ranges {
        src.extend(vol.read(at, n as usize, what)?);
    }
    let mut out = lznt1::decompress(&src, len as usize).map_err(|e| {
        vol.corrupt(
            what,
            ranges.first().map_or(0, |r| r.0),
            format!("LZNT1: {e}"),
        )
    })?;
    out.resize(len as usize, 0);
    Ok(out)
}
