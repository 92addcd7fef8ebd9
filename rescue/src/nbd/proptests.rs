//! Arbitrary bytes from a client, as its whole side of a connection or as requests after a complete
//! handshake, read-only and through an overlay: refused or served, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;

use proptest::prelude::*;

use super::proto::*;
use super::tests::{export_of, kept_log};
use super::wire_tests::{disk, info_data, meta_data, option, request, DISK};
use super::*;

/// The client's side of a handshake that reaches transmission with everything negotiated.
fn full_handshake() -> Vec<u8> {
    let mut m = (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    m.extend(option(OPT_STRUCTURED_REPLY, &[]));
    m.extend(option(
        OPT_SET_META_CONTEXT,
        &meta_data(b"", &[BASE_ALLOCATION]),
    ));
    m.extend(option(OPT_GO, &info_data(b"", &[INFO_BLOCK_SIZE])));
    m
}

/// Requests of every command with random fields (small enough lengths to stay quick).
fn requests() -> impl Strategy<Value = Vec<u8>> {
    let one = (
        any::<u16>(),
        0u16..9,
        any::<u64>(),
        0..DISK + 8,
        0u32..70_000,
        any::<bool>(),
    )
        .prop_map(|(flags, kind, cookie, offset, len, payload)| {
            let mut m = request(flags & 0x1f, kind, cookie, offset, len);
            if payload && kind == CMD_WRITE {
                m.extend(std::iter::repeat_n(0x5au8, len as usize));
            }
            m
        });
    proptest::collection::vec(one, 0..12).prop_map(|v| v.concat())
}

fn session(served: &Served, input: &[u8]) {
    let _ = serve_connection(served, &mut &input[..], &mut io::sink(), "fuzz");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes as a client's whole side of a connection: refused or served, never a panic.
    #[test]
    fn arbitrary_client_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (log, _) = kept_log();
        let served = Served::new(export_of(disk(Some(5000..6000)), None), None, log).unwrap();
        session(&served, &bytes);
        // The same bytes after a greeting and as options.
        let mut m = FLAG_C_FIXED_NEWSTYLE.to_be_bytes().to_vec();
        m.extend_from_slice(&IHAVEOPT.to_be_bytes());
        m.extend_from_slice(&bytes);
        session(&served, &m);
    }

    /// Random requests after a complete handshake, read-only and through an overlay.
    #[test]
    fn random_requests_never_panic(reqs in requests(), tail in proptest::collection::vec(any::<u8>(), 0..40)) {
        let input = [full_handshake(), reqs, tail].concat();
        let (log, _) = kept_log();
        let served = Served::new(export_of(disk(Some(5000..6000)), None), None, log.clone()).unwrap();
        session(&served, &input);
        let dir = tempfile::tempdir().unwrap();
        let served = Served::new(export_of(disk(None), None), Some(&dir.path().join("o")), log).unwrap();
        session(&served, &input);
    }
}
