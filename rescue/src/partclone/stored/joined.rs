//! The pieces read as one stream, each opened when reached, through one buffer of [`BUF`] bytes; every
//! byte's piece and offset in it is known, so that errors can name them.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use super::{Error, Kind};

/// Bytes read from a piece at a time.
pub(super) const BUF: usize = 1 << 20;

/// A place in the pieces: piece `piece` (its index), byte `offset` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct At {
    pub piece: usize,
    pub offset: u64,
}

/// Where the buffer's bytes from index `at` on come from: piece `piece`, from byte `offset` of it.
#[derive(Debug, Clone, Copy)]
struct Seg {
    at: usize,
    piece: usize,
    offset: u64,
}

pub(super) struct Joined {
    pieces: Vec<PathBuf>,
    /// The piece being read, its index, and how many of its bytes have been read.
    file: Option<File>,
    reading: usize,
    read: u64,
    /// How many pieces have been opened.
    opened: usize,
    buf: Vec<u8>,
    /// The bytes not yet consumed are `buf[pos..end]`.
    pos: usize,
    end: usize,
    /// Where `buf[..end]` comes from, in order; the first at index 0.
    segs: Vec<Seg>,
}

impl Joined {
    pub(super) fn new(pieces: Vec<PathBuf>) -> Joined {
        Joined {
            pieces,
            file: None,
            reading: 0,
            read: 0,
            opened: 0,
            buf: vec![0; BUF],
            pos: 0,
            end: 0,
            segs: Vec::new(),
        }
    }

    /// The place of the next byte not consumed.
    pub(super) fn here(&self) -> At {
        self.at(self.pos)
    }

    /// The place of the byte `ahead` bytes past the next one not consumed.
    pub(super) fn ahead(&self, ahead: usize) -> At {
        self.at(self.pos + ahead)
    }

    fn at(&self, i: usize) -> At {
        match self.segs.iter().rev().find(|s| s.at <= i) {
            Some(s) => At {
                piece: s.piece,
                offset: s.offset + (i - s.at) as u64,
            },
            None => At {
                piece: 0,
                offset: 0,
            },
        }
    }

    /// An error of `kind` at place `at`.
    pub(super) fn error(&self, at: At, kind: Kind, what: impl Into<String>) -> Error {
        Error::new(kind, &self.pieces[at.piece], Some(at.offset), what)
    }

    /// The data ends in compressed data of `what` (begun at `from`): an error naming the last piece.
    pub(super) fn truncated(&self, from: At, what: &str) -> Error {
        let end = self.here();
        let name = self.name(end.piece);
        let begun = self.place(from);
        self.error(
            end,
            Kind::Truncated,
            format!(
                "ends before its compressed data does (in {what} begun at {begun}): a piece after \
                 {name} may be missing, or it was cut short"
            ),
        )
    }

    /// Bytes that do not begin more `what` data follow its end, here.
    pub(super) fn garbage(&mut self, what: &str) -> Error {
        let hex = match self.peek(16) {
            Ok(b) => b
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => return e,
        };
        self.error(
            self.here(),
            Kind::TrailingGarbage,
            format!("trailing garbage after the end of the {what} data (bytes {hex}…)"),
        )
    }

    /// Where the next member of `what` data begins, if its first `len` bytes pass `starts`: `None`
    /// at the end of the data, trailing garbage when they do not.
    pub(super) fn next_member(
        &mut self,
        len: usize,
        starts: impl Fn(&[u8]) -> bool,
        what: &str,
    ) -> Result<Option<At>, Error> {
        let head = self.peek(len)?;
        if head.is_empty() {
            return Ok(None);
        }
        if head.len() < len || !starts(head) {
            return Err(self.garbage(what));
        }
        Ok(Some(self.here()))
    }

    /// Damaged data found `ahead` bytes past the next byte not consumed.
    pub(super) fn damaged(&self, ahead: usize, what: impl Into<String>) -> Error {
        self.error(self.ahead(ahead), Kind::Damaged, what)
    }

    /// `at` in words: "byte N of PIECE" (the piece's file name).
    pub(super) fn place(&self, at: At) -> String {
        format!("byte {} of {}", at.offset, self.name(at.piece))
    }

    fn name(&self, piece: usize) -> String {
        self.pieces[piece]
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    /// The bytes not yet consumed, reading more when there are none: empty only at the end of the last
    /// piece.
    pub(super) fn fill(&mut self) -> Result<&[u8], Error> {
        if self.pos == self.end {
            self.more()?;
        }
        Ok(&self.buf[self.pos..self.end])
    }

    /// At least `n` (at most [`BUF`]) bytes not yet consumed, or all that are left.
    pub(super) fn peek(&mut self, n: usize) -> Result<&[u8], Error> {
        let n = n.min(BUF);
        while self.end - self.pos < n {
            if !self.more()? {
                break;
            }
        }
        let end = self.end.min(self.pos + n);
        Ok(&self.buf[self.pos..end])
    }

    pub(super) fn consume(&mut self, n: usize) {
        debug_assert!(self.pos + n <= self.end);
        self.pos = (self.pos + n).min(self.end);
    }

    /// Reads `out.len()` bytes, or fewer at the end of the last piece: how many.
    pub(super) fn read_up_to(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        let mut done = 0;
        while done < out.len() {
            let b = self.fill()?;
            if b.is_empty() {
                break;
            }
            let n = b.len().min(out.len() - done);
            out[done..done + n].copy_from_slice(&b[..n]);
            self.consume(n);
            done += n;
        }
        Ok(done)
    }

    /// Skips `n` bytes, or fewer at the end of the last piece: how many.
    pub(super) fn skip(&mut self, n: u64) -> Result<u64, Error> {
        let mut done = 0;
        while done < n {
            let b = self.fill()?;
            if b.is_empty() {
                break;
            }
            let k = (b.len() as u64).min(n - done) as usize;
            self.consume(k);
            done += k as u64;
        }
        Ok(done)
    }

    /// Reads more bytes after those in the buffer, moving the unconsumed ones to its start first when
    /// it is full: false at the end of the last piece.
    pub(super) fn more(&mut self) -> Result<bool, Error> {
        if self.end == self.buf.len() || self.pos == self.end {
            self.compact();
        }
        if self.end == self.buf.len() {
            return Ok(true);
        }
        loop {
            let Some(file) = self.file.as_mut() else {
                if self.opened == self.pieces.len() {
                    return Ok(false);
                }
                let i = self.opened;
                let path = &self.pieces[i];
                let file =
                    File::open(path).map_err(|e| Error::io(path, None, "cannot open it", e))?;
                self.file = Some(file);
                self.reading = i;
                self.read = 0;
                self.opened += 1;
                self.segs.push(Seg {
                    at: self.end,
                    piece: i,
                    offset: 0,
                });
                continue;
            };
            match file.read(&mut self.buf[self.end..]) {
                Ok(0) => self.file = None,
                Ok(n) => {
                    self.end += n;
                    self.read += n as u64;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let path = &self.pieces[self.reading];
                    return Err(Error::io(path, Some(self.read), "cannot read it", e));
                }
            }
        }
    }

    /// Moves the unconsumed bytes to the start of the buffer, keeping where they come from.
    fn compact(&mut self) {
        let pos = self.pos;
        if pos == 0 {
            return;
        }
        self.buf.copy_within(pos..self.end, 0);
        self.end -= pos;
        self.pos = 0;
        // The last segment starting at or before `pos` holds it; those before it go.
        let keep = self.segs.iter().rposition(|s| s.at <= pos).unwrap_or(0);
        self.segs.drain(..keep);
        for s in &mut self.segs {
            if s.at <= pos {
                s.offset += (pos - s.at) as u64;
                s.at = 0;
            } else {
                s.at -= pos;
            }
        }
    }
}
