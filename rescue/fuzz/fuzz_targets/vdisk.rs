//! Virtual disk files (docs/VDISK.md): whatever the bytes, opening one and reading its disk is refused or
//! read, never a panic, and allocates no more than the file's size allows.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use rescue::image::ReadAt;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose what is read; the rest is the file.
    if data.len() < 8 {
        return;
    }
    let at = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
    let len = usize::from(u16::from_le_bytes([data[4], data[5]]));
    let file: Arc<dyn ReadAt> = Arc::new(data[8..].to_vec());
    if let Ok(Some(v)) = rescue::vdisk::open(file, std::path::Path::new("fuzz.img")) {
        let mut buf = vec![0u8; len];
        let _ = v.disk.read_exact_at(&mut buf, at);
        let _ = v.disk.read_exact_at(&mut buf, 0);
    }
});
