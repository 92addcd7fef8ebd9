//! Unallocated space: a large gap outside the partitions (here a stale tail of old data) is recorded as
//! unallocated, not read and not stored, listed by `inspect`, and left as it is by a restore (or zeroed
//! with `--zero-unused`); `--keep-unallocated` and `--raw` capture it; the size announced before the
//! capture is what is read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::{rescue, s};

use builder::fixtures::{self, DiskSpec, Fs, Table};

const MIB: u64 = 1 << 20;

/// A 96 MiB GPT disk whose one partition (16 MiB ext4) ends at 17 MiB; the rest is old data.
fn disk_with_a_stale_tail(dir: &std::path::Path) -> std::path::PathBuf {
    let disk = dir.join("disk.img");
    let spec = DiskSpec {
        size_mib: 96,
        sector_size: 512,
        table: Table::Gpt,
        parts: vec![fixtures::part(16, Fs::Ext4, Some("root"))],
    };
    fixtures::create_disk(&disk, &spec).unwrap();
    let mut bytes = std::fs::read(&disk).unwrap();
    let tail = 20 * MIB as usize..bytes.len() - MIB as usize;
    let len = tail.len();
    bytes[tail].copy_from_slice(&fixtures::noise(len, 11));
    std::fs::write(&disk, &bytes).unwrap();
    disk
}

/// The JSON document printed (progress lines aside): the one with `key`.
fn json_with(out: &str, key: &str) -> serde_json::Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get(key).is_some())
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn a_stale_unallocated_tail_is_left_out_listed_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = disk_with_a_stale_tail(d);
    let image = d.join("d.rimg");
    let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&image), "--json"]);
    assert_eq!(rc, 0, "{out}");
    let summary = json_with(&out, "root_hash");
    let used = summary["used_bytes"].as_u64().unwrap();
    assert!(used < 17 * MIB, "the tail was read: {summary}");
    assert!(
        std::fs::metadata(&image).unwrap().len() < 8 * MIB,
        "the tail was stored"
    );

    let (rc, out) = rescue(&["inspect", "--json", s(&image)]);
    assert_eq!(rc, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ranges = v["unallocated"].as_array().unwrap();
    assert_eq!(ranges.len(), 1, "{v}");
    assert!(
        ranges[0]["start"].as_u64().unwrap() <= 20 * MIB
            && ranges[0]["end"].as_u64().unwrap() >= 95 * MIB,
        "{v}"
    );
    let (_, text) = rescue(&["inspect", s(&image)]);
    assert!(text.contains("unallocated bytes"), "{text}");

    // A restore leaves the target's bytes there; with --zero-unused they become zeros.
    let target = d.join("t.img");
    std::fs::write(&target, vec![0xAA; 96 * MIB as usize]).unwrap();
    let (rc, out) = rescue(&["restore", s(&image), s(&target), "--yes"]);
    assert_eq!(rc, 0, "{out}");
    let t = std::fs::read(&target).unwrap();
    assert!(t[30 * MIB as usize..90 * MIB as usize]
        .iter()
        .all(|&b| b == 0xAA));
    let (rc, out) = rescue(&["verify", s(&image), "--against", s(&target)]);
    assert_eq!(rc, 0, "{out}");
    let (rc, out) = rescue(&["restore", s(&image), s(&target), "--yes", "--zero-unused"]);
    assert_eq!(rc, 0, "{out}");
    let t = std::fs::read(&target).unwrap();
    assert!(t[30 * MIB as usize..90 * MIB as usize]
        .iter()
        .all(|&b| b == 0));

    // --keep-unallocated and --raw read it all, and put it back.
    for flag in ["--keep-unallocated", "--raw"] {
        let kept = d.join(format!("kept{flag}.rimg"));
        let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&kept), "--json", flag]);
        assert_eq!(rc, 0, "{out}");
        assert!(
            json_with(&out, "root_hash")["used_bytes"].as_u64().unwrap() > 75 * MIB,
            "{flag}: {out}"
        );
        let (rc, out) = rescue(&["restore", s(&kept), s(&target), "--yes"]);
        assert_eq!(rc, 0, "{out}");
        let t = std::fs::read(&target).unwrap();
        let src = std::fs::read(&disk).unwrap();
        assert!(
            t[20 * MIB as usize..95 * MIB as usize] == src[20 * MIB as usize..95 * MIB as usize],
            "{flag}: the tail did not come back"
        );
    }
}

/// What a capture says it will read before it starts is what it reads: the warning about a small
/// destination names the same size as the summary's used bytes.
#[test]
fn the_size_announced_is_the_size_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = disk_with_a_stale_tail(d);
    let small = common::Tmpfs::mount(d, "1m");
    let (_, out) = rescue(&[
        "capture",
        s(&disk),
        "-o",
        s(&small.dir.join("x.rimg")),
        "--json",
    ]);
    drop(small);
    let warning = json_with(&out, "warning")["warning"]
        .as_str()
        .unwrap()
        .to_string();
    let image = d.join("d.rimg");
    let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&image), "--json"]);
    assert_eq!(rc, 0, "{out}");
    let used = json_with(&out, "root_hash")["used_bytes"].as_u64().unwrap();
    let (_, inspect) = rescue(&["inspect", s(&image)]);
    let said = inspect
        .lines()
        .find(|l| l.starts_with("used"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(
        warning.contains(&format!("up to {said} ")),
        "announced: {warning}; read {used} bytes ({said})"
    );
}
