//! How an image file is written: front to back, in large blocks, without leaving all of it to the closing
//! fsync.
//!
//! Where the file system takes direct I/O, full blocks go straight to the disk (O_DIRECT): no copy into the
//! page cache and no dirty memory, which a rescue system with 512 MiB of RAM cannot spare. Elsewhere (FUSE,
//! tmpfs) the file is written through the page cache and, every [`WINDOW`] bytes, the kernel is asked to
//! start writing the window just filled while the window before it is waited for: the disk works while the
//! image is being made, dirty memory stays at about two windows, and the final fsync finds little left. An
//! I/O error the kernel reports on the way surfaces as an error of a later `write`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::sys::{self, AlignedBuf};

/// Bytes per writeback step when writing through the page cache.
pub const WINDOW: u64 = 32 << 20;

/// Bytes per write.
const BLOCK: usize = 8 << 20;

pub struct OutputFile {
    file: File,
    /// The same file opened with O_DIRECT, while direct writes work.
    direct: Option<File>,
    buf: AlignedBuf,
    /// File offset of `buf[0]`: everything before it is written.
    pos: u64,
    writeback: Writeback,
}

impl OutputFile {
    /// Create `path`, or empty it if it exists.
    pub fn create(path: &Path) -> io::Result<OutputFile> {
        let file = File::create(path)?;
        Ok(OutputFile::new(file, sys::open_direct_write(path)))
    }

    fn new(file: File, direct: Option<File>) -> OutputFile {
        let mut buf = AlignedBuf::with_capacity(BLOCK);
        buf.set_len(0);
        OutputFile {
            file,
            direct,
            buf,
            pos: 0,
            writeback: Writeback::default(),
        }
    }

    /// Everything written, the file returned (for fsync, which is the caller's).
    pub fn finish(mut self) -> io::Result<File> {
        self.flush()?;
        Ok(self.file)
    }

    /// Write the full buffer at `pos` and start a new one.
    fn write_block(&mut self) -> io::Result<()> {
        if let Some(direct) = &self.direct {
            match direct.write_all_at(&self.buf, self.pos) {
                Ok(()) => return self.advance(),
                // This file system does not take direct writes after all: through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(&self.buf, self.pos)?;
        self.writeback
            .written(&self.file, self.pos + self.buf.len() as u64)?;
        self.advance()
    }

    fn advance(&mut self) -> io::Result<()> {
        self.pos += self.buf.len() as u64;
        self.buf.set_len(0);
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.buf.capacity() - self.buf.len();
        let n = room.min(data.len());
        let at = self.buf.len();
        self.buf.set_len(at + n);
        self.buf[at..].copy_from_slice(&data[..n]);
        if self.buf.len() == self.buf.capacity() {
            self.write_block()?;
        }
        Ok(n)
    }

    /// Writes the partial block through the page cache, keeping it: a later full block at the same offset
    /// simply overwrites it.
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all_at(&self.buf, self.pos)?;
        }
        self.file.flush()
    }
}

/// Early writeback of a file written front to back through the page cache.
#[derive(Default)]
struct Writeback {
    /// Writeback was started for `[waited, started)`; everything before `waited` is on the disk.
    started: u64,
    waited: u64,
    /// Set when the file system does not support `sync_file_range`.
    unsupported: bool,
}

impl Writeback {
    /// The file is now written up to `end`.
    fn written(&mut self, file: &File, end: u64) -> io::Result<()> {
        if self.unsupported || end - self.started < WINDOW {
            return Ok(());
        }
        let fd = file.as_fd();
        let r = sys::start_writeback(fd, self.started, end - self.started).and_then(|()| {
            if self.started > self.waited {
                sys::flush_range(fd, self.waited, self.started - self.waited)?;
                self.waited = self.started;
            }
            Ok(())
        });
        self.started = end;
        match r {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EIO | libc::ENOSPC)) => {
                self.unsupported = true;
                Ok(())
            }
            r => r,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Writes `pieces` of odd sizes (so blocks and pieces never line up) and checks the file.
    fn write_and_check(mut out: OutputFile, path: &Path) {
        let mut want = Vec::new();
        let mut i = 0u32;
        while want.len() < 3 * BLOCK + 12_345 {
            let piece: Vec<u8> = (0..100_003u32).map(|k| (k ^ i) as u8).collect();
            out.write_all(&piece).unwrap();
            want.extend_from_slice(&piece);
            i += 1;
            if i == 7 {
                // A flush in the middle must not disturb what follows.
                out.flush().unwrap();
            }
        }
        let file = out.finish().unwrap();
        file.sync_all().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), want);
    }

    #[test]
    fn direct_writes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let out = OutputFile::create(&path).unwrap();
        write_and_check(out, &path);
        let again = OutputFile::create(&path).unwrap();
        write_and_check(again, &path);
    }

    #[test]
    fn buffered_writes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let file = File::create(&path).unwrap();
        write_and_check(OutputFile::new(file, None), &path);
    }

    #[test]
    fn writeback_waits_for_earlier_windows() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        file.set_len(4 * WINDOW).unwrap();
        let mut w = Writeback::default();
        w.written(&file, WINDOW / 2).unwrap();
        assert_eq!(w.started, 0, "less than a window: nothing yet");
        w.written(&file, WINDOW).unwrap();
        assert_eq!((w.waited, w.started), (0, WINDOW));
        w.written(&file, 2 * WINDOW).unwrap();
        assert_eq!((w.waited, w.started), (WINDOW, 2 * WINDOW));
        assert!(!w.unsupported);
    }
}
