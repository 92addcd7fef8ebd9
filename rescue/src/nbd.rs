//! A disk served over the Network Block Device protocol (docs/NBD.md), so that other programs — QEMU,
//! `qemu-img`, libnbd's `nbdcopy` and `nbdinfo`, the kernel's `nbd-client` — read it as a block device:
//! an image, a virtual machine's disk or a raw disk, given as a [`ReadAt`].
//!
//! One export, fixed newstyle negotiation only (the NBD project's `doc/proto.md`), simple and structured
//! replies, the `base:allocation` metadata context. The disk is never written: the export is read-only,
//! or, with an overlay file, writable with every write kept in that file ([`overlay`]). A [`Server`]
//! listens on a Unix socket or on a TCP port of the loopback interface (another address only when
//! asked, with a warning), one thread per client.
//!
//! - [`proto`]: the protocol's numbers and message layouts.
//! - [`handshake`]: option haggling, up to the transmission phase.
//! - [`transmission`]: the requests of the transmission phase.
//! - [`overlay`]: copy-on-write to an overlay file.
//! - [`server`]: sockets, clients, shutdown.
//!
//! Everything a client sends is parsed without panicking and with bounded allocations (the property
//! tests and the `nbd` fuzz target feed it arbitrary bytes); a client that breaks the protocol is
//! disconnected, one that asks for something out of bounds is answered with an error.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use crate::image::ReadAt;

mod handshake;
mod overlay;
mod proto;
mod server;
mod transmission;

pub use server::{parse_tcp, Config, Listen, Server, DEFAULT_PORT};

/// The largest read or write one request may carry: 32 MiB, the size every client keeps to by default.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// The block sizes advertised (`NBD_INFO_BLOCK_SIZE`): any byte may be addressed, 4 KiB is efficient.
pub const MIN_BLOCK: u32 = 1;
pub const PREFERRED_BLOCK: u32 = 4096;

/// Where the messages of a server go (connections, read errors); one line each, without a newline.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// Messages on stderr, prefixed `nbd: `.
pub fn stderr_log() -> Log {
    Arc::new(|line: &str| eprintln!("nbd: {line}"))
}

/// A stretch of the disk as `base:allocation` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    /// Not stored (a hole in a sparse file, an unallocated cluster of a virtual disk).
    pub hole: bool,
    /// Reads as zeros.
    pub zero: bool,
}

/// Which parts of a disk hold data, for `NBD_CMD_BLOCK_STATUS`: the extents from `offset` on, in
/// order, covering at least one byte (more than `len` is allowed, less too: the client asks again).
pub trait Allocation: Send + Sync {
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>>;
}

impl<F> Allocation for F
where
    F: Fn(u64, u64) -> io::Result<Vec<Extent>> + Send + Sync,
{
    fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self(offset, len)
    }
}

/// The allocation of a regular file from the file system (`SEEK_DATA`/`SEEK_HOLE`): holes read as
/// zeros. Where the file system cannot tell, everything is data.
pub fn file_allocation(file: Arc<File>) -> Arc<dyn Allocation> {
    Arc::new(move |offset: u64, len: u64| -> io::Result<Vec<Extent>> {
        use nix::unistd::{lseek, Whence};
        let at = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let data_extent = |len| Extent {
            len,
            hole: false,
            zero: false,
        };
        // The next data at or after `offset` (ENXIO: none before the end, all a hole).
        let data = match lseek(&*file, at, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => u64::MAX,
            Err(_) => return Ok(vec![data_extent(len)]),
        };
        if data > offset {
            return Ok(vec![Extent {
                len: (data - offset).min(len),
                hole: true,
                zero: true,
            }]);
        }
        let hole = match lseek(&*file, at, Whence::SeekHole) {
            Ok(h) => h as u64,
            Err(_) => return Ok(vec![data_extent(len)]),
        };
        Ok(vec![data_extent(
            hole.saturating_sub(offset).clamp(1, len.max(1)),
        )])
    })
}

/// What is served: one disk under one name.
pub struct Export {
    /// The export's name; clients may also ask for the default export, "".
    pub name: String,
    /// Shown by `nbdinfo` and in `NBD_OPT_LIST`'s answer.
    pub description: String,
    pub disk: Arc<dyn ReadAt>,
    /// Where the disk holds data; without it every byte is reported as data.
    pub allocation: Option<Arc<dyn Allocation>>,
}

/// An export ready for clients: its disk's size, its overlay if writable, and where messages go.
/// Shared by all the connections of a server.
pub struct Served {
    export: Export,
    size: u64,
    overlay: Option<overlay::Overlay>,
    log: Log,
}

impl Served {
    /// With `overlay`, the export is writable and its writes go to that new file (refused if it
    /// exists: see [`overlay`]).
    pub fn new(export: Export, overlay: Option<&Path>, log: Log) -> io::Result<Served> {
        let size = export.disk.size()?;
        let overlay = overlay
            .map(|p| overlay::Overlay::create(p, size))
            .transpose()?;
        Ok(Served {
            export,
            size,
            overlay,
            log,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn writable(&self) -> bool {
        self.overlay.is_some()
    }

    fn log(&self, line: &str) {
        (self.log)(line)
    }

    /// Whether a client's export name means this export.
    fn is_export(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.export.name.as_bytes()
    }

    /// Fill `buf` from `offset` of the export (the overlay's blocks where written, the disk's elsewhere).
    fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.overlay {
            Some(o) => o.read(self.export.disk.as_ref(), buf, offset),
            None => self.export.disk.read_exact_at(buf, offset),
        }
    }

    /// The `base:allocation` extents from `offset`: at least one, each of nonzero length, together no
    /// longer than `len` (> 0), with the `NBD_STATE_*` flags.
    fn extents(&self, offset: u64, len: u64) -> Vec<(u64, u32)> {
        let base = |at: u64, n: u64| self.base_extents(at, n);
        let mut out = match &self.overlay {
            Some(o) => o.extents(offset, len, base),
            None => base(offset, len),
        };
        proto::merge_extents(&mut out);
        out
    }

    /// The disk's own allocation over `len` bytes at `offset` (clipped to them; data where unknown).
    fn base_extents(&self, offset: u64, len: u64) -> Vec<(u64, u32)> {
        let Some(map) = &self.export.allocation else {
            return vec![(len, 0)];
        };
        let mut out = Vec::new();
        let mut done = 0u64;
        // The map may answer a part at a time: ask again where its answer ended.
        while done < len && out.len() < proto::MAX_EXTENTS {
            let at = offset + done;
            let extents = match map.extents(at, len - done) {
                Ok(e) => e,
                Err(e) => {
                    self.log(&format!(
                        "the allocation map failed at byte {at}: {e}; reporting data there"
                    ));
                    Vec::new()
                }
            };
            let before = done;
            for e in extents {
                let n = e.len.min(len - done);
                if n == 0 {
                    break;
                }
                let flags = if e.hole { proto::STATE_HOLE } else { 0 }
                    | if e.zero { proto::STATE_ZERO } else { 0 };
                out.push((n, flags));
                done += n;
            }
            if done == before {
                // Nothing more from the map: the rest is reported as data.
                out.push((len - done, 0));
                break;
            }
        }
        out
    }
}

/// Serve one client over `reader`/`writer` (a socket, or bytes in memory): the handshake, then its
/// requests until it disconnects or breaks the protocol. `who` names the client in messages.
pub fn serve_connection<R: Read, W: Write>(
    served: &Served,
    reader: &mut R,
    writer: &mut W,
    who: &str,
) -> io::Result<()> {
    match handshake::negotiate(served, reader, writer)? {
        handshake::Outcome::Transmission(n) => transmission::serve(served, &n, reader, writer, who),
        handshake::Outcome::Ended => Ok(()),
    }
}

#[cfg(test)]
mod bench_tests;
#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;
