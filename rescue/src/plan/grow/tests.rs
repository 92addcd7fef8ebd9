//! Every refusal of [`plan_grow`], on a stick as `builder image` writes it (45 MiB: BIOS boot partition
//! at LBA 40, ESP from 1 MiB, data partition to 44 MiB) found on a 16 GiB USB stick.

use super::*;
use crate::detect::{GptInfo, Transport};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const IMAGE: u64 = 45 * MIB;

fn part(n: u32, start: u64, size: u64, name: &str, fs: Option<FsKind>) -> Partition {
    let mut p = Partition::new(
        n,
        start,
        size,
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7".into(),
        "x",
    );
    p.path = Some(format!("/dev/sda{n}"));
    p.name = Some(name.into());
    p.fs = fs;
    p.fs_label = fs.map(|_| name.to_string());
    p
}

/// The stick image on a `size`-byte stick, as detection reports it (the backup GPT where the image
/// ended).
fn stick(size: u64) -> Disk {
    let last_image_lba = IMAGE / 512 - 1;
    Disk {
        path: "/dev/sda".into(),
        name: "sda".into(),
        size_bytes: size,
        logical_sector_size: 512,
        physical_sector_size: 512,
        model: Some("Flash".into()),
        serial: None,
        transport: Transport::Usb,
        removable: true,
        read_only: false,
        rotational: false,
        table: PartitionTable::Gpt,
        gpt: Some(GptInfo {
            disk_guid: Some("5F0E4C52-1C1B-4D6B-9A0E-1D2B3C4D5E6F".into()),
            primary_header_valid: true,
            backup_header_valid: true,
            primary_entries_valid: Some(true),
            backup_entries_valid: Some(true),
            protective_mbr: true,
            hybrid_mbr: false,
            first_usable_lba: 34,
            last_usable_lba: last_image_lba - 33,
            partition_entry_count: 128,
            partition_entry_size: 128,
            primary_entries_lba: Some(2),
            backup_header_lba: Some(last_image_lba),
            backup_entries_lba: Some(last_image_lba - 32),
            problems: vec![],
        }),
        mbr: None,
        partitions: vec![
            part(1, MIB, 36 * MIB, "EFI System", Some(FsKind::Vfat)),
            part(2, 37 * MIB, 7 * MIB, DATA_NAME, Some(FsKind::Exfat)),
            part(3, 40 * 512, MIB - 40 * 512, "BIOS boot partition", None),
        ],
        fs: None,
        fs_label: None,
        fs_uuid: None,
        mounts: vec![],
        boot_medium: true,
        problems: vec![],
        whole_disk: None,
        identity: None,
    }
}

fn refusal(disk: &Disk, contents: &DataContents) -> String {
    plan_grow(disk, contents).unwrap_err().to_string()
}

#[test]
fn the_data_partition_is_found_by_the_name_the_builder_gives_it() {
    assert_eq!(DATA_NAME, boot::DATA_LABEL);
}

#[test]
fn a_16_gib_stick_grows_to_its_last_mib() {
    let size = 16 * GIB - 3 * 512; // not a whole MiB, like many sticks
    let p = plan_grow(&stick(size), &DataContents::Empty).unwrap();
    assert_eq!(p.number, 2);
    assert_eq!(p.first_lba, 37 * 2048);
    assert_eq!(p.old_last_lba, 44 * 2048 - 1);
    // Last usable LBA: total - 34; the new end is the MiB boundary below it.
    let total = size / 512;
    assert!(p.new_last_lba <= total - 34);
    assert_eq!((p.new_last_lba + 1) % 2048, 0);
    assert_eq!(p.new_last_lba, 16 * 1024 * 2048 - 2048 - 1);
    assert_eq!(p.new_size(), 16 * GIB - 38 * MIB);
    assert_eq!(p.old_size(), 7 * MIB);
    assert_eq!(p.old_backup_header_lba, IMAGE / 512 - 1);
    assert_eq!(p.partition_name(), "/dev/sda2");
    // A FAT data partition is re-created as exFAT too.
    let mut d = stick(size);
    d.partitions[1].fs = Some(FsKind::Vfat);
    assert_eq!(
        plan_grow(&d, &DataContents::Empty).unwrap().old_fs,
        FsKind::Vfat
    );
}

#[test]
fn only_the_stick_is_grown() {
    let mut d = stick(16 * GIB);
    d.boot_medium = false;
    assert!(refusal(&d, &DataContents::Empty).contains("not the rescue stick"));
    let mut d = stick(16 * GIB);
    d.read_only = true;
    assert!(refusal(&d, &DataContents::Empty).contains("write protection"));
}

#[test]
fn mounted_partitions_are_refused() {
    let mut d = stick(16 * GIB);
    d.partitions[1].mounts = vec!["/run/rescue/mnt/sda2".into()];
    let r = refusal(&d, &DataContents::Empty);
    assert!(
        r.contains("/dev/sda2 is mounted (/run/rescue/mnt/sda2)"),
        "{r}"
    );
    let mut d = stick(16 * GIB);
    d.partitions[0].mounts = vec!["/boot/efi".into()];
    assert!(refusal(&d, &DataContents::Empty).contains("/dev/sda1 is mounted"));
}

#[test]
fn a_full_size_stick_has_nothing_to_grow() {
    // The image written onto a stick of the same size, or only a little larger.
    for size in [IMAGE, IMAGE + 64 * MIB] {
        let r = refusal(&stick(size), &DataContents::Empty);
        assert!(r.contains("already reaches the end"), "{size}: {r}");
    }
    assert!(plan_grow(&stick(IMAGE + 65 * MIB), &DataContents::Empty).is_ok());
    // Already grown: the backup GPT sits at the end.
    let mut d = stick(16 * GIB);
    let p = plan_grow(&d, &DataContents::Empty).unwrap();
    let last = d.size_bytes / 512 - 1;
    d.partitions[1].size_bytes = p.new_size();
    let g = d.gpt.as_mut().unwrap();
    g.backup_header_lba = Some(last);
    g.backup_entries_lba = Some(last - 32);
    assert!(refusal(&d, &DataContents::Empty).contains("already reaches the end"));
}

#[test]
fn unknown_layouts_are_left_alone() {
    type Change = Box<dyn Fn(&mut Disk)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|d| d.table = PartitionTable::Mbr), "no GPT"),
        (
            Box::new(|d| d.gpt.as_mut().unwrap().backup_header_valid = false),
            "damaged",
        ),
        (
            Box::new(|d| d.gpt.as_mut().unwrap().primary_entries_valid = Some(false)),
            "damaged",
        ),
        (
            Box::new(|d| {
                for p in &mut d.partitions {
                    p.name = None;
                    p.fs_label = None;
                }
            }),
            "no partition named RESCUE-DATA",
        ),
        (
            Box::new(|d| {
                let p = part(4, 44 * MIB, MIB / 2, "other", None);
                d.partitions.push(p);
            }),
            "partition 4 ends after the data partition",
        ),
        (
            Box::new(|d| d.gpt.as_mut().unwrap().primary_entries_lba = Some(1024)),
            "entry arrays",
        ),
    ];
    for (change, want) in cases {
        let mut d = stick(16 * GIB);
        change(&mut d);
        let r = refusal(&d, &DataContents::Empty);
        assert!(r.contains("does not have the layout"), "{r}");
        assert!(r.contains(want), "{want}: {r}");
    }
}

#[test]
fn the_data_filesystem_decides() {
    let mut d = stick(16 * GIB);
    d.partitions[1].fs = Some(FsKind::Ext4);
    let r = refusal(&d, &DataContents::Empty);
    assert!(r.contains("ext4") && r.contains("resize2fs"), "{r}");
    d.partitions[1].fs = Some(FsKind::Ntfs);
    assert!(refusal(&d, &DataContents::Empty).contains("holds ntfs"));
    d.partitions[1].fs = None;
    assert!(refusal(&d, &DataContents::Empty).contains("no filesystem"));

    let d = stick(16 * GIB);
    let names: Vec<String> = ["a.rimg", "b.rimg", "c", "d", "e"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = refusal(&d, &DataContents::Files(names));
    assert!(r.contains("holds files (a.rimg, b.rimg, c, d, …)"), "{r}");
    assert!(r.contains("Copy the files elsewhere"), "{r}");
    let r = refusal(&d, &DataContents::Unknown("read error".into()));
    assert!(
        r.contains("could not check") && r.contains("read error"),
        "{r}"
    );
}
