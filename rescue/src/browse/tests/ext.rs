//! ext2/3/4 against mkfs.ext4 -d: every file of the tree listed, read and extracted as it was, on the
//! layouts that change how data is found (extents, indirect blocks, inline data, 1 KiB blocks, hash
//! tree folders, meta_bg, 64-bit descriptors, metadata checksums), with a large file written by
//! debugfs into fragmented free space.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::util::*;
use crate::fs::testutil::{run, tool};

/// mke2fs -d keeps whole seconds only; the file debugfs writes gets its nanoseconds, checked exactly.
const EXPECT: Expect = Expect {
    mtime_slack: Duration::from_secs(1),
    extra_root: &["lost+found"],
};

/// An ext filesystem of `size` made by `mkfs` with `args` from the tree, then fragmented: every other
/// small file removed and a 3 MiB file written into the holes by debugfs.
fn make(dir: &Path, mkfs: &str, args: &[&str], size: &str, o: Opts) -> (PathBuf, PathBuf) {
    let src = tree(dir, o);
    let img = dir.join("fs.img");
    run(tool(mkfs)
        .args(["-q", "-F"])
        .args(args)
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg(size));
    let gone = drop_odd_frag(&src, o);
    let big = big_file(dir, 3 << 20);
    let t = stamp(999).duration_since(std::time::UNIX_EPOCH).unwrap();
    let mut cmds: String = gone.iter().map(|g| format!("rm /{g}\n")).collect();
    cmds.push_str(&format!("write {} /big.bin\n", big.display()));
    cmds.push_str(&format!("sif /big.bin mtime @{}\n", t.as_secs()));
    cmds.push_str(&format!(
        "sif /big.bin mtime_extra {}\n",
        u64::from(t.subsec_nanos()) << 2
    ));
    let f = dir.join("cmds");
    std::fs::write(&f, cmds).unwrap();
    run(tool("debugfs").arg("-w").arg("-f").arg(&f).arg(&img));
    std::fs::copy(&big, src.join("big.bin")).unwrap();
    set_mtime(&src.join("big.bin"), stamp(999));
    run(tool("e2fsck").args(["-f", "-y", "-D"]).arg(&img));
    (img, src)
}

fn check(mkfs: &str, args: &[&str], size: &str, kind: &str, o: Opts) {
    let dir = tempfile::tempdir().unwrap();
    let (img, src) = make(dir.path(), mkfs, args, size, o);
    let fs = open_image(&img);
    assert_eq!(fs.kind(), kind);
    assert!(fs.notes().is_empty(), "{:?}", fs.notes());
    check_all(fs.as_ref(), &src, &EXPECT, dir.path());
    let e = fs.stat("/big.bin").unwrap();
    assert_eq!(e.size, 3 << 20);
    let t = stamp(999).duration_since(std::time::UNIX_EPOCH).unwrap();
    let m = e.modified.unwrap();
    assert_eq!((m.secs, m.nanos), (t.as_secs() as i64, t.subsec_nanos()));
}

#[test]
fn ext4_defaults_with_extents_checksums_and_64bit() {
    check(
        "mkfs.ext4",
        &["-O", "64bit,metadata_csum"],
        "64M",
        "ext4",
        FULL,
    );
}

#[test]
fn ext4_small_blocks_inline_data_and_hash_tree_folders() {
    check(
        "mkfs.ext4",
        &["-b", "1024", "-I", "256", "-O", "inline_data"],
        "64M",
        "ext4",
        // mke2fs -d with inline_data cuts a sparse file after its last data block.
        Opts {
            sparse: false,
            ..FULL
        },
    );
}

#[test]
fn ext4_meta_bg_without_resize_inode() {
    check(
        "mkfs.ext4",
        &["-b", "1024", "-O", "meta_bg,^resize_inode"],
        "64M",
        "ext4",
        FULL,
    );
}

#[test]
fn ext3_and_ext2_with_indirect_blocks() {
    check("mkfs.ext3", &["-b", "1024"], "64M", "ext3", FULL);
    check("mkfs.ext2", &["-b", "4096"], "64M", "ext2", FULL);
}
