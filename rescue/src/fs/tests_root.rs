//! Root directory listings ([`super::root_names`]) of volumes made by the real tools: empty ones list
//! nothing, and files, directories and long names added by mtools (FAT) or by the exFAT test writer
//! are found; deleted entries are not.

use std::fs::File;
use std::path::Path;

use super::tests_exfat::{add_file, geo, make};
use super::testutil::*;
use crate::detect::FsKind;

fn names(img: &Path, fs: FsKind, limit: usize) -> Vec<String> {
    let mut f = File::open(img).unwrap();
    let size = f.metadata().unwrap().len();
    super::root_names(&mut f, size, fs, limit).unwrap()
}

#[test]
fn exfat_empty_and_with_files() {
    let (_dir, img) = make(64 << 20, &["-L", "RESCUE-DATA"]);
    assert!(names(&img, FsKind::Exfat, 8).is_empty());
    let g = geo(&img);
    add_file(&img, &g, "EMPTY.TXT", &[], false);
    add_file(
        &img,
        &g,
        "A LONG FILE NAME OVER FIFTEEN UNITS.RIMG",
        &[7; 9000],
        true,
    );
    let found = names(&img, FsKind::Exfat, 8);
    assert_eq!(
        found,
        vec!["EMPTY.TXT", "A LONG FILE NAME OVER FIFTEEN UNITS.RIMG"]
    );
    assert_eq!(names(&img, FsKind::Exfat, 1), vec!["EMPTY.TXT"]);
}

fn mtools(img: &Path, cmd: &str, args: &[&str]) {
    run(tool(cmd).arg("-i").arg(img).args(args));
}

#[test]
fn fat_empty_and_with_files() {
    for (size, opts) in [
        (16u64 << 20, vec!["-F", "16"]),
        (64 << 20, vec!["-F", "32"]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let img = sparse(dir.path(), "fat.img", size);
        run(tool("mkfs.vfat")
            .args(&opts)
            .args(["-n", "RESCUE-DATA"])
            .arg(&img));
        assert!(names(&img, FsKind::Vfat, 8).is_empty(), "{opts:?}");
        let file = dir.path().join("x.bin");
        std::fs::write(&file, b"data").unwrap();
        mtools(&img, "mcopy", &[file.to_str().unwrap(), "::/gone.bin"]);
        mtools(&img, "mdel", &["::/gone.bin"]);
        assert!(names(&img, FsKind::Vfat, 8).is_empty(), "deleted: {opts:?}");
        mtools(&img, "mmd", &["::/System Volume Information"]);
        mtools(&img, "mcopy", &[file.to_str().unwrap(), "::/README.TXT"]);
        assert_eq!(
            names(&img, FsKind::Vfat, 8),
            vec!["System Volume Information", "README.TXT"],
            "{opts:?}"
        );
    }
}

#[test]
fn other_filesystems_are_not_listed() {
    let mut c = std::io::Cursor::new(vec![0u8; 4096]);
    assert!(super::root_names(&mut c, 4096, FsKind::Ext4, 8).is_err());
    assert!(super::root_names(&mut c, 4096, FsKind::Exfat, 8).is_err());
}
