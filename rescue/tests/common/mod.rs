//! What the CLI tests share: running the `rescue` binary.

#![allow(dead_code, clippy::unwrap_used)] // each test file uses its own part; tests fail loudly

use std::path::Path;
use std::process::Command;

/// Runs `rescue ARGS`: the exit code, stdout and stderr. A panic is never an acceptable answer.
pub fn rescue_split(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rescue"))
        .args(args)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !e.contains("panicked") && !o.contains("panicked"),
        "rescue {args:?} panicked:\n{o}{e}"
    );
    (out.status.code().unwrap_or(-1), o, e)
}

/// [`rescue_split`] with stdout and stderr together.
pub fn rescue(args: &[&str]) -> (i32, String) {
    let (rc, o, e) = rescue_split(args);
    (rc, o + &e)
}

/// Press `keys` in the interface; the effects that ask the machine something (open a store, read an
/// image, look at a repository, list a folder) are answered at once, as the interface's event loop
/// answers them; the others (a job started) are returned.
pub fn press(a: &mut rescue::tui::App, keys: &[rescue::tui::Key]) -> Vec<rescue::tui::Effect> {
    use rescue::tui::Effect;
    let opts = rescue::detect::DetectOptions::default();
    let mut left = Vec::new();
    for &k in keys {
        let mut queue = a.on_key(k);
        while let Some(e) = queue.pop() {
            match e {
                Effect::OpenStore(..)
                | Effect::Inspect(_)
                | Effect::LookAtRepo(..)
                | Effect::ListFiles(..) => queue.extend(rescue::tui::term::answer_now(a, e, &opts)),
                other => left.push(other),
            }
        }
    }
    left
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Where partition `number` of the disk (or disk image file) `disk` lies, as `rescue disks` says: its
/// first byte and its length.
pub fn partition_bytes(disk: &Path, number: u32) -> (u64, u64) {
    let (rc, o, e) = rescue_split(&["disks", "--json", s(disk)]);
    assert_eq!(rc, 0, "{o}{e}");
    let report: serde_json::Value = serde_json::from_str(&o).unwrap();
    let p = report["disks"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["number"] == number)
        .unwrap_or_else(|| panic!("{} has no partition {number}: {o}", disk.display()))
        .clone();
    (
        p["start_bytes"].as_u64().unwrap(),
        p["size_bytes"].as_u64().unwrap(),
    )
}

/// Starts `rescue ARGS` (which must print progress as JSON lines, `--json`) and returns once its first
/// progress event of `phase` is out: the child, its stderr, and what it printed so far.
pub fn spawn_until_phase(
    args: &[&str],
    phase: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    String,
) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rescue"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    let wanted = format!("\"phase\":\"{phase}\"");
    while !text.contains(&wanted) {
        if stderr.read_line(&mut text).unwrap() == 0 {
            break;
        }
    }
    (child, stderr, text)
}

/// A small tmpfs mounted on a new folder under `parent` (root, as CI has), unmounted when dropped: a
/// destination that runs full.
pub struct Tmpfs {
    pub dir: std::path::PathBuf,
}

impl Tmpfs {
    pub fn mount(parent: &Path, size: &str) -> Tmpfs {
        let dir = parent.join("tmpfs");
        std::fs::create_dir(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A loop device over `backing` (needs root, as CI and the development machines have).
pub fn attach_loop(backing: &Path) -> String {
    attach_loop_with(backing, &[])
}

pub fn attach_loop_with(backing: &Path, options: &[&str]) -> String {
    let out = Command::new("losetup")
        .args(options)
        .args(["-f", "--show"])
        .arg(backing)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup failed (this test needs root): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
