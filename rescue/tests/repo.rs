//! Repositories on the host CLI: `repo init`, captures as snapshots sharing their chunks (an unchanged
//! disk adds almost nothing, a changed one about what changed), `snapshots`, and restore, verify and
//! inspect of `REPO::NAME[@TIME]` byte-identical in what was captured.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use builder::fixtures;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `rescue capture SOURCE --repo REPO --name NAME --json`: its summary.
fn capture(source: &Path, repo: &Path, name: &str) -> serde_json::Value {
    let (rc, out, err) = rescue_split(&[
        "capture",
        s(source),
        "--repo",
        s(repo),
        "--name",
        name,
        "--json",
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    json(&out)
}

fn blank_like(path: &Path, like: &Path) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(std::fs::metadata(like).unwrap().len())
        .unwrap();
}

#[test]
fn snapshots_share_chunks_and_each_restores_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let repo = d.join("repo");
    let (rc, out) = rescue(&["repo", "init", s(&repo)]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = rescue(&["repo", "init", s(&repo)]);
    assert_eq!(rc, 1);
    assert!(out.contains("is a repository already"), "{out}");

    let first = capture(&disk, &repo, "pc");
    let new1 = first["new_bytes"].as_u64().unwrap();
    assert!(new1 > 1 << 20, "{first}");
    // The same disk again: the chunks are all there.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = capture(&disk, &repo, "pc");
    let new2 = second["new_bytes"].as_u64().unwrap();
    assert!(
        new2 * 100 < new1,
        "the second capture of an unchanged disk added {new2} bytes (the first {new1})"
    );
    // Its chunks were found in the repository before being compressed: nothing was compressed again.
    let (c1, c2) = (
        first["stored_bytes"].as_u64().unwrap(),
        second["stored_bytes"].as_u64().unwrap(),
    );
    assert!(
        c2 * 100 < c1,
        "compressed {c2} bytes again (the first capture {c1})"
    );
    assert!(first["root_hash"].is_string());

    let (rc, out, err) = rescue_split(&["snapshots", s(&repo), "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let list = json(&out);
    let snaps = list["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{list}");
    assert_eq!(snaps[0]["name"], "pc");
    let (t1, t2) = (
        snaps[0]["time"].as_str().unwrap().to_string(),
        snaps[1]["time"].as_str().unwrap().to_string(),
    );
    assert!(t1 < t2, "{t1} {t2}");
    assert_eq!(snaps[0]["root_hash"], first["root_hash"]);
    assert_eq!(snaps[1]["new_bytes"].as_u64(), Some(new2));
    let (rc, text) = rescue(&["snapshots", s(&repo)]);
    assert_eq!(rc, 0);
    assert!(text.contains(&format!("pc@{t1}")), "{text}");

    // Every snapshot restores, verifies, and is inspected like an image.
    for at in [
        format!("pc@{t1}"),
        "pc@latest".to_string(),
        "pc".to_string(),
    ] {
        let name = format!("{}::{at}", repo.display());
        let target = d.join("target.img");
        blank_like(&target, &disk);
        let (rc, out) = rescue(&["restore", &name, s(&target), "--yes"]);
        assert_eq!(rc, 0, "{name}: {out}");
        let (rc, out) = rescue(&["verify", &name, "--against", s(&target)]);
        assert_eq!(rc, 0, "{name}: {out}");
        std::fs::remove_file(&target).unwrap();
    }
    let (rc, out, err) =
        rescue_split(&["inspect", &format!("{}::pc@{t1}", repo.display()), "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let info = json(&out);
    assert_eq!(info["root_hash"], first["root_hash"], "{info}");

    // Exported: one image file with the snapshot's root hash, which restores like the snapshot.
    let exported = d.join("pc.rimg");
    let (rc, out, err) = rescue_split(&[
        "export",
        &format!("{}::pc@{t1}", repo.display()),
        "-o",
        s(&exported),
        "--json",
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let e = json(&out);
    assert_eq!(e["root_hash"], first["root_hash"], "{e}");
    assert_eq!(e["verified"], true);
    assert_eq!(
        std::fs::metadata(&exported).unwrap().len(),
        first["image_bytes"].as_u64().unwrap()
    );
    let target = d.join("target.img");
    blank_like(&target, &disk);
    assert_eq!(rescue(&["restore", s(&exported), s(&target), "--yes"]).0, 0);
    let (rc, out) = rescue(&["verify", s(&exported), "--against", s(&disk)]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = rescue(&[
        "export",
        &format!("{}::pc", repo.display()),
        "-o",
        s(&exported),
    ]);
    assert_eq!(rc, 1);
    assert!(out.contains("already exists"), "{out}");

    // Names the user got wrong are said so.
    let (rc, out) = rescue(&["verify", &format!("{}::nope", repo.display())]);
    assert_eq!(rc, 1);
    assert!(out.contains("no snapshot named nope; it has pc"), "{out}");
    let (rc, out) = rescue(&["verify", &format!("{}::pc@1999", repo.display())]);
    assert_eq!(rc, 1);
    assert!(out.contains("pc has no snapshot at 1999"), "{out}");
    let (rc, out) = rescue(&["verify", &format!("{}::pc@20", repo.display())]);
    assert_eq!(rc, 1);
    assert!(out.contains("matches 2 snapshots"), "{out}");
    let (rc, out) = rescue(&["verify", &format!("{}::pc", d.join("nothing").display())]);
    assert_eq!(rc, 1);
    assert!(out.contains("no repository at"), "{out}");
    let (rc, out) = rescue(&[
        "capture",
        s(&disk),
        "--repo",
        s(&repo),
        "--name",
        "bad/name",
    ]);
    assert_eq!(rc, 1);
    assert!(out.contains("is not a snapshot name"), "{out}");
}

/// A bare ext4 filesystem with 24 MiB of files, then 1 MiB more written into it: the second snapshot
/// adds about what changed, not the whole filesystem again.
#[test]
fn a_changed_filesystem_adds_about_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let content = d.join("content");
    std::fs::create_dir_all(&content).unwrap();
    for i in 0..24u64 {
        std::fs::write(
            content.join(format!("f{i}")),
            // Odd seeds: `noise` makes every seed odd, so 2 and 3 would give the same bytes.
            fixtures::noise(1 << 20, 2 * i + 1),
        )
        .unwrap();
    }
    let fs = d.join("fs.img");
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-d"])
        .arg(&content)
        .arg(&fs)
        .arg("96M")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let repo = d.join("repo");
    assert_eq!(rescue(&["repo", "init", s(&repo)]).0, 0);
    let first = capture(&fs, &repo, "data");
    let new1 = first["new_bytes"].as_u64().unwrap();
    assert!(new1 > 24 << 20, "{first}");

    let extra = d.join("extra");
    std::fs::write(&extra, fixtures::noise(1 << 20, 1001)).unwrap();
    let ok = Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} extra", extra.display()))
        .arg(&fs)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = capture(&fs, &repo, "data");
    let new2 = second["new_bytes"].as_u64().unwrap();
    eprintln!("first capture added {new1} bytes, the second (1 MiB written) {new2}");
    assert!(new2 >= 1 << 20, "{second}");
    assert!(
        new2 < new1 / 3,
        "1 MiB written, the second snapshot added {new2} bytes of {new1}"
    );
    // Both snapshots restore to what they captured.
    let (_, out, _) = rescue_split(&["snapshots", s(&repo), "--json"]);
    let list = json(&out);
    let t1 = list["snapshots"][0]["time"].as_str().unwrap().to_string();
    let target = d.join("target.img");
    blank_like(&target, &fs);
    let old = format!("{}::data@{t1}", repo.display());
    let (rc, out) = rescue(&["restore", &old, s(&target), "--yes"]);
    assert_eq!(rc, 0, "{out}");
    let ls = Command::new("debugfs")
        .args(["-R", "ls -l /"])
        .arg(&target)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listing.contains("f23") && !listing.contains("extra"),
        "{listing}"
    );
    let (rc, out) = rescue(&[
        "restore",
        &format!("{}::data", repo.display()),
        s(&target),
        "--yes",
    ]);
    assert_eq!(rc, 0, "{out}");
    let cat = Command::new("debugfs")
        .args(["-R", "cat /extra"])
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(cat.stdout, std::fs::read(&extra).unwrap());
}

/// Every object under `repo/chunks`, largest first.
fn objects(repo: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(repo.join("chunks")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    out
}

/// `check` finds a flipped byte in a chunk (with --read-data), a missing chunk and a cut snapshot file,
/// and names the snapshots each affects; a restore of a damaged snapshot is refused with the target
/// untouched.
#[test]
fn damage_is_found_and_named_with_the_snapshots_it_affects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_mbr()).unwrap();
    let repo = d.join("repo");
    assert_eq!(rescue(&["repo", "init", s(&repo)]).0, 0);
    capture(&disk, &repo, "a");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    capture(&disk, &repo, "b");
    let (rc, out, err) = rescue_split(&["check", s(&repo), "--read-data", "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let r = json(&out);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["snapshots"], 2);
    assert!(r["read_bytes"].as_u64().unwrap() > 0);

    let objs = objects(&repo);
    // A flipped byte in the payload of the largest chunk: only reading finds it.
    let flipped = &objs[0];
    let mut bytes = std::fs::read(flipped).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(flipped, &bytes).unwrap();
    let (rc, out) = rescue(&["check", s(&repo)]);
    assert_eq!(rc, 0, "without --read-data the payload is not read: {out}");
    let (rc, out) = rescue(&["check", s(&repo), "--read-data"]);
    assert_eq!(rc, 2, "{out}");
    let name = flipped.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.contains(&name)
            && out.contains("is damaged")
            && out.contains("it affects a@")
            && out.contains("b@"),
        "{out}"
    );
    // Restoring it is refused before anything is written.
    let target = d.join("target.img");
    blank_like(&target, &disk);
    let (rc, out) = rescue(&[
        "restore",
        &format!("{}::b", repo.display()),
        s(&target),
        "--yes",
    ]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    assert!(std::fs::read(&target).unwrap().iter().all(|&b| b == 0));
    bytes[mid] ^= 0x40;
    std::fs::write(flipped, &bytes).unwrap();

    // A missing chunk.
    let gone = objs[1].clone();
    let kept = std::fs::read(&gone).unwrap();
    std::fs::remove_file(&gone).unwrap();
    let (rc, out) = rescue(&["check", s(&repo)]);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("is missing") && out.contains("it affects a@"),
        "{out}"
    );
    let (rc, out) = rescue(&["verify", &format!("{}::a", repo.display())]);
    assert_ne!(rc, 0, "{out}");
    assert!(out.contains("missing from the repository"), "{out}");
    std::fs::write(&gone, kept).unwrap();

    // A snapshot file cut short: named; the other snapshot is still listed and checks out.
    let snaps: Vec<_> = std::fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut newest = snaps.clone();
    newest.sort();
    let cut = newest.last().unwrap();
    let len = std::fs::metadata(cut).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(cut)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let (rc, out) = rescue(&["check", s(&repo), "--read-data"]);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("is damaged") && out.contains("snapshot b@"),
        "{out}"
    );
    let (rc, out) = rescue(&["verify", &format!("{}::a", repo.display())]);
    assert_eq!(rc, 0, "{out}");
}

/// Prune keeps exactly what its rules say, removes the chunks only removed snapshots used, and leaves a
/// repository that checks out; with no rule it refuses.
#[test]
fn prune_keeps_what_the_rules_say_and_removes_unused_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gpt = d.join("gpt.img");
    fixtures::create_disk(&gpt, &fixtures::demo_gpt()).unwrap();
    let mbr = d.join("mbr.img");
    fixtures::create_disk(&mbr, &fixtures::demo_mbr()).unwrap();
    let repo = d.join("repo");
    assert_eq!(rescue(&["repo", "init", s(&repo)]).0, 0);
    // "x": the GPT disk, then the MBR disk; "y": the MBR disk.
    capture(&gpt, &repo, "x");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    capture(&mbr, &repo, "x");
    capture(&mbr, &repo, "y");
    let before = objects(&repo).len();

    let (rc, out) = rescue(&["prune", s(&repo)]);
    assert_eq!(rc, 1);
    assert!(out.contains("would remove every snapshot"), "{out}");
    let (rc, out, err) =
        rescue_split(&["prune", s(&repo), "--keep-last", "1", "--dry-run", "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let dry = json(&out);
    assert_eq!(dry["removed"].as_array().unwrap().len(), 1, "{dry}");
    assert!(dry["chunks_removed"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(objects(&repo).len(), before, "a dry run removes nothing");

    let (rc, out, err) = rescue_split(&["prune", s(&repo), "--keep-last", "1", "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let r = json(&out);
    assert_eq!(r["removed"], dry["removed"]);
    assert_eq!(r["chunks_removed"], dry["chunks_removed"]);
    assert!(r["removed"][0].as_str().unwrap().starts_with("x@"), "{r}");
    assert_eq!(r["kept"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(
        objects(&repo).len() as u64,
        before as u64 - r["chunks_removed"].as_u64().unwrap()
    );
    let (rc, out) = rescue(&["check", s(&repo), "--read-data"]);
    assert_eq!(rc, 0, "{out}");
    assert!(!out.contains("belong to no snapshot"), "{out}");
    let (rc, out) = rescue(&[
        "verify",
        &format!("{}::x", repo.display()),
        "--against",
        s(&mbr),
    ]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = rescue(&[
        "verify",
        &format!("{}::y", repo.display()),
        "--against",
        s(&mbr),
    ]);
    assert_eq!(rc, 0, "{out}");
}

/// Two captures into one repository at once both succeed and share their chunks; a prune while an
/// operation holds the repository is refused with nothing removed, and a restore while a prune holds
/// it is refused before anything is written.
#[test]
fn captures_run_together_and_prune_never_pulls_chunks_from_under_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let repo = d.join("repo");
    assert_eq!(rescue(&["repo", "init", s(&repo)]).0, 0);
    let spawn = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_rescue"))
            .args([
                "capture",
                s(&disk),
                "--repo",
                s(&repo),
                "--name",
                name,
                "--json",
            ])
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| spawn("one"));
        let b = sc.spawn(|| spawn("two"));
        (a.join().unwrap(), b.join().unwrap())
    });
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (ja, jb) = (
        json(&String::from_utf8_lossy(&a.stdout)),
        json(&String::from_utf8_lossy(&b.stdout)),
    );
    let (na, nb) = (
        ja["new_bytes"].as_u64().unwrap(),
        jb["new_bytes"].as_u64().unwrap(),
    );
    // Alone, one capture adds what both added together: every chunk stored once.
    let (rc, out, _) = rescue_split(&["check", s(&repo), "--read-data", "--json"]);
    assert_eq!(rc, 0, "{out}");
    let c = json(&out);
    assert_eq!(c["snapshots"], 2);
    assert_eq!(na + nb, c["chunk_bytes"].as_u64().unwrap(), "{ja} {jb} {c}");

    // A capture (or restore) running: prune refuses and removes nothing.
    // --no-fork: the lock's holder is the process killed, not a child that would outlive it.
    let mut holder = Command::new("flock")
        .args(["--no-fork", "-s"])
        .arg(repo.join("lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (rc, out) = rescue(&["prune", s(&repo), "--keep-last", "1", "--name", "one"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(rc, 1, "{out}");
    assert!(
        out.contains("is in use") && out.contains("nothing was removed"),
        "{out}"
    );
    // A prune running: a restore is refused before it reads or writes anything.
    let mut pruner = Command::new("flock")
        .args(["--no-fork", "-x"])
        .arg(repo.join("lock"))
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let target = d.join("target.img");
    blank_like(&target, &disk);
    let (rc, out) = rescue(&[
        "restore",
        &format!("{}::one", repo.display()),
        s(&target),
        "--yes",
    ]);
    let (rc2, out2) = rescue(&["capture", s(&disk), "--repo", s(&repo), "--name", "three"]);
    pruner.kill().unwrap();
    pruner.wait().unwrap();
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("a prune of the repository"), "{out}");
    assert!(std::fs::read(&target).unwrap().iter().all(|&b| b == 0));
    assert_eq!(rc2, 1, "{out2}");
    assert!(out2.contains("a prune of the repository"), "{out2}");
    let (rc, out) = rescue(&["prune", s(&repo), "--keep-last", "1", "--name", "one"]);
    assert_eq!(rc, 0, "{out}");
}

/// A capture killed half way (as a power cut would stop it) leaves no snapshot and a repository that
/// checks out; the next capture of the same disk stores only what the first had not.
#[test]
fn a_capture_killed_half_way_leaves_no_snapshot_and_its_chunks_are_used_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("noise.img");
    std::fs::write(&disk, fixtures::noise(192 << 20, 5)).unwrap();
    let repo = d.join("repo");
    assert_eq!(rescue(&["repo", "init", s(&repo)]).0, 0);
    let (mut child, mut stderr, _) = spawn_until_phase(
        &[
            "capture",
            s(&disk),
            "--repo",
            s(&repo),
            "--name",
            "n",
            "--json",
            "--threads",
            "1",
        ],
        "capture",
    );
    // Wait for some chunks to be stored, then kill it outright.
    let mut line = String::new();
    for _ in 0..3 {
        line.clear();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stored = objects(&repo).len();
    let (rc, out, _) = rescue_split(&["snapshots", s(&repo), "--json"]);
    assert_eq!(rc, 0);
    assert_eq!(
        json(&out)["snapshots"].as_array().unwrap().len(),
        0,
        "{out}"
    );
    let (rc, out) = rescue(&["check", s(&repo), "--read-data"]);
    assert_eq!(rc, 0, "{out}");
    let again = capture(&disk, &repo, "n");
    let added = again["new_bytes"].as_u64().unwrap();
    let (_, out, _) = rescue_split(&["check", s(&repo), "--json"]);
    let total = json(&out)["chunk_bytes"].as_u64().unwrap();
    eprintln!(
        "{stored} chunks stored before the kill; the next capture added {added} of {total} bytes"
    );
    assert!(
        stored > 0,
        "the capture was killed before it stored anything"
    );
    assert!(
        added < total,
        "the chunks stored before the kill were not used"
    );
    let (rc, out) = rescue(&[
        "verify",
        &format!("{}::n", repo.display()),
        "--against",
        s(&disk),
    ]);
    assert_eq!(rc, 0, "{out}");
}

/// `rescue ARGS` with the environment variable `var` set: exit code and all output.
fn rescue_with(var: (&str, &str), args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rescue"))
        .env(var.0, var.1)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

/// Every file under `dir`, with its bytes.
fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            let b = std::fs::read(&p).unwrap();
            out.push((p, b));
        }
    }
    out
}

/// An encrypted repository: the passphrase is needed and a wrong one refused before anything is
/// written; neither the snapshot names nor the chunks' hashes appear in any file; a flipped byte, two
/// chunk objects swapped and a cut snapshot file are each found and named; the right passphrase
/// restores byte for byte.
#[test]
fn an_encrypted_repository_needs_its_passphrase_and_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_mbr()).unwrap();
    let pass = d.join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let repo = d.join("repo");
    let (rc, out) = rescue(&[
        "repo",
        "init",
        s(&repo),
        "--encrypt",
        "--passphrase-file",
        s(&pass),
    ]);
    assert_eq!(rc, 0, "{out}");
    let env = ("RESCUE_PASSPHRASE", "correct horse battery staple");
    let cap = [
        "capture",
        s(&disk),
        "--repo",
        s(&repo),
        "--name",
        "secret-name-7",
    ];
    // No passphrase (no terminal to ask on), a wrong one: refused, nothing written.
    let (rc, out) = rescue(&cap);
    assert_eq!(rc, 1);
    assert!(out.contains("is encrypted: give its passphrase"), "{out}");
    let (rc, out) = rescue_with(("RESCUE_PASSPHRASE", "wrong"), &cap);
    assert_eq!(rc, 1);
    assert!(
        out.contains("wrong passphrase") && out.contains("nothing was read or written"),
        "{out}"
    );
    assert!(objects(&repo).is_empty());
    let (rc, out) = rescue_with(env, &cap);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = rescue_with(env, &["snapshots", s(&repo)]);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("secret-name-7@"), "{out}");

    // What the files show: no snapshot name, no chunk hash (a plain repository of the same disk names
    // its objects by them).
    let plain = d.join("plain");
    assert_eq!(rescue(&["repo", "init", s(&plain)]).0, 0);
    capture(&disk, &plain, "p");
    let plain_names: std::collections::BTreeSet<String> = objects(&plain)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for (path, bytes) in all_files(&repo) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !plain_names.contains(&name),
            "{} is named by its chunk's hash",
            path.display()
        );
        assert!(
            !bytes.windows(13).any(|w| w == b"secret-name-7"),
            "{} shows the snapshot name",
            path.display()
        );
        for hash in &plain_names {
            let raw: Vec<u8> = (0..32)
                .map(|i| u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            assert!(
                !bytes.windows(32).any(|w| w == raw.as_slice()),
                "{} holds a chunk's hash",
                path.display()
            );
        }
    }

    let name = format!("{}::secret-name-7", repo.display());
    let target = d.join("target.img");
    blank_like(&target, &disk);
    let (rc, out) = rescue_with(env, &["restore", &name, s(&target), "--yes"]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = rescue_with(env, &["verify", &name, "--against", s(&disk)]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = rescue_with(env, &["check", s(&repo), "--read-data"]);
    assert_eq!(rc, 0, "{out}");

    let objs = objects(&repo);
    // A flipped byte in a chunk's sealed payload.
    let mut b = std::fs::read(&objs[0]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&objs[0], &b).unwrap();
    let (rc, out) = rescue_with(env, &["check", s(&repo), "--read-data"]);
    assert_eq!(rc, 2, "{out}");
    assert!(
        out.contains("fails authentication") && out.contains("it affects secret-name-7@"),
        "{out}"
    );
    let (rc, out) = rescue_with(env, &["restore", &name, s(&target), "--yes"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("nothing was written"), "{out}");
    b[mid] ^= 1;
    std::fs::write(&objs[0], &b).unwrap();
    // Two chunk objects swapped.
    let (a0, a1) = (
        std::fs::read(&objs[0]).unwrap(),
        std::fs::read(&objs[1]).unwrap(),
    );
    std::fs::write(&objs[0], &a1).unwrap();
    std::fs::write(&objs[1], &a0).unwrap();
    let (rc, out) = rescue_with(env, &["check", s(&repo)]);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("is damaged: it holds the chunk"), "{out}");
    std::fs::write(&objs[0], &a0).unwrap();
    std::fs::write(&objs[1], &a1).unwrap();
    // A snapshot file cut short.
    let snap = std::fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let len = std::fs::metadata(&snap).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&snap)
        .unwrap()
        .set_len(len - 1)
        .unwrap();
    let (rc, out) = rescue_with(env, &["check", s(&repo)]);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("fails authentication"), "{out}");
}

/// An image file imported into a repository becomes a snapshot with the same root hash and exports
/// again byte for byte; importing it a second time is refused; a damaged image adds nothing.
#[test]
fn an_imported_image_is_the_same_image_and_exports_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let image = d.join("disk.rimg");
    let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&image)]);
    assert_eq!(rc, 0, "{out}");
    let repo = d.join("repo");
    assert_eq!(rescue(&["repo", "init", s(&repo)]).0, 0);
    let (rc, out, err) = rescue_split(&[
        "import",
        s(&image),
        "--repo",
        s(&repo),
        "--name",
        "old",
        "--json",
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let r = json(&out);
    assert_eq!(r["same_root_hash"], true, "{r}");
    assert!(r["new_bytes"].as_u64().unwrap() > 0);
    // The same image again (under any name) is refused: the repository holds it.
    let (rc, out, err) = rescue_split(&[
        "import",
        s(&image),
        "--repo",
        s(&repo),
        "--name",
        "again",
        "--json",
    ]);
    assert_eq!(rc, 1, "{out}{err}");
    assert!(err.contains("holds this image already"), "{err}");
    let exported = d.join("back.rimg");
    let (rc, out) = rescue(&[
        "export",
        &format!("{}::old", repo.display()),
        "-o",
        s(&exported),
    ]);
    assert_eq!(rc, 0, "{out}");
    assert!(
        std::fs::read(&exported).unwrap() == std::fs::read(&image).unwrap(),
        "the exported image differs from the imported one"
    );
    let (rc, out) = rescue(&[
        "verify",
        &format!("{}::old", repo.display()),
        "--against",
        s(&disk),
    ]);
    assert_eq!(rc, 0, "{out}");
    // A damaged image is refused, naming the chunk, and adds no snapshot.
    let mut b = std::fs::read(&image).unwrap();
    let at = b.len() / 3;
    b[at] ^= 0x10;
    let bad = d.join("bad.rimg");
    std::fs::write(&bad, &b).unwrap();
    let (rc, out) = rescue(&["import", s(&bad), "--repo", s(&repo), "--name", "bad"]);
    assert_eq!(rc, 1, "{out}");
    assert!(out.contains("chunk"), "{out}");
    let (_, out, _) = rescue_split(&["snapshots", s(&repo), "--json"]);
    assert_eq!(json(&out)["snapshots"].as_array().unwrap().len(), 1);
}

/// Two machines installed from the same tree (two filesystems made from the same files, each with a
/// few files of its own) share most of their chunks: the second adds little more than what is its own.
#[test]
fn two_machines_from_one_tree_share_most_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tree = d.join("tree");
    std::fs::create_dir_all(tree.join("usr")).unwrap();
    for i in 0..20u64 {
        std::fs::write(
            tree.join(format!("usr/lib{i}.so")),
            fixtures::noise(1 << 20, 2 * i + 1),
        )
        .unwrap();
    }
    let repo = d.join("repo");
    assert_eq!(rescue(&["repo", "init", s(&repo)]).0, 0);
    let mut added = Vec::new();
    for (n, own) in ["pc1", "pc2"].iter().zip([101u64, 103]) {
        let content = d.join(n);
        let ok = Command::new("cp")
            .args(["-a"])
            .arg(&tree)
            .arg(&content)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        std::fs::write(content.join("hostname"), n).unwrap();
        std::fs::write(content.join("own.bin"), fixtures::noise(1 << 20, own)).unwrap();
        let fs = d.join(format!("{n}.img"));
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(&content)
            .arg(&fs)
            .arg("64M")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        added.push(capture(&fs, &repo, n)["new_bytes"].as_u64().unwrap());
    }
    eprintln!(
        "the first machine added {} bytes, the second {}",
        added[0], added[1]
    );
    assert!(added[0] > 20 << 20, "{added:?}");
    assert!(
        added[1] * 3 < added[0],
        "the second machine shares little with the first: {added:?}"
    );
}

/// A repository on a read-only mount (a share or a drive mounted only to read from) can be read:
/// snapshots listed, restored and verified; a prune there is refused, naming the cause.
#[test]
fn a_repository_on_a_read_only_mount_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_mbr()).unwrap();
    let repo = d.join("repo");
    assert_eq!(rescue(&["repo", "init", s(&repo)]).0, 0);
    capture(&disk, &repo, "pc");
    let ro = d.join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mount = |args: &[&str]| {
        assert!(
            Command::new("mount").args(args).status().unwrap().success(),
            "mount {args:?} (needs root)"
        );
    };
    mount(&["--bind", s(&repo), s(&ro)]);
    mount(&["-o", "remount,ro,bind", s(&ro)]);
    let (rc, out) = rescue(&[
        "verify",
        &format!("{}::pc", ro.display()),
        "--against",
        s(&disk),
    ]);
    let (rc2, out2) = rescue(&["snapshots", s(&ro)]);
    let (rc3, out3) = rescue(&["prune", s(&ro), "--keep-last", "1"]);
    let _ = Command::new("umount").arg(&ro).status();
    assert_eq!(rc, 0, "{out}");
    assert_eq!(rc2, 0, "{out2}");
    assert_eq!(rc3, 1, "{out3}");
    assert!(out3.contains("Read-only file system"), "{out3}");
}

/// A folder that answers as an object store does (no local paths), counting the lookups of chunk
/// objects: stands for S3, where each is a round trip.
#[derive(Debug)]
struct Counting {
    inner: rescue::repo::DirBackend,
    lookups: std::sync::atomic::AtomicUsize,
}

impl rescue::repo::Backend for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn get(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.get_range(key, offset, len)
    }
    fn size(&self, key: &str) -> std::io::Result<Option<u64>> {
        if key.starts_with("chunks/") {
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.size(key)
    }
    fn put_new(&self, key: &str, data: &[u8], flush: bool) -> std::io::Result<bool> {
        self.inner.put_new(key, data, flush)
    }
    fn put_replace(&self, key: &str, data: &[u8]) -> std::io::Result<()> {
        self.inner.put_replace(key, data)
    }
    fn list(&self, prefix: &str) -> std::io::Result<Vec<(String, u64)>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> std::io::Result<()> {
        self.inner.delete(key)
    }
    fn sync(&self, written: &[String]) -> std::io::Result<()> {
        self.inner.sync(written)
    }
    fn try_lock(&self, exclusive: bool) -> std::io::Result<Option<rescue::repo::HeldLock>> {
        self.inner.try_lock(exclusive)
    }
    fn leftovers(&self) -> std::io::Result<Vec<String>> {
        self.inner.leftovers()
    }
    fn remove_leftovers(&self) -> std::io::Result<u64> {
        self.inner.remove_leftovers()
    }
    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }
}

/// On an object store a capture asks the store only about chunks the previous snapshot of its name
/// lacks: an unchanged disk captured again costs no chunk lookups; another name (no previous snapshot)
/// looks up each chunk; and the snapshot so made restores whole.
#[test]
fn on_an_object_store_the_previous_snapshot_answers_for_its_chunks() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let root = d.join("repo");
    rescue::repo::Repo::init(&root, None).unwrap();
    let counting = std::sync::Arc::new(Counting {
        inner: rescue::repo::DirBackend::new(&root),
        lookups: Default::default(),
    });
    let repo = rescue::repo::Repo::open_on(counting.clone(), &root).unwrap();
    let spec = rescue::ops::CaptureSpec {
        source: disk.clone(),
        threads: 2,
        ..Default::default()
    };
    let capture = |name: &str| {
        counting.lookups.store(0, Ordering::Relaxed);
        let c =
            rescue::ops::capture_repo(&spec, &repo, name, &Default::default(), Default::default())
                .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        (counting.lookups.load(Ordering::Relaxed), c)
    };
    let (first, c1) = capture("pc");
    assert!(
        first > 0 && c1.stats.new_chunks > 0,
        "{first} {:?}",
        c1.stats
    );
    let (second, c2) = capture("pc");
    assert_eq!(
        second, 0,
        "the unchanged disk's chunks were looked up again"
    );
    assert_eq!(c2.stats.new_chunks, 0, "{:?}", c2.stats);
    let (other, c3) = capture("other");
    assert!(
        other >= first / 2,
        "{other} lookups without a previous snapshot ({first} the first time)"
    );
    assert_eq!(c3.stats.new_chunks, 0, "{:?}", c3.stats);
    // The snapshot made from known chunks is whole.
    let (rc, out) = rescue(&[
        "verify",
        &format!("{}::pc", s(&root)),
        "--against",
        s(&disk),
    ]);
    assert_eq!(rc, 0, "{out}");
}
