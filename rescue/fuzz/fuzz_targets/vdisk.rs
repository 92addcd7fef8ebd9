//! Virtual disk files (docs/VDISK.md): whatever the bytes, opening one and reading its disk is refused or
//! read, never a panic, and allocates no more than the file's size allows.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rescue::image::ReadAt;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose what is read and how the file is made; the rest is the file.
    if data.len() < 8 {
        return;
    }
    let at = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
    let len = usize::from(u16::from_le_bytes([data[4], data[5]]));
    let mut file = data[8..].to_vec();
    if data[6] & 1 == 1 {
        // Under a valid DMG trailer: the bytes are its data fork and then its XML property list (split
        // at byte 7's share of them), so that the search goes into the list and the block tables.
        let split = file.len() * usize::from(data[7]) / 256;
        file.extend_from_slice(&koly(split as u64, (file.len() - split) as u64));
    }
    let file: Arc<dyn ReadAt> = Arc::new(file);
    if let Ok(Some(v)) = rescue::vdisk::open(file, std::path::Path::new("fuzz.img")) {
        let mut buf = vec![0u8; len];
        let _ = v.disk.read_exact_at(&mut buf, at);
        let _ = v.disk.read_exact_at(&mut buf, 0);
    }
});

/// A DMG trailer (`koly`, version 4): the data fork's `fork` bytes at 0, the property list's `list`
/// bytes after it, no sector count (the disk ends with its last chunk).
fn koly(fork: u64, list: u64) -> [u8; 512] {
    let mut k = [0u8; 512];
    k[..4].copy_from_slice(b"koly");
    k[4..8].copy_from_slice(&4u32.to_be_bytes());
    k[8..12].copy_from_slice(&512u32.to_be_bytes());
    k[32..40].copy_from_slice(&fork.to_be_bytes());
    k[216..224].copy_from_slice(&fork.to_be_bytes());
    k[224..232].copy_from_slice(&list.to_be_bytes());
    k
}
