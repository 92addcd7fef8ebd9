//! Browsing an image's files through the TUI, in the rescue system: an image of the demo disk on an ext4
//! drive, its ext4 partition opened, a folder entered and left, a file, a folder and a file of the root
//! marked, and copied onto a second drive; on the host afterwards that drive is clean and holds exactly
//! those files, byte for byte the fixture's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use builder::qemu::{Bus, Disk};

mod common;
use common::*;

/// Backspace as a terminal sends it.
const BACKSPACE: &str = "\x7f";

#[test]
fn files_are_browsed_and_copied_out_of_an_image_through_the_tui() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let src = source_disk(work);
    let image = work.join("pc.rimg");
    host_capture(&src.path, &image);
    let image_drive = work.join("images.img");
    ext4_drive(&image_drive, 256);
    put_file(&image_drive, &image, "pc.rimg");
    let dest = work.join("dest.img");
    ext4_drive(&dest, 96);

    let mut vm = vm();
    vm.disks
        .push(Disk::new(&image_drive, Bus::Virtio).serial("IMG"));
    vm.disks.push(Disk::new(&dest, Bus::Virtio).serial("DST"));
    let mut s = Session::boot(vm, "Disks (2)");

    // The image drive → the image → the ext4 partition (of four) → its root.
    s.send("b");
    s.wait("Step 1 of 4", STEP);
    s.select("256.0 MiB");
    s.send(ENTER);
    s.wait("Step 2 of 4: the image", STEP);
    s.select("pc.rimg");
    s.send(ENTER);
    let screen = s.wait("the partition whose files", STEP);
    assert!(
        screen.contains("vfat") && screen.contains("ntfs"),
        "{screen}"
    );
    s.select("ext4");
    s.send(ENTER);
    let screen = s.wait("Step 3 of 4: /   (", STEP);
    assert!(screen.contains("README.TXT"), "{screen}");
    // Into docs: a file and a folder marked; back up; README.TXT marked too; copy.
    s.select("docs/");
    s.send(ENTER);
    s.wait("Step 3 of 4: /docs", STEP);
    s.select("file3.bin");
    s.send(" ");
    s.select("notes/");
    s.send(" ");
    s.send(BACKSPACE);
    s.wait("Step 3 of 4: /   (", STEP);
    s.select("README.TXT");
    s.send(" ");
    s.wait("3 marked", STEP);
    s.send("c");
    s.wait("Step 4 of 4: the drive", STEP);
    s.select("96.0 MiB");
    s.send(ENTER);
    s.wait("New folder:", STEP);
    s.send(ENTER);
    let screen = s.wait("SUCCESS", JOB_TIMEOUT);
    assert!(screen.contains("Copied"), "{screen}");
    s.send(ENTER);
    s.wait("Disks (2)", STEP);
    s.power_off();

    // On the host: the drive is clean and holds the three entries under files/<folder>.
    let (ok, out) = tool(Command::new("e2fsck").arg("-fn").arg(&dest));
    assert!(ok, "the destination's ext4 is not clean:\n{out}");
    let got = work.join("got");
    std::fs::create_dir_all(&got).unwrap();
    let (ok, out) = tool(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /files {}", got.display()))
            .arg(&dest),
    );
    assert!(ok, "debugfs rdump: {out}");
    let folders: Vec<_> = std::fs::read_dir(got.join("files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let [copy] = folders.as_slice() else {
        panic!("one folder expected under files/: {folders:?}")
    };
    let mut names: Vec<String> = std::fs::read_dir(copy)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["README.TXT", "file3.bin", "notes"],
        "{}",
        copy.display()
    );
    for (ours, theirs) in [
        ("README.TXT", "README.TXT"),
        ("file3.bin", "docs/file3.bin"),
        ("notes/todo.txt", "docs/notes/todo.txt"),
    ] {
        assert!(
            std::fs::read(copy.join(ours)).unwrap()
                == std::fs::read(src.content.join(theirs)).unwrap(),
            "{ours} differs from the fixture's {theirs}"
        );
    }
}
