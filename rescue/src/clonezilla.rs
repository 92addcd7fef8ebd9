//! Clonezilla's image directories, read (docs/CLONEZILLA.md): which disk and partitions a directory
//! holds, where each was on the disk (`<disk>-pt.sf`), the saved table structures (`<disk>-mbr`,
//! `<disk>-gpt-1st`, `<disk>-hidden-data-after-mbr`, the EBRs), each partition's partclone image (its
//! pieces, compressed; read through [`crate::partclone::stored`]) and the swap partitions to recreate.
//! A single partclone image, whole or split, is read as a directory of one partition.
//!
//! Only reading and checking live here; turning an image into writes is `engine::clonezilla`'s part.
//! Every file is read with a size limit, and what cannot be restored faithfully (ntfsclone and partimage
//! images, several disks in one directory) is named and refused rather than guessed at.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::partclone::{self, stored};

pub mod ebr;
pub mod sfdisk;

#[cfg(test)]
mod tests;

/// The largest text file read from a directory (`disk`, `parts`, a table dump).
const MAX_TEXT: u64 = 1 << 20;
/// The most bytes of hidden data after the MBR read (Clonezilla saves at most 1 MiB by default; more is
/// not a table area).
pub const MAX_HIDDEN: u64 = 64 << 20;

/// A Clonezilla image: the directory, or one partclone image file.
#[derive(Debug, Clone)]
pub struct Image {
    /// The directory, or the partclone image's first piece.
    pub path: PathBuf,
    /// The disk the directory was saved from, with its table (a `savedisk` image; `None` for a
    /// `saveparts` image or a bare partclone image).
    pub disk: Option<Disk>,
    /// Every partition saved or described, in table order.
    pub partitions: Vec<Part>,
    /// When Clonezilla says it saved the image (`clonezilla-img`: "2026-12-07 19:09:31 UTC").
    pub saved_at: Option<String>,
    /// The packages that saved it (`Info-packages.txt`), for the user.
    pub saved_by: Option<String>,
    /// Things the user should know that do not stop a restore.
    pub notes: Vec<String>,
}

/// The disk of a `savedisk` image.
#[derive(Debug, Clone)]
pub struct Disk {
    /// The kernel's name of the disk it was saved from (`sda`, `nvme0n1`).
    pub name: String,
    pub table: sfdisk::Dump,
    /// The disk's size in bytes: from the GPT header, else `<disk>-pt.parted`, else the end of the last
    /// partition.
    pub size_bytes: u64,
    /// Whether `size_bytes` is the disk's (true) or only the end of its last partition.
    pub size_known: bool,
    /// LBA 0 as saved (`<disk>-mbr`, or the first sector of `<disk>-gpt-1st`).
    pub mbr: Vec<u8>,
    /// GPT: the primary header and entry array (from LBA 1), from `<disk>-gpt-1st`.
    pub gpt_primary: Option<Vec<u8>>,
    /// `<disk>-hidden-data-after-mbr`: what lay between LBA 0 and the first partition (boot loaders).
    pub hidden: Option<PathBuf>,
    /// The EBR of each logical partition, where it goes (in bytes) and its bytes: made again from the
    /// table dump as Clonezilla's sfdisk does ([`ebr::chain`]; only the first is saved, `<extended>-ebr`).
    pub ebrs: Vec<(u64, Vec<u8>)>,
}

/// A partition of the image.
#[derive(Debug, Clone)]
pub struct Part {
    /// The kernel's name it was saved under (`sda1`, `nvme0n1p2`).
    pub name: String,
    pub number: u32,
    /// Its place on the disk, in bytes (from the table; for a bare image, 0 and the filesystem's size).
    pub start: u64,
    pub len: u64,
    pub content: Content,
}

/// What the image holds for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A partclone image: the first piece, and the filesystem as the file name says (`ext4`, `vfat`,
    /// `dd` for a raw copy).
    Partclone { first: PathBuf, fs: String },
    /// A swap partition: Clonezilla saves only its UUID and label (`swappt-<part>.info`) and recreates it.
    Swap {
        uuid: Option<String>,
        label: Option<String>,
    },
    /// An MBR extended container (its EBRs are table structures).
    Extended,
    /// Nothing saved for it (Clonezilla skips partitions it cannot read); the target keeps what it had there.
    NotSaved,
    /// Saved in a form this program does not read (ntfsclone, partimage, a plain dd image), by name.
    Unsupported { file: PathBuf, why: String },
}

/// Why a directory cannot be read as a Clonezilla image.
#[derive(Debug)]
pub struct Error {
    pub path: PathBuf,
    pub what: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

impl std::error::Error for Error {}

fn error(path: &Path, what: impl Into<String>) -> Error {
    Error {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// A small file's bytes, at most `limit` of them (more is an error).
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| error(path, e.to_string()))?;
    let mut out = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| error(path, e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(error(
            path,
            format!("larger than the {limit} bytes expected"),
        ));
    }
    Ok(out)
}

fn read_text(path: &Path) -> Result<String, Error> {
    Ok(String::from_utf8_lossy(&read_limited(path, MAX_TEXT)?).into_owned())
}

/// Whether `dir` looks like a Clonezilla image directory (it has `parts` or `disk`, and
/// `clonezilla-img` or a `*-pt.sf`): what lists of images use to show it.
pub fn is_image_dir(dir: &Path) -> bool {
    let has = |name: &str| dir.join(name).is_file();
    if !(has("parts") || has("disk")) {
        return false;
    }
    has("clonezilla-img")
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("-pt.sf"))
        })
}

/// Whether `path` is the (first piece of a) partclone image, by content: a partclone header, possibly
/// compressed.
pub fn is_partclone_file(path: &Path) -> bool {
    stored::open(path).is_ok_and(|mut o| {
        let mut head = [0u8; 16];
        std::io::Read::read_exact(&mut o.reader, &mut head).is_ok()
            && head[..15] == partclone::MAGIC[..15]
    })
}

/// Opens a Clonezilla image directory, or a single partclone image (its first piece).
pub fn open(path: &Path) -> Result<Image, Error> {
    if path.is_dir() {
        open_dir(path)
    } else {
        open_partclone_file(path)
    }
}

/// The words of a one-line list file (`disk`, `parts`).
fn words(path: &Path) -> Result<Vec<String>, Error> {
    Ok(read_text(path)?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// The files of `dir`, by name.
fn list(dir: &Path) -> Result<Vec<String>, Error> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| error(dir, e.to_string()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The image of partition `part` among `names`: a partclone image (`<part>.<fs>-ptcl-img.<z>[.aa]`),
/// or a form refused by name.
fn content_of(dir: &Path, part: &str, names: &[String]) -> Option<Content> {
    let prefix = format!("{part}.");
    let mut found: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&prefix))
        .filter(|n| !n.ends_with(".info"))
        .collect();
    // The first piece: `.aa`, or a name without a piece suffix.
    found.sort();
    let first = found
        .iter()
        .find(|n| n.ends_with(".aa"))
        .or_else(|| found.first())?;
    let rest = &first[prefix.len()..];
    let file = dir.join(first.as_str());
    // `<fs>-ptcl-img` (partclone), and the older `<fs>-img` (partclone before `-q2` was the default, an
    // ntfsclone image for `ntfs-img`, raw bytes for `dd-img`): which one a file is, is read from its content.
    if let Some(at) = rest.find("-ptcl-img").or_else(|| rest.find("-img")) {
        return Some(Content::Partclone {
            first: file,
            fs: rest[..at].to_string(),
        });
    }
    // partimage's own volumes (`<p>.000`), or its output split by `split` (`<p>.aa`).
    let why = if rest.starts_with("000") || rest.starts_with("aa") {
        "a partimage image (Clonezilla's old format), which this program does not read; restore it with \
         Clonezilla"
    } else {
        return None;
    };
    Some(Content::Unsupported {
        file,
        why: why.to_string(),
    })
}

/// `swappt-<part>.info`: `UUID="…"` and `LABEL="…"` lines.
fn swap_info(path: &Path) -> Result<Content, Error> {
    let text = read_text(path)?;
    let value = |key: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(key)
                .map(|v| v.trim_matches('"').to_string())
                .filter(|v| !v.is_empty())
        })
    };
    Ok(Content::Swap {
        uuid: value("UUID="),
        label: value("LABEL="),
    })
}

/// "This image was saved by Clonezilla at 2026-12-07 19:09:31 UTC." in `clonezilla-img`.
fn saved_at(dir: &Path) -> Option<String> {
    let text = read_text(&dir.join("clonezilla-img")).ok()?;
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("This image was saved by Clonezilla at ")
            .map(|v| v.trim_end_matches('.').to_string())
    })
}

fn open_dir(dir: &Path) -> Result<Image, Error> {
    let names = list(dir)?;
    let has = |n: &str| names.iter().any(|x| x == n);
    if !has("parts") && !has("disk") {
        return Err(error(
            dir,
            "is no Clonezilla image directory: it has neither a `disk` nor a `parts` file",
        ));
    }
    let disks = if has("disk") {
        words(&dir.join("disk"))?
    } else {
        Vec::new()
    };
    if disks.len() > 1 {
        return Err(error(
            dir,
            format!(
                "holds {} disks ({}); restoring one disk of a multi-disk Clonezilla image is not supported \
                 yet",
                disks.len(),
                disks.join(", ")
            ),
        ));
    }
    let parts = if has("parts") {
        words(&dir.join("parts"))?
    } else {
        Vec::new()
    };
    let mut notes = Vec::new();
    let disk = match disks.first() {
        Some(name) => Some(read_disk(dir, name, &names)?),
        None => None,
    };
    let mut partitions = Vec::new();
    match &disk {
        Some(d) => {
            let ss = u64::from(d.table.sector_size);
            for e in &d.table.entries {
                let name = e.device.rsplit('/').next().unwrap_or(&e.device).to_string();
                let swap = format!("swappt-{name}.info");
                let content = if e.is_extended() && d.table.label == sfdisk::Label::Dos {
                    Content::Extended
                } else if let Some(c) = content_of(dir, &name, &names) {
                    c
                } else if has(&swap) {
                    swap_info(&dir.join(&swap))?
                } else {
                    notes.push(format!(
                        "partition {} ({name}) was not saved by Clonezilla: a restore leaves what the target \
                         holds there",
                        e.number
                    ));
                    Content::NotSaved
                };
                partitions.push(Part {
                    name,
                    number: e.number,
                    start: e.start * ss,
                    len: e.size * ss,
                    content,
                });
            }
            for p in &parts {
                if !partitions.iter().any(|x| &x.name == p) {
                    return Err(error(
                        dir,
                        format!("`parts` names {p}, which is not in {}-pt.sf", d.name),
                    ));
                }
            }
        }
        None => {
            for name in &parts {
                let number = sfdisk::partition_number(name).ok_or_else(|| {
                    error(
                        dir,
                        format!("`parts` names {name:?}, which has no partition number"),
                    )
                })?;
                let content = content_of(dir, name, &names).ok_or_else(|| {
                    error(
                        dir,
                        format!("`parts` names {name} but no image of it is here"),
                    )
                })?;
                let (start, len) = table_place(dir, name, &names).unwrap_or((0, 0));
                partitions.push(Part {
                    name: name.clone(),
                    number,
                    start,
                    len,
                    content,
                });
            }
        }
    }
    for p in &partitions {
        if matches!(p.content, Content::NotSaved) && parts.contains(&p.name) {
            return Err(error(
                dir,
                format!("`parts` lists {} but its image file is missing", p.name),
            ));
        }
    }
    Ok(Image {
        path: dir.to_path_buf(),
        disk,
        partitions,
        saved_at: saved_at(dir),
        saved_by: read_text(&dir.join("Info-packages.txt"))
            .ok()
            .and_then(|t| t.lines().nth(1).map(|l| l.trim().to_string())),
        notes,
    })
}

/// A `saveparts` image's partition placed by its disk's saved table, if the directory has it.
fn table_place(dir: &Path, part: &str, names: &[String]) -> Option<(u64, u64)> {
    names
        .iter()
        .filter(|n| n.ends_with("-pt.sf"))
        .find_map(|n| {
            let d = sfdisk::parse(&read_text(&dir.join(n)).ok()?).ok()?;
            let e = d
                .entries
                .iter()
                .find(|e| e.device.rsplit('/').next() == Some(part))?;
            let ss = u64::from(d.sector_size);
            Some((e.start * ss, e.size * ss))
        })
}

/// `Disk /dev/sda: 41943040s` in `<disk>-pt.parted`: the disk's size in sectors.
fn parted_sectors(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("Disk /")?;
        let (_, size) = rest.rsplit_once(": ")?;
        size.trim().strip_suffix('s')?.parse().ok()
    })
}

fn read_disk(dir: &Path, name: &str, names: &[String]) -> Result<Disk, Error> {
    let sf = dir.join(format!("{name}-pt.sf"));
    if !sf.is_file() {
        return Err(error(
            dir,
            format!("has no {name}-pt.sf, the saved partition table of {name}; it cannot be restored as a disk"),
        ));
    }
    let table = sfdisk::parse(&read_text(&sf)?).map_err(|e| error(&sf, e.to_string()))?;
    let ss = table.sector_size;
    let ssu = ss as usize;
    let file = |suffix: &str| {
        let p = dir.join(format!("{name}-{suffix}"));
        p.is_file().then_some(p)
    };
    let mut size_bytes = None;
    let (mbr, gpt_primary) = match table.label {
        sfdisk::Label::Gpt => {
            let p = file("gpt-1st").ok_or_else(|| {
                error(
                    dir,
                    format!("has no {name}-gpt-1st, the saved GPT of {name}"),
                )
            })?;
            let bytes = read_limited(&p, 1 << 20)?;
            if bytes.len() < 2 * ssu || &bytes[ssu..ssu + 8] != b"EFI PART" {
                return Err(error(&p, "holds no GPT header at its second sector"));
            }
            let hdr = &bytes[ssu..2 * ssu];
            let le32 = |o: usize| u32::from_le_bytes(hdr[o..o + 4].try_into().unwrap_or_default());
            let le64 = |o: usize| u64::from_le_bytes(hdr[o..o + 8].try_into().unwrap_or_default());
            let entries_len = u64::from(le32(80)) * u64::from(le32(84));
            let need = (2 * u64::from(ss) + entries_len) as usize;
            if bytes.len() < need {
                return Err(error(
                    &p,
                    format!(
                        "is {} bytes, shorter than its GPT's entry array ({need} bytes)",
                        bytes.len()
                    ),
                ));
            }
            // The backup header is the disk's last sector.
            size_bytes = le64(32)
                .checked_add(1)
                .and_then(|n| n.checked_mul(u64::from(ss)));
            (bytes[..ssu].to_vec(), Some(bytes[ssu..need].to_vec()))
        }
        sfdisk::Label::Dos => {
            let p = file("mbr")
                .ok_or_else(|| error(dir, format!("has no {name}-mbr, the saved MBR of {name}")))?;
            let bytes = read_limited(&p, 1 << 16)?;
            if bytes.len() < 512 || bytes[510..512] != [0x55, 0xAA] {
                return Err(error(&p, "holds no MBR (no 55 AA signature at byte 510)"));
            }
            (bytes[..512].to_vec(), None)
        }
        sfdisk::Label::Other(ref other) => {
            return Err(error(
                &sf,
                format!("describes a {other:?} table; only GPT and MBR (dos) are restored"),
            ))
        }
    };
    if size_bytes.is_none() {
        if let Some(p) = file("pt.parted") {
            size_bytes = parted_sectors(&read_text(&p)?).map(|n| n * u64::from(ss));
        }
    }
    let end = table
        .entries
        .iter()
        .map(|e| (e.start + e.size) * u64::from(ss))
        .max()
        .unwrap_or(0);
    let size_known = size_bytes.is_some_and(|s| s >= end);
    let mut first_ebr = None;
    if let Some(ext) = table
        .entries
        .iter()
        .find(|e| e.number <= 4 && e.is_extended())
    {
        let part = ext.device.rsplit('/').next().unwrap_or(&ext.device);
        let p = dir.join(format!("{part}-ebr"));
        if p.is_file() {
            first_ebr = Some(read_limited(&p, 1 << 16)?);
        }
    }
    let ebrs = ebr::chain(&table, first_ebr.as_deref())
        .map_err(|e| error(&sf, e))?
        .into_iter()
        .map(|(lba, bytes)| (lba * u64::from(ss), bytes.to_vec()))
        .collect();
    let hidden = file("hidden-data-after-mbr");
    let _ = names;
    Ok(Disk {
        name: name.to_string(),
        size_bytes: if size_known {
            size_bytes.unwrap_or(end)
        } else {
            end
        },
        size_known,
        table,
        mbr,
        gpt_primary,
        hidden,
        ebrs,
    })
}

/// A bare partclone image (its first piece): one partition, numbered 1, as large as its filesystem.
fn open_partclone_file(path: &Path) -> Result<Image, Error> {
    let opened = stored::open(path).map_err(|e| error(path, e.to_string()))?;
    let name = path.display().to_string();
    let stream =
        partclone::Stream::open(opened.reader, &name).map_err(|e| error(path, e.to_string()))?;
    let h = stream.header();
    let len = h.device_size.max(h.total_blocks * u64::from(h.block_size));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Image {
        path: path.to_path_buf(),
        disk: None,
        partitions: vec![Part {
            name: file_name.split('.').next().unwrap_or("").to_string(),
            number: 1,
            start: 0,
            len,
            content: Content::Partclone {
                first: path.to_path_buf(),
                fs: h.fs.to_lowercase(),
            },
        }],
        saved_at: None,
        saved_by: Some(format!("partclone {}", h.partclone_version)),
        notes: Vec::new(),
    })
}
