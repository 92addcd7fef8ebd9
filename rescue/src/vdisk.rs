//! Virtual machines' disk files read as the disks they hold (docs/VDISK.md): the format is recognised by
//! content, not by name, and each reader is a [`ReadAt`] over the guest's disk, reading only what the
//! file's tables point at (unallocated space reads as zeros). Read-only; an image that depends on another
//! file (a backing file, a parent, a differencing disk) is refused by name, as is a feature a reader does
//! not implement.
//!
//! Every reader bounds what it allocates by the file's size and its format's limits, and answers damaged
//! input with an error naming the file, the structure and the offset, never a panic.

use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::image::ReadAt;

pub mod dmg;
pub mod qcow2;
pub mod vdi;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;
pub mod write;

/// A virtual disk format this program reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    Vhd,
    Vhdx,
    Vdi,
    Vmdk,
    Dmg,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Vhd => "VHD",
            Format::Vhdx => "VHDX",
            Format::Vdi => "VDI",
            Format::Vmdk => "VMDK",
            Format::Dmg => "DMG",
        }
    }
}

/// A virtual disk, open: its format, the guest disk's size, and reads of the guest disk.
pub struct VirtualDisk {
    pub format: Format,
    /// What the format says about the file worth telling (a dirty or corrupt flag, compression).
    pub notes: Vec<String>,
    pub disk: Arc<dyn ReadAt>,
}

impl VirtualDisk {
    /// The guest disk's size in bytes.
    pub fn size(&self) -> io::Result<u64> {
        self.disk.size()
    }
}

/// The format of the file `file` holds, from its first and last bytes; `None` for anything else (a raw
/// disk image, one of our images, another file).
pub fn sniff(file: &dyn ReadAt) -> Option<Format> {
    let size = file.size().ok()?;
    // A VMDK descriptor is a small text file; every other format is longer than 512 bytes.
    let mut head = vec![0u8; size.min(512) as usize];
    file.read_exact_at(&mut head, 0).ok()?;
    if vmdk::is_vmdk(&head) {
        return Some(Format::Vmdk);
    }
    if size < 512 {
        return None;
    }
    let mut tail = [0u8; 512];
    file.read_exact_at(&mut tail, size - 512).ok()?;
    if qcow2::is_qcow2(&head) {
        return Some(Format::Qcow2);
    }
    if vhdx::is_vhdx(&head) {
        return Some(Format::Vhdx);
    }
    if vhd::is_vhd(&head, &tail) {
        return Some(Format::Vhd);
    }
    if vdi::is_vdi(&head) {
        return Some(Format::Vdi);
    }
    if dmg::is_dmg(&head, &tail) {
        return Some(Format::Dmg);
    }
    None
}

/// Open the virtual disk `file` holds (named `path` in messages): `Ok(None)` when it is no format this
/// program knows.
pub fn open(file: Arc<dyn ReadAt>, path: &Path) -> io::Result<Option<VirtualDisk>> {
    let Some(format) = sniff(file.as_ref()) else {
        return Ok(None);
    };
    let (notes, disk): (Vec<String>, Arc<dyn ReadAt>) = match format {
        Format::Qcow2 => {
            let d = qcow2::Qcow2::open(file, path)?;
            (d.notes(), Arc::new(d))
        }
        Format::Vhd => {
            let d = vhd::Vhd::open(file, path)?;
            (d.notes(), Arc::new(d))
        }
        Format::Vhdx => {
            let d = vhdx::Vhdx::open(file, path)?;
            (d.notes(), Arc::new(d))
        }
        Format::Vdi => {
            let d = vdi::Vdi::open(file, path)?;
            (d.notes(), Arc::new(d))
        }
        Format::Vmdk => {
            let d = vmdk::Vmdk::open(file, path)?;
            (d.notes(), Arc::new(d))
        }
        Format::Dmg => {
            let d = dmg::Dmg::open(file, path)?;
            (d.notes(), Arc::new(d))
        }
    };
    Ok(Some(VirtualDisk {
        format,
        notes,
        disk,
    }))
}

/// A virtual disk as a `Read + Seek` stream of its guest disk (for the detection parsers).
pub struct Cursor {
    disk: Arc<dyn ReadAt>,
    size: u64,
    pos: u64,
}

impl Cursor {
    pub fn new(disk: Arc<dyn ReadAt>) -> io::Result<Cursor> {
        let size = disk.size()?;
        Ok(Cursor { disk, size, pos: 0 })
    }
}

impl io::Read for Cursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.size.saturating_sub(self.pos)) as usize;
        self.disk.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for Cursor {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let pos = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a seek before the start")
        })?;
        Ok(self.pos)
    }
}

/// Where a block of a guest disk is ([`read_blocks`]).
pub(crate) enum Place {
    /// Nothing stored: zeros.
    Zeros,
    /// At this byte of the file.
    At(u64),
    /// These bytes (a decompressed block).
    Bytes(Arc<Vec<u8>>),
}

/// Fill `buf` with the bytes at `offset` of a guest disk of `size` bytes made of `block`-byte blocks, each
/// found by `place(index)` in `file` (named `path` in messages).
pub(crate) fn read_blocks(
    file: &dyn ReadAt,
    path: &Path,
    (size, block): (u64, u64),
    buf: &mut [u8],
    offset: u64,
    place: impl Fn(u64) -> io::Result<Place>,
) -> io::Result<()> {
    within_disk(path, size, offset, buf.len())?;
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset + done as u64;
        let within = pos % block;
        let n = ((block - within) as usize).min(buf.len() - done);
        let out = &mut buf[done..done + n];
        let index = pos / block;
        match place(index)? {
            Place::Zeros => out.fill(0),
            Place::At(at) => file
                .read_exact_at(out, at + within)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => invalid(
                        path,
                        format!("block {index} at byte {at} lies past the end of the file"),
                    ),
                    _ => e,
                })?,
            Place::Bytes(b) => {
                let from = within as usize;
                out.copy_from_slice(
                    b.get(from..from + n).ok_or_else(|| {
                        invalid(path, format!("block {index} decompresses short"))
                    })?,
                );
            }
        }
        done += n;
    }
    Ok(())
}

/// Whether `len` bytes at `offset` lie inside a guest disk of `size` bytes (named `path`).
pub(crate) fn within_disk(path: &Path, size: u64, offset: u64, len: usize) -> io::Result<()> {
    let end = offset.saturating_add(len as u64);
    if end > size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "{}: bytes {offset}..{end} are past the end of its {size}-byte disk",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The `count` entries of `width` bytes at byte `at` of `file` (a block table), after checking they lie
/// inside it.
pub(crate) fn read_table(
    file: &dyn ReadAt,
    path: &Path,
    what: &str,
    at: u64,
    count: u64,
    width: u64,
) -> io::Result<Vec<u8>> {
    let len = count.saturating_mul(width);
    if at.saturating_add(len) > file.size()? {
        return Err(invalid(
            path,
            format!("its {what} at byte {at} is past the end"),
        ));
    }
    let mut raw = vec![0u8; len as usize];
    file.read_exact_at(&mut raw, at)?;
    Ok(raw)
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// An error about damaged or unsupported content of `path`.
pub(crate) fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// An error about a feature of `path` this program does not read.
pub(crate) fn unsupported(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{}: {what}", path.display()),
    )
}

#[cfg(test)]
mod tests;
