//! The interface's "browse an image" wizard against real images in a folder: an image of ours and a
//! qcow2 virtual disk are listed, their partitions offered, folders opened and left, files and a folder
//! marked across folders and copied into a new folder on another drive, byte-identical to the files the
//! fixture put there; an existing folder is never overwritten. The effects the wizard asks for (open a
//! store, read an image, list a folder) are carried out for real ([`answer_now`]), and the copy runs
//! through `ops` as the interface runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::path::Path;

use builder::fixtures;
use rescue::detect::DetectOptions;
use rescue::ops::{self, Request};
use rescue::store::Store;
use rescue::tui::app::{App, Effect, Key, Mode, Screen};
use rescue::tui::browse::BStep;
use rescue::tui::job::JobResult;

fn status(a: &App) -> String {
    a.status.clone().unwrap_or_default()
}

fn wiz(a: &App) -> &rescue::tui::browse::BrowseWiz {
    match &a.screen {
        Screen::Browse(w) => w,
        _ => panic!("not in the browse wizard: {}", status(a)),
    }
}

/// Move the cursor of the folder shown onto `name`.
fn select(a: &mut App, name: &str) {
    let i = wiz(a)
        .entries
        .iter()
        .position(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name} in {}: {:?}", wiz(a).path, wiz(a).entries));
    press(a, &[Key::Home]);
    for _ in 0..i {
        press(a, &[Key::Down]);
    }
}

/// Choose the drive `n` (0-based) of the first step, then the image `image` on it.
fn open_image(a: &mut App, image: &str) {
    press(a, &[Key::Char('b'), Key::Enter]);
    let rows = wiz(a).pick.rows();
    let i = rows
        .iter()
        .position(|r| format!("{r:?}").contains(image))
        .unwrap_or_else(|| panic!("{image} is not listed: {rows:?}"));
    for _ in 0..i {
        press(a, &[Key::Down]);
    }
    press(a, &[Key::Enter]);
}

/// Copy what is marked onto the second drive, into the folder proposed; the job's outcome.
fn copy_out(a: &mut App) -> (Request, ops::Outcome) {
    press(a, &[Key::Char('c')]);
    assert_eq!(wiz(a).step, BStep::Dest, "{}", status(a));
    press(a, &[Key::Down, Key::Enter]);
    assert_eq!(wiz(a).step, BStep::Name, "{}", status(a));
    let started = press(a, &[Key::Enter]);
    let [Effect::Start(req)] = started.as_slice() else {
        panic!("no job started: {started:?} {}", status(a))
    };
    let out = ops::run(
        req,
        &ops::RunOptions::default(),
        &DetectOptions::default(),
        ops::Control::default(),
    );
    (req.clone(), out)
}

fn out_dir(req: &Request) -> std::path::PathBuf {
    match req {
        Request::CopyFiles(s) => s.out_dir.clone(),
        other => panic!("{other:?}"),
    }
}

fn same_file(a: &Path, b: &Path) {
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
        "{} differs from {}",
        a.display(),
        b.display()
    );
}

#[test]
fn files_are_browsed_marked_and_copied_out_of_an_image_and_a_vm_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let tree = d.join("tree");
    fixtures::sample_tree(&tree).unwrap();
    let (images, copies) = (d.join("images"), d.join("copies"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&copies).unwrap();
    let (rc, o) = rescue(&["capture", s(&disk), "-o", s(&images.join("pc.rimg"))]);
    assert_eq!(rc, 0, "{o}");
    let (ok, says) = builder::checks::tool(
        std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&disk)
            .arg(images.join("vm.qcow2")),
    );
    assert!(ok, "{says}");

    let mut a = App::new(Mode::Host, Default::default(), 1_796_000_000);
    a.folders = vec![Store::directory(&images), Store::directory(&copies)];

    // Our image: four partitions offered; the ext4 one (2) opened at its root.
    open_image(&mut a, "pc.rimg");
    assert_eq!(wiz(&a).step, BStep::Partition, "{}", status(&a));
    assert_eq!(wiz(&a).parts.len(), 4, "{:?}", wiz(&a).parts);
    press(&mut a, &[Key::Down, Key::Enter]);
    assert_eq!(wiz(&a).step, BStep::Files, "{}", status(&a));
    assert_eq!(wiz(&a).path, "/");
    assert!(wiz(&a).fs.contains("ext4"), "{}", wiz(&a).fs);
    // Into docs: a file and a folder marked; back up (the cursor on docs), README marked too.
    select(&mut a, "docs");
    press(&mut a, &[Key::Enter]);
    assert_eq!(wiz(&a).path, "/docs");
    select(&mut a, "file3.bin");
    press(&mut a, &[Key::Char(' ')]);
    select(&mut a, "notes");
    press(&mut a, &[Key::Char(' ')]);
    press(&mut a, &[Key::Backspace]);
    assert_eq!(wiz(&a).path, "/");
    assert_eq!(
        wiz(&a).entries[wiz(&a).sel].name,
        "docs",
        "the cursor where it was"
    );
    select(&mut a, "README.TXT");
    press(&mut a, &[Key::Char(' ')]);
    assert_eq!(wiz(&a).marked.len(), 3);
    let (req, out) = copy_out(&mut a);
    assert!(out.ok, "{:?}", out.error);
    let to = out_dir(&req);
    assert!(to.starts_with(&copies), "{}", to.display());
    same_file(&to.join("README.TXT"), &tree.join("README.TXT"));
    same_file(&to.join("file3.bin"), &tree.join("docs/file3.bin"));
    same_file(
        &to.join("notes/todo.txt"),
        &tree.join("docs/notes/todo.txt"),
    );
    let shown = JobResult::of(&req, &out);
    assert!(
        shown.ok && shown.lines.iter().any(|l| l.starts_with("Copied")),
        "{shown:?}"
    );

    // The same folder again: refused before anything is written, with what to do.
    let name = to.strip_prefix(&copies).unwrap().to_path_buf();
    let mut a = App::new(Mode::Host, Default::default(), 1_796_000_000);
    a.folders = vec![Store::directory(&images), Store::directory(&copies)];
    open_image(&mut a, "pc.rimg");
    press(&mut a, &[Key::Down, Key::Enter]);
    select(&mut a, "README.TXT");
    press(&mut a, &[Key::Char('c'), Key::Down, Key::Enter]);
    let Screen::Browse(w) = &mut a.screen else {
        panic!()
    };
    w.name = name.display().to_string();
    assert!(press(&mut a, &[Key::Enter]).is_empty());
    assert!(status(&a).contains("never overwritten"), "{}", status(&a));

    // A qcow2 virtual disk: its partitions found through its own table; the FAT one's README copied.
    let mut a = App::new(Mode::Host, Default::default(), 1_796_000_000);
    a.folders = vec![Store::directory(&images), Store::directory(&copies)];
    open_image(&mut a, "vm.qcow2");
    assert_eq!(wiz(&a).step, BStep::Partition, "{}", status(&a));
    press(&mut a, &[Key::Enter]);
    assert_eq!(wiz(&a).step, BStep::Files, "{}", status(&a));
    select(&mut a, "README.TXT");
    let (req, out) = copy_out(&mut a);
    assert!(out.ok, "{:?}", out.error);
    same_file(&out_dir(&req).join("README.TXT"), &tree.join("README.TXT"));
}
