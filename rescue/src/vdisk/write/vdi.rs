//! VDI, written: a dynamic image (type 1) of 1 MiB blocks. The 64-byte text line, the signature and the
//! version 1.1 header (`0x180` bytes, as QEMU writes it), the block map at byte 512 (`0xFFFFFFFF` for
//! blocks never written), the blocks from the next MiB on in the order they were written, and the count
//! of allocated blocks in the header.

use std::io;

use super::{blocks, put_le32, put_le64, random_id, Out, Source, Written};

const BLOCK: u64 = 1 << 20;
const MAP_AT: u64 = 512;
const TEXT: &[u8] = b"<<< Oracle VM VirtualBox Disk Image >>>\n";

pub(super) fn write(
    src: &Source,
    out: &mut Out,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Written> {
    let size = src.size;
    let count = size.div_ceil(BLOCK);
    let count32 = u32::try_from(count).map_err(|_| super::too_large("the VDI block count"))?;
    let mut map = vec![0xFFu8; (count * 4) as usize];
    let data_at = (MAP_AT + count * 4).next_multiple_of(1 << 20);
    out.end = data_at;
    let mut allocated = 0u32;
    blocks(src, BLOCK, tick, |i, b| {
        put_le32(&mut map, (i * 4) as usize, allocated);
        out.write_at(b, data_at + u64::from(allocated) * BLOCK)?;
        allocated += 1;
        Ok(())
    })?;
    let end = data_at + u64::from(allocated) * BLOCK;
    out.write_at(&map, MAP_AT)?;
    let mut h = vec![0u8; 512];
    h[..TEXT.len()].copy_from_slice(TEXT);
    put_le32(&mut h, 0x40, 0xBEDA_107F);
    put_le32(&mut h, 0x44, 0x0001_0001);
    put_le32(&mut h, 0x48, 0x180);
    put_le32(&mut h, 0x4C, 1);
    put_le32(&mut h, 0x154, MAP_AT as u32);
    let data32 = u32::try_from(data_at).map_err(|_| super::too_large("the VDI data offset"))?;
    put_le32(&mut h, 0x158, data32);
    put_le32(&mut h, 0x168, 512);
    put_le64(&mut h, 0x170, size);
    put_le32(&mut h, 0x178, BLOCK as u32);
    put_le32(&mut h, 0x180, count32);
    put_le32(&mut h, 0x184, allocated);
    h[0x188..0x198].copy_from_slice(&random_id());
    h[0x198..0x1A8].copy_from_slice(&random_id());
    out.write_at(&h, 0)?;
    // A file holding no block still ends where the data would begin.
    out.set_len(end.max(data_at))?;
    Ok(Written {
        stored: u64::from(allocated) * BLOCK,
        file_len: end.max(data_at),
    })
}
