//! What a repository hands the reader: snapshot files and snapshot names (`REPO::NAME@TIME`). None may
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rescue::repo::{parse_snapshot, SnapshotRef};

fuzz_target!(|data: &[u8]| {
    let _ = parse_snapshot(std::path::Path::new("fuzz.snap"), data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(Ok(r)) = SnapshotRef::parse(text) {
            let _ = SnapshotRef::parse(&r.to_string());
        }
    }
});
