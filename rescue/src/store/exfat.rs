//! A fresh, empty exFAT filesystem, written from Rust: the rescue system has no mkfs, and re-creating the
//! stick's data partition at a new size needs one (exFAT cannot grow in place: its FAT, allocation bitmap
//! and cluster heap would all have to move).
//!
//! What is written (exFAT specification, Microsoft 2019):
//! - the main and backup boot regions (12 sectors each: boot sector, 8 extended boot sectors, OEM
//!   parameters, reserved, and the checksum sector);
//! - one FAT, from the first alignment boundary after the boot regions, holding the chains of the three
//!   structures below;
//! - in the cluster heap (from the next boundary): the allocation bitmap, the up-case table
//!   ([`super::upcase`]) and the root directory (one cluster: volume label, bitmap and up-case entries).
//!
//! Cluster sizes follow the usual defaults by volume size (4 KiB up to 256 MiB, 32 KiB up to 32 GiB,
//! 128 KiB above), as mkfs.exfat and Windows choose them. The FAT and the heap start on 1 MiB boundaries
//! (flash erase blocks) from 64 MiB on, on cluster boundaries below.
//!
//! Order of writes: first every byte from the start to the cluster heap is zeroed (so an old filesystem
//! there stops being recognisable at once), then the FAT, bitmap, up-case table, root directory, the
//! backup boot region, and the main boot region last. An interrupted format leaves a partition without a
//! valid filesystem, never a half-valid one.

use std::io::{self, Seek, SeekFrom, Write};

use super::upcase;

/// The smallest volume the specification allows (VolumeLength ≥ 2^20 bytes).
pub const MIN_SIZE: u64 = 1 << 20;
/// The largest volume formatted here (with 128 KiB clusters: 2^27 clusters, a 512 MiB FAT).
pub const MAX_SIZE: u64 = 16 << 40;

const MIB: u64 = 1 << 20;
/// Sectors per boot region.
const BOOT_REGION: u64 = 12;
const EOC: u32 = 0xFFFF_FFFF;
const ENTRY: usize = 32;

/// What to format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExfatSpec {
    /// Bytes of the volume (rounded down to a sector).
    pub size: u64,
    /// 512 to 4096 bytes: the logical sector size of the disk.
    pub sector_size: u32,
    /// At most 11 UTF-16 units; empty for none.
    pub label: String,
    pub serial: u32,
    /// Byte offset of the partition on its disk, recorded in the boot sector (0: unknown).
    pub partition_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExfatError {
    #[error("an exFAT volume of {size} bytes is too small; it needs at least {min} bytes")]
    TooSmall { size: u64, min: u64 },
    #[error(
        "an exFAT volume of {size} bytes is larger than the {max} bytes this formatter supports"
    )]
    TooLarge { size: u64, max: u64 },
    #[error(
        "{0}-byte sectors cannot hold exFAT here; the sector size must be 512, 1024, 2048 or 4096"
    )]
    SectorSize(u32),
    #[error("the volume label {0:?} is longer than the 11 characters exFAT allows")]
    Label(String),
    #[error("writing the exFAT volume at byte {offset} of the partition failed")]
    Io { offset: u64, source: io::Error },
}

/// Where everything goes; sectors and clusters as the boot sector records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExfatLayout {
    pub bytes_per_sector: u64,
    pub cluster_bytes: u64,
    pub volume_sectors: u64,
    pub fat_offset: u64,
    pub fat_length: u64,
    pub heap_offset: u64,
    pub cluster_count: u64,
    pub bitmap_bytes: u64,
    pub bitmap_clusters: u64,
    pub upcase_clusters: u64,
    /// Cluster number of the root directory (the bitmap starts at 2, the up-case table follows).
    pub root_cluster: u64,
}

impl ExfatLayout {
    fn cluster_offset(&self, c: u64) -> u64 {
        self.heap_offset * self.bytes_per_sector + (c - 2) * self.cluster_bytes
    }

    fn used_clusters(&self) -> u64 {
        self.bitmap_clusters + self.upcase_clusters + 1
    }
}

fn cluster_size(size: u64) -> u64 {
    match size {
        s if s < 256 * MIB => 4 << 10,
        s if s < 32 << 30 => 32 << 10,
        _ => 128 << 10,
    }
}

/// The layout for `spec`, or why it cannot be formatted. Pure: nothing is written.
pub fn layout(spec: &ExfatSpec) -> Result<ExfatLayout, ExfatError> {
    let bps = u64::from(spec.sector_size);
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(ExfatError::SectorSize(spec.sector_size));
    }
    if spec.label.encode_utf16().count() > 11 {
        return Err(ExfatError::Label(spec.label.clone()));
    }
    if spec.size > MAX_SIZE {
        return Err(ExfatError::TooLarge {
            size: spec.size,
            max: MAX_SIZE,
        });
    }
    let too_small = || ExfatError::TooSmall {
        size: spec.size,
        min: MIN_SIZE,
    };
    let volume_sectors = spec.size / bps;
    if volume_sectors * bps < MIN_SIZE {
        return Err(too_small());
    }
    let cluster_bytes = cluster_size(spec.size).max(bps);
    let spc = cluster_bytes / bps;
    let align = if spec.size >= 64 * MIB {
        MIB
    } else {
        cluster_bytes
    } / bps;
    let fat_offset = BOOT_REGION * 2;
    let fat_offset = fat_offset.div_ceil(align) * align;
    // The most clusters there could be sizes the FAT; the heap then starts after it.
    let max_clusters = volume_sectors.saturating_sub(fat_offset) / spc;
    let fat_length = ((max_clusters + 2) * 4).div_ceil(bps);
    let heap_offset = (fat_offset + fat_length).div_ceil(align) * align;
    let cluster_count = volume_sectors.saturating_sub(heap_offset) / spc;
    let bitmap_bytes = cluster_count.div_ceil(8);
    let bitmap_clusters = bitmap_bytes.div_ceil(cluster_bytes);
    let upcase_clusters = (upcase::table().len() as u64).div_ceil(cluster_bytes);
    let used = bitmap_clusters + upcase_clusters + 1;
    // Room for the structures and at least as many clusters again for files.
    if cluster_count < 2 * used || heap_offset > u64::from(u32::MAX) {
        return Err(too_small());
    }
    Ok(ExfatLayout {
        bytes_per_sector: bps,
        cluster_bytes,
        volume_sectors,
        fat_offset,
        fat_length,
        heap_offset,
        cluster_count,
        bitmap_bytes,
        bitmap_clusters,
        upcase_clusters,
        root_cluster: 2 + bitmap_clusters + upcase_clusters,
    })
}

/// Formats the first `spec.size` bytes of `out` (offset 0 is the volume's first byte) as an empty exFAT
/// volume. Only the structures are written; the rest of the cluster heap keeps whatever it held.
pub fn format<W: Write + Seek>(out: &mut W, spec: &ExfatSpec) -> Result<ExfatLayout, ExfatError> {
    let l = layout(spec)?;
    let mut w = Writer { out };
    let bps = l.bytes_per_sector;
    w.zeros(0, l.heap_offset * bps)?;

    let upcase = upcase::table();
    // The FAT: media descriptor, then one chain per structure, each contiguous.
    let mut fat: Vec<u32> = vec![0xFFFF_FFF8, EOC];
    for len in [l.bitmap_clusters, l.upcase_clusters, 1] {
        let first = fat.len() as u64;
        for c in first..first + len {
            let next = if c + 1 == first + len {
                EOC
            } else {
                u32::try_from(c + 1).unwrap_or(EOC)
            };
            fat.push(next);
        }
    }
    let fat: Vec<u8> = fat.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.put(l.fat_offset * bps, &fat)?;

    // The allocation bitmap: the structures' clusters in use, everything else free.
    let used = l.used_clusters();
    let mut head = vec![0u8; used.div_ceil(8) as usize];
    for c in 0..used {
        head[(c / 8) as usize] |= 1 << (c % 8);
    }
    let bitmap_at = l.cluster_offset(2);
    w.put(bitmap_at, &head)?;
    w.zeros(
        bitmap_at + head.len() as u64,
        l.bitmap_clusters * l.cluster_bytes - head.len() as u64,
    )?;

    let upcase_at = l.cluster_offset(2 + l.bitmap_clusters);
    w.put(upcase_at, &upcase)?;
    w.zeros(
        upcase_at + upcase.len() as u64,
        l.upcase_clusters * l.cluster_bytes - upcase.len() as u64,
    )?;

    let root = root_directory(&l, spec, &upcase);
    w.put(l.cluster_offset(l.root_cluster), &root)?;

    let region = boot_region(&l, spec);
    w.put(BOOT_REGION * bps, &region)?;
    w.put(0, &region)?;
    w.out
        .flush()
        .map_err(|source| ExfatError::Io { offset: 0, source })?;
    Ok(l)
}

/// The root directory's one cluster: volume label, allocation bitmap and up-case table entries, then
/// zeros (the end-of-directory marker).
fn root_directory(l: &ExfatLayout, spec: &ExfatSpec, upcase: &[u8]) -> Vec<u8> {
    let mut dir = vec![0u8; l.cluster_bytes as usize];
    let mut at = 0;
    let label: Vec<u16> = spec.label.encode_utf16().collect();
    if !label.is_empty() {
        let e = &mut dir[at..at + ENTRY];
        e[0] = 0x83;
        e[1] = label.len() as u8; // at most 11, checked by `layout`
        for (i, u) in label.iter().enumerate() {
            e[2 + 2 * i..4 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        at += ENTRY;
    }
    let e = &mut dir[at..at + ENTRY];
    e[0] = 0x81;
    e[20..24].copy_from_slice(&2u32.to_le_bytes());
    e[24..32].copy_from_slice(&l.bitmap_bytes.to_le_bytes());
    at += ENTRY;
    let e = &mut dir[at..at + ENTRY];
    e[0] = 0x82;
    e[4..8].copy_from_slice(&upcase::checksum(upcase).to_le_bytes());
    let first = u32::try_from(2 + l.bitmap_clusters).unwrap_or(0);
    e[20..24].copy_from_slice(&first.to_le_bytes());
    e[24..32].copy_from_slice(&(upcase.len() as u64).to_le_bytes());
    dir
}

/// One boot region (12 sectors), the same for the main and the backup copy.
fn boot_region(l: &ExfatLayout, spec: &ExfatSpec) -> Vec<u8> {
    let bps = l.bytes_per_sector as usize;
    let mut r = vec![0u8; BOOT_REGION as usize * bps];
    let b = &mut r[..bps];
    b[0..3].copy_from_slice(&[0xEB, 0x76, 0x90]);
    b[3..11].copy_from_slice(b"EXFAT   ");
    // 11..64 must be zero.
    let put32 = |b: &mut [u8], at: usize, v: u64| {
        b[at..at + 4].copy_from_slice(&u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes());
    };
    b[64..72].copy_from_slice(&(spec.partition_offset / l.bytes_per_sector).to_le_bytes());
    b[72..80].copy_from_slice(&l.volume_sectors.to_le_bytes());
    put32(b, 80, l.fat_offset);
    put32(b, 84, l.fat_length);
    put32(b, 88, l.heap_offset);
    put32(b, 92, l.cluster_count);
    put32(b, 96, l.root_cluster);
    b[100..104].copy_from_slice(&spec.serial.to_le_bytes());
    b[104..106].copy_from_slice(&0x0100u16.to_le_bytes());
    // 106..108 VolumeFlags: clean, FAT 0 active.
    b[108] = l.bytes_per_sector.trailing_zeros() as u8;
    b[109] = (l.cluster_bytes / l.bytes_per_sector).trailing_zeros() as u8;
    b[110] = 1; // one FAT
    b[111] = 0x80; // drive select
    b[112] = (l.used_clusters() * 100 / l.cluster_count) as u8;
    // Boot code: not bootable; halt if a BIOS ever jumps here (the jump at 0 lands on 120).
    b[120..123].copy_from_slice(&[0xF4, 0xEB, 0xFD]);
    b[510] = 0x55;
    b[511] = 0xAA;
    // Extended boot sectors 1..=8 end with their signature.
    for s in 1..=8 {
        r[(s + 1) * bps - 4..(s + 1) * bps].copy_from_slice(&[0x00, 0x00, 0x55, 0xAA]);
    }
    // Sectors 9 (OEM parameters) and 10 (reserved) stay zero; 11 repeats the checksum of 0..=10.
    let sum = r[..11 * bps]
        .iter()
        .enumerate()
        .fold(0u32, |sum, (i, &x)| {
            if matches!(i, 106 | 107 | 112) {
                sum
            } else {
                sum.rotate_right(1).wrapping_add(u32::from(x))
            }
        })
        .to_le_bytes();
    for w in r[11 * bps..].chunks_exact_mut(4) {
        w.copy_from_slice(&sum);
    }
    r
}

struct Writer<'a, W> {
    out: &'a mut W,
}

impl<W: Write + Seek> Writer<'_, W> {
    fn put(&mut self, offset: u64, bytes: &[u8]) -> Result<(), ExfatError> {
        self.out
            .seek(SeekFrom::Start(offset))
            .and_then(|_| self.out.write_all(bytes))
            .map_err(|source| ExfatError::Io { offset, source })
    }

    fn zeros(&mut self, offset: u64, len: u64) -> Result<(), ExfatError> {
        let buf = vec![0u8; MIB.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            self.put(offset + done, &buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }
}
