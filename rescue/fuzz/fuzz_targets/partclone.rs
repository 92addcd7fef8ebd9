//! Partclone image streams (docs/CLONEZILLA.md): whatever the bytes, reading one to its end is refused or
//! read, never a panic, and allocates no more than the limits allow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rescue::partclone::{Limits, Stream};

fuzz_target!(|data: &[u8]| {
    // The first 2 bytes choose the run size and how the header is made; the rest is the stream.
    if data.len() < 2 {
        return;
    }
    let run_bytes = usize::from(data[0]) * 64 + 1;
    let mut stream = data[2..].to_vec();
    if data[1] & 1 == 1 && stream.len() >= 110 {
        // A signature and a right header CRC, so that the fields, the bitmap and the blocks are read.
        stream[..15].copy_from_slice(b"partclone-image");
        stream[30..34].copy_from_slice(if data[1] & 2 == 2 { b"0001" } else { b"0002" });
        let crc = !crc32(&stream[..106]);
        stream[106..110].copy_from_slice(&crc.to_le_bytes());
    }
    let limits = Limits {
        run_bytes,
        max_bitmap_bytes: 1 << 20,
        ..Limits::default()
    };
    if let Ok(mut s) = Stream::with_limits(&stream[..], "fuzz.img", limits) {
        while let Ok(Some(_)) = s.next_run() {}
    }
});

/// zlib's CRC-32 (partclone stores its inversion).
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}
