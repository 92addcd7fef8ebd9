//! Repositories in an S3 bucket (a real S3 server: Ceph's radosgw on 127.0.0.1, started by the test):
//! `repo init s3://…`, captures sharing chunks (the second of an unchanged disk adds nothing), the
//! snapshot list, restore and verify byte-identical, check with every chunk read, an encrypted
//! repository, prune, and the refusals: wrong secret, missing bucket, an image file asked of a bucket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use std::process::Command;

use builder::fixtures;
use builder::servers::S3Server;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `rescue ARGS` with the server's keys in the environment.
fn command(server: &S3Server, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rescue"));
    c.env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .args(args);
    c
}

/// `rescue capture DISK --repo REPO --name NAME --json`'s arguments.
fn capture_args<'a>(disk: &'a std::path::Path, repo: &'a str, name: &'a str) -> [&'a str; 7] {
    ["capture", s(disk), "--repo", repo, "--name", name, "--json"]
}

/// `rescue ARGS` with the server's keys in the environment: status, stdout, stderr.
fn run(server: &S3Server, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let out = command(server, args)
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(!e.contains("panicked"), "{e}");
    (out.status.code().unwrap_or(-1), o, e)
}

#[test]
fn a_repository_in_an_s3_bucket() {
    let server = S3Server::start();
    server.create_bucket("backups");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let repo = format!(
        "s3://backups/site-a?endpoint={}&region={}",
        server.endpoint, server.region
    );
    let (rc, o, e) = run(&server, &["repo", "init", &repo], &[]);
    assert_eq!(rc, 0, "{o}{e}\n{}", server.log_text());
    let capture = |name: &str| {
        let (rc, o, e) = run(&server, &capture_args(&disk, &repo, name), &[]);
        assert_eq!(rc, 0, "{o}{e}");
        json(&o)
    };
    let first = capture("pc");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = capture("pc");
    let (n1, n2) = (
        first["new_bytes"].as_u64().unwrap(),
        second["new_bytes"].as_u64().unwrap(),
    );
    assert!(n1 > 1 << 20 && n2 == 0, "{n1} then {n2}");
    let (rc, o, e) = run(&server, &["snapshots", &repo, "--json"], &[]);
    assert_eq!(rc, 0, "{o}{e}");
    assert_eq!(json(&o)["snapshots"].as_array().unwrap().len(), 2);

    let target = d.join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(std::fs::metadata(&disk).unwrap().len())
        .unwrap();
    let snap = format!("{repo}::pc");
    let (rc, o, e) = run(&server, &["restore", &snap, s(&target), "--yes"], &[]);
    assert_eq!(rc, 0, "{o}{e}");
    let (rc, o, e) = run(&server, &["verify", &snap, "--against", s(&disk)], &[]);
    assert_eq!(rc, 0, "{o}{e}");
    let (rc, o, e) = run(&server, &["check", &repo, "--read-data", "--json"], &[]);
    assert_eq!(rc, 0, "{o}{e}");
    let c = json(&o);
    assert_eq!(c["snapshots"], 2);
    assert!(c["read_bytes"].as_u64().unwrap() > 0);
    let (rc, o, e) = run(
        &server,
        &["prune", &repo, "--keep-last", "1", "--json"],
        &[],
    );
    assert_eq!(rc, 0, "{o}{e}");
    assert_eq!(json(&o)["removed"].as_array().unwrap().len(), 1);
    let (rc, o, e) = run(&server, &["verify", &snap, "--against", s(&disk)], &[]);
    assert_eq!(rc, 0, "after the prune: {o}{e}");

    // An encrypted repository under another prefix; no passphrase, no access.
    let sealed = format!(
        "s3://backups/sealed?endpoint={}&region={}",
        server.endpoint, server.region
    );
    let pass = [("RESCUE_PASSPHRASE", "s3 pass")];
    let (rc, o, e) = run(&server, &["repo", "init", &sealed, "--encrypt"], &pass);
    assert_eq!(rc, 0, "{o}{e}");
    let (rc, o, e) = run(
        &server,
        &["capture", s(&disk), "--repo", &sealed, "--name", "pc"],
        &pass,
    );
    assert_eq!(rc, 0, "{o}{e}");
    let (rc, _, e) = run(&server, &["snapshots", &sealed], &[]);
    assert_eq!(rc, 1);
    assert!(e.contains("is encrypted: give its passphrase"), "{e}");
    let (rc, o, e) = run(
        &server,
        &["verify", &format!("{sealed}::pc"), "--against", s(&disk)],
        &pass,
    );
    assert_eq!(rc, 0, "{o}{e}");

    // Refusals, each naming the cause.
    let (rc, _, e) = run(
        &server,
        &["snapshots", &repo],
        &[("AWS_SECRET_ACCESS_KEY", "wrong")],
    );
    assert_eq!(rc, 1);
    assert!(e.contains("refused the access key or secret key"), "{e}");
    let nobucket = format!(
        "s3://nothere/x?endpoint={}&region={}",
        server.endpoint, server.region
    );
    let (rc, _, e) = run(&server, &["snapshots", &nobucket], &[]);
    assert_eq!(rc, 1);
    assert!(e.contains("the bucket does not exist"), "{e}");
    let (rc, _, e) = run(&server, &["verify", &repo], &[]);
    assert_eq!(rc, 1);
    assert!(e.contains("holds repositories, not image files"), "{e}");
    assert!(!e.contains(&server.secret_key));
}

/// What the interface does with a repository on S3, through `ops` as it calls it: looking at a prefix
/// with no repository, a capture that makes one (encrypted with the passphrase the snapshot's location
/// carries), looking at it without, with a wrong and with the right passphrase. And the client's
/// one-request lookup of an object's size and first bytes (missing, empty, shorter, longer).
#[test]
fn the_interface_makes_and_unlocks_a_repository_on_s3() {
    use rescue::ops::{self, Location, NetOptions, Secret};
    let server = S3Server::start();
    server.create_bucket("tui");
    let base = format!(
        "s3://{}:{}@tui/PREFIX?endpoint={}&region={}",
        server.access_key, server.secret_key, server.endpoint, server.region
    );

    let Location::Remote(url) = Location::parse(&base.replace("PREFIX", "raw")).unwrap() else {
        panic!()
    };
    let client = rescue::store::s3::S3Client::open(&url, None, None, None).unwrap();
    client.put("empty", b"").unwrap();
    client.put("short", b"0123456789").unwrap();
    client.put("long", &[7u8; 100]).unwrap();
    assert_eq!(client.get_start("missing", 40).unwrap(), None);
    assert_eq!(client.get_start("empty", 40).unwrap(), Some((0, vec![])));
    assert_eq!(
        client.get_start("short", 40).unwrap(),
        Some((10, b"0123456789".to_vec()))
    );
    assert_eq!(
        client.get_start("long", 40).unwrap(),
        Some((100, vec![7u8; 40]))
    );

    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let repo = Location::parse(&base.replace("PREFIX", "site-b")).unwrap();
    let look = |pass: Option<&str>| {
        let net = NetOptions {
            passphrase: pass.map(Secret::new),
            ..Default::default()
        };
        ops::look_at_repo(&repo, &net)
    };
    let state = look(None).unwrap();
    assert!(!state.exists && state.snapshots.is_empty(), "{state:?}");

    let Location::Snapshot(mut snap) =
        Location::parse(&format!("{base}::pc").replace("PREFIX", "site-b")).unwrap()
    else {
        panic!()
    };
    snap.passphrase = Some(Secret::new("s3 pass"));
    let req = ops::Request::Capture(ops::CaptureSpec {
        source: disk.clone(),
        output: Location::Snapshot(snap),
        threads: 2,
        ..Default::default()
    });
    let how = ops::RunOptions {
        create_folder: true,
        ..Default::default()
    };
    let out = ops::run(&req, &how, &Default::default(), ops::Control::default());
    assert!(out.ok, "{:?}\n{}", out.error, server.log_text());

    let state = look(None).unwrap();
    assert!(
        state.exists && state.encrypted && !state.unlocked,
        "{state:?}"
    );
    assert!(state.snapshots.is_empty());
    let wrong = look(Some("not it")).unwrap_err();
    assert!(
        ops::describe(&wrong).contains("wrong passphrase"),
        "{wrong:#}"
    );
    let state = look(Some("s3 pass")).unwrap();
    assert!(state.unlocked && state.snapshots.len() == 1, "{state:?}");
    assert_eq!(state.snapshots[0].meta.name, "pc");
    // The CLI sees the same repository, and needs the passphrase too.
    let (rc, o, e) = run(
        &server,
        &["snapshots", &base.replace("PREFIX", "site-b")],
        &[],
    );
    assert_ne!(rc, 0);
    assert!(format!("{o}{e}").contains("is encrypted"), "{o}{e}");
    assert!(!format!("{o}{e}").contains(&server.secret_key));
}

/// Who may use a repository on S3 at once: two captures started together both finish and the check
/// reading every chunk is clean; a prune is refused while a capture's (shared) lock object is there,
/// and runs once it is gone.
#[test]
fn captures_at_once_and_a_prune_refused_while_a_lock_is_held_on_s3() {
    let server = S3Server::start();
    server.create_bucket("busy");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let repo = format!(
        "s3://busy/r?endpoint={}&region={}",
        server.endpoint, server.region
    );
    let (rc, o, e) = run(&server, &["repo", "init", &repo], &[]);
    assert_eq!(rc, 0, "{o}{e}");
    let spawn = |name: &str| command(&server, &capture_args(&disk, &repo, name)).output();
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| spawn("a"));
        let b = sc.spawn(|| spawn("b"));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    for out in [&a, &b] {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (rc, o, e) = run(&server, &["check", &repo, "--read-data", "--json"], &[]);
    assert_eq!(rc, 0, "{o}{e}");
    assert_eq!(json(&o)["snapshots"], 2, "{o}");

    // A shared lock held (as a capture or a restore holds it): the prune is refused, nothing removed.
    let Ok(rescue::ops::Location::Remote(url)) = rescue::ops::Location::parse(&repo) else {
        panic!()
    };
    let client = rescue::store::s3::S3Client::open(
        &url,
        Some(&server.access_key),
        Some(&rescue::ops::Secret::new(server.secret_key.clone())),
        None,
    )
    .unwrap();
    let backend: std::sync::Arc<dyn rescue::repo::Backend> =
        std::sync::Arc::new(rescue::repo::S3Backend::new(client));
    let held = backend.try_lock(false).unwrap().expect("a shared lock");
    let (rc, o, e) = run(&server, &["prune", &repo, "--keep-last", "1"], &[]);
    assert_ne!(rc, 0, "{o}{e}");
    assert!(format!("{o}{e}").contains("in use"), "{o}{e}");
    let (rc, o, e) = run(&server, &["snapshots", &repo, "--json"], &[]);
    assert_eq!(rc, 0, "{o}{e}");
    assert_eq!(json(&o)["snapshots"].as_array().unwrap().len(), 2);
    drop(held);
    let (rc, o, e) = run(
        &server,
        &["prune", &repo, "--keep-last", "1", "--name", "a"],
        &[],
    );
    assert_eq!(rc, 0, "{o}{e}");
}
