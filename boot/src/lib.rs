//! The bootable stick image, written without root, loop devices or mounts, and byte-for-byte reproducible.
//!
//! Layout (512-byte sectors, partitions aligned to 1 MiB):
//! - a GPT (written by [`gpt`]) whose disk GUID and partition GUIDs are hashes of the inputs, so two builds
//!   with the same inputs are identical and PID 1 can recognise the stick by `rescue.stick=<disk GUID>`;
//! - partition 1, the EFI System Partition: FAT32 written by [`fat`] with Debian's Secure Boot chain —
//!   `EFI/BOOT/BOOTX64.EFI` (shim), `EFI/BOOT/grubx64.efi` (signed grub, which shim loads from its own
//!   directory), `EFI/debian/grub.cfg` (the signed grub's built-in prefix) — and `rescue/vmlinuz`,
//!   `rescue/initrd.img`;
//! - partition 2, `RESCUE-DATA`: an empty FAT volume (FAT12/16/32 by size) for images and logs, readable on
//!   every OS. exFAT would suit large images better but needs a writer we do not have yet.
//!
//! [`deb`] reads the bootloaders out of their Debian packages; [`grub`] writes the menu.

pub mod deb;
pub mod fat;
pub mod gpt;
pub mod grub;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use gpt::{Guid, Partition, SECTOR};

const MIB: u64 = 1 << 20;
/// The smallest ESP that can be FAT32 with 512-byte clusters (65525 clusters) plus room for the FATs.
const MIN_ESP: u64 = 36 * MIB;
/// 45 MiB = 47.2 MB: under the 48 MB budget, with a few MiB of data partition.
pub const DEFAULT_SIZE: u64 = 45 * MIB;
pub const DATA_LABEL: &str = "RESCUE-DATA";
pub const ESP_LABEL: &str = "RESCUE-EFI";

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
    /// Total image size in bytes (rounded down to a sector).
    pub size: u64,
    /// Make the serial-console entry the default.
    pub serial_default: bool,
    /// SOURCE_DATE_EPOCH: every FAT timestamp.
    pub epoch: u64,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct StickInfo {
    pub disk_guid: Guid,
    pub esp: Partition,
    pub data: Partition,
    pub size: u64,
}

/// A stable hash of all inputs, from which every identifier in the image is derived.
fn input_hash(spec: &StickSpec) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"rescue stick v1\0");
    for part in [&spec.shim, &spec.grub, &spec.vmlinuz, &spec.initrd] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
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

/// Writes the image to `path` (replacing it) and returns its identifiers.
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
        type_guid: Guid::BASIC_DATA,
        guid: Guid::from_hash(&derive(&seed, "data guid")),
        first_lba: data_first,
        last_lba: data_last,
        name: DATA_LABEL.into(),
    };
    let volume_id = |what: &str| {
        let b = derive(&seed, what);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    let cfg = grub::grub_cfg(&disk_guid, spec.serial_default);
    let esp_files = vec![
        ("EFI/BOOT/BOOTX64.EFI".to_string(), spec.shim.clone()),
        ("EFI/BOOT/grubx64.efi".to_string(), spec.grub.clone()),
        ("EFI/debian/grub.cfg".to_string(), cfg.into_bytes()),
        (grub::KERNEL_PATH[1..].to_string(), spec.vmlinuz.clone()),
        (grub::INITRD_PATH[1..].to_string(), spec.initrd.clone()),
    ];

    let werr = |source| StickError::Write {
        path: path.to_path_buf(),
        source,
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
    gpt::write_gpt(&mut f, total, disk_guid, &[esp.clone(), data.clone()]).map_err(werr)?;
    let (off, len) = esp.byte_range();
    let fat_err = |what| {
        move |source| StickError::Fat {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
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
    .map_err(fat_err("EFI system partition"))?;
    let (off, len) = data.byte_range();
    fat::write_volume(
        &mut f,
        off,
        len,
        &fat::Volume {
            label: DATA_LABEL,
            volume_id: volume_id("data volume id"),
            epoch: spec.epoch,
            fat32: false,
            files: &[],
        },
    )
    .map_err(fat_err("data partition"))?;
    f.sync_all().map_err(werr)?;
    Ok(StickInfo {
        disk_guid,
        esp,
        data,
        size,
    })
}

#[cfg(test)]
mod tests;
