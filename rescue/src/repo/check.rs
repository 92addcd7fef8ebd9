//! `rescue check`: every snapshot file whole (its checksum), every snapshot's index sound (the image
//! reader's rules), and every chunk a snapshot refers to present and as recorded; with `read_data`,
//! every such chunk read, decompressed and hashed. A problem names the chunk object and every snapshot
//! it affects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use crate::engine::progress::{Meter, Progress};
use crate::image::{decompress_chunk, Compression, Hash, FRAME_HEADER_LEN};

use super::chunks::ObjectInfo;
use super::config::Repo;
use super::vimage::SnapshotImage;

/// What a check found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    /// Distinct chunks the snapshots refer to, and their size in the repository.
    pub chunks: usize,
    pub chunk_bytes: u64,
    /// Chunk bytes read and hashed (`read_data`).
    pub read_bytes: u64,
    /// Everything wrong, each naming what and which snapshots it affects.
    pub problems: Vec<String>,
    /// Chunk objects no snapshot refers to (left by removed snapshots or stopped captures).
    pub unreferenced_chunks: u64,
    pub unreferenced_bytes: u64,
    /// Files left in `tmp/` (by captures that stopped).
    pub leftover_files: u64,
}

/// How one snapshot records a chunk.
type Recorded = (Compression, u32, u32);

pub fn check(
    repo: &Repo,
    read_data: bool,
    threads: usize,
    progress: Option<Sender<Progress>>,
    cancel: &AtomicBool,
) -> anyhow::Result<CheckReport> {
    let mut report = CheckReport::default();
    let (entries, listing) = super::snapshot::list(repo)?;
    report.problems.extend(listing);
    // Every chunk: how each snapshot records it, and which snapshots.
    let mut refs: BTreeMap<Hash, BTreeMap<Recorded, Vec<String>>> = BTreeMap::new();
    for e in &entries {
        match SnapshotImage::open(repo, e) {
            Ok(img) => {
                report.snapshots += 1;
                for c in img.chunks() {
                    refs.entry(c.hash)
                        .or_default()
                        .entry((c.compression, c.stored_len, c.uncompressed_len))
                        .or_default()
                        .push(e.label());
                }
            }
            Err(err) => report
                .problems
                .push(format!("snapshot {}: {err:#}", e.label())),
        }
    }
    let store = repo.chunks();
    let affects = |by: &BTreeMap<Recorded, Vec<String>>| {
        let all: BTreeSet<&String> = by.values().flatten().collect();
        format!(
            "it affects {}",
            all.into_iter().cloned().collect::<Vec<_>>().join(", ")
        )
    };
    let mut readable: Vec<(Hash, Recorded)> = Vec::new();
    for (hash, by) in &refs {
        report.chunks += 1;
        match store.info(hash) {
            Ok(None) => report.problems.push(format!(
                "the chunk object {} is missing; {}",
                store.path(hash).display(),
                affects(by)
            )),
            Err(e) => report.problems.push(format!("{e}; {}", affects(by))),
            Ok(Some(info)) => {
                report.chunk_bytes += FRAME_HEADER_LEN as u64 + u64::from(info.stored_len);
                let own = (info.compression, info.stored_len, info.uncompressed_len);
                for (recorded, labels) in by {
                    if *recorded != own {
                        report.problems.push(format!(
                            "the chunk object {} is stored as {:?} {} bytes of {}, but {} record it \
                             as {:?} {} of {}",
                            store.path(hash).display(),
                            own.0,
                            own.1,
                            own.2,
                            labels.join(", "),
                            recorded.0,
                            recorded.1,
                            recorded.2
                        ));
                    }
                }
                readable.push((*hash, own));
            }
        }
    }
    if read_data {
        let total = readable
            .iter()
            .map(|(_, r)| u64::from(r.1) + FRAME_HEADER_LEN as u64)
            .sum();
        let meter = Mutex::new(Meter::new("check", total, progress));
        let work = Mutex::new(readable.iter());
        let damaged = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| loop {
                    if cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some((hash, (compression, stored, len))) =
                        work.lock().unwrap_or_else(|p| p.into_inner()).next()
                    else {
                        return;
                    };
                    let path = store.path(hash);
                    let expect = ObjectInfo {
                        compression: *compression,
                        stored_len: *stored,
                        uncompressed_len: *len,
                    };
                    let fault = match store.read_payload(hash, &expect) {
                        Err(e) => Some(e.to_string()),
                        Ok(payload) => decompress_chunk(*compression, &payload, *len, hash)
                            .err()
                            .map(|f| {
                                format!("the chunk object {} is damaged: {f}", path.display())
                            }),
                    };
                    if let Some(why) = fault {
                        damaged
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((*hash, path, why));
                    }
                    let n = u64::from(*stored) + FRAME_HEADER_LEN as u64;
                    meter
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .advance(n, n);
                });
            }
        });
        if cancel.load(Ordering::Relaxed) {
            anyhow::bail!("cancelled");
        }
        let mut meter = meter.into_inner().unwrap_or_else(|p| p.into_inner());
        meter.finish();
        report.read_bytes = meter.done();
        let mut damaged = damaged.into_inner().unwrap_or_else(|p| p.into_inner());
        damaged.sort();
        for (hash, _, why) in damaged {
            report
                .problems
                .push(format!("{why}; {}", affects(&refs[&hash])));
        }
    }
    let (count, bytes) = unreferenced(repo, &refs)?;
    report.unreferenced_chunks = count;
    report.unreferenced_bytes = bytes;
    report.leftover_files = repo
        .backend
        .leftovers()
        .map(|l| l.len() as u64)
        .unwrap_or(0);
    Ok(report)
}

/// Chunk objects no snapshot refers to: their number and size.
fn unreferenced(
    repo: &Repo,
    refs: &BTreeMap<Hash, BTreeMap<Recorded, Vec<String>>>,
) -> anyhow::Result<(u64, u64)> {
    let store = repo.chunks();
    let names: BTreeSet<String> = refs.keys().map(|h| store.key(h)).collect();
    let (mut count, mut bytes) = (0, 0);
    for (key, size) in object_keys(repo)? {
        if !names.contains(&key) {
            count += 1;
            bytes += size;
        }
    }
    Ok((count, bytes))
}

/// Every chunk object's key, with its size.
pub(super) fn object_keys(repo: &Repo) -> anyhow::Result<Vec<(String, u64)>> {
    use anyhow::Context;
    repo.backend
        .list("chunks/")
        .with_context(|| format!("listing the chunks of {}", repo.root.display()))
}
