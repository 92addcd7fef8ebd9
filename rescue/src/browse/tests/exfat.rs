//! exFAT against mkfs.exfat and exfat-fuse (the kernel here has no exFAT driver; the FUSE one needs a
//! block device, so the image goes through a loop device: root, as other tests of the crate): the tree
//! copied in with its times, every other small file deleted and a large file written into the holes.
//! exfat-fuse writes contiguous files without a FAT chain and fragmented ones with one; both are read.

use std::time::Duration;

use super::util::*;
use crate::fs::testutil::{sparse, tool};

/// exFAT keeps 10 ms; exfat-fuse writes whole seconds (the odd second in the 10 ms field, the
/// fraction dropped) with a UTC offset of 0, so whole seconds are what can be compared here. The
/// fraction and other offsets are decoded in `exfat::dir`'s and `time`'s unit tests.
const EXPECT: Expect = Expect {
    mtime_slack: Duration::from_secs(1),
    extra_root: &[],
};

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
        put_big(dir.path(), &src, &m.dir, 3 << 20);
    }
    let fs = checked_open(&img, "fsck.exfat", "exFAT");
    check_all(fs.as_ref(), &src, &EXPECT, dir.path());
    // A contiguous file (no FAT chain) and case-insensitive names through the up-case table.
    let f = fs.stat("/DOCS/File6.BIN").unwrap();
    assert_eq!(f.size, 65_543);
    assert_eq!(f.id.aux & 0x2, 0x2, "NoFatChain");
    assert_eq!(fs.stat("/über größe — ÜNÏCÖDÉ 名前.TXT").unwrap().size, 19);
}
