//! The offer to grow the rescue stick's data partition: snapshots of the overview with the offer and of
//! the dialog (80×24 and 132×40), and the state machine around it (every way it is not offered, no
//! start without `y`, no cancelling halfway, re-detection after the result).

use super::app::*;
use super::tests::{app, keys, part, render, select_row, snap, MIB};
use crate::detect::FsKind;
use crate::plan::grow::DataContents;

/// The stick from `tests::report` as it really looks after `dd` onto a 16 GB stick: the 45 MiB image's
/// backup GPT where the image ended, the rest unused; its data partition read and found empty.
fn stick_app() -> App {
    let mut a = app();
    let mut r = a.report.clone();
    let sda = r.disks.iter_mut().find(|d| d.path == "/dev/sda").unwrap();
    sda.size_bytes = 16_000_000_000;
    let g = sda.gpt.as_mut().unwrap();
    g.backup_header_lba = Some(45 * 2048 - 1);
    g.backup_entries_lba = Some(45 * 2048 - 33);
    g.last_usable_lba = 45 * 2048 - 34;
    sda.problems = vec![
        "the primary GPT header places the backup header at LBA 92159, but the disk's last LBA is \
         31249999: the disk was resized or the image comes from a disk of another size (gdisk/sgdisk \
         -e moves the backup to the end)"
            .into(),
    ];
    let parts = vec![
        part(sda, 1, 1, 36, Some(FsKind::Vfat), "RESCUE-EFI"),
        part(sda, 2, 37, 7, Some(FsKind::Exfat), "RESCUE-DATA"),
    ];
    sda.partitions = parts;
    a.set_report(r);
    a.on_stick_data("/dev/sda".into(), DataContents::Empty);
    a
}

#[test]
fn snapshot_offer_and_dialog() {
    let mut a = stick_app();
    select_row(&mut a, "/dev/sda");
    snap("grow_offer", &a);
    assert!(render(&a, 80, 24).contains("press g to grow its data partition"));
    a.on_key(Key::Char('g'));
    snap("grow_dialog", &a);
}

#[test]
fn growing_needs_the_dialog_and_y() {
    let mut a = stick_app();
    assert!(a.on_key(Key::Char('g')).is_empty());
    let Some(Overlay::ConfirmGrow(plan)) = a.overlay.clone() else {
        panic!("no dialog: {:?} / {:?}", a.overlay, a.status)
    };
    assert_eq!(plan.disk, "/dev/sda");
    assert_eq!(plan.partition.as_deref(), Some("/dev/sda2"));
    assert_eq!(plan.old_size(), 7 * MIB);
    // Other keys do nothing; n and Esc close without effects.
    assert!(keys(&mut a, &[Key::Enter, Key::Char('c')]).is_empty());
    assert!(matches!(a.overlay, Some(Overlay::ConfirmGrow(_))));
    assert!(a.on_key(Key::Char('n')).is_empty());
    assert_eq!(a.overlay, None);
    a.on_key(Key::Char('g'));
    assert!(a.on_key(Key::Esc).is_empty());
    assert_eq!(a.overlay, None);
    assert_eq!(a.screen, Screen::Overview);

    a.on_key(Key::Char('g'));
    let e = a.on_key(Key::Char('y'));
    assert_eq!(e, vec![Effect::Start(Request::Grow(plan.clone()))]);
    assert_eq!(a.screen, Screen::Progress);
    // It is not stopped halfway.
    assert!(a.on_key(Key::Esc).is_empty());
    assert_eq!(a.overlay, None);
    assert!(a.status.as_deref().unwrap().contains("not stopped halfway"));
    a.on_finished(JobResult {
        ok: true,
        title: Request::Grow(plan).title(),
        lines: vec!["Data partition /dev/sda2: 7.0 MiB → 14.9 GiB".into()],
        log: None,
    });
    assert!(matches!(a.screen, Screen::Result(_)));
    assert_eq!(a.on_key(Key::Enter), vec![Effect::Redetect]);
}

#[test]
fn the_menu_offers_it_too() {
    let mut a = stick_app();
    let g = MENU.iter().position(|m| m.1 == 'g').unwrap();
    a.on_key(Key::Enter);
    for _ in 0..g {
        a.on_key(Key::Down);
    }
    a.on_key(Key::Enter);
    assert!(matches!(a.overlay, Some(Overlay::ConfirmGrow(_))));
}

#[test]
fn no_offer_says_why() {
    // Files on the data partition.
    let mut a = stick_app();
    a.on_stick_data(
        "/dev/sda".into(),
        DataContents::Files(vec!["laptop.rimg".into()]),
    );
    assert!(!render(&a, 132, 40).contains("press g"));
    assert!(a.on_key(Key::Char('g')).is_empty());
    assert_eq!(a.overlay, None);
    let s = a.status.clone().unwrap();
    assert!(s.contains("holds files (laptop.rimg)"), "{s}");
    select_row(&mut a, "/dev/sda");
    a.status = None;
    assert!(render(&a, 132, 40).contains("data partition not grown"));

    // Not read yet.
    let mut a = stick_app();
    a.stick_data.clear();
    a.on_key(Key::Char('g'));
    assert!(a.status.as_deref().unwrap().contains("still being read"));

    // A stick the image fills: nothing is offered, g says so.
    let mut a = app();
    a.on_key(Key::Char('g'));
    assert!(a.status.as_deref().unwrap().starts_with("not grown"));
    assert_eq!(a.overlay, None);

    // No stick at all (a host).
    let mut a = app();
    let mut r = a.report.clone();
    r.disks.retain(|d| !d.boot_medium);
    a.set_report(r);
    a.on_key(Key::Char('g'));
    assert!(a
        .status
        .as_deref()
        .unwrap()
        .contains("no rescue stick found"));
}
