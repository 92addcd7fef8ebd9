use super::*;
use std::io::Write;

const R: &str = "6.1.0-99-amd64";

enum T<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Link(&'a str, &'a str),
}

/// A tar with exactly the given names: `tar::Builder`'s path setters refuse `..` and absolute paths, which
/// the tests need to produce.
fn tar(entries: &[T]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, kind, data): (&str, _, &[u8]) = match e {
            T::Dir(n) => (n, tar::EntryType::Directory, b""),
            T::File(n, d) => (n, tar::EntryType::Regular, d),
            T::Link(n, _) => (n, tar::EntryType::Symlink, b""),
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if matches!(e, T::Dir(_)) { 0o755 } else { 0o644 });
        if let T::Link(_, target) = e {
            h.set_link_name(target).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn deb(members: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut b = ar::Builder::new(Vec::new());
    for (name, data) in members {
        let h = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn kernel_tar() -> Vec<u8> {
    tar(&[
        T::Dir("./"),
        T::Dir("./boot/"),
        T::File(&format!("./boot/vmlinuz-{R}"), b"MZ kernel\0\x01\x02"),
        T::File(&format!("./boot/config-{R}"), b"CONFIG_RD_ZSTD=y\n"),
        T::File(&format!("./boot/System.map-{R}"), b"ffff T _text\n"),
        T::Dir("./lib/"),
        T::Dir(&format!("./lib/modules/{R}/kernel/fs/")),
        T::File(
            &format!("./lib/modules/{R}/kernel/fs/a.ko"),
            b"\x7fELF...~Module signature appended~\n",
        ),
        T::File(
            &format!("./lib/modules/{R}/modules.order"),
            b"kernel/fs/a.ko\n",
        ),
        T::File("./usr/share/doc/x/copyright", b"GPL"),
    ])
}

fn write_deb(dir: &Path, bytes: &[u8]) -> PathBuf {
    let p = dir.join("linux-image-test.deb");
    fs::write(&p, bytes).unwrap();
    p
}

fn standard_deb(dir: &Path) -> PathBuf {
    write_deb(
        dir,
        &deb(&[
            ("debian-binary", b"2.0\n".to_vec()),
            (
                "control.tar.xz",
                xz(&tar(&[T::File("./control", b"Package: x\n")])),
            ),
            ("data.tar.xz", xz(&kernel_tar())),
        ]),
    )
}

#[test]
fn unpacks_kernel_config_and_modules_only() {
    let dir = tempfile::tempdir().unwrap();
    let deb = standard_deb(dir.path());
    let dest = dir.path().join("cache/k");
    let tree = unpack_kernel_deb(&deb, &dest).unwrap();
    assert_eq!(tree.release, R);
    assert_eq!(tree.vmlinuz, dest.join(format!("boot/vmlinuz-{R}")));
    assert_eq!(tree.modules_dir, dest.join(format!("lib/modules/{R}")));
    assert_eq!(fs::read(&tree.vmlinuz).unwrap(), b"MZ kernel\0\x01\x02");
    assert_eq!(
        fs::read(tree.modules_dir.join("kernel/fs/a.ko")).unwrap(),
        b"\x7fELF...~Module signature appended~\n"
    );
    assert!(dest.join(format!("boot/config-{R}")).is_file());
    assert!(!dest.join(format!("boot/System.map-{R}")).exists());
    assert!(!dest.join("usr").exists());
    assert!(dest.join(MARKER).is_file());
    assert!(!tmp_path(&dest, std::process::id()).exists());

    // The cache is used without reading the package again.
    fs::remove_file(&deb).unwrap();
    assert_eq!(unpack_kernel_deb(&deb, &dest).unwrap(), tree);
}

#[test]
fn zstd_data_and_merged_usr_layout() {
    let dir = tempfile::tempdir().unwrap();
    let data = tar(&[
        T::File(&format!("boot/vmlinuz-{R}"), b"k"),
        T::File(&format!("usr/lib/modules/{R}/kernel/b.ko"), b"b"),
    ]);
    let deb = write_deb(
        dir.path(),
        &deb(&[("data.tar.zst", zstd::encode_all(&data[..], 3).unwrap())]),
    );
    let tree = unpack_kernel_deb(&deb, &dir.path().join("k")).unwrap();
    assert_eq!(
        fs::read(tree.modules_dir.join("kernel/b.ko")).unwrap(),
        b"b"
    );
}

#[test]
fn damaged_cache_is_replaced_and_stale_tmp_removed() {
    let dir = tempfile::tempdir().unwrap();
    let deb = standard_deb(dir.path());
    let dest = dir.path().join("k");
    let stale = tmp_path(&dest, 4_194_305); // above the kernel's pid_max: never a running process
    fs::create_dir_all(stale.join("boot")).unwrap();
    let tree = unpack_kernel_deb(&deb, &dest).unwrap();
    assert!(!stale.exists());
    fs::remove_file(&tree.vmlinuz).unwrap();
    let again = unpack_kernel_deb(&deb, &dest).unwrap();
    assert!(again.vmlinuz.is_file());

    // A module cut short (power loss before the data reached the disk) is noticed by the size totals.
    let module = tree.modules_dir.join("kernel/fs/a.ko");
    fs::write(&module, b"\x7fELF").unwrap();
    unpack_kernel_deb(&deb, &dest).unwrap();
    assert_eq!(
        fs::read(&module).unwrap(),
        b"\x7fELF...~Module signature appended~\n"
    );
}

#[test]
fn refuses_a_foreign_destination() {
    let dir = tempfile::tempdir().unwrap();
    let deb = standard_deb(dir.path());
    let dest = dir.path().join("home");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("precious"), b"x").unwrap();
    let e = unpack_kernel_deb(&deb, &dest).unwrap_err();
    assert!(matches!(e, DebError::ForeignDest { .. }), "{e}");
    assert!(dest.join("precious").exists());
}

fn unpack_err(bytes: &[u8]) -> (DebError, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let deb = write_deb(dir.path(), bytes);
    let dest = dir.path().join("k");
    let e = unpack_kernel_deb(&deb, &dest).unwrap_err();
    assert!(!dest.exists(), "failed extraction left {}", dest.display());
    assert!(!tmp_path(&dest, std::process::id()).exists());
    (e, dir)
}

#[test]
fn missing_not_ar_and_no_data_member() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.deb");
    let e = unpack_kernel_deb(&missing, &dir.path().join("k")).unwrap_err();
    assert!(matches!(e, DebError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("nope.deb"), "{e}");
    assert!(!dir.path().join("k").exists());

    let (e, _d) = unpack_err(b"PK\x03\x04 a zip file");
    assert!(matches!(e, DebError::NotAr { .. }), "{e}");
    let (e, _d) = unpack_err(b"");
    assert!(matches!(e, DebError::NotAr { .. }), "{e}");

    let (e, _d) = unpack_err(&deb(&[
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.xz", xz(b"")),
    ]));
    assert!(matches!(e, DebError::NoDataTar { .. }), "{e}");
    assert!(e.to_string().contains("control.tar.xz"), "{e}");
}

#[test]
fn truncated_xz_member_and_truncated_file() {
    let data = xz(&kernel_tar());
    let (e, _d) = unpack_err(&deb(&[("data.tar.xz", data[..data.len() / 2].to_vec())]));
    assert!(
        matches!(&e, DebError::Corrupt { member, .. } if member == "data.tar.xz"),
        "{e}"
    );
    assert!(e.to_string().contains("download it again"), "{e}");

    let whole = deb(&[("data.tar.xz", data)]);
    let (e, _d) = unpack_err(&whole[..whole.len() - 20]);
    assert!(matches!(e, DebError::Corrupt { .. }), "{e}");
}

#[test]
fn no_vmlinuz_or_no_modules() {
    let only_modules = tar(&[T::File(&format!("./lib/modules/{R}/kernel/a.ko"), b"a")]);
    let (e, _d) = unpack_err(&deb(&[("data.tar.xz", xz(&only_modules))]));
    assert!(matches!(e, DebError::NoVmlinuz { .. }), "{e}");

    let only_kernel = tar(&[T::File(&format!("./boot/vmlinuz-{R}"), b"k")]);
    let (e, _d) = unpack_err(&deb(&[("data.tar.xz", xz(&only_kernel))]));
    assert!(matches!(e, DebError::NoModules { .. }), "{e}");
}

#[test]
fn refuses_unsafe_paths() {
    for bad in ["./lib/modules/../../evil", "/lib/modules/x/evil"] {
        let t = tar(&[T::File(bad, b"x")]);
        let (e, dir) = unpack_err(&deb(&[("data.tar.xz", xz(&t))]));
        assert!(matches!(e, DebError::UnsafeEntry { .. }), "{bad}: {e}");
        assert!(!dir.path().join("evil").exists());
    }
    // Writing through a symlink that is inside the tree is refused too.
    let t = tar(&[
        T::Link(&format!("./lib/modules/{R}/kernel"), ".."),
        T::File(&format!("./lib/modules/{R}/kernel/x.ko"), b"x"),
    ]);
    let (e, _d) = unpack_err(&deb(&[("data.tar.xz", xz(&t))]));
    assert!(matches!(e, DebError::UnsafeEntry { .. }), "{e}");
}

#[test]
fn symlinks_out_of_the_tree_are_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut entries = vec![
        T::File("./boot/vmlinuz-6.1.0-99-amd64", b"k"),
        T::File("./lib/modules/6.1.0-99-amd64/kernel/a.ko", b"a"),
    ];
    entries.push(T::Link(
        "./lib/modules/6.1.0-99-amd64/build",
        "/usr/src/linux-headers-6.1.0-99-amd64",
    ));
    entries.push(T::Link("./lib/modules/6.1.0-99-amd64/up", "../../../../.."));
    entries.push(T::Link("./lib/modules/6.1.0-99-amd64/a.ko", "kernel/a.ko"));
    let deb = write_deb(dir.path(), &deb(&[("data.tar.xz", xz(&tar(&entries)))]));
    let tree = unpack_kernel_deb(&deb, &dir.path().join("k")).unwrap();
    assert!(fs::symlink_metadata(tree.modules_dir.join("build")).is_err());
    assert!(fs::symlink_metadata(tree.modules_dir.join("up")).is_err());
    assert_eq!(fs::read(tree.modules_dir.join("a.ko")).unwrap(), b"a");
}

#[test]
fn from_dirs_takes_the_release_from_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("vmlinuz");
    let m = dir.path().join(format!("lib/modules/{R}"));
    fs::write(&k, b"k").unwrap();
    fs::create_dir_all(&m).unwrap();
    let t = KernelTree::from_dirs(&k, &m).unwrap();
    assert_eq!(t.release, R);
    let e = KernelTree::from_dirs(&dir.path().join("nope"), &m).unwrap_err();
    assert!(matches!(e, DebError::KernelFile { .. }), "{e}");
    let e = KernelTree::from_dirs(&k, &dir.path().join("nope")).unwrap_err();
    assert!(matches!(e, DebError::ModulesDir { .. }), "{e}");
}
