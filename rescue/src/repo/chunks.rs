//! Chunk objects: `chunks/ab/ab12…` (the chunk's blake3 hash in hex, the first two digits as a folder),
//! each a chunk frame of docs/FORMAT.md §5 (chunk id 0) followed by its payload. An object is written
//! whole to `tmp/`, flushed, and renamed into place without replacing: once there it never changes, so a
//! snapshot's index may record its compression and length. Two captures writing the same chunk at once
//! both succeed; the second keeps the first's object.
//!
//! An object found with a wrong size or a damaged frame header (a crash before the flush reached the
//! device, damage) is replaced by the capture that needs it; a damaged payload is found by reads (the
//! hash) and `check --read-data`.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::image::{ChunkSink, Compression, FrameHeader, Hash, FRAME_HEADER_LEN};

/// An object's frame header, as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    pub compression: Compression,
    pub stored_len: u32,
    pub uncompressed_len: u32,
}

/// What [`ChunkStore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The store had the chunk.
    Reused,
    New,
    /// The object there was damaged and was written again.
    Replaced,
}

/// What a capture added to the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkStats {
    /// Objects written (not there before).
    pub new_chunks: u64,
    /// Their size on the store (frame headers included).
    pub new_bytes: u64,
    /// Chunks the store had already.
    pub reused_chunks: u64,
    /// Objects found damaged and written again.
    pub replaced: u64,
}

/// The chunk objects of one repository.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl ChunkStore {
    pub fn new(dir: PathBuf, tmp: PathBuf) -> ChunkStore {
        ChunkStore { dir, tmp }
    }

    /// Where the object of `hash` is (whether or not it exists).
    pub fn path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_string();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The object's frame header, if the object exists, is whole (its size matches the header) and is
    /// the chunk its name says. `Ok(None)` when absent; an error names what is wrong with one present.
    pub fn info(&self, hash: &Hash) -> io::Result<Option<ObjectInfo>> {
        let path = self.path(hash);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = f.metadata()?.len();
        let mut b = [0u8; FRAME_HEADER_LEN];
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the chunk object {} is damaged: {why}", path.display()),
            )
        };
        if size < FRAME_HEADER_LEN as u64 {
            return Err(bad(format!("it is {size} bytes long")));
        }
        f.read_exact(&mut b)?;
        let fh = FrameHeader::parse(&b).map_err(|e| bad(format!("its header: {e}")))?;
        if fh.hash != *hash {
            return Err(bad(format!("it holds the chunk {}", fh.hash)));
        }
        if size != FRAME_HEADER_LEN as u64 + u64::from(fh.stored_len) {
            return Err(bad(format!(
                "it is {size} bytes long, its header says {}",
                FRAME_HEADER_LEN as u64 + u64::from(fh.stored_len)
            )));
        }
        Ok(Some(ObjectInfo {
            compression: fh.compression,
            stored_len: fh.stored_len,
            uncompressed_len: fh.uncompressed_len,
        }))
    }

    /// Keep a chunk: the existing object when there is a sound one, else a new one. Returns the stored
    /// object's header and what was done; `touched` gets the folder of a new object.
    pub fn put(
        &self,
        hash: &Hash,
        uncompressed_len: u32,
        payload: &[u8],
        compression: Compression,
        touched: &mut BTreeSet<PathBuf>,
    ) -> io::Result<(ObjectInfo, Stored)> {
        let damaged = match self.info(hash) {
            Ok(Some(info)) if info.uncompressed_len == uncompressed_len => {
                return Ok((info, Stored::Reused));
            }
            // Same hash, another length: not our blake3's doing; treat as damage.
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => true,
            Err(e) => return Err(e),
        };
        let info = ObjectInfo {
            compression,
            stored_len: u32::try_from(payload.len())
                .map_err(|_| io::Error::other("a chunk payload over 4 GiB"))?,
            uncompressed_len,
        };
        let header = FrameHeader {
            compression,
            chunk_id: 0,
            stored_len: info.stored_len,
            uncompressed_len,
            hash: *hash,
        }
        .encode();
        let tmp = self
            .tmp
            .join(format!("{hash}.{}.{}", std::process::id(), next()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&header)?;
            f.write_all(payload)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io::Error::new(
                e.kind(),
                format!("writing the chunk object {}: {e}", tmp.display()),
            ));
        }
        let dest = self.path(hash);
        let folder = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&folder)?;
        let renamed = if damaged {
            std::fs::rename(&tmp, &dest)
        } else {
            match crate::sys::rename_noreplace(&tmp, &dest) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && !dest.exists() => {
                    std::fs::rename(&tmp, &dest)
                }
                r => r,
            }
        };
        match renamed {
            Ok(()) => {
                touched.insert(folder);
                Ok((
                    info,
                    if damaged {
                        Stored::Replaced
                    } else {
                        Stored::New
                    },
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists || dest.exists() => {
                // Another capture stored it meanwhile: keep theirs.
                let _ = std::fs::remove_file(&tmp);
                match self.info(hash)? {
                    Some(theirs) => Ok((theirs, Stored::Reused)),
                    None => Err(io::Error::other(format!(
                        "the chunk object {} vanished while it was being stored",
                        dest.display()
                    ))),
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(io::Error::new(
                    e.kind(),
                    format!("storing the chunk object {}: {e}", dest.display()),
                ))
            }
        }
    }

    /// A [`ChunkSink`] for one capture, counting into `stats`.
    pub fn sink(&self, stats: Arc<Mutex<SinkState>>) -> RepoSink {
        RepoSink {
            store: self.clone(),
            state: stats,
        }
    }
}

fn next() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// What a capture's sink did: its counts, and the folders whose new entries must be flushed before the
/// snapshot is written.
#[derive(Debug, Default)]
pub struct SinkState {
    pub stats: ChunkStats,
    /// Size of every chunk the snapshot refers to as stored (frame headers included).
    pub referenced_bytes: u64,
    pub touched: BTreeSet<PathBuf>,
}

impl SinkState {
    /// Flush the new objects' folder entries to the device (the objects themselves were flushed).
    pub fn sync(&self) {
        for d in &self.touched {
            super::config::sync_dir(d);
        }
    }
}

/// The capture engine's [`ChunkSink`] into a repository.
pub struct RepoSink {
    store: ChunkStore,
    state: Arc<Mutex<SinkState>>,
}

impl ChunkSink for RepoSink {
    fn put(
        &mut self,
        hash: &Hash,
        uncompressed_len: u32,
        payload: &[u8],
        compression: Compression,
    ) -> io::Result<(Compression, u32)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let SinkState {
            stats,
            referenced_bytes,
            touched,
        } = &mut *state;
        let (info, stored) =
            self.store
                .put(hash, uncompressed_len, payload, compression, touched)?;
        *referenced_bytes += FRAME_HEADER_LEN as u64 + u64::from(info.stored_len);
        match stored {
            Stored::Reused => stats.reused_chunks += 1,
            Stored::New | Stored::Replaced => {
                stats.new_chunks += 1;
                stats.new_bytes += FRAME_HEADER_LEN as u64 + u64::from(info.stored_len);
                stats.replaced += u64::from(stored == Stored::Replaced);
            }
        }
        Ok((info.compression, info.stored_len))
    }
}
