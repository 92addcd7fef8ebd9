//! The bootable stick image, written without root, loop devices or mounts, and byte-for-byte reproducible.
//!
//! Layout (512-byte sectors, partitions aligned to 1 MiB):
//! - a GPT (written by [`gpt`]) whose disk GUID and partition GUIDs are hashes of the inputs, so two builds
//!   with the same inputs are identical and PID 1 can recognise the stick by `rescue.stick=<disk GUID>`;
//!   its protective MBR carries GRUB's BIOS boot code (see [`bios`]);
//! - partition 1, the EFI System Partition: FAT32 written by [`fat`] with Debian's Secure Boot chain —
//!   `EFI/BOOT/BOOTX64.EFI` (shim), `EFI/BOOT/grubx64.efi` (signed grub, which shim loads from its own
//!   directory), `EFI/debian/grub.cfg` (the signed grub's built-in prefix, and the BIOS grub's too) — and
//!   `rescue/vmlinuz`, `rescue/initrd.img`;
//! - partition 2, `RESCUE-DATA`: an empty exFAT (default), ext4 or FAT volume for images and logs
//!   (see [`data`]);
//! - partition 3, the BIOS boot partition, in the first MiB before the ESP (LBA 40..2047): GRUB's i386-pc
//!   core image. It is numbered last so that the ESP and the data partition keep numbers 1 and 2.
//!
//! [`deb`] reads the bootloaders out of their Debian packages; [`grub`] writes the menu that both GRUBs
//! read, [`ipxe`] the same menu for network boot ([`menu`] holds the entries).

pub mod bios;
pub mod data;
pub mod deb;
pub mod fat;
pub mod gpt;
pub mod grub;
pub mod ipxe;
pub mod menu;

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use data::DataFs;
use gpt::{Guid, Partition, SECTOR};

const MIB: u64 = 1 << 20;
/// The smallest ESP that can be FAT32 with 512-byte clusters (65525 clusters) plus room for the FATs.
const MIN_ESP: u64 = 36 * MIB;
/// 45 MiB = 47.2 MB: under the 48 MB budget, with a few MiB of data partition.
pub const DEFAULT_SIZE: u64 = 45 * MIB;
pub const DATA_LABEL: &str = "RESCUE-DATA";
pub const ESP_LABEL: &str = "RESCUE-EFI";
/// The ESP's GPT entry number (GRUB's `gpt1`), built into the BIOS core image's prefix.
pub const ESP_NUMBER: u32 = 1;
/// The BIOS boot partition: from the first 4 KiB boundary after the GPT entry array to the ESP at 1 MiB.
const BIOS_FIRST: u64 = 40;

#[derive(Debug, thiserror::Error)]
pub enum StickError {
    #[error("cannot write the stick image {path}: {source}. Check free space and permissions")]
    Write { path: PathBuf, source: io::Error },
    #[error("a {size} byte image is too small: the ESP needs {esp} bytes and the data partition at least 1 MiB; use a size of at least {need} MiB")]
    TooSmall { size: u64, esp: u64, need: u64 },
    #[error("writing the {what} filesystem into {path} failed: {source}")]
    Fat {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the extra kernel command line cannot go into the stick's menu: {reason}")]
    ExtraArgs { reason: String },
    #[error("the BIOS boot code for {path}: {source}")]
    Bios {
        path: PathBuf,
        source: bios::BiosError,
    },
    #[error("the data partition of {path}: {source}")]
    Data {
        path: PathBuf,
        source: Box<data::DataError>,
    },
}

/// Everything the image is made of.
#[derive(Debug, Clone)]
pub struct StickSpec {
    /// `shimx64.efi.signed`.
    pub shim: Vec<u8>,
    /// `grubx64.efi.signed`.
    pub grub: Vec<u8>,
    pub vmlinuz: Vec<u8>,
    pub initrd: Vec<u8>,
    /// GRUB's i386-pc images for legacy BIOS boot; None makes a UEFI-only stick.
    pub bios: Option<bios::BiosBoot>,
    /// The filesystem of `RESCUE-DATA`.
    pub data_fs: DataFs,
    /// Appended to every menu entry's kernel command line (e.g. `rescue.cmd="disks"`); usually empty.
    /// What GRUB cannot pass unchanged is refused (see [`grub::kernel_params`]).
    pub extra_args: String,
    /// Total image size in bytes (rounded down to a sector).
    pub size: u64,
    /// Make the serial-console entry the default.
    pub serial_default: bool,
    /// SOURCE_DATE_EPOCH: every timestamp (FAT directory entries, ext4).
    pub epoch: u64,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct StickInfo {
    pub disk_guid: Guid,
    pub esp: Partition,
    pub data: Partition,
    pub bios_boot: Option<Partition>,
    pub data_fs: DataFs,
    /// The data filesystem's identifier as `blkid` shows it (`UUID=`).
    pub data_id: String,
    pub size: u64,
}

/// A stable hash of all inputs, from which every identifier in the image is derived.
fn input_hash(spec: &StickSpec) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"rescue stick v1\0");
    let (boot_img, core_img) = spec
        .bios
        .as_ref()
        .map(|b| (&b.boot_img[..], &b.core_img[..]))
        .unwrap_or_default();
    for part in [
        &spec.shim[..],
        &spec.grub,
        &spec.vmlinuz,
        &spec.initrd,
        boot_img,
        core_img,
        spec.data_fs.name().as_bytes(),
        spec.extra_args.as_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&[u8::from(spec.bios.is_some())]);
    h.update(&spec.size.to_le_bytes());
    h.update(&[u8::from(spec.serial_default)]);
    h.update(&spec.epoch.to_le_bytes());
    h.finalize()
}

fn derive(seed: &blake3::Hash, what: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(seed.as_bytes());
    h.update(what.as_bytes());
    *h.finalize().as_bytes()
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// The ESP size for these files: at least [`MIN_ESP`], with 10% + 2 MiB of room for FAT overhead.
fn esp_size(spec: &StickSpec) -> u64 {
    let files = [&spec.shim, &spec.grub, &spec.vmlinuz, &spec.initrd]
        .iter()
        .map(|f| align_up(f.len() as u64, 4096))
        .sum::<u64>();
    align_up(files + files / 10 + 2 * MIB, MIB).max(MIN_ESP)
}

/// Writes the image to `path` (replacing it) and returns its identifiers. Temporary files (the data
/// filesystem before it is copied in) go to the directory of `path`.
pub fn write_stick(path: &Path, spec: &StickSpec) -> Result<StickInfo, StickError> {
    let size = spec.size / SECTOR * SECTOR;
    let esp_len = esp_size(spec);
    let total = size / SECTOR;
    let esp_first = MIB / SECTOR;
    let data_first = esp_first + esp_len / SECTOR;
    // End the data partition on a MiB boundary before the backup GPT.
    let (_, last_usable) = gpt::usable(total.max(data_first + 64));
    let data_last = ((last_usable + 1) / (MIB / SECTOR)) * (MIB / SECTOR) - 1;
    if size < MIB + esp_len + 2 * MIB || data_last < data_first + MIB / SECTOR {
        return Err(StickError::TooSmall {
            size,
            esp: esp_len,
            need: (esp_len + 3 * MIB).div_ceil(MIB),
        });
    }
    let seed = input_hash(spec);
    let disk_guid = Guid::from_hash(&derive(&seed, "disk guid"));
    let esp = Partition {
        type_guid: Guid::ESP,
        guid: Guid::from_hash(&derive(&seed, "esp guid")),
        first_lba: esp_first,
        last_lba: data_first - 1,
        name: "EFI System".into(),
    };
    let data = Partition {
        type_guid: spec.data_fs.type_guid(),
        guid: Guid::from_hash(&derive(&seed, "data guid")),
        first_lba: data_first,
        last_lba: data_last,
        name: DATA_LABEL.into(),
    };
    let bios_boot = spec.bios.as_ref().map(|_| Partition {
        type_guid: Guid::BIOS_BOOT,
        guid: Guid::from_hash(&derive(&seed, "bios boot guid")),
        first_lba: BIOS_FIRST,
        last_lba: esp_first - 1,
        name: "BIOS boot partition".into(),
    });
    let volume_id = |what: &str| {
        let b = derive(&seed, what);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    let data_ids = data::DataIds {
        serial: volume_id("data volume id"),
        uuid: Guid::from_hash(&derive(&seed, "data fs uuid")),
        hash_seed: Guid::from_hash(&derive(&seed, "data fs hash seed")),
        epoch: spec.epoch,
    };
    let extra =
        grub::kernel_params(&spec.extra_args).map_err(|reason| StickError::ExtraArgs { reason })?;
    let cfg = grub::grub_cfg(&disk_guid, spec.serial_default, &extra);
    let esp_files = vec![
        ("EFI/BOOT/BOOTX64.EFI".to_string(), spec.shim.clone()),
        ("EFI/BOOT/grubx64.efi".to_string(), spec.grub.clone()),
        (grub::CFG_PATH[1..].to_string(), cfg.into_bytes()),
        (grub::KERNEL_PATH[1..].to_string(), spec.vmlinuz.clone()),
        (grub::INITRD_PATH[1..].to_string(), spec.initrd.clone()),
    ];

    let werr = |source| StickError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bios_err = |source| StickError::Bios {
        path: path.to_path_buf(),
        source,
    };
    // Check the BIOS images before anything is written.
    let bios_sectors = match (&spec.bios, &bios_boot) {
        (Some(b), Some(p)) => {
            let mbr = gpt::protective_mbr(total);
            let room = p.last_lba + 1 - p.first_lba;
            Some((
                bios::boot_sector(&b.boot_img, &mbr, p.first_lba).map_err(bios_err)?,
                bios::place_core(&b.core_img, p.first_lba, room).map_err(bios_err)?,
            ))
        }
        _ => None,
    };
    let mut f: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(werr)?;
    // A fresh sparse file: every byte we do not write is zero, which is what makes builds identical.
    f.set_len(size).map_err(werr)?;
    let mut parts = vec![esp.clone(), data.clone()];
    parts.extend(bios_boot.clone());
    gpt::write_gpt(&mut f, total, disk_guid, &parts).map_err(werr)?;
    if let (Some((mbr, core)), Some(p)) = (&bios_sectors, &bios_boot) {
        f.seek(SeekFrom::Start(0)).map_err(werr)?;
        f.write_all(mbr).map_err(werr)?;
        f.seek(SeekFrom::Start(p.first_lba * SECTOR))
            .map_err(werr)?;
        f.write_all(core).map_err(werr)?;
    }
    let (off, len) = esp.byte_range();
    fat::write_volume(
        &mut f,
        off,
        len,
        &fat::Volume {
            label: ESP_LABEL,
            volume_id: volume_id("esp volume id"),
            epoch: spec.epoch,
            fat32: true,
            files: &esp_files,
        },
    )
    .map_err(|source| StickError::Fat {
        what: "EFI system partition",
        path: path.to_path_buf(),
        source,
    })?;
    let (off, len) = data.byte_range();
    let scratch = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    data::write_data(
        &mut f,
        off,
        len,
        spec.data_fs,
        DATA_LABEL,
        &data_ids,
        scratch,
    )
    .map_err(|source| StickError::Data {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    f.sync_all().map_err(werr)?;
    Ok(StickInfo {
        disk_guid,
        esp,
        data,
        bios_boot,
        data_fs: spec.data_fs,
        data_id: data_ids.shown(spec.data_fs),
        size,
    })
}

#[cfg(test)]
mod tests;
