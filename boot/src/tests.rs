//! Image checks with the independent tools: `sgdisk -v`, `fsck.vfat -n`, mtools.

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
    assert!(p.contains("EF00") && p.contains("0700"), "{p}");
    assert!(p.contains("RESCUE-DATA"), "{p}");
    assert_eq!(info.esp.first_lba, 2048, "1 MiB aligned");
    assert_eq!(info.data.first_lba % 2048, 0, "1 MiB aligned");

    let esp = dir.path().join("esp");
    extract(&img, &info.esp, &esp);
    run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    let data = dir.path().join("data");
    extract(&img, &info.data, &data);
    let d = run(Command::new("fsck.vfat").arg("-n").arg(&data));
    assert!(!d.contains("Dirty"), "{d}");
    let label = run(Command::new("mlabel")
        .args(["-s", "-i"])
        .arg(&data)
        .arg("::"));
    assert!(label.contains("RESCUE-DATA"), "{label}");

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
    assert_eq!(cfg, grub::grub_cfg(&info.disk_guid, false));
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
}

#[test]
fn menu_has_three_entries_that_name_the_stick() {
    let g = Guid::from_hash(&[7; 32]);
    let cfg = grub::grub_cfg(&g, false);
    assert_eq!(cfg.matches("menuentry").count(), 3);
    assert_eq!(cfg.matches(&format!("rescue.stick={g}")).count(), 3);
    assert!(cfg.contains("set default=0") && cfg.contains("set timeout=3"));
    assert!(cfg.contains("console=ttyS0,115200") && cfg.contains("nomodeset"));
    assert!(cfg.contains("serial --unit=0 --speed=115200"));
    assert!(cfg.contains("terminal_output serial console"));
    assert!(grub::grub_cfg(&g, true).contains("set default=1"));
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
    s.size = 20 * MIB;
    let e = write_stick(&img, &s).unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");
}
