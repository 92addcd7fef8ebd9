//! Apple's disk images (DMG, the Universal Disk Image Format), read: a 512-byte big-endian trailer
//! (`koly`) at the end of the file gives the data fork, the XML property list and the disk's sector count;
//! the list's `resource-fork` → `blkx` entries are base64 block tables (`mish`), one per partition, each a
//! list of 40-byte chunk entries mapping a run of 512-byte sectors to bytes of the data fork: zeros, raw,
//! or one compressed stream (ADC, zlib, bzip2, LZFSE, xz/LZMA; [`codec`]).
//!
//! The runs of all tables are sorted by sector and found by binary search; overlapping runs, runs out of
//! order within a table and runs past the disk are refused with their place. Sectors no run covers read
//! as zeros. A compressed chunk decompresses to at most [`MAX_CHUNK`] bytes; the last few are kept
//! ([`CACHE_CHUNKS`], [`CACHE_BYTES`]) for reads of a few sectors at a time, from any thread.
//!
//! Refused by name: encrypted images (`encrcdsa` at the start, `cdsaencr` at the end), segmented ones
//! (`.dmgpart`), images older than Mac OS X 10.2 whose tables are only in a resource fork, chunk types
//! this program does not know. The checksums (of the data fork, of each table's data) are not checked.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{be32, be64, invalid, unsupported, within_disk};
use crate::image::ReadAt;

mod codec;
mod plist;

use codec::Codec;

const KOLY: &[u8; 4] = b"koly";
const MISH: &[u8; 4] = b"mish";
const TRAILER: u64 = 512;
const SECTOR: u64 = 512;
/// The most one compressed chunk may decompress to (hdiutil writes 1 MiB or less).
const MAX_CHUNK: u64 = 64 << 20;
/// The most bytes of property list read (a table per partition; a 1 TB image of 1 MiB chunks has 55 MB).
const MAX_PLIST: u64 = 256 << 20;
/// How many decompressed chunks are kept, and how many bytes of them at most.
const CACHE_CHUNKS: usize = 8;
const CACHE_BYTES: usize = 64 << 20;
/// A block table's header before its chunk entries, and one entry.
const MISH_HEADER: usize = 204;
const CHUNK_ENTRY: usize = 40;

const ZERO_FILL: u32 = 0x0000_0000;
const RAW: u32 = 0x0000_0001;
const IGNORE: u32 = 0x0000_0002;
const COMMENT: u32 = 0x7fff_fffe;
const TERMINATOR: u32 = 0xffff_ffff;

/// Whether the file's first bytes `head` and last 512 `tail` are a DMG: a `koly` trailer, or the
/// signature of an encrypted one (recognised to be refused by name).
pub fn is_dmg(head: &[u8], tail: &[u8]) -> bool {
    let koly = tail.get(..4) == Some(&KOLY[..])
        && tail.get(8..12) == Some(&(TRAILER as u32).to_be_bytes()[..]);
    koly || head.starts_with(b"encrcdsa") || (tail.len() == 512 && tail.ends_with(b"cdsaencr"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Zeros,
    Raw,
    Packed(Codec),
}

/// A run of sectors of the disk and where its bytes are.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// The disk's sector it starts at, and how many it holds.
    sector: u64,
    count: u64,
    kind: Kind,
    /// Its bytes in the file (raw or compressed; nothing for zeros).
    at: u64,
    len: u64,
    /// The block table it is from (for messages).
    table: usize,
}

impl Run {
    fn end(&self) -> u64 {
        self.sector + self.count
    }
}

pub struct Dmg {
    file: Arc<dyn ReadAt>,
    path: PathBuf,
    size: u64,
    runs: Vec<Run>,
    /// The partition names of the block tables.
    tables: Vec<String>,
    /// Whether the trailer had no sector count and the disk ends with its last run.
    sized_by_runs: bool,
    /// Recently decompressed chunks by their run's index, the most recent last.
    cache: Mutex<Vec<(usize, Arc<Vec<u8>>)>>,
}

/// What the `koly` trailer says.
struct Trailer {
    data_fork: u64,
    plist: (u64, u64),
    sectors: u64,
}

impl Dmg {
    pub fn open(file: Arc<dyn ReadAt>, path: &Path) -> io::Result<Dmg> {
        let file_size = file.size()?;
        if file_size < TRAILER {
            return Err(invalid(path, "shorter than a DMG trailer (512 bytes)"));
        }
        let end = file_size - TRAILER;
        let mut tail = [0u8; 512];
        file.read_exact_at(&mut tail, end)?;
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0)?;
        if &head == b"encrcdsa" || tail.ends_with(b"cdsaencr") {
            return Err(unsupported(
                path,
                "an encrypted DMG: this program does not decrypt them; on a Mac, `hdiutil convert \
                 IN.dmg -format UDZO -o OUT.dmg` (it asks for the password) makes an unencrypted copy",
            ));
        }
        let t = trailer(path, &tail, end)?;
        // Bounded by `trailer`: inside the file, at most MAX_PLIST.
        let mut plist = vec![0u8; t.plist.1 as usize];
        file.read_exact_at(&mut plist, t.plist.0)?;
        let entries = plist::blkx(&plist).map_err(|(at, why)| {
            invalid(
                path,
                format!(
                    "its property list, at byte {}: {why}",
                    t.plist.0.saturating_add(at as u64)
                ),
            )
        })?;
        drop(plist);
        let mut runs = Vec::new();
        let mut tables = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            table_runs(path, &e, i, (t.data_fork, end), &mut runs)?;
            tables.push(e.name);
        }
        runs.sort_by_key(|r| r.sector);
        for w in runs.windows(2) {
            if w[1].sector < w[0].end() {
                return Err(invalid(
                    path,
                    format!(
                        "block tables `{}` and `{}` both hold sectors {}..{}: the tables are damaged",
                        tables[w[0].table],
                        tables[w[1].table],
                        w[1].sector,
                        w[0].end().min(w[1].end())
                    ),
                ));
            }
        }
        let last = runs.last().map_or(0, Run::end);
        let sized_by_runs = t.sectors == 0;
        let sectors = if sized_by_runs { last } else { t.sectors };
        if last > sectors {
            let r = runs.last().map_or(0, |r| r.sector);
            return Err(invalid(
                path,
                format!(
                    "a run of block table `{}` (sectors {r}..{last}) is past the disk's {sectors} \
                     sectors (its trailer's sector count)",
                    tables[runs.last().map_or(0, |r| r.table)],
                ),
            ));
        }
        let size = sectors.checked_mul(SECTOR).ok_or_else(|| {
            invalid(
                path,
                format!("its sector count {sectors} is beyond any disk"),
            )
        })?;
        Ok(Dmg {
            file,
            path: path.to_path_buf(),
            size,
            runs,
            tables,
            sized_by_runs,
            cache: Mutex::new(Vec::new()),
        })
    }

    pub fn notes(&self) -> Vec<String> {
        let count = |k: Kind| self.runs.iter().filter(|r| r.kind == k).count();
        let mut kinds: Vec<String> = [
            (Kind::Raw, "raw"),
            (Kind::Zeros, "zero"),
            (Kind::Packed(Codec::Adc), "ADC"),
            (Kind::Packed(Codec::Zlib), "zlib"),
            (Kind::Packed(Codec::Bzip2), "bzip2"),
            (Kind::Packed(Codec::Lzfse), "LZFSE"),
            (Kind::Packed(Codec::Xz), "xz"),
        ]
        .iter()
        .filter_map(|&(k, name)| match count(k) {
            0 => None,
            n => Some(format!("{n} {name}")),
        })
        .collect();
        if kinds.is_empty() {
            kinds.push("none".into());
        }
        let mut notes = vec![format!(
            "DMG (UDIF) with {} partition block table{}, chunks: {}",
            self.tables.len(),
            if self.tables.len() == 1 { "" } else { "s" },
            kinds.join(", ")
        )];
        if self.sized_by_runs {
            notes.push(
                "its trailer gives no sector count: the disk ends where its last chunk does".into(),
            );
        }
        notes
    }

    /// The decompressed bytes of run `index` (a compressed one), from the cache or the file.
    fn chunk(&self, index: usize, r: &Run, codec: Codec) -> io::Result<Arc<Vec<u8>>> {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = cache.iter().position(|(k, _)| *k == index) {
                let hit = cache.remove(i);
                let data = hit.1.clone();
                cache.push(hit);
                return Ok(data);
            }
        }
        let mut input = vec![0u8; r.len as usize];
        let sectors = format!("sectors {}..{}", r.sector, r.end());
        self.file
            .read_exact_at(&mut input, r.at)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => invalid(
                    &self.path,
                    format!(
                        "the chunk of {sectors} at byte {} is past the end of the file",
                        r.at
                    ),
                ),
                _ => e,
            })?;
        let data =
            codec::decompress(codec, &input, (r.count * SECTOR) as usize).map_err(|why| {
                invalid(
                    &self.path,
                    format!(
                    "the {} chunk of {sectors} (block table `{}`), {} bytes at byte {}, does not \
                     decompress: {why}; the file is damaged",
                    codec.name(),
                    self.tables.get(r.table).map_or("", String::as_str),
                    r.len,
                    r.at
                ),
                )
            })?;
        let data = Arc::new(data);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|(k, _)| *k != index);
        cache.push((index, data.clone()));
        while cache.len() > CACHE_CHUNKS
            || (cache.len() > 1 && cache.iter().map(|(_, d)| d.len()).sum::<usize>() > CACHE_BYTES)
        {
            cache.remove(0);
        }
        Ok(data)
    }
}

/// The trailer's fields, checked against the file (whose trailer starts at byte `end`).
fn trailer(path: &Path, k: &[u8; 512], end: u64) -> io::Result<Trailer> {
    if &k[..4] != KOLY {
        return Err(invalid(
            path,
            "no DMG trailer (`koly`) in its last 512 bytes",
        ));
    }
    let version = be32(k, 4);
    if version != 4 {
        return Err(unsupported(
            path,
            format!("DMG trailer version {version} (this program reads version 4)"),
        ));
    }
    let header = be32(k, 8);
    if u64::from(header) != TRAILER {
        return Err(invalid(
            path,
            format!("its DMG trailer says it is {header} bytes long, not 512: it is damaged"),
        ));
    }
    let (fork_at, fork_len) = (be64(k, 24), be64(k, 32));
    let (rsrc_len, segment, segments) = (be64(k, 48), be32(k, 56), be32(k, 60));
    let plist = (be64(k, 216), be64(k, 224));
    if segments > 1 {
        return Err(unsupported(
            path,
            format!(
                "segment {segment} of a DMG in {segments} segments (`.dmgpart` files); join them \
                 first (`hdiutil convert` on a Mac)"
            ),
        ));
    }
    if fork_at.checked_add(fork_len).is_none_or(|e| e > end) {
        return Err(invalid(
            path,
            format!(
                "its data fork ({fork_len} bytes at byte {fork_at}) runs past the end of the file \
                 ({} bytes): the file is cut short or damaged",
                end + TRAILER
            ),
        ));
    }
    if plist.1 == 0 {
        return Err(if rsrc_len > 0 {
            unsupported(
                path,
                "its block tables are only in a resource fork (a DMG older than Mac OS X 10.2), \
                 which this program does not read; `hdiutil convert` on a Mac rewrites it",
            )
        } else {
            invalid(
                path,
                "its trailer names no property list: it has no block tables",
            )
        });
    }
    if plist.1 > MAX_PLIST {
        return Err(unsupported(
            path,
            format!(
                "its property list of {} bytes is larger than the {} MiB this program reads",
                plist.1,
                MAX_PLIST >> 20
            ),
        ));
    }
    if plist.0.checked_add(plist.1).is_none_or(|e| e > end) {
        return Err(invalid(
            path,
            format!(
                "its property list ({} bytes at byte {}) runs past the end of the file ({} bytes): \
                 the file is cut short or damaged",
                plist.1,
                plist.0,
                end + TRAILER
            ),
        ));
    }
    Ok(Trailer {
        data_fork: fork_at,
        plist,
        sectors: be64(k, 492),
    })
}

/// The runs of block table `index` (`e`), appended to `runs`. Chunk bytes lie at the data fork's start
/// `fork` plus the table's data offset plus the chunk's own, before the trailer at `end`.
fn table_runs(
    path: &Path,
    e: &plist::Blkx,
    index: usize,
    (fork, end): (u64, u64),
    runs: &mut Vec<Run>,
) -> io::Result<()> {
    let d = &e.data;
    let name = &e.name;
    if d.len() < MISH_HEADER || &d[..4] != MISH {
        return Err(invalid(
            path,
            format!("block table `{name}` (`blkx` entry {index}) is not a `mish` table"),
        ));
    }
    let (first, count, data_offset) = (be64(d, 8), be64(d, 16), be64(d, 24));
    let chunks = be32(d, 200) as usize;
    let room = (d.len() - MISH_HEADER) / CHUNK_ENTRY;
    if chunks > room {
        return Err(invalid(
            path,
            format!(
                "block table `{name}` says it has {chunks} chunks; its {} bytes hold {room}",
                d.len()
            ),
        ));
    }
    let base = fork.checked_add(data_offset);
    let mut next = 0u64;
    for i in 0..chunks {
        let c = &d[MISH_HEADER + i * CHUNK_ENTRY..MISH_HEADER + (i + 1) * CHUNK_ENTRY];
        let (t, rel, n, off, len) = (
            be32(c, 0),
            be64(c, 8),
            be64(c, 16),
            be64(c, 24),
            be64(c, 32),
        );
        let kind = match t {
            COMMENT => continue,
            TERMINATOR => break,
            ZERO_FILL | IGNORE => Kind::Zeros,
            RAW => Kind::Raw,
            t => Kind::Packed(Codec::of_type(t).ok_or_else(|| {
                unsupported(
                    path,
                    format!(
                        "chunk {i} of block table `{name}` is of type {t:#010x}, which this program \
                         does not know (it reads zero, ignore, raw, ADC, zlib, bzip2, LZFSE and xz \
                         chunks)"
                    ),
                )
            })?),
        };
        let place = |what: &str| {
            invalid(
                path,
                format!(
                    "chunk {i} of block table `{name}` ({n} sectors from the table's sector {rel} of \
                     {count}, {len} bytes at byte {off} of the data) {what}"
                ),
            )
        };
        if n == 0 {
            continue;
        }
        let rel_end = rel
            .checked_add(n)
            .ok_or_else(|| place("ends beyond any disk"))?;
        if rel < next {
            return Err(place(&format!(
                "overlaps or comes before the chunk before it (which ends at sector {next})"
            )));
        }
        if rel_end > count {
            return Err(place("is past the end of its table's sectors"));
        }
        next = rel_end;
        let sector = first
            .checked_add(rel)
            .filter(|s| {
                s.checked_add(n)
                    .and_then(|e| e.checked_mul(SECTOR))
                    .is_some()
            })
            .ok_or_else(|| place("ends beyond any disk"))?;
        let bytes = n * SECTOR;
        let at = match kind {
            Kind::Zeros => 0,
            Kind::Raw | Kind::Packed(_) => {
                if let Kind::Packed(c) = kind {
                    if bytes > MAX_CHUNK {
                        return Err(unsupported(
                            path,
                            format!(
                                "chunk {i} of block table `{name}` holds {n} sectors in one {} \
                                 stream; this program decompresses chunks of at most {} MiB",
                                c.name(),
                                MAX_CHUNK >> 20
                            ),
                        ));
                    }
                    if len > 2 * bytes + 4096 {
                        return Err(place(&format!(
                            "stores {len} compressed bytes for {bytes}, more than any codec needs"
                        )));
                    }
                } else if len < bytes {
                    return Err(place(&format!("stores {len} raw bytes for {bytes}")));
                }
                base.and_then(|b| b.checked_add(off))
                    .filter(|a| a.checked_add(len).is_some_and(|e| e <= end))
                    .ok_or_else(|| {
                        place(&format!(
                            "lies past the end of the file's data (byte {end}, where its trailer \
                             is): the file is cut short or damaged"
                        ))
                    })?
            }
        };
        runs.push(Run {
            sector,
            count: n,
            kind,
            at,
            len,
            table: index,
        });
    }
    Ok(())
}

impl ReadAt for Dmg {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        within_disk(&self.path, self.size, offset, buf.len())?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let sector = pos / SECTOR;
            let left = (buf.len() - done) as u64;
            // The run holding `sector`, or else the first one after it.
            let i = self.runs.partition_point(|r| r.end() <= sector);
            let (n, run) = match self.runs.get(i) {
                Some(r) if r.sector <= sector => ((r.end() * SECTOR - pos).min(left), Some(r)),
                next => {
                    let until = next.map_or(self.size, |r| r.sector * SECTOR);
                    ((until - pos).min(left), None)
                }
            };
            let n = n as usize;
            let out = &mut buf[done..done + n];
            match run {
                None => out.fill(0),
                Some(r) => {
                    let within = pos - r.sector * SECTOR;
                    match r.kind {
                        Kind::Zeros => out.fill(0),
                        Kind::Raw => self.file.read_exact_at(out, r.at + within).map_err(|e| {
                            match e.kind() {
                                io::ErrorKind::UnexpectedEof => invalid(
                                    &self.path,
                                    format!(
                                        "the raw chunk of sectors {}..{} at byte {} is past \
                                             the end of the file",
                                        r.sector,
                                        r.end(),
                                        r.at
                                    ),
                                ),
                                _ => e,
                            }
                        })?,
                        Kind::Packed(c) => {
                            let data = self.chunk(i, r, c)?;
                            let from = within as usize;
                            out.copy_from_slice(data.get(from..from + n).ok_or_else(|| {
                                invalid(&self.path, "a chunk decompressed short")
                            })?);
                        }
                    }
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

#[cfg(test)]
mod test_writer;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bad;
