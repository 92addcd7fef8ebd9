//! Chunk objects: `chunks/ab/ab12…` (the chunk's blake3 hash in hex, the first two digits as a folder),
//! each a chunk frame of docs/FORMAT.md §5 (chunk id 0) followed by its payload. An object is written
//! whole to `tmp/`, flushed, and renamed into place without replacing: once there it never changes, so a
//! snapshot's index may record its compression and length. Two captures writing the same chunk at once
//! both succeed; the second keeps the first's object.
//!
//! An object found with a wrong size or a damaged frame header (a crash before the flush reached the
//! device, damage) is replaced by the capture that needs it; a damaged payload is found by reads (the
//! hash) and `check --read-data`.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::backend::Backend;

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
    backend: Arc<dyn Backend>,
    keys: Option<Arc<Keys>>,
    /// What a capture's lookup ([`crate::image::ChunkLookup`]) found, kept until the sink stores or
    /// reuses that chunk, so that each chunk costs one request to the store, not two (on S3 each is a
    /// round trip). Shared by the clones of one store; entries leave as the sink takes them, so it holds
    /// only the chunks between the lookup and the sink.
    looked: Arc<Mutex<HashMap<Hash, Option<ObjectInfo>>>>,
    /// Chunks taken as present without asking the store: those of the previous snapshot of the name
    /// being captured, on a store where every question is a network round trip ([`Self::with_known`]).
    known: Arc<HashMap<Hash, ObjectInfo>>,
}

impl ChunkStore {
    pub fn new(backend: Arc<dyn Backend>, keys: Option<Arc<Keys>>) -> ChunkStore {
        ChunkStore {
            backend,
            keys,
            looked: Arc::default(),
            known: Arc::default(),
        }
    }

    /// This store, answering lookups for the chunks of `previous` (a snapshot's index records) from
    /// memory. They are present: the snapshot was written after its chunks were on the store, a prune
    /// keeps every chunk a snapshot refers to, and captures and prunes exclude each other. One lost
    /// behind the repository's back (a damaged disk, a hand) is what `rescue check` finds, naming the
    /// snapshots it affects. Memory grows with that snapshot's disk, not with the repository.
    pub fn with_known(mut self, previous: &[crate::image::ChunkRecord]) -> ChunkStore {
        self.known = Arc::new(
            previous
                .iter()
                .map(|r| {
                    (
                        r.hash,
                        ObjectInfo {
                            compression: r.compression,
                            stored_len: r.stored_len,
                            uncompressed_len: r.uncompressed_len,
                        },
                    )
                })
                .collect(),
        );
        self
    }

    /// What the lookup found of this chunk, if it looked.
    fn take_looked(&self, hash: &Hash) -> Option<Option<ObjectInfo>> {
        self.looked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash)
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

    /// The key of the object of the chunk `hash` (whether or not it exists).
    pub fn key(&self, hash: &Hash) -> String {
        object_key(&self.id(hash))
    }

    /// Where the object of the chunk `hash` is, for messages.
    pub fn path(&self, hash: &Hash) -> PathBuf {
        let key = self.key(hash);
        self.backend
            .local_path(&key)
            .unwrap_or_else(|| PathBuf::from(format!("{}/{key}", self.backend.describe())))
    }

    /// The object's frame header, if the object exists, is whole (its size matches the header) and is
    /// the chunk its name says; `stored_len` is the chunk's payload length (without an encrypted
    /// repository's seal). `Ok(None)` when absent; an error names what is wrong with one present.
    pub fn info(&self, hash: &Hash) -> io::Result<Option<ObjectInfo>> {
        let key = self.key(hash);
        let Some((size, b)) = self.backend.size_and_start(&key, FRAME_HEADER_LEN)? else {
            return Ok(None);
        };
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the chunk object {} is damaged: {why}",
                    self.path(hash).display()
                ),
            )
        };
        if size < FRAME_HEADER_LEN as u64 {
            return Err(bad(format!("it is {size} bytes long")));
        }
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
        let b = self.backend.get(&self.key(hash))?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the chunk object {} is missing from the repository (removed, or the \
                     repository is incomplete); `rescue check` names every snapshot it affects",
                    path.display()
                ),
            )
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
    /// object's header and what was done; `touched` gets the key of an object written.
    pub fn put(
        &self,
        hash: &Hash,
        uncompressed_len: u32,
        payload: &[u8],
        compression: Compression,
        touched: &mut BTreeSet<String>,
    ) -> io::Result<(ObjectInfo, Stored)> {
        let found = match self.take_looked(hash) {
            // Found absent by this capture's lookup a moment ago: `put_new` sees one stored since.
            Some(None) => Ok(None),
            Some(Some(info)) => Ok(Some(info)),
            None => self.info(hash),
        };
        let damaged = match found {
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
        let mut object = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
        object.extend_from_slice(&header);
        object.extend_from_slice(payload);
        let key = self.key(hash);
        // Not flushed here (the capture would wait for the disk at every chunk): the sink's `Flusher`
        // does it in the background, and the capture flushes the store once more before it writes its
        // snapshot (`SinkState::sync`). An object whose data did not reach the disk before a power cut
        // is found with a wrong size or header and written again by the next capture that needs it.
        if damaged {
            self.backend.put_replace(&key, &object)?;
            touched.insert(key);
            return Ok((info, Stored::Replaced));
        }
        if self.backend.put_new(&key, &object, false)? {
            touched.insert(key);
            return Ok((info, Stored::New));
        }
        // Another capture stored it meanwhile: keep theirs.
        match self.info(hash)? {
            Some(theirs) => Ok((theirs, Stored::Reused)),
            None => Err(io::Error::other(format!(
                "the chunk object {} vanished while it was being stored",
                self.path(hash).display()
            ))),
        }
    }

    /// A [`ChunkSink`] for one capture, counting into `stats`.
    pub fn sink(&self, stats: Arc<Mutex<SinkState>>) -> RepoSink {
        RepoSink {
            store: self.clone(),
            state: stats,
            flusher: Flusher::start(self.backend.clone()),
        }
    }
}

/// The key of the object named `id`: `chunks/ab/ab12…`.
pub fn object_key(id: &Hash) -> String {
    let hex = id.to_string();
    format!("chunks/{}/{hex}", &hex[..2])
}

/// What a capture's sink did: its counts, and the objects it wrote, which must reach the device before
/// the snapshot is written.
#[derive(Debug, Default)]
pub struct SinkState {
    pub stats: ChunkStats,
    /// Size of every chunk the snapshot refers to as stored (frame headers included).
    pub referenced_bytes: u64,
    /// The keys of the objects written.
    pub touched: BTreeSet<String>,
}

impl SinkState {
    /// Everything stored on the device: the objects this capture wrote and the ones it reuses
    /// ([`Backend::sync`]).
    pub fn sync(&self, backend: &dyn Backend) -> io::Result<()> {
        let written: Vec<String> = self.touched.iter().cloned().collect();
        backend.sync(&written)
    }
}

/// The capture engine's [`ChunkSink`] into a repository.
pub struct RepoSink {
    store: ChunkStore,
    state: Arc<Mutex<SinkState>>,
    flusher: Option<Flusher>,
}

/// Flushes the objects a capture writes to the device in the background, a moment after each is
/// written, so the capture does not wait for the disk and a capture cut off (power lost) still leaves
/// most of what it stored for the next one. Only for stores on this machine's filesystems.
struct Flusher {
    tx: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(backend: Arc<dyn Backend>) -> Option<Flusher> {
        backend.local_path("chunks")?;
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let thread = std::thread::spawn(move || {
            for path in rx {
                if let Ok(f) = std::fs::File::open(&path) {
                    let _ = f.sync_all();
                }
                // The new object's name must reach the device too: its folder.
                if let Some(Ok(d)) = path.parent().map(std::fs::File::open) {
                    let _ = d.sync_all();
                }
            }
        });
        Some(Flusher {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn written(&self, path: PathBuf) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(path);
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
        if stored != Stored::Reused {
            if let (Some(f), Some(path)) = (
                &self.flusher,
                self.store.backend.local_path(&self.store.key(hash)),
            ) {
                f.written(path);
            }
        }
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

    fn reuse(&mut self, hash: &Hash, uncompressed_len: u32) -> io::Result<(Compression, u32)> {
        let info = match self.store.take_looked(hash) {
            Some(Some(info)) => Some(info),
            _ => self.store.info(hash)?,
        };
        let info = info
            .filter(|i| i.uncompressed_len == uncompressed_len)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "the chunk object {} was there a moment ago and is gone",
                    self.store.path(hash).display()
                ))
            })?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.referenced_bytes += FRAME_HEADER_LEN as u64 + u64::from(info.stored_len);
        state.stats.reused_chunks += 1;
        Ok((info.compression, info.stored_len))
    }
}

impl crate::image::ChunkLookup for ChunkStore {
    fn stored(&self, hash: &Hash, uncompressed_len: u32) -> Option<(Compression, u32)> {
        let info = match self.known.get(hash) {
            Some(k) if k.uncompressed_len == uncompressed_len => Some(*k),
            // A damaged object (an error) is not remembered: the sink looks again and replaces it.
            _ => self.info(hash).ok()?,
        };
        self.looked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(*hash, info);
        info.filter(|i| i.uncompressed_len == uncompressed_len)
            .map(|i| (i.compression, i.stored_len))
    }
}
