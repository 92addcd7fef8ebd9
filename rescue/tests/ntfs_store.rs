//! NTFS drives as image stores on a host: `rescue mount` runs ntfs-3g (the host's, from PATH) on a loop
//! device over an `mkntfs` volume, a capture is written there and restored from it (mounted read-only),
//! `rescue umount` waits for ntfs-3g so the volume checks clean (`ntfsfix -n`), and a hibernated volume
//! is refused for writing with what to do, while read-only use still works. Needs root, loop devices
//! and FUSE (as CI and the development machines have).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::{rescue, s};

use std::path::{Path, PathBuf};
use std::process::Command;

use builder::checks::tool;
use builder::fixtures::{self, DiskSpec, Fs, Table};

const MIB: u64 = 1 << 20;

/// An NTFS volume made by mkntfs in a file, on a loop device; detached (and unmounted) when dropped.
struct NtfsDrive {
    dir: tempfile::TempDir,
    backing: PathBuf,
    dev: String,
    mnt: PathBuf,
}

impl NtfsDrive {
    fn new(size_mib: u64) -> NtfsDrive {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("ntfs.img");
        std::fs::File::create(&backing)
            .unwrap()
            .set_len(size_mib * MIB)
            .unwrap();
        let (ok, out) = tool(
            Command::new("mkntfs")
                .args(["-F", "-Q", "-q", "-L", "IMAGES"])
                .arg(&backing),
        );
        assert!(ok, "mkntfs failed:\n{out}");
        let dev = common::attach_loop(&backing);
        let mnt = dir.path().join("mnt");
        NtfsDrive {
            dir,
            backing,
            dev,
            mnt,
        }
    }

    fn mount(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec!["mount", &self.dev, s(&self.mnt)];
        args.extend_from_slice(extra);
        rescue(&args)
    }

    fn umount(&self) {
        let (rc, out) = rescue(&["umount", s(&self.mnt)]);
        assert_eq!(rc, 0, "rescue umount failed:\n{out}");
        // The ntfs-3g process was waited for: nothing serves the directory any more.
        assert!(
            !ntfs3g_running_for(&self.mnt),
            "ntfs-3g still runs after rescue umount"
        );
    }

    fn assert_clean(&self) {
        let (ok, out) = tool(Command::new("ntfsfix").arg("-n").arg(&self.dev));
        assert!(ok, "ntfsfix -n {} found problems:\n{out}", self.dev);
    }
}

impl Drop for NtfsDrive {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn ntfs3g_running_for(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
            let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
            args.iter().any(|a| a.ends_with(b"ntfs-3g"))
                && args.contains(&dir.as_os_str().as_encoded_bytes())
        })
    })
}

/// The mountinfo line of `dir`, if mounted.
fn mount_line(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(s(dir)))
        .map(str::to_string)
}

#[test]
fn an_ntfs_drive_takes_a_capture_and_gives_it_back() {
    let drive = NtfsDrive::new(96);
    let work = drive.dir.path();
    let source = work.join("source.img");
    let spec = DiskSpec {
        size_mib: 40,
        sector_size: 512,
        table: Table::Gpt,
        parts: vec![fixtures::part(32, Fs::Ext4, Some("data"))],
    };
    fixtures::create_disk(&source, &spec).unwrap();

    let (rc, out) = drive.mount(&[]);
    assert_eq!(rc, 0, "rescue mount failed:\n{out}");
    assert!(out.contains("ntfs-3g") && out.contains("IMAGES"), "{out}");
    let line = mount_line(&drive.mnt).expect("mounted");
    assert!(
        line.contains(" - fuseblk ") && line.contains(" rw,"),
        "{line}"
    );
    // Detection sees the FUSE mount on the loop device, so the drive is refused as a target.
    let (_, json) = rescue(&["disks", "--json", &drive.dev]);
    assert!(json.contains(s(&drive.mnt)), "not seen as mounted:\n{json}");
    let (rc, out) = rescue(&["clone", s(&source), &drive.dev, "--yes"]);
    assert_ne!(rc, 0, "clone onto the mounted NTFS drive succeeded:\n{out}");
    assert!(out.contains("mounted"), "{out}");

    let image = drive.mnt.join("backups/pc.rimg");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    let (rc, out) = rescue(&["capture", s(&source), "-o", s(&image)]);
    assert_eq!(rc, 0, "capture onto NTFS failed:\n{out}");
    drive.umount();
    drive.assert_clean();

    let (rc, out) = drive.mount(&["--read-only"]);
    assert_eq!(rc, 0, "read-only mount failed:\n{out}");
    assert!(mount_line(&drive.mnt).unwrap().contains(" ro,"));
    let (rc, out) = rescue(&["verify", s(&image)]);
    assert_eq!(rc, 0, "verify from NTFS failed:\n{out}");
    let target = work.join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(40 * MIB)
        .unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&target), "--yes"]);
    assert_eq!(rc, 0, "restore from NTFS failed:\n{out}");
    assert!(out.contains("verified"), "{out}");
    drive.umount();
    drive.assert_clean();
    assert!(drive.backing.exists());
}

#[test]
fn a_hibernated_ntfs_is_refused_for_writing_and_still_read() {
    let drive = NtfsDrive::new(32);
    let (rc, out) = drive.mount(&[]);
    assert_eq!(rc, 0, "rescue mount failed:\n{out}");
    std::fs::write(drive.mnt.join("kept.txt"), b"kept").unwrap();
    let source = drive.dir.path().join("small.img");
    std::fs::File::create(&source)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let (rc, out) = rescue(&["capture", s(&source), "-o", s(&drive.mnt.join("x.rimg"))]);
    assert_eq!(rc, 0, "{out}");
    // What Windows leaves when it hibernates or shuts down with Fast Startup: hiberfil.sys in the root,
    // starting with its signature. ntfs-3g looks at exactly this.
    let mut hiberfil = b"HIBR".to_vec();
    hiberfil.resize(64 * 1024, 0x5a);
    std::fs::write(drive.mnt.join("hiberfil.sys"), &hiberfil).unwrap();
    drive.umount();

    let (rc, out) = drive.mount(&[]);
    assert_ne!(rc, 0, "a hibernated NTFS was mounted for writing:\n{out}");
    assert!(
        out.contains(&drive.dev) && out.contains("Fast Startup"),
        "{out}"
    );
    assert!(
        out.contains("shutdown /s /f /t 0") && out.contains("--read-only"),
        "{out}"
    );
    assert!(mount_line(&drive.mnt).is_none(), "left mounted");

    let (rc, out) = drive.mount(&["--read-only"]);
    assert_eq!(rc, 0, "read-only mount failed:\n{out}");
    assert_eq!(std::fs::read(drive.mnt.join("kept.txt")).unwrap(), b"kept");
    assert!(std::fs::write(drive.mnt.join("new.txt"), b"x").is_err());
    drive.umount();
    // A job that only reads finds the store by label and mounts it read-only by itself.
    let (rc, out) = rescue(&[
        "job",
        "action=verify image.label=IMAGES image.path=x.rimg",
        "--disk",
        &drive.dev,
    ]);
    let store_dir = PathBuf::from(format!(
        "/run/rescue/mnt/{}",
        drive.dev.trim_start_matches("/dev/")
    ));
    let line = mount_line(&store_dir);
    let _ = rescue(&["umount", s(&store_dir)]);
    assert_eq!(rc, 0, "the verify job failed:\n{out}");
    assert!(line.is_some_and(|l| l.contains(" ro,")), "{out}");
    // Read-only use changed nothing: Windows still finds its hibernation file.
    let (rc, _) = drive.mount(&[]);
    assert_ne!(rc, 0);
}
