//! A minimal DMG writer for the tests, from Apple's published layout: the chunks' bytes as the data fork,
//! an XML property list of base64 `mish` tables, and the `koly` trailer. It writes what the independent
//! writer (`udif`) does not: ADC and xz chunks, ignore and comment entries, gaps, and damage.

#![allow(clippy::unwrap_used)]

use std::io::Write;

pub(super) const ZERO: u32 = 0;
pub(super) const RAW: u32 = 1;
pub(super) const IGNORE: u32 = 2;
pub(super) const ADC: u32 = 0x8000_0004;
pub(super) const ZLIB: u32 = 0x8000_0005;
pub(super) const BZIP2: u32 = 0x8000_0006;
pub(super) const LZFSE: u32 = 0x8000_0007;
pub(super) const XZ: u32 = 0x8000_0008;
pub(super) const COMMENT: u32 = 0x7fff_fffe;
pub(super) const END: u32 = 0xffff_ffff;

/// One chunk entry: its type, first sector (in its table) and count, and the bytes it stores.
pub(super) struct Chunk {
    pub kind: u32,
    pub sector: u64,
    pub count: u64,
    pub stored: Vec<u8>,
}

/// One `blkx` entry: a partition's name, first sector on the disk, sector count and chunks.
pub(super) struct Table {
    pub name: &'static str,
    pub first: u64,
    pub count: u64,
    pub chunks: Vec<Chunk>,
}

/// A table: partition `name` from disk sector `first`, `count` sectors, these chunks.
pub(super) fn table(name: &'static str, first: u64, count: u64, chunks: Vec<Chunk>) -> Table {
    Table {
        name,
        first,
        count,
        chunks,
    }
}

/// A comment entry (no sectors) at `sector`, storing `text`.
pub(super) fn comment(sector: u64, text: &[u8]) -> Chunk {
    Chunk {
        kind: COMMENT,
        sector,
        count: 0,
        stored: text.to_vec(),
    }
}

/// `data` (a whole number of sectors from `sector`) stored as a chunk of type `kind`.
pub(super) fn chunk(kind: u32, sector: u64, data: &[u8]) -> Chunk {
    assert_eq!(data.len() % 512, 0);
    let stored = match kind {
        RAW => data.to_vec(),
        ZERO | IGNORE => Vec::new(),
        ADC => adc(data),
        ZLIB => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        BZIP2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(9));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        LZFSE => {
            let mut out = Vec::new();
            lzfse_rust::encode_bytes(data, &mut out).unwrap();
            out
        }
        XZ => {
            let mut w =
                lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1))
                    .unwrap();
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        k => panic!("no test encoder for {k:#x}"),
    };
    Chunk {
        kind,
        sector,
        count: data.len() as u64 / 512,
        stored,
    }
}

/// The DMG file of `tables` on a disk of `sectors` sectors (0: the trailer gives none).
pub(super) fn write(tables: &[Table], sectors: u64) -> Vec<u8> {
    write_patched(tables, sectors, |_| {})
}

/// [`write`], with each `mish` table passed through `patch` before it is encoded.
pub(super) fn write_patched(
    tables: &[Table],
    sectors: u64,
    patch: impl Fn(&mut Vec<u8>),
) -> Vec<u8> {
    let mut file = Vec::new();
    let mut plist = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST \
         1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\">\n\
         <dict>\n\t<key>resource-fork</key>\n\t<dict>\n\t\t<key>blkx</key>\n\t\t<array>\n",
    );
    for (id, t) in tables.iter().enumerate() {
        let mut mish = Vec::new();
        mish.extend_from_slice(b"mish");
        mish.extend_from_slice(&1u32.to_be_bytes());
        mish.extend_from_slice(&t.first.to_be_bytes());
        mish.extend_from_slice(&t.count.to_be_bytes());
        mish.extend_from_slice(&0u64.to_be_bytes());
        mish.resize(200, 0);
        mish.extend_from_slice(&(t.chunks.len() as u32 + 1).to_be_bytes());
        for c in &t.chunks {
            let at = file.len() as u64;
            file.extend_from_slice(&c.stored);
            mish.extend_from_slice(&c.kind.to_be_bytes());
            mish.extend_from_slice(&0u32.to_be_bytes());
            mish.extend_from_slice(&c.sector.to_be_bytes());
            mish.extend_from_slice(&c.count.to_be_bytes());
            mish.extend_from_slice(&at.to_be_bytes());
            mish.extend_from_slice(&(c.stored.len() as u64).to_be_bytes());
        }
        mish.extend_from_slice(&END.to_be_bytes());
        mish.extend_from_slice(&[0u8; 4]);
        mish.extend_from_slice(&t.count.to_be_bytes());
        mish.extend_from_slice(&[0u8; 24]);
        patch(&mut mish);
        plist.push_str(&format!(
            "\t\t\t<dict>\n\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>0x0050</string>\n\
             \t\t\t\t<key>CFName</key>\n\t\t\t\t<string>{}</string>\n\t\t\t\t<key>Data</key>\n\
             \t\t\t\t<data>\n{}\t\t\t\t</data>\n\t\t\t\t<key>ID</key>\n\t\t\t\t<string>{}</string>\n\
             \t\t\t</dict>\n",
            t.name.replace('&', "&amp;"),
            base64_lines(&mish),
            id as i64 - 1
        ));
    }
    plist.push_str("\t\t</array>\n\t</dict>\n</dict>\n</plist>\n");
    let fork_len = file.len() as u64;
    let plist_at = file.len() as u64;
    file.extend_from_slice(plist.as_bytes());
    file.extend_from_slice(&koly(fork_len, (plist_at, plist.len() as u64), sectors));
    file
}

/// A trailer: data fork at 0 of `fork_len` bytes, the property list at `plist`, `sectors` sectors.
pub(super) fn koly(fork_len: u64, plist: (u64, u64), sectors: u64) -> [u8; 512] {
    let mut k = [0u8; 512];
    k[..4].copy_from_slice(b"koly");
    k[4..8].copy_from_slice(&4u32.to_be_bytes());
    k[8..12].copy_from_slice(&512u32.to_be_bytes());
    k[12..16].copy_from_slice(&1u32.to_be_bytes());
    k[32..40].copy_from_slice(&fork_len.to_be_bytes());
    k[56..60].copy_from_slice(&1u32.to_be_bytes());
    k[60..64].copy_from_slice(&1u32.to_be_bytes());
    k[216..224].copy_from_slice(&plist.0.to_be_bytes());
    k[224..232].copy_from_slice(&plist.1.to_be_bytes());
    k[488..492].copy_from_slice(&1u32.to_be_bytes());
    k[492..500].copy_from_slice(&sectors.to_be_bytes());
    k
}

/// Base64 in lines of 52 characters, as Apple's property lists have them.
fn base64_lines(data: &[u8]) -> String {
    let text = crate::units::base64(data);
    let mut out = String::new();
    for line in text.as_bytes().chunks(52) {
        out.push_str("\t\t\t\t");
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out
}

/// An ADC encoder (greedy, one candidate per 3-byte hash): literal runs of up to 128 bytes, short copies
/// (3–18 bytes from up to 1024 back) and long ones (4–67 bytes from up to 65536 back).
pub(super) fn adc(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut literal: Vec<u8> = Vec::new();
    let mut last = vec![usize::MAX; 1 << 12];
    let flush = |out: &mut Vec<u8>, literal: &mut Vec<u8>| {
        for run in literal.chunks(128) {
            out.push(0x80 | (run.len() - 1) as u8);
            out.extend_from_slice(run);
        }
        literal.clear();
    };
    let mut p = 0;
    while p < data.len() {
        let mut best = (0usize, 0usize);
        if p + 3 <= data.len() {
            let h = (usize::from(data[p]) << 4
                ^ usize::from(data[p + 1]) << 2
                ^ usize::from(data[p + 2]))
                & 0xfff;
            // The byte before (a run), and the last place these three bytes were seen.
            for from in [p.checked_sub(1), Some(last[h]).filter(|&f| f < p)]
                .into_iter()
                .flatten()
            {
                let back = p - from;
                if back > 65536 {
                    continue;
                }
                let mut n = 0;
                while n < 67 && p + n < data.len() && data[from + n] == data[p + n] {
                    n += 1;
                }
                if n > best.0 {
                    best = (n, back);
                }
            }
            last[h] = p;
        }
        let (n, back) = best;
        if (3..=18).contains(&n) && back <= 1024 {
            flush(&mut out, &mut literal);
            let o = back - 1;
            out.push(((n - 3) << 2) as u8 | (o >> 8) as u8);
            out.push(o as u8);
            p += n;
        } else if n >= 4 {
            flush(&mut out, &mut literal);
            let o = (back - 1) as u16;
            out.push(0x40 | (n - 4) as u8);
            out.extend_from_slice(&o.to_be_bytes());
            p += n;
        } else {
            literal.push(data[p]);
            p += 1;
        }
    }
    flush(&mut out, &mut literal);
    out
}
