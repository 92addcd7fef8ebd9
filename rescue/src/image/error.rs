//! Errors of the image module. Messages say what happened, where in the image, and what the user can
//! do; callers add the image's path.

use std::fmt;
use std::io;

use super::{ChunkId, Hash, StreamId};

/// Where a chunk belongs on the source disk: the first extent that references it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    pub stream: StreamId,
    /// Human description of the stream ("partition 3", "GPT backup header", …).
    pub stream_desc: String,
    pub stream_offset: u64,
    pub disk_offset: u64,
    /// How many further extents reference the same chunk (identical data stored once).
    pub other_refs: u64,
}

impl fmt::Display for ChunkLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}) at stream offset {}, disk offset {}",
            self.stream, self.stream_desc, self.stream_offset, self.disk_offset
        )?;
        if self.other_refs > 0 {
            write!(
                f,
                ", and {} more place(s) holding the same data",
                self.other_refs
            )?;
        }
        Ok(())
    }
}

/// Formats an optional location for messages.
pub(crate) struct Where<'a>(pub(crate) &'a Option<Box<ChunkLocation>>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, "{l}"),
            None => write!(f, "no stream (nothing references it)"),
        }
    }
}

/// What is wrong with one chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkFault {
    #[error("no chunk frame starts there (frame magic missing)")]
    NoFrame,
    #[error("its frame lies outside the chunk area of the file")]
    OutsideFile,
    #[error("its frame header is damaged ({0})")]
    FrameDamaged(String),
    #[error(
        "the frame there is not the one the index expects ({0}): chunks were moved, swapped \
         or overwritten"
    )]
    WrongFrame(String),
    #[error("its compressed data is damaged (zstd: {0})")]
    Decompress(String),
    #[error("it decompresses to {got} bytes instead of {expected}")]
    Length { expected: u64, got: u64 },
    #[error("its contents do not match their blake3 hash (expected {expected}, got {got})")]
    HashMismatch { expected: Hash, got: Hash },
}

/// Everything that can go wrong writing, opening, reading or verifying an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// `offset` is where the writer was; the file below may have failed on an earlier block still in
    /// flight, so the message names only the error, which says where when it knows
    /// (`engine::output`). The error is not kept as a `source`: the message prints it once.
    #[error(
        "writing the image failed: {error}; check that the target drive is present and has free \
         space, then capture again"
    )]
    Write { offset: u64, error: io::Error },

    #[error(
        "reading the image failed at image offset {offset} ({what}; check the drive holding the \
         image)"
    )]
    Read {
        offset: u64,
        what: &'static str,
        source: io::Error,
    },

    #[error("not a rescue image: {reason}")]
    NotAnImage { reason: String },

    #[error(
        "incomplete or truncated image: no footer found; it was not finalized \
         (the capture was interrupted, or the file was cut short while copying; \
         {file_len} bytes present). Its contents cannot be trusted: capture again, \
         or copy the complete file"
    )]
    Truncated { file_len: u64 },

    #[error(
        "this image uses format version {major}.{minor}, which this program cannot read \
         (it reads version {}.x); use the rescue version that wrote it or a newer one",
        super::FORMAT_MAJOR
    )]
    UnsupportedVersion { major: u16, minor: u16 },

    #[error(
        "this image needs features this program does not know (bits {bits:#x}: encryption, \
         external chunk stores or new compression); use a newer version of rescue"
    )]
    UnsupportedFeatures { bits: u64 },

    #[error("the image header (first 64 bytes) is damaged: {reason}; the image cannot be trusted")]
    HeaderDamaged { reason: String },

    #[error(
        "the image footer (last bytes of the file) is damaged: {reason}; \
         the image cannot be opened without it"
    )]
    FooterDamaged { reason: String },

    #[error(
        "the image index is damaged: {reason}; the image cannot be trusted as a whole \
         (a damaged index means the list of what was saved is unreliable)"
    )]
    IndexDamaged { reason: String },

    #[error("the image index is damaged: {0}; the image cannot be trusted as a whole")]
    IndexDecode(#[from] super::DecodeError),

    #[error(
        "the image index is inconsistent ({} problem(s)): {}; the image cannot be restored safely",
        problems.len(),
        problems.join("; ")
    )]
    IndexInvalid { problems: Vec<String> },

    #[error(
        "{chunk} is damaged: {reason}; it belongs to {} and is stored at image offset \
         {image_offset}; those bytes cannot be restored from this image",
        Where(location)
    )]
    ChunkDamaged {
        chunk: ChunkId,
        location: Option<Box<ChunkLocation>>,
        image_offset: u64,
        reason: ChunkFault,
    },

    #[error(
        "reading {chunk} at image offset {image_offset} failed (it belongs to {}; check the drive \
         holding the image)",
        Where(location)
    )]
    ChunkRead {
        chunk: ChunkId,
        location: Option<Box<ChunkLocation>>,
        image_offset: u64,
        source: io::Error,
    },

    #[error("{chunk} does not exist: the image has {chunks} chunks")]
    NoSuchChunk { chunk: ChunkId, chunks: u64 },

    #[error("{stream} does not exist: the image has {streams} streams")]
    NoSuchStream { stream: StreamId, streams: u64 },

    #[error("image writer used incorrectly: {reason} (a bug in the capture engine)")]
    InvalidUse { reason: String },

    #[error(
        "{stream} is incomplete: its extents cover {covered} of its {length} bytes \
         (a bug in the capture engine); the image was not finished"
    )]
    StreamIncomplete {
        stream: StreamId,
        covered: u64,
        length: u64,
    },

    #[error(
        "an earlier write to this image failed, so it is incomplete and cannot be finished; \
         capture again"
    )]
    Poisoned,

    #[error("zstd failed")]
    Compress { source: io::Error },
}

impl ImageError {
    /// The chunk an error is about, if any (verify reports group problems by chunk).
    pub fn chunk(&self) -> Option<ChunkId> {
        match self {
            ImageError::ChunkDamaged { chunk, .. }
            | ImageError::ChunkRead { chunk, .. }
            | ImageError::NoSuchChunk { chunk, .. } => Some(*chunk),
            _ => None,
        }
    }
}
