//! Block deduplication end to end in the engine: blocks seen before become slices of the chunk that holds
//! them, the restore puts every copy back, the device comparison checks every copy, and `dedup: false`
//! makes a format 1.0 image.

use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::capture::{capture, CaptureOptions};
use super::device::{Source, Target};
use super::restore::{restore, RestoreOptions, UnusedPolicy};
use super::verify::verify_against;
use crate::detect::{detect_image, DetectOptions};
use crate::image::{ExtentKind, SharedReader, FEATURE_CHUNK_SLICES};
use crate::plan::{plan_capture, plan_restore_disk, CaptureRequest, Environment};

const K: usize = 1024;

/// A disk with no partition table (captured raw, whole) of noise (64 KiB chunks), with copies: 40 KiB at
/// 8 KiB and at 200 KiB (two chunks, different places in them: stored once); 16 KiB twice within one chunk
/// (left to zstd), followed by a zero block; 12 KiB of the first copy again in another chunk (too short a
/// run to be worth a slice); and the 40 KiB off the 4 KiB grid (not matched: filesystems put blocks on it).
fn disk_bytes() -> Vec<u8> {
    let mut d = builder::fixtures::noise(1024 * K, 1);
    let run = d[8 * K..48 * K].to_vec();
    d[200 * K..240 * K].copy_from_slice(&run);
    let within = d[256 * K..272 * K].to_vec();
    d[288 * K..304 * K].copy_from_slice(&within);
    d[304 * K..308 * K].fill(0);
    d[400 * K..412 * K].copy_from_slice(&run[..12 * K]);
    d[512 * K + 512..552 * K + 512].copy_from_slice(&run);
    d
}

fn capture_image(data: &[u8], dedup: bool) -> SharedReader<Vec<u8>> {
    let disk = detect_image(
        Cursor::new(data),
        data.len() as u64,
        "dups.img",
        &DetectOptions::default(),
    );
    let source = Source::from_medium(
        Box::new(super::tests::Flaky {
            data: data.to_vec(),
            bad: Vec::new(),
        }),
        Path::new("dups.img"),
        data.len() as u64,
        512,
    );
    let req = CaptureRequest {
        raw: true,
        ..CaptureRequest::default()
    };
    let plan = plan_capture(&disk, &req, None).unwrap();
    let opts = CaptureOptions {
        level: 3,
        threads: 2,
        chunk_size: 64 * K as u32,
        dedup,
        creation: super::creation_info(),
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let (report, image) = capture(&source, &disk, &plan, Vec::new(), &opts, None).unwrap();
    let reader = SharedReader::open(Arc::new(image)).unwrap();
    assert_eq!(report.repeated_bytes, reader.index().repeated_bytes());
    reader
}

/// The slices: (stream offset, length, offset in their chunk).
fn slices(reader: &SharedReader<Vec<u8>>) -> Vec<(u64, u64, u64)> {
    reader
        .index()
        .streams
        .iter()
        .flat_map(|s| &s.extents)
        .filter_map(|e| match e.kind {
            ExtentKind::Slice { at, .. } => Some((e.offset, e.len, u64::from(at))),
            _ => None,
        })
        .collect()
}

#[test]
fn repeated_blocks_are_stored_once_and_restored_everywhere() {
    let data = disk_bytes();
    let reader = capture_image(&data, true);
    assert_ne!(reader.header().required_features & FEATURE_CHUNK_SLICES, 0);
    let s = slices(&reader);
    // One copy of the 40 KiB is a slice of the other's chunk (which one depends on which compressor saw
    // them first: both chunks are compressed at once), between slices of its own chunk.
    let slice = |o: usize, l: usize, at: usize| (o as u64, l as u64, at as u64);
    let at_0 = [
        slice(0, 8 * K, 0),
        slice(8 * K, 40 * K, 8 * K),
        slice(48 * K, 16 * K, 8 * K),
    ];
    let at_192 = [
        slice(192 * K, 8 * K, 0),
        slice(200 * K, 40 * K, 8 * K),
        slice(240 * K, 16 * K, 8 * K),
    ];
    assert!(s == at_0 || s == at_192, "{s:?}");
    // Every other chunk is stored whole.
    let whole = reader.index().streams[0]
        .extents
        .iter()
        .filter(|e| matches!(e.kind, ExtentKind::Data(_)) && e.len == 64 * K as u64)
        .count();
    assert_eq!(whole, 15);
    let stored: u64 = reader
        .index()
        .chunks
        .iter()
        .map(|c| u64::from(c.uncompressed_len))
        .sum();
    assert_eq!(
        stored,
        data.len() as u64 - 40 * K as u64,
        "only one copy of the 40 KiB is stored"
    );
    assert_eq!(reader.index().repeated_bytes(), 40 * K as u64);
    assert!(reader.verify(|_| {}).is_ok());

    // Restore: every copy back in place.
    let dir = tempfile::tempdir().unwrap();
    let target_path = dir.path().join("target.img");
    std::fs::write(&target_path, vec![0xAAu8; data.len()]).unwrap();
    let target = Target::open(&target_path).unwrap();
    let layout = super::layout_of(reader.index());
    let mut disk = detect_image(
        Cursor::new(&data),
        data.len() as u64,
        "dups.img",
        &DetectOptions::default(),
    );
    disk.path = target_path.display().to_string();
    let plan = plan_restore_disk(&layout, &disk, &Environment::default(), true).unwrap();
    let opts = RestoreOptions {
        threads: 2,
        precheck: true,
        verify: true,
        unused: UnusedPolicy::Leave,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let report = restore(&reader, &layout, &plan, &target, &opts, None).unwrap();
    assert!(report.verified);
    drop(target);
    let restored = std::fs::read(&target_path).unwrap();
    assert!(
        restored == data,
        "the restored disk is the source, byte for byte"
    );

    // The device comparison checks each copy: damage in the second copy is named there, and only there.
    let mut damaged = restored;
    let (copy, _) = if s == at_0 {
        (8 * K, 200 * K)
    } else {
        (200 * K, 8 * K)
    };
    damaged[copy + 20 * K] ^= 1;
    std::fs::write(&target_path, &damaged).unwrap();
    let device = Source::open_unlocked(&target_path).unwrap();
    let r = verify_against(&reader, &device, None, None).unwrap();
    assert_eq!(r.bytes_compared, data.len() as u64);
    assert_eq!(
        r.differences,
        [format!(
            "whole disk (unknown): 40960 bytes at byte {} of {} differ from the image",
            copy,
            target_path.display()
        )],
    );
    // Damage in a chunk's own bytes (8 KiB before the slice): the chunk is read from the image to name the
    // piece that differs, and only that one.
    let mut damaged = data.clone();
    let own = copy - 8 * K;
    damaged[own + 100] ^= 1;
    std::fs::write(&target_path, &damaged).unwrap();
    let r = verify_against(&reader, &device, None, None).unwrap();
    assert_eq!(
        r.differences,
        [format!(
            "whole disk (unknown): 8192 bytes at byte {own} of {} differ from the image",
            target_path.display()
        )],
    );
}

#[test]
fn without_dedup_the_image_is_format_1_0() {
    let data = disk_bytes();
    let reader = capture_image(&data, false);
    assert_eq!(reader.header().required_features, 0);
    assert!(slices(&reader).is_empty());
    assert!(reader.verify(|_| {}).is_ok());
}
