//! exFAT: the main and backup boot regions, the FAT(s), and every cluster the allocation bitmap
//! marks, plus — belt and braces — the clusters of the bitmap itself, the up-case table and the
//! root directory.
//!
//! Unlike FAT, the exFAT FAT is not the allocation authority: contiguous files ("NoFatChain") have
//! no FAT entries at all, so only the allocation bitmap can say what is used. The bitmap is found
//! through the root directory's allocation-bitmap entry (type 0x81). A volume marked dirty may have
//! a bitmap that lags its directories, so it is captured raw.

use std::io::{Read, Seek};

use super::ranges::RangeSet;
use super::{byte, le16, le32, le64, Disk, FsError, UsedMap};

const EOC: u32 = 0xFFFF_FFFF;
const BAD: u32 = 0xFFFF_FFF7;
const DIRTY: u16 = 0x2;
const MEDIA_FAILURE: u16 = 0x4;
/// The root directory may not exceed 256 MiB (specification); bounds a looping chain.
const MAX_DIR_BYTES: u64 = 256 << 20;
/// Bytes of a directory or bitmap read at once.
const PIECE: u64 = 1 << 20;

pub(super) struct Geometry {
    pub bps: u64,
    pub cluster: u64,
    fat_offset: u64,
    fat_length: u64,
    nfats: u64,
    heap: u64,
    pub clusters: u64,
    pub root: u64,
    active_fat: u64,
}

impl Geometry {
    pub(super) fn cluster_offset(&self, c: u64) -> u64 {
        self.heap * self.bps + (c - 2) * self.cluster
    }

    fn valid(&self, c: u64) -> bool {
        c >= 2 && c < self.clusters + 2
    }
}

pub(super) fn used_map<R: Read + Seek>(disk: &mut Disk<'_, R>) -> Result<UsedMap, FsError> {
    let boot = disk.read(0, 512)?;
    let g = geometry(disk, &boot)?;
    let flags = le16(&boot, 106);
    if flags & DIRTY != 0 {
        return Err(disk.unsupported(
            "the volume is marked dirty (still mounted, or not cleanly unmounted), so its allocation \
             bitmap may lag its files; run `fsck.exfat` for a compact capture",
        ));
    }
    let mut notes = Vec::new();
    if flags & MEDIA_FAILURE != 0 {
        notes.push("the volume records media failures; expect unreadable sectors".to_owned());
    }
    let main_sum = boot_region_checksum(disk, 0, g.bps)?;
    if main_sum.is_none() {
        return Err(disk.inconsistent(
            11 * g.bps,
            "the main boot region fails its checksum (damaged boot sector)",
        ));
    }
    if boot_region_checksum(disk, 12, g.bps)? != main_sum {
        notes.push(
            "the backup boot region differs from the main one (harmless if the main is intact)"
                .into(),
        );
    }

    let mut used = RangeSet::new();
    used.push(0..24 * g.bps);
    used.push(g.fat_offset * g.bps..(g.fat_offset + g.nfats * g.fat_length) * g.bps);

    // The root directory: its clusters, and the bitmap and up-case entries in it.
    let root = chain(disk, &g, g.root, None)?;
    let mut bitmaps = Vec::new();
    let mut upcase = None;
    'scan: for &c in &root {
        let at = g.cluster_offset(c);
        for piece in 0..g.cluster.div_ceil(PIECE) {
            let len = PIECE.min(g.cluster - piece * PIECE);
            let dir = disk.read(at + piece * PIECE, len)?;
            for e in dir.chunks_exact(32) {
                match e[0] {
                    0x00 => break 'scan,
                    0x81 => bitmaps.push((u64::from(le32(e, 20)), le64(e, 24))),
                    0x82 => upcase = Some((u64::from(le32(e, 20)), le64(e, 24))),
                    _ => {}
                }
            }
        }
    }
    for &c in &root {
        used.push(g.cluster_offset(c)..g.cluster_offset(c) + g.cluster);
    }
    if let Some((first, len)) = upcase {
        for c in chain(disk, &g, first, Some(len))? {
            used.push(g.cluster_offset(c)..g.cluster_offset(c) + g.cluster);
        }
    }
    if bitmaps.is_empty() || bitmaps.len() > 2 {
        return Err(disk.inconsistent(
            g.cluster_offset(g.root),
            format!(
                "the root directory has {} allocation bitmap entries (1 or 2 expected)",
                bitmaps.len()
            ),
        ));
    }
    let need = g.clusters.div_ceil(8);
    let mut set_bits = Vec::new();
    for (first, len) in bitmaps {
        if len < need {
            return Err(disk.inconsistent(
                g.cluster_offset(g.root),
                format!(
                    "the allocation bitmap has {len} bytes, too few for {} clusters",
                    g.clusters
                ),
            ));
        }
        let clusters = chain(disk, &g, first, Some(need))?;
        for &c in &clusters {
            used.push(g.cluster_offset(c)..g.cluster_offset(c) + g.cluster);
        }
        set_bits.push(read_bitmap(disk, &g, &clusters, need, &mut used)?);
    }
    let percent = byte(&boot, 112);
    if percent <= 100 && g.clusters > 0 {
        let actual = set_bits.iter().copied().max().unwrap_or(0) * 100 / g.clusters;
        if actual.abs_diff(u64::from(percent)) > 1 {
            notes.push(format!(
                "boot sector says {percent}% in use, the bitmap {actual}% (stale, harmless)"
            ));
        }
    }
    let mut map = UsedMap::from_set(used, disk.size(), g.cluster, disk.fs());
    map.notes.extend(notes);
    Ok(map)
}

pub(super) fn geometry<R: Read + Seek>(disk: &Disk<'_, R>, b: &[u8]) -> Result<Geometry, FsError> {
    let bad = |off: u64, reason: String| disk.inconsistent(off, reason);
    if b.get(3..11) != Some(b"EXFAT   ".as_slice()) || b[11..64].iter().any(|&x| x != 0) {
        return Err(bad(
            3,
            "not an exFAT boot sector (name or must-be-zero area)".into(),
        ));
    }
    let rev = le16(b, 104);
    if rev >> 8 != 1 {
        return Err(disk.unsupported(format!(
            "unknown exFAT revision {}.{}",
            rev >> 8,
            rev & 0xFF
        )));
    }
    let bps_shift = byte(b, 108);
    let spc_shift = byte(b, 109);
    if !(9..=12).contains(&bps_shift) || u32::from(bps_shift) + u32::from(spc_shift) > 25 {
        return Err(bad(
            108,
            format!("sector size 2^{bps_shift} or cluster size 2^{spc_shift} sectors is invalid"),
        ));
    }
    let bps = 1u64 << bps_shift;
    let cluster = bps << spc_shift;
    let volume = le64(b, 72);
    if volume.checked_mul(bps).is_none_or(|v| v > disk.size()) {
        return Err(bad(
            72,
            format!(
                "{volume} sectors do not fit the partition's {} bytes (shrunk partition or damaged \
                 boot sector)",
                disk.size()
            ),
        ));
    }
    let fat_offset = u64::from(le32(b, 80));
    let fat_length = u64::from(le32(b, 84));
    let heap = u64::from(le32(b, 88));
    let clusters = u64::from(le32(b, 92));
    let root = u64::from(le32(b, 96));
    let nfats = u64::from(byte(b, 110));
    if !(1..=2).contains(&nfats) {
        return Err(bad(110, format!("{nfats} FATs is invalid")));
    }
    if fat_offset < 24
        || fat_offset + nfats * fat_length > heap
        || fat_length * bps < (clusters + 2) * 4
    {
        return Err(bad(
            80,
            "the FAT does not fit between the boot regions and the cluster heap".into(),
        ));
    }
    if heap + (clusters << spc_shift) > volume {
        return Err(bad(
            92,
            format!("{clusters} clusters do not fit the volume"),
        ));
    }
    let g = Geometry {
        bps,
        cluster,
        fat_offset,
        fat_length,
        nfats,
        heap,
        clusters,
        root,
        active_fat: if nfats == 2 {
            u64::from(le16(b, 106) & 1)
        } else {
            0
        },
    };
    if !g.valid(root) {
        return Err(bad(
            96,
            format!("root directory cluster {root} is out of range"),
        ));
    }
    Ok(g)
}

/// The checksum of the 12-sector boot region starting at `first`, if its checksum sector agrees.
fn boot_region_checksum<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    first: u64,
    bps: u64,
) -> Result<Option<u32>, FsError> {
    let region = disk.read(first * bps, 12 * bps)?;
    let mut sum = 0u32;
    for (i, &x) in region[..(11 * bps) as usize].iter().enumerate() {
        // VolumeFlags and PercentInUse change in place and are excluded by definition.
        if matches!(i, 106 | 107 | 112) {
            continue;
        }
        sum = sum.rotate_right(1).wrapping_add(u32::from(x));
    }
    let ok = region[(11 * bps) as usize..]
        .chunks_exact(4)
        .all(|w| le32(w, 0) == sum);
    Ok(ok.then_some(sum))
}

/// The clusters of a chain starting at `first`: `Some(bytes)` for a structure of known length (a
/// FAT entry of 0 then means "contiguous", as for NoFatChain files), `None` to follow the FAT to
/// its end-of-chain marker.
pub(super) fn chain<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    g: &Geometry,
    first: u64,
    bytes: Option<u64>,
) -> Result<Vec<u64>, FsError> {
    let fat = (g.fat_offset + g.active_fat * g.fat_length) * g.bps;
    let want = bytes.map(|b| b.div_ceil(g.cluster));
    let limit = want
        .unwrap_or(MAX_DIR_BYTES.div_ceil(g.cluster))
        .min(g.clusters);
    let mut out = Vec::new();
    let mut c = first;
    let mut contiguous = false;
    loop {
        if !g.valid(c) {
            return Err(disk.inconsistent(
                fat + 4 * c,
                format!("a metadata chain reaches invalid cluster {c}"),
            ));
        }
        out.push(c);
        if want.is_some_and(|w| out.len() as u64 >= w) {
            return Ok(out);
        }
        if out.len() as u64 >= limit {
            return Err(disk.inconsistent(
                fat + 4 * c,
                "a metadata chain is longer than possible (a loop?)",
            ));
        }
        if contiguous {
            c += 1;
            continue;
        }
        let next = le32(&disk.read(fat + 4 * c, 4)?, 0);
        match next {
            EOC if want.is_none() => return Ok(out),
            0 if want.is_some() => {
                contiguous = true;
                c += 1;
            }
            EOC | BAD | 0 => {
                return Err(disk.inconsistent(
                    fat + 4 * c,
                    format!("a metadata chain ends early at cluster {c}"),
                ));
            }
            n => c = u64::from(n),
        }
    }
}

/// Adds the clusters the bitmap marks; returns how many.
fn read_bitmap<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    g: &Geometry,
    clusters: &[u64],
    need: u64,
    used: &mut RangeSet,
) -> Result<u64, FsError> {
    let mut set = 0;
    let mut bit = 0u64;
    for &c in clusters {
        let mut done = 0;
        while done < g.cluster && bit < g.clusters {
            let len = PIECE.min(g.cluster - done).min(need - bit / 8);
            let bytes = disk.read(g.cluster_offset(c) + done, len)?;
            let nbits = (len * 8).min(g.clusters - bit);
            set += used.push_bits(&bytes, nbits, g.cluster_offset(2 + bit), g.cluster);
            bit += nbits;
            done += len;
        }
    }
    Ok(set)
}
