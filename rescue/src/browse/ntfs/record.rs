//! MFT records and index records: update sequence fixups, and the attributes of a record.

use crate::browse::{byte, le16, le32, le64, utf16};

pub(crate) const AT_STANDARD_INFORMATION: u32 = 0x10;
pub(crate) const AT_ATTRIBUTE_LIST: u32 = 0x20;
pub(crate) const AT_FILE_NAME: u32 = 0x30;
pub(crate) const AT_DATA: u32 = 0x80;
pub(crate) const AT_INDEX_ROOT: u32 = 0x90;
pub(crate) const AT_INDEX_ALLOCATION: u32 = 0xA0;
pub(crate) const AT_REPARSE_POINT: u32 = 0xC0;
const AT_END: u32 = 0xFFFF_FFFF;

/// Checks the signature `magic` of a record and undoes its update sequence array (the used-block
/// maps' fixup: a stride whose last two bytes are not the sequence number was torn).
pub(crate) fn fixup(rec: &mut [u8], magic: &[u8; 4]) -> Result<(), String> {
    if rec.get(..4) != Some(magic.as_slice()) {
        return Err(format!("no {} signature", String::from_utf8_lossy(magic)));
    }
    crate::fs::ntfs::fixup(rec)
}

/// One attribute of a record, as stored.
#[derive(Debug, Clone)]
pub(crate) struct Attr {
    pub ty: u32,
    pub name: String,
    pub flags: u16,
    /// The value of a resident attribute.
    pub value: Option<Vec<u8>>,
    /// The header and mapping pairs of a non-resident one.
    pub raw: Vec<u8>,
}

pub(crate) const FLAG_COMPRESSED: u16 = 0x0001;
pub(crate) const FLAG_ENCRYPTED: u16 = 0x4000;
pub(crate) const FLAG_SPARSE: u16 = 0x8000;

impl Attr {
    /// The first cluster a segment of a non-resident attribute maps (0 for a resident one).
    pub fn lowest_vcn(&self) -> u64 {
        if self.value.is_some() {
            return 0;
        }
        le64(&self.raw, 0x10)
    }
    pub fn compression_unit(&self) -> u8 {
        byte(&self.raw, 0x22)
    }
    /// Bytes of data, of it initialised, and allocated (valid in the first segment).
    pub fn data_size(&self) -> u64 {
        match &self.value {
            Some(v) => v.len() as u64,
            None => le64(&self.raw, 0x30),
        }
    }
    pub fn initialized(&self) -> u64 {
        match &self.value {
            Some(v) => v.len() as u64,
            None => le64(&self.raw, 0x38),
        }
    }
    pub fn allocated(&self) -> u64 {
        le64(&self.raw, 0x28)
    }
}

/// A checked MFT record's header fields.
pub(crate) struct Header {
    pub seq: u16,
    pub flags: u16,
    pub base: u64,
}

pub(crate) const RECORD_IN_USE: u16 = 0x1;
pub(crate) const RECORD_IS_DIR: u16 = 0x2;

/// The header of a fixed-up MFT record, if it is sound.
pub(crate) fn header(rec: &[u8]) -> Result<Header, String> {
    let first = usize::from(le16(rec, 0x14));
    let used = le32(rec, 0x18) as usize;
    if first < 0x18 || first >= used || used > rec.len() || !first.is_multiple_of(8) {
        return Err("its header is malformed".into());
    }
    Ok(Header {
        seq: le16(rec, 0x10),
        flags: le16(rec, 0x16),
        base: le64(rec, 0x20) & 0xFFFF_FFFF_FFFF,
    })
}

/// The attributes of a record whose header is sound; stops at the end marker or the first malformed
/// attribute (`Err` says which).
pub(crate) fn attributes(rec: &[u8]) -> Result<Vec<Attr>, String> {
    let used = (le32(rec, 0x18) as usize).min(rec.len());
    let mut at = usize::from(le16(rec, 0x14));
    let mut out = Vec::new();
    loop {
        let ty = le32(rec, at);
        if ty == AT_END {
            return Ok(out);
        }
        let len = le32(rec, at + 4) as usize;
        if len < 0x18 || !len.is_multiple_of(8) || at + len > used {
            return Err(format!(
                "attribute {ty:#x} at byte {at} of the record is malformed"
            ));
        }
        let a = &rec[at..at + len];
        let name_len = usize::from(byte(a, 9));
        let name_at = usize::from(le16(a, 10));
        let name = a
            .get(name_at..name_at + 2 * name_len)
            .map(utf16)
            .ok_or_else(|| format!("attribute {ty:#x}'s name lies outside it"))?;
        let value = if byte(a, 8) == 0 {
            let vlen = le32(a, 0x10) as usize;
            let voff = usize::from(le16(a, 0x14));
            Some(
                a.get(voff..voff.saturating_add(vlen))
                    .ok_or_else(|| format!("attribute {ty:#x}'s value lies outside it"))?
                    .to_vec(),
            )
        } else {
            if len < 0x40 {
                return Err(format!("non-resident attribute {ty:#x} is too short"));
            }
            None
        };
        out.push(Attr {
            ty,
            name,
            flags: le16(a, 0x0C),
            value,
            raw: a.to_vec(),
        });
        at += len;
    }
}

/// One entry of an attribute list: the attribute's type and the record holding it.
pub(crate) fn list_records(list: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 0x1A <= list.len() {
        let len = usize::from(le16(list, at + 4));
        if len < 0x1A {
            break;
        }
        let r = le64(list, at + 0x10) & 0xFFFF_FFFF_FFFF;
        if !out.contains(&r) {
            out.push(r);
        }
        at += len;
    }
    out
}

/// A `$FILE_NAME` value: parent record, name, namespace (0 POSIX, 1 Win32, 2 DOS, 3 both).
pub(crate) struct FileName {
    pub parent: u64,
    pub name: String,
    pub namespace: u8,
}

pub(crate) fn file_name(v: &[u8]) -> Option<FileName> {
    let len = usize::from(byte(v, 0x40));
    let name = v.get(0x42..0x42 + 2 * len).map(utf16)?;
    Some(FileName {
        parent: le64(v, 0) & 0xFFFF_FFFF_FFFF,
        name,
        namespace: byte(v, 0x41),
    })
}
