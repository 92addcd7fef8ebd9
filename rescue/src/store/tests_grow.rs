//! Growing a stick image made by `boot::write_stick` (the builder's own code, with stand-in boot files
//! and a BIOS boot partition added by sgdisk where GRUB's would be), written onto a larger "stick": a
//! sparse file extended to 1 GiB and detected as the boot medium by its disk GUID. Checked with
//! `sgdisk -v`, `fsck.exfat -n` and `blkid -p`, and byte for byte where nothing may change.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use boot::{DataFs, StickSpec};

use super::grow::{data_contents, grow, GrowError};
use crate::detect::{detect_paths, DetectOptions, Disk, FsKind};
use crate::fs::testutil::{patch, read_at, run, sparse, tool};
use crate::plan::grow::{plan_grow, DataContents, GrowPlan, GrowRefusal};

const MIB: u64 = 1 << 20;
const STICK: u64 = 1 << 30;

pub(crate) struct Stick {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub opts: DetectOptions,
}

/// The image as `builder image` would write it with `data_fs`, on a 1 GiB stick.
pub(crate) fn stick(data_fs: DataFs) -> Stick {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stick.img");
    let spec = StickSpec {
        shim: vec![1; 4000],
        grub: vec![2; 4000],
        vmlinuz: vec![3; 300_000],
        initrd: vec![4; 300_000],
        bios: None,
        data_fs,
        extra_args: String::new(),
        size: boot::DEFAULT_SIZE,
        serial_default: false,
        epoch: 1,
    };
    let info = boot::write_stick(&path, &spec).unwrap();
    run(tool("sgdisk")
        .args(["-a", "8", "-n", "3:40:2047", "-t", "3:EF02"])
        .arg(&path));
    patch(&path, 40 * 512, &vec![0x5A; (2048 - 40) * 512]);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(STICK)
        .unwrap();
    let opts = DetectOptions {
        boot_disk_guid: Some(info.disk_guid.to_string()),
        ..DetectOptions::default()
    };
    Stick {
        _dir: dir,
        path,
        opts,
    }
}

impl Stick {
    fn detect(&self) -> Disk {
        detect_paths(std::slice::from_ref(&self.path), &self.opts)
            .disks
            .remove(0)
    }

    pub(crate) fn plan(&self) -> Result<GrowPlan, GrowRefusal> {
        let disk = self.detect();
        plan_grow(&disk, &data_contents(&disk))
    }

    /// Hash of the boot code in LBA 0 and of everything between the primary GPT and the data
    /// partition (BIOS boot partition, ESP): what growing must never change.
    fn boot_hash(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update(&read_at(&self.path, 0, 446));
        h.update(&read_at(
            &self.path,
            34 * 512,
            (37 * MIB - 34 * 512) as usize,
        ));
        h.finalize()
    }

    /// Hash of the image as written (the first 45 MiB), for "nothing was written".
    fn image_hash(&self) -> blake3::Hash {
        blake3::hash(&read_at(&self.path, 0, boot::DEFAULT_SIZE as usize))
    }
}

/// The partition at `start..start + len` of `img` as a file of its own (sparse where zero).
fn extract(img: &Path, start: u64, len: u64, out: &Path) {
    let o = sparse(
        out.parent().unwrap(),
        out.file_name().unwrap().to_str().unwrap(),
        len,
    );
    let mut f = File::open(img).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(MIB) as usize;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start + done)).unwrap();
        f.read_exact(&mut buf[..n]).unwrap();
        if buf[..n].iter().any(|&b| b != 0) {
            patch(&o, done, &buf[..n]);
        }
        done += n as u64;
    }
}

#[test]
fn an_exfat_stick_grows_to_the_end_and_checks_clean() {
    let s = stick(DataFs::Exfat);
    let boot_code = s.boot_hash();
    let plan = s.plan().unwrap();
    assert_eq!(plan.number, 2);
    assert_eq!(plan.old_fs, FsKind::Exfat);
    assert_eq!(plan.new_last_lba, STICK / 512 - 2048 - 1);
    let mut steps = Vec::new();
    let report = grow(&plan, 0xCAFE_F00D, &mut |s| steps.push(s)).unwrap();
    assert_eq!(report.backup_header_lba, STICK / 512 - 1);
    assert_eq!(report.reread_failed, None);
    assert!(steps.contains(&"formatting the data partition (exFAT)"));

    let out = run(tool("sgdisk").arg("-v").arg(&s.path));
    assert!(out.contains("No problems found"), "{out}");
    let disk = s.detect();
    assert!(disk.problems.is_empty(), "{:?}", disk.problems);
    let g = disk.gpt.as_ref().unwrap();
    assert_eq!(g.backup_header_lba, Some(STICK / 512 - 1));
    let p = &disk.partitions.iter().find(|p| p.number == 2).unwrap();
    assert_eq!(p.start_bytes + p.size_bytes, STICK - MIB);
    assert_eq!(p.fs, Some(FsKind::Exfat));
    assert_eq!(p.fs_label.as_deref(), Some("RESCUE-DATA"));
    assert_eq!(p.fs_uuid.as_deref(), Some("CAFE-F00D"));
    assert_eq!(data_contents(&disk), DataContents::Empty);
    // The boot files, the BIOS boot partition and the boot code are untouched; the old backup header
    // is gone.
    assert_eq!(s.boot_hash(), boot_code);
    assert_eq!(read_at(&s.path, 40 * 512, 512), vec![0x5A; 512]);
    let old_backup = read_at(&s.path, plan.old_backup_header_lba * 512, 512);
    assert!(old_backup.iter().all(|&b| b == 0));

    let part = s.path.with_file_name("data.img");
    extract(&s.path, p.start_bytes, p.size_bytes, &part);
    let out = run(tool("fsck.exfat").arg("-n").arg(&part));
    assert!(out.contains("clean"), "{out}");
    let ids = run(tool("blkid").args(["-p", "-o", "export"]).arg(&part));
    assert!(
        ids.contains("LABEL=RESCUE-DATA") && ids.contains("TYPE=exfat"),
        "{ids}"
    );

    // Once grown, there is nothing more to grow.
    let r = s.plan().unwrap_err();
    assert!(matches!(r, GrowRefusal::AlreadyFull { .. }), "{r}");
}

#[test]
fn a_fat_stick_is_re_created_as_exfat() {
    let s = stick(DataFs::Vfat);
    let plan = s.plan().unwrap();
    assert_eq!(plan.old_fs, FsKind::Vfat);
    grow(&plan, 1, &mut |_| {}).unwrap();
    let out = run(tool("sgdisk").arg("-v").arg(&s.path));
    assert!(out.contains("No problems found"), "{out}");
    let disk = s.detect();
    let p = disk.partitions.iter().find(|p| p.number == 2).unwrap();
    assert_eq!(p.fs, Some(FsKind::Exfat));
}

#[test]
fn files_on_the_data_partition_stop_it() {
    let s = stick(DataFs::Vfat);
    let plan = s.plan().unwrap();
    // A file appears after the offer was made: the check on the device refuses, nothing is written.
    let note = s.path.with_file_name("note.txt");
    std::fs::write(&note, b"keep me").unwrap();
    let target = format!("{}@@{}", s.path.display(), plan.start_bytes());
    run(tool("mcopy")
        .arg("-i")
        .arg(&target)
        .arg(&note)
        .arg("::/NOTE.TXT"));
    let before = s.image_hash();
    let e = grow(&plan, 1, &mut |_| {}).unwrap_err();
    assert!(matches!(e, GrowError::NotEmpty { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("NOTE.TXT") && text.contains("Nothing on the stick was changed"),
        "{text}"
    );
    assert_eq!(s.image_hash(), before);
    assert!(
        read_at(&s.path, STICK - 512, 512).iter().all(|&b| b == 0),
        "no backup at the end"
    );
    // And the plan refuses from the start now.
    let r = s.plan().unwrap_err();
    assert!(r.to_string().contains("holds files (NOTE.TXT)"), "{r}");
}

#[test]
fn a_stick_that_changed_is_not_written() {
    let s = stick(DataFs::Exfat);
    let plan = s.plan().unwrap();
    File::options()
        .write(true)
        .open(&s.path)
        .unwrap()
        .set_len(2 * STICK)
        .unwrap();
    let before = s.image_hash();
    let e = grow(&plan, 1, &mut |_| {}).unwrap_err();
    assert!(matches!(e, GrowError::Changed { .. }), "{e}");
    assert_eq!(s.image_hash(), before);
    // The partition moved (another plan): refused before anything is written.
    let mut other = plan.clone();
    other.disk_size = 2 * STICK;
    other.old_last_lba -= 2048;
    let e = grow(&other, 1, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("partition 2 spans"), "{e}");
    assert_eq!(s.image_hash(), before);
}

#[test]
fn ext4_data_partitions_are_refused() {
    let s = stick(DataFs::Ext4);
    let r = s.plan().unwrap_err();
    assert!(matches!(r, GrowRefusal::Ext4 { .. }), "{r}");
}
