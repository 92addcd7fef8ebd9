//! Repositories in the interface: a drive holding one proposes a new snapshot in it (`FOLDER::NAME`,
//! editable), the request carries the snapshot location, and the restore wizard's image list offers a
//! repository's snapshots, which open as images.

use std::path::PathBuf;

use super::app::*;
use super::capture::CapStep;
use super::tests::{app, images_store, snap, type_text};
use crate::ops::{FoundRepo, Location};
use crate::store::ImageEntry;

const DIR: &str = "/run/rescue/mnt/vdb1";

fn with_repo(a: &App) -> OpenedStore {
    let mut s = images_store(a);
    s.repos = vec![FoundRepo {
        rel: "backups".into(),
        encrypted: false,
        snapshots: vec![],
    }];
    s.images.push(ImageEntry {
        path: PathBuf::from(format!("{DIR}/backups::pc-SRC@2026-12-07T08:49:27Z")),
        size_bytes: 30 << 20,
        modified_unix: 1_796_000_000,
    });
    s
}

#[test]
fn a_drive_with_a_repository_proposes_a_snapshot_in_it() {
    let mut a = app();
    a.on_key(Key::Char('c'));
    a.on_key(Key::Enter);
    let store = with_repo(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(store));
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.name, "backups::pc-SRC");
    snap("capture_name_repository", &a);
    // The repository is looked at before the summary (whether it exists, is encrypted).
    let e = a.on_key(Key::Enter);
    let [Effect::LookAtRepo(repo, None)] = e.as_slice() else {
        panic!("{e:?}")
    };
    assert_eq!(
        *repo,
        Location::Local(PathBuf::from(format!("{DIR}/backups")))
    );
    a.on_repo(Ok(crate::ops::RepoState {
        exists: true,
        encrypted: false,
        snapshots: vec![],
        unlocked: false,
    }));
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CapStep::Summary, "{:?}", a.status);
    let e = a.on_key(Key::Enter);
    let [Effect::Start(Request::Capture(spec))] = e.as_slice() else {
        panic!("{e:?}")
    };
    let Location::Snapshot(s) = &spec.output else {
        panic!("{:?}", spec.output)
    };
    assert_eq!(s.name, "pc-SRC");
    assert_eq!(
        *s.repo,
        Location::Local(PathBuf::from(format!("{DIR}/backups")))
    );

    // A bad snapshot name is refused with the rule; a plain name is an image file again.
    let mut a = app();
    a.on_key(Key::Char('c'));
    a.on_key(Key::Enter);
    let store = with_repo(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(store));
    type_text(&mut a, " x");
    a.on_key(Key::Enter);
    assert!(
        a.status.clone().unwrap().contains("is not a snapshot name"),
        "{:?}",
        a.status
    );
    let Screen::Capture(w) = &mut a.screen else {
        panic!()
    };
    w.name = "images/pc".into();
    a.on_key(Key::Enter);
    let Screen::Capture(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, CapStep::Summary);
    assert!(matches!(w.output(), Some(Location::Local(p)) if p.ends_with("images/pc.rimg")));
}

#[test]
fn a_repositorys_snapshots_are_offered_for_restore() {
    let mut a = app();
    a.on_key(Key::Char('r'));
    let store = with_repo(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(store));
    let screen = super::tests::render(&a, 100, 30);
    assert!(
        screen.contains("backups::pc-SRC@2026-12-07T08:49:27Z"),
        "{screen}"
    );
    a.on_key(Key::End);
    let e = a.on_key(Key::Enter);
    let [Effect::Inspect(Location::Snapshot(s))] = e.as_slice() else {
        panic!("{e:?}")
    };
    assert_eq!(s.name, "pc-SRC");
    assert_eq!(s.when, crate::url::When::At("2026-12-07T08:49:27Z".into()));
}

#[test]
fn an_encrypted_repository_is_listed_and_its_passphrase_never_shown() {
    let mut a = app();
    a.on_key(Key::Char('r'));
    let mut store = images_store(&a);
    store.repos = vec![FoundRepo {
        rel: "vault".into(),
        encrypted: true,
        snapshots: vec![],
    }];
    a.on_key(Key::Enter);
    a.on_store(Ok(store));
    let screen = super::tests::render(&a, 100, 30);
    assert!(
        screen.contains("vault::  (encrypted repository"),
        "{screen}"
    );
    a.on_key(Key::End);
    assert!(a.on_key(Key::Enter).is_empty());
    type_text(&mut a, "s3cret pass");
    snap("restore_passphrase", &a);
    let screen = super::tests::render(&a, 100, 30);
    assert!(
        !screen.contains("s3cret") && screen.contains("***********"),
        "{screen}"
    );
    let e = a.on_key(Key::Enter);
    let [Effect::LookAtRepo(Location::Local(p), Some(pass))] = e.as_slice() else {
        panic!("{e:?}")
    };
    assert_eq!(p, &PathBuf::from(format!("{DIR}/vault")));
    assert_eq!(pass.expose(), "s3cret pass");
    // While it is checked, keys wait; Esc stops waiting and the answer is then ignored.
    a.on_key(Key::Esc);
    a.on_repo(Err("wrong passphrase".into()));
    assert!(a.status.is_none() || !a.status.clone().unwrap().contains("wrong"));
}

#[test]
fn a_new_repository_can_be_encrypted_from_the_summary() {
    let mut a = app();
    a.on_key(Key::Char('c'));
    a.on_key(Key::Enter);
    let store = images_store(&a);
    a.on_key(Key::Enter);
    a.on_store(Ok(store));
    let Screen::Capture(w) = &mut a.screen else {
        panic!()
    };
    w.name = "vault::pc".into();
    a.on_key(Key::Enter);
    a.on_repo(Ok(crate::ops::RepoState {
        exists: false,
        encrypted: false,
        snapshots: vec![],
        unlocked: false,
    }));
    let screen = super::tests::render(&a, 100, 30);
    assert!(
        screen.contains("new, made by this capture (not encrypted; e encrypts it)"),
        "{screen}"
    );
    a.on_key(Key::Char('e'));
    type_text(&mut a, "pw");
    a.on_key(Key::Enter);
    type_text(&mut a, "pw");
    snap("capture_new_passphrase", &a);
    a.on_key(Key::Enter);
    let e = a.on_key(Key::Enter);
    let [Effect::Start(Request::Capture(spec))] = e.as_slice() else {
        panic!("{e:?} {:?}", a.status)
    };
    let Location::Snapshot(s) = &spec.output else {
        panic!()
    };
    assert_eq!(s.passphrase.as_ref().unwrap().expose(), "pw");
}
