//! Engine tests with injected read errors: a capture never aborts on bad sectors, records them at sector
//! precision, and a restore writes zeros there and reports them.

use std::io::Cursor;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::capture::{capture, CaptureOptions};
use super::device::{Medium, Source, Target};
use super::restore::{restore, RestoreOptions, UnusedPolicy};
use crate::detect::{detect_image, DetectOptions};
use crate::image::{ExtentKind, SharedReader};
use crate::plan::{plan_capture, plan_restore_disk, CaptureRequest, Environment};

pub(super) struct Flaky {
    pub data: Vec<u8>,
    pub bad: Vec<Range<u64>>,
}

impl Medium for Flaky {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let r = offset..offset + buf.len() as u64;
        if self.bad.iter().any(|b| b.start < r.end && r.start < b.end) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        buf.copy_from_slice(&self.data[r.start as usize..r.end as usize]);
        Ok(())
    }
}

#[test]
fn bad_sectors_are_recorded_and_restored_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("source.img");
    builder::fixtures::create_disk(&path, &builder::fixtures::demo_mbr()).unwrap();
    let data = std::fs::read(&path).unwrap();
    let disk = detect(&data);
    // One bad sector in ext4 metadata (block 1 of partition 1 at 1 MiB), a run of three in the first logical
    // partition's boot area, and one in the gap before partition 1 (bootloader area).
    let p1 = 1 << 20;
    let p5 = disk
        .partitions
        .iter()
        .find(|p| p.number == 5)
        .unwrap()
        .start_bytes;
    let bad = vec![4096..4608, p1 + 4096..p1 + 4608, p5 + 512..p5 + 2048];
    let (report, image) = capture_flaky(&data, &disk, &bad);
    let mut got: Vec<Range<u64>> = report.unreadable.iter().map(|(_, r)| r.clone()).collect();
    got.sort_by_key(|r| r.start);
    assert_eq!(got, bad, "unreadable ranges at sector precision");

    let reader = SharedReader::open(Arc::new(image)).unwrap();
    let mut in_index = Vec::new();
    for s in &reader.index().streams {
        for e in s
            .extents
            .iter()
            .filter(|e| e.kind == ExtentKind::Unreadable)
        {
            in_index.push(s.info.disk_offset + e.offset..s.info.disk_offset + e.offset + e.len);
        }
    }
    in_index.sort_by_key(|r| r.start);
    assert_eq!(
        in_index, bad,
        "the image records exactly the unreadable ranges"
    );
    assert!(
        reader.verify(|_| {}).is_ok(),
        "an image with holes still verifies"
    );

    let target_path = dir.path().join("target.img");
    std::fs::write(&target_path, vec![0xAAu8; data.len()]).unwrap();
    let target = Target::open(&target_path).unwrap();
    let layout = super::layout_of(reader.index());
    let mut target_disk = disk.clone();
    target_disk.path = target_path.display().to_string();
    target_disk.serial = None;
    let rplan = plan_restore_disk(&layout, &target_disk, &Environment::default(), true).unwrap();
    let ropts = RestoreOptions {
        threads: 2,
        precheck: true,
        verify: true,
        unused: UnusedPolicy::Zero,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let rreport = restore(&reader, &layout, &rplan, &target, &ropts, Some(tx)).unwrap();
    // The read-back covers every byte the image put on the target: data, runs of zeros, the zeros written
    // for unreadable ranges and the tables (not the free space zeroed on request).
    let events: Vec<_> = rx.try_iter().collect();
    let read_back = events
        .iter()
        .filter(|p| p.phase == "read-back")
        .map(|p| p.bytes_total)
        .next_back();
    let written: u64 = reader
        .index()
        .streams
        .iter()
        .flat_map(|s| &s.extents)
        .filter(|e| e.kind != ExtentKind::Unused)
        .map(|e| e.len)
        .sum();
    assert_eq!(read_back, Some(written));
    assert!(rreport.verified);
    // Progress names each partition as its first chunk is written.
    let mut current: Vec<&str> = events
        .iter()
        .filter(|p| p.phase == "restore" && !p.current.is_empty())
        .map(|p| p.current.as_str())
        .collect();
    current.dedup();
    for label in [
        "partition 1 (ext4)",
        "partition 5 (vfat)",
        "partition 6 (exfat)",
    ] {
        assert!(current.contains(&label), "{label} not in {current:?}");
    }
    let mut zeroed: Vec<Range<u64>> = rreport.unreadable.iter().map(|(_, r)| r.clone()).collect();
    zeroed.sort_by_key(|r| r.start);
    assert_eq!(zeroed, bad, "restore reports the holes");
    let restored = std::fs::read(&target_path).unwrap();
    for r in &bad {
        assert!(
            restored[r.start as usize..r.end as usize]
                .iter()
                .all(|&b| b == 0),
            "hole {r:?} is zeros"
        );
    }
    // Outside the holes the partition table and the first partition's used blocks are the source's.
    assert_eq!(restored[..4096], data[..4096]);
    assert_eq!(restored[510..512], [0x55, 0xAA]);
}

pub(super) fn detect(data: &[u8]) -> crate::detect::Disk {
    detect_image(
        Cursor::new(data),
        data.len() as u64,
        "flaky.img",
        &DetectOptions::default(),
    )
}

/// Captures `data` (detected as `disk`) through a medium that fails to read the `bad` ranges.
fn capture_flaky(
    data: &[u8],
    disk: &crate::detect::Disk,
    bad: &[Range<u64>],
) -> (super::capture::CaptureReport, Vec<u8>) {
    let source = Source::from_medium(
        Box::new(Flaky {
            data: data.to_vec(),
            bad: bad.to_vec(),
        }),
        Path::new("flaky.img"),
        data.len() as u64,
        512,
    );
    let plan = plan_capture(disk, &CaptureRequest::default(), None).unwrap();
    let opts = CaptureOptions {
        level: 3,
        threads: 2,
        chunk_size: crate::image::DEFAULT_CHUNK_SIZE,
        dedup: true,
        creation: super::creation_info(),
        cancel: Arc::new(AtomicBool::new(false)),
    };
    capture(&source, disk, &plan, Vec::new(), &opts, None).unwrap()
}

/// Free space between used ranges close together is read with them; a bad sector there is nobody's
/// business: not recorded, and the used ranges around it are stored as without it.
#[test]
fn a_bad_sector_in_free_space_read_with_used_ranges_is_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fs.img");
    builder::fixtures::fragmented_ext4(&path, &dir.path().join("content")).unwrap();
    let data = std::fs::read(&path).unwrap();
    let disk = detect(&data);
    let extents = |image: Vec<u8>| {
        let reader = SharedReader::open(Arc::new(image)).unwrap();
        assert!(reader.verify(|_| {}).is_ok());
        reader.index().streams[0].extents.clone()
    };
    // A short stretch of free space between two used ranges, from a clean capture.
    let clean = extents(capture_flaky(&data, &disk, &[]).1);
    let gap = clean
        .windows(3)
        .find(|w| {
            w[1].kind == ExtentKind::Unused
                && w[0].kind != ExtentKind::Unused
                && w[2].kind != ExtentKind::Unused
        })
        .map(|w| w[1].offset + w[1].len / 2 / 512 * 512)
        .expect("free space between used blocks");
    let bad: Vec<_> = std::iter::once(gap..gap + 512).collect();
    let (report, image) = capture_flaky(&data, &disk, &bad);
    assert!(report.unreadable.is_empty(), "{:?}", report.unreadable);
    let kinds = |e: &[crate::image::Extent]| -> Vec<(u64, u64, bool)> {
        e.iter()
            .map(|e| (e.offset, e.len, e.kind == ExtentKind::Unused))
            .collect()
    };
    assert_eq!(
        kinds(&extents(image)),
        kinds(&clean),
        "the same ranges as without the bad sector"
    );
}
