//! VMware's VMDK, read: a hosted sparse extent (`KDMV` header, little-endian: a grain directory of grain
//! table sectors, grain tables of grain sectors; `streamOptimized` files have their grains zlib-compressed
//! behind 12-byte markers and their real header in a footer at the end), or a text descriptor
//! (`# Disk DescriptorFile`) naming extents in files beside it: FLAT (raw), ZERO, and SPARSE (a hosted
//! sparse extent). A disk with a parent (`parentCID` other than `ffffffff`, or a `parentFileNameHint`)
//! needs it and is refused, as are ESX's VMFS sparse formats; an extent file must lie in the
//! descriptor's own folder or below it.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{invalid, le32, le64, read_blocks, read_table, unsupported, within_disk, Place};
use crate::image::ReadAt;

const MAGIC: &[u8; 4] = b"KDMV";
const DESCRIPTOR: &str = "# Disk DescriptorFile";
const GD_AT_END: u64 = u64::MAX;
const FLAG_ZEROED_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
/// A text descriptor is small; a larger file with the same start is something else.
const MAX_DESCRIPTOR: u64 = 1 << 20;
/// Grain tables kept in memory.
const GT_CACHE: usize = 64;

pub fn is_vmdk(head: &[u8]) -> bool {
    head.get(..4) == Some(&MAGIC[..]) || head.starts_with(DESCRIPTOR.as_bytes())
}

/// A hosted sparse extent.
struct Sparse {
    file: Arc<dyn ReadAt>,
    path: PathBuf,
    /// Its size in bytes, and a grain's.
    size: u64,
    grain: u64,
    gtes: u64,
    gd: Vec<u32>,
    flags: u32,
    gt_cache: Mutex<Vec<(u32, Arc<Vec<u32>>)>>,
}

impl Sparse {
    fn open(file: Arc<dyn ReadAt>, path: &Path) -> io::Result<Sparse> {
        let file_size = file.size()?;
        let mut h = [0u8; 512];
        if file_size < 512 {
            return Err(invalid(path, "shorter than a VMDK sparse header"));
        }
        file.read_exact_at(&mut h, 0)?;
        if &h[..4] != MAGIC {
            return Err(invalid(path, "no VMDK sparse header (KDMV)"));
        }
        if le64(&h, 56) == GD_AT_END {
            // streamOptimized: the header that counts is in the footer, 1024 bytes before the end.
            if file_size < 1536 {
                return Err(invalid(path, "a streamOptimized VMDK without its footer"));
            }
            file.read_exact_at(&mut h, file_size - 1024)?;
            if &h[..4] != MAGIC || le64(&h, 56) == GD_AT_END {
                return Err(invalid(
                    path,
                    "the footer of a streamOptimized VMDK is missing or damaged (the file may be cut off)",
                ));
            }
        }
        let version = le32(&h, 4);
        if !(1..=3).contains(&version) {
            return Err(unsupported(path, format!("VMDK sparse version {version}")));
        }
        let flags = le32(&h, 8);
        let capacity = le64(&h, 12);
        let grain_sectors = le64(&h, 20);
        let gtes = u64::from(le32(&h, 44));
        let gd_at = le64(&h, 56);
        if !grain_sectors.is_power_of_two() || !(1..=(1 << 17)).contains(&grain_sectors) {
            return Err(invalid(
                path,
                format!("grain size of {grain_sectors} sectors"),
            ));
        }
        if gtes == 0 || gtes > 1 << 16 {
            return Err(invalid(path, format!("{gtes} entries per grain table")));
        }
        if flags & FLAG_COMPRESSED != 0 && le16_at(&h, 77) != 1 {
            return Err(unsupported(
                path,
                format!(
                    "compression algorithm {} (VMDK uses 1, deflate)",
                    le16_at(&h, 77)
                ),
            ));
        }
        let grain = grain_sectors * 512;
        let size = capacity.saturating_mul(512);
        let tables = size.div_ceil(grain * gtes);
        let raw = read_table(
            file.as_ref(),
            path,
            "grain directory",
            gd_at.saturating_mul(512),
            tables,
            4,
        )?;
        Ok(Sparse {
            file,
            path: path.to_path_buf(),
            size,
            grain,
            gtes,
            gd: raw.chunks_exact(4).map(|c| le32(c, 0)).collect(),
            flags,
            gt_cache: Mutex::new(Vec::new()),
        })
    }

    fn table(&self, sector: u32) -> io::Result<Arc<Vec<u32>>> {
        let mut cache = self.gt_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, t)) = cache.iter().find(|(s, _)| *s == sector) {
            return Ok(t.clone());
        }
        let raw = read_table(
            self.file.as_ref(),
            &self.path,
            "grain table",
            u64::from(sector) * 512,
            self.gtes,
            4,
        )?;
        let t = Arc::new(raw.chunks_exact(4).map(|c| le32(c, 0)).collect::<Vec<_>>());
        if cache.len() >= GT_CACHE {
            cache.remove(0);
        }
        cache.push((sector, t.clone()));
        Ok(t)
    }

    fn place(&self, index: u64) -> io::Result<Place> {
        let gt = self.gd[(index / self.gtes) as usize];
        if gt == 0 {
            return Ok(Place::Zeros);
        }
        let entry = self.table(gt)?[(index % self.gtes) as usize];
        match entry {
            0 => Ok(Place::Zeros),
            1 if self.flags & FLAG_ZEROED_GRAIN != 0 => Ok(Place::Zeros),
            s if self.flags & FLAG_COMPRESSED != 0 => self.compressed(index, u64::from(s) * 512),
            s => Ok(Place::At(u64::from(s) * 512)),
        }
    }

    /// A compressed grain at byte `at`: behind a 12-byte marker (LBA, size) in a streamOptimized file.
    fn compressed(&self, index: u64, at: u64) -> io::Result<Place> {
        let file_size = self.file.size()?;
        let (data_at, len) = if self.flags & FLAG_MARKERS != 0 {
            let mut m = [0u8; 12];
            self.file.read_exact_at(&mut m, at)?;
            (at + 12, u64::from(le32(&m, 8)))
        } else {
            (
                at,
                (file_size.saturating_sub(at)).min(2 * self.grain + 4096),
            )
        };
        if data_at.saturating_add(len) > file_size || len > 2 * self.grain + 4096 {
            return Err(invalid(
                &self.path,
                format!("the compressed grain {index} at byte {at} is past the end or too long"),
            ));
        }
        let mut input = vec![0u8; len as usize];
        self.file.read_exact_at(&mut input, data_at)?;
        let mut out = vec![0u8; self.grain as usize];
        let mut z = flate2::read::ZlibDecoder::new(&input[..]);
        z.read_exact(&mut out).map_err(|e| {
            invalid(
                &self.path,
                format!("the compressed grain {index} at byte {at} does not decompress: {e}"),
            )
        })?;
        Ok(Place::Bytes(Arc::new(out)))
    }
}

impl ReadAt for Sparse {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_blocks(
            self.file.as_ref(),
            &self.path,
            (self.size, self.grain),
            buf,
            offset,
            |i| self.place(i),
        )
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

fn le16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Part of the guest disk, from `start`, `len` bytes long.
struct Extent {
    start: u64,
    len: u64,
    /// `None`: zeros. Otherwise the file and where in it the extent starts.
    data: Option<(Arc<dyn ReadAt>, u64)>,
}

pub struct Vmdk {
    path: PathBuf,
    size: u64,
    extents: Vec<Extent>,
    kind: String,
}

impl Vmdk {
    pub fn open(file: Arc<dyn ReadAt>, path: &Path) -> io::Result<Vmdk> {
        let mut head = [0u8; 4];
        file.read_exact_at(&mut head, 0)?;
        if &head == MAGIC {
            let s = Sparse::open(file, path)?;
            let kind = if s.flags & FLAG_COMPRESSED != 0 {
                "streamOptimized"
            } else {
                "monolithicSparse"
            };
            return Ok(Vmdk {
                path: path.to_path_buf(),
                size: s.size,
                extents: vec![Extent {
                    start: 0,
                    len: s.size,
                    data: Some((Arc::new(s), 0)),
                }],
                kind: kind.into(),
            });
        }
        let len = file.size()?;
        if len > MAX_DESCRIPTOR {
            return Err(invalid(path, "a VMDK descriptor larger than 1 MiB"));
        }
        let mut text = vec![0u8; len as usize];
        file.read_exact_at(&mut text, 0)?;
        descriptor(&String::from_utf8_lossy(&text), path)
    }

    pub fn notes(&self) -> Vec<String> {
        vec![format!(
            "VMDK, {}, {} extent(s)",
            self.kind,
            self.extents.len()
        )]
    }
}

/// A text descriptor's disk: its extents, opened beside it.
fn descriptor(text: &str, path: &Path) -> io::Result<Vmdk> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut extents = Vec::new();
    let mut kind = String::from("descriptor");
    let mut start = 0u64;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let (key, value) = (key.trim(), value.trim().trim_matches('"'));
            match key {
                "parentCID" if !value.eq_ignore_ascii_case("ffffffff") => {
                    return Err(unsupported(path, parent_refusal()))
                }
                "parentFileNameHint" => return Err(unsupported(path, parent_refusal())),
                "createType" => kind = value.to_string(),
                _ => {}
            }
            continue;
        }
        let words: Vec<&str> = line.splitn(4, ' ').collect();
        if !matches!(words.first(), Some(&("RW" | "RDONLY" | "NOACCESS"))) {
            continue;
        }
        let bad = || {
            invalid(
                path,
                format!("the extent line `{line}` is not one this program reads"),
            )
        };
        let sectors: u64 = words.get(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let len = sectors.checked_mul(512).ok_or_else(bad)?;
        let etype = words.get(2).copied().ok_or_else(bad)?;
        let rest = words.get(3).copied().unwrap_or("");
        let data = match etype {
            "ZERO" => None,
            "FLAT" | "VMFS" | "SPARSE" => {
                let (name, after) = quoted(rest).ok_or_else(bad)?;
                let file = extent_file(dir, name, path)?;
                if etype == "SPARSE" {
                    let s = Sparse::open(file, &dir.join(name))?;
                    Some((Arc::new(s) as Arc<dyn ReadAt>, 0))
                } else {
                    let offset: u64 = match after.trim() {
                        "" => 0,
                        o => o.parse::<u64>().map_err(|_| bad())?.saturating_mul(512),
                    };
                    Some((file, offset))
                }
            }
            other => {
                return Err(unsupported(
                    path,
                    format!("extents of type {other} (this program reads FLAT, ZERO and SPARSE)"),
                ))
            }
        };
        extents.push(Extent { start, len, data });
        start = start.checked_add(len).ok_or_else(bad)?;
    }
    if extents.is_empty() {
        return Err(invalid(path, "the VMDK descriptor names no extent"));
    }
    Ok(Vmdk {
        path: path.to_path_buf(),
        size: start,
        extents,
        kind,
    })
}

fn parent_refusal() -> &'static str {
    "this VMDK holds only the changes over a parent disk; make a standalone copy first \
     (vmware-vdiskmanager, or qemu-img convert)"
}

/// `"name" rest` → (`name`, `rest`).
fn quoted(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start().strip_prefix('"')?;
    let end = s.find('"')?;
    Some((&s[..end], &s[end + 1..]))
}

/// The extent file `name`, which must lie in `dir` or below it.
fn extent_file(dir: &Path, name: &str, descriptor: &Path) -> io::Result<Arc<dyn ReadAt>> {
    let rel = Path::new(name);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(unsupported(
            descriptor,
            format!("its extent `{name}` is outside its folder (an absolute path or ..); refused"),
        ));
    }
    let path = dir.join(rel);
    let f = std::fs::File::open(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: its extent {}: {e}",
                descriptor.display(),
                path.display()
            ),
        )
    })?;
    Ok(Arc::new(f))
}

impl ReadAt for Vmdk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        within_disk(&self.path, self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let i = self.extents.partition_point(|e| e.start + e.len <= pos);
            let e = &self.extents[i];
            let within = pos - e.start;
            let n = ((e.len - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match &e.data {
                None => out.fill(0),
                Some((file, at)) => {
                    file.read_exact_at(out, at + within)
                        .map_err(|err| match err.kind() {
                            io::ErrorKind::UnexpectedEof => invalid(
                                &self.path,
                                format!("extent {i} is shorter than the descriptor says"),
                            ),
                            _ => err,
                        })?
                }
            }
            done += n;
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}
