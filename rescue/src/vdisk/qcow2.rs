//! QEMU's qcow2 (versions 2 and 3), read: a big-endian header, a one-level L1 table of L2 table offsets,
//! L2 tables of 64-bit cluster entries (a data cluster's offset, a compressed cluster's descriptor, the
//! zero flag, or nothing), clusters compressed with raw deflate or zstd. Only the active L1 table is read
//! (internal snapshots are ignored), refcounts are not needed to read. A dirty or corrupt-flagged image is
//! read as it is (the flags are reported); backing files, encryption, an external data file, extended L2
//! entries and unknown incompatible features are refused by name.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{be32, be64, invalid, read_blocks, read_table, unsupported, Place};
use crate::image::ReadAt;

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// The offset bits of L1 entries and of standard L2 entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
/// Largest L1 table QEMU makes or opens.
const MAX_L1_BYTES: u64 = 32 << 20;
/// Memory for cached L2 tables.
const L2_CACHE_BYTES: usize = 16 << 20;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;

pub fn is_qcow2(head: &[u8]) -> bool {
    head.get(..4) == Some(&MAGIC[..])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Deflate,
    Zstd,
}

/// Where a guest cluster's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cluster {
    /// Nothing stored: zeros (no backing file).
    Unallocated,
    Zero,
    Data(u64),
    /// A compressed cluster: its bytes start at `at` and take at most `len` bytes.
    Compressed {
        at: u64,
        len: u64,
    },
}

pub struct Qcow2 {
    file: Arc<dyn ReadAt>,
    path: PathBuf,
    file_size: u64,
    version: u32,
    cluster_bits: u32,
    size: u64,
    l1: Vec<u64>,
    codec: Codec,
    flags: u64,
    /// Recently read L2 tables by their offset, the most recent last.
    l2_cache: Mutex<Vec<(u64, Arc<Vec<u64>>)>>,
    /// The last compressed cluster decompressed (a read of a few sectors at a time stays cheap).
    last_compressed: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl Qcow2 {
    pub fn open(file: Arc<dyn ReadAt>, path: &Path) -> io::Result<Qcow2> {
        let file_size = file.size()?;
        let mut h = [0u8; 112];
        let n = (h.len() as u64).min(file_size) as usize;
        if n < 72 {
            return Err(invalid(
                path,
                "a qcow2 header is 72 bytes or more; the file is shorter",
            ));
        }
        file.read_exact_at(&mut h[..n], 0)?;
        if !is_qcow2(&h) {
            return Err(invalid(path, "not a qcow2 file (no QFI\\xfb magic)"));
        }
        let version = be32(&h, 4);
        if !(2..=3).contains(&version) {
            return Err(unsupported(
                path,
                format!("qcow version {version}; this program reads qcow2 versions 2 and 3"),
            ));
        }
        let backing = be64(&h, 8);
        if backing != 0 {
            let len = be32(&h, 16).min(1023) as usize;
            let mut name = vec![0u8; len];
            let name = match file.read_exact_at(&mut name, backing) {
                Ok(()) => String::from_utf8_lossy(&name).into_owned(),
                Err(_) => "a file it names".into(),
            };
            return Err(unsupported(
                path,
                format!(
                    "it holds only the changes over the backing file `{name}`; make a standalone \
                     image first (`qemu-img convert -O qcow2 {} whole.qcow2`) and use that",
                    path.display()
                ),
            ));
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(invalid(
                path,
                format!("cluster_bits {cluster_bits} (qcow2 clusters are 512 B to 2 MiB)"),
            ));
        }
        let size = be64(&h, 24);
        if be32(&h, 32) != 0 {
            return Err(unsupported(
                path,
                "it is encrypted (qcow2 AES or LUKS); decrypt it with qemu-img convert first",
            ));
        }
        let l1_size = u64::from(be32(&h, 36));
        let l1_offset = be64(&h, 40);
        let (mut flags, mut codec) = (0u64, Codec::Deflate);
        if version == 3 {
            if n < 104 {
                return Err(invalid(path, "a version 3 header is 104 bytes or more"));
            }
            flags = be64(&h, 72);
            let header_length = be32(&h, 100);
            let known = INCOMPAT_DIRTY
                | INCOMPAT_CORRUPT
                | INCOMPAT_DATA_FILE
                | INCOMPAT_COMPRESSION
                | INCOMPAT_EXTL2;
            if flags & !known != 0 {
                return Err(unsupported(
                    path,
                    format!(
                        "incompatible features this program does not know (bits {:#x})",
                        flags & !known
                    ),
                ));
            }
            if flags & INCOMPAT_DATA_FILE != 0 {
                return Err(unsupported(
                    path,
                    "its data is in an external data file; convert it to a standalone image first",
                ));
            }
            if flags & INCOMPAT_EXTL2 != 0 {
                return Err(unsupported(
                    path,
                    "it uses extended L2 entries (subclusters); convert it with qemu-img convert \
                     -O qcow2 first",
                ));
            }
            let ctype = if header_length > 104 && n > 104 {
                h[104]
            } else {
                0
            };
            codec = match ctype {
                0 => Codec::Deflate,
                1 => Codec::Zstd,
                t => {
                    return Err(unsupported(
                        path,
                        format!("compression type {t} (this program reads deflate and zstd)"),
                    ))
                }
            };
            if (ctype != 0) != (flags & INCOMPAT_COMPRESSION != 0) {
                return Err(invalid(
                    path,
                    "the compression type and its incompatible-feature bit disagree",
                ));
            }
        }
        let cluster = 1u64 << cluster_bits;
        // Each L2 table is one cluster of 8-byte entries.
        let per_l1 = cluster * (cluster / 8);
        let needed = size.div_ceil(per_l1);
        if l1_size < needed {
            return Err(invalid(
                path,
                format!(
                    "its L1 table has {l1_size} entries; a disk of {size} bytes needs {needed}"
                ),
            ));
        }
        if l1_size * 8 > MAX_L1_BYTES {
            return Err(invalid(
                path,
                format!("its L1 table of {l1_size} entries is too large"),
            ));
        }
        if !l1_offset.is_multiple_of(cluster) {
            return Err(invalid(
                path,
                format!("its L1 table at byte {l1_offset} is misaligned"),
            ));
        }
        let raw = read_table(file.as_ref(), path, "L1 table", l1_offset, needed, 8)?;
        let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        Ok(Qcow2 {
            file,
            path: path.to_path_buf(),
            file_size,
            version,
            cluster_bits,
            size,
            l1,
            codec,
            flags,
            l2_cache: Mutex::new(Vec::new()),
            last_compressed: Mutex::new(None),
        })
    }

    /// What the header says worth telling.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = vec![format!(
            "qcow2 version {}, {} KiB clusters{}",
            self.version,
            (1u64 << self.cluster_bits) / 1024,
            match self.codec {
                Codec::Zstd => ", zstd-compressed clusters allowed",
                Codec::Deflate => "",
            }
        )];
        if self.flags & INCOMPAT_DIRTY != 0 {
            notes.push(
                "marked dirty (the program using it did not close it; its tables are read as they are)"
                    .into(),
            );
        }
        if self.flags & INCOMPAT_CORRUPT != 0 {
            notes.push(
                "marked corrupt by QEMU (`qemu-img check` names what is wrong); read as it is"
                    .into(),
            );
        }
        notes
    }

    fn cluster_size(&self) -> u64 {
        1u64 << self.cluster_bits
    }

    /// The L2 table at `offset`, from the cache or the file.
    fn l2_table(&self, offset: u64) -> io::Result<Arc<Vec<u64>>> {
        let mut cache = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|(o, _)| *o == offset) {
            let hit = cache.remove(i);
            let table = hit.1.clone();
            cache.push(hit);
            return Ok(table);
        }
        drop(cache);
        let cluster = self.cluster_size();
        let mut raw = vec![0u8; cluster as usize];
        self.file.read_exact_at(&mut raw, offset)?;
        let table = Arc::new(raw.chunks_exact(8).map(|c| be64(c, 0)).collect::<Vec<_>>());
        let mut cache = self.l2_cache.lock().unwrap_or_else(|p| p.into_inner());
        let max = (L2_CACHE_BYTES / cluster as usize).max(4);
        if cache.len() >= max {
            cache.remove(0);
        }
        cache.push((offset, table.clone()));
        Ok(table)
    }

    /// Where the guest cluster number `index` is.
    fn cluster(&self, index: u64) -> io::Result<Cluster> {
        let l2_bits = self.cluster_bits - 3;
        let l1_index = (index >> l2_bits) as usize;
        let l1e = *self.l1.get(l1_index).ok_or_else(|| {
            invalid(
                &self.path,
                format!("guest cluster {index} is beyond the L1 table"),
            )
        })?;
        let l2_offset = l1e & OFFSET_MASK;
        if l2_offset == 0 {
            return Ok(Cluster::Unallocated);
        }
        let cluster = self.cluster_size();
        if !l2_offset.is_multiple_of(cluster) || l2_offset.saturating_add(cluster) > self.file_size
        {
            return Err(invalid(
                &self.path,
                format!(
                    "L1 entry {l1_index} points at byte {l2_offset}, misaligned or past the end"
                ),
            ));
        }
        let table = self.l2_table(l2_offset)?;
        let e = table[(index & ((1 << l2_bits) - 1)) as usize];
        if e & COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let at = e & ((1u64 << x) - 1);
            let sectors = ((e >> x) & ((1u64 << (self.cluster_bits - 8)) - 1)) + 1;
            if at >= self.file_size {
                return Err(invalid(
                    &self.path,
                    format!("compressed guest cluster {index} starts at byte {at}, past the end"),
                ));
            }
            // An upper bound: the last sector may hold the next cluster's start, or lie past the end.
            let len = (sectors * 512 - (at % 512)).min(self.file_size - at);
            return Ok(Cluster::Compressed { at, len });
        }
        let host = e & OFFSET_MASK;
        if self.version >= 3 && e & 1 != 0 {
            return Ok(Cluster::Zero);
        }
        if host == 0 {
            return Ok(Cluster::Unallocated);
        }
        if !host.is_multiple_of(cluster) || host >= self.file_size {
            return Err(invalid(
                &self.path,
                format!("guest cluster {index} points at byte {host}, misaligned or past the end"),
            ));
        }
        Ok(Cluster::Data(host))
    }

    /// The compressed cluster at `at` (at most `len` bytes), decompressed to one cluster.
    fn decompress(&self, at: u64, len: u64) -> io::Result<Arc<Vec<u8>>> {
        if let Some((o, data)) = &*self
            .last_compressed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            if *o == at {
                return Ok(data.clone());
            }
        }
        let cluster = self.cluster_size() as usize;
        let mut input = vec![0u8; len as usize];
        self.file.read_exact_at(&mut input, at)?;
        let mut out = vec![0u8; cluster];
        let bad = |why: String| {
            invalid(
                &self.path,
                format!("the compressed cluster at byte {at} does not decompress: {why}"),
            )
        };
        match self.codec {
            Codec::Deflate => {
                let mut d = flate2::Decompress::new(false);
                let status = d
                    .decompress(&input, &mut out, flate2::FlushDecompress::Finish)
                    .map_err(|e| bad(e.to_string()))?;
                let got = d.total_out() as usize;
                if got != cluster {
                    return Err(bad(format!("{got} bytes out ({status:?}), not {cluster}")));
                }
            }
            Codec::Zstd => {
                let mut dec = zstd::stream::read::Decoder::with_buffer(&input[..])
                    .map_err(|e| bad(e.to_string()))?;
                dec.read_exact(&mut out).map_err(|e| bad(e.to_string()))?;
            }
        }
        let out = Arc::new(out);
        *self
            .last_compressed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((at, out.clone()));
        Ok(out)
    }
}

impl ReadAt for Qcow2 {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let geometry = (self.size, self.cluster_size());
        read_blocks(
            self.file.as_ref(),
            &self.path,
            geometry,
            buf,
            offset,
            |index| {
                Ok(match self.cluster(index)? {
                    Cluster::Unallocated | Cluster::Zero => Place::Zeros,
                    Cluster::Data(host) => Place::At(host),
                    Cluster::Compressed { at, len } => Place::Bytes(self.decompress(at, len)?),
                })
            },
        )
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}
