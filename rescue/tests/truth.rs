//! What the CLI says must be true, and every error must say what is wrong and what to do: one writer per
//! image or target file, empty files, folders and missing paths named as such, summaries that count what
//! was really done.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::{rescue, s};

use std::fs::File;
use std::path::{Path, PathBuf};

use builder::fixtures::{self, DiskSpec, Fs};

/// A small GPT disk with one ext4 partition holding the sample files, in a fresh folder.
fn small_disk() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("source.img");
    let spec = DiskSpec {
        size_mib: 48,
        sector_size: 512,
        table: fixtures::Table::Gpt,
        parts: vec![fixtures::part(32, Fs::Ext4, Some("root"))],
    };
    fixtures::create_disk(&disk, &spec).unwrap();
    (dir, disk)
}

fn partial(image: &Path) -> PathBuf {
    PathBuf::from(format!("{}.partial", image.display()))
}

#[test]
fn a_second_capture_to_one_output_is_refused_at_once() {
    let (dir, disk) = small_disk();
    let image = dir.path().join("same.rimg");
    // Another capture holds the partial file (as a running one does, until its image has its final name).
    let held = File::create(partial(&image)).unwrap();
    held.lock().unwrap();
    let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&image)]);
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains("another capture is writing") && out.contains(s(&image)),
        "{out}"
    );
    assert!(!image.exists(), "the refused capture left an image");
    assert!(
        partial(&image).exists(),
        "the refused capture removed the other one's file"
    );
    // Once the other capture is gone, its leftover partial file is taken over.
    drop(held);
    let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&image)]);
    assert_eq!(rc, 0, "{out}");
    assert!(!partial(&image).exists());
    let (rc, out) = rescue(&["verify", s(&image)]);
    assert_eq!(rc, 0, "{out}");
}

#[test]
fn a_file_being_written_is_neither_a_second_target_nor_a_source() {
    let (dir, disk) = small_disk();
    let image = dir.path().join("d.rimg");
    assert_eq!(rescue(&["capture", s(&disk), "-o", s(&image)]).0, 0);
    let target = dir.path().join("target.img");
    File::create(&target).unwrap().set_len(48 << 20).unwrap();
    let before = std::fs::read(&target).unwrap();

    // A restore or clone holds its target file exclusively.
    let held = File::options().write(true).open(&target).unwrap();
    held.lock().unwrap();
    for args in [
        vec!["restore", s(&image), s(&target), "--yes"],
        vec!["clone", s(&disk), s(&target), "--yes"],
    ] {
        let (rc, out) = rescue(&args);
        assert_ne!(rc, 0, "{args:?}: {out}");
        assert!(
            out.contains(s(&target)) && out.contains("right now"),
            "{args:?}: {out}"
        );
    }
    assert_eq!(std::fs::read(&target).unwrap(), before);
    // ... and a file being restored is not captured.
    let (rc, out) = rescue(&["capture", s(&target), "-o", s(&dir.path().join("t.rimg"))]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("being written by a restore or clone"), "{out}");
    drop(held);

    // A capture reading a file (shared lock) keeps restores off it.
    let reading = File::open(&disk).unwrap();
    reading.lock_shared().unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&disk), "--yes"]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("right now"), "{out}");
}

#[test]
fn empty_files_folders_and_missing_paths_are_named_with_what_to_do() {
    let (dir, disk) = small_disk();
    let d = dir.path();
    let image = d.join("d.rimg");
    assert_eq!(rescue(&["capture", s(&disk), "-o", s(&image)]).0, 0);
    let zero = d.join("zero.img");
    File::create(&zero).unwrap();
    let missing = d.join("missing.img");
    let out_rimg = d.join("z.rimg");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["capture", s(&zero), "-o", s(&out_rimg)],
            "empty (0 bytes)",
        ),
        (
            vec!["capture", s(&zero), "-o", s(&out_rimg), "--json"],
            "empty (0 bytes)",
        ),
        (vec!["restore", s(&image), s(&zero), "--yes"], "truncate -s"),
        (vec!["clone", s(&disk), s(&zero), "--yes"], "truncate -s"),
        (
            vec!["clone", s(&zero), s(&disk), "--yes"],
            "empty (0 bytes)",
        ),
        (
            vec!["restore", s(&zero), s(&disk), "--yes"],
            "empty (0 bytes)",
        ),
        (vec!["verify", s(&zero)], "empty (0 bytes)"),
        (vec!["inspect", s(&zero)], "empty (0 bytes)"),
        (vec!["verify", s(d)], "is a folder, not an image file"),
        (vec!["inspect", s(d)], "is a folder, not an image file"),
        (vec!["disks", s(&missing)], "does not exist"),
        (vec!["disks", s(&zero)], "empty (0 bytes)"),
        (
            vec!["capture", s(&missing), "-o", s(&out_rimg)],
            "does not exist",
        ),
    ];
    for (args, says) in cases {
        let (rc, out) = rescue(&args);
        assert_ne!(rc, 0, "{args:?} succeeded:\n{out}");
        assert!(out.contains(says), "{args:?} does not say {says:?}:\n{out}");
        assert!(!out.contains("offset 9223372036854775"), "{args:?}: {out}");
        if args.contains(&"--json") {
            let doc: serde_json::Value =
                serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
            assert!(
                doc["error"].as_str().unwrap().contains(says),
                "{args:?}: {doc}"
            );
        }
    }
    assert!(!out_rimg.exists() && !partial(&out_rimg).exists());

    // A missing output folder is named, with the user's path (not the partial file's).
    let nowhere = d.join("nodir").join("x.rimg");
    let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&nowhere)]);
    assert_ne!(rc, 0, "{out}");
    assert!(
        out.contains(&format!(
            "the folder {} does not exist",
            d.join("nodir").display()
        )) && out.contains(s(&nowhere))
            && !out.contains(".partial"),
        "{out}"
    );
}

#[test]
fn summaries_count_what_was_done() {
    let (dir, disk) = small_disk();
    let d = dir.path();
    // Without block deduplication, what is stored once is whole identical chunks, and the summary says so.
    let image = d.join("nd.rimg");
    let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&image), "--no-dedup"]);
    assert_eq!(rc, 0, "{out}");
    // The primary and backup GPT entry arrays are the same bytes: one chunk, stored once.
    assert!(
        out.contains(
            "found more than once was stored once (whole identical chunks; block \
                      deduplication was off)"
        ),
        "{out}"
    );
    // Zeroing the free space is counted in what the restore wrote.
    let target = d.join("t.img");
    File::create(&target).unwrap().set_len(48 << 20).unwrap();
    let (rc, plain) = rescue(&["restore", s(&image), s(&target), "--yes", "--json"]);
    assert_eq!(rc, 0, "{plain}");
    let (rc, zeroed) = rescue(&[
        "restore",
        s(&image),
        s(&target),
        "--yes",
        "--json",
        "--zero-unused",
    ]);
    assert_eq!(rc, 0, "{zeroed}");
    let doc = |out: &str| -> serde_json::Value {
        serde_json::from_str(out.lines().rfind(|l| l.contains("bytes_written")).unwrap()).unwrap()
    };
    let (plain, zeroed) = (doc(&plain), doc(&zeroed));
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert!(
        n(&zeroed, "bytes_written") > n(&plain, "bytes_written") + (16 << 20)
            && n(&zeroed, "zero_bytes") > n(&plain, "zero_bytes") + (16 << 20),
        "plain {plain}, zeroed {zeroed}"
    );
}

/// Ctrl-C twice in a row (the second quits at once): still no partial image left behind.
#[test]
fn a_second_ctrl_c_leaves_no_partial_image() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("noise.img");
    std::fs::write(&source, fixtures::noise(64 << 20, 7)).unwrap();
    let image = dir.path().join("noise.rimg");
    let (mut child, mut stderr, mut text) = common::spawn_until_phase(
        &[
            "capture",
            s(&source),
            "-o",
            s(&image),
            "--json",
            "--level",
            "19",
        ],
        "capture",
    );
    assert!(
        partial(&image).exists(),
        "the capture is under way:\n{text}"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Two signals sent together are delivered as one; a few milliseconds apart, the second arrives
    // before the first has been acted on (it is noticed within 50 ms).
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
    let status = child.wait().unwrap();
    assert!(!status.success(), "the capture completed:\n{text}");
    assert!(!image.exists(), "an image was left");
    assert!(
        !partial(&image).exists(),
        "the partial image was left:\n{text}"
    );
}

/// A destination too small for the capture: warned about before the capture starts, and when it runs
/// full the error says where, once. Mounts a small tmpfs (root, as CI has).
#[test]
fn a_full_destination_is_warned_about_first_and_named_when_it_fills() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("noise.img");
    std::fs::write(&source, fixtures::noise(48 << 20, 3)).unwrap();
    let small = common::Tmpfs::mount(dir.path(), "12m");
    let image = small.dir.join("x.rimg");
    let (rc, out) = rescue(&["capture", s(&source), "-o", s(&image)]);
    drop(small);
    assert_ne!(rc, 0, "{out}");
    let warned = out.find("warning:").expect("no warning before the capture");
    let failed = out.find("error:").unwrap();
    assert!(warned < failed, "{out}");
    assert!(
        out.contains("only 12.0 MiB free for up to 48.0 MiB"),
        "{out}"
    );
    assert!(out.contains("ran out of space writing bytes"), "{out}");
    assert!(
        out.matches("No space left").count() <= 1 && out.matches("os error").count() <= 1,
        "the OS error is repeated:\n{out}"
    );
    assert!(!out.contains(".partial"), "{out}");
}
