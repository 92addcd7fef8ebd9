//! FAT filesystems written by `fatfs` straight into a partition's byte range of the image file: no loop
//! device, no mount, no root. Timestamps come from the caller (SOURCE_DATE_EPOCH) and the volume id is
//! fixed, so the bytes depend only on the inputs.

use std::io::{self, Read, Seek, SeekFrom, Write};

use fatfs::{Date, DateTime, FatType, FormatVolumeOptions, FsOptions, Time, TimeProvider};

/// A `Read + Write + Seek` view of `len` bytes at `offset` of `inner`, so fatfs cannot touch anything
/// outside its partition.
pub struct Window<'a, F> {
    inner: &'a mut F,
    offset: u64,
    len: u64,
    pos: u64,
}

impl<'a, F: Seek> Window<'a, F> {
    pub fn new(inner: &'a mut F, offset: u64, len: u64) -> Self {
        Window {
            inner,
            offset,
            len,
            pos: 0,
        }
    }

    fn room(&self, want: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        want.min(usize::try_from(left).unwrap_or(usize::MAX))
    }
}

impl<F: Read + Seek> Read for Window<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.offset + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<F: Write + Seek> Write for Window<'_, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.inner.seek(SeekFrom::Start(self.offset + self.pos))?;
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<F: Seek> Seek for Window<'_, F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before the partition")
        })?;
        Ok(self.pos)
    }
}

/// Every timestamp fatfs writes: the build's SOURCE_DATE_EPOCH (UTC), clamped to FAT's 1980..2107 range.
#[derive(Debug)]
struct FixedTime(DateTime);

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> DateTime {
        self.0
    }
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u16, u16) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u16;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u16;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

pub fn fat_time(epoch: u64) -> DateTime {
    // 1980-01-01 and 2107-12-31 23:59:58: the range a FAT timestamp can hold.
    let epoch = epoch.clamp(315_532_800, 4_354_819_198) as i64;
    let (year, month, day) = civil(epoch.div_euclid(86_400));
    let secs = epoch.rem_euclid(86_400);
    DateTime {
        date: Date {
            year: year as u16,
            month,
            day,
        },
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

/// What goes into one FAT volume.
pub struct Volume<'a> {
    pub label: &'a str,
    pub volume_id: u32,
    pub epoch: u64,
    /// Force FAT32 (the ESP); None lets fatfs choose by size.
    pub fat32: bool,
    /// Files by `/`-separated path; parent directories are created.
    pub files: &'a [(String, Vec<u8>)],
}

/// Formats `len` bytes at `offset` of `out` and writes the files.
pub fn write_volume<F: Read + Write + Seek>(
    out: &mut F,
    offset: u64,
    len: u64,
    vol: &Volume<'_>,
) -> io::Result<()> {
    let mut label = [b' '; 11];
    for (d, s) in label.iter_mut().zip(vol.label.bytes()) {
        *d = s.to_ascii_uppercase();
    }
    let mut opts = FormatVolumeOptions::new()
        .volume_id(vol.volume_id)
        .volume_label(label);
    if vol.fat32 {
        opts = opts.fat_type(FatType::Fat32);
    }
    fatfs::format_volume(Window::new(out, offset, len), opts)?;
    // fatfs keeps the provider as `&'static`; one small leak per volume written is the price of a time
    // that is chosen at run time (the builder writes two volumes per image).
    let time: &'static FixedTime = Box::leak(Box::new(FixedTime(fat_time(vol.epoch))));
    let fs = fatfs::FileSystem::new(
        Window::new(out, offset, len),
        FsOptions::new().time_provider(time),
    )?;
    {
        let root = fs.root_dir();
        for (path, data) in vol.files {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let Some((name, dirs)) = parts.split_last() else {
                continue;
            };
            let mut dir = root.clone();
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(existing) => existing,
                    Err(_) => dir.create_dir(d)?,
                };
            }
            let mut f = dir.create_file(name)?;
            f.truncate()?;
            f.write_all(data)?;
            f.flush()?;
        }
        // Counting the free clusters fills in the FSInfo sector's summary, which fsck.vfat wants set.
        fs.stats()?;
    }
    fs.unmount()?;
    if vol.fat32 {
        fix_dotdot(&mut Window::new(out, offset, len))?;
    }
    Ok(())
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// fatfs 0.3 points `..` of a directory in the root at the root's cluster; FAT32 (and fsck.vfat) want 0
/// there. The root holds only a few entries, so its first cluster is enough to find every directory.
fn fix_dotdot<F: Read + Write + Seek>(v: &mut F) -> io::Result<()> {
    let mut bpb = [0u8; 512];
    v.seek(SeekFrom::Start(0))?;
    v.read_exact(&mut bpb)?;
    let bps = le16(&bpb, 11);
    let spc = u64::from(bpb[13]);
    let data_start = (le16(&bpb, 14) + u64::from(bpb[16]) * le32(&bpb, 36)) * bps;
    let root = le32(&bpb, 44);
    let cluster_at = |c: u64| data_start + (c - 2) * spc * bps;
    let mut dir = vec![0u8; (spc * bps) as usize];
    v.seek(SeekFrom::Start(cluster_at(root)))?;
    v.read_exact(&mut dir)?;
    for e in dir.chunks(32) {
        if e[0] == 0 {
            break;
        }
        let is_dir = e[11] & 0x10 != 0 && e[11] != 0x0F;
        if e[0] == 0xE5 || !is_dir || e[0] == b'.' {
            continue;
        }
        let first = (le16(e, 20) << 16) | le16(e, 26);
        if first < 2 {
            continue;
        }
        let dotdot = cluster_at(first) + 32;
        let mut entry = [0u8; 32];
        v.seek(SeekFrom::Start(dotdot))?;
        v.read_exact(&mut entry)?;
        if &entry[..2] == b".." && (le16(&entry, 20) << 16 | le16(&entry, 26)) == root {
            entry[20..22].fill(0);
            entry[26..28].fill(0);
            v.seek(SeekFrom::Start(dotdot))?;
            v.write_all(&entry)?;
        }
    }
    v.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_to_fat_time() {
        let t = fat_time(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((t.date.year, t.date.month, t.date.day), (2023, 11, 14));
        assert_eq!((t.time.hour, t.time.min, t.time.sec), (22, 13, 20));
        let t = fat_time(0);
        assert_eq!((t.date.year, t.date.month, t.date.day), (1980, 1, 1));
    }
}
