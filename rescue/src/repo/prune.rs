//! `rescue prune`: remove the snapshots the keep rules do not keep, then the chunk objects no remaining
//! snapshot refers to (mark and sweep), under the repository's exclusive lock (`lock`): no capture,
//! restore or other prune runs meanwhile, so no chunk in use is removed.
//!
//! Rules, per snapshot name, newest first (as restic and Proxmox Backup Server count them): `last N`
//! keeps the N newest; `daily N` the newest of each of the N newest days that have snapshots (UTC);
//! `weekly N` of weeks (Monday to Sunday); `monthly N` of months. A snapshot kept by any rule stays.

use std::collections::BTreeSet;

use anyhow::{bail, Context};

use super::check::object_keys;
use super::config::Repo;
use super::snapshot::{self, SnapshotEntry};
use super::vimage::SnapshotImage;

/// How many of each to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    pub last: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Keep {
    fn none(&self) -> bool {
        *self == Keep::default()
    }
}

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// `NAME@TIME` of each snapshot kept and removed.
    pub kept: Vec<String>,
    pub removed: Vec<String>,
    /// Chunk objects removed (dry: that only removed snapshots refer to) and their size.
    pub chunks_removed: u64,
    pub bytes_freed: u64,
    /// Files of stopped captures removed from `tmp/`.
    pub leftovers_removed: u64,
}

/// The snapshots of one name (oldest first, as listed) that `keep` keeps, by id.
pub fn kept(of_one_name: &[&SnapshotEntry], keep: &Keep) -> BTreeSet<String> {
    // (how many more to keep, the bucket of the last one kept, the bucket of a snapshot).
    type Bucket = fn(usize, u64) -> String;
    let mut rules: [(usize, Option<String>, Bucket); 4] = [
        // Every snapshot is its own bucket: two taken in one second are two.
        (keep.last, None, |i, _| i.to_string()),
        (keep.daily, None, |_, t| (t / 86_400).to_string()),
        // 1970-01-01 was a Thursday: three days on, weeks start on Mondays.
        (keep.weekly, None, |_, t| ((t / 86_400 + 3) / 7).to_string()),
        (keep.monthly, None, |_, t| {
            crate::units::iso_time(t)[..7].to_string()
        }),
    ];
    let mut out = BTreeSet::new();
    for (i, e) in of_one_name.iter().rev().enumerate() {
        for (left, last, bucket) in rules.iter_mut() {
            if *left == 0 {
                continue;
            }
            let b = bucket(i, e.meta.time_unix);
            if last.as_deref() != Some(b.as_str()) {
                *left -= 1;
                *last = Some(b);
                out.insert(e.id.clone());
            }
        }
    }
    out
}

/// Prune `repo` (only the snapshots of `name` when given) as `keep` says; `dry_run` removes nothing.
pub fn prune(
    repo: &Repo,
    keep: &Keep,
    name: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<PruneReport> {
    if keep.none() {
        bail!(
            "prune needs at least one --keep-last, --keep-daily, --keep-weekly or --keep-monthly of 1 or \
             more: with none it would remove every snapshot"
        );
    }
    let _lock = if dry_run {
        None
    } else {
        Some(repo.lock_exclusive()?)
    };
    let (all, problems) = snapshot::list(repo)?;
    if !problems.is_empty() {
        bail!(
            "some snapshot files cannot be read ({}); nothing was removed: without them it cannot be \
             told which chunks are in use. See `rescue check`",
            problems.join("; ")
        );
    }
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    let mut names: Vec<&str> = all.iter().map(|e| e.meta.name.as_str()).collect();
    names.dedup();
    let mut remove: Vec<&SnapshotEntry> = Vec::new();
    for n in names {
        let of_name: Vec<&SnapshotEntry> = all.iter().filter(|e| e.meta.name == n).collect();
        if name.is_some_and(|only| only != n) {
            report.kept.extend(of_name.iter().map(|e| e.label()));
            continue;
        }
        let keep_ids = kept(&of_name, keep);
        for e in of_name {
            if keep_ids.contains(&e.id) {
                report.kept.push(e.label());
            } else {
                report.removed.push(e.label());
                remove.push(e);
            }
        }
    }
    // Mark: every chunk a remaining snapshot refers to. A snapshot that cannot be read stops the prune
    // before anything is removed.
    let removed_ids: BTreeSet<&str> = remove.iter().map(|e| e.id.as_str()).collect();
    let mut in_use = BTreeSet::new();
    let store = repo.chunks();
    for e in all.iter().filter(|e| !removed_ids.contains(e.id.as_str())) {
        let img = SnapshotImage::open(repo, e).with_context(|| {
            format!(
                "the snapshot {} cannot be read, so it cannot be told which chunks are in use; nothing \
                 was removed",
                e.label()
            )
        })?;
        in_use.extend(img.chunks().iter().map(|c| store.key(&c.hash)));
    }
    if !dry_run {
        for e in &remove {
            repo.backend
                .delete(&e.key)
                .with_context(|| format!("removing the snapshot file {}", e.path.display()))?;
        }
    }
    // Sweep: objects no remaining snapshot refers to (including those of stopped captures).
    for (key, len) in object_keys(repo)? {
        if in_use.contains(&key) {
            continue;
        }
        if !dry_run {
            repo.backend
                .delete(&key)
                .with_context(|| format!("removing the chunk object {key}"))?;
        }
        report.chunks_removed += 1;
        report.bytes_freed += len;
    }
    if !dry_run {
        report.leftovers_removed = repo.backend.remove_leftovers()?;
    }
    Ok(report)
}
