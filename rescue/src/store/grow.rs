//! Growing the rescue stick's data partition to the end of the stick, as `plan::grow` decided: the GPT's
//! backup moves to the stick's end, the data partition's entry reaches the new end, and the partition is
//! re-created as an empty exFAT filesystem ([`super::exfat`]). The ESP and the BIOS boot partition are
//! never written.
//!
//! The stick is opened exclusively and everything the plan relied on is checked again on the device
//! itself first (the table, the partition's place, that the data filesystem is still empty). Writes are
//! ordered so that an interruption at any point leaves a stick that boots:
//! 1. the new backup entries and header at the stick's end (unused space; the old tables still rule);
//! 2. LBA 0 to the end of the primary entry array in one write: the protective MBR's size, the primary
//!    header and the entry with the new end (the kernel and the firmware now read the new table);
//! 3. zeros over the old backup header and entries, now inside the data partition;
//! 4. the new exFAT (its boot sector last);
//!
//! each followed by a flush to the device. Then the kernel is asked to re-read the table.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::PathBuf;

use super::exfat::{self, ExfatError, ExfatSpec};
use super::region::Region;
use crate::detect::io::{crc32, le32, le64};
use crate::detect::{Disk, FsKind};
use crate::engine::device::{DeviceError, Target};
use crate::plan::grow::{data_partition, DataContents, GrowPlan, DATA_NAME};
use crate::plan::tables::{relocate_gpt, TableError};
use crate::plan::TableRole;

/// Names read from the data partition's root directory for messages.
const NAMES_LISTED: usize = 8;

const UNCHANGED: &str = "Nothing on the stick was changed.";
const OLD_TABLE: &str = "The stick keeps its old partition table and boots as before.";
const NEW_TABLE: &str = "The stick has its new partition table and boots as before; its data \
                         partition still holds the old, small filesystem.";
const UNFORMATTED: &str = "The stick boots as before, but its data partition has no filesystem now; \
                           format it as exFAT (label RESCUE-DATA) on another computer before storing \
                           images on it.";

#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("{0} ({UNCHANGED})")]
    Open(#[source] DeviceError),
    #[error("{disk} changed since it was examined ({why}). {UNCHANGED} Look at the disks again")]
    Changed { disk: PathBuf, why: String },
    #[error("the data partition of {disk} is not empty ({names}). {UNCHANGED}")]
    NotEmpty { disk: PathBuf, names: String },
    #[error("could not check that the data partition of {disk} is empty: {why}. {UNCHANGED}")]
    Unchecked { disk: PathBuf, why: String },
    #[error("the new partition table for {disk} cannot be made ({UNCHANGED})")]
    Table { disk: PathBuf, source: TableError },
    #[error("growing the data partition of {disk} failed ({state})")]
    Failed {
        disk: PathBuf,
        source: DeviceError,
        state: &'static str,
    },
    #[error("formatting the new data partition of {disk} failed ({UNFORMATTED})")]
    Format { disk: PathBuf, source: ExfatError },
}

/// What was done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrowReport {
    pub old_size: u64,
    pub new_size: u64,
    pub serial: u32,
    /// The backup GPT header's new place.
    pub backup_header_lba: u64,
    /// Why the kernel could not re-read the table, if it could not (it then uses the old sizes until
    /// the stick is re-plugged or the system restarts).
    pub reread_failed: Option<String>,
}

/// What the stick's data partition holds, read (read-only) from its filesystem.
pub fn data_contents(disk: &Disk) -> DataContents {
    let Some(p) = data_partition(disk) else {
        return DataContents::Unknown(format!("{} has no {DATA_NAME} partition", disk.path));
    };
    let Some(fs @ (FsKind::Exfat | FsKind::Vfat)) = p.fs else {
        return DataContents::Unknown("it holds no FAT or exFAT filesystem".into());
    };
    match File::open(&disk.path) {
        Ok(f) => contents_at(f, p.start_bytes, p.size_bytes, fs),
        Err(e) => DataContents::Unknown(format!("cannot open {} read-only: {e}", disk.path)),
    }
}

/// What the `fs` filesystem at `start..start + len` of `dev` holds.
pub fn contents_at<R: Read + Seek>(dev: R, start: u64, len: u64, fs: FsKind) -> DataContents {
    let mut region = Region::new(dev, start, len);
    match crate::fs::root_names(&mut region, len, fs, NAMES_LISTED) {
        Ok(names) if names.is_empty() => DataContents::Empty,
        Ok(names) => DataContents::Files(names),
        Err(e) => DataContents::Unknown(crate::units::chain(&e)),
    }
}

/// Carry out `plan` on its disk; `serial` becomes the new exFAT volume's serial number. `step` is told
/// what is being done, for progress displays.
pub fn grow(
    plan: &GrowPlan,
    serial: u32,
    step: &mut dyn FnMut(&'static str),
) -> Result<GrowReport, GrowError> {
    let disk = PathBuf::from(&plan.disk);
    let changed = |why: String| GrowError::Changed {
        disk: disk.clone(),
        why,
    };
    let failed = |state: &'static str| {
        let disk = disk.clone();
        move |source| GrowError::Failed {
            disk,
            source,
            state,
        }
    };
    step("checking the stick");
    let target = Target::open(&disk).map_err(GrowError::Open)?;
    if target.size() != plan.disk_size {
        return Err(changed(format!(
            "it has {} bytes now, {} before",
            target.size(),
            plan.disk_size
        )));
    }
    if target.is_block_device() && target.sector() != plan.sector {
        return Err(changed(format!(
            "its sectors are {} bytes, not {}",
            target.sector(),
            plan.sector
        )));
    }
    let ss = plan.sector as usize;
    let mut lba0 = vec![0u8; ss];
    let mut header = vec![0u8; ss];
    target
        .read_exact_at(&mut lba0, 0)
        .and_then(|()| target.read_exact_at(&mut header, ss as u64))
        .map_err(failed(UNCHANGED))?;
    let count = u64::from(le32(&header, 80));
    let entry_size = u64::from(le32(&header, 84));
    if count > 1024 || !(128..=1024).contains(&entry_size) {
        return Err(changed(format!(
            "its GPT header declares {count} entries of {entry_size} bytes"
        )));
    }
    let mut primary = header;
    primary.resize(ss + ((count * entry_size) as usize).div_ceil(ss) * ss, 0);
    target
        .read_exact_at(&mut primary[ss..], 2 * ss as u64)
        .map_err(failed(UNCHANGED))?;
    patch_primary(&mut primary, ss, plan).map_err(changed)?;
    match contents_at(
        target.file(),
        plan.start_bytes(),
        plan.old_size(),
        plan.old_fs,
    ) {
        DataContents::Empty => {}
        DataContents::Files(names) => {
            return Err(GrowError::NotEmpty {
                disk,
                names: names.join(", "),
            })
        }
        DataContents::Unknown(why) => return Err(GrowError::Unchecked { disk, why }),
    }
    let tables = relocate_gpt(&lba0, &primary, plan.sector, plan.disk_size).map_err(|source| {
        GrowError::Table {
            disk: disk.clone(),
            source,
        }
    })?;
    let part = |role| tables.get(role);
    let (
        Some((0, mbr)),
        Some((at, header)),
        Some((_, entries)),
        Some((backup_at, backup_entries)),
        Some((_, backup_header)),
    ) = (
        part(TableRole::Mbr),
        part(TableRole::GptPrimaryHeader),
        part(TableRole::GptPrimaryEntries),
        part(TableRole::GptBackupEntries),
        part(TableRole::GptBackupHeader),
    )
    else {
        return Err(changed(
            "the table writes are not in the expected places".into(),
        ));
    };
    // Each copy of the table in one write: the backup (entries, then its header), then LBA 0 to the end of
    // the primary entries.
    let backup = [backup_entries, backup_header].concat();
    let backup_header_lba = (backup_at + backup.len() as u64) / ss as u64 - 1;
    if at != ss as u64 || backup_at / (ss as u64) <= plan.new_last_lba {
        return Err(changed(format!(
            "the new backup GPT at LBA {} would overlap the grown partition",
            backup_at / ss as u64
        )));
    }

    step("writing the partition table");
    target
        .write_at(&backup, backup_at)
        .and_then(|()| target.sync())
        .map_err(failed(OLD_TABLE))?;
    let front = [mbr, header, entries].concat();
    target
        .write_at(&front, 0)
        .and_then(|()| target.sync())
        .map_err(failed(OLD_TABLE))?;
    let old_backup =
        plan.old_backup_entries_lba * ss as u64..(plan.old_backup_header_lba + 1) * ss as u64;
    let inside = plan.old_backup_entries_lba > plan.old_last_lba
        && plan.old_backup_header_lba <= plan.new_last_lba;
    if inside {
        target
            .zero(old_backup.start, old_backup.end - old_backup.start)
            .and_then(|()| target.sync())
            .map_err(failed(NEW_TABLE))?;
    }

    step("formatting the data partition (exFAT)");
    let spec = ExfatSpec {
        size: plan.new_size(),
        sector_size: plan.sector,
        label: DATA_NAME.into(),
        serial,
        partition_offset: plan.start_bytes(),
    };
    let mut region = Region::new(target.file(), plan.start_bytes(), plan.new_size());
    exfat::format(&mut region, &spec).map_err(|source| GrowError::Format {
        disk: disk.clone(),
        source,
    })?;
    target.sync().map_err(failed(UNFORMATTED))?;
    target.drop_cache();

    step("re-reading the partition table");
    let reread_failed = target.reread_partitions().err().map(|e| e.to_string());
    Ok(GrowReport {
        old_size: plan.old_size(),
        new_size: plan.new_size(),
        serial,
        backup_header_lba,
        reread_failed,
    })
}

/// Checks that the primary GPT (`primary`: header sector, then the entry array) is still what `plan`
/// saw, and moves the data partition's last LBA to the new end, re-sealing both checksums.
fn patch_primary(primary: &mut [u8], ss: usize, plan: &GrowPlan) -> Result<(), String> {
    let (header, entries) = primary.split_at_mut(ss);
    if &header[..8] != b"EFI PART" {
        return Err("its primary GPT header is gone".into());
    }
    let header_size = le32(header, 12) as usize;
    if !(92..=ss).contains(&header_size) {
        return Err(format!("its GPT header size is {header_size}"));
    }
    let mut copy = header[..header_size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != le32(header, 16) {
        return Err("its primary GPT header fails its checksum".into());
    }
    if le64(header, 32) != plan.old_backup_header_lba {
        return Err(format!(
            "its backup GPT is at LBA {} now, not {}",
            le64(header, 32),
            plan.old_backup_header_lba
        ));
    }
    if le64(header, 72) != 2 {
        return Err("its GPT entry array moved".into());
    }
    let count = le32(header, 80) as usize;
    let size = le32(header, 84) as usize;
    let Some(array) = entries.get_mut(..count * size) else {
        return Err("its GPT entry array is shorter than declared".into());
    };
    if crc32(array) != le32(header, 88) {
        return Err("its GPT entry array fails its checksum".into());
    }
    let index = plan.number.checked_sub(1).map(|n| n as usize * size);
    let Some(entry) = index.and_then(|i| array.get_mut(i..i + size)) else {
        return Err(format!("its GPT has no entry {}", plan.number));
    };
    if le64(entry, 32) != plan.first_lba || le64(entry, 40) != plan.old_last_lba {
        return Err(format!(
            "partition {} spans LBA {}..={} now, not {}..={}",
            plan.number,
            le64(entry, 32),
            le64(entry, 40),
            plan.first_lba,
            plan.old_last_lba
        ));
    }
    entry[40..48].copy_from_slice(&plan.new_last_lba.to_le_bytes());
    let array_crc = crc32(array);
    header[88..92].copy_from_slice(&array_crc.to_le_bytes());
    header[16..20].fill(0);
    let crc = crc32(&header[..header_size]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}
