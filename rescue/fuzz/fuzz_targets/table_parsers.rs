//! Partition table, filesystem and used-block-map parsers on arbitrary bytes: detection of a "disk"
//! made of the input (GPT, MBR with EBR chains, superblocks), every used-block map, and GPT relocation.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use rescue::detect::{detect_image, DetectOptions, FsKind};

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let _ = detect_image(Cursor::new(data), len, "fuzz", &DetectOptions::default());
    for fs in [FsKind::Ext4, FsKind::Vfat, FsKind::Exfat, FsKind::Ntfs, FsKind::Swap] {
        let _ = rescue::fs::used_map(&mut Cursor::new(data), len, fs);
    }
    if data.len() > 1024 {
        let _ = rescue::plan::tables::relocate_gpt(&data[..512], &data[512..], 512, 64 << 20);
    }
});
