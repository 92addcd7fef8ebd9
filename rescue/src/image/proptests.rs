//! Property tests: arbitrary indexes round-trip, hostile bytes never panic the decoder or the
//! reader, and random extent layouts come back byte for byte through writer and reader.

use std::io::Cursor;

use proptest::prelude::*;

use super::index::TAG_CRITICAL;
use super::tests::{creation, header_info, noise};
use super::*;

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn partition() -> impl Strategy<Value = PartitionInfo> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
    )
        .prop_map(
            |(number, start, size, type_id, name, uuid, fs_kind, fs_label, fs_uuid)| {
                PartitionInfo {
                    number,
                    start,
                    size,
                    type_id,
                    name,
                    uuid,
                    fs_kind,
                    fs_label,
                    fs_uuid,
                }
            },
        )
}

fn table_kind() -> impl Strategy<Value = TableKind> {
    prop_oneof![
        Just(TableKind::None),
        Just(TableKind::Mbr),
        Just(TableKind::Gpt),
        Just(TableKind::Other)
    ]
}

fn disk() -> impl Strategy<Value = DiskInfo> {
    (
        (any::<u64>(), any::<u32>(), any::<u32>()),
        (text(), text(), text(), text()),
        table_kind(),
        text(),
        prop::collection::vec(partition(), 0..4),
    )
        .prop_map(
            |(
                (size, ls, ps),
                (model, serial, transport, path),
                table_kind,
                table_id,
                partitions,
            )| {
                DiskInfo {
                    size,
                    logical_sector_size: ls,
                    physical_sector_size: ps,
                    model,
                    serial,
                    transport,
                    path,
                    table_kind,
                    table_id,
                    partitions,
                }
            },
        )
}

fn stream_kind() -> impl Strategy<Value = StreamKind> {
    let role = prop_oneof![
        Just(TableRole::Other),
        Just(TableRole::Mbr),
        Just(TableRole::GptPrimaryHeader),
        Just(TableRole::GptPrimaryEntries),
        Just(TableRole::GptBackupEntries),
        Just(TableRole::GptBackupHeader),
        Just(TableRole::Ebr),
    ];
    prop_oneof![
        role.prop_map(StreamKind::Table),
        any::<u32>().prop_map(|number| StreamKind::Partition { number }),
        Just(StreamKind::Gap),
        Just(StreamKind::WholeDisk),
    ]
}

fn extent() -> impl Strategy<Value = Extent> {
    let kind = prop_oneof![
        any::<u64>().prop_map(|c| ExtentKind::Data(ChunkId(c))),
        (any::<u64>(), any::<u32>()).prop_map(|(c, at)| ExtentKind::Slice {
            chunk: ChunkId(c),
            at
        }),
        Just(ExtentKind::Zero),
        Just(ExtentKind::Unused),
        Just(ExtentKind::Unreadable),
    ];
    (any::<u64>(), any::<u64>(), kind).prop_map(|(offset, len, kind)| Extent { offset, len, kind })
}

fn stream() -> impl Strategy<Value = Stream> {
    (
        (stream_kind(), any::<u64>(), any::<u64>(), text()),
        (any::<bool>(), text(), any::<u64>(), any::<u64>()),
        prop::collection::vec(extent(), 0..6),
    )
        .prop_map(
            |((kind, disk_offset, length, label), (fs, reason, used, stored), extents)| Stream {
                info: StreamInfo {
                    kind,
                    disk_offset,
                    length,
                    label,
                    capture: if fs {
                        CaptureMode::FilesystemAware
                    } else {
                        CaptureMode::Raw
                    },
                    capture_reason: reason,
                },
                used_bytes: used,
                stored_bytes: stored,
                extents,
            },
        )
}

fn chunk() -> impl Strategy<Value = ChunkRecord> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(offset, stored_len, uncompressed_len, z, hash)| ChunkRecord {
                offset,
                stored_len,
                uncompressed_len,
                compression: if z {
                    Compression::Zstd
                } else {
                    Compression::Stored
                },
                hash: Hash(hash),
            },
        )
}

fn index() -> impl Strategy<Value = Index> {
    let creation = (
        text(),
        text(),
        any::<i64>(),
        text(),
        prop::collection::vec(text(), 0..3),
    )
        .prop_map(
            |(tool_name, tool_version, created_unix, host_name, notes)| CreationInfo {
                tool_name,
                tool_version,
                created_unix,
                host_name,
                notes,
            },
        );
    let extra = (
        any::<u32>().prop_filter("not a v1 or critical tag", |t| {
            !(1..=4).contains(t) && t & TAG_CRITICAL == 0
        }),
        prop::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(tag, body)| RawSection { tag, body });
    (
        creation,
        disk(),
        prop::collection::vec(stream(), 0..4),
        prop::collection::vec(chunk(), 0..6),
        prop::collection::vec(extra, 0..3),
    )
        .prop_map(|(creation, disk, streams, chunks, extras)| Index {
            creation,
            disk,
            streams,
            chunks,
            extras,
        })
}

/// One extent of a generated layout: kind (0 = data, 1–3 = zero, unused, unreadable, 4 = a slice of an
/// earlier chunk, `seed` choosing which and where; data when there is none yet), length, content seed,
/// compressible.
type Layout = Vec<Vec<(u8, u16, u8, bool)>>;

fn layout() -> impl Strategy<Value = Layout> {
    prop::collection::vec(
        prop::collection::vec((0u8..5, 1u16..5000, 0u8..3, any::<bool>()), 0..12),
        1..4,
    )
}

fn content(len: usize, seed: u8, compressible: bool) -> Vec<u8> {
    if compressible {
        vec![seed.wrapping_add(1); len]
    } else {
        noise(u64::from(seed) + 100, len)
    }
}

/// Writes the layout as an image and returns it with each stream's expected restored bytes.
fn write_layout(layout: &Layout) -> (Vec<u8>, Vec<Vec<u8>>) {
    let lens: Vec<u64> = layout
        .iter()
        .map(|s| s.iter().map(|e| u64::from(e.1)).sum())
        .collect();
    let info = ImageHeaderInfo {
        slices: true,
        ..header_info(4096)
    };
    let mut w = ImageWriter::new(Vec::new(), info).unwrap();
    let mut expected = Vec::new();
    // The chunks written so far, with their bytes, for slices to take from.
    let mut chunks: Vec<(ChunkId, Vec<u8>)> = Vec::new();
    let mut disk_offset = 0;
    for (s, len) in layout.iter().zip(&lens) {
        let id = w
            .begin_stream(StreamInfo {
                kind: StreamKind::Gap,
                disk_offset,
                length: *len,
                label: String::new(),
                capture: CaptureMode::Raw,
                capture_reason: String::new(),
            })
            .unwrap();
        disk_offset += len;
        let mut exp = Vec::new();
        for &(kind, n, seed, compressible) in s {
            let at = exp.len() as u64;
            let long_enough: Vec<_> = chunks
                .iter()
                .filter(|c| c.1.len() >= usize::from(n))
                .collect();
            if kind == 4 && !long_enough.is_empty() {
                let (chunk, bytes) = long_enough[usize::from(seed) % long_enough.len()];
                let len = usize::from(n);
                let from = (len * 7 + usize::from(seed)) % (bytes.len() - len + 1);
                w.push_slice(id, at, len as u64, *chunk, from as u32)
                    .unwrap();
                exp.extend_from_slice(&bytes[from..from + len]);
            } else if kind == 0 || kind == 4 {
                let bytes = content(n.into(), seed, compressible);
                let c = compress_chunk(&bytes, 1).unwrap();
                let chunk = w.write_compressed(&c).unwrap();
                w.push_data(id, at, n.into(), chunk).unwrap();
                chunks.push((chunk, bytes.clone()));
                exp.extend(bytes);
            } else {
                let kind = [ExtentKind::Zero, ExtentKind::Unused, ExtentKind::Unreadable]
                    [usize::from(kind - 1)];
                w.push_extent(id, at, n.into(), kind).unwrap();
                exp.resize(exp.len() + usize::from(n), 0);
            }
        }
        expected.push(exp);
    }
    let disk = DiskInfo {
        size: disk_offset,
        ..DiskInfo::default()
    };
    let fin = w.finish(IndexExtras::new(creation(), disk)).unwrap();
    (fin.inner, expected)
}

/// Every stream's bytes as restore would write them (zeros where nothing is stored).
fn restore_all(r: &mut ImageReader<Cursor<Vec<u8>>>) -> Vec<Vec<u8>> {
    let streams = r.index().streams.clone();
    streams
        .iter()
        .map(|s| {
            let mut out = Vec::new();
            for x in &s.extents {
                assert_eq!(x.offset, out.len() as u64);
                match x.chunk_piece() {
                    Some((id, at)) => {
                        let bytes = r.read_chunk(id).unwrap();
                        out.extend_from_slice(&bytes[at as usize..(at + x.len) as usize]);
                    }
                    None => out.resize(out.len() + x.len as usize, 0),
                }
            }
            out
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn index_round_trips(idx in index()) {
        let bytes = idx.encode().unwrap();
        prop_assert_eq!(Index::decode(&bytes).unwrap(), idx);
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        magic in any::<bool>(),
    ) {
        let mut input = if magic { index::INDEX_MAGIC.to_vec() } else { Vec::new() };
        input.extend(bytes);
        let _ = Index::decode(&input);
    }

    #[test]
    fn decoder_never_panics_on_damaged_indexes(
        idx in index(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = idx.encode().unwrap();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        let _ = Index::decode(&bytes);
        if let Ok(back) = Index::decode(&bytes) {
            let _ = back.validate();
        }
        let n = cut.index(bytes.len());
        let _ = Index::decode(&bytes[..n]);
    }

    #[test]
    fn reader_never_panics_on_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..400),
        framed in any::<bool>(),
    ) {
        let mut input = Vec::new();
        if framed {
            input.extend_from_slice(&format::HEADER_MAGIC);
        }
        input.extend(body);
        if framed {
            input.extend_from_slice(&format::FOOTER_MAGIC);
        }
        let _ = ImageReader::open(Cursor::new(input.clone()));
        if let Ok(mut r) = ImageReader::open_for_verify(Cursor::new(input)) {
            let _ = r.verify(|_| {});
        }
    }

    #[test]
    fn reader_never_panics_on_damaged_images(
        layout in layout(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (mut bytes, expected) = write_layout(&layout);
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= v | 1;
        }
        if let Ok(mut r) = ImageReader::open_for_verify(Cursor::new(bytes.clone())) {
            let report = r.verify(|_| {});
            // Damage may be harmless (a zstd bit that changes nothing), but an image that verifies
            // must restore exactly what was captured.
            if report.is_ok() {
                prop_assert_eq!(restore_all(&mut r), expected);
            }
        }
    }

    #[test]
    fn extent_layouts_round_trip(layout in layout()) {
        let (bytes, expected) = write_layout(&layout);
        let mut r = ImageReader::open(Cursor::new(bytes)).unwrap();
        prop_assert_eq!(restore_all(&mut r), expected);
        for s in &r.index().streams {
            let unused: u64 = s
                .extents
                .iter()
                .filter(|x| x.kind == ExtentKind::Unused)
                .map(|x| x.len)
                .sum();
            prop_assert_eq!(s.used_bytes, s.info.length - unused);
            // Holes of one kind are merged; data and slices (even two of the same bytes) stay apart.
            let hole = |k: &ExtentKind| {
                matches!(k, ExtentKind::Zero | ExtentKind::Unused | ExtentKind::Unreadable)
            };
            for w in s.extents.windows(2) {
                prop_assert!(!hole(&w[0].kind) || w[0].kind != w[1].kind, "adjacent holes merged");
            }
        }
        let report = r.verify(|_| {});
        prop_assert!(report.is_ok(), "{:?}", report.problems());
        let distinct: std::collections::HashSet<_> =
            r.index().chunks.iter().map(|c| (c.hash, c.uncompressed_len)).collect();
        prop_assert_eq!(distinct.len(), r.index().chunks.len(), "identical chunks stored once");
    }
}
