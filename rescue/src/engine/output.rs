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
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::sys::direct::Direct;
use crate::sys::{self, AlignedBuf};

/// Bytes per writeback step when writing through the page cache.
pub const WINDOW: u64 = 32 << 20;

/// Bytes per write.
const BLOCK: usize = 8 << 20;

/// Full blocks handed to the writing thread and not yet written: while the disk writes them, the image
/// writer fills the next one instead of waiting (it is the capture's only writer, and the workers wait for
/// the steps it has written).
const IN_FLIGHT: usize = 2;

pub struct OutputFile {
    file: File,
    /// The block being filled.
    buf: AlignedBuf,
    /// File offset of `buf[0]`: everything before it is written or handed to the writing thread.
    pos: u64,
    io: Background,
}

impl OutputFile {
    /// Create `path` (or take over one left by an interrupted run, emptied) and hold an exclusive lock on
    /// it until the returned file is closed, so that two captures never write one file. Fails with
    /// [`io::ErrorKind::WouldBlock`] while another process holds it.
    pub fn create(path: &Path) -> io::Result<OutputFile> {
        let file = create_locked(path)?;
        OutputFile::new(file, sys::open_direct_write(path))
    }

    fn new(file: File, direct: Option<File>) -> io::Result<OutputFile> {
        let io = Background::start(file.try_clone()?, direct)?;
        Ok(OutputFile {
            file,
            buf: empty_block(),
            pos: 0,
            io,
        })
    }

    /// Everything written, the file returned (for fsync, which is the caller's).
    pub fn finish(mut self) -> io::Result<File> {
        self.flush()?;
        self.io.stop()?;
        Ok(self.file)
    }

    /// Hand the full buffer to the writing thread and start a new one.
    fn write_block(&mut self) -> io::Result<()> {
        let next = self.io.spare()?;
        let full = std::mem::replace(&mut self.buf, next);
        let len = full.len() as u64;
        self.io.send(self.pos, full)?;
        self.pos += len;
        Ok(())
    }
}

/// Opens or creates `path` without truncating it, takes an exclusive lock (`flock`, released when the file
/// is closed) and only then empties it. A file renamed or removed between the open and the lock (by the
/// process that held it) is not the one at `path` any more: open again.
fn create_locked(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..8 {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another process is writing it",
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let (held, named) = (file.metadata()?, std::fs::metadata(path));
        if named.is_ok_and(|n| n.dev() == held.dev() && n.ino() == held.ino()) {
            file.set_len(0)?;
            return Ok(file);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "it keeps being replaced by another process",
    ))
}

fn empty_block() -> AlignedBuf {
    let mut buf = AlignedBuf::with_capacity(BLOCK);
    buf.set_len(0);
    buf
}

impl Write for OutputFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full block goes out when more data comes (or at `flush`), so an error reaches a call that
        // wrote nothing; after one, every call fails.
        if let Some(e) = self.io.error() {
            return Err(e);
        }
        if self.buf.len() == self.buf.capacity() {
            self.write_block()?;
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = room.min(data.len());
        let at = self.buf.len();
        self.buf.set_len(at + n);
        self.buf[at..].copy_from_slice(&data[..n]);
        Ok(n)
    }

    /// Waits for the blocks in flight, then writes the partial block through the page cache, keeping it:
    /// a later full block at the same offset simply overwrites it.
    fn flush(&mut self) -> io::Result<()> {
        self.io.drain()?;
        if !self.buf.is_empty() {
            self.file
                .write_all_at(&self.buf, self.pos)
                .map_err(|e| placed(e, self.pos, self.buf.len()))?;
        }
        self.file.flush()
    }
}

/// The thread that writes full blocks, and what it has given back.
struct Background {
    jobs: Option<SyncSender<(u64, AlignedBuf)>>,
    /// Each written block's buffer, for reuse, or the error that stopped the thread.
    done: Receiver<io::Result<AlignedBuf>>,
    thread: Option<JoinHandle<()>>,
    in_flight: usize,
    /// The first error, repeated by every later call (an `io::Error` is not `Clone`).
    failed: Option<(io::ErrorKind, String)>,
}

impl Background {
    fn start(file: File, direct: Option<File>) -> io::Result<Background> {
        let (jobs, rx) = sync_channel::<(u64, AlignedBuf)>(IN_FLIGHT);
        let (tx, done) = sync_channel(IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("image-write".into())
            .spawn(move || write_blocks(file, direct, rx, tx))?;
        Ok(Background {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            in_flight: 0,
            failed: None,
        })
    }

    fn error(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(kind, msg)| io::Error::new(*kind, msg.clone()))
    }

    /// A buffer for the next block: a written one once enough are in flight, else a new one.
    fn spare(&mut self) -> io::Result<AlignedBuf> {
        if self.in_flight < IN_FLIGHT {
            if let Some(e) = self.error() {
                return Err(e);
            }
            return Ok(empty_block());
        }
        self.wait_one()
    }

    fn send(&mut self, pos: u64, block: AlignedBuf) -> io::Result<()> {
        let sent = self.jobs.as_ref().map(|j| j.send((pos, block)).is_ok());
        if sent == Some(true) {
            self.in_flight += 1;
            return Ok(());
        }
        // The thread has stopped: it said why in its last message.
        self.drain()?;
        Err(self.error().unwrap_or_else(stopped))
    }

    /// Waits for the oldest block in flight and takes its buffer back.
    fn wait_one(&mut self) -> io::Result<AlignedBuf> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        let r = self.done.recv().unwrap_or_else(|_| Err(stopped()));
        self.in_flight = self.in_flight.saturating_sub(1);
        match r {
            Ok(mut buf) => {
                buf.set_len(0);
                Ok(buf)
            }
            Err(e) => {
                self.failed = Some((e.kind(), e.to_string()));
                Err(e)
            }
        }
    }

    /// Waits until every block handed over is written.
    fn drain(&mut self) -> io::Result<()> {
        while self.in_flight > 0 {
            self.wait_one()?;
        }
        match self.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn stop(&mut self) -> io::Result<()> {
        let drained = self.drain();
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drained
    }
}

impl Drop for Background {
    /// An image abandoned on an error: the blocks in flight are written (the caller removes the file),
    /// and no write outlives the `OutputFile`.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn stopped() -> io::Error {
    io::Error::other("the image writing thread stopped")
}

/// The writing thread: each block at its offset, directly while the file system takes direct writes, then
/// through the page cache with early writeback. Stops at the first error, after reporting it.
fn write_blocks(
    file: File,
    direct: Option<File>,
    jobs: Receiver<(u64, AlignedBuf)>,
    done: SyncSender<io::Result<AlignedBuf>>,
) {
    let direct = Direct::new(direct);
    let mut writeback = Writeback::default();
    for (pos, block) in jobs {
        // Blocks are page-aligned and whole multiples of 8 MiB from offset 0: always fit for direct I/O.
        let r = direct.io(
            true,
            |d| d.write_all_at(&block, pos),
            || {
                file.write_all_at(&block, pos)?;
                writeback.written(&file, pos + block.len() as u64)
            },
        );
        let r = r.map_err(|e| placed(e, pos, block.len()));
        let failed = r.is_err();
        if done.send(r.map(|()| block)).is_err() || failed {
            return;
        }
    }
}

/// A failed write of `len` bytes at `pos`, saying where (and, for a full drive, how much fit).
fn placed(e: io::Error, pos: u64, len: usize) -> io::Error {
    let end = pos + len as u64;
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "the drive holding it is full: it ran out of space writing bytes {pos}..{end} of the \
                 image ({} had been written)",
                crate::units::human_size(pos)
            ),
        );
    }
    io::Error::new(e.kind(), format!("at bytes {pos}..{end} of the file: {e}"))
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
        assert!(out.io.thread.is_some());
        write_and_check(out, &path);
        let again = OutputFile::create(&path).unwrap();
        write_and_check(again, &path);
    }

    #[test]
    fn buffered_writes_keep_every_byte_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let file = File::create(&path).unwrap();
        write_and_check(OutputFile::new(file, None).unwrap(), &path);
    }

    /// The writing thread's failure reaches the image writer: at a later write, at the latest at `finish`,
    /// and every call after it repeats it.
    #[test]
    fn a_failed_block_write_is_reported_and_repeated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, b"").unwrap();
        // Opened read-only: every write fails with EBADF.
        let file = File::open(&path).unwrap();
        let mut out = OutputFile::new(file, None).unwrap();
        let block = vec![7u8; BLOCK];
        let mut first = None;
        for _ in 0..=IN_FLIGHT + 1 {
            if let Err(e) = out.write_all(&block) {
                first = Some(e);
                break;
            }
        }
        let first = first.expect("a write error by the time the blocks in flight are waited for");
        assert!(
            first.to_string().contains("at bytes 0..")
                && first.to_string().contains("Bad file descriptor"),
            "{first}"
        );
        let again = out.write_all(&block).unwrap_err();
        assert!(again.to_string().contains(&first.to_string()), "{again}");
        assert!(out.finish().is_err());
    }

    /// A second writer of the same file is refused while the first holds it; once the first is closed, a
    /// file it left behind is taken over and emptied.
    #[test]
    fn one_writer_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.partial");
        let mut first = OutputFile::create(&path).unwrap();
        first.write_all(b"first").unwrap();
        let second = OutputFile::create(&path).err().unwrap();
        assert_eq!(second.kind(), io::ErrorKind::WouldBlock, "{second}");
        let file = first.finish().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        drop(file);
        let again = OutputFile::create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        drop(again);
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
