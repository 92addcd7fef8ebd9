//! Helpers shared by the end-to-end imaging tests (command chains and the TUI): fixtures, host-side
//! checks with independent tools.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[allow(unused_imports)] // not every test binary uses every check
pub use builder::checks::{check_filesystem, extract, tool};
use builder::fixtures::{self, DiskSpec, Expected};
use builder::qemu::Vm;
use qemu_tests::{boot_files, CmdRun, Guest};
use serde_json::Value;

pub const MIB: u64 = 1 << 20;

pub fn vm() -> Vm {
    let f = boot_files();
    Vm::new(&f.vmlinuz, &f.initramfs)
}

pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The fixtures of one test: the source disk (demo GPT) and the sample files its filesystems hold.
pub struct Source {
    pub path: PathBuf,
    pub spec: DiskSpec,
    pub expected: Vec<Expected>,
    pub content: PathBuf,
}

pub fn source_disk(dir: &Path) -> Source {
    let spec = fixtures::demo_gpt();
    let path = dir.join("source.img");
    let expected = fixtures::create_disk(&path, &spec).expect("creating the source disk");
    let content = dir.join("content");
    fixtures::sample_tree(&content).unwrap();
    // Deleted on the source's ext4 after it was made: not a file any filesystem holds.
    std::fs::remove_file(content.join("deleted.bin")).unwrap();
    Source {
        path,
        spec,
        expected,
        content,
    }
}

/// A blank (sparse) disk image of `mib` MiB.
pub fn blank(path: &Path, mib: u64) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(mib * MIB)
        .unwrap();
}

/// A blank disk formatted ext4 as a whole (no partition table), as an image drive often is.
pub fn ext4_drive(path: &Path, size_mib: u64) {
    blank(path, size_mib);
    let (ok, out) = tool(Command::new("mkfs.ext4").args(["-F", "-q"]).arg(path));
    assert!(ok, "mkfs.ext4 on {}: {out}", path.display());
}

/// What `rescue disks --json` says about a disk image file on the host.
pub fn host_report(path: &Path) -> Value {
    let report = rescue::detect::detect_paths(
        &[path.to_path_buf()],
        &rescue::detect::DetectOptions::default(),
    );
    let v = serde_json::to_value(&report).unwrap();
    v["disks"][0].clone()
}

/// Capture, verify and a restore with read-back under TCG take minutes, not seconds.
pub const CHAIN_TIMEOUT: Duration = Duration::from_secs(900);

/// Like `qemu_tests::run_command`, with a timeout for a whole imaging chain rather than one quick command.
pub fn run_chain(mut vm: Vm, cmd: &str) -> CmdRun {
    vm.append = format!("{} rescue.cmd=\"{cmd}\"", vm.append);
    let mut g = Guest::boot(vm).unwrap_or_else(|e| panic!("{e:#}"));
    let (stdout, rc) = g
        .marked_output(CHAIN_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    g.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    CmdRun {
        stdout,
        rc,
        serial: g.output(),
    }
}

/// The first JSON document in `text` that starts on a line of its own with `{` (PID 1 and the commands
/// print other lines around it).
pub fn first_json_block(text: &str) -> Option<Value> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "{" {
            let mut it = serde_json::Deserializer::from_str(&text[offset..]).into_iter::<Value>();
            if let Some(Ok(v)) = it.next() {
                return Some(v);
            }
        }
        offset += line.len();
    }
    None
}

/// One-line JSON objects in `text` that have `key` (summaries; progress lines have `phase` instead).
pub fn json_lines_with(text: &str, key: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|v| v.get(key).is_some())
        .collect()
}

// ---- driving the TUI over the serial console ----

pub const DOWN: &str = "\x1b[B";
pub const HOME: &str = "\x1b[H";
pub const ENTER: &str = "\r";
pub const TAB: &str = "\t";
pub const ESC: &str = "\x1b";
/// A capture or restore with read-back of the demo disk under TCG.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(600);
pub const STEP: Duration = Duration::from_secs(30);

pub struct Session {
    pub g: Guest,
    /// Where the UI's output starts in the serial log.
    pub from: usize,
}

impl Session {
    /// Boot `vm` into the rescue system and wait for the interface's overview to show `overview`.
    pub fn boot(vm: Vm, overview: &str) -> Session {
        let mut g = qemu_tests::Guest::boot(vm).unwrap_or_else(|e| panic!("{e:#}"));
        let from = g
            .wait_for(rescue::init::READY, qemu_tests::BOOT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let mut s = Session { g, from };
        s.wait(overview, STEP);
        s
    }

    pub fn send(&mut self, keys: &str) {
        self.g.send(keys).unwrap();
        // Let crossterm tell a lone Esc from an escape sequence, and the UI redraw.
        std::thread::sleep(Duration::from_millis(400));
    }

    pub fn wait(&mut self, needle: &str, timeout: Duration) -> String {
        self.g
            .wait_screen(self.from, needle, timeout)
            .unwrap_or_else(|e| panic!("{e:#}\nserial tail:\n{}", self.g.tail(30)))
    }

    pub fn screen(&self) -> String {
        self.g.screen(self.from)
    }

    /// Go to the top of the list, then press Down until the selected line (marked `>`) contains `needle`.
    pub fn select(&mut self, needle: &str) -> String {
        self.send(HOME);
        for _ in 0..30 {
            let s = self.screen();
            if s.lines().any(|l| l.contains("> ") && l.contains(needle)) {
                return s;
            }
            self.send(DOWN);
        }
        panic!(
            "could not select a line with {needle:?}:\n{}",
            self.screen()
        );
    }
}

impl Session {
    /// Select the disk whose details show `serial` in the overview.
    pub fn select_disk(&mut self, serial: &str) {
        let needle = format!("serial {serial}");
        self.send(HOME);
        for _ in 0..20 {
            if self.screen().contains(&needle) {
                return;
            }
            self.send(DOWN);
        }
        panic!("no disk with {needle} in the overview:\n{}", self.screen());
    }

    /// Capture the selected disk whole into the first destination offered, with the default name and
    /// level: returns the destination step's screen and the result screen (after SUCCESS).
    pub fn capture_whole_disk(&mut self) -> (String, String) {
        self.send("c");
        self.wait("Step 1 of 4", STEP);
        self.send(ENTER);
        let dest = self.wait("Step 2 of 4", STEP);
        self.send(ENTER);
        self.wait("Step 3 of 4", STEP);
        self.send(ENTER);
        self.wait("Step 4 of 4", STEP);
        self.send(ENTER);
        let result = self.wait("SUCCESS", JOB_TIMEOUT);
        (dest, result)
    }

    /// Open the restore wizard on the store whose line holds `store` and the first image, whole, up to
    /// the list of targets.
    pub fn restore_to_targets(&mut self, store: &str) {
        self.send("r");
        self.wait("Step 1 of 5", STEP);
        self.select(store);
        self.send(ENTER);
        self.wait("Step 2 of 5", STEP);
        self.send(ENTER);
        self.wait("Step 3 of 5", STEP);
        self.send(ENTER);
        self.wait("Step 4 of 5", STEP);
    }
}

impl Session {
    /// On a "WILL BE DESTROYED … Type NAME to confirm" screen: type the name, start, and wait for the
    /// result. Returns the result screen and the seconds from Enter to SUCCESS.
    pub fn confirm_destruction(&mut self) -> (String, f64) {
        let screen = self.wait("to confirm:", STEP);
        assert!(screen.contains("WILL BE DESTROYED"), "{screen}");
        let name = line_with(&screen, "to confirm:")
            .split("Type ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no name to type on the screen:\n{screen}"))
            .to_string();
        self.send(&name);
        let started = std::time::Instant::now();
        self.send(ENTER);
        let result = self.wait("SUCCESS", JOB_TIMEOUT);
        (result, started.elapsed().as_secs_f64())
    }
}

impl Session {
    /// On the restore's list of targets: choose the line holding `target`, confirm by typing its name,
    /// check the result says it was read back and verified, and go back to the overview (which shows
    /// `overview`). Returns the seconds from Enter to SUCCESS.
    pub fn restore_onto(&mut self, target: &str, overview: &str) -> f64 {
        self.select(target);
        self.send(ENTER);
        self.wait("Step 5 of 5", STEP);
        let (screen, seconds) = self.confirm_destruction();
        assert!(screen.contains("read back and verified"), "{screen}");
        self.send(ENTER);
        self.wait(overview, STEP);
        seconds
    }

    /// Power off from the power menu and wait for QEMU to end.
    pub fn power_off(&mut self) {
        self.send("p");
        self.wait("power off", STEP);
        self.send("p");
        self.g
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// The line of `screen` holding `needle`.
pub fn line_with<'a>(screen: &'a str, needle: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} on the screen:\n{screen}"))
}

/// Capture on the host with the library (what the CLI runs).
pub fn host_capture(source: &Path, image: &Path) {
    let args = rescue::cli::imaging::CaptureArgs {
        source: source.to_path_buf(),
        output: Some(image.to_path_buf()),
        repo: None,
        name: None,
        partitions: Vec::new(),
        level: rescue::image::DEFAULT_LEVEL,
        threads: 2,
        raw: false,
        keep_unallocated: false,
        no_dedup: false,
        json: false,
        net: Default::default(),
    };
    assert_eq!(rescue::cli::imaging::capture(args).unwrap(), 0);
}

/// Copy a host file into the root of an ext4 drive image.
pub fn put_file(drive: &Path, file: &Path, name: &str) {
    let (ok, out) = tool(
        Command::new("debugfs")
            .arg("-w")
            .arg("-R")
            .arg(format!("write {} {name}", file.display()))
            .arg(drive),
    );
    assert!(ok && !out.contains("rror"), "debugfs write: {out}");
}

/// The demo source's ext4 partition.
pub fn ext4_of(src: &Source) -> &fixtures::Expected {
    src.expected
        .iter()
        .zip(&src.spec.parts)
        .find(|(_, p)| p.fs == fixtures::Fs::Ext4)
        .map(|(e, _)| e)
        .unwrap()
}

/// Verify `image` (against the disk `against`) on the host through `ops`, as the CLI does; the outcome
/// says what was found. Fails the test when the verify could not run at all.
pub fn verify_on_host(image: &Path, against: Option<&Path>) -> rescue::ops::Outcome {
    let req = rescue::ops::Request::Verify(rescue::ops::VerifySpec {
        image: image.to_path_buf().into(),
        against: against.map(Path::to_path_buf),
    });
    let out = rescue::ops::run(
        &req,
        &Default::default(),
        &Default::default(),
        Default::default(),
    );
    assert!(
        out.error.is_none() || !out.problems.is_empty(),
        "verify {} could not run: {:?}",
        image.display(),
        out.error
    );
    out
}

/// A disk of `mib` MiB with one ext4 partition holding `data_mib` MiB of incompressible data, so a
/// capture takes a while under TCG.
pub fn big_source(path: &Path, mib: u64, data_mib: usize) {
    let spec = fixtures::DiskSpec {
        size_mib: mib,
        sector_size: 512,
        table: fixtures::Table::Gpt,
        parts: vec![fixtures::part(mib - 2, fixtures::Fs::Ext4, Some("data"))],
    };
    let expected = fixtures::create_disk(path, &spec).unwrap();
    let part = path.with_extension("part");
    extract(path, &expected[0], &part);
    let noise = path.with_extension("noise");
    std::fs::write(&noise, fixtures::noise(data_mib << 20, 11)).unwrap();
    put_file(&part, &noise, "noise.bin");
    // Put the partition back without writing its empty space: the disk's holes stay holes.
    builder::checks::copy_sparse(
        &part,
        0,
        path,
        expected[0].start_bytes,
        expected[0].size_bytes,
        false,
    );
    std::fs::remove_file(&part).unwrap();
    std::fs::remove_file(&noise).unwrap();
}
