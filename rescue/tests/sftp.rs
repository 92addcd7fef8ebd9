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
