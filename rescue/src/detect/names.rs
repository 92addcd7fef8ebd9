//! Friendly names for partition types, spelled the way fdisk and gdisk show them.

use gpt::partition_types as pt;

/// Friendly names for GPT partition types, as gdisk/fdisk spell them.
pub(crate) fn gpt_type_name(t: &pt::Type, guid_upper: &str) -> &'static str {
    let known = [
        (pt::EFI, "EFI System"),
        (pt::BIOS, "BIOS boot"),
        (pt::MICROSOFT_RESERVED, "Microsoft reserved"),
        (pt::BASIC, "Microsoft basic data"),
        (pt::WINDOWS_METADATA, "Microsoft LDM metadata"),
        (pt::WINDOWS_DATA, "Microsoft LDM data"),
        (pt::WINDOWS_RECOVERY, "Windows recovery environment"),
        (pt::WINDOWS_STORAGESPACES, "Microsoft Storage Spaces"),
        (pt::LINUX_FS, "Linux filesystem"),
        (pt::LINUX_SWAP, "Linux swap"),
        (pt::LINUX_LVM, "Linux LVM"),
        (pt::LINUX_RAID, "Linux RAID"),
        (pt::LINUX_HOME, "Linux home"),
        (pt::LINUX_SRV, "Linux server data"),
        (pt::LINUX_ROOT_X86, "Linux root (x86)"),
        (pt::LINUX_ROOT_X64, "Linux root (x86-64)"),
        (pt::LINUX_ROOT_ARM_32, "Linux root (ARM)"),
        (pt::LINUX_ROOT_ARM_64, "Linux root (ARM-64)"),
        (pt::LINUX_DMCRYPT, "Linux dm-crypt"),
        (pt::LINUX_LUKS, "Linux LUKS"),
        (pt::LINUX_RESERVED, "Linux reserved"),
        (pt::FREEDESK_BOOT, "Linux extended boot"),
        (pt::MACOS_HFSPLUS, "Apple HFS/HFS+"),
        (pt::MACOS_APFS, "Apple APFS"),
        (pt::MACOS_RECOVERY, "Apple boot"),
        (pt::FREEBSD_BOOT, "FreeBSD boot"),
        (pt::FREEBSD_DATA, "FreeBSD data"),
        (pt::FREEBSD_SWAP, "FreeBSD swap"),
        (pt::FREEBSD_UFS, "FreeBSD UFS"),
        (pt::FREEBSD_ZFS, "FreeBSD ZFS"),
        (pt::CHROME_KERNEL, "ChromeOS kernel"),
        (pt::CHROME_ROOTFS, "ChromeOS root fs"),
        (pt::VMWARE_VMFS, "VMware VMFS"),
        (pt::MBR, "MBR partition scheme"),
    ];
    if let Some((_, name)) = known.iter().find(|(k, _)| k.guid == t.guid) {
        return name;
    }
    // Types newer than the crate's table.
    match guid_upper {
        "8484680C-9521-48C6-9C11-B0720656F69E" => "Linux /usr (x86-64)",
        "4D21B016-B534-45C2-A9FB-5C16E091FD2D" => "Linux variable data",
        "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1" => "Linux /tmp",
        "773F91EF-66D4-49B5-BD83-D683BF40AD16" => "Linux user's home",
        _ => "Unknown",
    }
}

/// Friendly names for MBR partition ids, as fdisk spells the common ones.
pub(crate) fn mbr_type_name(sys: u8) -> &'static str {
    match sys {
        0x01 => "FAT12",
        0x04 => "FAT16 <32M",
        0x05 | 0x0F | 0x85 => "Extended",
        0x06 => "FAT16",
        0x07 => "HPFS/NTFS/exFAT",
        0x0B => "W95 FAT32",
        0x0C => "W95 FAT32 (LBA)",
        0x0E => "W95 FAT16 (LBA)",
        0x11 => "Hidden FAT12",
        0x12 => "Compaq diagnostics",
        0x14 | 0x16 | 0x1E => "Hidden FAT16",
        0x17 => "Hidden HPFS/NTFS",
        0x1B | 0x1C => "Hidden W95 FAT32",
        0x27 => "Hidden NTFS WinRE",
        0x42 => "Windows dynamic (LDM)",
        0x82 => "Linux swap",
        0x83 => "Linux",
        0x84 => "Hibernation",
        0x8E => "Linux LVM",
        0xA5 => "FreeBSD",
        0xA6 => "OpenBSD",
        0xA8 => "Darwin UFS",
        0xA9 => "NetBSD",
        0xAB => "Darwin boot",
        0xAF => "HFS / HFS+",
        0xBF => "Solaris",
        0xDE => "Dell Utility",
        0xEE => "GPT protective",
        0xEF => "EFI System",
        0xFB => "VMware VMFS",
        0xFD => "Linux raid autodetect",
        _ => "Unknown",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    #[test]
    fn names_for_common_types() {
        let efi = pt::EFI;
        assert_eq!(
            gpt_type_name(&efi, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "EFI System"
        );
        let t: pt::Type = "0FC63DAF-8483-4772-8E79-3D69D8477DE4".parse().unwrap();
        assert_eq!(
            gpt_type_name(&t, "0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            "Linux filesystem"
        );
        let usr: pt::Type = "8484680C-9521-48C6-9C11-B0720656F69E".parse().unwrap();
        assert_eq!(
            gpt_type_name(&usr, "8484680C-9521-48C6-9C11-B0720656F69E"),
            "Linux /usr (x86-64)"
        );
        let odd: pt::Type = "01234567-89AB-CDEF-0123-456789ABCDEF".parse().unwrap();
        assert_eq!(
            gpt_type_name(&odd, "01234567-89AB-CDEF-0123-456789ABCDEF"),
            "Unknown"
        );
    }

    #[test]
    fn mbr_names() {
        assert_eq!(mbr_type_name(0x83), "Linux");
        assert_eq!(mbr_type_name(0x0F), "Extended");
        assert_eq!(mbr_type_name(0x85), "Extended");
        assert_eq!(mbr_type_name(0x99), "Unknown");
    }
}
