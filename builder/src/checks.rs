//! Host-side checks of what the test suites produced, with independent tools (e2fsck, fsck.vfat, ntfsfix,
//! debugfs, mcopy, ntfscat). For tests: they panic, like assertions, with what is wrong.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use crate::fixtures::{self, Expected, Fs};

/// Run a host tool: whether it succeeded, and what it printed (stdout then stderr).
pub fn tool(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (install it: scripts/setup)"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Copy one partition of a disk image into its own file: streamed, and sparse where the partition reads as
/// zeros, so a large, mostly empty fixture costs neither its size in memory nor on the test machine's disk.
pub fn extract(disk: &Path, e: &Expected, out: &Path) {
    copy_sparse(disk, e.start_bytes, out, 0, e.size_bytes, true);
}

/// Copy `len` bytes from `from` at `from_at` into `to` at `to_at` in 1 MiB pieces. An all-zero piece is not
/// written where the destination already reads as zeros (`create`: a new file, all holes), so holes stay holes.
pub fn copy_sparse(from: &Path, from_at: u64, to: &Path, to_at: u64, len: u64, create: bool) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut src = std::fs::File::open(from).unwrap();
    src.seek(SeekFrom::Start(from_at)).unwrap();
    let mut dst = if create {
        std::fs::File::create(to).unwrap()
    } else {
        std::fs::OpenOptions::new().write(true).open(to).unwrap()
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut there = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n]).unwrap();
        let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
        let skip = zeros(&buf[..n])
            && (create || {
                let mut d = std::fs::File::open(to).unwrap();
                d.seek(SeekFrom::Start(to_at + done)).unwrap();
                d.read_exact(&mut there[..n]).is_ok() && zeros(&there[..n])
            });
        if !skip {
            dst.seek(SeekFrom::Start(to_at + done)).unwrap();
            dst.write_all(&buf[..n]).unwrap();
        }
        done += n as u64;
    }
    if create {
        dst.set_len(to_at + len).unwrap();
    }
}

/// The filesystem in `part` is clean and holds every sample file with the right bytes.
pub fn check_filesystem(fs: Fs, part: &Path, content: &Path, work: &Path) {
    let files = fixtures::files_under(content).unwrap();
    let dumped = work.join("dumped");
    match fs {
        Fs::Ext4 => {
            let (ok, out) = tool(Command::new("e2fsck").arg("-fn").arg(part));
            assert!(ok, "e2fsck -fn on {}:\n{out}", part.display());
            for f in &files {
                let rel = f.strip_prefix(content).unwrap();
                let _ = std::fs::remove_file(&dumped);
                tool(
                    Command::new("debugfs")
                        .arg("-R")
                        .arg(format!("dump /{} {}", rel.display(), dumped.display()))
                        .arg(part),
                );
                assert!(
                    std::fs::read(&dumped).ok() == std::fs::read(f).ok(),
                    "ext4 file {} differs from the source's",
                    rel.display()
                );
            }
        }
        Fs::Vfat => {
            let (ok, out) = tool(Command::new("fsck.vfat").arg("-n").arg(part));
            assert!(ok, "fsck.vfat -n on {}:\n{out}", part.display());
            for f in &files {
                let rel = f.strip_prefix(content).unwrap();
                let _ = std::fs::remove_file(&dumped);
                tool(
                    Command::new("mcopy")
                        .env("MTOOLS_SKIP_CHECK", "1")
                        .arg("-n")
                        .arg("-i")
                        .arg(part)
                        .arg(format!("::/{}", rel.display()))
                        .arg(&dumped),
                );
                assert!(
                    std::fs::read(&dumped).ok() == std::fs::read(f).ok(),
                    "vfat file {} differs from the source's",
                    rel.display()
                );
            }
        }
        Fs::Ntfs => {
            let (ok, out) = tool(Command::new("ntfsfix").arg("-n").arg(part));
            assert!(ok, "ntfsfix -n on {}:\n{out}", part.display());
            for f in &files {
                // The fixture flattens the tree into NTFS's root (ntfscp copies files only).
                let name = f
                    .strip_prefix(content)
                    .unwrap()
                    .to_string_lossy()
                    .replace('/', "_");
                let out = Command::new("ntfscat")
                    .arg(part)
                    .arg(format!("/{name}"))
                    .output()
                    .unwrap();
                assert!(
                    Some(out.stdout) == std::fs::read(f).ok(),
                    "ntfs file {name} differs from the source's"
                );
            }
        }
        // Swap holds no files; its identity (label, UUID) is compared with the partition table.
        Fs::Swap | Fs::Exfat | Fs::None => {}
    }
}

/// The partitions of `disk` as `sfdisk --dump` lists them, without the device's name (so that two disks'
/// tables compare equal when their partitions are the same).
pub fn partition_entries(disk: &Path) -> Vec<String> {
    let (ok, dump) = tool(Command::new("sfdisk").arg("--dump").arg(disk));
    assert!(ok, "sfdisk --dump {}:\n{dump}", disk.display());
    dump.lines()
        .filter(|l| l.contains(" : start="))
        .map(|l| l.split_once(" : ").unwrap().1.to_string())
        .collect()
}

/// `count` 512-byte sectors of `disk` from `lba`.
pub fn read_sectors(disk: &Path, lba: u64, count: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; (count * 512) as usize];
    std::fs::File::open(disk)
        .unwrap()
        .read_exact_at(&mut buf, lba * 512)
        .unwrap();
    buf
}

/// Where the EBRs of `disk`'s MBR chain lie (sector numbers, in chain order), read by following the links
/// from the extended partition in LBA 0; none without one.
pub fn ebr_sectors(disk: &Path) -> Vec<u64> {
    let le32 =
        |b: &[u8], at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()));
    let mbr = read_sectors(disk, 0, 1);
    let Some(ext) = (0..4)
        .map(|i| 446 + 16 * i)
        .find(|&e| matches!(mbr[e + 4], 0x05 | 0x0f | 0x85))
        .map(|e| le32(&mbr, e + 8))
    else {
        return Vec::new();
    };
    let mut out = vec![ext];
    loop {
        let ebr = read_sectors(disk, *out.last().unwrap(), 1);
        if !matches!(ebr[462 + 4], 0x05 | 0x0f) || out.len() > 128 {
            return out;
        }
        out.push(ext + le32(&ebr, 462 + 8));
    }
}
