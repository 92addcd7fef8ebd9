//! The interface's wizards against real repositories in a folder: an encrypted repository is listed as
//! such, a wrong passphrase is said and asked again, the right one lists its snapshots, and the
//! snapshot chosen is verified and restored with it; the capture wizard makes a new encrypted repository
//! (the passphrase typed twice) and captures into an existing one after its passphrase is checked. The
//! effects the wizards ask for (open a store, look at a repository, read an image) are carried out for
//! real ([`answer_now`]), and the jobs they start run through `ops` as the interface runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::path::Path;

use builder::fixtures;
use rescue::detect::{self, DetectOptions};
use rescue::ops::{self, Location, Request};
use rescue::store::Store;
use rescue::tui::app::{App, Effect, Key, Mode, Screen};
use rescue::tui::capture::CapStep;
use rescue::tui::picker::PickRow;
use rescue::tui::restore::RStep;

const PASS: &str = "tui passphrase 7";

fn type_text(a: &mut App, text: &str) {
    let keys: Vec<Key> = text.chars().map(Key::Char).collect();
    assert!(press(a, &keys).is_empty());
}

/// Run the job a wizard started, as the interface does; its outcome.
fn run(effects: Vec<Effect>) -> ops::Outcome {
    let [Effect::Start(req)] = effects.as_slice() else {
        panic!("no job started: {effects:?}")
    };
    let how = ops::RunOptions {
        create_folder: true,
        ..Default::default()
    };
    ops::run(
        req,
        &how,
        &DetectOptions::default(),
        ops::Control::default(),
    )
}

fn status(a: &App) -> String {
    a.status.clone().unwrap_or_default()
}

fn cli_capture(disk: &Path, repo: &Path, name: &str, pass_file: Option<&Path>) {
    let mut args = vec!["capture", s(disk), "--repo", s(repo), "--name", name];
    if let Some(f) = pass_file {
        args.extend(["--passphrase-file", s(f)]);
    }
    let (rc, out) = rescue(&args);
    assert_eq!(rc, 0, "{out}");
}

/// The root hash of the only snapshot `rescue snapshots` lists.
fn root_hash(repo: &Path, pass_file: Option<&Path>) -> String {
    let mut args = vec!["snapshots", s(repo), "--json"];
    if let Some(f) = pass_file {
        args.extend(["--passphrase-file", s(f)]);
    }
    let (rc, out, err) = rescue_split(&args);
    assert_eq!(rc, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["snapshots"][0]["root_hash"].as_str().unwrap().to_string()
}

#[test]
fn encrypted_repositories_are_unlocked_in_the_restore_and_verify_wizards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let store = d.join("store");
    let pass_file = d.join("pass");
    std::fs::write(&pass_file, format!("{PASS}\n")).unwrap();
    let (plain, vault) = (store.join("plain"), store.join("vault"));
    std::fs::create_dir_all(&store).unwrap();
    let (rc, out) = rescue(&["repo", "init", s(&plain)]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = rescue(&[
        "repo",
        "init",
        s(&vault),
        "--encrypt",
        "--passphrase-file",
        s(&pass_file),
    ]);
    assert_eq!(rc, 0, "{out}");
    cli_capture(&disk, &plain, "pc", None);
    cli_capture(&disk, &vault, "pc", Some(&pass_file));

    // Verify: the folder's list has the plain snapshot and the encrypted repository, locked.
    let mut a = App::new(Mode::Host, Default::default(), 1_796_000_000);
    a.folders = vec![Store::directory(&store)];
    press(&mut a, &[Key::Char('v'), Key::Enter]);
    let Screen::Verify(w) = &a.screen else {
        panic!("{:?}", status(&a))
    };
    let rows = w.pick.rows();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        matches!(&rows[0], PickRow::Image { shown, .. } if shown.starts_with("plain::pc@")),
        "{rows:?}"
    );
    assert!(
        matches!(&rows[1], PickRow::Locked { shown, .. } if shown.contains("vault")),
        "{rows:?}"
    );
    press(&mut a, &[Key::End, Key::Enter]);
    assert!(a.typing(), "the passphrase field has the keyboard");
    // A wrong passphrase: said, the field emptied, asked again.
    type_text(&mut a, "not it");
    press(&mut a, &[Key::Enter]);
    assert!(status(&a).contains("wrong passphrase"), "{}", status(&a));
    let Screen::Verify(w) = &a.screen else {
        panic!()
    };
    assert!(w.pick.pass.as_ref().unwrap().first.expose().is_empty());
    type_text(&mut a, PASS);
    press(&mut a, &[Key::Enter]);
    let Screen::Verify(w) = &a.screen else {
        panic!()
    };
    assert!(w.pick.pass.is_none(), "{}", status(&a));
    let rows = w.pick.rows();
    assert!(
        matches!(&rows[w.pick.image_sel], PickRow::Image { shown, .. } if shown.starts_with("vault::pc@")),
        "{rows:?} {}",
        w.pick.image_sel
    );
    // The snapshot chosen carries the passphrase into the job (never shown).
    let started = press(&mut a, &[Key::Enter]);
    if let [Effect::Start(Request::Verify(v))] = started.as_slice() {
        assert!(!v.image.to_string().contains(PASS));
        assert!(!format!("{v:?}").contains(PASS));
    }
    let out = run(started);
    assert!(out.ok, "{:?}", out.error);

    // Restore: the encrypted snapshot's details read with the passphrase typed.
    let mut a = App::new(Mode::Host, Default::default(), 1_796_000_000);
    a.folders = vec![Store::directory(&store)];
    press(&mut a, &[Key::Char('r'), Key::Enter, Key::End, Key::Enter]);
    type_text(&mut a, PASS);
    press(&mut a, &[Key::Enter, Key::Enter]);
    let Screen::Restore(w) = &a.screen else {
        panic!()
    };
    assert_eq!(w.step, RStep::Details, "{}", status(&a));
    let image = w.image.as_ref().unwrap();
    assert_eq!(image.root_hash, root_hash(&vault, Some(&pass_file)));
    assert!(matches!(&image.location, Location::Snapshot(s) if s.passphrase.is_some()));
}

#[test]
fn the_capture_wizard_makes_an_encrypted_repository_and_unlocks_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let store = d.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let report = detect::detect_paths(std::slice::from_ref(&disk), &DetectOptions::default());

    let capture_into = |name: &str, typed: &[&str]| -> ops::Outcome {
        let mut a = App::new(Mode::Host, report.clone(), 1_796_000_000);
        a.folders = vec![Store::directory(&store)];
        // The disk (the overview's first row), the whole of it, the folder.
        press(&mut a, &[Key::Char('c'), Key::Enter, Key::Enter]);
        let Screen::Capture(w) = &a.screen else {
            panic!("{}", status(&a))
        };
        assert_eq!(w.step, CapStep::Name, "{}", status(&a));
        let erase = vec![Key::Backspace; w.name.chars().count()];
        press(&mut a, &erase);
        type_text(&mut a, name);
        press(&mut a, &[Key::Enter]);
        for t in typed {
            let Screen::Capture(w) = &a.screen else {
                panic!()
            };
            match w.step {
                // A new repository: `e` encrypts it; the passphrase is typed twice.
                CapStep::Summary => {
                    assert!(w.new_repo(), "{}", status(&a));
                    press(&mut a, &[Key::Char('e')]);
                    type_text(&mut a, t);
                    press(&mut a, &[Key::Enter]);
                    type_text(&mut a, t);
                    press(&mut a, &[Key::Enter]);
                }
                CapStep::Pass => {
                    type_text(&mut a, t);
                    press(&mut a, &[Key::Enter]);
                }
                other => panic!("{other:?}: {}", status(&a)),
            }
        }
        let Screen::Capture(w) = &a.screen else {
            panic!()
        };
        assert_eq!(w.step, CapStep::Summary, "{}", status(&a));
        run(press(&mut a, &[Key::Enter]))
    };

    // A new repository, encrypted with the passphrase typed twice.
    let out = capture_into("vault::pc", &[PASS]);
    assert!(out.ok, "{:?}", out.error);
    let vault = store.join("vault");
    let (rc, out, err) = rescue_split(&["snapshots", s(&vault)]);
    assert_ne!(rc, 0);
    assert!(format!("{out}{err}").contains("is encrypted"), "{out}{err}");
    let pass_file = d.join("pass");
    std::fs::write(&pass_file, PASS).unwrap();
    let first = root_hash(&vault, Some(&pass_file));

    // Snapshot times are to the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The existing one: a wrong passphrase is refused before the summary, the right one goes on.
    let out = capture_into("vault::pc", &["wrong", PASS]);
    assert!(out.ok, "{:?}", out.error);
    let (rc, out, err) = rescue_split(&[
        "snapshots",
        s(&vault),
        "--json",
        "--passphrase-file",
        s(&pass_file),
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{v}");
    assert_eq!(snaps[0]["root_hash"].as_str().unwrap(), first);
    // The unchanged disk: the second snapshot stored almost nothing new.
    assert!(
        snaps[1]["new_bytes"].as_u64().unwrap() * 100 < snaps[0]["new_bytes"].as_u64().unwrap()
    );
}
