//! NTFS: the clusters `$Bitmap` marks, plus the boot sector area, the backup boot sector (which
//! lies just past the last cluster), the `$MFT` extent recorded in MFT record 0 and `$MFTMirr`.
//!
//! `$Bitmap` is MFT record 6. Record 0 (`$MFT` itself) is read first, at the boot sector's MFT
//! cluster, and its `$DATA` runlist locates record 6 and the others (records can straddle runs
//! when clusters are smaller than records). Every record is checked ("FILE" signature, update
//! sequence fixups: a mismatch there is a torn write) before any field is trusted.
//!
//! NTFS journals metadata in `$LogFile`; a volume whose log still has to be replayed, or that is
//! marked dirty in `$Volume`, may have a `$Bitmap` that lags what is in use (Windows crashed, or
//! "fast startup" hibernated it), so it is captured raw. A `$Bitmap` spread over several MFT
//! records (an attribute list) is rare enough to be captured raw too.

use std::io::{Read, Seek};

use super::ranges::RangeSet;
use super::{byte, le16, le32, le64, Disk, FsError, UsedMap};

const AT_VOLUME_INFORMATION: u32 = 0x70;
const AT_ATTRIBUTE_LIST: u32 = 0x20;
const AT_DATA: u32 = 0x80;
const AT_END: u32 = 0xFFFF_FFFF;
const VOLUME_IS_DIRTY: u16 = 0x1;
/// Fixups protect every 512 bytes of a record, whatever the sector size.
const FIXUP_STRIDE: usize = 512;
/// `$Boot` is the first 8 KiB of the volume.
const BOOT_FILE_BYTES: u64 = 8192;
const PIECE: u64 = 1 << 20;

pub(super) struct Volume {
    pub bps: u64,
    pub cluster: u64,
    pub clusters: u64,
    pub total_sectors: u64,
    pub mft_lcn: u64,
    pub mirr_lcn: u64,
    pub record: u64,
}

/// One run of an attribute's data: `len` clusters from virtual cluster `vcn`, at `lcn` (None:
/// sparse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub vcn: u64,
    pub lcn: Option<u64>,
    pub len: u64,
}

pub(super) fn used_map<R: Read + Seek>(disk: &mut Disk<'_, R>) -> Result<UsedMap, FsError> {
    let boot = disk.read(0, 512)?;
    let v = volume(disk, &boot)?;
    let mut used = RangeSet::new();
    let mut notes = Vec::new();
    used.push(0..BOOT_FILE_BYTES.max(v.bps));
    // The backup boot sector: at the end of the volume, and where Windows expects it, at the
    // partition's last sector (the same place unless the partition grew).
    let backup = v.total_sectors * v.bps;
    if backup + v.bps <= disk.size() {
        used.push(backup..backup + v.bps);
    } else {
        notes.push("the partition has no room for the backup boot sector".to_owned());
    }
    let last = disk.size() / v.bps * v.bps;
    used.push(last.saturating_sub(v.bps)..last);

    let rec0 = read_record(disk, &v, v.mft_lcn * v.cluster, 0)?;
    let (mft_runs, _) = nonresident(disk, &v, &rec0, v.mft_lcn * v.cluster, AT_DATA)?;
    push_runs(&mut used, &v, &mft_runs);
    let mirr_clusters = (4 * v.record).div_ceil(v.cluster);
    push_runs(
        &mut used,
        &v,
        &[Run {
            vcn: 0,
            lcn: Some(v.mirr_lcn),
            len: mirr_clusters,
        }],
    );

    check_clean(disk, &v, &mft_runs)?;

    let (rec6, at6) = mft_record(disk, &v, &mft_runs, 6)?;
    if attributes(&rec6).any(|(t, _)| t == AT_ATTRIBUTE_LIST) {
        return Err(disk.unsupported(
            "$Bitmap is spread over several MFT records (an attribute list); no map for that yet",
        ));
    }
    let need = v.clusters.div_ceil(8);
    let data = find_attr(&rec6, AT_DATA)
        .ok_or_else(|| disk.inconsistent(at6, "$Bitmap has no $DATA attribute"))?;
    if byte(data, 8) == 0 {
        let value = resident_value(data)
            .ok_or_else(|| disk.inconsistent(at6, "$Bitmap's resident $DATA is malformed"))?;
        if (value.len() as u64) < need {
            return Err(
                disk.inconsistent(at6, "$Bitmap is shorter than the volume's cluster count")
            );
        }
        used.push_bits(value, v.clusters, 0, v.cluster);
    } else {
        let (runs, sizes) = nonresident(disk, &v, &rec6, at6, AT_DATA)?;
        if sizes.data < need || sizes.initialized < need {
            return Err(disk.inconsistent(
                at6,
                format!(
                    "$Bitmap holds {} bytes, too few for {} clusters",
                    sizes.initialized.min(sizes.data),
                    v.clusters
                ),
            ));
        }
        let mut off = 0;
        while off < need {
            let len = PIECE.min(need - off);
            let bytes = read_runs(disk, &v, &runs, off, len)?;
            if off == 0 && byte(&bytes, 0) & 1 == 0 {
                return Err(
                    disk.inconsistent(at6, "$Bitmap does not mark the boot sector's cluster used")
                );
            }
            let nbits = (len * 8).min(v.clusters - off * 8);
            used.push_bits(&bytes, nbits, off * 8 * v.cluster, v.cluster);
            off += len;
        }
    }
    let mut map = UsedMap::from_set(used, disk.size(), v.cluster, disk.fs());
    map.notes.extend(notes);
    Ok(map)
}

pub(super) fn volume<R: Read + Seek>(disk: &Disk<'_, R>, b: &[u8]) -> Result<Volume, FsError> {
    let bad = |off: u64, reason: String| disk.inconsistent(off, reason);
    if b.get(3..11) != Some(b"NTFS    ".as_slice()) {
        return Err(bad(3, "not an NTFS boot sector".into()));
    }
    let bps = u64::from(le16(b, 11));
    if !matches!(bps, 256 | 512 | 1024 | 2048 | 4096) {
        return Err(bad(11, format!("{bps} bytes per sector is invalid")));
    }
    // Values above 0x80 encode 2^(256 - value) sectors (clusters of 64 KiB and more).
    let raw = byte(b, 13);
    let Some(spc) = sectors_per_cluster(raw) else {
        return Err(bad(
            13,
            format!("sectors per cluster byte {raw:#x} is invalid"),
        ));
    };
    let cluster = bps * spc;
    if cluster > 2 << 20 {
        return Err(bad(
            13,
            format!("cluster size {cluster} is beyond NTFS's 2 MiB"),
        ));
    }
    let total_sectors = le64(b, 0x28);
    if total_sectors
        .checked_mul(bps)
        .is_none_or(|t| t > disk.size())
        || total_sectors < spc
    {
        return Err(bad(
            0x28,
            format!(
                "{total_sectors} sectors do not fit the partition's {} bytes (shrunk partition or \
                 damaged boot sector)",
                disk.size()
            ),
        ));
    }
    let clusters = total_sectors / spc;
    let mft_lcn = le64(b, 0x30);
    let mirr_lcn = le64(b, 0x38);
    if mft_lcn >= clusters || mirr_lcn >= clusters {
        return Err(bad(0x30, "$MFT or $MFTMirr lies outside the volume".into()));
    }
    let per = byte(b, 0x40) as i8;
    let record = if per > 0 {
        cluster * per as u64
    } else {
        1u64.checked_shl(u32::from(per.unsigned_abs())).unwrap_or(0)
    };
    if !(512..=65536).contains(&record) || !record.is_power_of_two() {
        return Err(bad(0x40, format!("MFT record size {record} is invalid")));
    }
    Ok(Volume {
        bps,
        cluster,
        clusters,
        total_sectors,
        mft_lcn,
        mirr_lcn,
        record,
    })
}

/// The sectors per cluster that the boot sector's byte 13 encodes: a power of two up to 0x80, or
/// 2^(256 − value) above 0xF3 (clusters of 64 KiB and more).
pub(crate) fn sectors_per_cluster(raw: u8) -> Option<u64> {
    match raw {
        1..=0x80 if raw.is_power_of_two() => Some(u64::from(raw)),
        0xF4..=0xFF => Some(1u64 << (256 - u32::from(raw))),
        _ => None,
    }
}

/// The volume must be cleanly unmounted: `$Volume` not dirty and `$LogFile` with nothing to replay.
fn check_clean<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    v: &Volume,
    mft: &[Run],
) -> Result<(), FsError> {
    let (rec3, at3) = mft_record(disk, v, mft, 3)?;
    let info = find_attr(&rec3, AT_VOLUME_INFORMATION)
        .and_then(resident_value)
        .ok_or_else(|| disk.inconsistent(at3, "$Volume has no volume information"))?;
    if le16(info, 10) & VOLUME_IS_DIRTY != 0 {
        return Err(disk.unsupported(
            "the volume is marked dirty (Windows crashed, or a check is pending), so $Bitmap may \
             lag what is in use; run `chkdsk /f` in Windows for a compact capture",
        ));
    }
    let (rec2, at2) = mft_record(disk, v, mft, 2)?;
    let (runs, sizes) = nonresident(disk, v, &rec2, at2, AT_DATA)?;
    let mut page = read_runs(disk, v, &runs, 0, 4096.min(sizes.initialized))?;
    // Restart pages are the system page size, which may exceed the 4 KiB read so far.
    let system_page = u64::from(le32(&page, 0x10));
    if page.get(..4) == Some(b"RSTR") && system_page > 4096 && system_page <= 65536 {
        page = read_runs(disk, v, &runs, 0, system_page.min(sizes.initialized))?;
    }
    let unclean = || {
        disk.unsupported(
            "$LogFile has transactions to replay (Windows crashed, or hibernated with fast \
             startup), so $Bitmap may lag what is in use; boot Windows and shut it down fully \
             (or run `chkdsk /f`) for a compact capture",
        )
    };
    match page.get(..4) {
        Some(b"RSTR") => {}
        Some(b"CHKD") => return Err(unclean()),
        // An emptied log (mkntfs, ntfsfix) is all 0xFF: nothing to replay.
        Some(b"\xff\xff\xff\xff") => return Ok(()),
        _ => return Err(disk.inconsistent(at2, "$LogFile's restart page is unrecognised")),
    }
    let page_size = (le32(&page, 0x10) as usize).min(page.len());
    if page_size < FIXUP_STRIDE || !page_size.is_power_of_two() {
        return Err(disk.inconsistent(at2, "$LogFile's restart page size is invalid"));
    }
    page.truncate(page_size);
    fixup(&mut page).map_err(|e| disk.inconsistent(at2, format!("$LogFile restart page: {e}")))?;
    let ra = le16(&page, 0x18) as usize;
    if ra + 16 > page.len() {
        return Err(disk.inconsistent(at2, "$LogFile's restart area lies outside its page"));
    }
    const NO_CLIENT: u16 = 0xFFFF;
    const RESTART_VOLUME_IS_CLEAN: u16 = 0x2;
    if le16(&page, ra + 12) != NO_CLIENT && le16(&page, ra + 14) & RESTART_VOLUME_IS_CLEAN == 0 {
        return Err(unclean());
    }
    Ok(())
}

/// Reads MFT record `n` through the `$MFT` runlist; returns it (fixed up) and its byte offset.
fn mft_record<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    v: &Volume,
    mft: &[Run],
    n: u64,
) -> Result<(Vec<u8>, u64), FsError> {
    let off = n * v.record;
    let at = disk_offset(v, mft, off).ok_or_else(|| {
        disk.inconsistent(
            v.mft_lcn * v.cluster,
            format!("$MFT's runlist does not reach record {n}"),
        )
    })?;
    let mut rec = read_runs(disk, v, mft, off, v.record)?;
    check_record(&mut rec).map_err(|e| disk.inconsistent(at, format!("MFT record {n}: {e}")))?;
    Ok((rec, at))
}

fn read_record<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    v: &Volume,
    at: u64,
    n: u64,
) -> Result<Vec<u8>, FsError> {
    let mut rec = disk.read(at, v.record)?;
    check_record(&mut rec).map_err(|e| disk.inconsistent(at, format!("MFT record {n}: {e}")))?;
    Ok(rec)
}

/// Applies fixups and checks the header of an MFT record.
pub(super) fn check_record(rec: &mut [u8]) -> Result<(), String> {
    if rec.get(..4) != Some(b"FILE".as_slice()) {
        return Err("no FILE signature".into());
    }
    fixup(rec)?;
    let attrs = le16(rec, 0x14) as usize;
    let in_use = le32(rec, 0x18) as usize;
    if le16(rec, 0x16) & 1 == 0 {
        return Err("the record is not in use".into());
    }
    if attrs < 0x18 || attrs >= in_use || in_use > rec.len() || !attrs.is_multiple_of(8) {
        return Err("its header is malformed".into());
    }
    Ok(())
}

/// Undoes the update sequence array: the last two bytes of every 512-byte stride were replaced by
/// the sequence number when written; a stride that does not end with it was torn.
pub(crate) fn fixup(rec: &mut [u8]) -> Result<(), String> {
    let usa = le16(rec, 4) as usize;
    let count = le16(rec, 6) as usize;
    if count != rec.len() / FIXUP_STRIDE + 1 || usa < 8 || usa + 2 * count > rec.len() {
        return Err("its update sequence array is malformed".into());
    }
    let usn = [rec[usa], rec[usa + 1]];
    for i in 1..count {
        let end = i * FIXUP_STRIDE - 2;
        if rec[end..end + 2] != usn {
            return Err(format!(
                "sector {} was torn (update sequence mismatch)",
                i - 1
            ));
        }
        let saved = [rec[usa + 2 * i], rec[usa + 2 * i + 1]];
        rec[end..end + 2].copy_from_slice(&saved);
    }
    Ok(())
}

/// `(type, attribute bytes)` for each attribute of a checked record.
pub(super) fn attributes(rec: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let in_use = (le32(rec, 0x18) as usize).min(rec.len());
    let mut off = le16(rec, 0x14) as usize;
    std::iter::from_fn(move || {
        let t = le32(rec, off);
        let len = le32(rec, off + 4) as usize;
        if t == AT_END || len < 16 || !len.is_multiple_of(8) || off + len > in_use {
            return None;
        }
        let a = &rec[off..off + len];
        off += len;
        Some((t, a))
    })
}

/// The unnamed attribute of type `t`.
fn find_attr(rec: &[u8], t: u32) -> Option<&[u8]> {
    attributes(rec)
        .find(|&(ty, a)| ty == t && byte(a, 9) == 0)
        .map(|(_, a)| a)
}

fn resident_value(a: &[u8]) -> Option<&[u8]> {
    let len = le32(a, 0x10) as usize;
    let off = le16(a, 0x14) as usize;
    (byte(a, 8) == 0).then_some(())?;
    a.get(off..off.checked_add(len)?)
}

pub(super) struct Sizes {
    pub data: u64,
    pub initialized: u64,
}

/// The runlist and sizes of the unnamed non-resident attribute `t` of `rec` (at byte `at`).
fn nonresident<R: Read + Seek>(
    disk: &Disk<'_, R>,
    v: &Volume,
    rec: &[u8],
    at: u64,
    t: u32,
) -> Result<(Vec<Run>, Sizes), FsError> {
    let a = find_attr(rec, t)
        .filter(|a| byte(a, 8) == 1 && a.len() >= 0x40)
        .ok_or_else(|| {
            disk.inconsistent(
                at,
                format!("the record lacks a non-resident attribute {t:#x}"),
            )
        })?;
    let runs = decode_runs(a, v.clusters)
        .map_err(|e| disk.inconsistent(at, format!("attribute {t:#x}: {e}")))?;
    Ok((
        runs,
        Sizes {
            data: le64(a, 0x30),
            initialized: le64(a, 0x38),
        },
    ))
}

/// Decodes the mapping pairs of non-resident attribute `a`; every run must lie inside the volume.
pub(crate) fn decode_runs(a: &[u8], clusters: u64) -> Result<Vec<Run>, String> {
    let lowest = le64(a, 0x10);
    let highest = le64(a, 0x18);
    let mut p = le16(a, 0x20) as usize;
    let mut vcn = lowest;
    let mut lcn: i64 = 0;
    let mut runs = Vec::new();
    loop {
        let h = *a.get(p).ok_or("the runlist is not terminated")?;
        if h == 0 {
            break;
        }
        let (ls, os) = (usize::from(h & 0xF), usize::from(h >> 4));
        if !(1..=8).contains(&ls) || os > 8 {
            return Err("the runlist is malformed".into());
        }
        let field = |at: usize, n: usize| -> Result<i64, String> {
            let bytes = a.get(at..at + n).ok_or("the runlist is truncated")?;
            let mut v: i64 = if bytes[n - 1] & 0x80 != 0 { -1 } else { 0 };
            for &b in bytes.iter().rev() {
                v = (v << 8) | i64::from(b);
            }
            Ok(v)
        };
        let len = field(p + 1, ls)?;
        if len <= 0 {
            return Err("a run has no length".into());
        }
        let len = len as u64;
        let run_lcn = if os == 0 {
            None
        } else {
            lcn = lcn
                .checked_add(field(p + 1 + ls, os)?)
                .ok_or("a run's cluster overflows")?;
            let l = u64::try_from(lcn).map_err(|_| "a run starts before the volume")?;
            if l.checked_add(len).is_none_or(|e| e > clusters) {
                return Err(format!(
                    "a run ({len} clusters at {l}) ends past the volume"
                ));
            }
            Some(l)
        };
        runs.push(Run {
            vcn,
            lcn: run_lcn,
            len,
        });
        vcn = vcn.checked_add(len).ok_or("the runlist overflows")?;
        p += 1 + ls + os;
    }
    if vcn != highest.wrapping_add(1) {
        return Err("the runlist does not cover the attribute's clusters".into());
    }
    Ok(runs)
}

fn disk_offset(v: &Volume, runs: &[Run], off: u64) -> Option<u64> {
    let vcn = off / v.cluster;
    let r = runs.iter().find(|r| r.vcn <= vcn && vcn < r.vcn + r.len)?;
    Some((r.lcn? + vcn - r.vcn) * v.cluster + off % v.cluster)
}

/// `len` bytes from byte `off` of the data that `runs` describe.
fn read_runs<R: Read + Seek>(
    disk: &mut Disk<'_, R>,
    v: &Volume,
    runs: &[Run],
    off: u64,
    len: u64,
) -> Result<Vec<u8>, FsError> {
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let pos = off + out.len() as u64;
        let at = disk_offset(v, runs, pos).ok_or_else(|| {
            disk.inconsistent(
                runs.first().and_then(|r| r.lcn).unwrap_or(0) * v.cluster,
                format!("byte {pos} of a metadata file is sparse or beyond its runlist"),
            )
        })?;
        let run_end = runs
            .iter()
            .find(|r| r.vcn <= pos / v.cluster && pos / v.cluster < r.vcn + r.len)
            .map_or(0, |r| (r.vcn + r.len) * v.cluster);
        let take = (len - out.len() as u64).min(run_end - pos);
        out.extend(disk.read(at, take)?);
    }
    Ok(out)
}

fn push_runs(used: &mut RangeSet, v: &Volume, runs: &[Run]) {
    for r in runs {
        if let Some(l) = r.lcn {
            used.push(l * v.cluster..(l + r.len) * v.cluster);
        }
    }
}
