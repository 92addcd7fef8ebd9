//! VHDX, written: a dynamic disk of 2 MiB blocks. The file type identifier; two headers (CRC-32C, the
//! second with the higher sequence number, a zero log GUID: nothing to replay) and two region tables; a
//! 1 MiB log that is empty; the metadata region (file parameters, disk size, disk id, logical and
//! physical sector sizes); the block allocation table, where every `chunk ratio` payload entries are
//! followed by one sector-bitmap entry (never present: the disk has no parent); the payload blocks,
//! each 1 MiB aligned. The headers go in last.

use std::io;

use super::{blocks, put_le16, put_le32, put_le64, random_id, Out, Source, Written};
use crate::vdisk::vhdx::{
    crc32c, guid, BAT_GUID, DISK_SIZE, FILE_PARAMETERS, LOGICAL_SECTOR, METADATA_GUID,
};

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
const BLOCK: u64 = 2 * MIB;
const LOG_AT: u64 = MIB;
const LOG_LEN: u64 = MIB;
const METADATA_AT: u64 = 2 * MIB;
const METADATA_LEN: u64 = MIB;
const BAT_AT: u64 = 3 * MIB;
const FULLY_PRESENT: u64 = 6;

const DISK_ID: [u8; 16] = guid(
    0xBECA_12AB,
    0xB2E6,
    0x4523,
    [0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46],
);
const PHYSICAL_SECTOR: [u8; 16] = guid(
    0xCDA3_48C7,
    0x445D,
    0x4471,
    [0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56],
);

/// The BAT entry of payload block `b`: every `ratio` payload entries are followed by a bitmap entry.
fn bat_index(b: u64, ratio: u64) -> u64 {
    b + b / ratio
}

fn metadata(size: u64, sector: u32) -> Vec<u8> {
    let mut m = vec![0u8; 64 * KIB as usize];
    m[..8].copy_from_slice(b"metadata");
    // (item, its bytes, flags: bit 1 virtual disk, bit 2 required)
    let items: [([u8; 16], Vec<u8>, u32); 5] = [
        (
            FILE_PARAMETERS,
            {
                let mut p = vec![0u8; 8];
                put_le32(&mut p, 0, BLOCK as u32);
                p
            },
            4,
        ),
        (DISK_SIZE, size.to_le_bytes().to_vec(), 6),
        (DISK_ID, random_id().to_vec(), 6),
        (LOGICAL_SECTOR, sector.to_le_bytes().to_vec(), 6),
        (PHYSICAL_SECTOR, 4096u32.to_le_bytes().to_vec(), 6),
    ];
    put_le16(&mut m, 10, items.len() as u16);
    let mut data = Vec::new();
    for (k, (id, bytes, flags)) in items.iter().enumerate() {
        let e = 32 + k * 32;
        m[e..e + 16].copy_from_slice(id);
        put_le32(&mut m, e + 16, (64 * KIB) as u32 + data.len() as u32);
        put_le32(&mut m, e + 20, bytes.len() as u32);
        put_le32(&mut m, e + 24, *flags);
        data.extend_from_slice(bytes);
        data.resize(data.len().next_multiple_of(8), 0);
    }
    m.extend_from_slice(&data);
    m
}

fn header(seq: u64, file_write: &[u8; 16], data_write: &[u8; 16]) -> Vec<u8> {
    let mut h = vec![0u8; 4 * KIB as usize];
    h[..4].copy_from_slice(b"head");
    put_le64(&mut h, 8, seq);
    h[16..32].copy_from_slice(file_write);
    h[32..48].copy_from_slice(data_write);
    // log GUID (48..64) zero: the log is empty.
    put_le16(&mut h, 66, 1);
    put_le32(&mut h, 68, LOG_LEN as u32);
    put_le64(&mut h, 72, LOG_AT);
    let sum = crc32c(&h, 4);
    put_le32(&mut h, 4, sum);
    h
}

fn region_table(bat_len: u64) -> Vec<u8> {
    let mut r = vec![0u8; 64 * KIB as usize];
    r[..4].copy_from_slice(b"regi");
    put_le32(&mut r, 8, 2);
    for (k, (id, at, len)) in [
        (BAT_GUID, BAT_AT, bat_len),
        (METADATA_GUID, METADATA_AT, METADATA_LEN),
    ]
    .iter()
    .enumerate()
    {
        let e = 16 + k * 32;
        r[e..e + 16].copy_from_slice(id);
        put_le64(&mut r, e + 16, *at);
        put_le32(&mut r, e + 24, *len as u32);
        put_le32(&mut r, e + 28, 1);
    }
    let sum = crc32c(&r, 4);
    put_le32(&mut r, 4, sum);
    r
}

pub(super) fn write(
    src: &Source,
    out: &mut Out,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Written> {
    let sector = if src.sector == 4096 { 4096 } else { 512 };
    let size = src.size.next_multiple_of(u64::from(sector));
    let ratio = (1u64 << 23) * u64::from(sector) / BLOCK;
    let payload = size.div_ceil(BLOCK).max(1);
    let entries = bat_index(payload - 1, ratio) + 1;
    let bat_len = (entries * 8).next_multiple_of(MIB);
    let bat_len32 =
        u32::try_from(bat_len).map_err(|_| super::too_large("the VHDX block allocation table"))?;
    let mut bat = vec![0u8; bat_len as usize];
    out.end = BAT_AT + bat_len;
    let mut stored = 0;
    blocks(src, BLOCK, tick, |i, b| {
        out.align(MIB);
        let at = out.append(b)?;
        put_le64(
            &mut bat,
            (bat_index(i, ratio) * 8) as usize,
            at | FULLY_PRESENT,
        );
        stored += BLOCK;
        Ok(())
    })?;
    let end = out.end.next_multiple_of(MIB);
    out.write_at(&bat, BAT_AT)?;
    out.write_at(&metadata(size, sector), METADATA_AT)?;
    // The log stays a hole: zeros, and a zero log GUID says there is nothing in it.
    let regions = region_table(u64::from(bat_len32));
    out.write_at(&regions, 192 * KIB)?;
    out.write_at(&regions, 256 * KIB)?;
    let mut ident = vec![0u8; 64 * KIB as usize];
    ident[..8].copy_from_slice(b"vhdxfile");
    let creator: Vec<u8> = concat!("rescue ", env!("CARGO_PKG_VERSION"))
        .encode_utf16()
        .flat_map(|c| c.to_le_bytes())
        .collect();
    ident[8..8 + creator.len()].copy_from_slice(&creator);
    out.write_at(&ident, 0)?;
    let (fw, dw) = (random_id(), random_id());
    out.write_at(&header(1, &fw, &dw), 64 * KIB)?;
    out.write_at(&header(2, &fw, &dw), 128 * KIB)?;
    out.set_len(end)?;
    Ok(Written {
        stored,
        file_len: end,
    })
}
