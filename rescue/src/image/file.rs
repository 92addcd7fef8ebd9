//! An image file opened for reading chunks: beside the ordinary descriptor, one with `O_DIRECT`, so that
//! a restore or a verify reads each chunk's frame with one aligned request and no copy through the page
//! cache (the copy was 15% of a restore's CPU time, and a rescue machine's memory is better left to the
//! target's writes). Where direct I/O is refused (FUSE, tmpfs) it reads through the page cache.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::reader::ReadAt;
use crate::sys::{self, direct::Direct, AlignedBuf};

/// Direct reads start and end on this boundary (the largest logical block size of a disk or file system).
const ALIGN: u64 = 4096;

pub struct ImageFile {
    file: File,
    direct: Direct,
}

impl ImageFile {
    pub fn open(path: &Path) -> io::Result<ImageFile> {
        let file = File::open(path)?;
        if file.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "it is a folder, not an image file; name the image file in it",
            ));
        }
        Ok(ImageFile {
            file,
            direct: Direct::new(sys::open_direct(path)),
        })
    }
}

impl ReadAt for ImageFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        self.file.size()
    }

    fn read_span(&self, buf: &mut AlignedBuf, offset: u64, len: usize) -> io::Result<usize> {
        let start = offset - offset % ALIGN;
        let end = (offset + len as u64).div_ceil(ALIGN) * ALIGN;
        let skip = (offset - start) as usize;
        buf.fit((end - start) as usize);
        let direct = |f: &File| {
            // The span may run past the end of the file (the last frame before the index, rounded up);
            // a direct read stops there, which is fine once the requested bytes are in.
            let mut got = 0;
            while got < skip + len {
                match f.read_at(&mut buf[got..], start + got as u64)? {
                    0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    n => got += n,
                }
            }
            Ok(true)
        };
        // Direct::io falls back (for good) when the file system refuses direct I/O; so do we, here.
        if self.direct.io(true, direct, || Ok(false))? {
            return Ok(skip);
        }
        buf.fit(len);
        FileExt::read_exact_at(&self.file, buf, offset)?;
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_the_bytes_asked_for_anywhere_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        // Not a multiple of the alignment, so the last spans run past the end.
        let bytes: Vec<u8> = (0..3 * ALIGN as usize + 1000)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = ImageFile::open(&path).unwrap();
        let mut buf = AlignedBuf::with_capacity(0);
        let len = bytes.len();
        for (offset, n) in [
            (0, 64),
            (100, 5000),
            (4096, 4096),
            (4000, 200),
            (len - 10, 10),
            (0, len),
        ] {
            let at = file.read_span(&mut buf, offset as u64, n).unwrap();
            assert_eq!(
                buf[at..at + n],
                bytes[offset..offset + n],
                "{n} bytes at {offset}"
            );
        }
        let err = file.read_span(&mut buf, len as u64 - 10, 11).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
