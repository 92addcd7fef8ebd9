//! The NBD protocol's numbers and message layouts (`doc/proto.md` of the NBD project): everything is
//! big-endian on the wire.

use std::io::{self, Read, Write};

// Handshake.
pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
pub(crate) const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(crate) const FLAG_NO_ZEROES: u16 = 1 << 1;
pub(crate) const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub(crate) const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags.
pub(crate) const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub(crate) const FLAG_READ_ONLY: u16 = 1 << 1;
pub(crate) const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub(crate) const FLAG_SEND_FUA: u16 = 1 << 3;
pub(crate) const FLAG_SEND_TRIM: u16 = 1 << 5;
pub(crate) const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub(crate) const FLAG_SEND_DF: u16 = 1 << 7;
pub(crate) const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Options.
pub(crate) const OPT_EXPORT_NAME: u32 = 1;
pub(crate) const OPT_ABORT: u32 = 2;
pub(crate) const OPT_LIST: u32 = 3;
pub(crate) const OPT_STARTTLS: u32 = 5;
pub(crate) const OPT_INFO: u32 = 6;
pub(crate) const OPT_GO: u32 = 7;
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(crate) const OPT_LIST_META_CONTEXT: u32 = 9;
pub(crate) const OPT_SET_META_CONTEXT: u32 = 10;

// Option replies.
pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_SERVER: u32 = 2;
pub(crate) const REP_INFO: u32 = 3;
pub(crate) const REP_META_CONTEXT: u32 = 4;
pub(crate) const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub(crate) const REP_ERR_POLICY: u32 = 0x8000_0002;
pub(crate) const REP_ERR_INVALID: u32 = 0x8000_0003;
pub(crate) const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
pub(crate) const REP_ERR_TOO_BIG: u32 = 0x8000_0009;

// Information of NBD_OPT_INFO and NBD_OPT_GO.
pub(crate) const INFO_EXPORT: u16 = 0;
pub(crate) const INFO_NAME: u16 = 1;
pub(crate) const INFO_DESCRIPTION: u16 = 2;
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;

// Requests.
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_WRITE: u16 = 1;
pub(crate) const CMD_DISC: u16 = 2;
pub(crate) const CMD_FLUSH: u16 = 3;
pub(crate) const CMD_TRIM: u16 = 4;
pub(crate) const CMD_CACHE: u16 = 5;
pub(crate) const CMD_WRITE_ZEROES: u16 = 6;
pub(crate) const CMD_BLOCK_STATUS: u16 = 7;
pub(crate) const CMD_FLAG_FUA: u16 = 1 << 0;
pub(crate) const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub(crate) const CMD_FLAG_DF: u16 = 1 << 2;
pub(crate) const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

// Replies.
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub(crate) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub(crate) const REPLY_FLAG_DONE: u16 = 1 << 0;
pub(crate) const REPLY_TYPE_NONE: u16 = 0;
pub(crate) const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub(crate) const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub(crate) const REPLY_TYPE_ERROR: u16 = 0x8001;
pub(crate) const REPLY_TYPE_ERROR_OFFSET: u16 = 0x8002;

// `base:allocation`.
pub(crate) const BASE_ALLOCATION: &[u8] = b"base:allocation";
/// The id this server gives `base:allocation` when a client selects it.
pub(crate) const ALLOCATION_ID: u32 = 1;
pub(crate) const STATE_HOLE: u32 = 1 << 0;
pub(crate) const STATE_ZERO: u32 = 1 << 1;

// Errors of the transmission phase.
pub(crate) const EPERM: u32 = 1;
pub(crate) const EIO: u32 = 5;
pub(crate) const EINVAL: u32 = 22;
pub(crate) const ENOSPC: u32 = 28;

/// The longest string the protocol allows (export names, queries, messages).
pub(crate) const MAX_STRING: usize = 4096;
/// The most option data this server reads into memory; more is skipped and refused.
pub(crate) const MAX_OPTION_DATA: u32 = 64 << 10;
/// The most extents one block status reply carries (the protocol's advice).
pub(crate) const MAX_EXTENTS: usize = 1 << 20;

pub(crate) fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

pub(crate) fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Read and drop `len` bytes (data this server does not want, such as an unknown option's).
pub(crate) fn skip(r: &mut impl Read, len: u64) -> io::Result<()> {
    let got = io::copy(&mut r.take(len), &mut io::sink())?;
    if got < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// A protocol violation by the client: the connection ends with this message.
pub(crate) fn violation(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// One reply to option `option` during the handshake.
pub(crate) fn option_reply(
    w: &mut impl Write,
    option: u32,
    kind: u32,
    data: &[u8],
) -> io::Result<()> {
    let mut m = Vec::with_capacity(20 + data.len());
    m.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
    m.extend_from_slice(&option.to_be_bytes());
    m.extend_from_slice(&kind.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    w.write_all(&m)
}

/// A simple reply's header (a successful read's data follows it).
pub(crate) fn simple_reply(w: &mut impl Write, error: u32, cookie: u64) -> io::Result<()> {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    m[4..8].copy_from_slice(&error.to_be_bytes());
    m[8..].copy_from_slice(&cookie.to_be_bytes());
    w.write_all(&m)
}

/// A structured reply chunk's header; `len` bytes of payload follow.
pub(crate) fn chunk_header(
    w: &mut impl Write,
    flags: u16,
    kind: u16,
    cookie: u64,
    len: u32,
) -> io::Result<()> {
    let mut m = [0u8; 20];
    m[..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    m[4..6].copy_from_slice(&flags.to_be_bytes());
    m[6..8].copy_from_slice(&kind.to_be_bytes());
    m[8..16].copy_from_slice(&cookie.to_be_bytes());
    m[16..].copy_from_slice(&len.to_be_bytes());
    w.write_all(&m)
}

/// A structured error chunk, final: `NBD_REPLY_TYPE_ERROR_OFFSET` when `offset` is known, else
/// `NBD_REPLY_TYPE_ERROR`, with `message` for people.
pub(crate) fn error_chunk(
    w: &mut impl Write,
    cookie: u64,
    error: u32,
    message: &str,
    offset: Option<u64>,
) -> io::Result<()> {
    let message = truncate(message.as_bytes(), MAX_STRING);
    let mut payload = Vec::with_capacity(14 + message.len());
    payload.extend_from_slice(&error.to_be_bytes());
    payload.extend_from_slice(&(message.len() as u16).to_be_bytes());
    payload.extend_from_slice(message);
    let kind = match offset {
        Some(at) => {
            payload.extend_from_slice(&at.to_be_bytes());
            REPLY_TYPE_ERROR_OFFSET
        }
        None => REPLY_TYPE_ERROR,
    };
    chunk_header(w, REPLY_FLAG_DONE, kind, cookie, payload.len() as u32)?;
    w.write_all(&payload)
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &[u8], max: usize) -> &[u8] {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && (s[end] & 0xc0) == 0x80 {
        end -= 1;
    }
    &s[..end]
}

/// Join neighbouring extents of the same flags (the protocol asks servers to, where they can).
pub(crate) fn merge_extents(extents: &mut Vec<(u64, u32)>) {
    let mut out: Vec<(u64, u32)> = Vec::with_capacity(extents.len());
    for &(len, flags) in extents.iter() {
        match out.last_mut() {
            Some(last) if last.1 == flags => last.0 += len,
            _ => out.push((len, flags)),
        }
    }
    *extents = out;
}
