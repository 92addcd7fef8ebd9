//! VMDK, written: a hosted sparse extent with its descriptor embedded (`monolithicSparse`: 64 KiB grains,
//! every grain table allocated up front after a redundant copy of the grain directory and its tables, as
//! VMware and QEMU make them), or `streamOptimized` (as in OVA packages: each grain zlib-compressed behind
//! a 12-byte marker in disk order, then the grain tables, the grain directory and the footer, each behind
//! a metadata marker, and an end-of-stream marker).

use std::io::{self, Write};

use super::{blocks, put_le16, put_le32, put_le64, Out, Packer, Source, Written};

const GRAIN: u64 = 64 << 10;
const GRAIN_SECTORS: u64 = GRAIN / 512;
const GTES: u64 = 512;
const FLAG_NL_TEST: u32 = 1;
const FLAG_RGD: u32 = 1 << 1;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const GD_AT_END: u64 = u64::MAX;
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// The embedded descriptor of a disk of `sectors` sectors whose extent is the file `name`.
fn descriptor(sectors: u64, name: &str, kind: &str) -> String {
    let cylinders = (sectors / (16 * 63)).min(16383);
    let cid = u32::from_le_bytes(super::random_id()[..4].try_into().unwrap_or([0; 4]));
    let name = name.replace('"', "_");
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\ncreateType=\"{kind}\"\n\n\
         # Extent description\nRW {sectors} SPARSE \"{name}\"\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\nddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\n"
    )
}

/// The 512-byte sparse extent header.
#[allow(clippy::too_many_arguments)]
fn header(
    version: u32,
    flags: u32,
    sectors: u64,
    desc_sectors: u64,
    rgd: u64,
    gd: u64,
    overhead: u64,
    compressed: bool,
) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..4].copy_from_slice(b"KDMV");
    put_le32(&mut h, 4, version);
    put_le32(&mut h, 8, flags);
    put_le64(&mut h, 12, sectors);
    put_le64(&mut h, 20, GRAIN_SECTORS);
    put_le64(&mut h, 28, 1);
    put_le64(&mut h, 36, desc_sectors);
    put_le32(&mut h, 44, GTES as u32);
    put_le64(&mut h, 48, rgd);
    put_le64(&mut h, 56, gd);
    put_le64(&mut h, 64, overhead);
    h[73..77].copy_from_slice(b"\n \r\n");
    put_le16(&mut h, 77, u16::from(compressed));
    h
}

fn output_name(out: &Out) -> String {
    out.path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk.vmdk".into())
}

/// A sector number as the 32-bit grain table entry it goes into.
fn sector32(at: u64) -> io::Result<u32> {
    u32::try_from(at / 512)
        .map_err(|_| super::too_large("a VMDK grain's sector (the file passed 2 TiB)"))
}

fn table_bytes(entries: &[u32]) -> Vec<u8> {
    entries.iter().flat_map(|e| e.to_le_bytes()).collect()
}

pub(super) fn sparse(
    src: &Source,
    out: &mut Out,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Written> {
    let sectors = src.size.div_ceil(512);
    let gts = sectors.div_ceil(GTES * GRAIN_SECTORS);
    let gd_sectors = (gts * 4).div_ceil(512);
    let gt_sectors = gts * 4;
    let desc = descriptor(sectors, &output_name(out), "monolithicSparse");
    let desc_sectors = (desc.len() as u64).div_ceil(512).max(20);
    let rgd = 1 + desc_sectors;
    let gd = rgd + gd_sectors + gt_sectors;
    let overhead = (gd + gd_sectors + gt_sectors).next_multiple_of(GRAIN_SECTORS);
    out.end = overhead * 512;
    let mut gt = vec![0u32; (gts * GTES) as usize];
    let mut stored = 0;
    blocks(src, GRAIN, tick, |i, b| {
        let at = out.append(b)?;
        gt[i as usize] = sector32(at)?;
        stored += GRAIN;
        Ok(())
    })?;
    let end = out.end;
    for dir in [gd, rgd] {
        let tables: Vec<u32> = (0..gts)
            .map(|k| sector32((dir + gd_sectors + k * 4) * 512))
            .collect::<io::Result<_>>()?;
        out.write_at(&table_bytes(&gt), (dir + gd_sectors) * 512)?;
        out.write_at(&table_bytes(&tables), dir * 512)?;
    }
    out.write_at(desc.as_bytes(), 512)?;
    let h = header(
        1,
        FLAG_NL_TEST | FLAG_RGD,
        sectors,
        desc_sectors,
        rgd,
        gd,
        overhead,
        false,
    );
    out.write_at(&h, 0)?;
    out.set_len(end.max(overhead * 512))?;
    Ok(Written {
        stored,
        file_len: out.end,
    })
}

/// A 512-byte metadata marker: `sectors` sectors of `kind` follow.
fn marker(sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    put_le64(&mut m, 0, sectors);
    put_le32(&mut m, 12, kind);
    m
}

fn zlib(b: &[u8]) -> io::Result<Vec<u8>> {
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(b.len() / 2),
        flate2::Compression::new(6),
    );
    z.write_all(b)?;
    z.finish()
}

pub(super) fn stream(
    src: &Source,
    out: &mut Out,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Written> {
    let sectors = src.size.div_ceil(512);
    let gts = sectors.div_ceil(GTES * GRAIN_SECTORS);
    let desc = descriptor(sectors, &output_name(out), "streamOptimized");
    let desc_sectors = (desc.len() as u64).div_ceil(512);
    let overhead = 1 + desc_sectors;
    let flags = FLAG_NL_TEST | FLAG_COMPRESSED | FLAG_MARKERS;
    out.write_at(
        &header(
            3,
            flags,
            sectors,
            desc_sectors,
            0,
            GD_AT_END,
            overhead,
            true,
        ),
        0,
    )?;
    let mut d = desc.into_bytes();
    d.resize((desc_sectors * 512) as usize, 0);
    out.write_at(&d, 512)?;
    out.end = overhead * 512;
    let mut gt = vec![0u32; (gts * GTES) as usize];
    let mut stored = 0u64;
    let mut packer = Packer::new(zlib);
    let mut emit = |i: u64, _: &[u8], z: Vec<u8>| -> io::Result<()> {
        let mut g = Vec::with_capacity(12 + z.len() + 512);
        g.extend_from_slice(&(i * GRAIN_SECTORS).to_le_bytes());
        g.extend_from_slice(&(z.len() as u32).to_le_bytes());
        g.extend_from_slice(&z);
        g.resize(g.len().next_multiple_of(512), 0);
        let at = out.append(&g)?;
        gt[i as usize] = sector32(at)?;
        stored += g.len() as u64;
        Ok(())
    };
    blocks(src, GRAIN, tick, |i, b| packer.push(i, b, &mut emit))?;
    packer.flush(&mut emit)?;
    let mut dir = vec![0u32; gts as usize];
    for (k, table) in gt.chunks(GTES as usize).enumerate() {
        if table.iter().all(|&e| e == 0) {
            continue;
        }
        out.append(&marker(4, MARKER_GT))?;
        dir[k] = sector32(out.end)?;
        let mut t = table_bytes(table);
        t.resize(2048, 0);
        out.append(&t)?;
    }
    let gd_sectors = (gts * 4).div_ceil(512);
    out.append(&marker(gd_sectors, MARKER_GD))?;
    let gd = out.end / 512;
    let mut g = table_bytes(&dir);
    g.resize((gd_sectors * 512) as usize, 0);
    out.append(&g)?;
    out.append(&marker(1, MARKER_FOOTER))?;
    out.append(&header(
        3,
        flags,
        sectors,
        desc_sectors,
        0,
        gd,
        overhead,
        true,
    ))?;
    out.append(&marker(0, MARKER_EOS))?;
    Ok(Written {
        stored,
        file_len: out.end,
    })
}
