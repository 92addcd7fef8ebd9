//! The built initramfs, from the real kernel package: reproducible, and its `/init` is fully static.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;

use builder::artifacts::{self, KernelSource};
use qemu_tests::boot_files;

/// Files of a cpio newc archive, by path (a minimal reader, independent of the writer under test).
fn cpio_files(data: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut pos = 0;
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
    let align = |x: usize| (x + 3) & !3;
    while pos + 110 <= data.len() {
        let h = &data[pos..pos + 110];
        assert_eq!(&h[..6], b"070701", "bad cpio magic at {pos}");
        let mode = hex(&h[14..22]);
        let filesize = hex(&h[54..62]) as usize;
        let namesize = hex(&h[94..102]) as usize;
        let name = String::from_utf8(data[pos + 110..pos + 110 + namesize - 1].to_vec()).unwrap();
        let body = align(pos + 110 + namesize);
        if name == "TRAILER!!!" {
            break;
        }
        out.insert(name, (mode, data[body..body + filesize].to_vec()));
        pos = align(body + filesize);
    }
    out
}

fn unpack(path: &std::path::Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let compressed = std::fs::read(path).unwrap();
    let raw = zstd::decode_all(&compressed[..]).expect("the initramfs is zstd");
    cpio_files(&raw)
}

#[test]
fn init_is_a_static_executable() {
    let files = unpack(&boot_files().initramfs);
    let (mode, init) = files.get("init").expect("/init in the archive");
    assert_eq!(mode & 0o111, 0o111, "/init is executable");
    let problems = builder::static_build::static_problems(init).unwrap();
    assert!(problems.is_empty(), "/init is not static: {problems:?}");
    assert!(
        files.contains_key("sbin/modprobe"),
        "the kernel's modprobe helper is there"
    );
    assert!(
        files.keys().any(|k| k.ends_with("/modules.rescue")),
        "the module index is there"
    );
}

#[test]
fn two_builds_are_byte_identical() {
    let boot = boot_files();
    let dir = tempfile::tempdir().unwrap();
    let rescue = builder::static_build::build_rescue().unwrap();
    let again = artifacts::build(
        dir.path(),
        &KernelSource::Default,
        Some(&rescue),
        artifacts::FirmwareChoice::Include,
    )
    .unwrap();
    let a = std::fs::read(&boot.initramfs).unwrap();
    let b = std::fs::read(&again.initramfs).unwrap();
    assert!(
        a == b,
        "initramfs differs between two builds ({} vs {} bytes)",
        a.len(),
        b.len()
    );
    assert_eq!(
        std::fs::read(&boot.vmlinuz).unwrap(),
        std::fs::read(&again.vmlinuz).unwrap()
    );
    eprintln!(
        "initramfs: {} modules, {} bytes compressed ({:.2} MB); rebuilt from the cached package in {:.2} s",
        again.module_count,
        again.compressed_bytes,
        again.compressed_bytes as f64 / 1e6,
        again.seconds
    );
}

/// ntfs-3g (the rescue system's NTFS, over FUSE) is carried with everything it links, and the archive
/// stays within its budget. The goal was 8 MB; the network (NIC drivers, cifs, nfs: +3.6 MB) and the
/// TLS and SSH clients (ureq/rustls, russh/tokio: +3 MB of binary) put it at 12.7 MB at zstd level 9.
/// Now: level 19 (no cost at boot) and the dependencies off the imaging path optimized for size give
/// 11.4 MB; xz -9e would give 1.4 MB less but decompresses several times slower at every boot. The
/// network adapters' firmware (Debian's non-free-firmware: Realtek, Broadcom, Tigon; 1.7 MB, 1.3 MB of it
/// bnx2x's) adds 1.2 MB: 12.6 MB; the repository (S3 signing, XChaCha20-Poly1305, Argon2id) 0.4 MB more:
/// 13.0 MB; virtual disks (readers of six formats, DMG's codecs, writers, the NBD server, filesystem
/// browsing and its interface) 0.4 MB more: 13.4 MB; Clonezilla images (partclone streams, the pieces'
/// decompressors with lz4 and lzo, the directory reader and its restore) 0.13 MB more: 13.53 MB. 13.6 MB is
/// the ceiling a regression would cross; the goal is not met, and README says so.
#[test]
fn ntfs3g_is_carried_with_its_libraries_within_the_size_budget() {
    use initramfs::programs as layout;
    let boot = boot_files();
    let size = std::fs::metadata(&boot.initramfs).unwrap().len();
    assert!(
        size <= 13_600_000,
        "the initramfs is {size} bytes, over 13.6 MB"
    );
    let files = unpack(&boot.initramfs);
    let dir = layout::NTFS3G_DIR.trim_start_matches('/');
    let carried: Vec<String> = files
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{dir}/lib/")))
        .map(str::to_string)
        .collect();
    for program in [layout::NTFS3G, layout::NTFS3G_PROBE, layout::LOADER] {
        let (mode, data) = files
            .get(&format!("{dir}/{program}"))
            .unwrap_or_else(|| panic!("{program} is not in the archive"));
        assert_eq!(mode & 0o111, 0o111, "{program} is executable");
        for lib in builder::programs::needed_libraries(data).unwrap() {
            assert!(carried.contains(&lib), "{program} needs {lib}: {carried:?}");
        }
    }
    let packages = &files[&format!("{dir}/{}", layout::PACKAGES)].1;
    let packages = String::from_utf8_lossy(packages);
    assert!(
        packages.contains("ntfs-3g_") && packages.contains("libc6_"),
        "{packages}"
    );
}

/// Every firmware file a carried module names is either in `/lib/firmware` (byte for byte what the report
/// says) or reported as not in Debian's archive; the common adapters' files are there.
#[test]
fn firmware_the_modules_name_is_carried() {
    let files = unpack(&boot_files().initramfs);
    let report = String::from_utf8_lossy(&files["etc/rescue-firmware"].1).into_owned();
    let mut accounted = std::collections::BTreeSet::new();
    for line in report.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["carried", name, bytes, "bytes", ..] => {
                let (mode, data) =
                    files
                        .get(&format!("lib/firmware/{name}"))
                        .unwrap_or_else(|| {
                            panic!("{name} is reported carried but is not in the archive")
                        });
                assert_eq!(mode & 0o777, 0o644, "{name}");
                assert_eq!(data.len().to_string(), bytes, "{name}");
                accounted.insert(name.to_string());
            }
            ["not-in-debian", name, ..] => {
                accounted.insert(name.to_string());
            }
            _ => {}
        }
    }
    let mut named = 0;
    for (path, (_, data)) in &files {
        if !path.ends_with(".ko") {
            continue;
        }
        let info = initramfs::modinfo::modinfo_from_elf(std::path::Path::new(path), data).unwrap();
        for fw in info.firmware {
            named += 1;
            assert!(
                accounted.contains(&fw),
                "{} names {fw}, which is neither carried nor reported missing",
                info.name
            );
        }
    }
    assert!(named > 40, "only {named} firmware names in the modules");
    for common in [
        "rtl_nic/rtl8168h-2.fw",
        "rtl_nic/rtl8153b-2.fw",
        "tigon/tg3_tso5.bin",
        "bnx2/bnx2-mips-09-6.2.1b.fw",
    ] {
        assert!(
            files.contains_key(&format!("lib/firmware/{common}")),
            "{common} is not carried:\n{report}"
        );
    }
}
