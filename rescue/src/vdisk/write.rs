//! Virtual machines' disk files, written (docs/VDISK.md, "Export"): a guest disk given as positioned reads
//! and the ranges that hold data is written in one sequential pass in the format asked for. Blocks the data
//! ranges do not touch, and blocks that read as all zeros, are never allocated (a raw file keeps them as
//! holes); the tables are kept in memory and written once the data is in place, the header last, so a file
//! cut short by a crash is never a valid disk of the wrong content.
//!
//! Our own writers, checked against the formats' specifications and against `qemu-img check` and
//! `qemu-img compare` in the tests.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::image::ReadAt;

mod qcow2;
mod vdi;
mod vhd;
mod vhdx;
mod vmdk;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

/// A format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A raw disk, sparse.
    Raw,
    /// A dynamic VHD (2 MiB blocks).
    Vhd,
    /// A fixed VHD: the raw disk and a footer (sparse where the disk is empty).
    VhdFixed,
    /// A dynamic VHDX (2 MiB blocks, an empty log).
    Vhdx,
    /// A monolithicSparse VMDK (64 KiB grains, redundant grain directory).
    Vmdk,
    /// A streamOptimized VMDK (deflate-compressed grains and markers, as in OVA packages).
    VmdkStream,
    /// A dynamic VDI (1 MiB blocks).
    Vdi,
    /// qcow2 version 3 (64 KiB clusters), compressed as [`Compress`] says.
    Qcow2,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::Raw,
        Target::Vhd,
        Target::VhdFixed,
        Target::Vhdx,
        Target::Vmdk,
        Target::VmdkStream,
        Target::Vdi,
        Target::Qcow2,
    ];

    /// The name the command line takes.
    pub fn name(self) -> &'static str {
        match self {
            Target::Raw => "raw",
            Target::Vhd => "vhd",
            Target::VhdFixed => "vhd-fixed",
            Target::Vhdx => "vhdx",
            Target::Vmdk => "vmdk",
            Target::VmdkStream => "vmdk-stream",
            Target::Vdi => "vdi",
            Target::Qcow2 => "qcow2",
        }
    }

    /// The format with this command-line name.
    pub fn parse(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The name `qemu-img -f` knows this format by.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Target::Raw => "raw",
            Target::Vhd | Target::VhdFixed => "vpc",
            Target::Vhdx => "vhdx",
            Target::Vmdk | Target::VmdkStream => "vmdk",
            Target::Vdi => "vdi",
            Target::Qcow2 => "qcow2",
        }
    }

    /// The largest guest disk the format holds, in bytes.
    pub fn max_size(self) -> u64 {
        match self {
            // The VHD specification's limit (2040 GiB), which QEMU enforces too.
            Target::Vhd | Target::VhdFixed => vhd::MAX_SIZE,
            Target::Vhdx => 64 << 40,
            // 32-bit block numbers of 1 MiB.
            Target::Vdi => (u64::from(u32::MAX) - 2) << 20,
            // 32-bit sector offsets in the grain tables bound the file, and so the disk, to 2 TiB.
            Target::Vmdk | Target::VmdkStream => (2 << 40) - (1 << 20),
            Target::Raw | Target::Qcow2 => 1 << 56,
        }
    }
}

/// How qcow2 clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compress {
    #[default]
    None,
    /// Deflate with a 4 KiB window, as QEMU reads it (compression type 0).
    Zlib,
    /// zstd (compression type 1, an incompatible feature: QEMU 5.1 and later).
    Zstd,
}

impl Compress {
    pub fn parse(s: &str) -> Option<Compress> {
        match s {
            "none" => Some(Compress::None),
            "zlib" => Some(Compress::Zlib),
            "zstd" => Some(Compress::Zstd),
            _ => None,
        }
    }
}

/// The guest disk to write: its bytes, its size, and the sorted, disjoint ranges that hold data (the rest
/// reads as zeros and is not read).
pub struct Source<'a> {
    pub disk: &'a dyn ReadAt,
    pub size: u64,
    pub data: &'a [Range<u64>],
    /// The disk's logical sector size (512 or 4096; VHDX records it).
    pub sector: u32,
    /// The disk's name in messages.
    pub name: &'a str,
}

/// What a writer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Guest bytes stored (allocated blocks, whole).
    pub stored: u64,
    /// The file's length.
    pub file_len: u64,
}

/// Write `src` as `target` into `out` (a new, empty file named `path`), calling `tick` with each amount of
/// guest bytes gone through (it may fail the export, e.g. when it is cancelled).
pub fn write(
    target: Target,
    compress: Compress,
    src: &Source,
    out: &File,
    path: &Path,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<Written> {
    if src.size > target.max_size() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {} bytes; a {} file holds at most {} bytes: choose another format (vhdx or qcow2)",
                src.name,
                src.size,
                target.name(),
                target.max_size()
            ),
        ));
    }
    if compress != Compress::None && target != Target::Qcow2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--compress is for qcow2; {} files are not compressed (vmdk-stream always is)",
                target.name()
            ),
        ));
    }
    let mut out = Out::new(out, path);
    match target {
        Target::Raw => raw(src, &mut out, tick, 0),
        Target::VhdFixed => vhd::fixed(src, &mut out, tick),
        Target::Vhd => vhd::dynamic(src, &mut out, tick),
        Target::Vhdx => vhdx::write(src, &mut out, tick),
        Target::Vmdk => vmdk::sparse(src, &mut out, tick),
        Target::VmdkStream => vmdk::stream(src, &mut out, tick),
        Target::Vdi => vdi::write(src, &mut out, tick),
        Target::Qcow2 => qcow2::write(src, compress, &mut out, tick),
    }
}

/// The raw disk at byte `base` of the file, sparse: only blocks holding non-zero bytes are written.
fn raw(
    src: &Source,
    out: &mut Out,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
    base: u64,
) -> io::Result<Written> {
    let mut stored = 0;
    blocks(src, 64 << 10, tick, |i, b| {
        stored += b.len() as u64;
        out.write_at(b, base + i * (64 << 10))
    })?;
    out.set_len(base + src.size)?;
    Ok(Written {
        stored,
        file_len: base + src.size,
    })
}

/// The output file, named in errors, and where its end is.
pub(crate) struct Out<'a> {
    file: &'a File,
    path: PathBuf,
    pub end: u64,
}

impl<'a> Out<'a> {
    fn new(file: &'a File, path: &Path) -> Out<'a> {
        Out {
            file,
            path: path.to_path_buf(),
            end: 0,
        }
    }

    fn write_at(&mut self, b: &[u8], at: u64) -> io::Result<()> {
        self.file.write_all_at(b, at).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {} at byte {at}: {e}", self.path.display()),
            )
        })?;
        self.end = self.end.max(at + b.len() as u64);
        Ok(())
    }

    /// Write `b` at the end of the file; where it went.
    fn append(&mut self, b: &[u8]) -> io::Result<u64> {
        let at = self.end;
        self.write_at(b, at)?;
        Ok(at)
    }

    /// Move the end to the next multiple of `align` (leaving a hole).
    fn align(&mut self, align: u64) {
        self.end = self.end.next_multiple_of(align);
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("extending {} to {len} bytes: {e}", self.path.display()),
            )
        })?;
        self.end = len;
        Ok(())
    }
}

/// How much is read from the source at once.
const WINDOW: u64 = 4 << 20;

/// Call `each(index, bytes)` for every `block`-byte block of the disk (the last one padded with zeros to a
/// whole block) that a data range touches and that holds a non-zero byte, in disk order; `tick` hears of
/// the guest bytes read. Reads in windows of several blocks, on several threads ahead of `each`.
fn blocks(
    src: &Source,
    block: u64,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
    mut each: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let windows = windows(src, block);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    std::thread::scope(|s| {
        let mut ahead = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(1);
            ahead.push(rx);
            let windows = &windows;
            s.spawn(move || {
                for &(first, n) in windows.iter().skip(t).step_by(threads) {
                    let at = first * block;
                    let len = (n * block).min(src.size - at);
                    let mut buf = vec![0u8; (n * block) as usize];
                    let read = src
                        .disk
                        .read_exact_at(&mut buf[..len as usize], at)
                        .map(|()| buf)
                        .map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("reading {} at byte {at}: {e}", src.name),
                            )
                        });
                    let failed = read.is_err();
                    if tx.send(read).is_err() || failed {
                        break;
                    }
                }
            });
        }
        for (i, &(first, n)) in windows.iter().enumerate() {
            let buf = ahead[i % threads]
                .recv()
                .map_err(|_| io::Error::other("a reading thread ended early"))??;
            for k in 0..n {
                let piece = &buf[(k * block) as usize..((k + 1) * block) as usize];
                if !is_zero(piece) {
                    each(first + k, piece)?;
                }
            }
            tick((n * block).min(src.size - first * block))?;
        }
        Ok(())
    })
}

/// The windows [`blocks`] reads: (first block, block count), each at most [`WINDOW`] bytes (or one block),
/// covering every block a data range touches once, in order.
fn windows(src: &Source, block: u64) -> Vec<(u64, u64)> {
    let per = (WINDOW / block).max(1);
    let mut out = Vec::new();
    let mut next = 0u64; // the first block not yet covered
    for r in src.data {
        let (start, end) = (r.start.min(src.size), r.end.min(src.size));
        if start >= end {
            continue;
        }
        let mut b = (start / block).max(next);
        let last = end.div_ceil(block);
        while b < last {
            let n = (last - b).min(per);
            out.push((b, n));
            b += n;
        }
        next = next.max(last);
    }
    out
}

/// Whether every byte of `b` is zero.
pub(crate) fn is_zero(b: &[u8]) -> bool {
    let mut words = b.chunks_exact(16);
    words.all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0)
        && words.remainder().iter().all(|&x| x == 0)
}

/// 16 random bytes (a GUID or UUID, version 4 in the layout RFC 4122 gives).
pub(crate) fn random_id() -> [u8; 16] {
    let mut b = [0u8; 16];
    // Identifiers, not keys: a failing random source leaves a fixed but valid one.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    b
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn put_be16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
pub(crate) fn put_be32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
pub(crate) fn put_be64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
pub(crate) fn put_le16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_le32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_le64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A value too large for its field (the size checks before make this unreachable in practice).
pub(crate) fn too_large(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} does not fit its field"),
    )
}

/// Blocks compressed on several threads and handed on in the order they came (qcow2 and
/// streamOptimized VMDK compress every block).
pub(crate) struct Packer<F> {
    pending: Vec<(u64, Vec<u8>)>,
    compress: F,
    threads: usize,
}

/// Where compressed blocks go: `(index, block, compressed)`.
pub(crate) type Emit<'a> = dyn FnMut(u64, &[u8], Vec<u8>) -> io::Result<()> + 'a;

/// Blocks gathered before they are compressed together.
const BATCH: usize = 64;

impl<F: Fn(&[u8]) -> io::Result<Vec<u8>> + Sync> Packer<F> {
    pub(crate) fn new(compress: F) -> Packer<F> {
        Packer {
            pending: Vec::with_capacity(BATCH),
            compress,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .clamp(1, 8),
        }
    }

    /// Add block `index`; `emit(index, block, compressed)` is called for the blocks of each full batch.
    pub(crate) fn push(&mut self, index: u64, block: &[u8], emit: &mut Emit) -> io::Result<()> {
        self.pending.push((index, block.to_vec()));
        if self.pending.len() >= BATCH {
            self.flush(emit)?;
        }
        Ok(())
    }

    /// Compress and emit what is pending.
    pub(crate) fn flush(&mut self, emit: &mut Emit) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let per = pending.len().div_ceil(self.threads).max(1);
        let compress = &self.compress;
        let packed: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let parts: Vec<_> = pending
                .chunks(per)
                .map(|part| {
                    s.spawn(move || part.iter().map(|(_, b)| compress(b)).collect::<Vec<_>>())
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(io::Error::other("a compression thread failed"))]
                    })
                })
                .collect()
        });
        if packed.len() != pending.len() {
            return Err(io::Error::other("a compression thread failed"));
        }
        for ((i, b), c) in pending.iter().zip(packed) {
            emit(*i, b, c?)?;
        }
        self.pending = pending;
        self.pending.clear();
        Ok(())
    }
}
