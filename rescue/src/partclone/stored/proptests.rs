//! Properties: any bytes, behind any compression's magic and split anywhere, are read or refused
//! without a panic and within bounded reads; any data compressed by any encoder and split anywhere
//! reads back as itself; any cut of the compressed data is named as truncated in its last piece.

use std::io::Read;

use proptest::prelude::*;

use super::tests::{encoders, semi, split_into};
use super::*;

/// Reads an opened image to its end or its first error, at most `cap` bytes, in reads of `chunk`.
fn drain(o: Opened, cap: usize, chunk: usize) -> Result<usize, io::Error> {
    let mut r = o.reader;
    let mut buf = vec![0u8; chunk];
    let mut total = 0;
    while total < cap {
        match r.read(&mut buf)? {
            0 => break,
            n => total += n,
        }
    }
    Ok(total)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any bytes after any magic, in pieces of any size: read or refused, never a panic.
    #[test]
    fn stored_any_bytes_are_read_or_refused_never_a_panic(
        magic in 0..STARTS.len(),
        tail in proptest::collection::vec(any::<u8>(), 0..3000),
        piece in 1usize..4000,
        chunk in 1usize..5000,
    ) {
        let d = tempfile::tempdir().unwrap();
        let mut data = STARTS[magic].to_vec();
        data.extend_from_slice(&tail);
        let p = split_into(d.path(), "any", &data, piece);
        if p.is_empty() {
            return Ok(());
        }
        if let Ok(o) = open(&p[0]) {
            prop_assert_eq!(&o.pieces, &p);
            if let Err(e) = drain(o, 64 << 20, chunk) {
                let s = e.get_ref().and_then(|e| e.downcast_ref::<Error>());
                let s = s.ok_or_else(|| TestCaseError::fail(format!("not a stored::Error: {e}")))?;
                prop_assert!(p.contains(&s.path), "{} names no piece", s);
                if let Some(o) = s.offset {
                    let len = std::fs::metadata(&s.path).unwrap().len();
                    prop_assert!(o <= len, "{} is past the piece's {} bytes", s, len);
                }
            }
        }
    }

    /// Compressed by any encoder, in pieces of any size, read in reads of any size: the data.
    #[test]
    fn stored_compressed_data_in_any_pieces_reads_back(
        which in 0..encoders().len(),
        len in 0usize..200_000,
        seed in any::<u32>(),
        piece in 1usize..100_000,
        chunk in 1usize..70_000,
    ) {
        let (want, enc, _) = encoders()[which];
        let data = semi(len, seed);
        let packed = enc(&data);
        let d = tempfile::tempdir().unwrap();
        let p = split_into(d.path(), "rt", &packed, piece.max(packed.len() / 500));
        let o = open(&p[0]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(o.compression, want);
        let mut r = o.reader;
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let expect = if want == Compression::None { super::tests::plain(&data) } else { data };
        prop_assert!(got == expect, "{} differs", want);
    }

    /// Cut anywhere inside the compressed data: named as truncated, in its last piece.
    #[test]
    fn stored_any_cut_is_truncation_in_the_last_piece(
        which in 0..encoders().len(),
        len in 1usize..50_000,
        seed in any::<u32>(),
        cut in any::<prop::sample::Index>(),
        piece in 1usize..30_000,
    ) {
        let (want, enc, _) = encoders()[which];
        prop_assume!(want != Compression::None);
        let packed = enc(&semi(len, seed));
        let keep = cut.index(packed.len());
        prop_assume!(keep > 0);
        let d = tempfile::tempdir().unwrap();
        let p = split_into(d.path(), "cut", &packed[..keep], piece.max(keep / 300));
        let err = match open(&p[0]) {
            Err(e) => e,
            Ok(o) => match drain(o, usize::MAX, 1 << 16) {
                Ok(n) => return Err(TestCaseError::fail(format!("{want}: cut at {keep}: read {n} bytes"))),
                Err(e) => {
                    let s = super::tests::stored_error(&e);
                    Error::new(s.kind, &s.path, s.offset, s.what.clone())
                }
            },
        };
        // A cut right after a member's first bytes can leave something no longer recognisable.
        if err.kind != Kind::Unknown {
            prop_assert_eq!(err.kind, Kind::Truncated, "{}: cut at {}: {}", want, keep, err);
            prop_assert_eq!(&err.path, p.last().unwrap(), "{}", err);
        }
    }
}
