//! A partclone image as Clonezilla stores it (docs/CLONEZILLA.md): a partclone stream, compressed, split
//! into pieces `NAME.aa`, `NAME.ab`… by GNU `split`. [`pieces`] finds the pieces from the first one,
//! [`open`] joins them, recognises the compression by its magic bytes (never by the name) and gives the
//! partclone stream to read.
//!
//! Every error names the piece file and the byte offset in it: where damaged compressed data was found
//! (as near as the decoder tells), where the data ends early (the last piece: a piece after it may be
//! missing), where bytes follow the end of the compressed data. Decoding is bounded: buffers are sized by
//! the formats' own maxima (4 MiB lz4 blocks, 64 MiB lzop blocks, a 128 MiB zstd window, 128 MiB of
//! xz/lzma memory), never by a size the data claims beyond them.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

mod codecs;
mod joined;
mod lz4;
mod lzop;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tool_tests;

use joined::Joined;

/// The first bytes of each format this module reads (and none: nothing put first), for the property tests
/// and the fuzz target to start their inputs with, so that every decoder is reached.
#[doc(hidden)]
pub const STARTS: &[&[u8]] = &[
    b"",
    b"partclone-image",
    &[0x1F, 0x8B, 8, 0],
    &[0x28, 0xB5, 0x2F, 0xFD],
    &[0x50, 0x2A, 0x4D, 0x18],
    b"\xFD7zXZ\0",
    &[
        0x5D, 0, 0, 0x80, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ],
    b"BZh9",
    &[0x04, 0x22, 0x4D, 0x18, 0x64, 0x40],
    b"\x89LZO\0\r\n\x1a\n\x10\x40\x20\xa0\x09\x40\x01\x05",
];

/// How the stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The partclone stream as it is (`partclone-image` at its start).
    None,
    /// gzip, one or more members (gzip, pigz).
    Gzip,
    /// zstd frames, skippable frames among them (zstd, zstdmt, pzstd).
    Zstd,
    /// xz streams (xz, pixz, pxz).
    Xz,
    /// The legacy `.lzma` format (lzma, xz --format=lzma).
    Lzma,
    /// bzip2 streams (bzip2, pbzip2, lbzip2).
    Bzip2,
    /// lz4 frames (lz4, lz4mt).
    Lz4,
    /// The lzop file format (lzop).
    Lzop,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Bzip2 => "bzip2",
            Compression::Lz4 => "lz4",
            Compression::Lzop => "lzop",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An opened image: its compression, its pieces in order, and the partclone stream they hold. The
/// reader's errors are `io::Error`s that carry an [`Error`] (`get_ref()` and `downcast_ref`).
pub struct Opened {
    pub compression: Compression,
    pub pieces: Vec<PathBuf>,
    pub reader: Box<dyn Read + Send>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("compression", &self.compression)
            .field("pieces", &self.pieces)
            .finish_non_exhaustive()
    }
}

/// What went wrong, for callers that decide by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opening or reading a file failed (the source's error is attached).
    Io,
    /// A piece is missing between others (the error names it), or the name given is not the first.
    MissingPiece,
    /// A compression this program recognises and does not read (lzip, lrzip…), or a feature of a read
    /// one that it does not read (a zstd window over 128 MiB, lzop filters…).
    Unsupported,
    /// The first bytes are no compression and no partclone stream this program knows.
    Unknown,
    /// The compressed data is damaged: a checksum, a header or the coded data is wrong.
    Damaged,
    /// The data ends in the middle of compressed data (or there is none).
    Truncated,
    /// Bytes follow the end of the compressed data that do not begin more of it.
    TrailingGarbage,
}

/// An error about file `path` (a piece), at byte `offset` of it when known.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}{}: {what}{}",
    .path.display(),
    .offset.map_or(String::new(), |o| format!(", byte {o}")),
    .source.as_ref().map_or(String::new(), |e| format!(": {e}"))
)]
pub struct Error {
    pub kind: Kind,
    pub path: PathBuf,
    pub offset: Option<u64>,
    pub what: String,
    #[source]
    pub source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(
        kind: Kind,
        path: &Path,
        offset: Option<u64>,
        what: impl Into<String>,
    ) -> Error {
        Error {
            kind,
            path: path.to_owned(),
            offset,
            what: what.into(),
            source: None,
        }
    }

    /// The same error again (the source's message in `what`), for a reader asked again after it.
    fn again(&self) -> Error {
        let mut what = self.what.clone();
        if let Some(e) = &self.source {
            what = format!("{what}: {e}");
        }
        Error::new(self.kind, &self.path, self.offset, what)
    }

    pub(crate) fn io(path: &Path, offset: Option<u64>, what: &str, e: io::Error) -> Error {
        Error {
            source: Some(e),
            ..Error::new(Kind::Io, path, offset, what)
        }
    }
}

impl Kind {
    fn io_kind(self) -> io::ErrorKind {
        match self {
            Kind::Io => io::ErrorKind::Other,
            Kind::MissingPiece => io::ErrorKind::NotFound,
            Kind::Unsupported => io::ErrorKind::Unsupported,
            Kind::Unknown | Kind::Damaged | Kind::TrailingGarbage => io::ErrorKind::InvalidData,
            Kind::Truncated => io::ErrorKind::UnexpectedEof,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e.source {
            Some(s) if e.kind == Kind::Io => s.kind(),
            _ => e.kind.io_kind(),
        };
        io::Error::new(kind, e)
    }
}

/// The pieces of the image whose first piece is `first`, in order: `first` alone when its name does not
/// end in a piece suffix (`.aa`, `.aaa`…), else `.ab`, `.ac`… (GNU `split`'s names, with its widening
/// after `.yz` to `.zaaa` when no suffix length was given) until the next name is missing. A piece
/// named after a missing one is an error naming the missing piece; so is a `first` that is not the
/// first piece.
pub fn pieces(first: &Path) -> Result<Vec<PathBuf>, Error> {
    let meta = fs::metadata(first).map_err(|e| Error::io(first, None, "cannot open it", e))?;
    if meta.is_dir() {
        return Err(Error::new(
            Kind::Io,
            first,
            None,
            "is a directory, not an image file",
        ));
    }
    let Some((stem, suffix)) = split_suffix(first) else {
        return Ok(vec![first.to_owned()]);
    };
    let dir = first.parent().unwrap_or(Path::new(""));
    let n = suffix.len();
    if suffix.bytes().any(|b| b != b'a') {
        // Not a first piece: refused only when the first piece is there (else it is a bare file).
        let head = dir.join(format!("{stem}.{}", "a".repeat(n)));
        if head.is_file() {
            return Err(Error::new(
                Kind::MissingPiece,
                first,
                None,
                format!(
                    "is not the first piece of its image: start from {}",
                    head.display()
                ),
            ));
        }
        return Ok(vec![first.to_owned()]);
    }
    let mut found = vec![first.to_owned()];
    let mut last = suffix.to_owned();
    loop {
        let candidates = successors(&last, n);
        let next = candidates
            .iter()
            .find(|s| dir.join(format!("{stem}.{s}")).is_file());
        match next {
            Some(s) => {
                found.push(dir.join(format!("{stem}.{s}")));
                last = s.clone();
            }
            None => {
                // The end, unless a later name is there.
                if let Some(later) = later_piece(dir, stem, &last, n)? {
                    let missing = candidates.first().cloned().unwrap_or_default();
                    return Err(Error::new(
                        Kind::MissingPiece,
                        &dir.join(format!("{stem}.{missing}")),
                        None,
                        format!(
                            "is missing: {} is there, and {} after it",
                            found
                                .last()
                                .map_or(String::new(), |p| p.display().to_string()),
                            later.display()
                        ),
                    ));
                }
                return Ok(found);
            }
        }
    }
}

/// The name's stem and piece suffix: the text after its last `.`, when that is 2 to 8 lowercase
/// letters.
fn split_suffix(path: &Path) -> Option<(&str, &str)> {
    let name = path.file_name()?.to_str()?;
    let (stem, suffix) = name.rsplit_once('.')?;
    let ok = !stem.is_empty()
        && (2..=8).contains(&suffix.len())
        && suffix.bytes().all(|b| b.is_ascii_lowercase());
    ok.then_some((stem, suffix))
}

/// The names that may follow piece suffix `s` of an image whose first suffix had `n` letters: the
/// next of the same length, and GNU split's widened name when it would widen (`yz` → `zaaa`).
fn successors(s: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    // Each widening moves a `z` into the name and adds a letter to the suffix.
    let widened = s.len().saturating_sub(n) / 2;
    let body = &s.as_bytes()[widened..];
    let mut next = body.to_vec();
    let mut carry = true;
    for b in next.iter_mut().rev() {
        if *b == b'z' {
            *b = b'a';
        } else {
            *b += 1;
            carry = false;
            break;
        }
    }
    if widened == 0 && !carry {
        out.push(String::from_utf8_lossy(&next).into_owned());
    }
    if widened > 0 && !carry && next[0] != b'z' {
        out.push(format!(
            "{}{}",
            &s[..widened],
            String::from_utf8_lossy(&next)
        ));
    }
    if !carry && next[0] == b'z' {
        out.push(format!(
            "{}{}",
            "z".repeat(widened + 1),
            "a".repeat(body.len() + 1)
        ));
    }
    out
}

/// A piece named after suffix `last` in `dir`, if any (its path).
fn later_piece(dir: &Path, stem: &str, last: &str, n: usize) -> Result<Option<PathBuf>, Error> {
    let list = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let entries = fs::read_dir(list).map_err(|e| Error::io(list, None, "cannot list it", e))?;
    let key = |s: &str| (s.len(), s.to_owned());
    let mut best: Option<(usize, String)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(suffix) = name.strip_prefix(stem).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let widened = suffix.len().saturating_sub(n) / 2;
        let shaped = suffix.len() >= n
            && (suffix.len() - n).is_multiple_of(2)
            && suffix.bytes().all(|b| b.is_ascii_lowercase())
            && suffix.bytes().take(widened).all(|b| b == b'z');
        if shaped && key(suffix) > key(last) && best.as_ref().is_none_or(|b| key(suffix) < *b) {
            best = Some(key(suffix));
        }
    }
    Ok(best.map(|(_, s)| dir.join(format!("{stem}.{s}"))))
}

/// Opens the image whose first piece is `first`: finds its pieces, recognises its compression and
/// returns the reader of the partclone stream.
pub fn open(first: &Path) -> Result<Opened, Error> {
    let pieces = pieces(first)?;
    let mut src = Joined::new(pieces.clone());
    let compression = detect::detect(src.peek(detect::PEEK)?)
        .map_err(|(kind, what)| Error::new(kind, &pieces[0], None, what))?;
    let decoder: Box<dyn Decode> = match compression {
        Compression::None => Box::new(codecs::Plain),
        Compression::Gzip => Box::new(codecs::Gzip::new()),
        Compression::Zstd => Box::new(codecs::Zstd::new(&src)?),
        Compression::Xz => Box::new(codecs::Xz::new(false)),
        Compression::Lzma => Box::new(codecs::Xz::new(true)),
        Compression::Bzip2 => Box::new(codecs::Bzip2::new()),
        Compression::Lz4 => Box::new(lz4::Lz4::new()),
        Compression::Lzop => Box::new(lzop::Lzop::new()),
    };
    Ok(Opened {
        compression,
        pieces,
        reader: Box::new(Reader {
            src,
            decoder,
            failed: None,
        }),
    })
}

/// One compression's decoder: fills `out` with decompressed bytes read from `src`; `Ok(0)` only at the
/// clean end of the compressed data (and for an empty `out`).
trait Decode: Send {
    fn read(&mut self, src: &mut Joined, out: &mut [u8]) -> Result<usize, Error>;
}

/// The decoded block of a format read a block at a time (lz4, lzop), and how much of it is returned.
#[derive(Default)]
struct Pending {
    block: Vec<u8>,
    start: usize,
    end: usize,
}

impl Pending {
    /// Copies what is left of the block into `out`: how many bytes, none when all was returned.
    fn take(&mut self, out: &mut [u8]) -> Option<usize> {
        let n = (self.end - self.start).min(out.len());
        if n == 0 {
            return None;
        }
        out[..n].copy_from_slice(&self.block[self.start..self.start + n]);
        self.start += n;
        Some(n)
    }
}

/// A format read a block at a time, in members (lz4 frames, lzop files).
trait Blocks: Send {
    /// Begins the next member: false at the end of the data.
    fn next_member(&mut self, src: &mut Joined) -> Result<bool, Error>;
    fn in_member(&self) -> bool;
    /// Decodes the next block of the member into [`Blocks::pending`], or reads the member's end.
    fn next_block(&mut self, src: &mut Joined) -> Result<(), Error>;
    fn pending(&mut self) -> &mut Pending;
}

impl<T: Blocks> Decode for T {
    fn read(&mut self, src: &mut Joined, out: &mut [u8]) -> Result<usize, Error> {
        loop {
            if let Some(n) = self.pending().take(out) {
                return Ok(n);
            }
            if self.in_member() {
                self.next_block(src)?;
            } else if !self.next_member(src)? {
                return Ok(0);
            }
        }
    }
}

struct Reader {
    src: Joined,
    decoder: Box<dyn Decode>,
    /// The error that stopped the reader, repeated to any later read.
    failed: Option<Error>,
}

impl Read for Reader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(e.again().into());
        }
        if out.is_empty() {
            return Ok(0);
        }
        self.decoder.read(&mut self.src, out).map_err(|e| {
            self.failed = Some(e.again());
            e.into()
        })
    }
}

/// Recognising the compression by the first bytes.
mod detect {
    use super::{Compression, Kind};

    /// How many bytes are looked at: enough to step over the skippable frames pzstd puts first.
    pub(super) const PEEK: usize = 64 << 10;

    pub(super) const ZSTD_MAGIC: u32 = 0xFD2F_B528;
    pub(super) const LZ4_MAGIC: u32 = 0x184D_2204;
    pub(super) const XZ_MAGIC: &[u8; 6] = b"\xFD7zXZ\0";
    pub(super) const LZOP_MAGIC: &[u8; 9] = b"\x89LZO\0\r\n\x1a\n";

    /// A skippable frame's magic, shared by zstd and lz4: 0x184D2A50 to 0x184D2A5F.
    pub(super) fn skippable(magic: u32) -> bool {
        magic & 0xFFFF_FFF0 == 0x184D_2A50
    }

    fn le32(b: &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
    }

    /// The compression of data beginning with `head`, or why it is refused.
    pub(super) fn detect(head: &[u8]) -> Result<Compression, (Kind, String)> {
        if head.is_empty() {
            return Err((Kind::Truncated, "is empty: it holds no image".into()));
        }
        if head.starts_with(b"partclone-image") {
            return Ok(Compression::None);
        }
        if head.starts_with(&[0x1F, 0x8B]) {
            return Ok(Compression::Gzip);
        }
        if head.starts_with(XZ_MAGIC) {
            return Ok(Compression::Xz);
        }
        if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            return Ok(Compression::Bzip2);
        }
        if head.starts_with(LZOP_MAGIC) {
            return Ok(Compression::Lzop);
        }
        // zstd and lz4 frames, after any skippable frames (pzstd writes one before each frame).
        let mut at = 0usize;
        while let Some(magic) = head.get(at..).and_then(le32) {
            if magic == ZSTD_MAGIC {
                return Ok(Compression::Zstd);
            }
            if magic == LZ4_MAGIC {
                return Ok(Compression::Lz4);
            }
            if !skippable(magic) {
                break;
            }
            let size = head.get(at + 4..).and_then(le32);
            match size {
                Some(size) if at + 8 + size as usize <= head.len() => at += 8 + size as usize,
                // Beyond what was looked at, or skippable frames only: zstd reads them.
                _ => return Ok(Compression::Zstd),
            }
        }
        if at > 0 && at == head.len() {
            return Ok(Compression::Zstd);
        }
        if at == 0 && lzma_alone(head) {
            return Ok(Compression::Lzma);
        }
        Err(refused(&head[at..]))
    }

    /// The legacy `.lzma` header has no magic: its properties byte as the lzma tools write it (lc=3,
    /// lp=0, pb=2), a dictionary size of 2^n or 2^n + 2^(n-1) (what liblzma accepts), and an unknown
    /// size or a plausible one.
    fn lzma_alone(head: &[u8]) -> bool {
        if head.len() < 13 || head[0] != 0x5D {
            return false;
        }
        let dict = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        let mut d = dict.saturating_sub(1);
        d |= d >> 2;
        d |= d >> 3;
        d |= d >> 4;
        d |= d >> 8;
        d |= d >> 16;
        let canonical = d.wrapping_add(1) == dict || dict == u32::MAX;
        let mut size = [0u8; 8];
        size.copy_from_slice(&head[5..13]);
        let size = u64::from_le_bytes(size);
        canonical && dict >= 4096 && (size == u64::MAX || size < 1 << 50)
    }

    /// Why data beginning with `head` is not read: what it is when recognisable, with the command that
    /// decompresses it, else its first bytes.
    fn refused(head: &[u8]) -> (Kind, String) {
        let known: &[(&[u8], &str, &str)] = &[
            (
                b"LZIP",
                "lzip-compressed",
                "decompress it with lzip -d first",
            ),
            (
                b"LRZI",
                "lrzip-compressed",
                "decompress it with lrzip -d first",
            ),
            (
                &[0x02, 0x21, 0x4C, 0x18],
                "in lz4's legacy format (lz4 -l)",
                "decompress it with lz4 -d first",
            ),
            (
                &[0x1F, 0x9D],
                "compress'ed (.Z)",
                "decompress it with uncompress or gzip -d first",
            ),
            (
                b"7z\xBC\xAF\x27\x1C",
                "a 7-Zip archive",
                "extract the image with 7z x first",
            ),
            (
                b"PK\x03\x04",
                "a zip archive",
                "extract the image with unzip first",
            ),
            (
                b"\0ntfsclone-image",
                "an ntfsclone image (Clonezilla's -q), not a partclone stream",
                "restore it with ntfsclone --restore-image",
            ),
            (
                b"PaRtImAgE-VoLuMe",
                "a partimage image (Clonezilla's -q1), not a partclone stream",
                "restore it with partimage",
            ),
        ];
        for (magic, what, hint) in known {
            if head.starts_with(magic) {
                return (
                    Kind::Unsupported,
                    format!("is {what}, which this program does not read; {hint}"),
                );
            }
        }
        if head.len() >= 4 && (0x1E..=0x27).contains(&head[0]) && head[1..4] == [0xB5, 0x2F, 0xFD] {
            return (
                Kind::Unsupported,
                "is in zstd's format of before 1.0 (v0.x), which this program does not read; \
                     decompress it with zstd -d first"
                    .into(),
            );
        }
        let hex: Vec<String> = head.iter().take(16).map(|b| format!("{b:02x}")).collect();
        let what = format!(
            "unknown compression (first bytes: {}): not gzip, zstd, xz, lzma, bzip2, lz4, lzop or a \
             partclone stream",
            hex.join(" ")
        );
        (Kind::Unknown, what)
    }
}
