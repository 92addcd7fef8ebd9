//! The pieces on their own (address parsing, option data, the overlay's map and its merges), and the
//! helpers the other test files share: a raw disk made at test time and a server over it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::overlay::{Overlay, Written, BLOCK};
use super::*;

pub(super) const MIB: usize = 1 << 20;
/// Not a whole number of 4 KiB blocks (the overlay's last block is short), but of 512-byte sectors.
pub(super) const SIZE: usize = 9 * MIB + 3 * 4096 + 512;

/// A raw disk of [`SIZE`] bytes, sparse where it is zero: per 64 KiB, noise, `0xa5`, a sector-number
/// pattern, or never-written zeros; the last 4608 bytes are `0x5a`.
pub(super) fn raw_disk(dir: &Path) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; SIZE];
    let mut noise = blake3::Hasher::new()
        .update(b"nbd test disk")
        .finalize_xof();
    for (i, chunk) in data.chunks_mut(64 * 1024).enumerate() {
        match i % 5 {
            0 => noise.fill(chunk),
            1 => chunk.fill(0xa5),
            2 => chunk
                .iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = (j / 512) as u8),
            _ => {}
        }
    }
    let tail = SIZE - 4608;
    data[tail..].fill(0x5a);
    let path = dir.join("disk.raw");
    let f = File::create(&path).unwrap();
    f.set_len(SIZE as u64).unwrap();
    for (i, chunk) in data.chunks(64 * 1024).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            f.write_all_at(chunk, (i * 64 * 1024) as u64).unwrap();
        }
    }
    (path, data)
}

/// A log that keeps its lines, to look at them.
pub(super) fn kept_log() -> (Log, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    let log: Log = Arc::new(move |l: &str| kept.lock().unwrap().push(l.to_string()));
    (log, lines)
}

/// How many lines of `log` contain `part`, which must be at least one.
pub(super) fn logged(log: &Mutex<Vec<String>>, part: &str) -> usize {
    let lines = log.lock().unwrap();
    let n = lines.iter().filter(|l| l.contains(part)).count();
    assert!(n > 0, "no line says {part:?}: {lines:#?}");
    n
}

pub(super) fn export_of(disk: Arc<dyn ReadAt>, allocation: Option<Arc<dyn Allocation>>) -> Export {
    Export {
        name: "disk".into(),
        description: "a test disk".into(),
        disk,
        allocation,
    }
}

/// A server of the raw file `path` on a Unix socket in `dir` (with its file allocation map).
pub(super) fn serve_raw(
    dir: &Path,
    path: &Path,
    overlay: Option<PathBuf>,
) -> (Server, Arc<Mutex<Vec<String>>>) {
    let file = Arc::new(File::open(path).unwrap());
    let export = export_of(file.clone(), Some(file_allocation(file)));
    serve(dir, export, overlay)
}

pub(super) fn serve(
    dir: &Path,
    export: Export,
    overlay: Option<PathBuf>,
) -> (Server, Arc<Mutex<Vec<String>>>) {
    let (log, lines) = kept_log();
    let listen = Listen::Unix(dir.join("nbd.sock"));
    (start(export, listen, false, overlay, log).unwrap(), lines)
}

pub(super) fn start(
    export: Export,
    listen: Listen,
    allow_remote: bool,
    overlay: Option<PathBuf>,
    log: Log,
) -> io::Result<Server> {
    Server::start(Config {
        export,
        listen,
        allow_remote,
        overlay,
        log,
    })
}

/// Run a host tool, which must succeed; its output.
pub(super) fn run(tool: &str, args: &[&str]) -> Output {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} cannot run ({e}); see docs/NBD.md for the packages"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn tcp_addresses_as_given_on_a_command_line() {
    let lo = |p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
    assert_eq!(parse_tcp("").unwrap(), lo(DEFAULT_PORT));
    assert_eq!(parse_tcp("10810").unwrap(), lo(10810));
    assert_eq!(parse_tcp(":10811").unwrap(), lo(10811));
    assert_eq!(parse_tcp("localhost:7").unwrap(), lo(7));
    assert_eq!(
        parse_tcp("192.168.1.2:99").unwrap().to_string(),
        "192.168.1.2:99"
    );
    assert_eq!(parse_tcp("[::1]:99").unwrap().to_string(), "[::1]:99");
    assert_eq!(parse_tcp("::1").unwrap().to_string(), "[::1]:10809");
    assert_eq!(parse_tcp("10.0.0.1").unwrap().to_string(), "10.0.0.1:10809");
    for bad in ["host:port", "1.2.3.4:70000", "example.com:10809", "-1"] {
        let e = parse_tcp(bad).unwrap_err();
        assert!(e.contains("is not ADDR:PORT"), "{bad}: {e}");
    }
}

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

#[test]
fn option_data_is_parsed_only_when_it_adds_up() {
    use super::handshake::{parse_info, parse_meta};
    let mut go = 4u32.to_be_bytes().to_vec();
    go.extend_from_slice(b"disk");
    go.extend_from_slice(&2u16.to_be_bytes());
    go.extend_from_slice(&[0, 3, 0, 1]);
    assert_eq!(parse_info(&go), Some((&b"disk"[..], &[0u8, 3, 0, 1][..])));
    assert_eq!(parse_info(&go[..go.len() - 1]), None);
    assert_eq!(parse_info(&[0, 0, 0, 9, b'x', 0, 0]), None);
    let mut meta = 0u32.to_be_bytes().to_vec();
    meta.extend_from_slice(&2u32.to_be_bytes());
    for q in [&b"base:allocation"[..], b"qemu:x"] {
        meta.extend_from_slice(&(q.len() as u32).to_be_bytes());
        meta.extend_from_slice(q);
    }
    let (name, queries) = parse_meta(&meta).unwrap();
    assert_eq!(name, b"");
    assert_eq!(queries, vec![&b"base:allocation"[..], b"qemu:x"]);
    assert!(parse_meta(&meta[..meta.len() - 2]).is_none());
    // A count far beyond the data is refused without allocating for it.
    let mut many = 0u32.to_be_bytes().to_vec();
    many.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(parse_meta(&many).is_none());
}

#[test]
fn the_written_map_finds_runs_and_skips_unwritten_leaves() {
    let mut w = Written::default();
    assert_eq!(w.run(0, 1 << 40), (false, 1 << 40));
    w.set(3, 5);
    assert!(w.get(3) && w.get(5) && !w.get(6) && !w.get(2));
    assert_eq!(w.run(0, 1 << 30), (false, 3 * BLOCK));
    assert_eq!(w.run(3 * BLOCK + 7, 1 << 30), (true, 6 * BLOCK));
    assert_eq!(w.run(4 * BLOCK, 5 * BLOCK + 1), (true, 5 * BLOCK + 1));
    // Far away: a block in another leaf.
    w.set(1 << 24, 1 << 24);
    assert_eq!(w.run(6 * BLOCK, u64::MAX), (false, (1 << 24) * BLOCK));
}

#[test]
fn extents_merge_the_overlay_with_the_allocation_map() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = raw_disk(dir.path());
    let file = Arc::new(File::open(&path).unwrap());
    let (log, _) = kept_log();
    let served = Served::new(
        export_of(file.clone(), Some(file_allocation(file))),
        Some(&dir.path().join("overlay")),
        log,
    )
    .unwrap();
    // 192 KiB..320 KiB are two never-written chunks: a hole. Write 4 KiB in the middle of it.
    let hole = 3 * 64 * 1024;
    assert_eq!(
        served.extents(hole as u64, 128 * 1024),
        vec![(128 * 1024, proto::STATE_HOLE | proto::STATE_ZERO)]
    );
    let o = served.overlay.as_ref().unwrap();
    o.write(served.export.disk.as_ref(), &[1; 10], hole as u64 + 5000)
        .unwrap();
    assert_eq!(
        served.extents(hole as u64, 128 * 1024),
        vec![
            (4096, 3),
            (4096, 0),
            (120 * 1024, proto::STATE_HOLE | proto::STATE_ZERO)
        ]
    );
    // Data then a hole, seen from the file system.
    assert_eq!(
        served.extents(hole as u64 - 4096, 8192),
        vec![(4096, 0), (4096, 3)]
    );
}

#[test]
fn an_overlay_is_made_new_and_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o");
    let o = Overlay::create(&p, 12345).unwrap();
    drop(o);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 12345);
    let e = Overlay::create(&p, 12345).err().unwrap().to_string();
    assert!(
        e.contains("it exists") && e.contains(&p.display().to_string()),
        "{e}"
    );
    let e = Overlay::create(&dir.path().join("no/such/dir"), 1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot be made"), "{e}");
}

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    Zero(u64, u64),
    Read(u64, usize),
}

fn op(size: u64) -> impl Strategy<Value = Op> {
    let at = 0..size;
    prop_oneof![
        (at.clone(), proptest::collection::vec(any::<u8>(), 0..9000))
            .prop_map(|(a, d)| Op::Write(a, d)),
        (at.clone(), 0u64..20000).prop_map(|(a, n)| Op::Zero(a, n)),
        (at, 0usize..20000).prop_map(|(a, n)| Op::Read(a, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever is written, zeroed and read, at any offsets and lengths, the export reads as a plain
    /// copy of the disk with the same changes, and the disk is untouched.
    #[test]
    fn the_overlay_reads_as_the_disk_with_its_writes(ops in proptest::collection::vec(op(70_000), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let size = 70_000u64;
        let base: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let disk: Arc<dyn ReadAt> = Arc::new(base.clone());
        let o = Overlay::create(&dir.path().join("o"), size).unwrap();
        let mut model = base.clone();
        for op in ops {
            match op {
                Op::Write(at, data) => {
                    let n = data.len().min((size - at) as usize);
                    o.write(disk.as_ref(), &data[..n], at).unwrap();
                    model[at as usize..at as usize + n].copy_from_slice(&data[..n]);
                }
                Op::Zero(at, n) => {
                    let n = n.min(size - at);
                    o.write_zeroes(disk.as_ref(), at, n).unwrap();
                    model[at as usize..(at + n) as usize].fill(0);
                }
                Op::Read(at, n) => {
                    let n = n.min((size - at) as usize);
                    let mut buf = vec![0xeeu8; n];
                    o.read(disk.as_ref(), &mut buf, at).unwrap();
                    prop_assert!(buf[..] == model[at as usize..at as usize + n], "read {n} at {at}");
                }
            }
        }
        let mut all = vec![0u8; size as usize];
        o.read(disk.as_ref(), &mut all, 0).unwrap();
        prop_assert!(all == model);
        let mut now = vec![0u8; size as usize];
        disk.read_exact_at(&mut now, 0).unwrap();
        prop_assert!(now == base);
    }
}
