//! qcow2 version 3, written: 64 KiB clusters, 16-bit refcounts. The data clusters first, from cluster 1 on,
//! in disk order (compressed ones packed byte after byte, as QEMU packs them); then the L2 tables, the L1
//! table, and the refcount blocks and table, sized so that they count themselves too; the header (with
//! the compression type, and the incompatible-feature bit zstd needs) last.
//!
//! Compressed clusters (`--compress zlib|zstd`): deflate with a 4 KiB window (QEMU inflates with one) or a
//! zstd frame; a cluster that does not shrink is stored as it is. A compressed cluster's L2 entry holds
//! its byte offset and the count of 512-byte sectors it reaches into beyond the first; every host
//! cluster those sectors touch is counted once per compressed cluster, as `qemu-img check` counts.

use std::io;

use super::{blocks, put_be32, put_be64, Compress, Out, Packer, Source, Written};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Clusters one 16-bit refcount block counts.
const PER_REFBLOCK: u64 = CLUSTER / 2;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
/// Where a compressed cluster's sector count starts in its L2 entry.
const CSIZE_SHIFT: u32 = 62 - (CLUSTER_BITS - 8);
const HEADER_LEN: u32 = 112;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;

/// Compress one cluster; an empty result means "store it as it is".
fn deflate(b: &[u8]) -> io::Result<Vec<u8>> {
    let mut c = flate2::Compress::new_with_window_bits(flate2::Compression::new(6), false, 12);
    let mut out = Vec::with_capacity(b.len());
    match c.compress_vec(b, &mut out, flate2::FlushCompress::Finish) {
        Ok(flate2::Status::StreamEnd) if out.len() < b.len() => Ok(out),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(io::Error::other(format!("deflate: {e}"))),
    }
}

fn zstd(b: &[u8]) -> io::Result<Vec<u8>> {
    let out = zstd::bulk::compress(b, 3)?;
    Ok(if out.len() < b.len() { out } else { Vec::new() })
}

/// The clusters written so far and how many references each has.
struct Refs(Vec<u16>);

impl Refs {
    fn add(&mut self, from: u64, to: u64) {
        // clusters `from..to`
        if self.0.len() < to as usize {
            self.0.resize(to as usize, 0);
        }
        for c in from..to {
            self.0[c as usize] = self.0[c as usize].saturating_add(1);
        }
    }
}

struct Writer<'o, 'f> {
    out: &'o mut Out<'f>,
    l2: Vec<Option<Vec<u64>>>,
    refs: Refs,
    stored: u64,
}

impl Writer<'_, '_> {
    fn set(&mut self, cluster: u64, entry: u64) {
        let t = self.l2[(cluster / L2_ENTRIES) as usize]
            .get_or_insert_with(|| vec![0; L2_ENTRIES as usize]);
        t[(cluster % L2_ENTRIES) as usize] = entry;
    }

    /// A whole cluster, cluster-aligned.
    fn plain(&mut self, cluster: u64, b: &[u8]) -> io::Result<()> {
        self.out.align(CLUSTER);
        let at = self.out.append(b)?;
        self.refs.add(at / CLUSTER, at / CLUSTER + 1);
        self.set(cluster, at | COPIED);
        self.stored += CLUSTER;
        Ok(())
    }

    fn packed(&mut self, cluster: u64, b: &[u8], z: Vec<u8>) -> io::Result<()> {
        if z.is_empty() {
            return self.plain(cluster, b);
        }
        let at = self.out.append(&z)?;
        let first = at / 512;
        let extra = (at + z.len() as u64 - 1) / 512 - first;
        self.refs.add(
            first * 512 / CLUSTER,
            ((first + extra + 1) * 512).div_ceil(CLUSTER),
        );
        self.set(cluster, COMPRESSED | (extra << CSIZE_SHIFT) | at);
        self.stored += z.len() as u64;
        Ok(())
    }
}

fn table_bytes(entries: &[u64], len: u64) -> Vec<u8> {
    let mut b: Vec<u8> = entries.iter().flat_map(|e| e.to_be_bytes()).collect();
    b.resize(len as usize, 0);
    b
}

pub(super) fn write(
    src: &Source,
    compress: Compress,
    out: &mut Out,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Written> {
    let size = src.size;
    let clusters = size.div_ceil(CLUSTER);
    let l1_size = clusters.div_ceil(L2_ENTRIES).max(1);
    let l1_size32 = u32::try_from(l1_size).map_err(|_| super::too_large("the qcow2 L1 size"))?;
    out.end = CLUSTER;
    let mut w = Writer {
        out,
        l2: vec![None; l1_size as usize],
        refs: Refs(vec![1]),
        stored: 0,
    };
    match compress {
        Compress::None => blocks(src, CLUSTER, tick, |i, b| w.plain(i, b))?,
        Compress::Zlib | Compress::Zstd => {
            let f = if compress == Compress::Zlib {
                deflate
            } else {
                zstd
            };
            let mut packer = Packer::new(f);
            let mut emit = |i: u64, b: &[u8], z: Vec<u8>| w.packed(i, b, z);
            blocks(src, CLUSTER, tick, |i, b| packer.push(i, b, &mut emit))?;
            packer.flush(&mut emit)?;
        }
    }
    // The L2 tables, then the L1 table.
    w.out.align(CLUSTER);
    let meta = w.out.end;
    let mut l1 = vec![0u64; l1_size as usize];
    for (k, t) in w.l2.iter().enumerate() {
        if let Some(t) = t {
            let at = w.out.append(&table_bytes(t, CLUSTER))?;
            l1[k] = at | COPIED;
        }
    }
    let l1_len = (l1_size * 8).next_multiple_of(CLUSTER);
    let l1_at = w.out.append(&table_bytes(&l1, l1_len))?;
    let mut refs = std::mem::replace(&mut w.refs, Refs(Vec::new()));
    // The L2 and L1 tables: one reference each.
    refs.add(meta / CLUSTER, w.out.end / CLUSTER);
    // Refcount blocks and table that count every cluster, themselves included.
    let base = w.out.end / CLUSTER;
    let (mut blocks_n, mut table_n) = (0u64, 0u64);
    loop {
        let total = base + blocks_n + table_n;
        let b = total.div_ceil(PER_REFBLOCK);
        let t = (b * 8).div_ceil(CLUSTER).max(1);
        if (b, t) == (blocks_n, table_n) {
            break;
        }
        (blocks_n, table_n) = (b, t);
    }
    refs.add(base, base + blocks_n + table_n);
    let mut table = Vec::with_capacity(blocks_n as usize);
    for k in 0..blocks_n {
        let from = (k * PER_REFBLOCK) as usize;
        let to = ((k + 1) * PER_REFBLOCK).min(refs.0.len() as u64) as usize;
        let mut b = vec![0u8; CLUSTER as usize];
        for (j, r) in refs.0.get(from..to).unwrap_or(&[]).iter().enumerate() {
            b[j * 2..j * 2 + 2].copy_from_slice(&r.to_be_bytes());
        }
        table.push(w.out.append(&b)?);
    }
    let table_at = w.out.append(&table_bytes(&table, table_n * CLUSTER))?;
    let end = w.out.end;
    let mut h = vec![0u8; CLUSTER as usize];
    h[..4].copy_from_slice(b"QFI\xfb");
    put_be32(&mut h, 4, 3);
    put_be32(&mut h, 20, CLUSTER_BITS);
    put_be64(&mut h, 24, size);
    put_be32(&mut h, 36, l1_size32);
    put_be64(&mut h, 40, l1_at);
    put_be64(&mut h, 48, table_at);
    put_be32(&mut h, 56, table_n as u32);
    if compress == Compress::Zstd {
        put_be64(&mut h, 72, INCOMPAT_COMPRESSION);
        h[104] = 1;
    }
    put_be32(&mut h, 96, 4);
    put_be32(&mut h, 100, HEADER_LEN);
    // Header extensions: only the end marker (type 0, length 0) at byte 112.
    w.out.write_at(&h, 0)?;
    Ok(Written {
        stored: w.stored,
        file_len: end,
    })
}
