use super::*;
use crate::detect::{Disk, GptInfo, Identity, Partition, Transport};

const MIB: u64 = 1 << 20;

fn part(number: u32, start_mib: u64, size_mib: u64, fs: Option<FsKind>) -> Partition {
    Partition {
        number,
        path: Some(format!("/dev/sdx{number}")),
        start_bytes: start_mib * MIB,
        size_bytes: size_mib * MIB,
        part_type: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
        type_name: "Linux filesystem".into(),
        name: None,
        uuid: None,
        bootable: false,
        logical: false,
        extended: false,
        fs,
        fs_label: None,
        fs_uuid: None,
        mounts: Vec::new(),
    }
}

fn gpt_disk(path: &str, size_mib: u64) -> Disk {
    let ls = 512u64;
    let total = size_mib * MIB / ls;
    Disk {
        path: path.into(),
        name: path.trim_start_matches("/dev/").into(),
        size_bytes: size_mib * MIB,
        logical_sector_size: 512,
        physical_sector_size: 512,
        model: Some("TESTDISK".into()),
        serial: Some(format!("SER-{path}")),
        transport: Transport::Sata,
        removable: false,
        read_only: false,
        rotational: false,
        table: PartitionTable::Gpt,
        gpt: Some(GptInfo {
            disk_guid: Some("11111111-2222-3333-4444-555555555555".into()),
            primary_header_valid: true,
            backup_header_valid: true,
            primary_entries_valid: Some(true),
            backup_entries_valid: Some(true),
            protective_mbr: true,
            hybrid_mbr: false,
            first_usable_lba: 34,
            last_usable_lba: total - 34,
            partition_entry_count: 128,
            partition_entry_size: 128,
            primary_entries_lba: Some(2),
            backup_header_lba: Some(total - 1),
            backup_entries_lba: Some(total - 33),
            problems: Vec::new(),
        }),
        mbr: None,
        partitions: vec![
            part(1, 1, 32, Some(FsKind::Vfat)),
            part(2, 33, 64, Some(FsKind::Ext4)),
            part(3, 97, 16, Some(FsKind::Xfs)),
        ],
        fs: None,
        fs_label: None,
        fs_uuid: None,
        mounts: Vec::new(),
        boot_medium: false,
        problems: Vec::new(),
        whole_disk: None,
        identity: None,
    }
}

fn mbr_disk(path: &str) -> Disk {
    let mut d = gpt_disk(path, 128);
    d.table = PartitionTable::Mbr;
    d.gpt = None;
    let mut ext = part(2, 40, 80, None);
    ext.extended = true;
    let mut l5 = part(5, 41, 30, Some(FsKind::Vfat));
    l5.logical = true;
    let mut l6 = part(6, 72, 40, Some(FsKind::Exfat));
    l6.logical = true;
    d.partitions = vec![part(1, 1, 32, Some(FsKind::Ext4)), ext, l5, l6];
    d
}

/// Streams must tile the disk exactly: no byte twice, none missing.
fn assert_tiles(layout: &Layout) {
    let mut ranges: Vec<Range<u64>> = layout.streams.iter().map(|s| s.range()).collect();
    ranges.sort_by_key(|r| r.start);
    let mut pos = 0;
    for r in &ranges {
        assert_eq!(r.start, pos, "gap or overlap at {pos}: {ranges:?}");
        pos = r.end;
    }
    assert_eq!(pos, layout.size_bytes);
}

#[test]
fn whole_gpt_disk_capture_tiles_the_disk() {
    let d = gpt_disk("/dev/sdx", 256);
    let plan = plan_capture(&d, &CaptureRequest::default(), None).unwrap();
    assert_tiles(&plan.layout);
    let kinds: Vec<StreamRole> = plan.layout.streams.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| matches!(k, StreamRole::Table(_)))
            .count(),
        5
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == StreamRole::Partition)
            .count(),
        3
    );
    let xfs = plan
        .layout
        .streams
        .iter()
        .find(|s| s.partition == Some(3))
        .unwrap();
    assert!(!xfs.fs_aware, "no used-block map for xfs: raw");
    let ext4 = plan
        .layout
        .streams
        .iter()
        .find(|s| s.partition == Some(2))
        .unwrap();
    assert!(ext4.fs_aware);
    let raw = plan_capture(
        &d,
        &CaptureRequest {
            partitions: vec![],
            raw: true,
            keep_unallocated: false,
        },
        None,
    )
    .unwrap();
    assert!(raw.layout.streams.iter().all(|s| !s.fs_aware));
}

#[test]
fn mbr_capture_keeps_ebrs_in_gaps_and_skips_the_extended_container() {
    let d = mbr_disk("/dev/sdx");
    let plan = plan_capture(&d, &CaptureRequest::default(), None).unwrap();
    assert_tiles(&plan.layout);
    assert!(plan.layout.streams.iter().all(|s| s.partition != Some(2)));
    // The EBR of partition 5 sits in the 1 MiB before it: a gap stream must cover it.
    let ebr = 40 * MIB;
    assert!(plan
        .layout
        .streams
        .iter()
        .any(|s| s.kind == StreamRole::Gap && s.range().contains(&ebr)));
}

/// Gaps: the one before the first partition and those inside an extended partition are read whatever
/// their size, others up to SMALL_GAP; larger ones are unallocated (not read), unless --raw or
/// --keep-unallocated.
#[test]
fn large_gaps_are_unallocated_unless_they_hold_boot_code_or_ebrs() {
    let mut d = mbr_disk("/dev/sdx");
    // 8 MiB before the first partition (a vendor's boot area), 3 MiB inside the extended partition
    // before its first logical one, and the unused tail from 112 MiB.
    d.partitions[0] = part(1, 8, 24, Some(FsKind::Ext4));
    let mut ext = part(2, 40, 80, None);
    ext.extended = true;
    d.partitions[1] = ext;
    let mut l5 = part(5, 43, 28, Some(FsKind::Vfat));
    l5.logical = true;
    d.partitions[2] = l5;
    let gaps = |d: &Disk, req: &CaptureRequest| -> Vec<(u64, u64, bool)> {
        let plan = plan_capture(d, req, None).unwrap();
        assert_tiles(&plan.layout);
        plan.layout
            .streams
            .iter()
            .filter(|s| s.kind == StreamRole::Gap)
            .map(|s| (s.disk_offset / MIB, s.len.div_ceil(MIB), s.unallocated))
            .collect()
    };
    let unallocated: Vec<(u64, u64)> = gaps(&d, &CaptureRequest::default())
        .into_iter()
        .filter(|g| g.2)
        .map(|g| (g.0, g.1))
        .collect();
    // Unallocated: 32..40 MiB (between partition 1 and the extended one) and the tail after the extended
    // partition; kept: the 8 MiB before partition 1, and everything inside the extended partition (the
    // 3 MiB of EBR area before partition 5, the 8 MiB after partition 6).
    assert_eq!(unallocated, vec![(32, 8), (120, 8)]);
    for req in [
        CaptureRequest {
            raw: true,
            ..CaptureRequest::default()
        },
        CaptureRequest {
            keep_unallocated: true,
            ..CaptureRequest::default()
        },
    ] {
        assert!(gaps(&d, &req).iter().all(|g| !g.2), "{req:?}");
    }
    // A gap of at most SMALL_GAP is kept.
    d.partitions[0] = part(1, 8, 31, Some(FsKind::Ext4));
    assert!(gaps(&d, &CaptureRequest::default())
        .iter()
        .any(|&(at, len, un)| at == 39 && len == 1 && !un));
}

#[test]
fn partition_capture_and_its_refusals() {
    let d = mbr_disk("/dev/sdx");
    let plan = plan_capture(
        &d,
        &CaptureRequest {
            partitions: vec![5],
            raw: false,
            keep_unallocated: false,
        },
        None,
    )
    .unwrap();
    let parts: Vec<_> = plan
        .layout
        .streams
        .iter()
        .filter_map(|s| s.partition)
        .collect();
    assert_eq!(parts, [5]);
    assert!(!plan.whole_disk);
    let e = plan_capture(
        &d,
        &CaptureRequest {
            partitions: vec![9],
            raw: false,
            keep_unallocated: false,
        },
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("no partition 9") && e.to_string().contains("1, 5, 6"),
        "{e}"
    );
    let e = plan_capture(
        &d,
        &CaptureRequest {
            partitions: vec![2],
            raw: false,
            keep_unallocated: false,
        },
        None,
    )
    .unwrap_err();
    assert!(matches!(e, Refusal::ExtendedPartition { .. }), "{e}");
    assert!(e.to_string().contains("5, 6"), "{e}");
}

#[test]
fn capture_refuses_mounted_sources_and_images_on_the_source() {
    let mut d = gpt_disk("/dev/sdx", 256);
    let e = plan_capture(&d, &CaptureRequest::default(), Some("/dev/sdx")).unwrap_err();
    assert!(matches!(e, Refusal::ImageOnDisk { .. }), "{e}");
    d.partitions[1].mounts = vec!["/home".into()];
    let e = plan_capture(&d, &CaptureRequest::default(), None).unwrap_err();
    assert!(
        e.to_string().contains("/home") && e.to_string().contains("unmount"),
        "{e}"
    );
    // Capturing only another partition is fine.
    assert!(plan_capture(
        &d,
        &CaptureRequest {
            partitions: vec![1],
            raw: false,
            keep_unallocated: false,
        },
        None
    )
    .is_ok());
}

fn layout_of(d: &Disk) -> Layout {
    plan_capture(d, &CaptureRequest::default(), None)
        .unwrap()
        .layout
}

#[test]
fn restore_to_same_larger_and_smaller_disks() {
    let src = gpt_disk("/dev/sdx", 256);
    let layout = layout_of(&src);
    let env = Environment::default();
    let same = plan_restore_disk(&layout, &gpt_disk("/dev/sdy", 256), &env, true).unwrap();
    assert_eq!(same.tables, TablePlan::AsCaptured);
    assert_eq!(same.placements.len(), layout.streams.len());
    let larger = plan_restore_disk(&layout, &gpt_disk("/dev/sdy", 512), &env, true).unwrap();
    assert_eq!(
        larger.tables,
        TablePlan::RelocateGpt {
            target_size: 512 * MIB
        }
    );
    assert!(larger
        .placements
        .iter()
        .all(|p| !layout.streams[p.stream].is_table()));
    // Partitions end at 113 MiB: a 120 MiB disk fits them and the backup GPT.
    let smaller = plan_restore_disk(&layout, &gpt_disk("/dev/sdy", 120), &env, true).unwrap();
    assert!(!smaller.skipped.is_empty());
    for p in &smaller.placements {
        assert!(p.target_offset + layout.streams[p.stream].len <= 120 * MIB);
    }
    assert_eq!(smaller.invalidate.len(), 2);
}

/// On a target a little smaller than the source, the free space after the last partition still fits, but
/// its end is where the rebuilt GPT's backup goes: it is left out rather than written under the backup.
#[test]
fn free_space_under_the_moved_gpt_backup_is_not_written() {
    let src = gpt_disk("/dev/sdx", 256);
    let layout = layout_of(&src);
    let mut target = gpt_disk("/dev/sdy", 256);
    target.size_bytes -= 4096;
    let plan = plan_restore_disk(&layout, &target, &Environment::default(), true).unwrap();
    assert!(matches!(plan.tables, TablePlan::RelocateGpt { .. }));
    let backup_start = target.size_bytes - 33 * 512;
    for p in &plan.placements {
        let s = &layout.streams[p.stream];
        assert!(
            p.target_offset + s.len <= backup_start,
            "{:?} at {} overlaps the backup GPT at {backup_start}",
            s.kind,
            p.target_offset
        );
    }
    assert_eq!(plan.skipped.len(), 1, "{:?}", plan.skipped);
}

/// An MBR is restored as it is: its extended container (no stream of its own: its EBRs are in the gaps)
/// must fit too, or the table would point past the target's end.
#[test]
fn an_mbr_whose_extended_partition_does_not_fit_is_refused() {
    let layout = layout_of(&mbr_disk("/dev/sdx"));
    // The logical partitions end at 112 MiB, the extended container at 120 MiB.
    assert_eq!(layout.min_target_size(), 120 * MIB);
    let mut target = mbr_disk("/dev/sdy");
    target.size_bytes = 115 * MIB;
    let e = plan_restore_disk(&layout, &target, &Environment::default(), true).unwrap_err();
    assert!(
        matches!(e, Refusal::TooSmall { need, .. } if need == 120 * MIB),
        "{e}"
    );
    target.size_bytes = 120 * MIB;
    assert!(plan_restore_disk(&layout, &target, &Environment::default(), true).is_ok());
}

/// An image of chosen partitions is not a disk: restoring it as one is refused, naming what it holds.
#[test]
fn an_image_of_some_partitions_is_not_restored_as_a_whole_disk() {
    let src = gpt_disk("/dev/sdx", 256);
    let req = CaptureRequest {
        partitions: vec![2],
        raw: false,
        keep_unallocated: false,
    };
    let layout = plan_capture(&src, &req, None).unwrap().layout;
    assert!(!layout.covers_disk());
    assert!(layout_of(&src).covers_disk());
    let env = Environment {
        image_path: "p2.rimg".into(),
        ..Environment::default()
    };
    let e = plan_restore_disk(&layout, &gpt_disk("/dev/sdy", 256), &env, true).unwrap_err();
    assert!(matches!(e, Refusal::PartialImage { .. }), "{e}");
    assert!(
        e.to_string().contains("p2.rimg holds only partition(s) 2"),
        "{e}"
    );
    let target = gpt_disk("/dev/sdy", 256);
    assert!(plan_restore_partition(&layout, 2, &target, Some(2), &env, true).is_ok());
}

#[test]
fn restore_refusals_name_the_target_and_the_reason() {
    let layout = layout_of(&gpt_disk("/dev/sdx", 256));
    let image = Identity::File { dev: 7, ino: 42 };
    let env = Environment {
        image_disk: Some("/dev/sdz".into()),
        image_path: "/mnt/img/disk.rimg".into(),
        image_identity: Some(image),
    };
    let small = gpt_disk("/dev/sdy", 100);
    let e = plan_restore_disk(&layout, &small, &env, true).unwrap_err();
    assert!(
        matches!(e, Refusal::TooSmall { need, .. } if need == 113 * MIB + 33 * 512),
        "{e}"
    );
    assert!(
        e.to_string().contains("/dev/sdy") && e.to_string().contains("at least"),
        "{e}"
    );

    let mut stick = gpt_disk("/dev/sdy", 512);
    stick.boot_medium = true;
    assert!(matches!(
        plan_restore_disk(&layout, &stick, &env, true),
        Err(Refusal::TargetIsBootMedium { .. })
    ));

    let holder = gpt_disk("/dev/sdz", 512);
    let e = plan_restore_disk(&layout, &holder, &env, true).unwrap_err();
    assert!(
        matches!(e, Refusal::ImageOnDisk { .. }) && e.to_string().contains("/mnt/img/disk.rimg"),
        "{e}"
    );

    // The image file itself, under another name.
    let mut itself = gpt_disk("./disk.rimg", 512);
    itself.identity = Some(image);
    let e = plan_restore_disk(&layout, &itself, &env, true).unwrap_err();
    assert!(matches!(e, Refusal::TargetIsImage { .. }), "{e}");

    let mut mounted = gpt_disk("/dev/sdy", 512);
    mounted.partitions[0].mounts = vec!["/boot/efi".into()];
    assert!(matches!(
        plan_restore_disk(&layout, &mounted, &env, true),
        Err(Refusal::Mounted { .. })
    ));

    let mut ro = gpt_disk("/dev/sdy", 512);
    ro.read_only = true;
    assert!(matches!(
        plan_restore_disk(&layout, &ro, &env, true),
        Err(Refusal::ReadOnly { .. })
    ));

    let mut fourk = gpt_disk("/dev/sdy", 512);
    fourk.logical_sector_size = 4096;
    assert!(matches!(
        plan_restore_disk(&layout, &fourk, &env, true),
        Err(Refusal::SectorSize { .. })
    ));

    let e = plan_restore_disk(&layout, &gpt_disk("/dev/sdy", 512), &env, false).unwrap_err();
    assert!(
        e.to_string().contains("--yes") && e.to_string().contains("partition 2"),
        "{e}"
    );
}

#[test]
fn partition_restore_checks_room_and_numbers() {
    let layout = layout_of(&gpt_disk("/dev/sdx", 256));
    let env = Environment::default();
    let target = gpt_disk("/dev/sdy", 256);
    let ok = plan_restore_partition(&layout, 1, &target, Some(2), &env, true).unwrap();
    assert_eq!(ok.placements[0].target_offset, 33 * MIB);
    assert_eq!(ok.tables, TablePlan::Untouched);
    let e = plan_restore_partition(&layout, 2, &target, Some(1), &env, true).unwrap_err();
    assert!(matches!(e, Refusal::TooSmall { .. }), "{e}");
    let e = plan_restore_partition(&layout, 7, &target, Some(1), &env, true).unwrap_err();
    assert!(matches!(e, Refusal::NoSuchImagePartition { .. }), "{e}");
    let e = plan_restore_partition(&layout, 1, &target, Some(9), &env, true).unwrap_err();
    assert!(matches!(e, Refusal::NoSuchPartition { .. }), "{e}");
    // Without --to-partition onto a partitioned disk: refused, naming its partitions.
    let e = plan_restore_partition(&layout, 1, &target, None, &env, true).unwrap_err();
    assert!(
        matches!(e, Refusal::PartitionOntoPartitionedDisk { .. })
            && e.to_string().contains("partitions 1, 2, 3")
            && e.to_string().contains("--to-partition"),
        "{e}"
    );
    // Onto a device with no table (a partition's node, a blank disk, a file): its start.
    let mut blank = gpt_disk("/dev/sdy1", 64);
    blank.table = PartitionTable::None;
    blank.partitions.clear();
    let ok = plan_restore_partition(&layout, 1, &blank, None, &env, true).unwrap();
    assert_eq!(ok.placements[0].target_offset, 0);
}

#[test]
fn clone_refuses_the_source_as_target() {
    let src = gpt_disk("/dev/sdx", 256);
    assert!(matches!(
        plan_clone(&src, &src, false, true),
        Err(Refusal::TargetIsSource { .. })
    ));
    let mut same_serial = gpt_disk("/dev/sdy", 256);
    same_serial.serial = src.serial.clone();
    assert!(matches!(
        plan_clone(&src, &same_serial, false, true),
        Err(Refusal::TargetIsSource { .. })
    ));
    assert!(plan_clone(&src, &gpt_disk("/dev/sdy", 300), false, true).is_ok());
    // Another name of the same device or file (a symlink, a relative path), with no serial to compare.
    let mut src = gpt_disk("/dev/sdx", 256);
    src.serial = None;
    src.identity = Some(Identity::Device(0x800));
    let mut alias = gpt_disk("/dev/disk/by-path/pci-0000:00:1f.2-ata-1", 256);
    alias.serial = None;
    alias.identity = src.identity;
    assert!(matches!(
        plan_clone(&src, &alias, false, true),
        Err(Refusal::TargetIsSource { .. })
    ));
}

#[test]
fn a_capture_refuses_to_write_its_image_over_the_source() {
    let mut src = gpt_disk("disk.img", 256);
    src.identity = Some(Identity::File { dev: 7, ino: 9 });
    let e = check_output(&src, "./disk.img", src.identity).unwrap_err();
    assert!(matches!(e, Refusal::OutputIsSource { .. }), "{e}");
    assert!(check_output(&src, "other.rimg", Some(Identity::File { dev: 7, ino: 10 })).is_ok());
    assert!(check_output(&src, "new.rimg", None).is_ok());
}

proptest::proptest! {
    #[test]
    fn random_layouts_always_tile(sizes in proptest::collection::vec(1u64..50, 0..6), disk_extra in 1u64..100) {
        let mut d = gpt_disk("/dev/sdx", 1);
        let mut start = 1;
        d.partitions = sizes.iter().enumerate().map(|(i, s)| {
            let p = part(i as u32 + 1, start, *s, Some(FsKind::Ext4));
            start += s;
            p
        }).collect();
        let size_mib = start + disk_extra;
        let total = size_mib * MIB / 512;
        d.size_bytes = size_mib * MIB;
        if let Some(g) = d.gpt.as_mut() {
            g.backup_header_lba = Some(total - 1);
            g.backup_entries_lba = Some(total - 33);
        }
        let plan = plan_capture(&d, &CaptureRequest::default(), None).unwrap();
        assert_tiles(&plan.layout);
        proptest::prop_assert!(plan.layout.min_target_size() <= d.size_bytes);
    }
}
