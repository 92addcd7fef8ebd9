//! The builder's CLI: bad input gets a clear message naming the file, never a panic; `netboot` and
//! `image --data-fs` work on the real kernel package.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;

fn builder(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_builder"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "the builder panicked:\n{text}");
    (out.status.success(), text)
}

#[test]
fn a_missing_kernel_package_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ok, text) = builder(&[
        "initramfs",
        "--out-dir",
        out.to_str().unwrap(),
        "--kernel-deb",
        "/nonexistent/kernel.deb",
    ]);
    assert!(!ok);
    assert!(text.contains("/nonexistent/kernel.deb"), "{text}");
}

#[test]
fn a_corrupt_kernel_package_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("linux-image-broken_1_amd64.deb");
    std::fs::write(
        &deb,
        b"!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let (ok, text) = builder(&[
        "initramfs",
        "--out-dir",
        out.to_str().unwrap(),
        "--kernel-deb",
        deb.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(text.contains("linux-image-broken_1_amd64.deb"), "{text}");
}

#[test]
fn a_dynamic_rescue_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kdir = dir.path().join("modules/6.1.0-test");
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::write(dir.path().join("vmlinuz"), b"kernel").unwrap();
    let (ok, text) = builder(&[
        "initramfs",
        "--out-dir",
        dir.path().join("out").to_str().unwrap(),
        "--kernel",
        dir.path().join("vmlinuz").to_str().unwrap(),
        "--modules-dir",
        kdir.to_str().unwrap(),
        "--rescue-bin",
        "/bin/sh",
    ]);
    assert!(!ok);
    assert!(
        text.contains("/bin/sh") && text.contains("not fully static"),
        "{text}"
    );
}

/// A minimal static ELF executable (one PT_LOAD, no interpreter, no dynamic section): enough for the
/// builder's checks and the initramfs, which never runs it here.
fn fake_static_rescue(path: &std::path::Path) {
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    for (v, n) in [
        (2u64, 2usize), // e_type: EXEC
        (0x3e, 2),      // e_machine: x86-64
        (1, 4),         // e_version
        (0x40_0078, 8), // e_entry
        (64, 8),        // e_phoff
        (0, 8),         // e_shoff
        (0, 4),         // e_flags
        (64, 2),        // e_ehsize
        (56, 2),        // e_phentsize
        (1, 2),         // e_phnum
        (64, 2),        // e_shentsize
        (0, 2),         // e_shnum
        (0, 2),         // e_shstrndx
        (1, 4),         // p_type: LOAD
        (5, 4),         // p_flags: R+X
        (0, 8),         // p_offset
        (0x40_0000, 8), // p_vaddr
        (0x40_0000, 8), // p_paddr
        (121, 8),       // p_filesz
        (121, 8),       // p_memsz
        (0x1000, 8),    // p_align
    ] {
        e.extend_from_slice(&v.to_le_bytes()[..n]);
    }
    e.push(0xF4); // hlt
    std::fs::write(path, e).unwrap();
}

/// The real kernel package (downloaded once into the builder cache; scripts/test has it already).
fn kernel_deb() -> String {
    builder::kernel::default_kernel_deb()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn netboot_writes_the_kernel_the_initramfs_and_an_ipxe_script() {
    let dir = tempfile::tempdir().unwrap();
    let rescue = dir.path().join("rescue");
    fake_static_rescue(&rescue);
    let out = dir.path().join("tftp");
    let (ok, text) = builder(&[
        "netboot",
        "--out-dir",
        out.to_str().unwrap(),
        "--serial",
        "--kernel-deb",
        &kernel_deb(),
        "--rescue-bin",
        rescue.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("boot.ipxe"), "{text}");
    let kernel = std::fs::read(out.join("vmlinuz")).unwrap();
    assert!(
        kernel.len() > 1_000_000 && &kernel[0x202..0x206] == b"HdrS",
        "a bzImage"
    );
    let initrd = std::fs::read(out.join("initramfs.img")).unwrap();
    assert_eq!(&initrd[..4], &[0x28, 0xB5, 0x2F, 0xFD], "zstd");
    let script = std::fs::read_to_string(out.join("boot.ipxe")).unwrap();
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(
        script.contains("kernel vmlinuz initrd=initramfs.img"),
        "{script}"
    );
    assert!(script.contains("--default serial"), "{script}");
}

/// `sfdisk -d` line of partition `n` → its byte offset.
fn partition_offset(image: &std::path::Path, n: usize) -> u64 {
    let out = Command::new("sfdisk")
        .arg("-d")
        .arg(image)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = dump
        .lines()
        .find(|l| l.starts_with(&format!("{}{n} :", image.display())))
        .unwrap_or_else(|| panic!("no partition {n} in:\n{dump}"));
    let start: u64 = line
        .split("start=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap();
    start * 512
}

#[test]
fn image_data_partition_filesystem_is_chosen_and_checked() {
    let (ok, text) = builder(&["image", "-o", "/nonexistent/x.img", "--data-fs", "ntfs"]);
    assert!(!ok);
    assert!(text.contains("use exfat, ext4 or vfat"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let rescue = dir.path().join("rescue");
    fake_static_rescue(&rescue);
    let deb = kernel_deb();
    for (fs, blkid_type) in [("ext4", "ext4"), ("vfat", "vfat"), ("exfat", "exfat")] {
        let img = dir.path().join(format!("{fs}.img"));
        let (ok, text) = builder(&[
            "image",
            "-o",
            img.to_str().unwrap(),
            "--data-fs",
            fs,
            "--work-dir",
            dir.path().join("work").to_str().unwrap(),
            "--kernel-deb",
            &deb,
            "--rescue-bin",
            rescue.to_str().unwrap(),
        ]);
        assert!(ok, "{text}");
        assert!(text.contains(&format!("{fs} data partition")), "{text}");
        assert!(text.contains("UEFI + BIOS boot"), "{text}");
        let probe = Command::new("blkid")
            .args(["-p", "-O"])
            .arg(partition_offset(&img, 2).to_string())
            .arg(&img)
            .output()
            .unwrap();
        let probe = String::from_utf8_lossy(&probe.stdout).into_owned();
        assert!(
            probe.contains(&format!("TYPE=\"{blkid_type}\"")),
            "{fs}: {probe}"
        );
        assert!(probe.contains("LABEL=\"RESCUE-DATA\""), "{fs}: {probe}");
    }
}
