//! Directory entries, read linearly block by block (or from inline data). Hash-tree index blocks,
//! checksum tails and deleted entries have inode 0 and are skipped.

use super::{feature, map, Ext, Inode, FL_INLINE};
use crate::browse::{byte, le16, le32, BrowseError};

/// A folder larger than this is refused (the kernel's largest is 2^32 blocks; real ones are far
/// smaller, and every entry read costs memory).
const MAX_DIR_BYTES: u64 = 1 << 30;

/// `(name, inode)` of each entry of directory `inode`, without `.` and `..`.
pub(super) fn read(fs: &Ext, inode: &Inode) -> Result<Vec<(String, u64)>, BrowseError> {
    if inode.mode & 0xF000 != 0x4000 {
        return Err(fs.vol.corrupt(
            "inode",
            inode.at,
            format!("inode {} is not a folder", inode.ino),
        ));
    }
    let mut out = Vec::new();
    if inode.flags & FL_INLINE != 0 {
        // The block area: the parent's inode number, then entries; more entries in system.data.
        let head = inode.block.get(4..).unwrap_or_default();
        parse(fs, head, inode.at + 0x2C, &mut out)?;
        parse(fs, map::system_data(fs, inode), inode.at, &mut out)?;
        return Ok(out);
    }
    if inode.size > MAX_DIR_BYTES.min(fs.vol.size) {
        return Err(fs.vol.corrupt(
            "inode",
            inode.at,
            format!("folder inode {} claims {} bytes", inode.ino, inode.size),
        ));
    }
    let mut r = fs.reader(inode)?;
    let mut block = vec![0u8; fs.bs as usize];
    let mut pos = 0u64;
    while pos < inode.size {
        let n = r.read_at(pos, &mut block)?;
        if n == 0 {
            break;
        }
        parse(fs, &block[..n], inode.at, &mut out)?;
        pos += n as u64;
    }
    Ok(out)
}

/// Adds the live entries of one directory block (`at` names it in errors).
fn parse(fs: &Ext, b: &[u8], at: u64, out: &mut Vec<(String, u64)>) -> Result<(), BrowseError> {
    let filetype = fs.incompat & feature::FILETYPE != 0;
    let mut off = 0usize;
    while off + 8 <= b.len() {
        let ino = u64::from(le32(b, off));
        let mut rec_len = usize::from(le16(b, off + 4));
        if fs.bs >= 65_536 && (rec_len == 65_535 || rec_len == 0) {
            rec_len = fs.bs as usize;
        }
        let name_len = if filetype {
            usize::from(byte(b, off + 6))
        } else {
            usize::from(le16(b, off + 6))
        };
        if rec_len < 8 || rec_len % 4 != 0 || off + rec_len > b.len() || 8 + name_len > rec_len {
            return Err(fs.vol.corrupt(
                "directory block",
                at,
                format!("an entry at byte {off} of a block has length {rec_len}"),
            ));
        }
        if ino != 0 && name_len > 0 {
            let name = b.get(off + 8..off + 8 + name_len).unwrap_or_default();
            if name != b"." && name != b".." {
                out.push((String::from_utf8_lossy(name).into_owned(), ino));
            }
        }
        off += rec_len;
    }
    Ok(())
}
