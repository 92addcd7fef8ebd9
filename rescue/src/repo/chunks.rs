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

use super::crypt::{Keys, OVERHEAD};
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

/// The chunk objects of one repository (and an encrypted one's key).
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
    tmp: PathBuf,
    keys: Option<Arc<Keys>>,
}

impl ChunkStore {
    pub fn new(dir: PathBuf, tmp: PathBuf, keys: Option<Arc<Keys>>) -> ChunkStore {
        ChunkStore { dir, tmp, keys }
    }

    /// The name of the object holding the chunk whose hash is `hash`: the hash itself, or in an
    /// encrypted repository a keyed hash of it.
    pub fn id(&self, hash: &Hash) -> Hash {
        match &self.keys {
            Some(k) => k.chunk_id(hash),
            None => *hash,
        }
    }

    /// Bytes an object's payload has beyond the chunk's (the seal of an encrypted repository).
    fn overhead(&self) -> u32 {
        if self.keys.is_some() {
            OVERHEAD as u32
        } else {
            0
        }
    }

    /// Where the object of the chunk `hash` is (whether or not it exists).
    pub fn path(&self, hash: &Hash) -> PathBuf {
        let hex = self.id(hash).to_string();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The object's frame header, if the object exists, is whole (its size matches the header) and is
    /// the chunk its name says; `stored_len` is the chunk's payload length (without an encrypted
    /// repository's seal). `Ok(None)` when absent; an error names what is wrong with one present.
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
        if fh.hash != self.id(hash) {
            return Err(bad(format!("it holds the chunk {}", fh.hash)));
        }
        if size != FRAME_HEADER_LEN as u64 + u64::from(fh.stored_len) {
            return Err(bad(format!(
                "it is {size} bytes long, its header says {}",
                FRAME_HEADER_LEN as u64 + u64::from(fh.stored_len)
            )));
        }
        let stored_len = fh
            .stored_len
            .checked_sub(self.overhead())
            .ok_or_else(|| bad("its payload is shorter than a seal".into()))?;
        Ok(Some(ObjectInfo {
            compression: fh.compression,
            stored_len,
            uncompressed_len: fh.uncompressed_len,
        }))
    }

    /// The chunk's payload as stored (compressed, as `expect` says; unsealed in an encrypted
    /// repository), after checking the object's header against `expect`.
    pub fn read_payload(&self, hash: &Hash, expect: &ObjectInfo) -> io::Result<Vec<u8>> {
        let path = self.path(hash);
        let b = std::fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the chunk object {} is missing from the repository (removed, or the \
                         repository is incomplete); `rescue check` names every snapshot it affects",
                        path.display()
                    ),
                )
            } else {
                io::Error::new(e.kind(), format!("reading {}: {e}", path.display()))
            }
        })?;
        let id = self.id(hash);
        let same = b
            .get(..FRAME_HEADER_LEN)
            .and_then(|h| FrameHeader::parse(h).ok())
            .is_some_and(|h| {
                h.hash == id
                    && (h.compression, h.stored_len, h.uncompressed_len)
                        == (
                            expect.compression,
                            expect.stored_len + self.overhead(),
                            expect.uncompressed_len,
                        )
                    && b.len() as u64 == FRAME_HEADER_LEN as u64 + u64::from(h.stored_len)
            });
        if !same {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the chunk object {} is not the chunk the snapshot records (damaged, cut short or \
                     replaced)",
                    path.display()
                ),
            ));
        }
        let payload = &b[FRAME_HEADER_LEN..];
        match &self.keys {
            None => Ok(payload.to_vec()),
            Some(k) => k
                .open_chunk(
                    &id,
                    expect.compression.code(),
                    expect.uncompressed_len,
                    payload,
                )
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("the chunk object {}: {e}", path.display()),
                    )
                }),
        }
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
        let id = self.id(hash);
        let sealed;
        let payload = match &self.keys {
            Some(k) => {
                sealed = k.seal_chunk(&id, compression.code(), uncompressed_len, payload);
                &sealed[..]
            }
            None => payload,
        };
        let header = FrameHeader {
            compression,
            chunk_id: 0,
            stored_len: info.stored_len + self.overhead(),
            uncompressed_len,
            hash: id,
        }
        .encode();
        let tmp = self
            .tmp
            .join(format!("{id}.{}.{}", std::process::id(), next()));
        // Not flushed one by one (that would make the capture wait for the disk at every chunk): the
        // capture flushes the whole filesystem once before it writes its snapshot (`SinkState::sync`).
        // An object whose data did not reach the disk before a power cut is found with a wrong size or
        // header and written again by the next capture that needs it.
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&header)?;
            f.write_all(payload)
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
                touched.insert(dest);
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

/// What a capture's sink did: its counts, and the objects it wrote, which must reach the device before
/// the snapshot is written.
#[derive(Debug, Default)]
pub struct SinkState {
    pub stats: ChunkStats,
    /// Size of every chunk the snapshot refers to as stored (frame headers included).
    pub referenced_bytes: u64,
    /// The objects written.
    pub touched: BTreeSet<PathBuf>,
}

impl SinkState {
    /// Flush everything on the repository's filesystem to the device: the objects this capture wrote,
    /// their folders, and the objects other captures wrote that this one reuses. Where the filesystem
    /// cannot (`syncfs` refused), each object written and its folder is flushed instead.
    pub fn sync(&self, root: &Path) -> io::Result<()> {
        let dir = std::fs::File::open(root)?;
        if nix::unistd::syncfs(&dir).is_ok() {
            return Ok(());
        }
        let mut folders = BTreeSet::new();
        for f in &self.touched {
            std::fs::File::open(f)?.sync_all()?;
            if let Some(p) = f.parent() {
                folders.insert(p.to_path_buf());
            }
        }
        for d in folders {
            super::config::sync_dir(&d);
        }
        Ok(())
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
