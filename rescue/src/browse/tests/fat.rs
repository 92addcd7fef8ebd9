//! FAT12/16/32 against mkfs.vfat and mtools: the tree copied in by mcopy (long and non-ASCII names,
//! times kept), every other small file deleted by mdel and a large file written into the holes, then
//! listed, read and extracted as it was.

use std::path::Path;
use std::time::Duration;

use super::util::*;
use crate::fs::testutil::tool;

/// FAT keeps modification times in 2 s steps.
const EXPECT: Expect = Expect {
    mtime_slack: Duration::from_secs(2),
    extra_root: &[],
};

fn mtools(name: &str, img: &Path) -> std::process::Command {
    let mut c = utf8(tool(name));
    c.arg("-i").arg(img);
    c
}

fn check(mkfs_args: &[&str], size: u64, kind: &str, o: Opts, big: usize) {
    let dir = tempfile::tempdir().unwrap();
    let src = tree(dir.path(), o);
    let img = crate::fs::testutil::sparse(dir.path(), "fat.img", size);
    sh(tool("mkfs.vfat").args(mkfs_args).arg(&img));
    let mut c = mtools("mcopy", &img);
    c.args(["-s", "-m"]);
    for e in std::fs::read_dir(&src).unwrap() {
        c.arg(e.unwrap().path());
    }
    sh(c.arg("::"));
    let gone = drop_odd_frag(&src, o);
    let mut c = mtools("mdel", &img);
    for g in &gone {
        c.arg(format!("::/{g}"));
    }
    sh(&mut c);
    if kind == "FAT32" {
        // mtools allocates after FSInfo's next-free hint; with no hint it fills the holes.
        let b = crate::fs::testutil::read_at(&img, 0, 512);
        let fsinfo = u64::from(u16::from_le_bytes([b[48], b[49]])) * 512;
        crate::fs::testutil::patch(&img, fsinfo + 492, &[0xFF; 4]);
    }
    let big = big_file(dir.path(), big);
    sh(mtools("mcopy", &img).arg("-m").arg(&big).arg("::/big.bin"));
    std::fs::copy(&big, src.join("big.bin")).unwrap();
    set_mtime(&src.join("big.bin"), stamp(999));
    sh(tool("fsck.vfat").arg("-n").arg(&img));

    let fs = open_image(&img);
    assert_eq!(fs.kind(), kind);
    check_all(fs.as_ref(), &src, &EXPECT, dir.path());
    // Names are found whatever their case, as FAT does.
    assert_eq!(fs.stat("/DOCS/NOTES/todo.TXT").unwrap().size, 19);
    assert_eq!(fs.stat("/über größe — ÜNÏCÖDÉ 名前.TXT").unwrap().size, 19);
}

const NO_LINKS: Opts = Opts {
    symlinks: false,
    ..FULL
};

#[test]
fn fat12() {
    check(
        &["-F", "12", "-s", "8"],
        12 << 20,
        "FAT12",
        Opts {
            sparse: false,
            many: 60,
            ..NO_LINKS
        },
        1 << 20,
    );
}

#[test]
fn fat16() {
    check(&["-F", "16"], 48 << 20, "FAT16", NO_LINKS, 3 << 20);
}

#[test]
fn fat32() {
    check(
        &["-F", "32", "-s", "1"],
        80 << 20,
        "FAT32",
        NO_LINKS,
        3 << 20,
    );
}
