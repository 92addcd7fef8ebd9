//! Legacy BIOS boot with GRUB's i386-pc images, installed the way `grub-bios-setup` installs them on a GPT
//! disk, but into the image file by us (no device, no root):
//!
//! - LBA 0: `boot.img` (GRUB's 440-byte MBR code) merged with the protective MBR's partition table. It
//!   loads the first sector of `core.img` from the LBA written at [`KERNEL_SECTOR`].
//! - a BIOS boot partition (GPT type `21686148-6449-6E6F-744E-656564454649`) in the first MiB, before the
//!   ESP, holding `core.img`: `diskboot.img` (one sector whose last 12 bytes are a block list naming the
//!   rest), then the LZMA-compressed GRUB kernel with the modules in [`CORE_MODULES`] built in.
//!
//! `core.img` is made by Debian's own `grub-mkimage` (from the `grub-common` package of the same version as
//! `grub-pc-bin`, which supplies the modules); its output depends only on its inputs. Its prefix is
//! `(,gptN)/EFI/debian`: GRUB fills in the disk it was booted from (the BIOS drive in DL), so it reads the
//! very `grub.cfg` the UEFI grub reads, on the ESP of this stick and no other disk, without a UUID search.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::gpt::SECTOR;

/// The modules built into `core.img`: disk access (BIOS INT 13h), the GPT and the ESP's FAT, the menu
/// (`normal`), the serial console the menu switches to, and `linux`/`initrd`. Everything the shared
/// `grub.cfg` uses must be here: the stick carries no i386-pc module directory.
pub const CORE_MODULES: &[&str] = &[
    "biosdisk", "part_gpt", "fat", "normal", "linux", "serial", "terminal", "echo", "test",
    "reboot", "halt",
];

/// `boot.img` offsets (GRUB's `include/grub/i386/pc/boot.h`).
const BPB_START: usize = 0x03;
const BPB_END: usize = 0x5a;
/// The 64-bit LBA of `core.img`'s first sector.
pub const KERNEL_SECTOR: usize = 0x5c;
/// The boot drive; 0xFF means "the drive the BIOS passed in DL".
const BOOT_DRIVE: usize = 0x64;
/// A two-byte `jmp` that `grub-bios-setup` replaces by two NOPs on hard disks, so that a BIOS passing a
/// bogus drive number (not 0x80..0x8F) is corrected to 0x80.
const DRIVE_CHECK: usize = 0x66;
/// Disk signature, then the partition table up to the 0x55AA signature: kept from our protective MBR.
const TABLE_START: usize = 0x1b8;
const TABLE_END: usize = 0x1fe;
/// The block list entry at the end of `diskboot.img`: start LBA (u64), sector count (u16), load segment
/// (u16). The entry before it stays zero (the terminator).
const BLOCKLIST: usize = SECTOR as usize - 12;
/// Where diskboot loads the rest of core.img: just after itself at 0x8000 (segment 0x800 + 512 bytes).
const CORE_SEGMENT: u16 = 0x820;

#[derive(Debug, thiserror::Error)]
pub enum BiosError {
    #[error("{what} is not GRUB's i386-pc boot.img: {reason}. Delete the grub-pc-bin package from the builder cache and run again")]
    BootImg { what: String, reason: String },
    #[error("{what} is not a GRUB i386-pc core image: {reason}. Delete the grub packages from the builder cache and run again")]
    CoreImg { what: String, reason: String },
    #[error("the GRUB core image needs {need} sectors but the BIOS boot partition has {room}; fewer modules in boot::bios::CORE_MODULES would make it smaller")]
    TooBig { need: u64, room: u64 },
    #[error("cannot run {tool}: {source}. If the error names a missing library, run scripts/setup (it installs libdevmapper1.02.1, which grub-mkimage links)")]
    Run { tool: PathBuf, source: io::Error },
    #[error("{tool} failed ({status}): {stderr}. Delete the grub packages from the builder cache and run again")]
    Mkimage {
        tool: PathBuf,
        status: String,
        stderr: String,
    },
}

/// The two GRUB images, as `grub-mkimage` and `grub-pc-bin` ship them (not yet patched).
#[derive(Debug, Clone)]
pub struct BiosBoot {
    pub boot_img: Vec<u8>,
    pub core_img: Vec<u8>,
}

/// The prefix built into core.img: the ESP's `EFI/debian` on the disk GRUB was booted from.
pub fn core_prefix(esp_partition_number: u32) -> String {
    format!("(,gpt{esp_partition_number})/EFI/debian")
}

/// Runs `grub-mkimage` (`tool`) on the i386-pc module directory `modules_dir` and returns core.img
/// (made in a temporary directory under `scratch`).
pub fn make_core_image(
    tool: &Path,
    modules_dir: &Path,
    esp_partition_number: u32,
    scratch: &Path,
) -> Result<Vec<u8>, BiosError> {
    let run_err = |source| BiosError::Run {
        tool: tool.to_path_buf(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".rescue-grub-")
        .tempdir_in(scratch)
        .map_err(run_err)?;
    let out = tmp.path().join("core.img");
    let result = Command::new(tool)
        .args(["-O", "i386-pc", "-d"])
        .arg(modules_dir)
        .arg("-o")
        .arg(&out)
        .arg("-p")
        .arg(core_prefix(esp_partition_number))
        .args(CORE_MODULES)
        .output()
        .map_err(run_err)?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr).trim().to_string();
        if stderr.contains("error while loading shared libraries") {
            return Err(run_err(io::Error::other(stderr)));
        }
        return Err(BiosError::Mkimage {
            tool: tool.to_path_buf(),
            status: result.status.to_string(),
            stderr,
        });
    }
    std::fs::read(&out).map_err(run_err)
}

/// Checks `boot_img` is GRUB's i386-pc MBR code.
pub fn check_boot_img(boot_img: &[u8]) -> Result<(), BiosError> {
    let bad = |reason: &str| BiosError::BootImg {
        what: "boot.img".into(),
        reason: reason.into(),
    };
    if boot_img.len() != SECTOR as usize {
        return Err(bad(&format!(
            "it is {} bytes, not one 512-byte sector",
            boot_img.len()
        )));
    }
    if boot_img[510..] != [0x55, 0xAA] {
        return Err(bad("it does not end with the 0x55AA boot signature"));
    }
    // A short jump over the BPB at 0 and the drive-check jump that setup patches.
    if boot_img[0] != 0xEB || boot_img[DRIVE_CHECK] != 0xEB {
        return Err(bad("the jumps at 0x00 and 0x66 are missing"));
    }
    Ok(())
}

/// The MBR sector: `boot_img`'s code around `mbr`'s (zero) BPB area, disk signature and partition table,
/// pointing at core.img's first sector `core_lba`.
pub fn boot_sector(
    boot_img: &[u8],
    mbr: &[u8; SECTOR as usize],
    core_lba: u64,
) -> Result<[u8; SECTOR as usize], BiosError> {
    check_boot_img(boot_img)?;
    let mut s = [0u8; SECTOR as usize];
    s.copy_from_slice(boot_img);
    s[BPB_START..BPB_END].copy_from_slice(&mbr[BPB_START..BPB_END]);
    s[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    s[BOOT_DRIVE] = 0xFF;
    s[DRIVE_CHECK] = 0x90;
    s[DRIVE_CHECK + 1] = 0x90;
    s[TABLE_START..TABLE_END].copy_from_slice(&mbr[TABLE_START..TABLE_END]);
    Ok(s)
}

/// core.img padded to whole sectors, with its block list pointing at the sectors after `core_lba`: where
/// it is written, contiguously, in a partition of `room` sectors.
pub fn place_core(core_img: &[u8], core_lba: u64, room: u64) -> Result<Vec<u8>, BiosError> {
    let bad = |reason: String| BiosError::CoreImg {
        what: "core.img".into(),
        reason,
    };
    let sectors = (core_img.len() as u64).div_ceil(SECTOR);
    if sectors < 2 {
        return Err(bad(format!("it is only {} bytes", core_img.len())));
    }
    if sectors > room {
        return Err(BiosError::TooBig {
            need: sectors,
            room,
        });
    }
    let rest = u16::try_from(sectors - 1)
        .map_err(|_| bad(format!("{sectors} sectors is more than a block list holds")))?;
    let b = BLOCKLIST;
    let le16 = |at: usize| u16::from_le_bytes([core_img[at], core_img[at + 1]]);
    // grub-mkimage writes the sector count and segment for a core.img that follows diskboot directly.
    if le16(b + 8) != rest || le16(b + 10) != CORE_SEGMENT {
        return Err(bad(format!(
            "its block list says {} sectors at segment {:#x}, expected {rest} at {CORE_SEGMENT:#x}",
            le16(b + 8),
            le16(b + 10)
        )));
    }
    if core_img[b - 12..b].iter().any(|&x| x != 0) {
        return Err(bad("its block list has no terminator".into()));
    }
    let mut out = core_img.to_vec();
    out.resize((sectors * SECTOR) as usize, 0);
    out[b..b + 8].copy_from_slice(&(core_lba + 1).to_le_bytes());
    Ok(out)
}

/// Stand-ins with the structure the checks above look for, for tests without the real packages.
#[cfg(test)]
pub(crate) fn fake_images(core_len: usize) -> BiosBoot {
    let mut b = vec![0u8; 512];
    b[0] = 0xEB;
    b[1] = 0x63;
    b[DRIVE_CHECK] = 0xEB;
    b[DRIVE_CHECK + 1] = 0x05;
    b[0x100] = 0xCD;
    b[510] = 0x55;
    b[511] = 0xAA;
    let mut c = vec![0xAB; core_len];
    let sectors = core_len.div_ceil(512) as u16;
    c[BLOCKLIST - 12..BLOCKLIST].fill(0);
    c[BLOCKLIST..BLOCKLIST + 8].copy_from_slice(&2u64.to_le_bytes());
    c[BLOCKLIST + 8..BLOCKLIST + 10].copy_from_slice(&(sectors - 1).to_le_bytes());
    c[BLOCKLIST + 10..BLOCKLIST + 12].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
    BiosBoot {
        boot_img: b,
        core_img: c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_boot_img() -> Vec<u8> {
        fake_images(1024).boot_img
    }

    fn fake_core(len: usize) -> Vec<u8> {
        fake_images(len).core_img
    }

    #[test]
    fn boot_sector_keeps_the_table_and_points_at_core() {
        let mut mbr = [0u8; 512];
        mbr[446..462].copy_from_slice(&[
            0, 0, 2, 0, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0xFF, 0, 0, 0,
        ]);
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        let s = boot_sector(&fake_boot_img(), &mbr, 40).unwrap();
        assert_eq!(&s[446..512], &mbr[446..512]);
        assert_eq!(u64::from_le_bytes(s[0x5c..0x64].try_into().unwrap()), 40);
        assert_eq!(s[0x64], 0xFF);
        assert_eq!(&s[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(s[0x100], 0xCD, "code kept");
        assert!(boot_sector(&[0u8; 512], &mbr, 40).is_err());
        assert!(boot_sector(&fake_boot_img()[..400], &mbr, 40).is_err());
    }

    #[test]
    fn core_block_list_names_the_following_sectors() {
        let core = fake_core(146_190);
        let placed = place_core(&core, 40, 2008).unwrap();
        assert_eq!(placed.len(), 286 * 512);
        assert_eq!(u64::from_le_bytes(placed[500..508].try_into().unwrap()), 41);
        assert_eq!(u16::from_le_bytes([placed[508], placed[509]]), 285);
        assert_eq!(&placed[512..146_190], &core[512..]);
        let e = place_core(&core, 40, 100).unwrap_err();
        assert!(e.to_string().contains("286 sectors"), "{e}");
        let mut wrong = core.clone();
        wrong[510] = 0;
        let e = place_core(&wrong, 40, 2008).unwrap_err();
        assert!(
            e.to_string().contains("not a GRUB i386-pc core image"),
            "{e}"
        );
    }
}
