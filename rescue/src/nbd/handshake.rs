//! The handshake: fixed newstyle negotiation only, then options until the client chooses the export
//! (`NBD_OPT_GO`, or the old `NBD_OPT_EXPORT_NAME`) or leaves. Oldstyle clients and clients that do not
//! speak fixed newstyle are disconnected (the greeting already tells an oldstyle client it is not its
//! protocol). Every option this server does not know is answered `NBD_REP_ERR_UNSUP` and skipped.

use std::io::{self, Read, Write};

use super::proto::*;
use super::{Served, MAX_PAYLOAD, MIN_BLOCK, PREFERRED_BLOCK};

/// What the client and the server agreed on for the transmission phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Negotiated {
    /// Structured replies (`NBD_OPT_STRUCTURED_REPLY`).
    pub structured: bool,
    /// `base:allocation` was selected (`NBD_OPT_SET_META_CONTEXT`).
    pub allocation: bool,
    /// The transmission flags sent.
    pub flags: u16,
}

pub(crate) enum Outcome {
    Transmission(Negotiated),
    /// The client aborted (`NBD_OPT_ABORT`).
    Ended,
}

/// Run the handshake from the server's greeting on.
pub(crate) fn negotiate<R: Read, W: Write>(
    served: &Served,
    r: &mut R,
    w: &mut W,
) -> io::Result<Outcome> {
    let mut greeting = [0u8; 18];
    greeting[..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    greeting[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    greeting[16..].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&greeting)?;
    w.flush()?;
    let client = read_u32(r)?;
    if client & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(violation(format!(
            "the client sent unknown flags {client:#x} in its greeting"
        )));
    }
    if client & FLAG_C_FIXED_NEWSTYLE == 0 {
        return Err(violation(
            "the client does not speak the fixed newstyle handshake, the only one this server speaks",
        ));
    }
    let no_zeroes = client & FLAG_C_NO_ZEROES != 0;
    let mut state = State {
        structured: false,
        allocation: false,
    };
    loop {
        let magic = read_u64(r)?;
        if magic != IHAVEOPT {
            return Err(violation(format!(
                "an option began with {magic:#018x}, not IHAVEOPT"
            )));
        }
        let option = read_u32(r)?;
        let len = read_u32(r)?;
        let step = match option {
            OPT_EXPORT_NAME => export_name(served, &state, r, w, len, no_zeroes)?,
            OPT_ABORT => {
                skip(r, len.into())?;
                // The client may already have gone; the answer is a courtesy.
                let _ = option_reply(w, option, REP_ACK, &[]).and_then(|()| w.flush());
                Step::Done(Outcome::Ended)
            }
            OPT_STARTTLS => {
                skip(r, len.into())?;
                let msg =
                    b"this server does not speak TLS: it serves this machine's clients only (a \
                            Unix socket or the loopback interface) unless told otherwise";
                option_reply(w, option, REP_ERR_POLICY, msg)?;
                Step::Next
            }
            OPT_LIST
            | OPT_INFO
            | OPT_GO
            | OPT_STRUCTURED_REPLY
            | OPT_LIST_META_CONTEXT
            | OPT_SET_META_CONTEXT => {
                if len > MAX_OPTION_DATA {
                    skip(r, len.into())?;
                    let msg = format!("option data of {len} bytes is more than this server reads");
                    option_reply(w, option, REP_ERR_TOO_BIG, msg.as_bytes())?;
                    Step::Next
                } else {
                    let mut data = vec![0u8; len as usize];
                    r.read_exact(&mut data)?;
                    answer(served, &mut state, option, &data, w)?
                }
            }
            _ => {
                skip(r, len.into())?;
                let msg = format!("option {option} is not supported by this server");
                option_reply(w, option, REP_ERR_UNSUP, msg.as_bytes())?;
                Step::Next
            }
        };
        w.flush()?;
        if let Step::Done(outcome) = step {
            return Ok(outcome);
        }
    }
}

struct State {
    structured: bool,
    allocation: bool,
}

enum Step {
    Next,
    Done(Outcome),
}

impl State {
    fn negotiated(&self, served: &Served) -> Negotiated {
        let mut flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH;
        if served.writable() {
            flags |= FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
        } else {
            // Nothing is cached and nothing written: every connection sees the same disk.
            flags |= FLAG_READ_ONLY | FLAG_CAN_MULTI_CONN;
        }
        if self.structured {
            flags |= FLAG_SEND_DF;
        }
        Negotiated {
            structured: self.structured,
            allocation: self.structured && self.allocation,
            flags,
        }
    }
}

/// `NBD_OPT_EXPORT_NAME`: the export's size and flags and on to transmission, or, for another name, the
/// end of the connection (this option has no way to say no).
fn export_name<R: Read, W: Write>(
    served: &Served,
    state: &State,
    r: &mut R,
    w: &mut W,
    len: u32,
    no_zeroes: bool,
) -> io::Result<Step> {
    if len as usize > MAX_STRING {
        return Err(violation(format!(
            "the client asked for an export name of {len} bytes; names are at most {MAX_STRING}"
        )));
    }
    let mut name = vec![0u8; len as usize];
    r.read_exact(&mut name)?;
    if !served.is_export(&name) {
        return Err(violation(format!(
            "the client asked for export {:?}, which this server does not have (it has {:?})",
            String::from_utf8_lossy(&name),
            served.export.name
        )));
    }
    let n = state.negotiated(served);
    let mut m = Vec::with_capacity(134);
    m.extend_from_slice(&served.size.to_be_bytes());
    m.extend_from_slice(&n.flags.to_be_bytes());
    if !no_zeroes {
        m.extend_from_slice(&[0u8; 124]);
    }
    w.write_all(&m)?;
    Ok(Step::Done(Outcome::Transmission(n)))
}

/// The options whose data is in memory.
fn answer<W: Write>(
    served: &Served,
    state: &mut State,
    option: u32,
    data: &[u8],
    w: &mut W,
) -> io::Result<Step> {
    let invalid = |w: &mut W, msg: &str| -> io::Result<Step> {
        option_reply(w, option, REP_ERR_INVALID, msg.as_bytes())?;
        Ok(Step::Next)
    };
    match option {
        OPT_LIST => {
            if !data.is_empty() {
                return invalid(w, "NBD_OPT_LIST takes no data");
            }
            let name = served.export.name.as_bytes();
            let mut reply = Vec::with_capacity(4 + name.len());
            reply.extend_from_slice(&(name.len() as u32).to_be_bytes());
            reply.extend_from_slice(name);
            reply.extend_from_slice(served.export.description.as_bytes());
            option_reply(w, option, REP_SERVER, &reply)?;
            option_reply(w, option, REP_ACK, &[])?;
            Ok(Step::Next)
        }
        OPT_STRUCTURED_REPLY => {
            if !data.is_empty() {
                return invalid(w, "NBD_OPT_STRUCTURED_REPLY takes no data");
            }
            state.structured = true;
            option_reply(w, option, REP_ACK, &[])?;
            Ok(Step::Next)
        }
        OPT_INFO | OPT_GO => {
            let Some((name, requests)) = parse_info(data) else {
                return invalid(w, "the option's data does not match its length");
            };
            if !served.is_export(name) {
                return unknown(served, option, name, w);
            }
            let n = state.negotiated(served);
            let mut info = Vec::with_capacity(12);
            info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
            info.extend_from_slice(&served.size.to_be_bytes());
            info.extend_from_slice(&n.flags.to_be_bytes());
            option_reply(w, option, REP_INFO, &info)?;
            let asked = |what: u16| requests.chunks_exact(2).any(|c| c == what.to_be_bytes());
            if asked(INFO_NAME) {
                let text = [&INFO_NAME.to_be_bytes()[..], served.export.name.as_bytes()].concat();
                option_reply(w, option, REP_INFO, &text)?;
            }
            if asked(INFO_DESCRIPTION) && !served.export.description.is_empty() {
                let d = truncate(served.export.description.as_bytes(), MAX_STRING);
                let text = [&INFO_DESCRIPTION.to_be_bytes()[..], d].concat();
                option_reply(w, option, REP_INFO, &text)?;
            }
            // Sent whether asked or not, as the protocol allows: these are the default constraints.
            let mut sizes = Vec::with_capacity(14);
            sizes.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
            for v in [MIN_BLOCK, PREFERRED_BLOCK, MAX_PAYLOAD] {
                sizes.extend_from_slice(&v.to_be_bytes());
            }
            option_reply(w, option, REP_INFO, &sizes)?;
            option_reply(w, option, REP_ACK, &[])?;
            Ok(if option == OPT_GO {
                Step::Done(Outcome::Transmission(n))
            } else {
                Step::Next
            })
        }
        OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
            let set = option == OPT_SET_META_CONTEXT;
            if set {
                // A new selection replaces the old one, even when it fails.
                state.allocation = false;
                if !state.structured {
                    return invalid(w, "metadata contexts need structured replies first");
                }
            }
            let Some((name, queries)) = parse_meta(data) else {
                return invalid(w, "the option's data does not match its length");
            };
            if !served.is_export(name) {
                return unknown(served, option, name, w);
            }
            // Listing with no query lists everything; `base:` lists the namespace. Selecting needs the
            // full name; other names are ignored, as the protocol asks.
            let wanted = (queries.is_empty() && !set)
                || queries
                    .iter()
                    .any(|q| *q == BASE_ALLOCATION || (!set && *q == b"base:".as_slice()));
            if wanted {
                let mut reply = ALLOCATION_ID.to_be_bytes().to_vec();
                reply.extend_from_slice(BASE_ALLOCATION);
                option_reply(w, option, REP_META_CONTEXT, &reply)?;
                if set {
                    state.allocation = true;
                }
            }
            option_reply(w, option, REP_ACK, &[])?;
            Ok(Step::Next)
        }
        _ => invalid(w, "unexpected option"),
    }
}

fn unknown<W: Write>(served: &Served, option: u32, name: &[u8], w: &mut W) -> io::Result<Step> {
    let msg = format!(
        "there is no export {:?} here; this server has {:?} (or \"\", the default)",
        String::from_utf8_lossy(truncate(name, 256)),
        served.export.name
    );
    option_reply(w, option, REP_ERR_UNKNOWN, msg.as_bytes())?;
    Ok(Step::Next)
}

/// A length-prefixed string at `at` of `data`, and where the next field starts.
fn string_at(data: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = u32::from_be_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?) as usize;
    if len > MAX_STRING {
        return None;
    }
    let start = at + 4;
    let end = start.checked_add(len)?;
    Some((data.get(start..end)?, end))
}

/// `NBD_OPT_INFO`/`NBD_OPT_GO` data: the export name and the information requests (2 bytes each).
pub(crate) fn parse_info(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, at) = string_at(data, 0)?;
    let count = u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?) as usize;
    let requests = data.get(at + 2..)?;
    (requests.len() == count * 2).then_some((name, requests))
}

/// `NBD_OPT_LIST_META_CONTEXT`/`NBD_OPT_SET_META_CONTEXT` data: the export name and the queries.
pub(crate) fn parse_meta(data: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let (name, mut at) = string_at(data, 0)?;
    let count = u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?);
    at += 4;
    let mut queries = Vec::new();
    for _ in 0..count {
        // Each query takes at least 4 bytes of `data`, so the count is bounded by its length.
        let (q, next) = string_at(data, at)?;
        queries.push(q);
        at = next;
    }
    (at == data.len()).then_some((name, queries))
}
