//! Clonezilla's stored images (docs/CLONEZILLA.md): whatever the bytes, behind whichever compression's
//! magic and split into pieces of any size, opening them and reading the stream to its end is refused or
//! read, never a panic, with buffers no larger than the formats' own bounds.
#![no_main]

use std::io::Read;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

/// The first bytes of each format the reader recognises (and of a partclone stream), so that the
/// fuzzer starts inside every decoder.
const MAGICS: &[&[u8]] = &[
    b"",
    b"partclone-image",
    &[0x1F, 0x8B, 8, 0],
    &[0x28, 0xB5, 0x2F, 0xFD],
    &[0x50, 0x2A, 0x4D, 0x18],
    b"\xFD7zXZ\0",
    &[
        0x5D, 0, 0, 0x80, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ],
    b"BZh9",
    &[0x04, 0x22, 0x4D, 0x18, 0x64, 0x40],
    b"\x89LZO\0\r\n\x1a\n\x10\x40\x20\xa0\x09\x40\x01\x05",
];

fuzz_target!(|data: &[u8]| {
    // Byte 0 chooses the magic put first, bytes 1-2 the size of the pieces; the rest is the data.
    if data.len() < 3 {
        return;
    }
    let mut image = MAGICS[usize::from(data[0]) % MAGICS.len()].to_vec();
    image.extend_from_slice(&data[3..]);
    // At most 676 pieces: split's names aa … zz.
    let piece = usize::from(u16::from_le_bytes([data[1], data[2]]))
        .max(image.len().div_ceil(676))
        .max(1);
    let dir = std::env::temp_dir().join(format!("fuzz-stored-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let mut first: Option<PathBuf> = None;
    for (i, chunk) in image.chunks(piece).enumerate() {
        let name = [b'a' + (i / 26) as u8, b'a' + (i % 26) as u8];
        let path = dir.join(format!("img.{}", String::from_utf8_lossy(&name)));
        std::fs::write(&path, chunk).expect("a piece written");
        first.get_or_insert(path);
    }
    if let Some(first) = first {
        if let Ok(o) = rescue::partclone::stored::open(&first) {
            let mut buf = vec![0u8; 64 << 10];
            let mut r = o.reader.take(64 << 20);
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
