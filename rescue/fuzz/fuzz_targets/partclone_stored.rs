//! Clonezilla's stored images (docs/CLONEZILLA.md): whatever the bytes, behind whichever compression's
//! magic and split into pieces of any size, opening them and reading the stream to its end is refused or
//! read, never a panic, with buffers no larger than the formats' own bounds.
#![no_main]

use std::io::Read;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use rescue::partclone::stored::STARTS;

fuzz_target!(|data: &[u8]| {
    // Byte 0 chooses the magic put first, bytes 1-2 the size of the pieces; the rest is the data.
    if data.len() < 3 {
        return;
    }
    let mut image = STARTS[usize::from(data[0]) % STARTS.len()].to_vec();
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
