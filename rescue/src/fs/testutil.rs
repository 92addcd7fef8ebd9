//! Test helpers: running the real filesystem tools, pseudo-random file trees, and copies of an image
//! that keep only what a map says is used.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{used_map, FsError, UsedMap};
use crate::detect::FsKind;

/// Which Debian package ships each tool, for the failure message.
fn package_of(tool: &str) -> &'static str {
    match tool {
        t if t.starts_with("mkfs.ext")
            || ["debugfs", "dumpe2fs", "e2fsck", "mke2fs"].contains(&t) =>
        {
            "e2fsprogs"
        }
        "mkfs.vfat" | "fsck.vfat" => "dosfstools",
        t if t.starts_with('m') && t.len() <= 6 => "mtools",
        t if t.contains("exfat") => "exfatprogs",
        t if t.contains("ntfs") => "ntfs-3g",
        "mkswap" => "util-linux",
        _ => "?",
    }
}

/// A command for `tool`; the test fails (never skips) when the tool is missing.
pub fn tool(name: &str) -> Command {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(["/sbin", "/usr/sbin"].map(PathBuf::from));
    for d in dirs {
        let p = d.join(name);
        if p.is_file() {
            let mut c = Command::new(p);
            c.env("MTOOLS_SKIP_CHECK", "1").env("LC_ALL", "C");
            return c;
        }
    }
    panic!(
        "this test needs the tool `{name}`, which is not installed: `apt-get install {}`",
        package_of(name)
    );
}

/// Runs `c`, failing the test with its output unless it exits 0; returns stdout + stderr.
pub fn run(c: &mut Command) -> String {
    let (code, out) = run_status(c);
    assert_eq!(code, 0, "{c:?} failed:\n{out}");
    out
}

pub fn run_status(c: &mut Command) -> (i32, String) {
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), s)
}

/// A sparse file of `len` bytes.
pub fn sparse(dir: &Path, name: &str, len: u64) -> PathBuf {
    let p = dir.join(name);
    File::create(&p).unwrap().set_len(len).unwrap();
    p
}

pub fn map_file(path: &Path, fs: FsKind) -> Result<UsedMap, FsError> {
    let mut f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    used_map(&mut f, size, fs)
}

pub fn map_ok(path: &Path, fs: FsKind) -> UsedMap {
    let map = map_file(path, fs).unwrap_or_else(|e| panic!("no map for {}: {e}", path.display()));
    check_shape(&map);
    map
}

/// The invariants every map promises.
pub fn check_shape(map: &UsedMap) {
    let mut prev_end = None;
    for r in &map.ranges {
        assert!(
            r.start < r.end && r.end <= map.size,
            "bad range {r:?} in {}",
            map.size
        );
        if let Some(p) = prev_end {
            assert!(r.start > p, "ranges overlap or touch at {r:?}");
        }
        prev_end = Some(r.end);
    }
    assert_eq!(
        map.used_bytes,
        map.ranges.iter().map(|r| r.end - r.start).sum::<u64>()
    );
}

pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// Copies `src` to `dst` keeping only the mapped bytes; every unmapped byte becomes pseudo-random
/// garbage, so a used block the map missed cannot pass for intact even if it held zeros.
pub fn poisoned_copy(src: &Path, map: &UsedMap, dst: &Path) {
    let mut input = File::open(src).unwrap();
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dst)
        .unwrap();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut poison = vec![0u8; 1 << 16];
    let mut pos = 0u64;
    let mut write_poison = |out: &mut File, from: u64, to: u64| {
        out.seek(SeekFrom::Start(from)).unwrap();
        let mut at = from;
        while at < to {
            rng.fill(&mut poison);
            let n = (to - at).min(poison.len() as u64) as usize;
            out.write_all(&poison[..n]).unwrap();
            at += n as u64;
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    for r in &map.ranges {
        write_poison(&mut out, pos, r.start);
        input.seek(SeekFrom::Start(r.start)).unwrap();
        out.seek(SeekFrom::Start(r.start)).unwrap();
        let mut at = r.start;
        while at < r.end {
            let n = (r.end - at).min(buf.len() as u64) as usize;
            input.read_exact(&mut buf[..n]).unwrap();
            out.write_all(&buf[..n]).unwrap();
            at += n as u64;
        }
        pos = r.end;
    }
    write_poison(&mut out, pos, map.size);
}

/// Writes a tree of files with pseudo-random contents under `root/data` (sizes chosen to cross
/// block, cluster and extent boundaries) and returns relative path → contents.
pub fn populate(root: &Path, seed: u64, scale: usize) -> BTreeMap<String, Vec<u8>> {
    let mut rng = XorShift(seed | 1);
    let sizes = [
        0usize,
        1,
        511,
        512,
        4095,
        4096,
        4097,
        65_543,
        300_001,
        1_048_589 * scale,
    ];
    let mut files = BTreeMap::new();
    for (i, dir) in ["data", "data/sub", "data/sub/deeper", "data/other"]
        .iter()
        .enumerate()
    {
        fs::create_dir_all(root.join(dir)).unwrap();
        for (j, &size) in sizes.iter().enumerate() {
            if (i + j) % 2 == 1 && size > 65_543 {
                continue;
            }
            let rel = format!("{dir}/F{i}X{j}.BIN");
            let data = rng.bytes(size);
            fs::write(root.join(&rel), &data).unwrap();
            files.insert(rel, data);
        }
    }
    files
}

/// Every expected file exists under `root` with the same bytes.
pub fn assert_tree(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (rel, data) in files {
        let got =
            fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel} missing from the copy: {e}"));
        assert!(
            got == *data,
            "{rel} differs in the copy ({} vs {} bytes)",
            got.len(),
            data.len()
        );
    }
}

/// Patches `bytes` into `path` at `offset`.
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).unwrap();
    b
}

pub fn expect_inconsistent(r: Result<UsedMap, FsError>, what: &str) -> String {
    match r {
        Err(e @ FsError::Inconsistent { .. }) => e.to_string(),
        other => panic!("{what}: expected Inconsistent, got {other:?}"),
    }
}

pub fn expect_unsupported(r: Result<UsedMap, FsError>, what: &str) -> String {
    match r {
        Err(e @ FsError::Unsupported { .. }) => e.to_string(),
        other => panic!("{what}: expected Unsupported, got {other:?}"),
    }
}

/// One line for the test log: map size against filesystem size.
pub fn report(name: &str, map: &UsedMap) {
    eprintln!(
        "{name}: map {} KiB of {} KiB ({:.1}%), {} ranges, notes {:?}",
        map.used_bytes / 1024,
        map.size / 1024,
        map.used_bytes as f64 * 100.0 / map.size as f64,
        map.ranges.len(),
        map.notes
    );
}
