//! Folders: the `$I30` index, a B-tree of `$FILE_NAME` keys whose root is the resident `$INDEX_ROOT`
//! and whose other nodes are INDX records in `$INDEX_ALLOCATION`, walked in order; each node once,
//! to a bounded depth.

use std::collections::HashSet;

use super::record::{self, FileName, AT_INDEX_ALLOCATION, AT_INDEX_ROOT};
use super::{File, Ntfs};
use crate::browse::{le16, le32, le64, BrowseError};

const I30: &str = "$I30";
const ENTRY_SUBNODE: u16 = 0x1;
const ENTRY_LAST: u16 = 0x2;
/// B-trees of NTFS folders are shallow; this bounds a damaged one.
const MAX_DEPTH: usize = 32;

/// One name in a folder: the record it names (number, sequence) and its `$FILE_NAME`.
pub(crate) struct Named {
    pub record: u64,
    pub seq: u16,
    pub name: FileName,
}

/// The names in folder `dir`, in index order.
pub(crate) fn names(fs: &Ntfs, dir: &File) -> Result<Vec<Named>, BrowseError> {
    let bad = |reason: String| fs.vol.corrupt("folder index", dir.at, reason);
    let root = dir
        .attrs
        .iter()
        .find(|a| a.ty == AT_INDEX_ROOT && a.name == I30)
        .and_then(|a| a.value.clone())
        .ok_or_else(|| bad(format!("record {} has no $I30 index root", dir.n)))?;
    let node_size = u64::from(le32(&root, 8));
    if !(512..=65_536).contains(&node_size) || !node_size.is_power_of_two() {
        return Err(bad(format!(
            "index records of {node_size} bytes are invalid"
        )));
    }
    let mut walk = Walk {
        fs,
        dir,
        node_size,
        alloc: None,
        seen: HashSet::new(),
        out: Vec::new(),
    };
    let start = 0x10 + le32(&root, 0x10) as usize;
    let end = (0x10 + le32(&root, 0x14) as usize).min(root.len());
    walk.node(&root, start, end, 0)?;
    Ok(walk.out)
}

struct Walk<'a> {
    fs: &'a Ntfs,
    dir: &'a File,
    node_size: u64,
    alloc: Option<crate::browse::FileReader>,
    seen: HashSet<u64>,
    out: Vec<Named>,
}

impl Walk<'_> {
    /// The entries of a node (`buf[start..end]`), children before each entry.
    fn node(
        &mut self,
        buf: &[u8],
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<(), BrowseError> {
        let bad = |reason: String| self.fs.vol.corrupt("folder index", self.dir.at, reason);
        let mut at = start;
        while at + 0x10 <= end {
            let len = usize::from(le16(buf, at + 8));
            let key_len = usize::from(le16(buf, at + 0xA));
            let flags = le16(buf, at + 0xC);
            if len < 0x10 || at + len > end || 0x10 + key_len > len {
                return Err(bad(format!("an entry at byte {at} of a node is malformed")));
            }
            if flags & ENTRY_SUBNODE != 0 {
                if len < 0x18 || depth >= MAX_DEPTH {
                    return Err(bad("a subnode link is malformed or too deep".into()));
                }
                self.child(le64(buf, at + len - 8), depth + 1)?;
            }
            if flags & ENTRY_LAST != 0 {
                break;
            }
            let r = le64(buf, at);
            if let Some(name) = buf
                .get(at + 0x10..at + 0x10 + key_len)
                .and_then(record::file_name)
            {
                self.out.push(Named {
                    record: r & 0xFFFF_FFFF_FFFF,
                    seq: (r >> 48) as u16,
                    name,
                });
            }
            at += len;
        }
        Ok(())
    }

    /// The node at `vcn` of the index allocation.
    fn child(&mut self, vcn: u64, depth: usize) -> Result<(), BrowseError> {
        let bad = |reason: String| self.fs.vol.corrupt("folder index", self.dir.at, reason);
        if !self.seen.insert(vcn) {
            return Err(bad(format!("index node {vcn} is linked twice (a loop)")));
        }
        if self.alloc.is_none() {
            let (size, pieces) = self.fs.data(self.dir, AT_INDEX_ALLOCATION, "$I30")?;
            self.alloc = Some(crate::browse::FileReader::new(
                self.fs.vol.clone(),
                size,
                pieces,
                format!("index of record {}", self.dir.n),
            ));
        }
        let unit = if self.node_size >= self.fs.cluster {
            self.fs.cluster
        } else {
            512
        };
        let off = vcn
            .checked_mul(unit)
            .ok_or_else(|| bad(format!("index node {vcn} is out of range")))?;
        let mut buf = vec![0u8; self.node_size as usize];
        let r = self
            .alloc
            .as_mut()
            .map_or(Ok(0), |a| a.read_at(off, &mut buf))?;
        if r != buf.len() {
            return Err(bad(format!("index node {vcn} lies past the index's end")));
        }
        record::fixup(&mut buf, b"INDX").map_err(|e| bad(format!("index node {vcn}: {e}")))?;
        let start = 0x18 + le32(&buf, 0x18) as usize;
        let end = (0x18 + le32(&buf, 0x1C) as usize).min(buf.len());
        self.node(&buf, start, end, depth)
    }
}
