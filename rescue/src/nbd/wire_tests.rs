//! The protocol's edges, byte by byte, with a small client written here (shared with `server_tests`
//! and `proptests`): greetings and flags, options refused and answered, requests out of bounds or too
//! big, read errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::proto::*;
use super::tests::{export_of, logged, serve};
use super::*;

/// A disk of 1 MiB whose byte `i` is `i % 251`, failing to read in `bad` (if any), and its first read
/// if `flaky`.
pub(super) struct Disk {
    pub(super) bytes: Vec<u8>,
    pub(super) bad: Option<std::ops::Range<u64>>,
    pub(super) flaky: AtomicBool,
}

impl ReadAt for Disk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.flaky.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("a passing fault"));
        }
        if let Some(bad) = &self.bad {
            if offset < bad.end && offset + buf.len() as u64 > bad.start {
                return Err(io::Error::other("medium error"));
            }
        }
        self.bytes.read_exact_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
}

pub(super) const DISK: u64 = 1 << 20;

pub(super) fn disk(bad: Option<std::ops::Range<u64>>) -> Arc<dyn ReadAt> {
    Arc::new(Disk {
        bytes: (0..DISK).map(|i| (i % 251) as u8).collect(),
        bad,
        flaky: AtomicBool::new(false),
    })
}

pub(super) fn serve_disk(
    dir: &Path,
    bad: Option<std::ops::Range<u64>>,
) -> (Server, Arc<Mutex<Vec<String>>>) {
    serve(dir, export_of(disk(bad), None), None)
}

/// One option as a client sends it.
pub(super) fn option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut m = IHAVEOPT.to_be_bytes().to_vec();
    m.extend_from_slice(&opt.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    m
}

/// `NBD_OPT_GO`/`INFO` data.
pub(super) fn info_data(name: &[u8], requests: &[u16]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name);
    d.extend_from_slice(&(requests.len() as u16).to_be_bytes());
    for r in requests {
        d.extend_from_slice(&r.to_be_bytes());
    }
    d
}

/// Meta context option data.
pub(super) fn meta_data(name: &[u8], queries: &[&[u8]]) -> Vec<u8> {
    let mut d = (name.len() as u32).to_be_bytes().to_vec();
    d.extend_from_slice(name);
    d.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend_from_slice(&(q.len() as u32).to_be_bytes());
        d.extend_from_slice(q);
    }
    d
}

pub(super) fn request(flags: u16, kind: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut m = REQUEST_MAGIC.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&cookie.to_be_bytes());
    m.extend_from_slice(&offset.to_be_bytes());
    m.extend_from_slice(&len.to_be_bytes());
    m
}

pub(super) struct Client(pub(super) UnixStream);

impl Client {
    pub(super) fn connect(dir: &Path) -> Client {
        let s = UnixStream::connect(dir.join("nbd.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client(s)
    }

    /// Connected and past the greeting, with these client flags.
    pub(super) fn newstyle(dir: &Path, flags: u32) -> Client {
        let mut c = Client::connect(dir);
        let g = c.bytes(18);
        assert_eq!(g[..8], NBDMAGIC.to_be_bytes());
        c.send(&flags.to_be_bytes());
        c
    }

    pub(super) fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).unwrap();
    }

    pub(super) fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.0.read_exact(&mut b).unwrap();
        b
    }

    /// One option reply: its option, type and data.
    pub(super) fn reply(&mut self) -> (u32, u32, Vec<u8>) {
        let h = self.bytes(20);
        assert_eq!(h[..8], OPTION_REPLY_MAGIC.to_be_bytes());
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        (opt, kind, self.bytes(len as usize))
    }

    /// Replies up to and with the final one (an ACK or an error).
    pub(super) fn replies(&mut self) -> Vec<(u32, u32, Vec<u8>)> {
        let mut all = Vec::new();
        loop {
            let r = self.reply();
            let last = r.1 == REP_ACK || r.1 & 0x8000_0000 != 0;
            all.push(r);
            if last {
                return all;
            }
        }
    }

    /// A simple reply: its error and cookie.
    pub(super) fn simple(&mut self) -> (u32, u64) {
        let h = self.bytes(16);
        assert_eq!(h[..4], SIMPLE_REPLY_MAGIC.to_be_bytes(), "{h:?}");
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..].try_into().unwrap()),
        )
    }

    /// A structured chunk: flags, type, cookie, payload.
    pub(super) fn chunk(&mut self) -> (u16, u16, u64, Vec<u8>) {
        let h = self.bytes(20);
        assert_eq!(h[..4], STRUCTURED_REPLY_MAGIC.to_be_bytes(), "{h:?}");
        let len = u32::from_be_bytes(h[16..].try_into().unwrap());
        (
            u16::from_be_bytes(h[4..6].try_into().unwrap()),
            u16::from_be_bytes(h[6..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
            self.bytes(len as usize),
        )
    }

    /// Whether the server closed the connection (end of file, or reset).
    pub(super) fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }

    /// Handshake with `NBD_OPT_GO` on the default export, after structured replies and
    /// `base:allocation` if `structured`; the transmission flags.
    pub(super) fn go(dir: &Path, structured: bool) -> (Client, u16) {
        let mut c = Client::newstyle(dir, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
        if structured {
            c.send(&option(OPT_STRUCTURED_REPLY, &[]));
            assert_eq!(c.reply().1, REP_ACK);
            c.send(&option(
                OPT_SET_META_CONTEXT,
                &meta_data(b"", &[BASE_ALLOCATION]),
            ));
            let r = c.replies();
            assert_eq!(r[0].1, REP_META_CONTEXT);
        }
        c.send(&option(OPT_GO, &info_data(b"", &[])));
        let r = c.replies();
        assert_eq!(r.last().unwrap().1, REP_ACK);
        let export = &r[0].2;
        assert_eq!(export[..2], INFO_EXPORT.to_be_bytes());
        (c, u16::from_be_bytes(export[10..12].try_into().unwrap()))
    }
}

/// Wait until `f` holds (a server thread finishing), up to 10 s.
pub(super) fn eventually(f: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn only_fixed_newstyle_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (server, log) = serve_disk(dir.path(), None);
    // The greeting is newstyle: an oldstyle client finds IHAVEOPT where it waits for its magic and the
    // export's size, and gives up.
    let mut c = Client::connect(dir.path());
    let g = c.bytes(18);
    assert_eq!(g[..8], NBDMAGIC.to_be_bytes());
    assert_eq!(g[8..16], IHAVEOPT.to_be_bytes());
    assert_ne!(g[8..16], 0x0000_4202_8186_1253u64.to_be_bytes());
    assert_eq!(
        g[16..],
        (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes()
    );
    drop(c);
    // Plain newstyle, and unknown flags: disconnected.
    let mut c = Client::newstyle(dir.path(), 0);
    assert!(c.closed());
    let mut c = Client::newstyle(dir.path(), FLAG_C_FIXED_NEWSTYLE | 4);
    assert!(c.closed());
    assert!(eventually(|| server.clients() == 0));
    logged(&log, "fixed newstyle");
    logged(&log, "unknown flags 0x5");
}

#[test]
fn options_are_answered_and_unknown_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _) = serve_disk(dir.path(), None);
    let mut c = Client::newstyle(dir.path(), FLAG_C_FIXED_NEWSTYLE);
    c.send(&option(42, b"0123456789"));
    let (opt, kind, msg) = c.reply();
    assert_eq!((opt, kind), (42, REP_ERR_UNSUP));
    assert!(String::from_utf8_lossy(&msg).contains("not supported"));
    c.send(&option(OPT_STARTTLS, &[]));
    assert_eq!(c.reply().1, REP_ERR_POLICY);
    c.send(&option(OPT_LIST, &[]));
    let r = c.replies();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].1, REP_SERVER);
    assert_eq!(r[0].2, b"\0\0\0\x04diska test disk");
    c.send(&option(OPT_LIST, b"x"));
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    // More option data than the server reads: skipped, refused, and the next option still understood.
    c.send(&option(OPT_LIST, &vec![0u8; 70_000]));
    assert_eq!(c.reply().1, REP_ERR_TOO_BIG);
    c.send(&option(OPT_INFO, &info_data(b"nope", &[])));
    let (_, kind, msg) = c.reply();
    assert_eq!(kind, REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&msg).contains("\"disk\""));
    c.send(&option(OPT_INFO, &info_data(b"", &[])[..5]));
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    c.send(&option(
        OPT_INFO,
        &info_data(b"disk", &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]),
    ));
    let r = c.replies();
    let infos: Vec<&[u8]> = r
        .iter()
        .filter(|x| x.1 == REP_INFO)
        .map(|x| &x.2[..])
        .collect();
    let mut export = INFO_EXPORT.to_be_bytes().to_vec();
    export.extend_from_slice(&DISK.to_be_bytes());
    let flags = FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FLUSH | FLAG_CAN_MULTI_CONN;
    export.extend_from_slice(&flags.to_be_bytes());
    assert!(infos.contains(&&export[..]), "{infos:?}");
    assert!(infos.contains(&&b"\0\x01disk"[..]));
    assert!(infos.contains(&&b"\0\x02a test disk"[..]));
    assert!(infos.contains(&&[0, 3, 0, 0, 0, 1, 0, 0, 16, 0, 2, 0, 0, 0][..]));
    assert_eq!(r.last().unwrap().1, REP_ACK);
    // Metadata contexts: selecting needs structured replies; listing does not.
    c.send(&option(
        OPT_SET_META_CONTEXT,
        &meta_data(b"", &[BASE_ALLOCATION]),
    ));
    assert_eq!(c.reply().1, REP_ERR_INVALID);
    c.send(&option(OPT_LIST_META_CONTEXT, &meta_data(b"disk", &[])));
    let r = c.replies();
    assert_eq!(r[0].1, REP_META_CONTEXT);
    assert_eq!(r[0].2[4..], *BASE_ALLOCATION);
    c.send(&option(
        OPT_LIST_META_CONTEXT,
        &meta_data(b"", &[b"qemu:dirty-bitmap:x"]),
    ));
    assert_eq!(c.replies().len(), 1, "an unknown namespace lists nothing");
    c.send(&option(OPT_STRUCTURED_REPLY, &[]));
    assert_eq!(c.reply().1, REP_ACK);
    c.send(&option(
        OPT_SET_META_CONTEXT,
        &meta_data(b"other", &[BASE_ALLOCATION]),
    ));
    assert_eq!(c.reply().1, REP_ERR_UNKNOWN);
    // Selected, then listed (which changes nothing), then used.
    c.send(&option(
        OPT_SET_META_CONTEXT,
        &meta_data(b"disk", &[b"base:", BASE_ALLOCATION]),
    ));
    let r = c.replies();
    assert_eq!((r.len(), r[0].1), (2, REP_META_CONTEXT));
    c.send(&option(OPT_LIST_META_CONTEXT, &meta_data(b"", &[b"base:"])));
    assert_eq!(c.replies().len(), 2);
    c.send(&option(OPT_GO, &info_data(b"", &[])));
    assert_eq!(c.replies().last().unwrap().1, REP_ACK);
    c.send(&request(0, CMD_BLOCK_STATUS, 1, 0, 512));
    assert_eq!(c.chunk().1, REPLY_TYPE_BLOCK_STATUS);
    // Abort.
    let mut c = Client::newstyle(dir.path(), FLAG_C_FIXED_NEWSTYLE);
    c.send(&option(OPT_ABORT, &[]));
    assert_eq!(c.reply().1, REP_ACK);
    assert!(c.closed());
}

#[test]
fn export_name_ends_the_handshake_or_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _) = serve_disk(dir.path(), None);
    let mut c = Client::newstyle(dir.path(), FLAG_C_FIXED_NEWSTYLE);
    c.send(&option(OPT_EXPORT_NAME, b"disk"));
    let r = c.bytes(134);
    assert_eq!(r[..8], DISK.to_be_bytes());
    assert!(r[10..].iter().all(|&b| b == 0));
    c.send(&request(0, CMD_READ, 7, 251, 3));
    assert_eq!(c.simple(), (0, 7));
    assert_eq!(c.bytes(3), [0, 1, 2]);
    let mut c = Client::newstyle(dir.path(), FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    c.send(&option(OPT_EXPORT_NAME, b""));
    assert_eq!(c.bytes(10)[..8], DISK.to_be_bytes());
    c.send(&request(0, CMD_DISC, 8, 0, 0));
    assert!(c.closed());
    let mut c = Client::newstyle(dir.path(), FLAG_C_FIXED_NEWSTYLE);
    c.send(&option(OPT_EXPORT_NAME, b"other"));
    assert!(c.closed());
}

#[test]
fn simple_replies_refuse_what_is_out_of_bounds_too_big_or_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _) = serve_disk(dir.path(), None);
    let (mut c, flags) = Client::go(dir.path(), false);
    assert_eq!(flags & FLAG_SEND_DF, 0, "no structured replies, no DF");
    let cases: &[(u16, u16, u64, u32, u32)] = &[
        // flags, command, offset, length, error
        (0, CMD_READ, DISK - 512, 1024, EINVAL),
        (0, CMD_READ, u64::MAX - 1, 4, EINVAL),
        (0, CMD_READ, 0, MAX_PAYLOAD + 1, EINVAL),
        (CMD_FLAG_DF, CMD_READ, 0, 512, EINVAL),
        (0x100, CMD_READ, 0, 512, EINVAL),
        (0, CMD_TRIM, 0, 512, EPERM),
        (0, CMD_WRITE_ZEROES, 0, 512, EPERM),
        (0, CMD_BLOCK_STATUS, 0, 512, EINVAL),
        (0, CMD_CACHE, DISK, 1, EINVAL),
        (0, CMD_CACHE, 0, 512, 0),
        (0, CMD_FLUSH, 0, 0, 0),
        (0, 99, 0, 0, EINVAL),
        (0, CMD_READ, DISK, 0, 0),
    ];
    for (i, &(f, kind, offset, len, error)) in cases.iter().enumerate() {
        c.send(&request(f, kind, i as u64, offset, len));
        assert_eq!(c.simple(), (error, i as u64), "case {i}");
    }
    // A write: its payload is read, then refused; too big a one too; the connection goes on.
    c.send(&request(0, CMD_WRITE, 100, 0, 4096));
    c.send(&[0x11; 4096]);
    assert_eq!(c.simple(), (EPERM, 100));
    c.send(&request(0, CMD_WRITE, 101, 0, MAX_PAYLOAD + 4096));
    c.send(&vec![0x22; MAX_PAYLOAD as usize + 4096]);
    assert_eq!(c.simple(), (EINVAL, 101));
    c.send(&request(0, CMD_READ, 102, DISK - 2, 2));
    assert_eq!(c.simple(), (0, 102));
    assert_eq!(
        c.bytes(2),
        [((DISK - 2) % 251) as u8, ((DISK - 1) % 251) as u8]
    );
}

#[test]
fn structured_replies_carry_data_errors_and_block_status() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _) = serve_disk(dir.path(), None);
    let (mut c, flags) = Client::go(dir.path(), true);
    assert_ne!(flags & FLAG_SEND_DF, 0);
    c.send(&request(CMD_FLAG_DF, CMD_READ, 1, 1000, 10));
    let (f, kind, cookie, payload) = c.chunk();
    assert_eq!(
        (f, kind, cookie),
        (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, 1)
    );
    assert_eq!(payload[..8], 1000u64.to_be_bytes());
    assert_eq!(
        payload[8..],
        (1000..1010).map(|i| (i % 251) as u8).collect::<Vec<_>>()
    );
    c.send(&request(0, CMD_READ, 2, DISK, 1));
    let (f, kind, cookie, payload) = c.chunk();
    assert_eq!((f, kind, cookie), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 2));
    assert_eq!(payload[..4], EINVAL.to_be_bytes());
    let msg_len = u16::from_be_bytes([payload[4], payload[5]]) as usize;
    assert!(String::from_utf8_lossy(&payload[6..6 + msg_len]).contains("past the end"));
    c.send(&request(0, CMD_READ, 3, 0, 0));
    assert_eq!(c.chunk().1, REPLY_TYPE_NONE);
    // Without an allocation map, all data, in one extent (or exactly one asked for).
    for (f, cookie) in [(0, 4), (CMD_FLAG_REQ_ONE, 5)] {
        c.send(&request(f, CMD_BLOCK_STATUS, cookie, 4096, 65536));
        let (f, kind, got, payload) = c.chunk();
        assert_eq!(
            (f, kind, got),
            (REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie)
        );
        let mut want = ALLOCATION_ID.to_be_bytes().to_vec();
        want.extend_from_slice(&65536u32.to_be_bytes());
        want.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(payload, want);
    }
    c.send(&request(0, CMD_BLOCK_STATUS, 6, DISK - 1, 2));
    assert_eq!(c.chunk().1, REPLY_TYPE_ERROR);
    c.send(&request(0, CMD_WRITE, 7, 0, 1));
    c.send(&[0]);
    let (_, kind, _, payload) = c.chunk();
    assert_eq!(kind, REPLY_TYPE_ERROR);
    assert_eq!(payload[..4], EPERM.to_be_bytes());
    c.send(&request(0, CMD_DISC, 8, 0, 0));
    assert!(c.closed());
}

#[test]
fn a_read_error_is_eio_at_its_offset_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (server, log) = serve_disk(dir.path(), Some(20_000..20_001));
    let (mut c, _) = Client::go(dir.path(), true);
    c.send(&request(0, CMD_READ, 1, 0, 65536));
    let (f, kind, _, payload) = c.chunk();
    assert_eq!((f, kind), (0, REPLY_TYPE_OFFSET_DATA));
    assert_eq!(
        payload.len(),
        8 + 16384,
        "the good pieces before the bad one"
    );
    let (f, kind, _, payload) = c.chunk();
    assert_eq!((f, kind), (REPLY_FLAG_DONE, REPLY_TYPE_ERROR_OFFSET));
    assert_eq!(payload[..4], EIO.to_be_bytes());
    assert_eq!(payload[payload.len() - 8..], 16384u64.to_be_bytes());
    // Don't fragment: the error alone.
    c.send(&request(CMD_FLAG_DF, CMD_READ, 2, 0, 65536));
    assert_eq!(c.chunk().1, REPLY_TYPE_ERROR_OFFSET);
    // Reads elsewhere are fine.
    c.send(&request(0, CMD_READ, 3, 65536, 512));
    assert_eq!(c.chunk().1, REPLY_TYPE_OFFSET_DATA);
    let (mut c, _) = Client::go(dir.path(), false);
    c.send(&request(0, CMD_READ, 4, 19_000, 4096));
    assert_eq!(c.simple(), (EIO, 4));
    c.send(&request(0, CMD_READ, 5, 0, 512));
    assert_eq!(c.simple(), (0, 5));
    c.bytes(512);
    // A real client says so.
    let out = std::process::Command::new("qemu-io")
        .args(["-r", "-f", "raw", "-c", "read 16k 8k", server.url()])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("read failed: Input/output error"), "{said}");
    logged(&log, "read error at byte 16384: medium error");
}

#[test]
fn a_read_that_fails_once_and_then_reads_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Disk {
        bytes: vec![7; 8192],
        bad: None,
        flaky: AtomicBool::new(true),
    };
    let (_server, log) = serve(dir.path(), export_of(Arc::new(flaky), None), None);
    let (mut c, _) = Client::go(dir.path(), false);
    c.send(&request(0, CMD_READ, 1, 0, 8192));
    assert_eq!(c.simple(), (0, 1));
    assert_eq!(c.bytes(8192), vec![7; 8192]);
    logged(&log, "failed (a passing fault), then read well in pieces");
}
