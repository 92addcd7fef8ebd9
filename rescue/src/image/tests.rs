//! Round trips and writer rules on small images built in memory (damage: `damage_tests`).

use std::io::{Cursor, Write};
use std::sync::Arc;

use super::*;

/// Deterministic pseudo-random bytes (xorshift), incompressible for zstd.
pub(super) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(super) fn disk(size: u64) -> DiskInfo {
    DiskInfo {
        size,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        model: "QEMU HARDDISK".into(),
        serial: "QM00001".into(),
        transport: "sata".into(),
        path: "/dev/sda".into(),
        table_kind: TableKind::Gpt,
        table_id: "5F2C3A4B-0000-4000-8000-000000000001".into(),
        partitions: vec![PartitionInfo {
            number: 1,
            start: 1 << 20,
            size: 1 << 20,
            type_id: "0FC63DAF-8483-4772-8E79-3D69D8477DE4".into(),
            name: "root".into(),
            uuid: "6A1B7D36-0000-4000-8000-000000000002".into(),
            fs_kind: "ext4".into(),
            fs_label: "rootfs".into(),
            fs_uuid: "0b8e6c3a-1111-4222-8333-444455556666".into(),
        }],
    }
}

pub(super) fn header_info(chunk_size: u32) -> ImageHeaderInfo {
    ImageHeaderInfo {
        image_id: ImageId([0x42; 16]),
        chunk_size,
        slices: false,
    }
}

pub(super) fn creation() -> CreationInfo {
    CreationInfo {
        tool_name: "rescue".into(),
        tool_version: "0.1.0".into(),
        created_unix: 1_790_000_000,
        host_name: "tester".into(),
        notes: vec!["partition 1: ext4 used-block map".into()],
    }
}

pub(super) fn extras(disk_size: u64) -> IndexExtras {
    IndexExtras::new(creation(), disk(disk_size))
}

pub(super) fn stream(
    kind: StreamKind,
    disk_offset: u64,
    length: u64,
    capture: CaptureMode,
) -> StreamInfo {
    StreamInfo {
        kind,
        disk_offset,
        length,
        label: format!("{kind}"),
        capture,
        capture_reason: "test".into(),
    }
}

/// What the test image should restore to, per stream (zeros where nothing was stored).
pub(super) struct Built {
    pub(super) bytes: Vec<u8>,
    pub(super) expected: Vec<Vec<u8>>,
    pub(super) root: Hash,
}

pub(super) const CS: usize = 4096;

/// Table (MBR) stream, a partition with every extent kind plus a duplicated chunk, a stored and a
/// zstd chunk, and a gap.
fn build<W: Write>(w: W, into_vec: impl FnOnce(W) -> Vec<u8>) -> Built {
    let mut iw = ImageWriter::new(w, header_info(CS as u32)).unwrap();
    let mut expected = Vec::new();

    let mbr = {
        let mut b = noise(1, 446);
        b.resize(510, 0);
        b.extend_from_slice(&[0x55, 0xaa]);
        b
    };
    let s0 = iw
        .begin_stream(stream(
            StreamKind::Table(TableRole::Mbr),
            0,
            512,
            CaptureMode::Raw,
        ))
        .unwrap();
    let c = compress_chunk(&mbr, 3).unwrap();
    let id = iw.write_compressed(&c).unwrap();
    iw.push_data(s0, 0, 512, id).unwrap();
    expected.push(mbr);

    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog. "
        .iter()
        .copied()
        .cycle()
        .take(CS)
        .collect();
    let random = noise(2, CS);
    let len = 1u64 << 20;
    let s1 = iw
        .begin_stream(stream(
            StreamKind::Partition { number: 1 },
            1 << 20,
            len,
            CaptureMode::FilesystemAware,
        ))
        .unwrap();
    let mut exp = Vec::new();
    let mut pos = 0u64;
    let data = |iw: &mut ImageWriter<W>, exp: &mut Vec<u8>, pos: &mut u64, bytes: &[u8]| {
        let c = compress_chunk(bytes, 3).unwrap();
        let id = match iw.has_chunk(&c.hash, c.uncompressed_len) {
            Some(id) => id,
            None => iw.write_compressed(&c).unwrap(),
        };
        iw.push_data(s1, *pos, bytes.len() as u64, id).unwrap();
        exp.extend_from_slice(bytes);
        *pos += bytes.len() as u64;
    };
    let hole = |iw: &mut ImageWriter<W>, exp: &mut Vec<u8>, pos: &mut u64, n: u64, k| {
        iw.push_extent(s1, *pos, n, k).unwrap();
        exp.resize(exp.len() + n as usize, 0);
        *pos += n;
    };
    data(&mut iw, &mut exp, &mut pos, &text);
    hole(&mut iw, &mut exp, &mut pos, 8192, ExtentKind::Zero);
    data(&mut iw, &mut exp, &mut pos, &random);
    hole(&mut iw, &mut exp, &mut pos, 4096, ExtentKind::Unused);
    hole(&mut iw, &mut exp, &mut pos, 4096, ExtentKind::Unused);
    data(&mut iw, &mut exp, &mut pos, &text); // the duplicate
    hole(&mut iw, &mut exp, &mut pos, 1024, ExtentKind::Unreadable);
    data(&mut iw, &mut exp, &mut pos, &random[..1000]); // short last chunk of a run
    hole(&mut iw, &mut exp, &mut pos, 0, ExtentKind::Zero); // ignored
    let rest = len - pos;
    hole(&mut iw, &mut exp, &mut pos, rest, ExtentKind::Unused);
    expected.push(exp);

    let gap = noise(3, 3000);
    let s2 = iw
        .begin_stream(stream(
            StreamKind::Gap,
            512,
            gap.len() as u64,
            CaptureMode::Raw,
        ))
        .unwrap();
    let c = compress_chunk(&gap, 3).unwrap();
    let id = iw.write_compressed(&c).unwrap();
    iw.push_data(s2, 0, gap.len() as u64, id).unwrap();
    expected.push(gap);

    iw.add_note("gap after MBR captured raw");
    let fin = iw
        .finish(IndexExtras {
            notes: vec!["done".into()],
            sections: vec![RawSection {
                tag: 0x1_2345,
                body: b"export hints".to_vec(),
            }],
            ..extras(4 << 20)
        })
        .unwrap();
    assert_eq!(fin.chunks, 5, "the duplicate is stored once");
    let root = fin.root_hash;
    let bytes_written = fin.bytes_written;
    let bytes = into_vec(fin.inner);
    assert_eq!(bytes.len() as u64, bytes_written);
    Built {
        bytes,
        expected,
        root,
    }
}

pub(super) fn build_vec() -> Built {
    build(Cursor::new(Vec::new()), |c| c.into_inner())
}

/// Every stream's bytes as restore would write them.
fn restore<R: std::io::Read + std::io::Seek>(r: &mut ImageReader<R>) -> Vec<Vec<u8>> {
    let streams = r.index().streams.clone();
    streams
        .iter()
        .map(|s| {
            let mut out = Vec::new();
            for x in &s.extents {
                assert_eq!(x.offset, out.len() as u64);
                match x.kind {
                    ExtentKind::Data(id) => out.extend(r.read_chunk(id).unwrap()),
                    _ => out.resize(out.len() + x.len as usize, 0),
                }
            }
            out
        })
        .collect()
}

struct NoSeek(Vec<u8>);

impl Write for NoSeek {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn round_trip_cursor_and_non_seekable_writer() {
    let a = build_vec();
    let b = build(NoSeek(Vec::new()), |w| w.0);
    assert_eq!(a.bytes, b.bytes, "the writer never needs to seek");
    assert_eq!(a.root, b.root);

    let mut r = ImageReader::open(Cursor::new(a.bytes.clone())).unwrap();
    assert_eq!(r.root_hash(), a.root);
    assert_eq!(restore(&mut r), a.expected);

    let idx = r.index();
    assert_eq!(idx.disk, disk(4 << 20));
    assert_eq!(idx.creation.tool_name, "rescue");
    assert_eq!(idx.creation.created_unix, 1_790_000_000);
    assert_eq!(
        idx.creation.notes,
        [
            "partition 1: ext4 used-block map",
            "gap after MBR captured raw",
            "done"
        ]
    );
    assert_eq!(
        idx.extras,
        [RawSection {
            tag: 0x1_2345,
            body: b"export hints".to_vec()
        }]
    );
    assert_eq!(r.header().image_id, ImageId([0x42; 16]));
    assert_eq!(r.header().chunk_size, CS as u32);

    let p = &idx.streams[1];
    assert_eq!(p.info.kind, StreamKind::Partition { number: 1 });
    assert_eq!(p.info.capture, CaptureMode::FilesystemAware);
    let kinds: Vec<_> = p
        .extents
        .iter()
        .map(|x| match x.kind {
            ExtentKind::Data(_) => "D",
            ExtentKind::Zero => "Z",
            ExtentKind::Unused => "U",
            ExtentKind::Unreadable => "E",
            ExtentKind::Slice { .. } => "S",
        })
        .collect();
    assert_eq!(
        kinds,
        ["D", "Z", "D", "U", "D", "E", "D", "U"],
        "adjacent Unused merged"
    );
    let (ExtentKind::Data(first), ExtentKind::Data(dup)) = (p.extents[0].kind, p.extents[4].kind)
    else {
        panic!("data extents expected")
    };
    assert_eq!(first, dup, "identical chunks referenced twice, stored once");
    assert_eq!(p.used_bytes, CS as u64 * 3 + 8192 + 1024 + 1000);
    let comp: Vec<_> = idx.chunks.iter().map(|c| c.compression).collect();
    assert!(comp.contains(&Compression::Zstd) && comp.contains(&Compression::Stored));
    let distinct: u64 = [first.0, 2, 3]
        .iter()
        .map(|&i| u64::from(idx.chunks[i as usize].stored_len))
        .sum();
    assert_eq!(p.stored_bytes, distinct);

    let report = r.verify(|_| {});
    assert!(report.is_ok(), "{:?}", report.problems());
    assert_eq!(report.chunks_ok, 5);
    assert_eq!(report.unreadable_source_bytes, 1024);
    assert_eq!(report.unreferenced_chunks, 0);
}

#[test]
fn shared_reader_reads_from_several_threads() {
    let a = build_vec();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&a.bytes).unwrap();
    let file = Arc::new(f.reopen().unwrap());
    let shared = SharedReader::open(Arc::clone(&file)).unwrap();
    let r = ImageReader::open(Cursor::new(a.bytes.clone())).unwrap();
    let from_seek = r.shared(Arc::new(a.bytes.clone()));
    let n = shared.index().chunks.len() as u64;
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (sh, fs) = (shared.clone(), from_seek.clone());
            s.spawn(move || {
                for i in (t..n).step_by(3) {
                    assert_eq!(
                        sh.read_chunk(ChunkId(i)).unwrap(),
                        fs.read_chunk(ChunkId(i)).unwrap()
                    );
                }
            });
        }
    });
    assert!(shared.verify(|_| {}).is_ok());
}

#[test]
fn writer_refuses_holes_overlaps_and_incomplete_streams() {
    let mut iw = ImageWriter::new(Vec::new(), header_info(CS as u32)).unwrap();
    let s = iw
        .begin_stream(stream(StreamKind::Gap, 0, 100, CaptureMode::Raw))
        .unwrap();
    iw.push_extent(s, 0, 10, ExtentKind::Zero).unwrap();
    let hole = iw.push_extent(s, 20, 10, ExtentKind::Zero).unwrap_err();
    assert!(
        hole.to_string().contains("must start at offset 10"),
        "{hole}"
    );
    let overlap = iw.push_extent(s, 5, 10, ExtentKind::Zero).unwrap_err();
    assert!(matches!(overlap, ImageError::InvalidUse { .. }));
    let past = iw.push_extent(s, 10, 91, ExtentKind::Zero).unwrap_err();
    assert!(past.to_string().contains("past the stream's end"), "{past}");
    let id = iw
        .write_compressed(&compress_chunk(&[1u8; 50], 3).unwrap())
        .unwrap();
    assert!(
        iw.push_data(s, 10, 49, id).is_err(),
        "length must match the chunk"
    );
    assert!(matches!(
        iw.push_data(s, 10, 50, ChunkId(9)),
        Err(ImageError::NoSuchChunk { .. })
    ));
    assert!(iw
        .write_chunk(Hash([1; 32]), 10, &[0; 11], Compression::Zstd)
        .is_err());
    assert!(iw
        .write_chunk(Hash([1; 32]), 10, &[0; 9], Compression::Stored)
        .is_err());
    iw.push_data(s, 10, 50, id).unwrap();
    let e = iw.finish(extras(1 << 20)).unwrap_err();
    assert!(
        matches!(
            e,
            ImageError::StreamIncomplete {
                covered: 60,
                length: 100,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        ImageWriter::new(Vec::new(), header_info(100)).is_err(),
        "chunk size too small"
    );
}

/// Slices must lie within their chunk, need a writer that announced them (feature bit 3 in the header),
/// and an index whose slice runs past its chunk is invalid.
#[test]
fn slices_stay_within_their_chunk_and_need_the_feature_bit() {
    let chunk = compress_chunk(&noise(5, 100), 3).unwrap();
    let mut plain = ImageWriter::new(Vec::new(), header_info(CS as u32)).unwrap();
    let s = plain
        .begin_stream(stream(StreamKind::Gap, 0, 100, CaptureMode::Raw))
        .unwrap();
    let id = plain.write_compressed(&chunk).unwrap();
    let e = plain.push_slice(s, 0, 10, id, 0).unwrap_err();
    assert!(e.to_string().contains("feature bit 3"), "{e}");

    let info = ImageHeaderInfo {
        slices: true,
        ..header_info(CS as u32)
    };
    let mut iw = ImageWriter::new(Vec::new(), info).unwrap();
    let s = iw
        .begin_stream(stream(StreamKind::Gap, 0, 150, CaptureMode::Raw))
        .unwrap();
    let id = iw.write_compressed(&chunk).unwrap();
    for (len, at) in [(1, 100), (101, 0), (0, 0), (60, 50)] {
        let e = iw.push_slice(s, 0, len, id, at).unwrap_err();
        assert!(e.to_string().contains("cannot take"), "{len} at {at}: {e}");
    }
    assert!(matches!(
        iw.push_slice(s, 0, 1, ChunkId(3), 0),
        Err(ImageError::NoSuchChunk { .. })
    ));
    iw.push_data(s, 0, 100, id).unwrap();
    iw.push_slice(s, 100, 50, id, 50).unwrap();
    let built = iw.finish(extras(1 << 20)).unwrap().inner;
    let r = ImageReader::open(Cursor::new(built)).unwrap();
    assert_ne!(r.header().required_features & FEATURE_CHUNK_SLICES, 0);
    let mut idx = r.index().clone();
    assert!(idx.validate().is_empty());
    assert_eq!(
        idx.streams[0].stored_bytes,
        u64::from(idx.chunks[0].stored_len),
        "a chunk counts once per stream"
    );
    idx.streams[0].extents[1].kind = ExtentKind::Slice {
        chunk: ChunkId(0),
        at: 51,
    };
    let problems = idx.validate();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("takes 50 bytes from byte 51 of chunk 0, which holds 100 bytes")),
        "{problems:?}"
    );
}

#[test]
fn writer_checks_streams_against_the_disk_and_strings() {
    let finish = |kind, disk_offset, extras: IndexExtras| {
        let mut iw = ImageWriter::new(Vec::new(), header_info(CS as u32)).unwrap();
        let s = iw
            .begin_stream(stream(kind, disk_offset, 10, CaptureMode::Raw))
            .unwrap();
        iw.push_extent(s, 0, 10, ExtentKind::Zero).unwrap();
        iw.finish(extras)
    };
    assert!(finish(StreamKind::Gap, 0, extras(1 << 20)).is_ok());
    let e = finish(StreamKind::Partition { number: 9 }, 0, extras(1 << 20)).unwrap_err();
    assert!(e.to_string().contains("partition 9 is not in"), "{e}");
    let e = finish(StreamKind::Gap, (1 << 20) - 5, extras(1 << 20)).unwrap_err();
    assert!(e.to_string().contains("beyond the end"), "{e}");
    let mut x = extras(1 << 20);
    x.creation.host_name = "x".repeat(MAX_STRING_LEN + 1);
    let e = finish(StreamKind::Gap, 0, x).unwrap_err();
    assert!(e.to_string().contains("host name"), "{e}");
    let mut iw = ImageWriter::new(Vec::new(), header_info(CS as u32)).unwrap();
    assert!(iw
        .begin_stream(stream(StreamKind::Gap, u64::MAX, 10, CaptureMode::Raw))
        .is_err());
}

#[test]
fn unknown_sections_are_kept_or_refused() {
    let mut idx = ImageReader::open(Cursor::new(build_vec().bytes))
        .unwrap()
        .index()
        .clone();
    idx.extras.push(RawSection {
        tag: 0x77,
        body: vec![1, 2, 3],
    });
    let back = Index::decode(&idx.encode().unwrap()).unwrap();
    assert_eq!(back, idx);
    idx.extras.push(RawSection {
        tag: 0x8000_0077,
        body: vec![],
    });
    let e = Index::decode(&idx.encode().unwrap()).unwrap_err();
    assert_eq!(
        e.kind,
        DecodeErrorKind::UnknownCriticalSection { tag: 0x8000_0077 }
    );
}

#[test]
fn compress_chunk_falls_back_to_stored() {
    let text = vec![7u8; 10_000];
    let c = compress_chunk(&text, 3).unwrap();
    assert_eq!(c.compression, Compression::Zstd);
    assert!(c.payload.len() < 100);
    assert_eq!(
        decompress_chunk(c.compression, &c.payload, 10_000, &c.hash).unwrap(),
        text
    );
    let r = noise(9, 10_000);
    let c = compress_chunk(&r, 3).unwrap();
    assert_eq!(c.compression, Compression::Stored);
    assert_eq!(&c.payload[..], &r[..]);
    assert!(matches!(
        decompress_chunk(c.compression, &c.payload, 10_000, &Hash([0; 32])),
        Err(ChunkFault::HashMismatch { .. })
    ));
    assert!(compress_chunk(&[], 3).is_err());
}

/// Index cost for 250 000 chunks (a 2 TB disk at 8 MiB chunks): `cargo test --release -p rescue --lib
/// index_speed -- --ignored --nocapture` (numbers are recorded in docs/FORMAT.md).
#[test]
#[ignore]
fn index_speed_250k_chunks() {
    use std::time::Instant;
    let n = 250_000u64;
    let cs = u64::from(DEFAULT_CHUNK_SIZE);
    let hashes = noise(77, 32 * n as usize);
    let mut chunks = Vec::new();
    let mut extents = Vec::new();
    let mut offset = HEADER_LEN as u64;
    let mut pos = 0;
    for i in 0..n {
        let stored_len = 1_500_000 + (i as u32 % 1000) * 1000;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&hashes[32 * i as usize..32 * (i as usize + 1)]);
        chunks.push(ChunkRecord {
            offset,
            stored_len,
            uncompressed_len: cs as u32,
            compression: Compression::Zstd,
            hash: Hash(hash),
        });
        offset += FRAME_HEADER_LEN as u64 + u64::from(stored_len);
        extents.push(Extent {
            offset: pos,
            len: cs,
            kind: ExtentKind::Data(ChunkId(i)),
        });
        pos += cs;
        if i % 5 == 4 {
            // Free space between used runs, as a filesystem-aware capture produces.
            extents.push(Extent {
                offset: pos,
                len: 3 * cs,
                kind: ExtentKind::Unused,
            });
            pos += 3 * cs;
        }
    }
    let mut d = disk(pos + (2 << 20));
    d.partitions[0].size = pos;
    let unused: u64 = extents
        .iter()
        .filter(|x| x.kind == ExtentKind::Unused)
        .map(|x| x.len)
        .sum();
    let stored: u64 = chunks.iter().map(|c| u64::from(c.stored_len)).sum();
    let idx = Index {
        creation: creation(),
        disk: d,
        streams: vec![Stream {
            info: stream(
                StreamKind::Partition { number: 1 },
                1 << 20,
                pos,
                CaptureMode::Raw,
            ),
            used_bytes: pos - unused,
            stored_bytes: stored,
            extents,
        }],
        chunks,
        extras: Vec::new(),
    };
    let t = Instant::now();
    let raw = idx.encode().unwrap();
    let t_enc = t.elapsed();
    let t = Instant::now();
    let z = zstd::bulk::compress(&raw, 3).unwrap();
    let t_z = t.elapsed();
    let t = Instant::now();
    let root = Hash::of(&raw);
    let t_hash = t.elapsed();
    let t = Instant::now();
    let unz = zstd::bulk::decompress(&z, raw.len()).unwrap();
    let t_unz = t.elapsed();
    let t = Instant::now();
    let back = Index::decode(&unz).unwrap();
    let t_dec = t.elapsed();
    let t = Instant::now();
    let problems = back.validate();
    let refs = validate::RefMap::build(&back);
    let t_val = t.elapsed();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(refs.locate(&back, ChunkId(n - 1)).is_some());
    assert_eq!(back, idx);
    println!(
        "{n} chunks, {} extents: index {} bytes raw, {} bytes zstd; encode {t_enc:?}, \
         zstd {t_z:?}, blake3 {t_hash:?} ({root}), unzstd {t_unz:?}, decode {t_dec:?}, \
         validate+refmap {t_val:?}",
        back.streams[0].extents.len(),
        raw.len(),
        z.len()
    );
}

/// A slow, high-level compression gives up soon after it is asked to (a cancelled capture does not wait
/// for chunks taking seconds each), and the compressor still works afterwards.
#[test]
fn a_slow_compression_is_abandoned_when_asked() {
    use std::sync::atomic::{AtomicBool, Ordering};
    // Half text, half noise: level 19 takes well over a second on 8 MiB of it.
    let mut data = b"a line of log text, 2026-12-06 23:59:59 ok\n".repeat(100_000);
    data.truncate(4 << 20);
    data.extend(noise(9, 4 << 20));
    let mut c = super::ChunkCompressor::new(19).unwrap();
    let stop = AtomicBool::new(false);
    let stopped = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            stop.store(true, Ordering::Relaxed);
        });
        c.compress_buf_until(
            crate::sys::AlignedBuf::copy_of(&data),
            crate::sys::AlignedBuf::with_capacity(data.len()),
            &stop,
        )
        .unwrap()
    });
    assert!(stopped.is_none(), "the compression ran to the end");
    let small = b"again ".repeat(1000);
    let chunk = c.compress(&small).unwrap();
    assert_eq!(chunk.uncompressed_len as usize, small.len());
}
