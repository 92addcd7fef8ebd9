use super::*;
use crate::cpio::tests::{read_newc, Read as CpioEntry};
use crate::select::Rule;
use crate::testutil::{small_kernel, RELEASE};
use std::collections::HashMap;
use std::time::Instant;

fn rules() -> Vec<Category> {
    vec![
        Category {
            name: "disk".into(),
            boot: false,
            rules: vec![
                Rule::Dir("drivers/ata".into()),
                Rule::Name("usb-storage".into()),
            ],
        },
        Category {
            name: "fs".into(),
            boot: true,
            rules: vec![Rule::Name("ext4".into())],
        },
    ]
}

/// A kernel tree and rescue binary below `root`, and a spec for them.
fn fixture(root: &Path) -> InitramfsSpec {
    let modules_dir = small_kernel(root);
    let vmlinuz = root.join(format!("boot/vmlinuz-{RELEASE}"));
    std::fs::create_dir_all(vmlinuz.parent().unwrap()).unwrap();
    std::fs::write(&vmlinuz, b"MZ").unwrap();
    let rescue = root.join("rescue");
    std::fs::write(&rescue, b"\x7fELF static rescue").unwrap();
    let kernel = KernelTree::from_dirs(&vmlinuz, &modules_dir).unwrap();
    let mut spec = InitramfsSpec::new(kernel, rescue, 1_600_000_000);
    spec.rules = rules();
    spec.zstd_level = 3;
    spec
}

fn unpack(archive: &[u8]) -> HashMap<String, CpioEntry> {
    let cpio = zstd::decode_all(archive).unwrap();
    read_newc(&cpio)
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect()
}

#[test]
fn layout_modules_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = fixture(dir.path());
    spec.extra_files.push((
        "etc/rescue/job.toml".into(),
        b"mode = 'capture'\n".to_vec(),
        0o600,
    ));
    spec.params
        .insert("usb_storage".into(), "delay_use=1".into());
    let out = build_initramfs(&spec).unwrap();
    let files = unpack(&out.archive);
    assert_eq!(
        zstd::decode_all(&out.archive[..]).unwrap().len(),
        out.uncompressed_len
    );

    assert_eq!(files["init"].mode, 0o100755);
    assert_eq!(files["init"].data, b"\x7fELF static rescue");
    assert_eq!(files["sbin/modprobe"].mode, 0o120777);
    assert_eq!(files["sbin/modprobe"].data, b"/init");
    assert_eq!(files["dev/console"].mode, 0o020600);
    assert_eq!(files["dev/console"].rdev, (5, 1));
    assert_eq!(files["tmp"].mode, 0o041777);
    for d in ["dev", "proc", "sys", "run", "mnt"] {
        assert_eq!(files[d].mode, 0o040755, "{d}");
    }
    assert!(files.values().all(|e| e.mtime == 1_600_000_000));
    assert_eq!(files["etc/rescue/job.toml"].mode, 0o100600);

    let want = [
        "ahci",
        "crc32c_generic",
        "crc32c_intel",
        "ext4",
        "jbd2",
        "libahci",
        "libata",
        "mbcache",
        "scsi_mod",
        "usb_storage",
        "usbcore",
    ];
    assert_eq!(out.module_count, want.len());
    assert_eq!(out.selection.boot, ["ext4"]);
    let mut bytes = 0;
    for name in want {
        let m = &out.index.modules[name];
        let packaged = std::fs::read(spec.kernel.modules_dir.join(&m.path)).unwrap();
        let copied = &files[&format!("lib/modules/{RELEASE}/{}", m.path)];
        assert_eq!(copied.data, packaged, "{name} differs from the package");
        assert_eq!(copied.mode, 0o100644);
        bytes += packaged.len() as u64;
    }
    assert_eq!(out.modules_bytes, bytes);
    assert!(!files.keys().any(|k| k.ends_with("snd.ko")));

    let text = &files[&format!("lib/modules/{RELEASE}/modules.rescue")].data;
    let index = ModuleIndex::parse(std::str::from_utf8(text).unwrap()).unwrap();
    assert_eq!(index, out.index);
    assert_eq!(index.boot, ["ext4"]);
    assert_eq!(index.modules["usb_storage"].params, "delay_use=1");
    assert!(index.builtin.contains("unix"));

    let release = String::from_utf8(files["etc/rescue-release"].data.clone()).unwrap();
    assert!(
        release.contains(&format!("kernel-release {RELEASE}\n")),
        "{release}"
    );
    assert!(
        release.contains("source-date-epoch 1600000000\n"),
        "{release}"
    );
    assert!(
        !release.contains(&dir.path().display().to_string()),
        "{release}"
    );
}

#[test]
fn firmware_of_the_selected_modules_only() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture(dir.path());
    let selected = select_modules(&spec).unwrap();
    let fw = selected.firmware();
    assert_eq!(
        fw.into_iter().collect::<Vec<_>>(),
        [("ahci/quirk.bin".to_string(), vec!["libahci".to_string()])],
        "a selected module's firmware is wanted, an unselected one's (snd) is not"
    );
    let mut spec = spec;
    spec.extra_files
        .push(("lib/firmware/ahci/quirk.bin".into(), b"fw".to_vec(), 0o644));
    let out = build_selected(&spec, selected).unwrap();
    let files = unpack(&out.archive);
    assert_eq!(files["lib/firmware/ahci/quirk.bin"].data, b"fw");
}

#[test]
fn same_inputs_give_identical_bytes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spec_a = fixture(a.path());
    let spec_b = fixture(b.path());
    // Different mtimes and creation order on disk must not matter either.
    std::fs::write(
        spec_b.kernel.modules_dir.join("kernel/fs/jbd2/jbd2.ko"),
        std::fs::read(spec_a.kernel.modules_dir.join("kernel/fs/jbd2/jbd2.ko")).unwrap(),
    )
    .unwrap();
    let first = build_initramfs(&spec_a).unwrap().archive;
    assert_eq!(first, build_initramfs(&spec_a).unwrap().archive);
    assert_eq!(first, build_initramfs(&spec_b).unwrap().archive);
    let mut later = spec_a.clone();
    later.source_date_epoch += 1;
    assert_ne!(first, build_initramfs(&later).unwrap().archive);
}

#[test]
fn errors_name_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let spec = fixture(dir.path());

    let mut s = spec.clone();
    s.rescue_binary = dir.path().join("no-rescue");
    let e = build_initramfs(&s).unwrap_err();
    assert!(matches!(e, BuildError::Rescue { .. }), "{e}");
    assert!(e.to_string().contains("no-rescue"), "{e}");

    let mut s = spec.clone();
    s.zstd_level = 22;
    assert!(matches!(
        build_initramfs(&s),
        Err(BuildError::Level { level: 22 })
    ));

    let mut s = spec.clone();
    s.rules[1].rules.push(Rule::Name("btrfs".into()));
    let e = build_initramfs(&s).unwrap_err();
    assert!(
        e.to_string().contains("`fs`") && e.to_string().contains("btrfs"),
        "{e}"
    );

    let mut s = spec.clone();
    s.extra_files.push(("/init".into(), Vec::new(), 0o755));
    assert!(matches!(build_initramfs(&s), Err(BuildError::Cpio(_))));

    let mut s = spec;
    std::fs::remove_file(s.kernel.modules_dir.join("kernel/drivers/scsi/scsi_mod.ko")).unwrap();
    s.rules.truncate(1);
    let e = build_initramfs(&s).unwrap_err();
    assert!(e.to_string().contains("scsi_mod"), "{e}");
}

/// `RESCUE_KERNEL_DEB`, else the newest `linux-image-*.deb` in the builder's cache.
fn real_kernel_deb() -> PathBuf {
    if let Some(p) = std::env::var_os("RESCUE_KERNEL_DEB") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "RESCUE_KERNEL_DEB={} does not exist",
            p.display()
        );
        return p;
    }
    let cache = std::env::var_os("RESCUE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("rescue-builder"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/rescue-builder"))
        })
        .unwrap_or_default();
    let debs = cache.join("debs");
    let newest = std::fs::read_dir(&debs)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("linux-image-") && n.ends_with(".deb")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    match newest {
        Some(e) => e.path(),
        None => panic!(
            "this test needs the real Debian kernel package and found no linux-image-*.deb in {}. \
             Run the builder once (it downloads the package there), or set RESCUE_KERNEL_DEB=/path/to.deb",
            debs.display()
        ),
    }
}

/// Every `lib/modules/...` and `boot/vmlinuz-*` file of the package, read straight from the .deb.
fn package_files(deb: &Path, wanted: &BTreeSet<String>) -> HashMap<String, Vec<u8>> {
    let mut ar = ar::Archive::new(std::fs::File::open(deb).unwrap());
    while let Some(entry) = ar.next_entry() {
        let entry = entry.unwrap();
        if entry.header().identifier() != b"data.tar.xz" {
            continue;
        }
        let mut tar = tar::Archive::new(liblzma::read::XzDecoder::new(entry));
        let mut out = HashMap::new();
        for e in tar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            if wanted.contains(&path) {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                out.insert(path, data);
            }
        }
        return out;
    }
    panic!("{} has no data.tar.xz", deb.display());
}

#[test]
fn real_kernel_package_default_set() {
    let deb = real_kernel_deb();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let tree = crate::deb::unpack_kernel_deb(&deb, &dir.path().join("k")).unwrap();
    let unpack_s = t.elapsed().as_secs_f64();
    let rescue = dir.path().join("rescue");
    std::fs::write(&rescue, b"\x7fELF stand-in for rescue").unwrap();

    let t = Instant::now();
    let db = ModuleDb::scan(&tree.modules_dir).unwrap();
    let scan_s = t.elapsed().as_secs_f64();
    let spec = InitramfsSpec::new(tree.clone(), rescue, 0);
    let t = Instant::now();
    let out = build_initramfs(&spec).unwrap();
    let build_s = t.elapsed().as_secs_f64();

    for m in [
        "ext4",
        "vfat",
        "usb_storage",
        "nvme",
        "ahci",
        "virtio_blk",
        "sd_mod",
        "xhci_pci",
        "hid_generic",
        "efivarfs",
    ] {
        assert!(
            out.selection.modules.contains(m),
            "{m} is not in the default set"
        );
    }
    for m in [
        "ext4",
        "vfat",
        "efivarfs",
        "sd_mod",
        "nls_cp437",
        "crc32c_generic",
    ] {
        assert!(
            out.selection.boot.iter().any(|b| b == m),
            "{m} is not loaded at boot"
        );
    }

    let files = unpack(&out.archive);
    let release_dir = format!("lib/modules/{}", tree.release);
    let mut wanted: BTreeSet<String> = out
        .index
        .modules
        .values()
        .map(|m| format!("{release_dir}/{}", m.path))
        .collect();
    let kernel_path = format!("boot/vmlinuz-{}", tree.release);
    wanted.insert(kernel_path.clone());
    let package = package_files(&deb, &wanted);
    assert_eq!(
        package.len(),
        wanted.len(),
        "modules missing from the package"
    );
    for (path, data) in &package {
        if *path == kernel_path {
            assert!(
                std::fs::read(&tree.vmlinuz).unwrap() == *data,
                "unpacked vmlinuz differs"
            );
            continue;
        }
        assert!(files[path].data == *data, "{path} differs from the package");
        assert!(
            data.ends_with(b"~Module signature appended~\n"),
            "{path} is not signed"
        );
    }

    let text = &files[&format!("{release_dir}/{}", crate::index::FILE_NAME)].data;
    let index = ModuleIndex::parse(std::str::from_utf8(text).unwrap()).unwrap();
    assert_eq!(index, out.index);
    for (name, m) in &index.modules {
        for d in &m.depends {
            assert!(
                index.modules.contains_key(d) || index.builtin.contains(d),
                "{name} needs {d}, which is neither in the initramfs nor builtin"
            );
        }
    }
    let ext4 = index.load_order("ext4");
    assert!(
        ext4.iter().any(|m| m == "crc32c_generic")
            && ext4.last().map(String::as_str) == Some("ext4"),
        "{ext4:?}"
    );
    assert_eq!(index.resolve("fs-vfat"), ["vfat"]);

    eprintln!(
        "real kernel {}: {} modules scanned in {scan_s:.2} s; default set {} modules, {} module bytes; \
         cpio {} bytes, zstd level {} {} bytes; unpack {unpack_s:.1} s, build {build_s:.2} s (incl. scan)",
        tree.release,
        db.len(),
        out.module_count,
        out.modules_bytes,
        out.uncompressed_len,
        spec.zstd_level,
        out.archive.len(),
    );
    // The modules alone: 3.6 MB before the network (NICs, cifs, nfs: +18 MB of modules, +3.6 MB here at
    // level 9). A bound that catches a rule pulling in a whole subsystem by mistake.
    assert!(
        out.archive.len() < 7_600_000,
        "initramfs grew to {} bytes",
        out.archive.len()
    );
}
