//! VHD, written: fixed (the raw disk, then the footer) and dynamic (a footer copy, the `cxsparse` header,
//! the block allocation table, 2 MiB blocks each behind a 512-byte sector bitmap, the footer).
//!
//! The size: the footer's `current_size` is the exact size, and the geometry the specification's
//! algorithm gives. QEMU takes `current_size` only from creators it knows and the geometry's (smaller)
//! size otherwise, so the creator is `qem2`, as `qemu-img` writes it with `force_size`; Hyper-V, Windows
//! and VirtualBox take `current_size` whatever the creator.

use std::io;

use super::{blocks, now, put_be16, put_be32, put_be64, random_id, raw, Out, Source, Written};
use crate::vdisk::vhd::checksum;

/// The specification's largest disk, 2040 GiB (`0xFF000000` sectors), which QEMU enforces too.
pub(super) const MAX_SIZE: u64 = 0xFF00_0000 * 512;
const BLOCK: u64 = 2 << 20;
/// Seconds from the Unix epoch to 2000-01-01 00:00 UTC, VHD's epoch.
const EPOCH_2000: u64 = 946_684_800;

/// The CHS geometry the VHD specification computes for `size` bytes.
pub(crate) fn geometry(size: u64) -> (u16, u8, u8) {
    let total = (size / 512).min(65535 * 16 * 255);
    let (spt, heads, cth) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut spt = 17;
        let mut cth = total / spt;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            spt = 31;
            heads = 16;
            cth = total / spt;
        }
        if cth >= heads * 1024 {
            spt = 63;
            heads = 16;
            cth = total / spt;
        }
        (spt, heads, cth)
    };
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// The 512-byte footer of a disk of `size` bytes: type 2 (fixed, no header) or 3 (dynamic, header at 512).
fn footer(size: u64, dynamic: bool) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    put_be32(&mut f, 8, 2);
    put_be32(&mut f, 12, 0x0001_0000);
    put_be64(&mut f, 16, if dynamic { 512 } else { u64::MAX });
    put_be32(&mut f, 24, now().saturating_sub(EPOCH_2000) as u32);
    f[28..32].copy_from_slice(b"qem2");
    put_be32(&mut f, 32, 0x0001_0000);
    f[36..40].copy_from_slice(b"Wi2k");
    put_be64(&mut f, 40, size);
    put_be64(&mut f, 48, size);
    let (c, h, s) = geometry(size);
    put_be16(&mut f, 56, c);
    f[58] = h;
    f[59] = s;
    put_be32(&mut f, 60, if dynamic { 3 } else { 2 });
    f[68..84].copy_from_slice(&random_id());
    let sum = checksum(&f, 64);
    put_be32(&mut f, 64, sum);
    f
}

pub(super) fn fixed(
    src: &Source,
    out: &mut Out,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Written> {
    let size = src.size.next_multiple_of(512);
    let w = raw(src, out, tick, 0)?;
    out.write_at(&footer(size, false), size)?;
    Ok(Written {
        stored: w.stored,
        file_len: size + 512,
    })
}

pub(super) fn dynamic(
    src: &Source,
    out: &mut Out,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Written> {
    let size = src.size.next_multiple_of(512);
    let entries = size.div_ceil(BLOCK);
    let bat_at = 1536u64;
    let bat_len = (entries * 4).next_multiple_of(512);
    let mut bat = vec![0xFFu8; bat_len as usize];
    out.end = bat_at + bat_len;
    let bitmap = [0xFFu8; 512];
    let mut stored = 0;
    blocks(src, BLOCK, tick, |i, b| {
        let at = out.end;
        put_be32(&mut bat, (i * 4) as usize, (at / 512) as u32);
        out.write_at(&bitmap, at)?;
        out.write_at(b, at + 512)?;
        stored += BLOCK;
        Ok(())
    })?;
    let end = out.end;
    let foot = footer(size, true);
    out.write_at(&bat, bat_at)?;
    let mut h = [0u8; 1024];
    h[..8].copy_from_slice(b"cxsparse");
    put_be64(&mut h, 8, u64::MAX);
    put_be64(&mut h, 16, bat_at);
    put_be32(&mut h, 24, 0x0001_0000);
    put_be32(&mut h, 28, entries as u32);
    put_be32(&mut h, 32, BLOCK as u32);
    let sum = checksum(&h, 36);
    put_be32(&mut h, 36, sum);
    out.write_at(&h, 512)?;
    out.write_at(&foot, end)?;
    // The copy at the start last: until it is there, the file is no VHD.
    out.write_at(&foot, 0)?;
    Ok(Written {
        stored,
        file_len: end + 512,
    })
}
