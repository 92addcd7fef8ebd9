//! The streaming decoders: none, gzip (flate2's inflate, our reading of the gzip member), zstd (libzstd),
//! xz and lzma (liblzma), bzip2. Each reads its members (gzip members, zstd frames, xz and bzip2 streams)
//! one after another and, between two, looks at what follows: nothing (the end), the start of another
//! member, or trailing garbage.

use flate2::{Decompress, FlushDecompress, Status};
use zstd::zstd_safe::{self, DCtx, InBuffer, OutBuffer};

use super::detect::{skippable, XZ_MAGIC, ZSTD_MAGIC};
use super::joined::{At, Joined};
use super::{Decode, Error, Kind};

/// What liblzma may allocate for one xz or lzma stream: `xz -9` needs 65 MiB.
const XZ_MEMLIMIT: u64 = 128 << 20;

/// The partclone stream as it is.
pub(super) struct Plain;

impl Decode for Plain {
    fn read(&mut self, src: &mut Joined, out: &mut [u8]) -> Result<usize, Error> {
        let b = src.fill()?;
        let n = b.len().min(out.len());
        out[..n].copy_from_slice(&b[..n]);
        src.consume(n);
        Ok(n)
    }
}

/// After a decoder call that consumed and produced nothing while the member goes on: more input is
/// needed than the buffer holds, or the data ends there.
fn stalled(src: &mut Joined, member: At, what: &str) -> Result<(), Error> {
    if src.more()? {
        Ok(())
    } else {
        Err(src.truncated(member, what))
    }
}

/// gzip members (RFC 1952), one after another.
pub(super) struct Gzip {
    inflate: Decompress,
    crc: crc32fast::Hasher,
    size: u32,
    /// Where the member being read begins.
    member: Option<At>,
}

impl Gzip {
    pub(super) fn new() -> Gzip {
        Gzip {
            inflate: Decompress::new(false),
            crc: crc32fast::Hasher::new(),
            size: 0,
            member: None,
        }
    }

    /// Reads a member's header, up to its deflate data.
    fn header(&mut self, src: &mut Joined, at: At) -> Result<(), Error> {
        let short = |src: &Joined| src.truncated(at, "a gzip header");
        let mut h = [0u8; 10];
        if src.read_up_to(&mut h)? < h.len() {
            return Err(short(src));
        }
        if h[2] != 8 {
            return Err(src.error(
                at,
                Kind::Damaged,
                format!(
                    "gzip member with compression method {} (only 8, deflate, exists)",
                    h[2]
                ),
            ));
        }
        let flags = h[3];
        if flags & 0xE0 != 0 {
            return Err(src.error(
                at,
                Kind::Damaged,
                format!("gzip header with reserved flags set ({flags:#04x})"),
            ));
        }
        if flags & 0x04 != 0 {
            let mut x = [0u8; 2];
            if src.read_up_to(&mut x)? < 2 {
                return Err(short(src));
            }
            let len = u64::from(u16::from_le_bytes(x));
            if src.skip(len)? < len {
                return Err(short(src));
            }
        }
        for flag in [0x08, 0x10] {
            if flags & flag != 0 {
                // A file name or a comment, ended by a zero byte.
                loop {
                    let b = src.fill()?;
                    if b.is_empty() {
                        return Err(short(src));
                    }
                    match b.iter().position(|&c| c == 0) {
                        Some(i) => {
                            src.consume(i + 1);
                            break;
                        }
                        None => {
                            let n = b.len();
                            src.consume(n);
                        }
                    }
                }
            }
        }
        if flags & 0x02 != 0 && src.skip(2)? < 2 {
            return Err(short(src));
        }
        Ok(())
    }

    /// Reads and checks a member's trailer: the CRC32 and the size (mod 2^32) of its data.
    fn trailer(&mut self, src: &mut Joined, member: At) -> Result<(), Error> {
        let at = src.here();
        let mut t = [0u8; 8];
        if src.read_up_to(&mut t)? < t.len() {
            return Err(src.truncated(member, "a gzip member"));
        }
        let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let size = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        let ours = std::mem::take(&mut self.crc).finalize();
        if crc != ours || size != self.size {
            return Err(src.error(
                at,
                Kind::Damaged,
                format!(
                    "damaged gzip data: the CRC32 and size of the member begun at {} say {crc:08x} \
                     and {size} bytes (mod 2^32), its data is {ours:08x} and {} bytes: the damage is \
                     between the two",
                    src.place(member),
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

impl Decode for Gzip {
    fn read(&mut self, src: &mut Joined, out: &mut [u8]) -> Result<usize, Error> {
        loop {
            let Some(member) = self.member else {
                let Some(at) = src.next_member(2, |h| h == [0x1F, 0x8B], "gzip")? else {
                    return Ok(0);
                };
                self.header(src, at)?;
                self.inflate.reset(false);
                self.crc = crc32fast::Hasher::new();
                self.size = 0;
                self.member = Some(at);
                continue;
            };
            let input = src.fill()?;
            if input.is_empty() {
                return Err(src.truncated(member, "a gzip member"));
            }
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self.inflate.decompress(input, out, FlushDecompress::None);
            let used = (self.inflate.total_in() - in0) as usize;
            let made = (self.inflate.total_out() - out0) as usize;
            let status = status.map_err(|e| {
                let m = src.place(member);
                src.damaged(
                    used,
                    format!("damaged gzip data (in the member begun at {m}): {e}"),
                )
            })?;
            src.consume(used);
            self.crc.update(&out[..made]);
            self.size = self.size.wrapping_add(made as u32);
            if status == Status::StreamEnd {
                self.trailer(src, member)?;
                self.member = None;
            } else if used == 0 && made == 0 {
                stalled(src, member, "a gzip member")?;
            }
            if made > 0 {
                return Ok(made);
            }
        }
    }
}

/// zstd frames and skippable frames, one after another (libzstd reads both).
pub(super) struct Zstd {
    dctx: DCtx<'static>,
    frame: Option<At>,
}

impl Zstd {
    pub(super) fn new(src: &Joined) -> Result<Zstd, Error> {
        let dctx = DCtx::try_create()
            .ok_or_else(|| src.error(src.here(), Kind::Io, "cannot allocate a zstd decoder"))?;
        // libzstd's default window limit (128 MiB, like zstd -d without --long) stays: it bounds the
        // memory a frame can ask for.
        Ok(Zstd { dctx, frame: None })
    }
}

impl Decode for Zstd {
    fn read(&mut self, src: &mut Joined, out: &mut [u8]) -> Result<usize, Error> {
        loop {
            let Some(frame) = self.frame else {
                let frame = |h: &[u8]| {
                    let m = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                    m == ZSTD_MAGIC || skippable(m)
                };
                self.frame = src.next_member(4, frame, "zstd")?;
                if self.frame.is_none() {
                    return Ok(0);
                }
                continue;
            };
            let input = src.fill()?;
            if input.is_empty() {
                return Err(src.truncated(frame, "a zstd frame"));
            }
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(&mut *out);
            let r = self.dctx.decompress_stream(&mut outb, &mut inb);
            let (used, made) = (inb.pos(), outb.pos());
            match r {
                Err(code) => {
                    let name = zstd_safe::get_error_name(code);
                    return Err(if name.contains("memory") {
                        src.error(
                            frame,
                            Kind::Unsupported,
                            format!(
                                "zstd frame with a window over 128 MiB ({name}; zstd --long \
                                 writes them), which this program does not read"
                            ),
                        )
                    } else {
                        let f = src.place(frame);
                        let sum = if name.contains("checksum") {
                            ": the damage is between the two"
                        } else {
                            ""
                        };
                        src.damaged(
                            used,
                            format!("damaged zstd data (in the frame begun at {f}): {name}{sum}"),
                        )
                    });
                }
                Ok(0) => self.frame = None,
                Ok(_) => {
                    if used == 0 && made == 0 {
                        stalled(src, frame, "a zstd frame")?;
                    }
                }
            }
            src.consume(used);
            if made > 0 {
                return Ok(made);
            }
        }
    }
}

/// xz streams (with the stream padding the format allows between them), or one legacy lzma stream.
pub(super) struct Xz {
    lzma: bool,
    stream: Option<(liblzma::stream::Stream, At)>,
    /// The lzma stream has ended (it cannot be followed by another).
    ended: bool,
}

impl Xz {
    pub(super) fn new(lzma: bool) -> Xz {
        Xz {
            lzma,
            stream: None,
            ended: false,
        }
    }

    fn what(&self) -> &'static str {
        if self.lzma {
            "lzma"
        } else {
            "xz"
        }
    }

    /// Begins the next stream: false at the end of the data.
    fn next_stream(&mut self, src: &mut Joined) -> Result<bool, Error> {
        if self.lzma {
            if self.ended {
                if src.peek(1)?.is_empty() {
                    return Ok(false);
                }
                return Err(src.garbage("lzma"));
            }
        } else {
            // Stream padding: zero bytes, four at a time.
            loop {
                let head = src.peek(4)?;
                if head.len() == 4 && head == [0; 4] {
                    src.consume(4);
                } else {
                    break;
                }
            }
            if src
                .next_member(XZ_MAGIC.len(), |h| h == XZ_MAGIC, "xz")?
                .is_none()
            {
                return Ok(false);
            }
        }
        let at = src.here();
        let stream = if self.lzma {
            liblzma::stream::Stream::new_lzma_decoder(XZ_MEMLIMIT)
        } else {
            liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
        }
        .map_err(|e| {
            src.error(
                at,
                Kind::Io,
                format!("cannot start an {} decoder: {e}", self.what()),
            )
        })?;
        self.stream = Some((stream, at));
        Ok(true)
    }
}

impl Decode for Xz {
    fn read(&mut self, src: &mut Joined, out: &mut [u8]) -> Result<usize, Error> {
        use liblzma::stream::{Action, Error as E, Status as S};
        loop {
            if self.stream.is_none() && !self.next_stream(src)? {
                return Ok(0);
            }
            let what = self.what();
            let Some((stream, at)) = self.stream.as_mut() else {
                continue;
            };
            let at = *at;
            let input = src.fill()?;
            if input.is_empty() {
                return Err(src.truncated(at, &format!("an {what} stream")));
            }
            let (in0, out0) = (stream.total_in(), stream.total_out());
            let r = stream.process(input, out, Action::Run);
            let used = (stream.total_in() - in0) as usize;
            let made = (stream.total_out() - out0) as usize;
            match r {
                Ok(S::StreamEnd) => {
                    self.stream = None;
                    self.ended = true;
                }
                Ok(S::Ok | S::GetCheck) if used > 0 || made > 0 => {}
                Ok(S::Ok | S::GetCheck | S::MemNeeded) => {
                    stalled(src, at, &format!("an {what} stream"))?;
                }
                Err(E::MemLimit) => {
                    return Err(src.error(
                        at,
                        Kind::Unsupported,
                        format!(
                            "{what} stream that needs more than {} MiB of memory to decompress, \
                             which this program does not read",
                            XZ_MEMLIMIT >> 20
                        ),
                    ));
                }
                Err(E::Options) => {
                    return Err(src.error(
                        at,
                        Kind::Unsupported,
                        format!("{what} stream with options (filters) liblzma does not read"),
                    ));
                }
                Err(e) => {
                    let s = src.place(at);
                    return Err(src.damaged(
                        used,
                        format!("damaged {what} data (in the stream begun at {s}): {e}"),
                    ));
                }
            }
            src.consume(used);
            if made > 0 {
                return Ok(made);
            }
        }
    }
}

/// bzip2 streams, one after another (pbzip2 writes one per block).
pub(super) struct Bzip2 {
    stream: Option<(bzip2::Decompress, At)>,
}

impl Bzip2 {
    pub(super) fn new() -> Bzip2 {
        Bzip2 { stream: None }
    }
}

impl Decode for Bzip2 {
    fn read(&mut self, src: &mut Joined, out: &mut [u8]) -> Result<usize, Error> {
        loop {
            let Some((stream, at)) = self.stream.as_mut() else {
                let stream = |h: &[u8]| h.starts_with(b"BZh") && (b'1'..=b'9').contains(&h[3]);
                let Some(at) = src.next_member(4, stream, "bzip2")? else {
                    return Ok(0);
                };
                self.stream = Some((bzip2::Decompress::new(false), at));
                continue;
            };
            let at = *at;
            let input = src.fill()?;
            if input.is_empty() {
                return Err(src.truncated(at, "a bzip2 stream"));
            }
            let (in0, out0) = (stream.total_in(), stream.total_out());
            let r = stream.decompress(input, out);
            let used = (stream.total_in() - in0) as usize;
            let made = (stream.total_out() - out0) as usize;
            match r {
                Ok(bzip2::Status::StreamEnd) => self.stream = None,
                Ok(_) if used > 0 || made > 0 => {}
                Ok(_) => stalled(src, at, "a bzip2 stream")?,
                Err(e) => {
                    let s = src.place(at);
                    // bzip2 checks a block (up to 900 kB compressed) once it has all of it.
                    return Err(src.damaged(
                        used,
                        format!(
                            "damaged bzip2 data (in the stream begun at {s}): {e}: found at the end \
                             of a block, the damage is between the two (at most 900 kB before here)"
                        ),
                    ));
                }
            }
            src.consume(used);
            if made > 0 {
                return Ok(made);
            }
        }
    }
}
