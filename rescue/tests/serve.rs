//! `rescue serve`: an image's disk served over NBD reads, for `qemu-img compare`, the same as a raw
//! restore of it — over a Unix socket and TCP, whole or one partition, from an image of ours and from a
//! virtual machine's disk; with `--overlay` a client writes and reads its writes back while the image
//! file stays byte-identical; and what must be refused is refused, naming why.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use builder::fixtures;

/// A `rescue serve` running until dropped (then interrupted, as Ctrl-C, and waited for).
struct Served {
    child: Option<Child>,
    url: String,
    info: serde_json::Value,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rescue"))
            .arg("serve")
            .args(args)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim().is_empty() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("rescue serve {args:?} did not start: {err}");
        }
        let info: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        Served {
            url: info["url"].as_str().unwrap().to_string(),
            child: Some(child),
            info,
        }
    }

    /// Interrupt the server and return its exit code and stderr.
    fn stop(mut self) -> (i32, String) {
        let mut child = self.child.take().unwrap();
        interrupt(&child);
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let rc = child.wait().unwrap().code().unwrap_or(-1);
        assert!(!err.contains("panicked"), "{err}");
        (rc, err)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            interrupt(&c);
            let _ = c.wait();
        }
    }
}

fn interrupt(child: &Child) {
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
}

fn tool(program: &str, args: &[&str]) -> (bool, String) {
    builder::checks::tool(Command::new(program).args(args))
}

fn blake3_of(p: &Path) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(p).unwrap()).unwrap();
    h.finalize()
}

/// A fixture disk, its image and a raw restore of the image.
fn fixture(d: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let src = d.join("disk.raw");
    fixtures::create_disk(&src, &fixtures::demo_gpt()).unwrap();
    let image = d.join("disk.rimg");
    let (rc, o) = rescue(&["capture", s(&src), "-o", s(&image)]);
    assert_eq!(rc, 0, "{o}");
    let restored = d.join("restored.raw");
    std::fs::File::create(&restored)
        .unwrap()
        .set_len(std::fs::metadata(&src).unwrap().len())
        .unwrap();
    let (rc, o) = rescue(&["restore", s(&image), s(&restored), "--yes"]);
    assert_eq!(rc, 0, "{o}");
    (image, restored)
}

fn same(url: &str, raw: &Path) {
    let (ok, says) = tool(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", url, s(raw)],
    );
    assert!(ok, "qemu-img compare {url} with {}: {says}", raw.display());
}

#[test]
fn the_served_disk_equals_the_raw_restore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (image, restored) = fixture(d);
    let before = blake3_of(&image);

    // The whole disk over a Unix socket.
    let socket = d.join("disk.nbd");
    let srv = Served::start(&[s(&image), "--socket", s(&socket)]);
    assert!(srv.url.starts_with("nbd+unix://"), "{}", srv.url);
    assert_eq!(
        srv.info["size"].as_u64().unwrap(),
        std::fs::metadata(&restored).unwrap().len()
    );
    assert_eq!(srv.info["writable"], false);
    same(&srv.url, &restored);
    let (ok, info) = tool("nbdinfo", &["--json", &srv.url]);
    assert!(ok && info.contains("\"is_read_only\": true"), "{info}");
    let (rc, err) = srv.stop();
    assert_eq!(rc, 0, "{err}");
    assert!(
        !socket.exists(),
        "the socket is removed when the server stops"
    );

    // One partition over TCP on the loopback (port 0: the system picks one).
    let srv = Served::start(&[s(&image), "--partition", "2", "--listen", "127.0.0.1:0"]);
    assert!(srv.url.starts_with("nbd://127.0.0.1:"), "{}", srv.url);
    let part = d.join("p2.raw");
    let (ok, says) = tool(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &srv.url, s(&part)],
    );
    assert!(ok, "{says}");
    let (start, len) = partition_bytes(&restored, 2);
    let whole = std::fs::read(&restored).unwrap();
    let got = std::fs::read(&part).unwrap();
    assert_eq!(got.len() as u64, len);
    assert!(
        got == whole[start as usize..(start + len) as usize],
        "partition 2 served differs from the restore"
    );
    drop(srv);

    // A virtual machine's disk (qcow2 made by qemu-img) is served as the disk it holds.
    let qcow2 = d.join("disk.qcow2");
    let (ok, says) = tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            s(&restored),
            s(&qcow2),
        ],
    );
    assert!(ok, "{says}");
    let srv = Served::start(&[s(&qcow2), "--socket", s(&d.join("q.nbd"))]);
    same(&srv.url, &restored);
    drop(srv);

    assert_eq!(blake3_of(&image), before, "serving never writes the image");
}

#[test]
fn writes_go_to_the_overlay_and_the_image_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (image, restored) = fixture(d);
    let before = blake3_of(&image);
    let overlay = d.join("changes.overlay");
    let srv = Served::start(&[
        s(&image),
        "--socket",
        s(&d.join("w.nbd")),
        "--overlay",
        s(&overlay),
    ]);
    assert_eq!(srv.info["writable"], true);
    let (ok, says) = tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0xab 1048576 65536", &srv.url],
    );
    assert!(ok, "{says}");
    // The write is read back, by another connection; the rest still equals the restore.
    let (ok, says) = tool(
        "qemu-io",
        &["-f", "raw", "-c", "read -P 0xab 1048576 65536", &srv.url],
    );
    assert!(
        ok && !says.contains("Pattern verification failed"),
        "{says}"
    );
    let mut expected = std::fs::read(&restored).unwrap();
    expected[1 << 20..(1 << 20) + 65536].fill(0xab);
    let changed = d.join("changed.raw");
    std::fs::write(&changed, &expected).unwrap();
    same(&srv.url, &changed);
    let (rc, err) = srv.stop();
    assert_eq!(rc, 0, "{err}");
    assert!(overlay.exists());
    assert_eq!(
        blake3_of(&image),
        before,
        "the image file is byte-identical"
    );

    // An overlay is made new each time: an existing one is refused, and left as it is.
    let kept = std::fs::metadata(&overlay).unwrap().len();
    let (rc, o) = rescue(&["serve", s(&image), "--overlay", s(&overlay)]);
    assert_ne!(rc, 0);
    assert!(o.contains("exists") && o.contains(s(&overlay)), "{o}");
    assert_eq!(std::fs::metadata(&overlay).unwrap().len(), kept);
}

#[test]
fn what_cannot_be_served_safely_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (image, _) = fixture(d);
    // Beyond the loopback only when asked.
    let (rc, o) = rescue(&["serve", s(&image), "--listen", "0.0.0.0:0"]);
    assert_ne!(rc, 0);
    assert!(o.contains("not a loopback address"), "{o}");
    // A partition the image does not have.
    let (rc, o) = rescue(&[
        "serve",
        s(&image),
        "--partition",
        "9",
        "--socket",
        s(&d.join("x")),
    ]);
    assert_ne!(rc, 0);
    assert!(o.contains("no partition 9"), "{o}");
    // A file that is no image.
    let junk = d.join("junk.bin");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let (rc, o) = rescue(&["serve", s(&junk), "--socket", s(&d.join("y"))]);
    assert_ne!(rc, 0);
    assert!(o.contains("junk.bin"), "{o}");
    // A socket path that is taken by a live server.
    let socket = d.join("taken.nbd");
    let _srv = Served::start(&[s(&image), "--socket", s(&socket)]);
    let (rc, o) = rescue(&["serve", s(&image), "--socket", s(&socket)]);
    assert_ne!(rc, 0, "{o}");
    assert!(o.contains(s(&socket)), "{o}");
}
