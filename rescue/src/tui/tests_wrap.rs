//! Nothing a user needs is cut at 80×24: every kind of refusal, a destination's reason, and long messages
//! are shown whole (wrapped), each checked word for word on the rendered screen and kept as a snapshot.

use super::app::{Key, Screen};
use super::tests::{app, images_store, render, summary};
use crate::plan::Refusal;

/// The screen's text with the box drawing removed and whitespace collapsed, to find a wrapped message in.
fn flat(screen: &str) -> String {
    screen
        .chars()
        .map(|c| {
            if "│─┌┐└┘├┤".contains(c) {
                ' '
            } else {
                c
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_whole(screen: &str, text: &str) {
    let want = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat(screen).contains(&want),
        "not shown whole at 80x24:\n{want}\n--- screen:\n{screen}"
    );
}

/// Every kind of refusal a restore target can get, with the longest realistic names.
fn refusals() -> Vec<(&'static str, Refusal)> {
    vec![
        (
            "boot_medium",
            Refusal::TargetIsBootMedium {
                target: "/dev/sdc".into(),
            },
        ),
        (
            "is_image",
            Refusal::TargetIsImage {
                target: "/run/rescue/mnt/sdb1/images/laptop.rimg".into(),
            },
        ),
        (
            "image_on_disk",
            Refusal::ImageOnDisk {
                image: "/run/rescue/mnt/vdb1/images/QEMU_HARDDISK-SRC-2026-12-06.rimg".into(),
                disk: "/dev/vdb".into(),
                action: "the disk being overwritten",
            },
        ),
        (
            "mounted",
            Refusal::Mounted {
                what: "/dev/nvme0n1".into(),
                mounts: "/dev/nvme0n1p1 on /run/rescue/mnt/nvme0n1p1, /dev/nvme0n1p2 on /mnt/data"
                    .into(),
            },
        ),
        (
            "too_small",
            Refusal::TooSmall {
                target: "partition 3 of /dev/nvme0n1".into(),
                unit: "partition",
                have: 21_474_836_480,
                have_h: "20.0 GiB".into(),
                need: 64_424_509_440,
                need_h: "60.0 GiB".into(),
            },
        ),
        (
            "sector_size",
            Refusal::SectorSize {
                target: "/dev/sdd".into(),
                target_sector: 4096,
                image_sector: 512,
            },
        ),
        (
            "read_only",
            Refusal::ReadOnly {
                target: "/dev/mmcblk0".into(),
            },
        ),
        (
            "partial_image",
            Refusal::PartialImage {
                image: "/run/rescue/mnt/vdb1/images/laptop.rimg".into(),
                partitions: "2, 3".into(),
            },
        ),
        (
            "onto_partitioned",
            Refusal::PartitionOntoPartitionedDisk {
                target: "/dev/sdb".into(),
                image_partition: 2,
                partitions: "1, 2, 3, 4".into(),
            },
        ),
        (
            "source",
            Refusal::TargetIsSource {
                target: "/dev/sda".into(),
            },
        ),
    ]
}

#[test]
fn every_refusal_is_shown_whole_at_80x24() {
    for (name, refusal) in refusals() {
        let mut a = app();
        a.on_key(Key::Char('r'));
        let s = images_store(&a);
        a.on_key(Key::Enter);
        a.on_store(Ok(s));
        a.on_key(Key::Enter);
        a.on_image(Ok(summary()));
        a.on_key(Key::Enter);
        let why = refusal.to_string();
        let Screen::Restore(w) = &mut a.screen else {
            panic!()
        };
        let sel = w.target_sel;
        w.targets[sel].verdict = Err(why.clone());
        let screen = render(&a, 80, 24);
        assert_whole(&screen, &why);
        insta::assert_snapshot!(format!("refusal_{name}_80x24"), screen);
        // Choosing it says the same in the message area, also whole.
        a.on_key(Key::Enter);
        assert_whole(&render(&a, 80, 24), &format!("refused: {why}"));
    }
}

#[test]
fn a_destination_that_cannot_hold_the_image_says_why_whole() {
    let mut a = app();
    a.on_key(Key::Char('c'));
    a.on_key(Key::Enter);
    let why =
        "it is an EFI system partition: the firmware reads it at every boot and it is too small \
               for images; use another drive, or the rescue stick's data partition";
    let Screen::Capture(w) = &mut a.screen else {
        panic!()
    };
    w.stores[w.store_sel].unusable = Some(why.into());
    let screen = render(&a, 80, 24);
    assert_whole(&screen, why);
    insta::assert_snapshot!("refusal_destination_80x24", screen);
}

#[test]
fn long_messages_are_wrapped_and_the_log_keeps_them() {
    let mut a = app();
    let advice = "the data partition cannot grow while it is mounted: restart the rescue system without \
                  using the stick's data partition (do not choose it as a destination), then press g \
                  again; nothing was written";
    a.note(advice);
    assert_whole(&render(&a, 80, 24), advice);
    a.on_key(Key::Char('l'));
    let log = render(&a, 80, 24);
    assert_whole(&log, advice);
    // Scrolling up past the first entry keeps the pane full.
    for _ in 0..50 {
        a.on_key(Key::PageUp);
    }
    assert_whole(&render(&a, 80, 24), advice);
}

/// A drive the TUI mounted (to hold images) can be unmounted from the overview (`u`, or the menu), so it
/// can then be restored or cloned onto; what is mounted is shown.
#[test]
fn mounted_drives_can_be_unmounted() {
    use super::app::Effect;
    use super::tests::select_row;
    let mut report = super::tests::report();
    report.disks[1].partitions[0].mounts = vec!["/run/rescue/mnt/vdb1".into()];
    let mut a = super::App::new(super::Mode::Pid1, report, 0);
    select_row(&mut a, "/dev/vdb1");
    assert!(render(&a, 80, 24).contains("mounted on /run/rescue/mnt/vdb1 (u unmounts it)"));
    let e = a.on_key(Key::Char('u'));
    assert_eq!(
        e,
        vec![Effect::Unmount(vec!["/run/rescue/mnt/vdb1".into()])]
    );
    a.on_unmounted(vec![Ok(
        "unmounted /run/rescue/mnt/vdb1; the drive can be removed".into(),
    )]);
    assert!(a.status.as_deref().unwrap().contains("can be removed"));
    // The whole disk's row unmounts its partitions too; an unmounted one says so.
    select_row(&mut a, "/dev/vdb");
    assert_eq!(a.on_key(Key::Char('u')).len(), 1);
    select_row(&mut a, "/dev/vdc");
    assert!(a.on_key(Key::Char('u')).is_empty());
    assert!(a
        .status
        .as_deref()
        .unwrap()
        .contains("/dev/vdc is not mounted"));
}
