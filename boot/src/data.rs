//! The `RESCUE-DATA` partition, where images and logs go. exFAT by default: FAT32 cannot hold a file of
//! 4 GiB or more, and exFAT is read and written by Windows, macOS and Linux (the rescue kernel has the
//! module). ext4 for Linux-only use; vfat (FAT12/16/32 by size) for the oldest readers.
//!
//! exFAT and ext4 are made by their own mkfs tools (`mkfs.exfat` from exfatprogs, `mke2fs` from
//! e2fsprogs) on a regular temporary file, then copied into the partition's byte range (no loop device, no
//! root); vfat is written by [`crate::fat`]. Every identifier comes from the caller (derived from the input
//! hash) and every timestamp from SOURCE_DATE_EPOCH, so the bytes depend only on the inputs and the tool
//! versions:
//! - exFAT: exfatprogs 1.2 has no option for the volume serial (it takes the clock), so the serial is
//!   written afterwards and the boot-region checksums of the main and backup boot regions recomputed
//!   (exFAT specification §3.4); nothing else in a fresh exFAT volume depends on the time.
//! - ext4: `-U` (filesystem UUID), `-E hash_seed=` (directory hashing), `E2FSPROGS_FAKE_TIME` (every
//!   timestamp), `root_owner=0:0` (not the builder's uid).

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use crate::fat;
use crate::gpt::Guid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum DataFs {
    #[default]
    Exfat,
    Ext4,
    Vfat,
}

impl DataFs {
    pub const ALL: [DataFs; 3] = [DataFs::Exfat, DataFs::Ext4, DataFs::Vfat];

    pub fn name(self) -> &'static str {
        match self {
            DataFs::Exfat => "exfat",
            DataFs::Ext4 => "ext4",
            DataFs::Vfat => "vfat",
        }
    }

    /// The GPT type: Microsoft basic data for the FAT family (what Windows and macOS mount), Linux
    /// filesystem data for ext4.
    pub fn type_guid(self) -> Guid {
        match self {
            DataFs::Exfat | DataFs::Vfat => Guid::BASIC_DATA,
            DataFs::Ext4 => Guid::LINUX_DATA,
        }
    }
}

impl fmt::Display for DataFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataFs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataFs::ALL
            .into_iter()
            .find(|fs| fs.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown data filesystem {s:?}: use exfat, ext4 or vfat"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot run {tool}: {source}. Install {package} (scripts/setup does)")]
    Run {
        tool: &'static str,
        package: &'static str,
        source: io::Error,
    },
    #[error("{tool} failed on {path} ({status}): {output}. Check the {package} installation (scripts/setup) and the free space in that directory")]
    Mkfs {
        tool: &'static str,
        package: &'static str,
        path: PathBuf,
        status: String,
        output: String,
    },
    #[error("{tool} wrote something that is not an exFAT volume into {path}: {reason}. Is mkfs.exfat the one from exfatprogs (scripts/setup)?")]
    NotExfat {
        tool: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "writing the {fs} data filesystem through {path} failed: {source}. Check free space there"
    )]
    Io {
        fs: DataFs,
        path: PathBuf,
        source: io::Error,
    },
}

/// The identity of the data filesystem.
#[derive(Debug, Clone)]
pub struct DataIds {
    /// exFAT and FAT volume serial.
    pub serial: u32,
    /// ext4 filesystem UUID.
    pub uuid: Guid,
    /// ext4 directory hash seed.
    pub hash_seed: Guid,
    pub epoch: u64,
}

impl DataIds {
    /// The identifier as `blkid` shows it (`UUID=`).
    pub fn shown(&self, fs: DataFs) -> String {
        match fs {
            DataFs::Exfat | DataFs::Vfat => {
                format!("{:04X}-{:04X}", self.serial >> 16, self.serial & 0xFFFF)
            }
            DataFs::Ext4 => self.uuid.to_string().to_lowercase(),
        }
    }
}

/// Formats `len` bytes at `offset` of `out` as `fs` labelled `label`. Temporary files go to `scratch`.
pub fn write_data<F: Read + Write + Seek>(
    out: &mut F,
    offset: u64,
    len: u64,
    fs: DataFs,
    label: &str,
    ids: &DataIds,
    scratch: &Path,
) -> Result<(), DataError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { fs, path, source }
    };
    if fs == DataFs::Vfat {
        return fat::write_volume(
            out,
            offset,
            len,
            &fat::Volume {
                label,
                volume_id: ids.serial,
                epoch: ids.epoch,
                fat32: false,
                files: &[],
            },
        )
        .map_err(io_err(scratch));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".rescue-data-")
        .suffix(".img")
        .tempfile_in(scratch)
        .map_err(io_err(scratch))?;
    let path = tmp.path().to_path_buf();
    tmp.as_file().set_len(len).map_err(io_err(&path))?;
    match fs {
        DataFs::Exfat => {
            mkfs(
                Command::new("mkfs.exfat").args(["-L", label]).arg(&path),
                "mkfs.exfat",
                "exfatprogs",
                &path,
            )?;
            let mut f = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            set_exfat_serial(&mut f, ids.serial).map_err(|e| match e {
                ExfatPatchError::Io(source) => DataError::Io {
                    fs,
                    path: path.clone(),
                    source,
                },
                ExfatPatchError::Format(reason) => DataError::NotExfat {
                    tool: "mkfs.exfat",
                    path: path.clone(),
                    reason,
                },
            })?;
        }
        DataFs::Ext4 => {
            let ext = format!(
                "hash_seed={},root_owner=0:0,nodiscard,lazy_itable_init=0",
                ids.hash_seed
            );
            // mke2fs takes the clock when the fake time is 0.
            let time = ids.epoch.max(1).to_string();
            mkfs(
                Command::new("mke2fs")
                    .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", label, "-U"])
                    .arg(ids.uuid.to_string())
                    .args(["-E", &ext])
                    .arg(&path)
                    .env("E2FSPROGS_FAKE_TIME", time),
                "mke2fs",
                "e2fsprogs",
                &path,
            )?;
        }
        DataFs::Vfat => {}
    }
    let mut src = File::open(&path).map_err(io_err(&path))?;
    copy_nonzero(&mut src, out, offset, len).map_err(io_err(&path))
}

fn mkfs(
    cmd: &mut Command,
    tool: &'static str,
    package: &'static str,
    path: &Path,
) -> Result<(), DataError> {
    let out = cmd.output().map_err(|source| DataError::Run {
        tool,
        package,
        source,
    })?;
    if !out.status.success() {
        return Err(DataError::Mkfs {
            tool,
            package,
            path: path.to_path_buf(),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_string(),
        });
    }
    Ok(())
}

/// Copies `len` bytes of `src` to `offset` of `out`, skipping all-zero blocks: `out` is a fresh sparse
/// file, so they are zero already and stay holes.
fn copy_nonzero<R: Read, W: Write + Seek>(
    src: &mut R,
    out: &mut W,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    const BLOCK: usize = 64 << 10;
    let mut buf = vec![0u8; BLOCK];
    // Compared as slices (memcmp), which stays fast in debug builds of the builder.
    let zeros = vec![0u8; BLOCK];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).map_or(BLOCK, |l| l.min(BLOCK));
        src.read_exact(&mut buf[..want])?;
        if buf[..want] != zeros[..want] {
            out.seek(SeekFrom::Start(offset + done))?;
            out.write_all(&buf[..want])?;
        }
        done += want as u64;
    }
    Ok(())
}

#[derive(Debug)]
enum ExfatPatchError {
    Io(io::Error),
    Format(String),
}

impl From<io::Error> for ExfatPatchError {
    fn from(e: io::Error) -> Self {
        ExfatPatchError::Io(e)
    }
}

/// Byte offsets in the exFAT boot sector.
const EXFAT_NAME: usize = 3;
const EXFAT_SERIAL: usize = 100;
const EXFAT_SECTOR_SHIFT: usize = 108;
/// Sectors 0..=10 of a boot region are checksummed into sector 11; the backup region follows at 12.
const EXFAT_CHECKSUMMED: u64 = 11;
const EXFAT_BACKUP: u64 = 12;

/// The boot-region checksum: over sectors 0..=10 except VolumeFlags (106, 107) and PercentInUse (112),
/// which change while the volume is in use.
fn exfat_checksum(region: &[u8]) -> u32 {
    region.iter().enumerate().fold(0u32, |sum, (i, &b)| {
        if matches!(i, 106 | 107 | 112) {
            sum
        } else {
            sum.rotate_right(1).wrapping_add(u32::from(b))
        }
    })
}

/// Writes `serial` into both boot regions of the exFAT volume in `f` and recomputes their checksums.
fn set_exfat_serial<F: Read + Write + Seek>(f: &mut F, serial: u32) -> Result<(), ExfatPatchError> {
    let mut head = [0u8; 512];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut head)?;
    if &head[EXFAT_NAME..EXFAT_NAME + 8] != b"EXFAT   " {
        return Err(ExfatPatchError::Format(
            "no \"EXFAT\" name in its boot sector".into(),
        ));
    }
    let shift = head[EXFAT_SECTOR_SHIFT];
    if !(9..=12).contains(&shift) {
        return Err(ExfatPatchError::Format(format!(
            "bytes per sector shift {shift} is outside 9..=12"
        )));
    }
    let sector = 1u64 << shift;
    for region in [0, EXFAT_BACKUP] {
        let start = region * sector;
        let mut bytes = vec![0u8; (EXFAT_CHECKSUMMED * sector) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut bytes)?;
        bytes[EXFAT_SERIAL..EXFAT_SERIAL + 4].copy_from_slice(&serial.to_le_bytes());
        let sum = exfat_checksum(&bytes).to_le_bytes();
        let checksums: Vec<u8> = sum.iter().copied().cycle().take(sector as usize).collect();
        f.seek(SeekFrom::Start(start))?;
        f.write_all(&bytes)?;
        f.write_all(&checksums)?;
    }
    f.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn names_parse_and_print() {
        for fs in DataFs::ALL {
            assert_eq!(fs.name().parse::<DataFs>().unwrap(), fs);
            assert_eq!(fs.to_string(), fs.name());
        }
        assert_eq!("EXFAT".parse::<DataFs>().unwrap(), DataFs::Exfat);
        let e = "ntfs".parse::<DataFs>().unwrap_err();
        assert!(e.contains("exfat, ext4 or vfat"), "{e}");
        assert_eq!(DataFs::default(), DataFs::Exfat);
    }

    #[test]
    fn zero_blocks_are_skipped_and_data_lands_at_the_offset() {
        let mut src = vec![0u8; 300_000];
        src[70_000] = 7;
        src[299_999] = 9;
        let mut out = Cursor::new(vec![0xEEu8; 400_000]);
        copy_nonzero(&mut &src[..], &mut out, 1000, 300_000).unwrap();
        let out = out.into_inner();
        assert_eq!(out[1000 + 70_000], 7);
        assert_eq!(out[1000 + 299_999], 9);
        // The first 64 KiB block was all zeros: not written, so the old bytes are still there.
        assert_eq!(out[1000], 0xEE);
        // A block with data is written whole, zeros included.
        assert_eq!(out[1000 + 65_536], 0);
    }

    #[test]
    fn serial_patch_keeps_the_checksum_valid() {
        let mut v = vec![0u8; 24 * 512];
        for region in [0, 12 * 512] {
            v[region + 3..region + 11].copy_from_slice(b"EXFAT   ");
            v[region + 108] = 9;
            v[region + 200] = 0x42;
        }
        let mut c = Cursor::new(v);
        set_exfat_serial(&mut c, 0xDEAD_BEEF).unwrap();
        let v = c.into_inner();
        for region in [0, 12 * 512] {
            let r = &v[region..region + 12 * 512];
            assert_eq!(&r[100..104], &0xDEAD_BEEFu32.to_le_bytes());
            let sum = exfat_checksum(&r[..11 * 512]).to_le_bytes();
            assert!(r[11 * 512..].chunks(4).all(|c| c == sum));
        }
        let mut not = Cursor::new(vec![0u8; 24 * 512]);
        assert!(matches!(
            set_exfat_serial(&mut not, 1),
            Err(ExfatPatchError::Format(_))
        ));
    }

    #[test]
    fn ids_shown_like_blkid() {
        let ids = DataIds {
            serial: 0xFF0B_EF8A,
            uuid: Guid::from_hash(&[0xAB; 32]),
            hash_seed: Guid::from_hash(&[0xCD; 32]),
            epoch: 0,
        };
        assert_eq!(ids.shown(DataFs::Exfat), "FF0B-EF8A");
        assert_eq!(ids.shown(DataFs::Ext4), ids.uuid.to_string().to_lowercase());
    }
}
