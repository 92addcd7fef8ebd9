//! Linux swap: only the header page. Swap contents are scratch space by definition — unless the
//! area holds a hibernation image, which is the only copy of a suspended system and is captured raw.

use std::io::{Read, Seek};

use super::ranges::RangeSet;
use super::{Disk, FsError, UsedMap};

/// The page sizes mkswap may have used; the signature ends the first page.
const PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];

/// Signatures that replace the swap signature while a hibernation image is stored.
const HIBERNATION: [&[u8]; 4] = [b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001"];

pub(super) fn used_map<R: Read + Seek>(disk: &mut Disk<'_, R>) -> Result<UsedMap, FsError> {
    for page in PAGE_SIZES {
        if page > disk.size() {
            break;
        }
        let tail = disk.read(page - 10, 10)?;
        if tail == b"SWAPSPACE2" || tail == b"SWAP-SPACE" {
            let mut used = RangeSet::new();
            used.push(0..page);
            return Ok(UsedMap::from_set(used, disk.size(), page, disk.fs()));
        }
        if HIBERNATION.iter().any(|sig| tail.starts_with(sig)) {
            return Err(disk.unsupported(
                "the swap area holds a hibernation image (the only copy of a suspended system), so \
                 all of it is captured",
            ));
        }
    }
    Err(disk.inconsistent(
        0,
        "no swap signature at the end of the first page (4, 8, 16 or 64 KiB)",
    ))
}
