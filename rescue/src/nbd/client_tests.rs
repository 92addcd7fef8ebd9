//! The server against real clients: QEMU's `qemu-img` and `qemu-io` (qemu-utils), libnbd's `nbdinfo`
//! and `nbdcopy` (libnbd-bin), over a Unix socket and over TCP, serving a raw disk and a qcow2 file read
//! through `vdisk`, read-only and with an overlay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::tests::{export_of, kept_log, logged, raw_disk, run, serve, serve_raw, start, SIZE};
use super::*;

fn hash(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `qemu-img compare`: the export at `url` holds the same bytes as the raw file `file`.
fn compare(url: &str, file: &Path) {
    let file = file.to_str().unwrap();
    run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", url, file],
    );
}

fn qemu_img_info(url: &str) -> String {
    text(&run(
        "qemu-img",
        &["info", "--output=json", "-f", "raw", url],
    ))
}

/// `qemu-io` commands against `url`; its output (it fails only when the image cannot be opened, so
/// each command's result is in the text).
fn qemu_io(url: &str, read_only: bool, cmds: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    if read_only {
        args.push("-r");
    }
    for c in cmds {
        args.extend(["-c", c]);
    }
    args.push(url);
    text(&run("qemu-io", &args))
}

/// The bytes of `qemu-io`'s `read -v` hex dump, from the offsets it prints.
fn dumped(out: &str, offset: u64, len: usize) -> Vec<u8> {
    let mut got = vec![None; len];
    for line in out.lines() {
        let Some((addr, rest)) = line.split_once(":  ") else {
            continue;
        };
        let Ok(at) = u64::from_str_radix(addr.trim(), 16) else {
            continue;
        };
        for (i, tok) in rest.split_whitespace().take(16).enumerate() {
            let pos = at + i as u64;
            if pos < offset || pos >= offset + len as u64 || tok.len() != 2 {
                continue;
            }
            got[(pos - offset) as usize] = u8::from_str_radix(tok, 16).ok();
        }
    }
    got.into_iter()
        .enumerate()
        .map(|(i, b)| b.unwrap_or_else(|| panic!("byte {i} missing in the dump:\n{out}")))
        .collect()
}

#[test]
fn qemu_img_reads_a_raw_disk_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_disk(dir.path());
    let (server, log) = serve_raw(dir.path(), &raw, None);
    let url = server.url().to_string();
    assert!(url.starts_with("nbd+unix:///?socket=/"), "{url}");
    compare(&url, &raw);
    let info = qemu_img_info(&url);
    let json: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(json["virtual-size"], SIZE as u64, "{info}");
    // Several clients at once: the export is read-only, so they may share it.
    let many: Vec<_> = (0..4)
        .map(|_| {
            let (url, raw) = (url.clone(), raw.clone());
            std::thread::spawn(move || compare(&url, &raw))
        })
        .collect();
    for t in many {
        t.join().unwrap();
    }
    let sock = dir.path().join("nbd.sock");
    assert!(sock.exists());
    server.shutdown().unwrap();
    assert!(!sock.exists(), "the socket file is removed");
    logged(&log, " connected");
    logged(&log, " disconnected");
}

#[test]
fn a_qcow2_file_is_served_as_the_disk_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_disk(dir.path());
    let q = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-c",
            raw.to_str().unwrap(),
            q.to_str().unwrap(),
        ],
    );
    let file: Arc<dyn ReadAt> = Arc::new(File::open(&q).unwrap());
    let v = crate::vdisk::open(file, &q).unwrap().unwrap();
    let (server, _) = serve(dir.path(), export_of(v.disk, None), None);
    compare(server.url(), &raw);
    let info = qemu_img_info(server.url());
    assert!(
        info.contains(&format!("\"virtual-size\": {SIZE}")),
        "{info}"
    );
}

#[test]
fn tcp_on_the_loopback_with_a_port_the_system_chooses() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_disk(dir.path());
    let file = Arc::new(File::open(&raw).unwrap());
    let listen = Listen::Tcp(parse_tcp("127.0.0.1:0").unwrap());
    let server = start(export_of(file, None), listen, false, None, kept_log().0).unwrap();
    let port = server.local_addr().unwrap().port();
    assert_ne!(port, 0);
    assert_eq!(server.url(), format!("nbd://127.0.0.1:{port}/"));
    assert!(server.warnings().is_empty());
    compare(server.url(), &raw);
    let out = text(&run("nbdinfo", &["--size", server.url()]));
    assert_eq!(out.trim(), SIZE.to_string());
}

#[test]
fn qemu_io_reads_at_odd_offsets_and_the_last_sector() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = raw_disk(dir.path());
    let (server, _) = serve_raw(dir.path(), &raw, None);
    let url = server.url();
    let last = (SIZE - 512).to_string();
    let out = qemu_io(
        url,
        true,
        &[
            // 0xa5 fills 64..128 KiB, zeros 192..320 KiB, 0x5a the end.
            "read -P 0xa5 65537 60001",
            "read -P 0 196611 131000",
            &format!("read -P 0x5a {last} 512"),
            "read -v 333 77",
            "read -v 131071 35",
        ],
    );
    assert!(
        !out.contains("fail") && !out.contains("Pattern verification"),
        "{out}"
    );
    assert_eq!(dumped(&out, 333, 77), data[333..410]);
    assert_eq!(dumped(&out, 131071, 35), data[131071..131106]);
    // Past the end: refused (by QEMU's block layer or by this server).
    let out = std::process::Command::new("qemu-io")
        .args(["-r", "-f", "raw", "-c", &format!("read {last} 1024"), url])
        .output()
        .unwrap();
    assert!(text(&out).contains("read failed"), "{}", text(&out));
}

#[test]
fn without_an_overlay_writes_are_refused_and_the_disk_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_disk(dir.path());
    let before = hash(&raw);
    let (server, _) = serve_raw(dir.path(), &raw, None);
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x11 0 4096", server.url()])
        .output()
        .unwrap();
    // QEMU sees the read-only flag and refuses to open the export for writing.
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("Permission denied"), "{said}");
    assert_eq!(hash(&raw), before);
    let json = text(&run("nbdinfo", &["--json", server.url()]));
    assert!(json.contains("\"is_read_only\": true"), "{json}");
    assert!(json.contains("\"can_multi_conn\": true"), "{json}");
}

#[test]
fn with_an_overlay_writes_read_back_merged_and_the_disk_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, mut want) = raw_disk(dir.path());
    let before = hash(&raw);
    let overlay = dir.path().join("overlay");
    let (server, _) = serve_raw(dir.path(), &raw, Some(overlay.clone()));
    let url = server.url();
    let out = qemu_io(
        url,
        false,
        &[
            "write -P 0xab 4096 8192",
            "read -P 0xab 4096 8192",
            "write -P 0xcd 1000 100",
            "read -P 0xcd 1000 100",
            "read -v 990 120",
            "write -z 70001 5000",
            "discard 300000 4096",
            &format!("write -P 0xee {} 700", SIZE - 700),
            "flush",
        ],
    );
    assert!(
        !out.contains("fail") && !out.contains("Pattern verification"),
        "{out}"
    );
    want[4096..12288].fill(0xab);
    want[1000..1100].fill(0xcd);
    want[70001..75001].fill(0);
    want[SIZE - 700..].fill(0xee);
    assert_eq!(dumped(&out, 990, 120), want[990..1110]);
    // A later client sees the same export; the whole of it compares equal to the expected disk.
    let expected = dir.path().join("expected.raw");
    std::fs::write(&expected, &want).unwrap();
    compare(url, &expected);
    let json = text(&run("nbdinfo", &["--json", url]));
    assert!(json.contains("\"is_read_only\": false"), "{json}");
    assert!(json.contains("\"can_multi_conn\": false"), "{json}");
    server.shutdown().unwrap();
    assert_eq!(hash(&raw), before, "the disk is never written");
    assert!(overlay.exists());
    // The overlay is not reopened.
    let file = Arc::new(File::open(&raw).unwrap());
    let listen = Listen::Unix(dir.path().join("nbd2.sock"));
    let again = start(
        export_of(file, None),
        listen,
        false,
        Some(overlay),
        kept_log().0,
    );
    let e = again.err().unwrap().to_string();
    assert!(e.contains("it exists"), "{e}");
    assert!(!dir.path().join("nbd2.sock").exists());
}

#[test]
fn nbdinfo_lists_the_export_its_block_sizes_and_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, _) = raw_disk(dir.path());
    let (server, _) = serve_raw(dir.path(), &raw, None);
    let json = text(&run("nbdinfo", &["--json", server.url()]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["protocol"], "newstyle-fixed", "{json}");
    assert_eq!(v["structured"], true, "{json}");
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], SIZE as u64, "{json}");
    assert_eq!(e["block_size_minimum"], 1, "{json}");
    assert_eq!(e["block_size_preferred"], 4096, "{json}");
    assert_eq!(e["block_size_maximum"], 32 << 20, "{json}");
    assert_eq!(e["contexts"][0], "base:allocation", "{json}");
    assert_eq!(e["can_df"], true, "{json}");
    let list = text(&run("nbdinfo", &["--list", "--json", server.url()]));
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["exports"][0]["export-name"], "disk", "{list}");
    assert_eq!(v["exports"][0]["description"], "a test disk", "{list}");
    // The map: the file's holes (never-written 64 KiB chunks) are holes reading as zeros.
    let map = text(&run("nbdinfo", &["--map", "--json", server.url()]));
    let v: serde_json::Value = serde_json::from_str(&map).unwrap();
    let extents = v.as_array().unwrap();
    let hole = extents
        .iter()
        .find(|e| e["offset"] == 3 * 65536)
        .unwrap_or_else(|| panic!("{map}"));
    assert_eq!(hole["type"], 3, "{map}");
    assert_eq!(hole["length"], 2 * 65536, "{map}");
    let covered: u64 = extents.iter().map(|e| e["length"].as_u64().unwrap()).sum();
    assert_eq!(covered, SIZE as u64);
}

#[test]
fn nbdcopy_copies_the_export_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, data) = raw_disk(dir.path());
    let (server, _) = serve_raw(dir.path(), &raw, None);
    let copy = dir.path().join("copy.raw");
    // Four connections at once (the export says it can be shared).
    run(
        "nbdcopy",
        &["--connections=4", server.url(), copy.to_str().unwrap()],
    );
    assert!(std::fs::read(&copy).unwrap() == data);
    // Synchronous, one connection, no extents.
    let copy2 = dir.path().join("copy2.raw");
    run(
        "nbdcopy",
        &[
            "--synchronous",
            "--no-extents",
            server.url(),
            copy2.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&copy2).unwrap() == data);
}
