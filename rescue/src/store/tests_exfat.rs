//! The exFAT formatter against independent readers: `fsck.exfat -n` and `blkid -p` (exfatprogs and
//! util-linux), mkfs.exfat's choice of cluster size, and our own detection, used-block map and root
//! listing. A property test formats many sizes into a sparse in-memory disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::exfat::{self, ExfatError, ExfatSpec};
use crate::detect::{detect_image, DetectOptions, FsKind};
use crate::fs::testutil::{run, run_status, sparse, tool};

const MIB: u64 = 1 << 20;

fn spec(size: u64, sector_size: u32) -> ExfatSpec {
    ExfatSpec {
        size,
        sector_size,
        label: "RESCUE-DATA".into(),
        serial: 0x1234_ABCD,
        partition_offset: 0,
    }
}

fn format_file(dir: &Path, size: u64, sector: u32) -> PathBuf {
    let p = sparse(dir, &format!("x{size}-{sector}.img"), size);
    let mut f = File::options().read(true).write(true).open(&p).unwrap();
    exfat::format(&mut f, &spec(size, sector)).unwrap();
    p
}

/// fsck.exfat -n on the file; with 4096-byte sectors through a 4Kn loop device (exfatprogs takes
/// the sector size from the device).
fn fsck(img: &Path, sector: u32) {
    if sector == 512 {
        let out = run(tool("fsck.exfat").arg("-n").arg(img));
        assert!(out.contains("clean"), "fsck.exfat:\n{out}");
        return;
    }
    let (code, dev) = run_status(
        tool("losetup")
            .args(["-f", "--show", "-b"])
            .arg(sector.to_string())
            .arg(img),
    );
    assert_eq!(code, 0, "losetup (needs root): {dev}");
    let dev = dev.trim().to_string();
    let (code, out) = run_status(tool("fsck.exfat").arg("-n").arg(&dev));
    let _ = run_status(tool("losetup").arg("-d").arg(&dev));
    assert_eq!(code, 0, "fsck.exfat on {dev}:\n{out}");
    assert!(out.contains("clean"), "fsck.exfat:\n{out}");
}

fn blkid(img: &Path) -> String {
    run(tool("blkid").args(["-p", "-o", "export"]).arg(img))
}

/// mkfs.exfat's cluster size (bytes) for a volume of `size` bytes.
fn mkfs_cluster(dir: &Path, size: u64) -> u64 {
    let p = sparse(dir, "mkfs.img", size);
    run(tool("mkfs.exfat").arg(&p));
    let mut b = [0u8; 512];
    File::open(&p).unwrap().read_exact(&mut b).unwrap();
    std::fs::remove_file(&p).unwrap();
    1u64 << (b[108] + b[109])
}

#[test]
fn formatted_volumes_check_clean_and_are_recognised() {
    let dir = tempfile::tempdir().unwrap();
    for (size, sector) in [
        (8 * MIB, 512),
        (100 * MIB, 512),
        (100 * MIB, 4096),
        (2 << 30, 512),
        (300 * MIB + 3 * 512, 512),
    ] {
        let img = format_file(dir.path(), size, sector);
        fsck(&img, sector);
        let ids = blkid(&img);
        assert!(ids.contains("TYPE=exfat"), "{ids}");
        assert!(ids.contains("LABEL=RESCUE-DATA"), "{ids}");
        assert!(ids.contains("UUID=1234-ABCD"), "{ids}");

        let mut f = File::open(&img).unwrap();
        let disk = detect_image(&mut f, size, "x.img", &DetectOptions::default());
        assert_eq!(disk.fs, Some(FsKind::Exfat), "{:?}", disk.problems);
        assert_eq!(disk.fs_label.as_deref(), Some("RESCUE-DATA"));
        let map = crate::fs::used_map(&mut f, size, FsKind::Exfat).unwrap();
        assert!(map.notes.is_empty(), "{:?}", map.notes);
        assert!(map.used_bytes < 8 * MIB + size / 1000, "{}", map.used_bytes);
        assert!(crate::fs::root_names(&mut f, size, FsKind::Exfat, 8)
            .unwrap()
            .is_empty());

        let l = exfat::layout(&spec(size, sector)).unwrap();
        if sector == 512 {
            assert_eq!(l.cluster_bytes, mkfs_cluster(dir.path(), size), "{size}");
            // exfatprogs counts free clusters from the bitmap: all but the bitmap, up-case table and
            // root directory.
            let dump = run(tool("dump.exfat").arg(&img));
            let free = l.cluster_count - (l.root_cluster - 2) - 1;
            let line = dump
                .lines()
                .find(|x| x.starts_with("Free Clusters:"))
                .unwrap();
            assert_eq!(
                line.split_whitespace().last(),
                Some(free.to_string().as_str()),
                "{dump}"
            );
        }
        std::fs::remove_file(&img).unwrap();
    }
}

#[test]
fn old_contents_are_overwritten() {
    // A region full of garbage (and an old exFAT with a file in it) formats to a clean, empty volume.
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("dirty.img");
    let size = 40 * MIB;
    std::fs::write(&img, vec![0xA5u8; size as usize]).unwrap();
    let mut f = File::options().read(true).write(true).open(&img).unwrap();
    exfat::format(&mut f, &spec(size, 512)).unwrap();
    fsck(&img, 512);
    assert!(crate::fs::root_names(&mut f, size, FsKind::Exfat, 8)
        .unwrap()
        .is_empty());
}

#[test]
fn impossible_volumes_are_refused() {
    let mut sink = io::Cursor::new(Vec::new());
    for size in [0, 4096, MIB - 512] {
        let e = exfat::format(&mut sink, &spec(size, 512)).unwrap_err();
        assert!(matches!(e, ExfatError::TooSmall { .. }), "{e}");
        assert!(e.to_string().contains("too small"), "{e}");
    }
    assert!(matches!(
        exfat::layout(&spec(MIB, 4096)),
        Ok(_) | Err(ExfatError::TooSmall { .. })
    ));
    let e = exfat::layout(&spec(64 * MIB, 520)).unwrap_err();
    assert!(e.to_string().contains("520-byte sectors"), "{e}");
    let mut s = spec(64 * MIB, 512);
    s.label = "MUCH TOO LONG A LABEL".into();
    assert!(matches!(exfat::layout(&s), Err(ExfatError::Label(_))));
    let e = exfat::layout(&spec(exfat::MAX_SIZE + 1, 512)).unwrap_err();
    assert!(matches!(e, ExfatError::TooLarge { .. }), "{e}");
    assert!(sink.get_ref().is_empty(), "nothing is written when refused");
}

/// A disk in memory that only stores the 4 KiB blocks holding something other than zeros, so
/// formatting a many-GiB volume costs a few MiB.
#[derive(Default)]
struct SparseDisk {
    blocks: BTreeMap<u64, Vec<u8>>,
    pos: u64,
}

const BLOCK: u64 = 4096;

impl Write for SparseDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let at = self.pos + done as u64;
            let (b, off) = (at / BLOCK, (at % BLOCK) as usize);
            let n = (BLOCK as usize - off).min(buf.len() - done);
            let part = &buf[done..done + n];
            if let Some(block) = self.blocks.get_mut(&b) {
                block[off..off + n].copy_from_slice(part);
            } else if part.iter().any(|&x| x != 0) {
                let mut block = vec![0u8; BLOCK as usize];
                block[off..off + n].copy_from_slice(part);
                self.blocks.insert(b, block);
            }
            done += n;
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for SparseDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (b, off) = (self.pos / BLOCK, (self.pos % BLOCK) as usize);
        let n = (BLOCK as usize - off).min(buf.len());
        match self.blocks.get(&b) {
            Some(block) => buf[..n].copy_from_slice(&block[off..off + n]),
            None => buf[..n].fill(0),
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SparseDisk {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            _ => unimplemented!("the formatter and the readers seek from the start"),
        };
        Ok(self.pos)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any size up to 64 GiB either formats into a volume our readers accept, or is refused as too
    /// small; never a panic.
    #[test]
    fn any_size_formats_or_is_refused(size in 0u64..(64u64 << 30), big in any::<bool>(), serial in any::<u32>()) {
        let sector = if big { 4096 } else { 512 };
        let mut disk = SparseDisk::default();
        let mut s = spec(size, sector);
        s.serial = serial;
        match exfat::format(&mut disk, &s) {
            Err(ExfatError::TooSmall { .. }) => prop_assert!(size < 2 * MIB),
            Err(e) => prop_assert!(false, "{e}"),
            Ok(l) => {
                prop_assert!(l.cluster_count >= 2);
                prop_assert!((l.heap_offset + l.cluster_count * (l.cluster_bytes / l.bytes_per_sector)) * l.bytes_per_sector <= size);
                let d = detect_image(&mut disk, size, "mem", &DetectOptions::default());
                prop_assert_eq!(d.fs, Some(FsKind::Exfat));
                prop_assert_eq!(d.fs_label.as_deref(), Some("RESCUE-DATA"));
                let map = crate::fs::used_map(&mut disk, size, FsKind::Exfat);
                prop_assert!(map.is_ok(), "{:?}", map.err());
                let names = crate::fs::root_names(&mut disk, size, FsKind::Exfat, 8);
                prop_assert_eq!(names.ok(), Some(Vec::new()));
            }
        }
    }
}

/// fsck.exfat really looks at what the formatter wrote: a wrong up-case table checksum or boot region
/// checksum is reported. (It does not check the allocation bitmap; `dump.exfat`'s free count does, in
/// the test above.)
#[test]
fn fsck_notices_damage() {
    let dir = tempfile::tempdir().unwrap();
    let size = 8 * MIB;
    let l = exfat::layout(&spec(size, 512)).unwrap();
    let root = l.heap_offset * 512 + (l.root_cluster - 2) * l.cluster_bytes;
    for (at, byte) in [(root + 64 + 4, 0x5Au8), (11 * 512 + 1, 0x5A)] {
        let img = format_file(dir.path(), size, 512);
        crate::fs::testutil::patch(&img, at, &[byte]);
        let (code, out) = run_status(tool("fsck.exfat").arg("-n").arg(&img));
        assert_ne!(code, 0, "damage at {at} went unnoticed:\n{out}");
        std::fs::remove_file(&img).unwrap();
    }
}
