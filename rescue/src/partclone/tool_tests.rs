//! Streams written by the real partclone (Debian 12: 0.3.23; scripts/setup installs it): small filesystems
//! made in files by their mkfs over a non-zero pattern, cloned with every checksum option partclone offers,
//! read back block for block against the source and against `partclone.restore`'s output, and damaged.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::tests::rebuild;
use super::*;

const FS_BYTES: u64 = 8 << 20;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (scripts/setup installs partclone and the mkfs tools)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A file of `FS_BYTES` filled with a pattern (so that unused blocks are not zeros), formatted as `fs`
/// with some files in it where the tools allow.
fn filesystem(dir: &Path, fs: &str) -> PathBuf {
    let path = dir.join(format!("{fs}.fs"));
    let pattern: Vec<u8> = (0..FS_BYTES).map(|i| (i % 251) as u8 | 0x80).collect();
    std::fs::write(&path, pattern).unwrap();
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    for (n, len) in [(1u32, 5000usize), (2, 70_000), (3, 300_000), (4, 1)] {
        let mut x = n.wrapping_mul(2_654_435_761);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        std::fs::write(files.join(format!("f{n}.bin")), bytes).unwrap();
    }
    let p = path.to_str().unwrap();
    match fs {
        "ext4" => {
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-b", "1024", "-E", "nodiscard", "-d"])
                .arg(&files)
                .arg(p));
        }
        "vfat" => {
            run(Command::new("mkfs.vfat").args(["-F", "16", "-s", "1", p]));
            for n in 1..=4 {
                run(Command::new("mcopy")
                    .args(["-i", p])
                    .arg(files.join(format!("f{n}.bin")))
                    .arg("::"));
            }
        }
        "ntfs" => {
            run(Command::new("mkntfs").args(["-q", "-F", "-f", p]));
        }
        "exfat" => {
            run(Command::new("mkfs.exfat").arg(p));
        }
        _ => unreachable!(),
    }
    path
}

/// `partclone.<fs> -c` of `source` into `image` with `opts`.
fn clone(fs: &str, source: &Path, image: &Path, opts: &[&str]) -> Vec<u8> {
    let log = image.with_extension("log");
    run(Command::new(format!("partclone.{fs}"))
        .args(["-c", "-q", "-s"])
        .arg(source)
        .arg("-O")
        .arg(image)
        .arg("-L")
        .arg(&log)
        .args(opts));
    std::fs::read(image).unwrap()
}

/// What `partclone.restore` makes of `image` in a new file.
fn restore(image: &Path) -> Vec<u8> {
    let out = image.with_extension("restored");
    let _ = std::fs::remove_file(&out);
    run(Command::new("partclone.restore")
        .args(["-q", "-W", "-s"])
        .arg(image)
        .arg("-o")
        .arg(&out)
        .arg("-L")
        .arg(image.with_extension("rlog")));
    std::fs::read(out).unwrap()
}

/// Our filesystem from `stream` is partclone's restore of it (which may run on to the device's size, in
/// zeros), and holds the source's bytes in every used block and zeros in the others.
fn check_against(stream: &[u8], source: &[u8], restored: &[u8], what: &str) -> Header {
    let (h, ours) = rebuild(stream, what).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        &restored[..ours.len()],
        &ours[..],
        "{what}: not partclone's restore"
    );
    assert!(restored[ours.len()..].iter().all(|&b| b == 0), "{what}");
    let mut s = Stream::open(stream, what).unwrap();
    let bs = h.block_size as usize;
    let mut used = 0u64;
    for n in 0..h.total_blocks {
        let at = n as usize * bs;
        if s.is_used(n) {
            used += 1;
            assert_eq!(ours[at..at + bs], source[at..at + bs], "{what}: block {n}");
        } else {
            assert!(
                ours[at..at + bs].iter().all(|&b| b == 0),
                "{what}: block {n}"
            );
        }
    }
    if h.version == Version::V2 {
        assert_eq!(Some(used), h.used_bitmap, "{what}");
    }
    assert!(
        used < h.total_blocks && used > 0,
        "{what}: {used} of {}",
        h.total_blocks
    );
    while s.next_run().unwrap().is_some() {}
    assert_eq!(
        s.offset(),
        stream.len() as u64,
        "{what}: the stream ends at its last checksum"
    );
    h
}

#[test]
fn ext4_streams_of_every_checksum_option_read_as_partclone_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let src = filesystem(dir.path(), "ext4");
    let source = std::fs::read(&src).unwrap();
    let img = dir.path().join("ext4.pc");

    // The defaults: CRC32 (code 0x20), one checksum per 1 MiB of blocks, reseeded.
    let stream = clone("ext4", &src, &img, &[]);
    let restored = restore(&img);
    let h = check_against(&stream, &source, &restored, "default");
    assert_eq!(h.version, Version::V2);
    assert_eq!(h.partclone_version, "0.3.23");
    assert_eq!(h.fs, "EXTFS");
    assert_eq!((h.block_size, h.total_blocks), (1024, FS_BYTES / 1024));
    assert_eq!(h.device_size, FS_BYTES);
    assert_eq!(h.checksum, ChecksumMode::Crc32);
    assert_eq!((h.blocks_per_checksum, h.reseed), ((1 << 20) / 1024, true));
    assert_eq!(h.bitmap, BitmapMode::Bit);
    assert_eq!(stream[96..98], [0x20, 0]);

    for (opts, checksum, bpc, reseed) in [
        (&["-a", "0"][..], ChecksumMode::None, 0, true),
        (&["-a", "1", "-k", "1"][..], ChecksumMode::Crc32, 1, true),
        (
            &["-a", "1", "-k", "7", "-K"][..],
            ChecksumMode::Crc32,
            7,
            false,
        ),
        (
            &["-a", "1", "-k", "100"][..],
            ChecksumMode::Crc32,
            100,
            true,
        ),
        (
            &["-k", "100000", "-K"][..],
            ChecksumMode::Crc32,
            100_000,
            false,
        ),
    ] {
        let what = format!("ext4 {opts:?}");
        let stream = clone("ext4", &src, &img, opts);
        let h = check_against(&stream, &source, &restored, &what);
        assert_eq!(
            (h.checksum, h.blocks_per_checksum, h.reseed),
            (checksum, bpc, reseed),
            "{what}"
        );
        let r = verify(&stream[..], &what).unwrap();
        if bpc > 0 {
            assert_eq!(
                r.checksums,
                r.used_blocks.div_ceil(u64::from(bpc)),
                "{what}"
            );
        }
        // partclone's own check of the image agrees.
        run(Command::new("partclone.chkimg")
            .args(["-q", "-s"])
            .arg(&img)
            .arg("-L")
            .arg(dir.path().join("chk.log")));
    }
}

/// The partclone programs for ext4 and for restores: Debian's on the PATH, or those of another build in
/// the folder `PARTCLONE_BIN_DIR` names (a partclone built with libxxhash writes XXH64 and XXH128).
fn programs() -> (PathBuf, PathBuf) {
    match std::env::var_os("PARTCLONE_BIN_DIR") {
        Some(d) => (
            Path::new(&d).join("partclone.extfs"),
            Path::new(&d).join("partclone.restore"),
        ),
        None => ("partclone.ext4".into(), "partclone.restore".into()),
    }
}

#[test]
#[ignore = "Debian's partclone 0.3.23 writes no XXH64/XXH128: run with PARTCLONE_BIN_DIR naming a partclone \
            0.3.46+ built with libxxhash (docs/CLONEZILLA.md)"]
fn newer_checksum_modes_are_read_where_this_partclone_writes_them() {
    // 0.3.23 knows -a 0 and -a 1 only (-a 2 prints its usage and writes nothing); 0.3.39 and later, built
    // with libxxhash, write XXH64 (-a 2), and 0.3.46 and later XXH128 (-a 3). Whichever partclone runs, an
    // image it writes reads back as its own restore makes it.
    let (extfs, restore_program) = programs();
    let dir = tempfile::tempdir().unwrap();
    let src = filesystem(dir.path(), "ext4");
    let source = std::fs::read(&src).unwrap();
    for (opts, want) in [
        (&["-a", "2"][..], ChecksumMode::Xxh64),
        (&["-a", "2", "-k", "7", "-K"][..], ChecksumMode::Xxh64),
        (&["-a", "3"][..], ChecksumMode::Xxh128),
        (&["-a", "3", "-k", "5"][..], ChecksumMode::Xxh128),
    ] {
        let img = dir.path().join("xxh.pc");
        let _ = std::fs::remove_file(&img);
        let _ = Command::new(&extfs)
            .args(["-c", "-q", "-s"])
            .arg(&src)
            .arg("-O")
            .arg(&img)
            .arg("-L")
            .arg(dir.path().join("x.log"))
            .args(opts)
            .output()
            .unwrap();
        let Ok(stream) = std::fs::read(&img) else {
            continue;
        };
        let out = dir.path().join("xxh.restored");
        let _ = std::fs::remove_file(&out);
        run(Command::new(&restore_program)
            .args(["-q", "-W", "-s"])
            .arg(&img)
            .arg("-o")
            .arg(&out)
            .arg("-L")
            .arg(dir.path().join("r.log")));
        let what = format!("{} {opts:?}", extfs.display());
        let h = check_against(&stream, &source, &std::fs::read(&out).unwrap(), &what);
        assert_eq!(h.checksum, want, "{what}");
        // A damaged data byte is found, in the group that holds it.
        let mut bad = stream.clone();
        let k = 50;
        bad[block_at(&h, k) + 10] ^= 0x01;
        let e = verify(&bad[..], &what).unwrap_err();
        assert_eq!(e.kind, Kind::Checksum, "{e}");
        let bpc = u64::from(h.blocks_per_checksum);
        let s = Stream::open(&stream[..], "x").unwrap();
        let used: Vec<u64> = (0..h.total_blocks).filter(|&n| s.is_used(n)).collect();
        assert_eq!(
            e.blocks.unwrap().start(),
            &used[(k / bpc * bpc) as usize],
            "{what}"
        );
    }
}

#[test]
fn fat_ntfs_and_exfat_streams_read_as_partclone_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    for (fs, name, block_size) in [
        ("vfat", "FAT16", 512),
        ("ntfs", "NTFS", 4096),
        ("exfat", "EXFAT", 512),
    ] {
        let src = filesystem(dir.path(), fs);
        let source = std::fs::read(&src).unwrap();
        let img = dir.path().join(format!("{fs}.pc"));
        let stream = clone(fs, &src, &img, &[]);
        let h = check_against(&stream, &source, &restore(&img), fs);
        assert_eq!((h.fs.as_str(), h.block_size), (name, block_size), "{fs}");
        assert_eq!(h.blocks_per_checksum, (1 << 20) / block_size, "{fs}");
    }
}

/// Where used block `k` (from 0) of a version 0002 stream with checksums starts.
fn block_at(h: &Header, k: u64) -> usize {
    let bitmap = h.total_blocks.div_ceil(8) + 4;
    let sums = k / u64::from(h.blocks_per_checksum);
    (110 + bitmap + k * u64::from(h.block_size) + sums * h.checksum.size() as u64) as usize
}

#[test]
fn damaged_partclone_streams_are_named_at_the_right_offset_and_block() {
    let dir = tempfile::tempdir().unwrap();
    let src = filesystem(dir.path(), "ext4");
    let img = dir.path().join("ext4.pc");
    for opts in [&["-a", "1", "-k", "1"][..], &[][..], &["-k", "5", "-K"][..]] {
        let stream = clone("ext4", &src, &img, opts);
        let s = Stream::open(&stream[..], "x").unwrap();
        let h = s.header().clone();
        let used: Vec<u64> = (0..h.total_blocks).filter(|&n| s.is_used(n)).collect();
        let bpc = u64::from(h.blocks_per_checksum);

        // A byte of data block number k: its group is named, at that group's checksum.
        for k in [0u64, 37, used.len() as u64 / 2, used.len() as u64 - 1] {
            let mut bad = stream.clone();
            bad[block_at(&h, k) + 333] ^= 0x04;
            let e = verify(&bad[..], "sda1.ext4-ptcl-img").unwrap_err();
            let first = k / bpc * bpc;
            let last = (first + bpc - 1).min(used.len() as u64 - 1);
            assert_eq!(e.kind, Kind::Checksum, "{opts:?} {e}");
            assert_eq!(
                e.blocks,
                Some(used[first as usize]..=used[last as usize]),
                "{opts:?} {e}"
            );
            let sum_at = block_at(&h, last) + h.block_size as usize;
            assert_eq!(e.offset, sum_at as u64, "{opts:?} {e}");
            if bpc == 1 {
                assert_eq!(e.blocks, Some(used[k as usize]..=used[k as usize]));
                assert!(e.to_string().starts_with(&format!(
                    "sda1.ext4-ptcl-img: byte {sum_at}, block {}: ",
                    used[k as usize]
                )));
            }
        }
        // The bitmap, at its CRC.
        let mut bad = stream.clone();
        bad[110 + 100] ^= 0x01;
        let e = verify(&bad[..], "b").unwrap_err();
        let crc_at = 110 + h.total_blocks.div_ceil(8);
        assert_eq!((e.kind, e.offset), (Kind::Checksum, crc_at), "{e}");
        // The header, at its CRC.
        let mut bad = stream.clone();
        bad[70] ^= 0x01;
        let e = verify(&bad[..], "h").unwrap_err();
        assert_eq!((e.kind, e.offset), (Kind::Checksum, 106), "{e}");
        // Cut inside a block: that block, at the cut.
        let k = used.len() as u64 / 3;
        let cut = block_at(&h, k) + 1000;
        let e = verify(&stream[..cut], "c").unwrap_err();
        assert_eq!(e.kind, Kind::Truncated);
        assert_eq!(
            (e.offset, e.blocks.clone()),
            (cut as u64, Some(used[k as usize]..=used[k as usize])),
            "{e}"
        );
        // Cut before the last checksum: the last group is named.
        let e = verify(&stream[..stream.len() - 2], "c").unwrap_err();
        assert_eq!(e.kind, Kind::Truncated);
        assert_eq!(
            e.blocks.as_ref().map(|b| *b.end()),
            used.last().copied(),
            "{e}"
        );
    }
}

#[test]
#[ignore = "needs PARTCLONE_V1_EXTFS naming a partclone 0.2.48 build, the last to write version 0001 \
            (docs/CLONEZILLA.md)"]
fn version_0001_streams_of_an_old_partclone_read_as_partclone_restores_them() {
    // partclone 0.3 cannot write version 0001; partclone 0.2.48 (git tag `debian/0.2.48`, its
    // main.c/partclone.c/progress.c/extfsclone.c built with -DEXTFS) does. `PARTCLONE_V1_EXTFS` names such a
    // partclone.extfs; without it this test has nothing to run.
    let Some(old) = std::env::var_os("PARTCLONE_V1_EXTFS") else {
        eprintln!("PARTCLONE_V1_EXTFS is not set: no version 0001 writer to test with");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = filesystem(dir.path(), "ext4");
    let source = std::fs::read(&src).unwrap();
    let img = dir.path().join("v1.pc");
    run(Command::new(&old)
        .args(["-c", "-s"])
        .arg(&src)
        .arg("-o")
        .arg(&img)
        .arg("-L")
        .arg(dir.path().join("v1.log")));
    let stream = std::fs::read(&img).unwrap();
    // Debian's 0.3.23 restores version 0001 too: the oracle.
    let h = check_against(&stream, &source, &restore(&img), "version 0001");
    assert_eq!(h.version, Version::V1);
    assert_eq!((h.fs.as_str(), h.block_size), ("EXTFS", 1024));
    assert_eq!(h.checksum, ChecksumMode::Crc32V1);
    let r = verify(&stream[..], "v1").unwrap();
    assert_eq!(r.checksums, r.used_blocks);
    // The first byte of a block is checked; its CRC follows it.
    let s = Stream::open(&stream[..], "x").unwrap();
    let used: Vec<u64> = (0..h.total_blocks).filter(|&n| s.is_used(n)).collect();
    let k = used.len() / 2;
    let at = 4160 + h.total_blocks as usize + 8 + k * (1024 + 4);
    let mut bad = stream.clone();
    bad[at] ^= 0x01;
    let e = verify(&bad[..], "v1").unwrap_err();
    assert_eq!(e.kind, Kind::Checksum, "{e}");
    assert_eq!(
        (e.offset, e.blocks),
        ((at + 1024) as u64, Some(used[k]..=used[k]))
    );
}
