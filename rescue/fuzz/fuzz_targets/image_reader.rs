//! Arbitrary bytes as an image file: opening and verifying must never panic, hang or allocate
//! beyond the documented limits, whatever the input.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use rescue::image::ImageReader;

fuzz_target!(|data: &[u8]| {
    let _ = ImageReader::open(Cursor::new(data));
    if let Ok(mut reader) = ImageReader::open_for_verify(Cursor::new(data)) {
        let _ = reader.verify(|_| {});
    }
});
