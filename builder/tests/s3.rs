//! The S3 test server (Ceph's radosgw on a one-OSD in-memory cluster) works end to end with tools that
//! owe nothing to our code: `s3cmd` for buckets, uploads (single and multipart), listings and downloads,
//! `curl --aws-sigv4` for a ranged GET and for a request signed with a wrong key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use builder::servers::S3Server;

fn ok(out: Output, what: &str, server: &S3Server) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: {text}\n{}",
        server.log_text()
    );
    text
}

fn s3cmd(server: &S3Server, args: &[&str]) -> String {
    let out = server.s3cmd().args(args).output().expect("s3cmd");
    ok(out, &format!("s3cmd {args:?}"), server)
}

/// A request signed with SigV4 by curl (path-style; a GET unless `extra` says otherwise); `-w` appends
/// the HTTP status on a last line.
fn curl(server: &S3Server, secret: &str, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--noproxy", "*", "-w", "\n%{http_code}"])
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", server.region))
        .arg("--user")
        .arg(format!("{}:{secret}", server.access_key))
        // curl 7.88 signs no payload hash by itself; radosgw (like S3) wants the header.
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
    let out = cmd
        .args(extra)
        .arg(format!("{}{path}", server.endpoint))
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl {path}");
    let body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&body[split + 1..]).parse().unwrap();
    (status, body[..split].to_vec())
}

/// Bytes that do not repeat within a part (a xorshift stream).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write(path: &Path, data: &[u8]) -> String {
    std::fs::write(path, data).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn s3_server_serves_objects_multipart_and_ranges() {
    let started = Instant::now();
    let server = S3Server::start();
    eprintln!(
        "radosgw ready at {} in {:.2} s",
        server.endpoint,
        started.elapsed().as_secs_f64()
    );
    let pids = server.pids();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    server.create_bucket("rescue-images");
    let small = write(&w.join("small"), b"hello from a real S3 server\n");
    s3cmd(
        &server,
        &["put", &small, "s3://rescue-images/dir/small.txt"],
    );

    // 11 MiB in 5 MiB parts: three parts, the last one short.
    let big_data = pattern(11 << 20);
    let big = write(&w.join("big"), &big_data);
    s3cmd(
        &server,
        &[
            "put",
            "--multipart-chunk-size-mb=5",
            &big,
            "s3://rescue-images/big.rimg",
        ],
    );

    let list = s3cmd(&server, &["ls", "--recursive", "s3://rescue-images"]);
    assert!(
        list.contains(&format!("{}  s3://rescue-images/big.rimg", 11 << 20)),
        "{list}"
    );
    assert!(list.contains("s3://rescue-images/dir/small.txt"), "{list}");
    let (status, head) = curl(
        &server,
        &server.secret_key,
        "/rescue-images/big.rimg",
        &["-I"],
    );
    let head = String::from_utf8_lossy(&head);
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("-3\""),
        "a 3-part upload's ETag ends in -3: {head}"
    );

    let got = w.join("got");
    let got_s = got.to_str().unwrap();
    s3cmd(
        &server,
        &["get", "--force", "s3://rescue-images/big.rimg", got_s],
    );
    assert!(
        std::fs::read(&got).unwrap() == big_data,
        "the object read back differs"
    );
    s3cmd(
        &server,
        &["get", "--force", "s3://rescue-images/dir/small.txt", got_s],
    );
    assert_eq!(
        std::fs::read(&got).unwrap(),
        b"hello from a real S3 server\n"
    );

    // A range across the boundary of parts 1 and 2.
    let (start, end) = ((5 << 20) - 100, (5 << 20) + 99);
    let (status, body) = curl(
        &server,
        &server.secret_key,
        "/rescue-images/big.rimg",
        &["-H", &format!("Range: bytes={start}-{end}")],
    );
    assert_eq!(status, 206, "{}", String::from_utf8_lossy(&body));
    assert!(
        body == big_data[start..=end],
        "the ranged GET returned other bytes"
    );

    // Authentication is real: a wrong secret is refused, an unknown object is a 404.
    let (status, body) = curl(&server, "wrong-secret", "/rescue-images/big.rimg", &[]);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("SignatureDoesNotMatch"));
    let (status, _) = curl(&server, &server.secret_key, "/rescue-images/nothing", &[]);
    assert_eq!(status, 404);

    drop(server);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "daemon {pid} still runs after drop"
        );
    }
    eprintln!("whole test: {:.2} s", started.elapsed().as_secs_f64());
}
