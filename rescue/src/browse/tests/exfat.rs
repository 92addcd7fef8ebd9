//! exFAT against mkfs.exfat and exfat-fuse (the kernel here has no exFAT driver; the FUSE one needs a
//! block device, so the image goes through a loop device: root, as other tests of the crate): the tree
//! copied in with its times, every other small file deleted and a large file written into the holes.
//! exfat-fuse writes contiguous files without a FAT chain and fragmented ones with one; both are read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::util::*;
use crate::fs::testutil::{run_status, sparse, tool};

/// exFAT keeps 10 ms; exfat-fuse writes whole seconds (the odd second in the 10 ms field, the
/// fraction dropped) with a UTC offset of 0, so whole seconds are what can be compared here. The
/// fraction and other offsets are decoded in `exfat::dir`'s and `time`'s unit tests.
const EXPECT: Expect = Expect {
    mtime_slack: Duration::from_secs(1),
    extra_root: &[],
};

/// A FUSE mount of an image through a loop device, undone when dropped.
pub(super) struct Mounted {
    pub dir: PathBuf,
    dev: String,
}

impl Mounted {
    pub fn new(img: &Path, mnt: &Path, program: &str, opts: &[&str]) -> Mounted {
        std::fs::create_dir_all(mnt).unwrap();
        let (code, dev) = run_status(tool("losetup").args(["-f", "--show"]).arg(img));
        assert_eq!(code, 0, "losetup (needs root): {dev}");
        let dev = dev.trim().to_owned();
        let m = Mounted {
            dir: mnt.to_path_buf(),
            dev,
        };
        let (code, out) = run_status(tool(program).args(opts).arg(&m.dev).arg(mnt));
        assert_eq!(code, 0, "{program} {}: {out}", m.dev);
        m
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = run_status(tool("umount").arg(&self.dir));
        let _ = run_status(tool("losetup").arg("-d").arg(&self.dev));
    }
}

/// Copies the tree's entries into the mounted `dst` with their times.
pub(super) fn copy_in(src: &Path, dst: &Path) {
    for e in std::fs::read_dir(src).unwrap() {
        sh(std::process::Command::new("cp")
            .args(["-r", "--no-dereference", "--preserve=timestamps"])
            .arg(e.unwrap().path())
            .arg(dst));
    }
}

#[test]
fn exfat_through_exfat_fuse() {
    let dir = tempfile::tempdir().unwrap();
    let o = Opts {
        symlinks: false,
        ..FULL
    };
    let src = tree(dir.path(), o);
    let img = sparse(dir.path(), "x.img", 96 << 20);
    sh(tool("mkfs.exfat").args(["-c", "4K"]).arg(&img));
    {
        let m = Mounted::new(&img, &dir.path().join("mnt"), "mount.exfat-fuse", &[]);
        copy_in(&src, &m.dir);
        let gone = drop_odd_frag(&src, o);
        for g in gone {
            std::fs::remove_file(m.dir.join(g)).unwrap();
        }
        let big = big_file(dir.path(), 3 << 20);
        sh(std::process::Command::new("cp")
            .arg("--preserve=timestamps")
            .arg(&big)
            .arg(m.dir.join("big.bin")));
        std::fs::copy(&big, src.join("big.bin")).unwrap();
        set_mtime(&src.join("big.bin"), stamp(999));
    }
    let (code, out) = run_status(tool("fsck.exfat").arg("-n").arg(&img));
    assert_eq!(code, 0, "{out}");

    let fs = open_image(&img);
    assert_eq!(fs.kind(), "exFAT");
    assert!(fs.notes().is_empty(), "{:?}", fs.notes());
    check_all(fs.as_ref(), &src, &EXPECT, dir.path());
    // A contiguous file (no FAT chain) and case-insensitive names through the up-case table.
    let f = fs.stat("/DOCS/File6.BIN").unwrap();
    assert_eq!(f.size, 65_543);
    assert_eq!(f.id.aux & 0x2, 0x2, "NoFatChain");
    assert_eq!(fs.stat("/über größe — ÜNÏCÖDÉ 名前.TXT").unwrap().size, 19);
}
