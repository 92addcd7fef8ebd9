use super::*;
use crate::testutil::{small_kernel, write_tree, RELEASE};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn scans_a_tree() {
    let dir = tempfile::tempdir().unwrap();
    let db = ModuleDb::scan(&small_kernel(dir.path())).unwrap();
    assert_eq!(db.release(), RELEASE);
    assert_eq!(db.len(), 12);
    let us = db.get("usb-storage").unwrap();
    assert_eq!(us.path, "kernel/drivers/usb/storage/usb-storage.ko");
    assert!(us.size > 0);
    assert_eq!(
        db.under_dir("drivers/ata")
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["ahci", "libahci", "libata"]
    );
    assert!(db.builtin().names.contains("unix"));
    assert!(db.builtin().names.contains("crc16"));
    assert!(db.is_builtin("net-pf-1"));
    assert!(!db.is_builtin("ext4"));
}

#[test]
fn resolves_names_and_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let db = ModuleDb::scan(&small_kernel(dir.path())).unwrap();
    assert_eq!(db.resolve("usb-storage"), ["usb_storage"]);
    assert_eq!(
        db.resolve("crypto-crc32c"),
        ["crc32c_generic", "crc32c_intel"]
    );
    assert_eq!(
        db.resolve("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
        ["ahci"]
    );
    assert!(db.resolve("fs-ntfs").is_empty());
}

#[test]
fn closure_follows_hard_and_soft_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let db = ModuleDb::scan(&small_kernel(dir.path())).unwrap();
    assert_eq!(
        db.closure(["ext4"]).unwrap(),
        set(&["crc32c_generic", "crc32c_intel", "ext4", "jbd2", "mbcache"])
    );
    assert_eq!(
        db.closure(["ahci", "usb-storage"]).unwrap(),
        set(&[
            "ahci",
            "libahci",
            "libata",
            "scsi_mod",
            "usb_storage",
            "usbcore"
        ])
    );
    let e = db.closure(["nope"]).unwrap_err();
    assert!(matches!(e, DepmodError::UnknownModule { .. }), "{e}");
}

#[test]
fn missing_hard_dependency_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_tree(
        dir.path(),
        &[("kernel/a.ko", &[("name", "a"), ("depends", "gone")])],
    );
    let db = ModuleDb::scan(&m).unwrap();
    let e = db.closure(["a"]).unwrap_err();
    assert!(
        matches!(&e, DepmodError::MissingDependency { module, dependency, .. } if module == "a" && dependency == "gone"),
        "{e}"
    );
}

#[test]
fn empty_or_missing_tree_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = ModuleDb::scan(dir.path()).unwrap_err();
    assert!(matches!(e, DepmodError::NoModules { .. }), "{e}");
    std::fs::create_dir(dir.path().join("kernel")).unwrap();
    std::fs::write(dir.path().join("kernel/x.ko.xz"), b"").unwrap();
    let e = ModuleDb::scan(dir.path()).unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
}

#[test]
fn broken_module_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_kernel(dir.path());
    std::fs::write(m.join("kernel/sound/snd.ko"), b"\x7fELF garbage").unwrap();
    let e = ModuleDb::scan(&m).unwrap_err();
    assert!(e.to_string().contains("snd.ko"), "{e}");
}

#[test]
fn index_holds_the_selection_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let db = ModuleDb::scan(&small_kernel(dir.path())).unwrap();
    let sel = db.closure(["ext4", "usb_storage"]).unwrap();
    let params = BTreeMap::from([("usb_storage".to_string(), "delay_use=1".to_string())]);
    let idx = db.to_index(&sel, &["ext4".into(), "unix".into()], &params);
    assert_eq!(idx.release, RELEASE);
    assert_eq!(idx.modules.len(), sel.len());
    assert!(!idx.modules.contains_key("ahci"));
    let ext4 = &idx.modules["ext4"];
    assert_eq!(ext4.path, "kernel/fs/ext4/ext4.ko");
    assert_eq!(ext4.softdep_pre, ["crc32c_generic", "crc32c_intel"]);
    assert_eq!(idx.modules["usb_storage"].params, "delay_use=1");
    assert_eq!(idx.boot, ["ext4"]);
    assert!(idx.builtin.contains("unix"));
    assert!(idx.aliases.contains(&("net-pf-1".into(), "unix".into())));
    assert!(!idx.aliases.iter().any(|(_, m)| m == "ahci"));

    let parsed = ModuleIndex::parse(&idx.to_text()).unwrap();
    assert_eq!(parsed, idx);
    assert_eq!(
        parsed.load_order("ext4"),
        ["crc32c_generic", "crc32c_intel", "jbd2", "mbcache", "ext4"]
    );
    assert_eq!(
        parsed.resolve("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"),
        ["usb_storage"]
    );
    assert!(parsed.is_builtin("net-pf-1"));
}
