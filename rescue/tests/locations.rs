//! Images named by URL on the host CLI: a server that is not there is named, a location that cannot be
//! used yet is refused by name, and a password in the URL never appears in what the CLI prints (text or
//! JSON). Shares (`smb://`, `nfs://`) are mounted by the kernel: they are tested in a QEMU guest against
//! real servers (`qemu-tests/tests/net.rs`), not on the host, whose kernel a test must not make load
//! modules.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;
use common::*;

#[test]
fn urls_are_refused_without_showing_their_password() {
    let url = "sftp://tech:hunter2@127.0.0.1:9/images/a.rimg";
    for args in [
        vec!["inspect", url],
        vec!["inspect", url, "--json"],
        vec!["verify", url, "--json"],
        vec!["restore", url, "/nonexistent-target", "--yes"],
    ] {
        let (rc, out, err) = rescue_split(&args);
        assert_eq!(rc, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains("sftp://tech:***@127.0.0.1:9/images/a.rimg"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("the server refused the connection"),
            "{args:?}: {err}"
        );
        assert!(
            !out.contains("hunter2") && !err.contains("hunter2"),
            "{args:?}: {out}{err}"
        );
    }
    // A web server that is not there: the connection refused, named, the password hidden.
    let (rc, err) = rescue(&["verify", "https://u:hunter2@127.0.0.1:9/a.rimg"]);
    assert_eq!(rc, 1);
    assert!(
        err.contains("https://u:***@127.0.0.1:9/a.rimg: the server refused the connection"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    let (rc, err) = rescue(&["inspect", "gopher://h/x.rimg"]);
    assert_eq!(rc, 1);
    assert!(err.contains("unknown scheme `gopher`"), "{err}");
}
