//! Snapshot files (`snapshots/<time>-<image id>.snap`) and how the user names a snapshot:
//! `REPO::NAME` (the latest of that name), `REPO::NAME@latest`, `REPO::NAME@2026-12-07T08:49:27Z` (or a
//! unique prefix of the time, `@2026-12-07`).
//!
//! ```text
//! magic "\x89RSCSNP\n" │ u32 version (1) │ u32 meta_len │ meta (JSON) │ u64 image_len │ image │ [32] blake3
//! ```
//! `image` is the snapshot's image without its chunk frames: header, index, footer (docs/FORMAT.md), the
//! index giving each chunk the offset of its frame in the self-contained image. The blake3 covers every
//! byte before it. A snapshot file is written to `tmp/`, flushed, and renamed into `snapshots/` only
//! after every chunk it refers to is flushed: a snapshot listed is a snapshot whole.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::config::Repo;
pub use crate::url::{check_name, SnapshotRef, When};

const MAGIC: [u8; 8] = *b"\x89RSCSNP\n";
/// An encrypted repository's snapshot files (docs/REPOSITORY.md §10).
const MAGIC_SEALED: [u8; 8] = *b"\x89RSCSNE\n";
const VERSION: u32 = 1;
/// Largest metadata a reader accepts.
const MAX_META: u32 = 1 << 20;
/// Largest image part (header, index, footer) a reader accepts: the image format's index limit.
const MAX_IMAGE: u64 = crate::image::MAX_INDEX_LEN + (1 << 20);

/// The source a snapshot was captured from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSource {
    pub path: String,
    pub model: String,
    pub serial: String,
    pub size: u64,
    /// `gpt`, `mbr`, `none`…
    pub table: String,
}

impl SnapshotSource {
    /// The source as the image's index describes it.
    pub fn of(disk: &crate::image::DiskInfo) -> SnapshotSource {
        SnapshotSource {
            path: disk.path.clone(),
            model: disk.model.clone(),
            serial: disk.serial.clone(),
            size: disk.size,
            table: format!("{:?}", disk.table_kind).to_lowercase(),
        }
    }
}

/// What a snapshot is, kept beside its image in the snapshot file (and listed by `rescue snapshots`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub name: String,
    pub time_unix: u64,
    /// `time_unix` as `2026-12-07T08:49:27Z`.
    pub time: String,
    pub host: String,
    pub source: SnapshotSource,
    /// Size of the self-contained image (what `export` writes).
    pub image_bytes: u64,
    /// The image's root hash (docs/FORMAT.md §8), the same in the exported image.
    pub root_hash: String,
    /// Bytes of the source captured (used blocks).
    pub used_bytes: u64,
    /// Distinct chunks the snapshot refers to, and their stored size.
    pub chunks: u64,
    pub stored_bytes: u64,
    /// What this capture added to the repository: objects and their size.
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub tool_version: String,
}

/// One snapshot file found in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// The file name without `.snap`.
    pub id: String,
    /// Its key in the repository (`snapshots/<id>.snap`).
    pub key: String,
    /// Where it is, for messages (and on this machine's filesystems, the file itself).
    pub path: PathBuf,
    pub meta: SnapshotMeta,
}

impl SnapshotEntry {
    /// `NAME@TIME`, how the user names it.
    pub fn label(&self) -> String {
        format!("{}@{}", self.meta.name, self.meta.time)
    }
}

/// Write a snapshot file for `meta` and `image` (header, index, footer) into the repository. The chunks
/// must be flushed already. Returns the entry as listed from now on.
pub fn write(
    repo: &Repo,
    meta: &SnapshotMeta,
    image: &[u8],
    image_id: &str,
) -> anyhow::Result<SnapshotEntry> {
    let stamp: String = meta
        .time
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let id = format!("{stamp}-{}", &image_id[..16.min(image_id.len())]);
    let meta_json = serde_json::to_vec(meta)?;
    let mut body = Vec::with_capacity(image.len() + meta_json.len() + 12);
    body.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
    body.extend_from_slice(&meta_json);
    body.extend_from_slice(&(image.len() as u64).to_le_bytes());
    body.extend_from_slice(image);
    let b = match &repo.keys {
        Some(keys) => {
            let mut b = MAGIC_SEALED.to_vec();
            b.extend_from_slice(&VERSION.to_le_bytes());
            b.extend_from_slice(&keys.seal_snapshot(&body, &sealed_aad(repo, &id)));
            b
        }
        None => {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&VERSION.to_le_bytes());
            b.extend_from_slice(&body);
            let sum = blake3::hash(&b);
            b.extend_from_slice(sum.as_bytes());
            b
        }
    };
    let key = format!("snapshots/{id}.snap");
    let path = shown_path(repo, &key);
    let made = repo
        .backend
        .put_new(&key, &b, true)
        .with_context(|| format!("storing the snapshot {}", path.display()))?;
    if !made {
        bail!(
            "the repository {} holds this image already (the snapshot file {} is there); nothing was \
             added",
            repo.root.display(),
            path.display()
        );
    }
    Ok(SnapshotEntry {
        id,
        key,
        path,
        meta: meta.clone(),
    })
}

/// Where an object of the repository is, for messages.
fn shown_path(repo: &Repo, key: &str) -> PathBuf {
    repo.backend
        .local_path(key)
        .unwrap_or_else(|| PathBuf::from(format!("{}/{key}", repo.backend.describe())))
}

/// What a sealed snapshot file is bound to: its format, its repository and its own name, so a file
/// renamed or copied from another repository fails to open.
fn sealed_aad(repo: &Repo, id: &str) -> Vec<u8> {
    format!("rescue snapshot v{VERSION} {} {id}", repo.config.id).into_bytes()
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("the snapshot file {} is damaged: {why}", path.display())
}

/// The metadata of a snapshot file: for a plain file only its start is read (listing), unchecked
/// (opening the snapshot checks everything); a sealed file is opened whole.
fn read_meta(repo: &Repo, key: &str) -> anyhow::Result<SnapshotMeta> {
    let path = &shown_path(repo, key);
    if repo.keys.is_some() {
        return load(repo, key).map(|(m, _)| m);
    }
    let head = repo
        .backend
        .get_range(key, 0, 16)
        .map_err(|e| damaged(path, format!("it is too short ({e})")))?;
    check_head(path, &head[..12], false)?;
    let meta_len = meta_len(path, &head[12..])?;
    let meta = repo
        .backend
        .get_range(key, 16, meta_len)
        .map_err(|e| damaged(path, format!("it ends inside its metadata ({e})")))?;
    serde_json::from_slice(&meta).map_err(|e| damaged(path, format!("its metadata: {e}")))
}

/// Magic and version.
fn check_head(path: &Path, head: &[u8], sealed: bool) -> anyhow::Result<()> {
    let (want, other) = if sealed {
        (MAGIC_SEALED, MAGIC)
    } else {
        (MAGIC, MAGIC_SEALED)
    };
    if head.len() < 12 || head[..8] != want {
        if head.len() >= 8 && head[..8] == other {
            bail!(
                "the snapshot file {} is {} but the repository is {}: it was copied from another \
                 repository",
                path.display(),
                if sealed { "not encrypted" } else { "encrypted" },
                if sealed { "encrypted" } else { "not" }
            );
        }
        return Err(damaged(path, "it does not start as a snapshot file does"));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        bail!(
            "the snapshot file {} has version {version}; this program reads version {VERSION}",
            path.display()
        );
    }
    Ok(())
}

fn meta_len(path: &Path, b: &[u8]) -> anyhow::Result<usize> {
    let len = b
        .get(..4)
        .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]))
        .ok_or_else(|| damaged(path, "it ends before its metadata"))?;
    if len > MAX_META {
        return Err(damaged(
            path,
            format!("it gives its metadata as {len} bytes"),
        ));
    }
    Ok(len as usize)
}

/// A whole snapshot file, checked (its checksum, or for an encrypted repository its authentication):
/// its metadata and its image part.
pub fn load(repo: &Repo, key: &str) -> anyhow::Result<(SnapshotMeta, Vec<u8>)> {
    let path = &shown_path(repo, key);
    let b = repo
        .backend
        .get(key)
        .with_context(|| format!("reading {}", path.display()))?
        .ok_or_else(|| anyhow::anyhow!("the snapshot file {} is gone", path.display()))?;
    match &repo.keys {
        None => parse(path, &b),
        Some(keys) => {
            check_head(path, &b, true)?;
            let id = key
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_suffix(".snap"))
                .unwrap_or_default();
            let body = keys
                .open_snapshot(&b[12..], &sealed_aad(repo, id))
                .map_err(|e| damaged(path, e))?;
            parse_body(path, &body)
        }
    }
}

/// A plain snapshot file's bytes (read from `path`, named in errors): its metadata and image part,
/// after checking its checksum and structure.
pub fn parse(path: &Path, b: &[u8]) -> anyhow::Result<(SnapshotMeta, Vec<u8>)> {
    if b.len() < 16 + 8 + 32 {
        return Err(damaged(path, format!("it is {} bytes long", b.len())));
    }
    check_head(path, b, false)?;
    let (all, sum) = b.split_at(b.len() - 32);
    if blake3::hash(all).as_bytes() != sum {
        return Err(damaged(
            path,
            "its checksum does not match its contents (changed or cut short after it was written)",
        ));
    }
    parse_body(path, &all[12..])
}

/// `meta_len │ meta │ image_len │ image`.
fn parse_body(path: &Path, body: &[u8]) -> anyhow::Result<(SnapshotMeta, Vec<u8>)> {
    let meta_end = 4 + meta_len(path, body)?;
    let meta: SnapshotMeta = body
        .get(4..meta_end)
        .ok_or_else(|| damaged(path, "it ends inside its metadata"))
        .and_then(|m| {
            serde_json::from_slice(m).map_err(|e| damaged(path, format!("its metadata: {e}")))
        })?;
    let image_len = body
        .get(meta_end..meta_end + 8)
        .map(|l| u64::from_le_bytes(l.try_into().unwrap_or([0; 8])))
        .ok_or_else(|| damaged(path, "it ends before its image"))?;
    if image_len > MAX_IMAGE || meta_end as u64 + 8 + image_len != body.len() as u64 {
        return Err(damaged(
            path,
            format!("it gives its image as {image_len} bytes, which is not what it holds"),
        ));
    }
    Ok((meta, body[meta_end + 8..].to_vec()))
}

/// Every snapshot of the repository, by name then time; files that cannot be read are named in the
/// second list (a damaged file does not hide the others).
pub fn list(repo: &Repo) -> anyhow::Result<(Vec<SnapshotEntry>, Vec<String>)> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let keys = repo
        .backend
        .list("snapshots/")
        .with_context(|| format!("listing the snapshots of {}", repo.root.display()))?;
    for (key, _) in keys {
        let Some(id) = key
            .strip_prefix("snapshots/")
            .and_then(|n| n.strip_suffix(".snap"))
            .filter(|n| !n.contains('/'))
            .map(str::to_string)
        else {
            continue;
        };
        let path = shown_path(repo, &key);
        match read_meta(repo, &key) {
            Ok(meta) => out.push(SnapshotEntry {
                id,
                key,
                path,
                meta,
            }),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    out.sort_by(|a, b| {
        (&a.meta.name, a.meta.time_unix, &a.id).cmp(&(&b.meta.name, b.meta.time_unix, &b.id))
    });
    Ok((out, problems))
}

/// The snapshot `name` + `when` names in the repository.
pub fn resolve(repo: &Repo, name: &str, when: &When) -> anyhow::Result<SnapshotEntry> {
    let (all, _) = list(repo)?;
    let named: Vec<&SnapshotEntry> = all.iter().filter(|e| e.meta.name == name).collect();
    if named.is_empty() {
        let mut names: Vec<&str> = all.iter().map(|e| e.meta.name.as_str()).collect();
        names.dedup();
        bail!(
            "the repository {} has no snapshot named {name}{}",
            repo.root.display(),
            if names.is_empty() {
                " (it has no snapshots)".to_string()
            } else {
                format!("; it has {}", names.join(", "))
            }
        );
    }
    match when {
        When::Latest => Ok(named[named.len() - 1].clone()),
        When::At(t) => {
            let hits: Vec<&&SnapshotEntry> = named
                .iter()
                .filter(|e| e.meta.time == *t || e.meta.time.starts_with(t.as_str()))
                .collect();
            match hits.as_slice() {
                [one] => Ok((**one).clone()),
                [] => bail!(
                    "{name} has no snapshot at {t}; it has {}",
                    named
                        .iter()
                        .map(|e| e.meta.time.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                many => bail!(
                    "{name}@{t} matches {} snapshots ({}); give the whole time",
                    many.len(),
                    many.iter()
                        .map(|e| e.meta.time.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
}
