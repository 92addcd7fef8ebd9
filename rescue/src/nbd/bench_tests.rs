//! How fast this server is next to QEMU's own, `qemu-nbd -r -f raw`, serving the same raw file over a
//! Unix socket: random 4 KiB reads per second (`qemu-io` running a script of reads, one connection, one
//! request at a time) and sequential MB/s (`qemu-img bench`, 1 MiB reads, 4 in flight; `nbdcopy` to
//! `null:`, 4 connections). Printed, not asserted; run with
//! `cargo test -p rescue --lib nbd::bench_tests -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tests::{run, serve_raw};

const SIZE: u64 = 512 << 20;
const RANDOM_READS: u64 = 20_000;

fn noise_file(path: &Path) {
    let mut f = std::io::BufWriter::new(File::create(path).unwrap());
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..SIZE >> 20 {
        for w in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).unwrap();
    }
}

/// Seconds `qemu-io` takes for [`RANDOM_READS`] reads of 4 KiB at random 4 KiB-aligned offsets.
fn random_reads(url: &str) -> f64 {
    let mut script = String::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..RANDOM_READS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = (x % (SIZE / 4096)) * 4096;
        writeln!(script, "read -q {at} 4096").unwrap();
    }
    let start = Instant::now();
    let mut child = Command::new("qemu-io")
        .args(["-r", "-f", "raw", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    start.elapsed().as_secs_f64()
}

fn timed(tool: &str, args: &[&str]) -> f64 {
    let start = Instant::now();
    run(tool, args);
    start.elapsed().as_secs_f64()
}

fn measure(name: &str, url: &str) {
    let random = random_reads(url);
    let bench = timed(
        "qemu-img",
        &[
            "bench", "-f", "raw", "-c", "512", "-s", "1M", "-d", "4", url,
        ],
    );
    let copy = timed("nbdcopy", &[url, "null:"]);
    let mb = SIZE as f64 / 1e6;
    println!(
        "{name:<10} random 4 KiB reads: {:>8.0}/s   sequential (qemu-img bench): {:>7.0} MB/s   \
         (nbdcopy, 4 connections): {:>7.0} MB/s",
        RANDOM_READS as f64 / random,
        mb / bench,
        mb / copy
    );
}

/// `qemu-nbd` serving `path` on `socket`, until killed.
fn qemu_nbd(path: &Path, socket: &Path) -> Child {
    let child = Command::new("qemu-nbd")
        .args(["-r", "-f", "raw", "-t", "-k"])
        .arg(socket)
        .arg(path)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !socket.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
#[ignore = "a measurement: prints figures, takes a minute"]
fn throughput_next_to_qemu_nbd() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("noise.raw");
    noise_file(&raw);
    // Both read it from the page cache: warm it once.
    run("cat", &[raw.to_str().unwrap(), "--", "/dev/null"]);
    let (server, _) = serve_raw(dir.path(), &raw, None);
    measure("rescue", server.url());
    server.shutdown().unwrap();
    let socket = dir.path().join("qemu-nbd.sock");
    let mut child = qemu_nbd(&raw, &socket);
    let url = format!("nbd+unix:///?socket={}", socket.display());
    measure("qemu-nbd", &url);
    let _ = child.kill();
    let _ = child.wait();
}
