//! A snapshot read as the self-contained image it is (docs/REPOSITORY.md): the header, then each chunk's
//! frame at the offset the index gives it, then the index and the footer. The frames come from the
//! chunk objects, their headers made again from the index record (only the chunk number differs from
//! the object's own header, which is checked against the record on every read), so the image code reads
//! it as any image file: structure, frames and every chunk's hash checked as usual.

use std::io;
use std::sync::Arc;

use anyhow::Context;

use super::chunks::{ChunkStore, ObjectInfo};
use super::config::Repo;
use super::snapshot::{self, SnapshotEntry, SnapshotMeta};
use crate::image::{
    ChunkRecord, Footer, FrameHeader, ReadAt, SharedReader, FOOTER_LEN, FRAME_HEADER_LEN,
    HEADER_LEN,
};

/// A snapshot as an image file, for [`SharedReader`].
pub struct SnapshotImage {
    store: ChunkStore,
    /// The image's first 64 bytes.
    head: Vec<u8>,
    /// The index and the footer, from `tail_at` to the end.
    tail: Vec<u8>,
    tail_at: u64,
    /// The chunk records in offset order (chunk number = position).
    frames: Vec<ChunkRecord>,
    pub meta: SnapshotMeta,
    /// `REPO::NAME@TIME`, for messages.
    pub label: String,
}

impl SnapshotImage {
    /// Load a snapshot file (checked against its hash) and its index (checked by the image reader).
    pub fn open(repo: &Repo, entry: &SnapshotEntry) -> anyhow::Result<SnapshotImage> {
        let (meta, image) = snapshot::load(repo, &entry.key)?;
        let label = format!("{}::{}", repo.root.display(), entry.label());
        let bad = |why: &str| anyhow::anyhow!("the snapshot {label} is damaged: {why}");
        if image.len() < HEADER_LEN + FOOTER_LEN {
            return Err(bad("its image part is shorter than a header and a footer"));
        }
        let footer_bytes: [u8; FOOTER_LEN] = image[image.len() - FOOTER_LEN..]
            .try_into()
            .map_err(|_| bad("no footer"))?;
        let footer = Footer::parse(&footer_bytes).map_err(|e| bad(&e.to_string()))?;
        let mut img = SnapshotImage {
            store: repo.chunks(),
            head: image[..HEADER_LEN].to_vec(),
            tail: image[HEADER_LEN..].to_vec(),
            tail_at: footer.index_offset,
            frames: Vec::new(),
            meta,
            label: label.clone(),
        };
        if img.tail_at < HEADER_LEN as u64 {
            return Err(bad("its footer places the index inside the header"));
        }
        // The index through the image reader's strict checks (no frame is read to open an image).
        let opened = SharedReader::open(Arc::new(img.without_frames()))
            .with_context(|| format!("reading the snapshot {}", img.label))?;
        img.frames = opened.index().chunks.clone();
        Ok(img)
    }

    /// The chunk records of the snapshot's index, in chunk-number order.
    pub fn chunks(&self) -> &[ChunkRecord] {
        &self.frames
    }

    fn without_frames(&self) -> SnapshotImage {
        SnapshotImage {
            store: self.store.clone(),
            head: self.head.clone(),
            tail: self.tail.clone(),
            tail_at: self.tail_at,
            frames: Vec::new(),
            meta: self.meta.clone(),
            label: self.label.clone(),
        }
    }

    /// The bytes of frame `i` from `at` (relative to the frame's start) into `buf`.
    fn read_frame(&self, i: usize, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let rec = &self.frames[i];
        let mut done = 0;
        if at < FRAME_HEADER_LEN as u64 {
            let header = FrameHeader {
                compression: rec.compression,
                chunk_id: i as u64,
                stored_len: rec.stored_len,
                uncompressed_len: rec.uncompressed_len,
                hash: rec.hash,
            }
            .encode();
            let from = &header[at as usize..];
            done = from.len().min(buf.len());
            buf[..done].copy_from_slice(&from[..done]);
        }
        if done == buf.len() {
            return Ok(());
        }
        let payload = self.store.read_payload(
            &rec.hash,
            &ObjectInfo {
                compression: rec.compression,
                stored_len: rec.stored_len,
                uncompressed_len: rec.uncompressed_len,
            },
        )?;
        let from = (at as usize + done) - FRAME_HEADER_LEN;
        let rest = &mut buf[done..];
        let src = payload
            .get(from..from + rest.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        rest.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for SnapshotImage {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let size = self.size()?;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > size)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut pos = offset;
        let mut filled = 0;
        while filled < buf.len() {
            let rest = &mut buf[filled..];
            let n = if pos < HEADER_LEN as u64 {
                let from = &self.head[pos as usize..];
                let n = from.len().min(rest.len());
                rest[..n].copy_from_slice(&from[..n]);
                n
            } else if pos >= self.tail_at {
                let from = &self.tail[(pos - self.tail_at) as usize..];
                let n = from.len().min(rest.len());
                rest[..n].copy_from_slice(&from[..n]);
                n
            } else {
                // The frame holding `pos`: the last one starting at or before it.
                let i = self.frames.partition_point(|r| r.offset <= pos);
                let Some(rec) = i.checked_sub(1).map(|i| &self.frames[i]) else {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                };
                let end = rec.offset + FRAME_HEADER_LEN as u64 + u64::from(rec.stored_len);
                if pos >= end {
                    // Between frames: a v1 image has no such bytes.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let n = ((end - pos) as usize).min(rest.len());
                self.read_frame(i - 1, pos - rec.offset, &mut rest[..n])?;
                n
            };
            filled += n;
            pos += n as u64;
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.tail_at + self.tail.len() as u64)
    }
}
