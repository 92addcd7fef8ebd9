//! Arbitrary bytes as an uncompressed index: decoding and validation must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rescue::image::Index;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = Index::decode(data) {
        let _ = index.validate();
    }
});
