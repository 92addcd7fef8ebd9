//! Repositories in whole operations: capturing a disk as a new snapshot, and the snapshot list.
//! Reading a snapshot (restore, verify, inspect) needs nothing here: `place` opens it as an image.

use std::sync::{Arc, Mutex};

use anyhow::Context;

use crate::detect::{DetectOptions, Disk};
use crate::engine::capture;
use crate::repo::{ChunkStats, Repo, SinkState, SnapshotEntry, SnapshotMeta, SnapshotSource};

use super::capture::{prepare, Prepared};
use super::{CaptureSpec, Control};

/// What a capture into a repository did.
pub struct RepoCapture {
    pub disk: Disk,
    pub report: capture::CaptureReport,
    pub snapshot: SnapshotEntry,
    pub stats: ChunkStats,
}

/// Capture `spec.source` into `repo` as a new snapshot of `name`. Chunks the repository has are not
/// stored again; the snapshot file is written last, after every chunk it refers to is flushed, so a
/// capture that fails or is cut off leaves no snapshot (the chunks it stored are used by the next one).
pub fn capture_repo(
    spec: &CaptureSpec,
    repo: &Repo,
    name: &str,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<RepoCapture> {
    crate::repo::check_name(name).map_err(anyhow::Error::msg)?;
    // Held until the snapshot is written: a prune cannot remove the chunks this capture reuses.
    let _lock = repo.lock_shared(&format!("the capture of {}", spec.source.display()))?;
    // The repository's folder stands for the image file in the checks (not on the disk captured).
    let probe = repo.snapshots_dir().join(name);
    let Prepared {
        disk,
        source,
        mut capture_opts,
        plan,
    } = prepare(spec, Some(&probe), opts, &ctl)?;
    // The repository's own chunk size: an unchanged region then gives the chunks it gave last time.
    capture_opts.chunk_size = repo.config.chunk_size;
    let reads = capture::plan_reads(&source, &plan);
    let state = Arc::new(Mutex::new(SinkState::default()));
    let store = repo.chunks().with_known(&previous_chunks(repo, name));
    let sink = Box::new(store.sink(state.clone()));
    let result = capture::capture_into(
        &source,
        &disk,
        reads,
        Vec::new(),
        &capture_opts,
        ctl.progress,
        Some(sink),
        Some(&store),
    );
    let (report, image) = result.map_err(|e| {
        anyhow::Error::from(e).context(format!(
            "the capture of {} did not complete; no snapshot was added to {} (the chunks it stored \
             stay for the next capture)",
            spec.source.display(),
            repo.root.display()
        ))
    })?;
    let state = std::mem::take(&mut *state.lock().unwrap_or_else(|p| p.into_inner()));
    state.sync(repo.backend.as_ref()).with_context(|| {
        format!(
            "flushing the chunks of the capture to {}; no snapshot was added",
            repo.root.display()
        )
    })?;
    let creation = &capture_opts.creation;
    let time_unix = u64::try_from(creation.created_unix).unwrap_or(0);
    let info = crate::engine::disk_info(&disk);
    let meta = SnapshotMeta {
        name: name.to_string(),
        time_unix,
        time: crate::units::iso_time(time_unix),
        host: creation.host_name.clone(),
        source: SnapshotSource::of(&info),
        image_bytes: report.image_bytes,
        root_hash: report.root_hash.clone(),
        used_bytes: report.used_bytes,
        chunks: state.stats.new_chunks + state.stats.reused_chunks,
        stored_bytes: state.referenced_bytes,
        new_chunks: state.stats.new_chunks,
        new_bytes: state.stats.new_bytes,
        tool_version: creation.tool_version.clone(),
    };
    let image_id: String = image
        .get(32..48)
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
        .unwrap_or_default();
    let snapshot = crate::repo::write_snapshot(repo, &meta, &image, &image_id)
        .with_context(|| format!("the snapshot of {} was not added", spec.source.display()))?;
    Ok(RepoCapture {
        disk,
        report,
        snapshot,
        stats: state.stats,
    })
}

/// The chunk records of the latest snapshot of `name` when the repository is on an object store, where
/// every lookup is a round trip: the capture then asks the store only about chunks that snapshot lacks
/// ([`crate::repo::ChunkStore::with_known`]). None on a folder (a lookup there is a `stat`, and it finds
/// an object damaged since, which the capture then writes again), without such a snapshot, or when it
/// cannot be read.
fn previous_chunks(repo: &Repo, name: &str) -> Vec<crate::image::ChunkRecord> {
    if repo.backend.local_path(crate::repo::CONFIG_FILE).is_some() {
        return Vec::new();
    }
    crate::repo::resolve(repo, name, &crate::url::When::Latest)
        .and_then(|entry| crate::repo::SnapshotImage::open(repo, &entry))
        .map(|image| image.chunks().to_vec())
        .unwrap_or_default()
}

/// What [`export`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub bytes: u64,
    pub root_hash: String,
    pub seconds: f64,
}

/// Write the image `image` names (a snapshot, or any image) to `output` as one self-contained image
/// file: as `OUTPUT.partial`, flushed, then renamed, never over an existing file. The copy is checked
/// as it is read (the image's structure when opened, each frame header against the index); verify the
/// file afterwards to check every chunk's hash.
pub fn export(
    image: &crate::url::Location,
    output: &std::path::Path,
    net: &super::NetOptions,
    ctl: Control,
) -> anyhow::Result<Exported> {
    use crate::image::ReadAt;
    use std::io::Write;
    let started = std::time::Instant::now();
    let placed = super::place::place(image, false, net)?;
    let reader = placed.open()?;
    let root_hash = reader.root_hash().to_string();
    let source = placed.source()?;
    let size = source.size()?;
    if output.exists() {
        anyhow::bail!(
            "{} already exists; remove it or choose another name",
            output.display()
        );
    }
    let partial = super::capture::partial_path(output);
    let mut out = super::capture::create_partial(output, &partial)?;
    let _abort = crate::sys::on_abort::RemoveOnAbort::new(&partial);
    let copied = (|| -> anyhow::Result<()> {
        let mut meter = crate::engine::progress::Meter::new("export", size, ctl.progress.clone());
        let mut buf = vec![0u8; 8 << 20];
        let mut at = 0u64;
        while at < size {
            if ctl.cancel.load(std::sync::atomic::Ordering::Relaxed) {
                anyhow::bail!("cancelled");
            }
            let n = (size - at).min(buf.len() as u64) as usize;
            source
                .read_exact_at(&mut buf[..n], at)
                .with_context(|| format!("reading {} at byte {at}", placed.path.display()))?;
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", partial.display()))?;
            at += n as u64;
            meter.advance(n as u64, n as u64);
        }
        meter.finish();
        let file = out
            .finish()
            .with_context(|| format!("writing {}", partial.display()))?;
        file.sync_all()
            .with_context(|| format!("flushing {} to disk", partial.display()))?;
        Ok(())
    })();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(e.context(format!(
            "the export of {} did not complete; nothing was left at {}",
            placed.path.display(),
            output.display()
        )));
    }
    super::capture::finalize(&partial, output)?;
    Ok(Exported {
        bytes: size,
        root_hash,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `rescue check`: the repository at `repo` checked ([`crate::repo::check`]); with `read_data` every
/// chunk it refers to read and hashed.
pub fn check_repo(
    repo: &crate::url::Location,
    read_data: bool,
    threads: usize,
    net: &super::NetOptions,
    ctl: Control,
) -> anyhow::Result<crate::repo::CheckReport> {
    let (repo, _share) = super::place::open_repo(repo, false, net)?;
    let _lock = repo.lock_shared("the check")?;
    crate::repo::check(&repo, read_data, threads, ctl.progress, &ctl.cancel)
}

/// `rescue prune`: the repository at `repo` pruned as `keep` says ([`crate::repo::prune`]).
pub fn prune_repo(
    repo: &crate::url::Location,
    keep: &crate::repo::Keep,
    name: Option<&str>,
    dry_run: bool,
    net: &super::NetOptions,
) -> anyhow::Result<crate::repo::PruneReport> {
    let (repo, _share) = super::place::open_repo(repo, !dry_run, net)?;
    crate::repo::prune(&repo, keep, name, dry_run)
}

/// `rescue snapshots`: every snapshot of the repository at `repo`, and the snapshot files that cannot
/// be read.
pub fn list_snapshots(
    repo: &crate::url::Location,
    net: &super::NetOptions,
) -> anyhow::Result<(Vec<crate::repo::SnapshotEntry>, Vec<String>)> {
    let (repo, _share) = super::place::open_repo(repo, false, net)?;
    crate::repo::list(&repo)
}

/// What [`import`] did.
#[derive(Debug, Clone)]
pub struct Imported {
    pub snapshot: SnapshotEntry,
    pub stats: ChunkStats,
    /// The snapshot's root hash equals the image file's (the chunks were stored as the file holds them,
    /// none already in the repository in another form, and the file is format 1.1).
    pub same_root_hash: bool,
    pub seconds: f64,
}

/// Add the image `image` names (a file, a URL, or another repository's snapshot) to the repository at
/// `repo` as a snapshot of `name`: each chunk checked against its hash, stored unless the repository has
/// it, in the image's order, so the snapshot is the same image (its root hash the same, unless the
/// repository held some chunks compressed otherwise). The snapshot's time is the image's capture time.
pub fn import(
    image: &crate::url::Location,
    repo: &crate::url::Location,
    name: &str,
    net: &super::NetOptions,
    ctl: Control,
) -> anyhow::Result<Imported> {
    use crate::image::{ExtentKind, ImageHeaderInfo, ImageWriter, IndexExtras};
    let started = std::time::Instant::now();
    crate::repo::check_name(name).map_err(anyhow::Error::msg)?;
    let placed = super::place::place(image, false, net)?;
    let reader = placed.open()?;
    let (repo, _share) = super::place::open_repo(repo, true, net)?;
    let _lock = repo.lock_shared(&format!("the import of {image}"))?;
    let index = reader.index();
    let header = reader.header();
    let state = Arc::new(Mutex::new(SinkState::default()));
    let mut w = ImageWriter::new(
        Vec::new(),
        ImageHeaderInfo {
            image_id: header.image_id,
            chunk_size: header.chunk_size,
            slices: header.required_features & crate::image::FEATURE_CHUNK_SLICES != 0,
        },
    )?;
    w.set_sink(Box::new(repo.chunks().sink(state.clone())))?;
    let total: u64 = index.chunks.iter().map(|c| u64::from(c.stored_len)).sum();
    let mut meter = crate::engine::progress::Meter::new("import", total, ctl.progress.clone());
    // The chunks in the image's order: the same ids, and the same offsets where nothing differs.
    for i in 0..index.chunks.len() {
        if ctl.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            anyhow::bail!(
                "cancelled; no snapshot was added (the chunks stored stay for next time)"
            );
        }
        let id = crate::image::ChunkId(i as u64);
        let (rec, payload) = reader
            .read_stored(id)
            .with_context(|| format!("reading {}", placed.path.display()))?;
        let got = w.write_chunk(rec.hash, rec.uncompressed_len, &payload, rec.compression)?;
        if got != id {
            anyhow::bail!(
                "{} holds chunk {} twice (as {i} and {}); it was not written by this program",
                placed.path.display(),
                rec.hash,
                got.0
            );
        }
        meter.advance(u64::from(rec.stored_len), u64::from(rec.stored_len));
    }
    meter.finish();
    for s in &index.streams {
        let sid = w.begin_stream(s.info.clone())?;
        for x in &s.extents {
            match x.kind {
                ExtentKind::Data(c) => w.push_data(sid, x.offset, x.len, c)?,
                ExtentKind::Slice { chunk, at } => w.push_slice(sid, x.offset, x.len, chunk, at)?,
                kind => w.push_extent(sid, x.offset, x.len, kind)?,
            }
        }
    }
    let finished = w.finish(IndexExtras {
        creation: index.creation.clone(),
        disk: index.disk.clone(),
        notes: Vec::new(),
        sections: index.extras.clone(),
    })?;
    let state = std::mem::take(&mut *state.lock().unwrap_or_else(|p| p.into_inner()));
    state.sync(repo.backend.as_ref()).with_context(|| {
        format!(
            "flushing the chunks to {}; no snapshot was added",
            repo.root.display()
        )
    })?;
    let time_unix = u64::try_from(index.creation.created_unix).unwrap_or(0);
    let disk = &index.disk;
    let meta = SnapshotMeta {
        name: name.to_string(),
        time_unix,
        time: crate::units::iso_time(time_unix),
        host: index.creation.host_name.clone(),
        source: SnapshotSource::of(disk),
        image_bytes: finished.bytes_written,
        root_hash: finished.root_hash.to_string(),
        used_bytes: index.streams.iter().map(|s| s.used_bytes).sum(),
        chunks: state.stats.new_chunks + state.stats.reused_chunks,
        stored_bytes: state.referenced_bytes,
        new_chunks: state.stats.new_chunks,
        new_bytes: state.stats.new_bytes,
        tool_version: env!("CARGO_PKG_VERSION").into(),
    };
    let image_id = header.image_id.to_string();
    let snapshot = crate::repo::write_snapshot(&repo, &meta, &finished.inner, &image_id)?;
    Ok(Imported {
        snapshot,
        stats: state.stats,
        same_root_hash: finished.root_hash == reader.root_hash(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// For a capture that may create its destination (jobs, the interface): a repository that does not
/// exist yet is made (encrypted when a passphrase is given), as a missing folder is for an image. A
/// folder on this machine must be missing or empty; a share's folder or an S3 prefix must hold no
/// repository.
pub(super) fn create_missing(
    loc: &crate::url::Location,
    net: &super::NetOptions,
) -> anyhow::Result<()> {
    let crate::url::Location::Snapshot(s) = loc else {
        return Ok(());
    };
    let net = &net.for_snapshot(s);
    let Some(root) = s.repo.local() else {
        if let crate::url::Location::Remote(_) = &*s.repo {
            if !look_at_repo(&s.repo, net)?.exists {
                init_repo(&s.repo, net.passphrase.as_ref(), net)
                    .with_context(|| format!("making the repository {}", s.repo))?;
            }
        }
        return Ok(());
    };
    let empty = std::fs::read_dir(root).map_or(true, |mut d| d.next().is_none());
    if !root.join(crate::repo::CONFIG_FILE).exists() && empty {
        Repo::init(
            root,
            net.passphrase.as_ref().map(crate::url::Secret::expose),
        )
        .with_context(|| format!("making the repository {}", root.display()))?;
    }
    Ok(())
}

/// What an interface learns of the repository at a location before it uses it ([`look_at_repo`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RepoState {
    /// There is a repository there (else a capture makes one).
    pub exists: bool,
    pub encrypted: bool,
    /// Its snapshots, newest last; none listed for an encrypted repository looked at without its
    /// passphrase.
    pub snapshots: Vec<SnapshotEntry>,
    /// The passphrase was given and is right (an encrypted repository's snapshots are then listed).
    pub unlocked: bool,
}

/// Whether there is a repository at `loc` (a folder, an SMB/NFS share's folder, an S3 prefix), whether
/// it is encrypted, and its snapshots: with `net.passphrase` an encrypted one is unlocked (a wrong one is
/// an error), without it only said to be encrypted. Reads only; nothing is locked.
pub fn look_at_repo(
    loc: &crate::url::Location,
    net: &super::NetOptions,
) -> anyhow::Result<RepoState> {
    let (mut repo, share) = match super::place::open_sealed(loc, false, net) {
        Ok(r) => r,
        Err(e) if e.downcast_ref::<crate::repo::NoRepository>().is_some() => {
            return Ok(RepoState {
                exists: false,
                encrypted: false,
                snapshots: Vec::new(),
                unlocked: false,
            })
        }
        Err(e) => return Err(e),
    };
    let encrypted = repo.encrypted();
    let Some(pass) = net.passphrase.as_ref().filter(|_| encrypted) else {
        return Ok(RepoState {
            exists: true,
            encrypted,
            snapshots: if encrypted {
                Vec::new()
            } else {
                crate::repo::list(&repo)?.0
            },
            unlocked: false,
        });
    };
    repo.unlock(Some(pass.expose()))
        .map_err(|e| super::place::shown_as(e, &repo.root, loc, share.is_some()))?;
    Ok(RepoState {
        exists: true,
        encrypted,
        snapshots: crate::repo::list(&repo)?.0,
        unlocked: true,
    })
}

/// A repository found on a drive, for the interface's lists.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundRepo {
    /// Its folder, relative to the drive's root (`""` when the root is the repository).
    pub rel: String,
    pub encrypted: bool,
    /// Its snapshots (none listed for an encrypted one: their names are sealed).
    pub snapshots: Vec<SnapshotEntry>,
}

/// The repositories in `dir` or in its folders down to two levels (a repository's own folders are not
/// searched).
pub fn find_repositories(dir: &std::path::Path) -> Vec<FoundRepo> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, depth: usize, out: &mut Vec<FoundRepo>) {
        if dir.join(crate::repo::CONFIG_FILE).is_file() {
            if let Ok(repo) = Repo::open(dir) {
                let rel = dir
                    .strip_prefix(root)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let snapshots = if repo.encrypted() {
                    Vec::new()
                } else {
                    crate::repo::list(&repo).map(|(l, _)| l).unwrap_or_default()
                };
                out.push(FoundRepo {
                    rel,
                    encrypted: repo.encrypted(),
                    snapshots,
                });
            }
            return;
        }
        if depth >= 2 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut dirs: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            walk(root, &d, depth + 1, out);
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, 0, &mut out);
    out
}

/// `rescue repo init`: a new repository at `loc` (a folder, an SMB/NFS share's folder, an S3 bucket and
/// prefix), encrypted when a passphrase is given.
pub fn init_repo(
    loc: &crate::url::Location,
    passphrase: Option<&crate::url::Secret>,
    net: &super::NetOptions,
) -> anyhow::Result<Repo> {
    use crate::url::{Location, Scheme};
    let pass = passphrase.map(crate::url::Secret::expose);
    match loc {
        Location::Local(p) => Repo::init(p, pass),
        Location::Remote(url) if url.scheme == Scheme::S3 => Repo::init_on(
            super::place::s3_backend(url, net)?,
            std::path::Path::new(&url.to_string()),
            pass,
        ),
        Location::Remote(url) if matches!(url.scheme, Scheme::Smb | Scheme::Nfs) => {
            let share = crate::store::remote::mount(url, net.password.as_ref(), true)?;
            let repo = Repo::init(&share.image, pass).map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    super::describe(&e).replace(&share.image.display().to_string(), &url.to_string())
                )
            });
            let _ = crate::store::mount::unmount(&share.dir);
            repo
        }
        other => anyhow::bail!(
            "{other}: a repository is made in a folder (on a drive or an SMB/NFS share) or an S3 bucket"
        ),
    }
}
