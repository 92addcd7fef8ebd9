//! Images on an SFTP server on the host CLI (OpenSSH's sshd on 127.0.0.1 with temporary keys, started by
//! the test): capture onto it (`.partial` until complete, then renamed), verify and inspect there, and
//! restore from it; the server's host key must be pinned, and an unknown or different key is refused
//! before anything is sent, with the key's fingerprint; a key the server does not accept is named.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

use builder::fixtures;
use builder::servers::Sshd;

#[test]
fn capture_onto_sftp_and_restore_from_it_with_the_host_key_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let disk = d.join("source.img");
    fixtures::create_disk(&disk, &fixtures::demo_gpt()).unwrap();
    let sshd = Sshd::start();
    let key = s(&sshd.client_key).to_string();
    let at = |name: &str, fp: &str| {
        format!(
            "sftp://root@127.0.0.1:{}{}/{name}?fingerprint={fp}",
            sshd.port,
            sshd.root_dir.display()
        )
    };
    let url = at("disk.rimg", &sshd.fingerprint);

    let (rc, out, err) = rescue_split(&[
        "capture",
        s(&disk),
        "-o",
        &url,
        "--identity",
        &key,
        "--json",
    ]);
    assert_eq!(rc, 0, "{out}{err}\n{}", sshd.log_text());
    let image = sshd.root_dir.join("disk.rimg");
    assert!(image.is_file(), "no image on the server");
    assert!(!sshd.root_dir.join("disk.rimg.partial").exists());
    let (rc, out, err) = rescue_split(&["verify", s(&image), "--against", s(&disk)]);
    assert_eq!(rc, 0, "the image on the server: {out}{err}");

    // A second capture to the same name is refused; nothing is replaced.
    let before = std::fs::read(&image).unwrap();
    let (rc, _, err) = rescue_split(&["capture", s(&disk), "-o", &url, "--identity", &key]);
    assert_eq!(rc, 1);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&image).unwrap(), before);

    let (rc, out, err) = rescue_split(&["inspect", &url, "--identity", &key, "--json"]);
    assert_eq!(rc, 0, "{out}{err}");
    let target = d.join("target.img");
    std::fs::File::create(&target)
        .unwrap()
        .set_len(std::fs::metadata(&disk).unwrap().len())
        .unwrap();
    let (rc, out, err) = rescue_split(&[
        "restore",
        &url,
        s(&target),
        "--yes",
        "--identity",
        &key,
        "--json",
    ]);
    assert_eq!(rc, 0, "{out}{err}");
    let (rc, out, err) = rescue_split(&["verify", s(&image), "--against", s(&target)]);
    assert_eq!(rc, 0, "the restored disk: {out}{err}");

    // No pin: refused, with the key's fingerprint to check and pin.
    let unpinned = format!(
        "sftp://root@127.0.0.1:{}{}/disk.rimg",
        sshd.port,
        sshd.root_dir.display()
    );
    let (rc, _, err) = rescue_split(&["verify", &unpinned, "--identity", &key]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("nothing pins it")
            && err.contains(&format!("?fingerprint={}", sshd.fingerprint)),
        "{err}"
    );
    // A different pinned key: refused as a possible impersonation.
    let wrong = at(
        "disk.rimg",
        "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let (rc, _, err) = rescue_split(&["restore", &wrong, s(&target), "--yes", "--identity", &key]);
    assert_eq!(rc, 1);
    assert!(err.contains("is NOT the one the URL pins"), "{err}");
    // A key the server does not know.
    let stranger = d.join("stranger");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let (rc, _, err) = rescue_split(&["inspect", &url, "--identity", s(&stranger)]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("the server refused the login of root"),
        "{err}"
    );
}

/// What the TUI shows for confirmation: the server's host key read by the key exchange alone (no login
/// is attempted), unpinned until the URL or a known_hosts file names it; a URL pinning another key is
/// refused as for any connection.
#[test]
fn the_host_key_is_read_for_confirmation_without_logging_in() {
    use rescue::ops::{sftp_host_key, NetOptions};
    use rescue::url::Location;
    let sshd = Sshd::start();
    let home = tempfile::tempdir().unwrap();
    // known_hosts is the user's: an empty home first.
    std::env::set_var("HOME", home.path());
    let url = format!("sftp://root@127.0.0.1:{}/srv/x.rimg", sshd.port);
    let read = |u: &str| sftp_host_key(&Location::parse(u).unwrap(), &NetOptions::default());
    let k = read(&url)
        .unwrap()
        .expect("an sftp location has a host key");
    assert_eq!(k.fingerprint, sshd.fingerprint);
    assert_eq!(k.algorithm, "ssh-ed25519");
    assert!(!k.pinned);
    assert_eq!(
        k.check_on_server,
        "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"
    );
    let pinned = read(&format!("{url}?fingerprint={}", sshd.fingerprint)).unwrap();
    assert!(pinned.unwrap().pinned);
    let err = read(&format!(
        "{url}?fingerprint=SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    ))
    .unwrap_err();
    assert!(err.contains("is NOT the one the URL pins"), "{err}");
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(
        home.path().join(".ssh/known_hosts"),
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_public_key),
    )
    .unwrap();
    assert!(read(&url).unwrap().unwrap().pinned);
    // Not an sftp location: nothing to read.
    assert_eq!(read("https://127.0.0.1/x.rimg").unwrap(), None);
    let log = sshd.log_text();
    assert!(
        !log.contains("Accepted") && !log.contains("Failed") && !log.contains("publickey"),
        "a login was attempted:\n{log}"
    );
}
