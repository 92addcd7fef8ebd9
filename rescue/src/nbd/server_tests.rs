//! The server around the protocol, with the client of `wire_tests`: clients that break the protocol or
//! vanish, shutdown, the socket path, remote addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::proto::*;
use super::tests::{export_of, kept_log, logged, start};
use super::wire_tests::{disk, eventually, info_data, option, request, serve_disk, Client};
use super::*;

#[test]
fn a_broken_or_vanishing_client_ends_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (server, log) = serve_disk(dir.path(), None);
    let (mut c, _) = Client::go(dir.path(), false);
    c.send(&[0xde; 28]);
    assert!(c.closed());
    // Gone in the middle of a request's header, and of a write's payload.
    let (mut c, _) = Client::go(dir.path(), false);
    c.send(&request(0, CMD_READ, 1, 0, 512)[..13]);
    drop(c);
    let (mut c, _) = Client::go(dir.path(), false);
    c.send(&request(0, CMD_WRITE, 1, 0, 4096));
    c.send(&[1; 100]);
    drop(c);
    // In the middle of an option.
    let mut c = Client::newstyle(dir.path(), FLAG_C_FIXED_NEWSTYLE);
    c.send(&option(OPT_GO, &info_data(b"", &[]))[..20]);
    drop(c);
    assert!(eventually(|| server.clients() == 0));
    let (mut c, _) = Client::go(dir.path(), false);
    c.send(&request(0, CMD_READ, 9, 0, 1));
    assert_eq!(c.simple(), (0, 9));
    logged(&log, "not the request magic");
    assert_eq!(logged(&log, "went away"), 3);
}

#[test]
fn shutdown_closes_idle_clients_and_removes_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (server, log) = serve_disk(dir.path(), None);
    let (mut idle, _) = Client::go(dir.path(), false);
    let mut early = Client::connect(dir.path());
    assert!(eventually(|| server.clients() == 2));
    let start = Instant::now();
    server.shutdown().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(idle.closed());
    early.bytes(18);
    assert!(early.closed());
    assert!(!dir.path().join("nbd.sock").exists());
    logged(&log, "the server is stopping");
}

#[test]
fn a_socket_path_in_use_or_not_a_socket_is_refused_and_a_stale_one_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nbd.sock");
    let open = || {
        let listen = Listen::Unix(path.clone());
        start(
            export_of(disk(None), None),
            listen,
            false,
            None,
            kept_log().0,
        )
    };
    // A stale socket (its server gone without removing it).
    drop(UnixListener::bind(&path).unwrap());
    let server = open().unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let e = open().err().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains("another server is listening"), "{e}");
    server.shutdown().unwrap();
    std::fs::write(&path, b"precious").unwrap();
    let e = open().err().unwrap().to_string();
    assert!(e.contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn a_remote_address_is_refused_unless_allowed_and_then_warned_about() {
    let open = |allow_remote| {
        let listen = Listen::Tcp("0.0.0.0:0".parse().unwrap());
        start(
            export_of(disk(None), None),
            listen,
            allow_remote,
            None,
            kept_log().0,
        )
    };
    let e = open(false).err().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    assert!(e.to_string().contains("not a loopback address"), "{e}");
    let server = open(true).unwrap();
    assert_eq!(server.warnings().len(), 1);
    assert!(
        server.warnings()[0].contains("beyond this machine"),
        "{:?}",
        server.warnings()
    );
    server.shutdown().unwrap();
}
