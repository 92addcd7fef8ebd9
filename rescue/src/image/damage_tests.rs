//! Damage detection: every kind of corruption is caught and named.

use std::io::{Cursor, Write};

use super::tests::{build_vec, extras, header_info, noise, stream, CS};
use super::*;

fn chunk_at(bytes: &[u8], id: u64) -> ChunkRecord {
    ImageReader::open(Cursor::new(bytes.to_vec()))
        .unwrap()
        .index()
        .chunks[id as usize]
}

#[test]
fn flipped_payload_byte_is_reported_with_its_place() {
    let a = build_vec();
    let r = ImageReader::open(Cursor::new(a.bytes.clone())).unwrap();
    for (id, c) in r.index().chunks.iter().enumerate() {
        let mut bytes = a.bytes.clone();
        bytes[(c.offset + FRAME_HEADER_LEN as u64 + u64::from(c.stored_len) / 2) as usize] ^= 0x20;
        // The index is intact, so the image opens; the damage shows on reading the chunk.
        let mut r = ImageReader::open(Cursor::new(bytes)).unwrap();
        let report = r.verify(|_| {});
        assert_eq!(report.bad_chunks, 1, "chunk {id}");
        assert_eq!(report.chunks_ok, 4);
        let e = &report.chunk_errors[0];
        assert_eq!(e.chunk(), Some(ChunkId(id as u64)));
        let ImageError::ChunkDamaged {
            location: Some(loc),
            image_offset,
            reason,
            ..
        } = e
        else {
            panic!("{e}")
        };
        assert_eq!(*image_offset, c.offset);
        assert!(matches!(
            reason,
            ChunkFault::HashMismatch { .. } | ChunkFault::Decompress(_) | ChunkFault::Length { .. }
        ));
        let msg = e.to_string();
        assert!(msg.contains(&format!("{}", loc.stream)), "{msg}");
        assert!(msg.contains("stream offset"), "{msg}");
        assert!(r.read_chunk(ChunkId(id as u64)).is_err());
    }
    // The duplicated chunk names its first place and counts the other.
    let r = ImageReader::open(Cursor::new(a.bytes.clone())).unwrap();
    let loc = r.locate(ChunkId(1)).unwrap();
    assert_eq!(
        (loc.stream, loc.stream_offset, loc.disk_offset),
        (StreamId(1), 0, 1 << 20)
    );
    assert_eq!(loc.other_refs, 1);
}

#[test]
fn truncated_tail_says_not_finalized() {
    let a = build_vec();
    let n = a.bytes.len();
    for cut in [
        1,
        8,
        15,
        16,
        17,
        50,
        95,
        96,
        97,
        200,
        n / 2,
        n - 64,
        n - 8,
        n - 3,
    ] {
        let e = ImageReader::open(Cursor::new(a.bytes[..n - cut].to_vec()))
            .err()
            .unwrap_or_else(|| panic!("cut {cut} opened"));
        assert!(matches!(e, ImageError::Truncated { .. }), "cut {cut}: {e}");
        assert!(
            e.to_string()
                .contains("incomplete or truncated image: no footer found; it was not finalized"),
            "{e}"
        );
    }
    // Nothing at all left: an empty file is named as such.
    let e = ImageReader::open(Cursor::new(Vec::new())).err().unwrap();
    assert!(e.to_string().contains("the file is empty (0 bytes)"), "{e}");
    let e = ImageReader::open(Cursor::new(b"hello, not an image at all".to_vec()))
        .err()
        .unwrap();
    assert!(matches!(e, ImageError::NotAnImage { .. }), "{e}");
}

#[test]
fn newer_versions_are_refused() {
    let a = build_vec();
    let n = a.bytes.len();
    // In the header (as a future writer would put it).
    let mut b = a.bytes.clone();
    b[8] = 2;
    let e = ImageReader::open(Cursor::new(b)).err().unwrap();
    assert!(
        matches!(e, ImageError::UnsupportedVersion { major: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("version 2.1"), "{e}");
    // In the footer tail, whose layout a future version keeps.
    let mut b = a.bytes.clone();
    b[n - 12] = 7;
    let e = ImageReader::open(Cursor::new(b)).err().unwrap();
    assert!(
        matches!(e, ImageError::UnsupportedVersion { major: 7, .. }),
        "{e}"
    );
}

#[test]
fn swapped_chunk_frames_are_detected() {
    let mut iw = ImageWriter::new(Cursor::new(Vec::new()), header_info(CS as u32)).unwrap();
    let s = iw
        .begin_stream(stream(
            StreamKind::WholeDisk,
            0,
            3 * CS as u64,
            CaptureMode::Raw,
        ))
        .unwrap();
    for i in 0..3u64 {
        let id = iw
            .write_compressed(&compress_chunk(&noise(10 + i, CS), 3).unwrap())
            .unwrap();
        iw.push_data(s, i * CS as u64, CS as u64, id).unwrap();
    }
    iw.push_extent(s, 3 * CS as u64, 0, ExtentKind::Zero)
        .unwrap();
    let bytes = iw.finish(extras(1 << 20)).unwrap().inner.into_inner();
    let (a, b) = (chunk_at(&bytes, 0), chunk_at(&bytes, 2));
    assert_eq!(a.stored_len, b.stored_len);
    let len = FRAME_HEADER_LEN + a.stored_len as usize;
    let mut sw = bytes.clone();
    let (ao, bo) = (a.offset as usize, b.offset as usize);
    sw[ao..ao + len].copy_from_slice(&bytes[bo..bo + len]);
    sw[bo..bo + len].copy_from_slice(&bytes[ao..ao + len]);
    let mut r = ImageReader::open(Cursor::new(sw)).unwrap();
    let report = r.verify(|_| {});
    assert_eq!(report.bad_chunks, 2);
    for e in &report.chunk_errors {
        assert!(
            matches!(
                e,
                ImageError::ChunkDamaged {
                    reason: ChunkFault::WrongFrame(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("swapped"), "{e}");
    }
}

fn index_range(bytes: &[u8]) -> (usize, usize) {
    let r = ImageReader::open(Cursor::new(bytes.to_vec())).unwrap();
    let end = bytes.len() - FOOTER_LEN;
    let last = r.index().chunks.last().unwrap();
    (
        (last.offset + FRAME_HEADER_LEN as u64 + u64::from(last.stored_len)) as usize,
        end,
    )
}

#[test]
fn damaged_index_is_refused() {
    let a = build_vec();
    let (start, end) = index_range(&a.bytes);
    for at in [
        start,
        start + 1,
        start + 7,
        (start + end) / 2,
        end - 5,
        end - 1,
    ] {
        for bit in [0x01, 0x80] {
            let mut b = a.bytes.clone();
            b[at] ^= bit;
            let e = ImageReader::open(Cursor::new(b)).err().unwrap();
            assert!(
                matches!(
                    e,
                    ImageError::IndexDamaged { .. } | ImageError::IndexDecode(_)
                ),
                "byte {at}: {e}"
            );
            assert!(e.to_string().contains("index is damaged"), "{e}");
        }
    }
}

#[test]
fn damaged_footer_and_header_are_refused() {
    let a = build_vec();
    let n = a.bytes.len();
    for at in n - FOOTER_LEN..n - 8 {
        let mut b = a.bytes.clone();
        b[at] ^= 0x04;
        let e = ImageReader::open(Cursor::new(b)).err().unwrap();
        assert!(
            matches!(
                e,
                ImageError::FooterDamaged { .. } | ImageError::UnsupportedVersion { .. }
            ),
            "byte {at}: {e}"
        );
    }
    let mut b = a.bytes.clone();
    b[n - 3] ^= 0x40;
    let e = ImageReader::open(Cursor::new(b)).err().unwrap();
    assert!(e.to_string().contains("magic bytes"), "{e}");
    for at in 0..HEADER_LEN {
        let mut b = a.bytes.clone();
        b[at] ^= 0x01;
        let e = ImageReader::open(Cursor::new(b)).err().unwrap();
        assert!(
            matches!(
                e,
                ImageError::HeaderDamaged { .. } | ImageError::UnsupportedVersion { .. }
            ),
            "byte {at}: {e}"
        );
    }
}

struct FailAfter(usize);

impl Write for FailAfter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0 < buf.len() {
            return Err(std::io::Error::other("disk full"));
        }
        self.0 -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_errors_poison_the_writer() {
    let mut iw = ImageWriter::new(FailAfter(100), header_info(CS as u32)).unwrap();
    let e = iw
        .write_compressed(&compress_chunk(&noise(5, 100), 3).unwrap())
        .unwrap_err();
    assert!(matches!(e, ImageError::Write { offset: 64, .. }), "{e}");
    assert!(e.to_string().contains("free space"));
    let e = iw
        .write_compressed(&compress_chunk(&noise(6, 10), 3).unwrap())
        .unwrap_err();
    assert!(matches!(e, ImageError::Poisoned));
    assert!(matches!(
        iw.finish(extras(1 << 20)),
        Err(ImageError::Poisoned)
    ));
}

#[test]
fn lenient_open_reports_structural_problems() {
    // An index that is intact (root hash matches) but describes a stream with a hole.
    let mut idx = ImageReader::open(Cursor::new(build_vec().bytes))
        .unwrap()
        .index()
        .clone();
    idx.streams[1].extents.remove(1);
    let bytes = image_with_index(&build_vec().bytes, &idx);
    let e = ImageReader::open(Cursor::new(bytes.clone())).err().unwrap();
    assert!(matches!(e, ImageError::IndexInvalid { .. }), "{e}");
    let mut r = ImageReader::open_for_verify(Cursor::new(bytes)).unwrap();
    let report = r.verify(|_| {});
    assert!(!report.is_ok());
    assert!(
        report
            .index_problems
            .iter()
            .any(|p| p.contains("should start at")),
        "{:?}",
        report.index_problems
    );
    assert_eq!(report.chunks_ok, 5);
}

/// Replaces an image's index (and fixes the footer), as a buggy or hostile writer could.
fn image_with_index(image: &[u8], idx: &Index) -> Vec<u8> {
    let (start, _) = index_range(image);
    let raw = idx.encode().unwrap();
    let z = zstd::bulk::compress(&raw, 3).unwrap();
    let mut out = image[..start].to_vec();
    let mut h = blake3::Hasher::new();
    h.update(&image[..HEADER_LEN]);
    h.update(&raw);
    out.extend_from_slice(&z);
    let footer = format::Footer {
        index_offset: start as u64,
        index_stored_len: z.len() as u64,
        index_len: raw.len() as u64,
        root_hash: Hash(*h.finalize().as_bytes()),
        required_features: 0,
        optional_features: 0,
    };
    out.extend_from_slice(&footer.encode());
    out
}

/// The parallel verify (positional reads, one thread per core) finds exactly what the sequential one
/// finds, listed in chunk order, however the threads happen to finish.
#[test]
fn parallel_verify_reports_what_the_sequential_one_does() {
    let a = build_vec();
    let r = ImageReader::open(Cursor::new(a.bytes.clone())).unwrap();
    let n = r.index().chunks.len() as u64;
    let mut bytes = a.bytes.clone();
    for id in [n - 1, 0] {
        let c = chunk_at(&a.bytes, id);
        bytes[(c.offset + FRAME_HEADER_LEN as u64 + 1) as usize] ^= 0x01;
    }
    let sequential = ImageReader::open(Cursor::new(bytes.clone()))
        .unwrap()
        .verify(|_| {});
    let mut seen = Vec::new();
    let parallel = SharedReader::open(std::sync::Arc::new(bytes))
        .unwrap()
        .verify(|p| seen.push(p.chunks_done));
    assert_eq!(parallel.bad_chunks, 2);
    assert_eq!(parallel.problems(), sequential.problems());
    assert_eq!(
        (
            parallel.chunks_ok,
            parallel.bytes_ok,
            parallel.chunks_checked
        ),
        (
            sequential.chunks_ok,
            sequential.bytes_ok,
            sequential.chunks_checked
        )
    );
    assert_eq!(
        seen,
        (0..=n).collect::<Vec<_>>(),
        "progress after every chunk"
    );
    let ids: Vec<_> = parallel.chunk_errors.iter().map(|e| e.chunk()).collect();
    assert_eq!(ids, [Some(ChunkId(0)), Some(ChunkId(n - 1))]);
}
