//! Images read from a web server on the host CLI (nginx on 127.0.0.1, started by the test): inspect,
//! verify and restore by range requests over HTTP and HTTPS (a test CA given with `--ca-file`), with
//! HTTP basic authentication from the URL, a credentials file or `RESCUE_PASSWORD`; and the refusals: a
//! certificate from an unknown CA, a server that ignores ranges, a missing file, a wrong password. A
//! password never appears in what the CLI prints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use builder::fixtures;
use builder::servers::{Nginx, TestCa, HTTP_USER};

const PASSWORD: &str = "Web-pass:7";

fn rescue_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rescue"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn captured(dir: &Path) -> std::path::PathBuf {
    let disk = dir.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let root = dir.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let (rc, out) = rescue(&["capture", s(&disk), "-o", s(&root.join("disk.rimg"))]);
    assert_eq!(rc, 0, "{out}");
    disk
}

#[test]
fn images_are_read_over_http_and_https_by_range_requests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = captured(d);
    let root = d.join("www");
    let ca = TestCa::new();
    let http = Nginx::start(&root, None, PASSWORD);
    let https = Nginx::start(&root, Some(&ca), PASSWORD);
    let url = format!("http://127.0.0.1:{}/disk.rimg", http.port);

    let (rc, out, err) = rescue_split(&["inspect", &url, "--json"]);
    assert_eq!(rc, 0, "{out}{err}\n{}", http.log_text());
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["image"], url.as_str());
    assert_eq!(
        info["image_bytes"],
        std::fs::metadata(root.join("disk.rimg")).unwrap().len()
    );

    // Restore onto a blank file of the disk's size, then compare it with the image on the server.
    let target = d.join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(std::fs::metadata(&disk).unwrap().len())
        .unwrap();
    let (rc, out, err) = rescue_split(&["restore", &url, s(&target), "--yes", "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let restored: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        restored["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("read from http://127.0.0.1")),
        "{restored}"
    );
    let sent = http.bytes_sent();
    let image_len = std::fs::metadata(root.join("disk.rimg")).unwrap().len();
    eprintln!("restore over HTTP: server sent {sent} bytes for a {image_len}-byte image");
    let (rc, out, err) = rescue_split(&["verify", &url, "--against", s(&target), "--json"]);
    assert_eq!(rc, 0, "{out}{err}");

    // HTTPS: the test CA is not among the Mozilla roots; given with --ca-file, it is trusted.
    let secure = format!("https://127.0.0.1:{}/disk.rimg", https.port);
    let (rc, _, err) = rescue_split(&["verify", &secure]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("certificate is not trusted") && err.contains("--ca-file"),
        "{err}"
    );
    let (rc, out, err) = rescue_split(&["verify", &secure, "--ca-file", s(&ca.ca_cert)]);
    assert_eq!(rc, 0, "{out}{err}\n{}", https.log_text());

    // A server that sends whole files only, and a file that is not there.
    let whole = format!("http://127.0.0.1:{}/noranges/disk.rimg", http.port);
    let (rc, _, err) = rescue_split(&["inspect", &whole]);
    assert_eq!(rc, 1);
    assert!(err.contains("range requests"), "{err}");
    let missing = format!("http://127.0.0.1:{}/nothing.rimg", http.port);
    let (rc, _, err) = rescue_split(&["inspect", &missing]);
    assert_eq!(rc, 1);
    assert!(err.contains("HTTP 404") && err.contains(&missing), "{err}");
}

#[test]
fn passwords_come_from_the_url_a_file_or_the_environment_and_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    captured(d);
    let http = Nginx::start(&d.join("www"), None, PASSWORD);
    let host = format!("127.0.0.1:{}", http.port);

    let with_password = format!(
        "http://{HTTP_USER}:{}@{host}/private/disk.rimg",
        PASSWORD.replace(':', "%3A")
    );
    let (rc, out, err) = rescue_split(&["verify", &with_password, "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(!out.contains("Web-pass") && !err.contains("Web-pass"));
    assert!(
        out.contains(&format!("http://{HTTP_USER}:***@{host}")),
        "{out}"
    );

    let wrong = format!("http://{HTTP_USER}:Not-it@{host}/private/disk.rimg");
    let (rc, out, err) = rescue_split(&["inspect", &wrong, "--json"]);
    assert_eq!(rc, 1);
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(
        !out.contains("Not-it") && !err.contains("Not-it"),
        "{out}{err}"
    );

    // The user in the URL, the password from a credentials file, or from RESCUE_PASSWORD.
    let named = format!("http://{HTTP_USER}@{host}/private/disk.rimg");
    let creds = d.join("creds");
    std::fs::write(
        &creds,
        format!("username={HTTP_USER}\npassword={PASSWORD}\n"),
    )
    .unwrap();
    let (rc, out, err) = rescue_split(&["inspect", &named, "--credentials", s(&creds)]);
    assert_eq!(rc, 0, "{out}{err}");
    let anonymous = format!("http://{host}/private/disk.rimg");
    let (rc, out, err) = rescue_split(&["inspect", &anonymous, "--credentials", s(&creds)]);
    assert_eq!(rc, 0, "the user from the file: {out}{err}");
    let (rc, out, err) = rescue_env(&["inspect", &named], &[("RESCUE_PASSWORD", PASSWORD)]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(!out.contains("Web-pass") && !err.contains("Web-pass"));
    // No password anywhere (and no terminal to ask on): the server's refusal, named.
    let (rc, _, err) = rescue_env(&["inspect", &named], &[]);
    assert_eq!(rc, 1);
    assert!(err.contains("HTTP 401"), "{err}");
}

#[test]
fn a_job_fetched_by_url_restores_from_the_server_and_sends_its_result_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = captured(d);
    let root = d.join("www");
    let http = Nginx::start(&root, None, PASSWORD);
    let base = format!("http://127.0.0.1:{}", http.port);
    let size = std::fs::metadata(&disk).unwrap().len();
    std::fs::write(
        root.join("job.toml"),
        format!(
            "action = \"restore\"\nresults = \"{base}/results/\"\n[image]\nurl = \"{base}/disk.rimg\"\n\
             [target]\nsize = \"{}M..{}M\"\n",
            size >> 20,
            (size >> 20) + 1
        ),
    )
    .unwrap();
    let target = d.join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(size)
        .unwrap();
    let job = format!("{base}/job.toml");
    let (rc, out, err) = rescue_split(&["job", &job, "--disk", s(&target), "--json"]);
    assert_eq!(rc, 0, "{out}{err}\n{}", http.log_text());
    let outcome: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let sent_to = outcome["result_file"].as_str().unwrap();
    assert!(
        sent_to.starts_with(&format!("{base}/results/restore-")),
        "{outcome}"
    );
    let name = sent_to.rsplit('/').next().unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("results").join(name)).unwrap())
            .unwrap();
    assert_eq!(saved["ok"], true, "{saved}");
    assert_eq!(saved["verified"], true, "{saved}");
    let (rc, out, err) = rescue_split(&[
        "verify",
        s(&root.join("disk.rimg")),
        "--against",
        s(&target),
    ]);
    assert_eq!(rc, 0, "{out}{err}");

    // A job whose image needs a password names a credentials file (an absolute path here; on the stick,
    // a path on its data partition); without it the server's refusal is named.
    let creds = d.join("web.cred");
    std::fs::write(
        &creds,
        format!("username={HTTP_USER}\npassword={PASSWORD}\n"),
    )
    .unwrap();
    let private = |with: &str| {
        format!("action = \"verify\"\n[image]\nurl = \"{base}/private/disk.rimg\"\n{with}")
    };
    std::fs::write(
        root.join("private-job.toml"),
        private(&format!("credentials = \"{}\"\n", creds.display())),
    )
    .unwrap();
    std::fs::write(root.join("no-creds-job.toml"), private("")).unwrap();
    let (rc, out, err) = rescue_split(&["job", &format!("{base}/private-job.toml"), "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    assert!(!out.contains("Web-pass") && !err.contains("Web-pass"));
    let (rc, _, err) = rescue_split(&["job", &format!("{base}/no-creds-job.toml")]);
    assert_eq!(rc, 1);
    assert!(err.contains("HTTP 401"), "{err}");

    // A job the server does not have, and a results folder that takes no uploads: both named.
    let (rc, _, err) = rescue_split(&["job", &format!("{base}/nothing.toml")]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("cannot fetch the job") && err.contains("HTTP 404"),
        "{err}"
    );
    std::fs::write(
        root.join("job2.toml"),
        format!(
            "action = \"verify\"\nresults = \"{base}/noranges/\"\n[image]\nurl = \"{base}/disk.rimg\"\n"
        ),
    )
    .unwrap();
    let (rc, out, err) = rescue_split(&["job", &format!("{base}/job2.toml"), "--json"]);
    assert_eq!(rc, 0, "the verify itself succeeded: {out}{err}");
    let outcome: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(
        outcome["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("the result could not be sent")),
        "{outcome}"
    );
}

#[test]
fn a_web_server_takes_no_image_and_an_image_replaced_while_read_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = captured(d);
    let root = d.join("www");
    let http = Nginx::start(&root, None, PASSWORD);
    let base = format!("http://127.0.0.1:{}", http.port);

    // A capture onto a web server is refused before the disk is read; nothing is sent.
    let (rc, _, err) = rescue_split(&["capture", s(&disk), "-o", &format!("{base}/new.rimg")]);
    assert_eq!(rc, 1);
    assert!(err.contains("a web server cannot take an image"), "{err}");
    assert!(!root.join("new.rimg").exists());
    // A job is fetched only from a web server.
    let (rc, _, err) = rescue_split(&["job", "smb://nas/share/job.toml"]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("only http:// and https:// can be fetched"),
        "{err}"
    );

    // Opened, then replaced on the server (another date, so another ETag): the next read is refused.
    use rescue::image::ReadAt;
    use rescue::store::http::{HttpFile, HttpOptions};
    let url = rescue::url::Url::parse(&format!("{base}/disk.rimg")).unwrap();
    let file = HttpFile::open(&url, &HttpOptions::default()).unwrap();
    let mut buf = [0u8; 16];
    file.read_exact_at(&mut buf, 0).unwrap();
    let image = root.join("disk.rimg");
    let bytes = std::fs::read(&image).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&image, &bytes).unwrap();
    let e = file.read_exact_at(&mut buf, 0).unwrap_err().to_string();
    assert!(e.contains("the image changed on the server"), "{e}");
}
