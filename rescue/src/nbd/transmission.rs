//! The transmission phase: requests answered one after the other, in the order they came. A request
//! the server cannot do is answered with an error and the connection goes on; a message that is not a
//! request (a wrong magic) ends the connection, since nothing after it can be trusted.

use std::io::{self, Read, Write};

use super::handshake::Negotiated;
use super::proto::*;
use super::{Served, MAX_PAYLOAD};

/// A request's header.
#[derive(Debug, Clone, Copy)]
struct Request {
    flags: u16,
    kind: u16,
    cookie: u64,
    offset: u64,
    len: u32,
}

/// A request refused: the NBD error and what to tell the client.
type Refusal = (u32, String);

/// Reads retry in pieces of this size to find where a failing read fails.
const LOCATE_PIECE: u64 = 4096;
/// A connection keeps a buffer of at most this size between requests.
const KEPT_BUFFER: usize = 4 << 20;

/// Answer the client's requests until it disconnects (`Ok`) or breaks the protocol (`Err`).
pub(crate) fn serve<R: Read, W: Write>(
    served: &Served,
    n: &Negotiated,
    r: &mut R,
    w: &mut W,
    who: &str,
) -> io::Result<()> {
    let mut conn = Connection {
        served,
        n,
        who,
        buf: Vec::new(),
    };
    loop {
        let Some(req) = read_request(r)? else {
            return Ok(());
        };
        if req.kind == CMD_DISC {
            return Ok(());
        }
        conn.handle(req, r, w)?;
        w.flush()?;
        if conn.buf.capacity() > KEPT_BUFFER {
            conn.buf = Vec::new();
        }
    }
}

/// The next request's header; `None` when the client closed the connection between requests.
fn read_request(r: &mut impl Read) -> io::Result<Option<Request>> {
    let mut h = [0u8; 28];
    let mut got = 0;
    while got < h.len() {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client left in the middle of a request",
                ))
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let be64 = |at: usize| (u64::from(be32(at)) << 32) | u64::from(be32(at + 4));
    let magic = be32(0);
    if magic != REQUEST_MAGIC {
        return Err(violation(format!(
            "a request began with {magic:#010x}, not the request magic"
        )));
    }
    Ok(Some(Request {
        flags: be16(4),
        kind: be16(6),
        cookie: be64(8),
        offset: be64(16),
        len: be32(24),
    }))
}

struct Connection<'a> {
    served: &'a Served,
    n: &'a Negotiated,
    who: &'a str,
    buf: Vec<u8>,
}

impl Connection<'_> {
    fn handle<R: Read, W: Write>(&mut self, req: Request, r: &mut R, w: &mut W) -> io::Result<()> {
        if req.kind == CMD_READ {
            return self.read(req, w);
        }
        let done = match req.kind {
            CMD_WRITE => self.write(req, r)?,
            CMD_FLUSH => self.flags(req, CMD_FLAG_FUA).and_then(|()| self.flush()),
            CMD_TRIM => self
                .flags(req, CMD_FLAG_FUA)
                .and_then(|()| self.writable())
                .and_then(|()| self.within(req, EINVAL)),
            CMD_CACHE => self.within(req, EINVAL),
            CMD_WRITE_ZEROES => self.write_zeroes(req),
            CMD_BLOCK_STATUS => match self.block_status(req) {
                Ok(payload) => {
                    chunk_header(
                        w,
                        REPLY_FLAG_DONE,
                        REPLY_TYPE_BLOCK_STATUS,
                        req.cookie,
                        payload.len() as u32,
                    )?;
                    return w.write_all(&payload);
                }
                Err(e) => Err(e),
            },
            other => Err((EINVAL, format!("unknown command {other}"))),
        };
        match done {
            Ok(()) => simple_reply(w, 0, req.cookie),
            Err(refusal) => self.refuse(req, refusal, w),
        }
    }

    /// An error reply: a structured one, with its message, when the client takes them.
    fn refuse<W: Write>(&self, req: Request, (error, msg): Refusal, w: &mut W) -> io::Result<()> {
        if self.n.structured {
            error_chunk(w, req.cookie, error, &msg, None)
        } else {
            simple_reply(w, error, req.cookie)
        }
    }

    /// Refuse flags other than `allowed`.
    fn flags(&self, req: Request, allowed: u16) -> Result<(), Refusal> {
        match req.flags & !allowed {
            0 => Ok(()),
            extra => Err((
                EINVAL,
                format!("flags {extra:#x} are not valid on command {}", req.kind),
            )),
        }
    }

    /// Refuse a request that reaches past the end of the export, with `error`.
    fn within(&self, req: Request, error: u32) -> Result<(), Refusal> {
        let size = self.served.size;
        match req.offset.checked_add(req.len.into()) {
            Some(end) if end <= size => Ok(()),
            _ => Err((
                error,
                format!(
                    "bytes {}..+{} are past the end of the {size}-byte export",
                    req.offset, req.len
                ),
            )),
        }
    }

    fn writable(&self) -> Result<(), Refusal> {
        if self.served.writable() {
            Ok(())
        } else {
            Err((
                EPERM,
                "the export is read-only (serve it with an overlay to write)".into(),
            ))
        }
    }

    fn read<W: Write>(&mut self, req: Request, w: &mut W) -> io::Result<()> {
        let mut allowed = CMD_FLAG_FUA;
        if self.n.structured {
            allowed |= CMD_FLAG_DF;
        }
        let checked = self
            .flags(req, allowed)
            .and_then(|()| payload(req, "read"))
            .and_then(|()| self.within(req, EINVAL));
        if let Err(refusal) = checked {
            return self.refuse(req, refusal, w);
        }
        let len = req.len as usize;
        fit(&mut self.buf, len);
        let failed = match self.served.read(&mut self.buf[..len], req.offset) {
            Ok(()) => None,
            Err(e) => self.locate_failure(req, e),
        };
        match (failed, self.n.structured) {
            (None, false) => {
                simple_reply(w, 0, req.cookie)?;
                w.write_all(&self.buf[..len])
            }
            (None, true) if len == 0 => {
                chunk_header(w, REPLY_FLAG_DONE, REPLY_TYPE_NONE, req.cookie, 0)
            }
            (None, true) => {
                chunk_header(
                    w,
                    REPLY_FLAG_DONE,
                    REPLY_TYPE_OFFSET_DATA,
                    req.cookie,
                    8 + req.len,
                )?;
                w.write_all(&req.offset.to_be_bytes())?;
                w.write_all(&self.buf[..len])
            }
            (Some(_), false) => simple_reply(w, EIO, req.cookie),
            (Some((good, msg)), true) => {
                // The bytes before the failing piece are good: sent, then the error at its offset.
                if good > 0 && req.flags & CMD_FLAG_DF == 0 {
                    chunk_header(w, 0, REPLY_TYPE_OFFSET_DATA, req.cookie, 8 + good as u32)?;
                    w.write_all(&req.offset.to_be_bytes())?;
                    w.write_all(&self.buf[..good])?;
                }
                error_chunk(w, req.cookie, EIO, &msg, Some(req.offset + good as u64))
            }
        }
    }

    /// After a failed read: read again piece by piece to find the first piece that fails, log it, and
    /// return how many bytes before it read well and the message for the client. `None` when every
    /// piece read well this time (the buffer then holds them all).
    fn locate_failure(&mut self, req: Request, first: io::Error) -> Option<(usize, String)> {
        let end = req.offset + u64::from(req.len);
        let mut at = req.offset;
        while at < end {
            let next = ((at / LOCATE_PIECE + 1) * LOCATE_PIECE).min(end);
            let from = (at - req.offset) as usize;
            let to = (next - req.offset) as usize;
            if let Err(e) = self.served.read(&mut self.buf[from..to], at) {
                let msg = format!("read error at byte {at}: {e}");
                self.served.log(&format!(
                    "{}: {msg} (a read of {} bytes at {}; answered EIO)",
                    self.who, req.len, req.offset
                ));
                return Some(((at - req.offset) as usize, msg));
            }
            at = next;
        }
        self.served.log(&format!(
            "{}: a read of {} bytes at {} failed ({first}), then read well in pieces",
            self.who, req.len, req.offset
        ));
        None
    }

    /// `NBD_CMD_WRITE`: its payload is read in any case, so that the next request is found.
    fn write<R: Read>(&mut self, req: Request, r: &mut R) -> io::Result<Result<(), Refusal>> {
        if let Err(refusal) = payload(req, "write") {
            skip(r, req.len.into())?;
            return Ok(Err(refusal));
        }
        let len = req.len as usize;
        fit(&mut self.buf, len);
        r.read_exact(&mut self.buf[..len])?;
        let checked = self
            .flags(req, CMD_FLAG_FUA)
            .and_then(|()| self.writable())
            .and_then(|()| self.within(req, ENOSPC));
        if let Err(refusal) = checked {
            return Ok(Err(refusal));
        }
        let Some(overlay) = &self.served.overlay else {
            return Ok(Err((EPERM, "the export is read-only".into())));
        };
        let disk = self.served.export.disk.as_ref();
        let done = overlay
            .write(disk, &self.buf[..len], req.offset)
            .and_then(|()| fua(overlay, req));
        Ok(self.io_result(done, || {
            format!("a write of {} bytes at byte {}", req.len, req.offset)
        }))
    }

    fn write_zeroes(&self, req: Request) -> Result<(), Refusal> {
        self.flags(req, CMD_FLAG_FUA | CMD_FLAG_NO_HOLE)?;
        self.writable()?;
        self.within(req, ENOSPC)?;
        let Some(overlay) = &self.served.overlay else {
            return Err((EPERM, "the export is read-only".into()));
        };
        let disk = self.served.export.disk.as_ref();
        let done = overlay
            .write_zeroes(disk, req.offset, req.len.into())
            .and_then(|()| fua(overlay, req));
        self.io_result(done, || {
            format!("a write of {} zeros at byte {}", req.len, req.offset)
        })
    }

    fn flush(&self) -> Result<(), Refusal> {
        match &self.served.overlay {
            Some(o) => self.io_result(o.flush(), || "a flush".to_string()),
            None => Ok(()),
        }
    }

    /// An I/O failure of the overlay (or of the disk under a partly written block): logged, `EIO`.
    fn io_result(
        &self,
        done: io::Result<()>,
        what: impl FnOnce() -> String,
    ) -> Result<(), Refusal> {
        done.map_err(|e| {
            let msg = format!("{} failed: {e}", what());
            self.served
                .log(&format!("{}: {msg} (answered EIO)", self.who));
            (EIO, msg)
        })
    }

    /// `NBD_CMD_BLOCK_STATUS`: the payload of its one `base:allocation` chunk.
    fn block_status(&self, req: Request) -> Result<Vec<u8>, Refusal> {
        self.flags(req, CMD_FLAG_FUA | CMD_FLAG_REQ_ONE)?;
        if !self.n.allocation {
            return Err((
                EINVAL,
                "block status needs base:allocation selected first".into(),
            ));
        }
        if req.len == 0 {
            return Err((EINVAL, "block status of no bytes".into()));
        }
        self.within(req, EINVAL)?;
        let mut extents = self.served.extents(req.offset, req.len.into());
        let keep = if req.flags & CMD_FLAG_REQ_ONE != 0 {
            1
        } else {
            MAX_EXTENTS
        };
        extents.truncate(keep);
        let mut payload = Vec::with_capacity(4 + 8 * extents.len());
        payload.extend_from_slice(&ALLOCATION_ID.to_be_bytes());
        for (len, flags) in extents {
            // Each extent lies within the request, whose length is a u32.
            payload.extend_from_slice(&(len.min(u64::from(req.len)) as u32).to_be_bytes());
            payload.extend_from_slice(&flags.to_be_bytes());
        }
        Ok(payload)
    }
}

/// Refuse a read or write longer than [`MAX_PAYLOAD`].
fn payload(req: Request, what: &str) -> Result<(), Refusal> {
    if req.len <= MAX_PAYLOAD {
        return Ok(());
    }
    Err((
        EINVAL,
        format!(
            "a {what} of {} bytes is more than the {MAX_PAYLOAD} bytes this server takes at once",
            req.len
        ),
    ))
}

/// Make `buf` at least `len` bytes long. It only grows (up to [`KEPT_BUFFER`] between requests), so
/// that a request does not pay for zeroing its buffer.
fn fit(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0);
    }
}

/// With `NBD_CMD_FLAG_FUA`, the write is on stable storage before the reply.
fn fua(overlay: &super::overlay::Overlay, req: Request) -> io::Result<()> {
    if req.flags & CMD_FLAG_FUA != 0 {
        overlay.flush()?;
    }
    Ok(())
}
