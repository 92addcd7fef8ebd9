//! Snapshot tests of every screen (80×24 and 132×40) and state-machine tests of every wizard, including
//! each refusal path, on a synthetic set of disks.

use std::path::PathBuf;

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::*;
use super::capture::CapStep;
use super::clone::CloneStep;
use super::restore::RStep;
use crate::detect::{Disk, FsKind, GptInfo, Partition, PartitionTable, Report, Transport};
use crate::engine::progress::Progress;
use crate::image::{CreationInfo, DiskInfo, PartitionInfo, TableKind};
use crate::store::ImageEntry;

pub(super) const MIB: u64 = 1 << 20;
const NOW: u64 = 1_795_000_000;

pub(super) fn disk(name: &str, serial: &str, transport: Transport, size: u64) -> Disk {
    Disk {
        path: format!("/dev/{name}"),
        name: name.into(),
        size_bytes: size,
        logical_sector_size: 512,
        physical_sector_size: 512,
        model: Some("QEMU HARDDISK".into()),
        serial: Some(serial.into()),
        transport,
        removable: false,
        read_only: false,
        rotational: false,
        table: PartitionTable::None,
        gpt: None,
        mbr: None,
        partitions: vec![],
        fs: None,
        fs_label: None,
        fs_uuid: None,
        mounts: vec![],
        boot_medium: false,
        problems: vec![],
        whole_disk: None,
        identity: None,
    }
}

pub(super) fn part(
    disk: &Disk,
    n: u32,
    start_mib: u64,
    size_mib: u64,
    fs: Option<FsKind>,
    label: &str,
) -> Partition {
    let mut p = Partition::new(
        n,
        start_mib * MIB,
        size_mib * MIB,
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
        "Linux filesystem",
    );
    p.path = Some(format!("{}{n}", disk.path));
    p.fs = fs;
    if !label.is_empty() {
        p.fs_label = Some(label.into());
    }
    p
}

pub(super) fn gpt() -> GptInfo {
    GptInfo {
        disk_guid: Some("5F0E4C52-1C1B-4D6B-9A0E-1D2B3C4D5E6F".into()),
        primary_header_valid: true,
        backup_header_valid: true,
        primary_entries_valid: Some(true),
        backup_entries_valid: Some(true),
        protective_mbr: true,
        hybrid_mbr: false,
        first_usable_lba: 34,
        last_usable_lba: 0,
        partition_entry_count: 128,
        partition_entry_size: 128,
        primary_entries_lba: Some(2),
        backup_header_lba: None,
        backup_entries_lba: None,
        problems: vec![],
    }
}

/// vda: the source (GPT: ESP, ext4, NTFS); vdb: a drive with an ext4 "IMAGES" partition and an NTFS one;
/// vdc: a blank target; vdd: too small; sda: the rescue stick with its exFAT data partition.
pub(super) fn report() -> Report {
    let mut vda = disk("vda", "SRC", Transport::Virtio, 168 * MIB);
    vda.table = PartitionTable::Gpt;
    vda.gpt = Some(gpt());
    vda.partitions = vec![
        part(&vda, 1, 1, 40, Some(FsKind::Vfat), "ESP"),
        part(&vda, 2, 41, 64, Some(FsKind::Ext4), "root"),
        part(&vda, 3, 105, 60, Some(FsKind::Ntfs), "Windows"),
    ];
    let mut vdb = disk("vdb", "IMG", Transport::Virtio, 1024 * MIB);
    vdb.table = PartitionTable::Gpt;
    vdb.gpt = Some(gpt());
    vdb.partitions = vec![
        part(&vdb, 1, 1, 800, Some(FsKind::Ext4), "IMAGES"),
        part(&vdb, 2, 801, 200, Some(FsKind::Ntfs), "OLD"),
    ];
    let vdc = disk("vdc", "DST", Transport::Virtio, 256 * MIB);
    let vdd = disk("vdd", "TINY", Transport::Virtio, 64 * MIB);
    let mut sda = disk("sda", "STICK", Transport::Usb, 48 * MIB);
    sda.model = Some("Flash Disk".into());
    sda.removable = true;
    sda.boot_medium = true;
    sda.table = PartitionTable::Gpt;
    sda.gpt = Some(gpt());
    sda.partitions = vec![
        part(&sda, 1, 1, 38, Some(FsKind::Vfat), "RESCUE-EFI"),
        part(&sda, 2, 39, 8, Some(FsKind::Exfat), "RESCUE-DATA"),
    ];
    Report {
        disks: vec![vda, vdb, vdc, vdd, sda],
        problems: vec![],
    }
}

pub(super) fn app() -> App {
    let mut a = App::new(Mode::Host, report(), NOW);
    a.threads = 2;
    a.usage.insert("/dev/vda1".into(), 5 * MIB);
    a.usage.insert("/dev/vda2".into(), 20 * MIB);
    a.usage.insert("/dev/vda3".into(), 30 * MIB);
    a
}

pub(super) fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| super::view::draw(f, app)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Snapshot the app at both sizes.
pub(super) fn snap(name: &str, app: &App) {
    insta::assert_snapshot!(format!("{name}_80x24"), render(app, 80, 24));
    insta::assert_snapshot!(format!("{name}_132x40"), render(app, 132, 40));
}

pub(super) fn keys(app: &mut App, keys: &[Key]) -> Vec<Effect> {
    let mut all = Vec::new();
    for k in keys {
        all.extend(app.on_key(*k));
    }
    all
}

pub(super) fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.on_key(Key::Char(c));
    }
}

pub(super) fn images_store(app: &App) -> OpenedStore {
    let store = app
        .stores()
        .into_iter()
        .find(|s| s.device.as_deref() == Some("/dev/vdb1"))
        .unwrap();
    OpenedStore {
        store,
        dir: PathBuf::from("/run/rescue/mnt/vdb1"),
        free_bytes: Some(700 * MIB),
        images: vec![
            ImageEntry {
                path: PathBuf::from("/run/rescue/mnt/vdb1/images/laptop.rimg"),
                size_bytes: 31 * MIB,
                modified_unix: NOW - 3600,
            },
            ImageEntry {
                path: PathBuf::from("/run/rescue/mnt/vdb1/old.rimg"),
                size_bytes: 12 * MIB,
                modified_unix: NOW - 86400 * 30,
            },
        ],
        repos: vec![],
    }
}

/// What `term` would read from the image: a capture of vda, stored on vdb.
pub(super) fn summary() -> ImageSummary {
    let source = report().disks[0].clone();
    let layout = crate::plan::plan_capture(&source, &crate::plan::CaptureRequest::default(), None)
        .unwrap()
        .layout;
    ImageSummary {
        location: PathBuf::from("/run/rescue/mnt/vdb1/images/laptop.rimg").into(),
        size_bytes: 31 * MIB,
        root_hash: "9f2c".repeat(16),
        creation: CreationInfo {
            tool_name: "rescue".into(),
            tool_version: "0.1.0".into(),
            created_unix: (NOW - 3600) as i64,
            host_name: "rescue".into(),
            notes: vec![],
        },
        disk: DiskInfo {
            size: source.size_bytes,
            logical_sector_size: 512,
            physical_sector_size: 512,
            model: "QEMU HARDDISK".into(),
            serial: "SRC".into(),
            transport: "virtio".into(),
            path: "/dev/vda".into(),
            table_kind: TableKind::Gpt,
            table_id: "5F0E4C52-1C1B-4D6B-9A0E-1D2B3C4D5E6F".into(),
            partitions: source
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    number: p.number,
                    start: p.start_bytes,
                    size: p.size_bytes,
                    fs_kind: p
                        .fs
                        .map(|f| crate::units::json_name(&f))
                        .unwrap_or_default(),
                    fs_label: p.fs_label.clone().unwrap_or_default(),
                    ..Default::default()
                })
                .collect(),
        },
        layout,
        image_disk: Some("/dev/vdb".into()),
        unreadable_ranges: 0,
        virtual_format: None,
        other_format: None,
    }
}

pub(super) fn select_row(app: &mut App, path: &str) {
    app.sel = app
        .rows
        .iter()
        .position(|r| app.row_path(r).as_deref() == Some(path))
        .unwrap();
}

// ---------- snapshots ----------

#[test]
fn snapshot_overview_and_overlays() {
    let mut a = app();
    snap("overview_disk", &a);
    select_row(&mut a, "/dev/vda2");
    snap("overview_partition", &a);
    a.on_key(Key::Char('?'));
    snap("help", &a);
    a.on_key(Key::Esc);
    a.on_key(Key::Enter);
    snap("menu", &a);
    a.on_key(Key::Esc);
    a.on_key(Key::Char('p'));
    snap("power", &a);
}

#[test]
fn snapshot_capture_wizard() {
    let mut a = app();
    a.on_key(Key::Char('c'));
    snap("capture_parts", &a);
    a.on_key(Key::Enter);
    snap("capture_dest", &a);
    let store = images_store(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(store));
    snap("capture_name", &a);
    a.on_key(Key::Enter);
    snap("capture_summary", &a);
}

#[test]
fn snapshot_restore_wizard() {
    let mut a = app();
    a.on_key(Key::Char('r'));
    snap("restore_store", &a);
    let store = images_store(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(store));
    snap("restore_image", &a);
    a.on_key(Key::Enter);
    a.on_image(Ok(summary()));
    snap("restore_details", &a);
    a.on_key(Key::Enter);
    snap("restore_target", &a);
    a.on_key(Key::Enter);
    type_text(&mut a, "vd");
    snap("restore_confirm", &a);
}

#[test]
fn snapshot_verify_clone_progress_result_log() {
    let mut a = app();
    a.on_key(Key::Char('v'));
    snap("verify_store", &a);
    let store = images_store(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(store));
    snap("verify_image", &a);

    let mut a = app();
    a.on_key(Key::Char('x'));
    snap("clone_target", &a);
    a.on_key(Key::Enter);
    snap("clone_confirm", &a);

    let mut a = app();
    let eff = {
        a.on_key(Key::Char('c'));
        a.on_key(Key::Enter);
        let s = images_store(&a);
        a.on_key(Key::Enter);
        a.on_store(Ok(s));
        keys(&mut a, &[Key::Enter, Key::Enter])
    };
    assert!(matches!(
        eff.as_slice(),
        [Effect::Start(Request::Capture(_))]
    ));
    snap("progress_starting", &a);
    for (i, rate) in [40u64, 55, 61, 30, 58, 62, 64].iter().enumerate() {
        a.on_progress(Progress {
            phase: "capture",
            bytes_done: (i as u64 + 1) * 7 * MIB,
            bytes_total: 55 * MIB,
            bytes_stored: (i as u64 + 1) * 3 * MIB,
            rate: (*rate * MIB) as f64,
            eta_seconds: Some(3.0),
            elapsed_seconds: i as f64 * 0.25,
            current: "partition 2 (ext4)".into(),
            current_done: 10 * MIB,
            current_total: 20 * MIB,
        });
    }
    snap("progress_running", &a);
    a.on_key(Key::Esc);
    snap("progress_cancel_confirm", &a);
    a.on_key(Key::Char('n'));
    a.on_finished(JobResult {
        ok: true,
        title: "Capture /dev/vda → /run/rescue/mnt/vdb1/images/x.rimg".into(),
        lines: vec![
            "Image: /run/rescue/mnt/vdb1/images/x.rimg".into(),
            format!("Root hash: {}", "ab12".repeat(16)),
            "Read 55.0 MiB of used data; image 21.0 MiB (22020096 bytes)".into(),
            "Time: 4.2 s".into(),
        ],
        log: Some(PathBuf::from("/run/rescue/mnt/vdb1/images/x.rimg.log")),
    });
    snap("result_ok", &a);
    a.on_key(Key::Enter);
    a.on_finished(JobResult {
        ok: false,
        title: "Restore /run/rescue/mnt/vdb1/images/x.rimg → /dev/vdc".into(),
        lines: vec![
            "Error: write error on /dev/vdc at byte 1048576: Input/output error".into(),
            "/dev/vdc may now hold a partial restore with no valid partition table; restore again before using it".into(),
        ],
        log: None,
    });
    snap("result_failed", &a);
    a.on_key(Key::Char('l'));
    a.kernel_log = vec![
        "[    1.204] virtio_blk virtio1: [vda] 344064 512-byte logical blocks".into(),
        "[    1.310] EXT4-fs (vdb1): mounted filesystem".into(),
    ];
    snap("log", &a);
}

// ---------- state machines ----------

#[test]
fn capture_whole_disk_produces_the_spec_shown() {
    let mut a = app();
    a.on_key(Key::Char('c'));
    a.on_key(Key::Enter);
    let Screen::Capture(w) = &a.screen else {
        panic!("not in the capture wizard")
    };
    assert_eq!(w.step, CapStep::Dest);
    // Usable stores come first; the source's own partitions are refused.
    let refused: Vec<_> = w
        .stores
        .iter()
        .filter(|s| s.unusable.is_some())
        .map(|s| (s.device.clone().unwrap(), s.unusable.clone().unwrap()))
        .collect();
    assert!(refused
        .iter()
        .any(|(d, why)| d == "/dev/vda2" && why.contains("disk being captured")));
    // An NTFS drive holds images too (through ntfs-3g).
    assert!(!refused.iter().any(|(d, _)| d == "/dev/vdb2"));
    let first = w.stores[0].device.clone().unwrap();
    assert_eq!(first, "/dev/vdb1");
    let e = a.on_key(Key::Enter);
    assert!(
        matches!(e.as_slice(), [Effect::OpenStore(s, crate::store::Access::Write)] if s.device.as_deref() == Some("/dev/vdb1"))
    );
    let s = images_store(&a);
    a.on_store(Ok(s));
    // Tab to the level, raise it twice, back to the name, rename.
    keys(
        &mut a,
        &[Key::Tab, Key::Char('+'), Key::Char('+'), Key::Tab],
    );
    for _ in 0..60 {
        a.on_key(Key::Backspace);
    }
    type_text(&mut a, "backups/laptop");
    let e = keys(&mut a, &[Key::Enter, Key::Enter]);
    match e.as_slice() {
        [Effect::Start(Request::Capture(spec))] => {
            assert_eq!(spec.source, PathBuf::from("/dev/vda"));
            assert_eq!(
                spec.output,
                PathBuf::from("/run/rescue/mnt/vdb1/backups/laptop.rimg").into()
            );
            assert!(spec.partitions.is_empty());
            assert_eq!(spec.level, crate::image::DEFAULT_LEVEL + 2);
            assert!(spec.dedup);
        }
        other => panic!("expected a capture to start, got {other:?}"),
    }
    assert_eq!(a.screen, Screen::Progress);
}

#[test]
fn capture_of_chosen_partitions_and_its_refusals() {
    let mut a = app();
    select_row(&mut a, "/dev/vda2");
    a.on_key(Key::Char('c'));
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert!(!w.whole);
    assert_eq!(w.chosen, vec![2]);
    // The used bytes and the partition table (which is always recorded), not the partition's size.
    assert!(
        (20 * MIB..20 * MIB + 64 * 1024).contains(&w.estimate),
        "{}",
        w.estimate
    );
    // Unmark it: nothing chosen is refused.
    a.on_key(Key::Char(' '));
    a.on_key(Key::Enter);
    assert!(a
        .status
        .as_deref()
        .unwrap()
        .contains("at least one partition"));
    // Mark partition 3 as well as 2.
    keys(
        &mut a,
        &[Key::Char(' '), Key::Down, Key::Char(' '), Key::Enter],
    );
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.chosen, vec![2, 3]);
    assert_eq!(w.step, CapStep::Dest);
    // A refused store says why and stays.
    let refused = w.stores.iter().position(|s| s.unusable.is_some()).unwrap();
    a.on_key(Key::Home);
    for _ in 0..refused {
        a.on_key(Key::Down);
    }
    let e = a.on_key(Key::Enter);
    assert!(e.is_empty());
    assert!(a
        .status
        .as_deref()
        .unwrap()
        .contains("cannot hold the image"));
    // A failed mount is reported and the wizard stays on the destination step.
    a.on_key(Key::Home);
    a.on_key(Key::Enter);
    a.on_store(Err("mounting /dev/vdb1 failed: EIO".into()));
    assert!(a.status.as_deref().unwrap().contains("EIO"));
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CapStep::Dest);
    // Esc walks back to the overview.
    keys(&mut a, &[Key::Esc, Key::Esc]);
    assert_eq!(a.screen, Screen::Overview);
}

#[test]
fn capture_names_are_checked() {
    let mut a = app();
    a.on_key(Key::Char('c'));
    a.on_key(Key::Enter);
    let s = images_store(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(s));
    for _ in 0..80 {
        a.on_key(Key::Backspace);
    }
    a.on_key(Key::Enter);
    assert!(a.status.as_deref().unwrap().contains("file name"));
    type_text(&mut a, "../escape");
    a.on_key(Key::Enter);
    assert!(a
        .status
        .as_deref()
        .unwrap()
        .contains("inside the chosen drive"));
}

/// On the restore wizard's targets: choose `device` and confirm it by typing its name.
pub(super) fn restore_onto(a: &mut App, device: &str) -> Vec<Effect> {
    let Screen::Restore(w) = &a.screen else {
        panic!("not in the restore wizard")
    };
    let idx = w.targets.iter().position(|t| t.device == device).unwrap();
    a.on_key(Key::Home);
    for _ in 0..idx {
        a.on_key(Key::Down);
    }
    a.on_key(Key::Enter);
    type_text(a, short_name(device));
    a.on_key(Key::Enter)
}

fn restore_to_targets(a: &mut App, partition: bool) {
    restore_to_details(a, partition);
    a.on_key(Key::Enter);
}

/// The restore wizard on its details step, the whole image or partition 2 chosen.
fn restore_to_details(a: &mut App, partition: bool) {
    a.on_key(Key::Char('r'));
    let s = images_store(a);
    a.on_key(Key::Enter);
    a.on_store(Ok(s));
    let e = a.on_key(Key::Enter);
    assert!(
        matches!(e.as_slice(), [Effect::Inspect(p)] if p.local().is_some_and(|p| p.ends_with("laptop.rimg")))
    );
    a.on_image(Ok(summary()));
    if partition {
        a.on_key(Key::Down);
        a.on_key(Key::Down); // partition 2 (ext4)
    }
}

#[test]
fn restore_refuses_unsafe_targets_with_the_reason() {
    let mut a = app();
    restore_to_targets(&mut a, false);
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, RStep::Target);
    let verdict = |dev: &str| {
        w.targets
            .iter()
            .find(|t| t.device == dev)
            .unwrap()
            .verdict
            .clone()
    };
    assert!(verdict("/dev/vdc").is_ok());
    assert!(
        verdict("/dev/vda").is_ok(),
        "the source disk itself may be restored over"
    );
    assert!(verdict("/dev/vdb").unwrap_err().contains("the image"));
    assert!(verdict("/dev/sda").unwrap_err().contains("rescue stick"));
    assert!(verdict("/dev/vdd").unwrap_err().contains("too small"));
    // The first acceptable target is preselected; choosing a refused one is refused.
    assert_eq!(w.targets[w.target_sel].device, "/dev/vda");
    let idx = w
        .targets
        .iter()
        .position(|t| t.device == "/dev/sda")
        .unwrap();
    a.on_key(Key::Home);
    for _ in 0..idx {
        a.on_key(Key::Down);
    }
    assert!(a.on_key(Key::Enter).is_empty());
    assert!(a.status.as_deref().unwrap().contains("refused"));
    assert!(a.status.as_deref().unwrap().contains("rescue stick"));
}

#[test]
fn restore_needs_the_target_name_typed() {
    let mut a = app();
    restore_to_targets(&mut a, false);
    let idx = {
        let Screen::Restore(w) = &a.screen else {
            panic!()
        };
        w.targets
            .iter()
            .position(|t| t.device == "/dev/vdc")
            .unwrap()
    };
    a.on_key(Key::Home);
    for _ in 0..idx {
        a.on_key(Key::Down);
    }
    a.on_key(Key::Enter);
    type_text(&mut a, "vda");
    assert!(
        a.on_key(Key::Enter).is_empty(),
        "a wrong name must not start"
    );
    assert!(a.status.as_deref().unwrap().contains("type vdc"));
    for _ in 0..3 {
        a.on_key(Key::Backspace);
    }
    // Letters are text here, not commands: 'c' does not open a capture, 'q' does not quit.
    type_text(&mut a, "vdc");
    let e = a.on_key(Key::Enter);
    match e.as_slice() {
        [Effect::Start(Request::Restore(s))] => {
            assert_eq!(s.target, PathBuf::from("/dev/vdc"));
            assert!(s.confirmed && s.verify && s.precheck);
            assert_eq!(s.partition, None);
        }
        other => panic!("expected a restore to start, got {other:?}"),
    }
}

#[test]
fn restore_check_first_can_be_turned_off_on_the_details_step() {
    let mut a = app();
    restore_to_details(&mut a, false);
    a.on_key(Key::Char('c'));
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, RStep::Details);
    assert!(!w.precheck);
    a.on_key(Key::Enter);
    match restore_onto(&mut a, "/dev/vdc").as_slice() {
        [Effect::Start(Request::Restore(s))] => assert!(!s.precheck),
        other => panic!("expected a restore to start, got {other:?}"),
    }
}

#[test]
fn partition_restore_targets_partitions() {
    let mut a = app();
    restore_to_targets(&mut a, true);
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.chosen_partition(), Some(2));
    let v = |dev: &str| {
        w.targets
            .iter()
            .find(|t| t.device == dev)
            .unwrap()
            .verdict
            .clone()
    };
    assert!(v("/dev/vda2").is_ok(), "same size partition");
    assert!(v("/dev/vda1").unwrap_err().contains("too small"));
    assert!(v("/dev/vdb1").unwrap_err().contains("the image"));
    assert!(v("/dev/sda2").unwrap_err().contains("rescue stick"));
}

#[test]
fn a_virtual_machine_disk_says_what_it_is() {
    let mut a = app();
    a.on_key(Key::Char('r'));
    let s = images_store(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(s));
    a.on_key(Key::Enter);
    let mut vm = summary();
    vm.virtual_format = Some("qcow2");
    vm.root_hash = String::new();
    a.on_image(Ok(vm));
    let shown = render(&a, 132, 40);
    assert!(shown.contains("A qcow2 virtual machine disk"), "{shown}");
    assert!(shown.contains("as a clone of the disk it holds"), "{shown}");
    assert!(
        !shown.contains("Root hash") && !shown.contains("Created"),
        "{shown}"
    );
    // Its partitions can be restored alone, as an image's.
    a.on_key(Key::Down);
    let Screen::Restore(w) = &a.screen else {
        panic!("not in the restore wizard")
    };
    assert_eq!(w.chosen_partition(), w.image_partitions().first().copied());
    assert!(w.chosen_partition().is_some());
}

#[test]
fn restore_with_no_images_or_a_bad_image_says_so() {
    let mut a = app();
    a.on_key(Key::Char('r'));
    let mut s = images_store(&a);
    s.images.clear();
    a.on_key(Key::Enter);
    a.on_store(Ok(s));
    assert!(a.status.as_deref().unwrap().contains("no images"));
    let s = images_store(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(s));
    a.on_key(Key::Enter);
    a.on_image(Err("reading the image x: bad magic".into()));
    assert!(a.status.as_deref().unwrap().contains("bad magic"));
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, RStep::Image);
}

#[test]
fn clone_refuses_the_stick_and_needs_the_name() {
    let mut a = app();
    a.on_key(Key::Char('x'));
    let Screen::Clone(w) = &a.screen else {
        panic!()
    };
    assert!(w.targets.iter().all(|(d, _)| d.path != "/dev/vda"));
    let v = |p: &str| {
        w.targets
            .iter()
            .find(|(d, _)| d.path == p)
            .unwrap()
            .1
            .clone()
    };
    assert!(v("/dev/sda").unwrap_err().contains("rescue stick"));
    assert!(v("/dev/vdd").unwrap_err().contains("too small"));
    assert!(v("/dev/vdc").is_ok());
    let idx = w
        .targets
        .iter()
        .position(|(d, _)| d.path == "/dev/vdc")
        .unwrap();
    a.on_key(Key::Home);
    for _ in 0..idx {
        a.on_key(Key::Down);
    }
    a.on_key(Key::Enter);
    let Screen::Clone(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CloneStep::Confirm);
    assert!(a.on_key(Key::Enter).is_empty());
    type_text(&mut a, "/dev/vdc");
    assert!(matches!(
        a.on_key(Key::Enter).as_slice(),
        [Effect::Start(Request::Clone(s))] if s.target == std::path::Path::new("/dev/vdc")
    ));
}

#[test]
fn verify_flow_starts_on_the_chosen_image() {
    let mut a = app();
    a.on_key(Key::Char('v'));
    let s = images_store(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(s));
    a.on_key(Key::Down);
    assert!(matches!(
        a.on_key(Key::Enter).as_slice(),
        [Effect::Start(Request::Verify(p))] if p.image.local().is_some_and(|i| i.ends_with("old.rimg"))
    ));
}

#[test]
fn cancel_and_quit_ask_first() {
    let mut a = app();
    a.job = Some(Running {
        spec: Request::Verify(crate::ops::VerifySpec {
            image: PathBuf::from("/x.rimg").into(),
            against: None,
        }),
        progress: None,
        rates: vec![],
        cancel_requested: false,
    });
    a.screen = Screen::Progress;
    assert!(a.on_key(Key::Esc).is_empty());
    assert_eq!(a.overlay, Some(Overlay::ConfirmCancel));
    assert!(a.on_key(Key::Char('n')).is_empty());
    assert_eq!(a.overlay, None);
    a.on_key(Key::Esc);
    assert_eq!(a.on_key(Key::Char('y')), vec![Effect::Cancel]);
    assert!(a.job.as_ref().unwrap().cancel_requested);
    // Quitting on a host while a job runs asks, then cancels before leaving.
    assert!(a.on_key(Key::Char('q')).is_empty());
    assert_eq!(a.overlay, Some(Overlay::ConfirmQuit));
    assert_eq!(a.on_key(Key::Char('y')), vec![Effect::Cancel, Effect::Quit]);
    // Power off is refused while a job runs.
    let mut a = app();
    a.mode = Mode::Pid1;
    a.job = Some(Running {
        spec: Request::Verify(crate::ops::VerifySpec {
            image: PathBuf::from("/x.rimg").into(),
            against: None,
        }),
        progress: None,
        rates: vec![],
        cancel_requested: false,
    });
    a.overlay = Some(Overlay::Power);
    assert!(a.on_key(Key::Char('p')).is_empty());
    assert!(a.status.as_deref().unwrap().contains("cancel it first"));
}

#[test]
fn quit_power_and_menu() {
    let mut a = app();
    assert_eq!(a.on_key(Key::Char('q')), vec![Effect::Quit]);
    let mut a = app();
    a.mode = Mode::Pid1;
    assert!(a.on_key(Key::Char('q')).is_empty());
    assert_eq!(a.overlay, Some(Overlay::Power));
    assert_eq!(a.on_key(Key::Char('p')), vec![Effect::PowerOff]);
    let mut a = app();
    a.mode = Mode::Pid1;
    a.on_key(Key::Char('p'));
    assert_eq!(a.on_key(Key::Char('r')), vec![Effect::Reboot]);
    // Host: no power off, a hint instead.
    let mut a = app();
    a.on_key(Key::Char('p'));
    assert!(a.on_key(Key::Char('p')).is_empty());
    assert!(a.status.as_deref().unwrap().contains("quit with q"));
    // The menu runs the same actions.
    let mut a = app();
    keys(&mut a, &[Key::Enter, Key::Down, Key::Enter]);
    assert!(matches!(a.screen, Screen::Restore(_)));
}

#[test]
fn hotplug_keeps_the_selection_and_logs_changes() {
    let mut a = app();
    select_row(&mut a, "/dev/vdb1");
    let mut r = report();
    r.disks.remove(2); // vdc unplugged
    let mut usb = disk("sdb", "NEW", Transport::Usb, 8 << 30);
    usb.removable = true;
    r.disks.insert(0, usb);
    a.set_report(r);
    assert_eq!(a.row_path(&a.rows[a.sel]).as_deref(), Some("/dev/vdb1"));
    assert!(a.log.iter().any(|l| l == "disk appeared: /dev/sdb"));
    assert!(a.log.iter().any(|l| l == "disk removed: /dev/vdc"));
}

#[test]
fn esc_on_the_first_step_of_a_wizard_returns_to_the_overview() {
    let mut a = app();
    a.on_key(Key::Char('v'));
    a.on_key(Key::Esc);
    assert_eq!(a.screen, Screen::Overview);
}
