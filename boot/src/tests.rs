//! Image checks with the independent tools: `sgdisk -v`, `fsck.vfat -n`, `fsck.exfat -n`, `e2fsck -fn`,
//! `blkid`, mtools.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::process::Command;

use super::*;

fn spec() -> StickSpec {
    StickSpec {
        shim: b"MZ fake shim".repeat(1000),
        grub: b"MZ fake grub".repeat(3000),
        vmlinuz: (0..3_000_000u32).map(|i| (i % 251) as u8).collect(),
        initrd: vec![0x28; 1_500_000],
        bios: Some(bios::fake_images(146_190)),
        data_fs: DataFs::Exfat,
        extra_args: String::new(),
        size: DEFAULT_SIZE,
        serial_default: false,
        epoch: 1_700_000_000,
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.env("MTOOLS_SKIP_CHECK", "1").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn extract(image: &Path, p: &Partition, to: &Path) {
    let (off, len) = p.byte_range();
    let bytes = std::fs::read(image).unwrap();
    std::fs::write(to, &bytes[off as usize..(off + len) as usize]).unwrap();
}

#[test]
fn gpt_and_filesystems_pass_the_standard_checkers() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("stick.img");
    let spec = spec();
    let info = write_stick(&img, &spec).unwrap();
    assert!(info.size <= 48_000_000, "{} bytes", info.size);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), info.size);

    let v = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    let p = run(Command::new("sgdisk").arg("-p").arg(&img));
    assert!(
        p.contains(&format!("Disk identifier (GUID): {}", info.disk_guid)),
        "{p}"
    );
    assert!(
        p.contains("EF00") && p.contains("0700") && p.contains("EF02"),
        "{p}"
    );
    assert!(p.contains("RESCUE-DATA"), "{p}");
    assert_eq!(info.esp.first_lba, 2048, "1 MiB aligned");
    assert_eq!(info.data.first_lba % 2048, 0, "1 MiB aligned");
    let bb = info.bios_boot.clone().unwrap();
    assert_eq!((bb.first_lba, bb.last_lba), (40, 2047));

    let esp = dir.path().join("esp");
    extract(&img, &info.esp, &esp);
    run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    let data = dir.path().join("data");
    extract(&img, &info.data, &data);
    run(Command::new("fsck.exfat").arg("-n").arg(&data));
    let b = run(Command::new("blkid").arg("-p").arg(&data));
    assert!(b.contains("TYPE=\"exfat\""), "{b}");
    assert!(b.contains("LABEL=\"RESCUE-DATA\""), "{b}");
    assert!(b.contains(&format!("UUID=\"{}\"", info.data_id)), "{b}");

    // Files through mtools, straight from the image at the ESP's offset.
    let at = format!("{}@@{}", img.display(), info.esp.byte_range().0);
    let listing = run(Command::new("mdir").args(["-/", "-b", "-i", &at, "::"]));
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/EFI/BOOT/grubx64.efi",
        "::/EFI/debian/grub.cfg",
        "::/rescue/vmlinuz",
        "::/rescue/initrd.img",
    ] {
        // Names are stored as 8.3 upper case; FAT lookups (firmware, grub, Linux) ignore case.
        assert!(
            listing.to_uppercase().contains(&f.to_uppercase()),
            "{f} missing from:\n{listing}"
        );
    }
    assert!(!listing.to_lowercase().contains("fbx64"), "{listing}");
    for (src, want) in [
        ("::/EFI/BOOT/BOOTX64.EFI", &spec.shim),
        ("::/EFI/BOOT/grubx64.efi", &spec.grub),
        ("::/rescue/vmlinuz", &spec.vmlinuz),
        ("::/rescue/initrd.img", &spec.initrd),
    ] {
        let to = dir.path().join("copy");
        let _ = std::fs::remove_file(&to);
        run(Command::new("mcopy").args(["-n", "-i", &at, src]).arg(&to));
        assert!(std::fs::read(&to).unwrap() == *want, "{src} differs");
    }
    let to = dir.path().join("grub.cfg");
    run(Command::new("mcopy")
        .args(["-n", "-i", &at, "::/EFI/debian/grub.cfg"])
        .arg(&to));
    let cfg = std::fs::read_to_string(&to).unwrap();
    assert_eq!(cfg, grub::grub_cfg(&info.disk_guid, false, &[]));
}

#[test]
fn bios_boot_code_points_at_the_core_image() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bios.img");
    let spec = spec();
    let info = write_stick(&img, &spec).unwrap();
    let bytes = std::fs::read(&img).unwrap();
    let b = spec.bios.as_ref().unwrap();
    // boot.img's code, then the protective MBR's partition table.
    assert_eq!(bytes[0x100], b.boot_img[0x100]);
    assert_eq!(bytes[446 + 4], 0xEE, "protective entry kept");
    assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
    let core_lba = u64::from_le_bytes(bytes[0x5c..0x64].try_into().unwrap());
    let bb = info.bios_boot.unwrap();
    assert_eq!(core_lba, bb.first_lba);
    let at = (core_lba * 512) as usize;
    assert_eq!(
        u64::from_le_bytes(bytes[at + 500..at + 508].try_into().unwrap()),
        core_lba + 1
    );
    assert_eq!(&bytes[at + 512..at + b.core_img.len()], &b.core_img[512..]);

    // Without BIOS images: no BIOS boot partition and no boot code.
    let mut uefi_only = spec.clone();
    uefi_only.bios = None;
    let info = write_stick(&img, &uefi_only).unwrap();
    assert!(info.bios_boot.is_none());
    let bytes = std::fs::read(&img).unwrap();
    assert!(bytes[..440].iter().all(|&x| x == 0));
    let p = run(Command::new("sgdisk").arg("-p").arg(&img));
    assert!(!p.contains("EF02"), "{p}");
}

#[test]
fn every_data_filesystem_passes_its_checker_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    for fs in DataFs::ALL {
        let mut s = spec();
        s.data_fs = fs;
        let a = dir.path().join(format!("{fs}-a.img"));
        let b = dir.path().join(format!("{fs}-b.img"));
        let info = write_stick(&a, &s).unwrap();
        // A second apart: any clock-derived byte would show.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write_stick(&b, &s).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "two builds with a {fs} data partition differ"
        );
        let data = dir.path().join(format!("{fs}-data"));
        extract(&a, &info.data, &data);
        let check = match fs {
            DataFs::Exfat => run(Command::new("fsck.exfat").arg("-n").arg(&data)),
            DataFs::Ext4 => run(Command::new("e2fsck").arg("-fn").arg(&data)),
            DataFs::Vfat => run(Command::new("fsck.vfat").arg("-n").arg(&data)),
        };
        assert!(!check.contains("Dirty"), "{check}");
        let blkid = run(Command::new("blkid").arg("-p").arg(&data));
        let ty = if fs == DataFs::Vfat {
            "vfat"
        } else {
            fs.name()
        };
        assert!(blkid.contains(&format!("TYPE=\"{ty}\"")), "{blkid}");
        assert!(blkid.contains("LABEL=\"RESCUE-DATA\""), "{blkid}");
        assert!(
            blkid.contains(&format!("UUID=\"{}\"", info.data_id)),
            "{fs}: {blkid} vs {}",
            info.data_id
        );
        let p = run(Command::new("sgdisk").arg("-p").arg(&a));
        let code = if fs == DataFs::Ext4 { "8300" } else { "0700" };
        assert!(p.contains(code), "{fs}: {p}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".rescue-data-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn two_builds_are_byte_identical_and_inputs_change_identity() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let ia = write_stick(&a, &spec()).unwrap();
    let ib = write_stick(&b, &spec()).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds differ"
    );
    assert_eq!(ia.disk_guid, ib.disk_guid);
    let mut other = spec();
    other.epoch += 86_400;
    let ic = write_stick(&c, &other).unwrap();
    assert_ne!(ia.disk_guid, ic.disk_guid);
    assert_ne!(ia.esp.guid, ia.data.guid);
    let mut other = spec();
    other.data_fs = DataFs::Ext4;
    assert_ne!(write_stick(&c, &other).unwrap().disk_guid, ia.disk_guid);
    other.extra_args = r#"rescue.cmd="disks --json""#.into();
    write_stick(&c, &other).unwrap();
    other.extra_args = "rescue.cmd=\"mount 'a b'\"".into();
    let e = write_stick(&c, &other).unwrap_err();
    assert!(e.to_string().contains("--direct"), "{e}");
}

#[test]
fn menu_has_three_entries_that_name_the_stick() {
    let g = Guid::from_hash(&[7; 32]);
    let cfg = grub::grub_cfg(&g, false, &[]);
    assert_eq!(cfg.matches("menuentry").count(), 3);
    assert_eq!(cfg.matches(&format!("rescue.stick={g}")).count(), 3);
    assert!(cfg.contains("set default=0") && cfg.contains("set timeout=3"));
    assert!(cfg.contains("console=ttyS0,115200") && cfg.contains("nomodeset"));
    assert!(cfg.contains("serial --unit=0 --speed=115200"));
    assert!(cfg.contains("terminal_output serial console"));
    assert!(grub::grub_cfg(&g, true, &[]).contains("set default=1"));
}

#[test]
fn larger_sizes_grow_the_data_partition_and_tiny_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.img");
    let mut s = spec();
    s.size = 300 * MIB;
    let info = write_stick(&img, &s).unwrap();
    assert!(info.data.byte_range().1 > 250 * MIB);
    let v = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    // The image stays sparse: the empty exFAT volume was copied without its zeros.
    use std::os::unix::fs::MetadataExt;
    let used = std::fs::metadata(&img).unwrap().blocks() * 512;
    assert!(used < 100 * MIB, "{used} bytes allocated");
    s.size = 20 * MIB;
    let e = write_stick(&img, &s).unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");
}
