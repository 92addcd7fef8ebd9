//! The capture wizard: what to capture → where (a filesystem on another disk, or a network share) →
//! file name and compression (or the share's URL and password) → summary → run.

use std::path::{Path, PathBuf};

use crate::detect::{Disk, Partition};
use crate::ops::{CaptureSpec, Location};
use crate::plan::{self, CaptureRequest};
use crate::store::{self, Store};

use super::app::{move_sel, App, Effect, Key, OpenedStore, Request};
use super::netloc::{EntryKey, UrlEntry};
use super::unlock::{PassEntry, PassKey};
use super::Step;
use crate::ops::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapStep {
    Parts,
    Dest,
    Name,
    /// The network location: URL and password.
    Url,
    /// An encrypted repository's passphrase (or a new one's, typed twice).
    Pass,
    Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameField {
    Name,
    Level,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CaptureWiz {
    pub source: Disk,
    pub step: CapStep,
    /// Row 0 is "the whole disk"; rows 1.. are the data partitions.
    pub cursor: usize,
    pub whole: bool,
    /// Chosen partitions, by number.
    pub chosen: Vec<u32>,
    pub stores: Vec<Store>,
    pub store_sel: usize,
    /// Waiting for `term` to open a store.
    pub opening: bool,
    pub dest: Option<OpenedStore>,
    /// The URL and password fields (the last row of the destinations).
    pub entry: UrlEntry,
    /// The network location checked, password included: the image goes there instead of `dest`.
    pub remote: Option<Location>,
    /// Relative to the store's root.
    pub name: String,
    pub level: i32,
    pub field: NameField,
    /// An error for the status line, taken by `App`.
    pub error: Option<String>,
    /// Bytes the capture will read (used bytes where known, otherwise the partition size).
    pub estimate: u64,
    /// For a snapshot: what the repository is (looked at before the summary), its passphrase field, and
    /// the passphrase (checked for an existing repository; a new one is made encrypted with it).
    pub repo: Option<crate::ops::RepoState>,
    pub pass: Option<PassEntry>,
    pub passphrase: Option<Secret>,
    /// Waiting for `term` to look at the repository.
    pub looking: bool,
}

impl CaptureWiz {
    pub fn new(app: &App, source: Disk, partition: Option<u32>) -> Result<CaptureWiz, String> {
        if source.size_bytes == 0 {
            return Err(format!(
                "{} cannot be read ({}); nothing to capture",
                source.path,
                source.problems.join("; ")
            ));
        }
        let stores = app
            .stores()
            .into_iter()
            .map(|mut s| {
                if s.unusable.is_none() && s.disk.as_deref() == Some(source.path.as_str()) {
                    s.unusable = Some("it is on the disk being captured".into());
                }
                s
            })
            .collect::<Vec<_>>();
        let mut stores = stores;
        stores.sort_by_key(|s| s.unusable.is_some());
        let mut w = CaptureWiz {
            name: format!(
                "images/{}",
                store::default_image_name(&source, app.now_unix)
            ),
            source,
            step: CapStep::Parts,
            cursor: 0,
            whole: partition.is_none(),
            chosen: partition.into_iter().collect(),
            stores,
            store_sel: 0,
            opening: false,
            dest: None,
            entry: UrlEntry::new(true),
            remote: None,
            level: crate::ops::DEFAULT_LEVEL,
            field: NameField::Name,
            error: None,
            estimate: 0,
            repo: None,
            pass: None,
            passphrase: None,
            looking: false,
        };
        if let Some(n) = partition {
            w.cursor = 1 + w.parts().iter().position(|p| p.number == n).unwrap_or(0);
        }
        w.estimate = w.estimate_bytes(app);
        Ok(w)
    }

    /// The partitions that can be captured on their own (not extended containers).
    pub fn parts(&self) -> Vec<&Partition> {
        self.source
            .partitions
            .iter()
            .filter(|p| !p.extended)
            .collect()
    }

    pub fn typing(&self) -> bool {
        (self.step == CapStep::Name && self.field == NameField::Name)
            || matches!(self.step, CapStep::Url | CapStep::Pass)
    }

    /// Whether the destination list's selection is its last row, "Network location".
    pub fn on_network_row(&self) -> bool {
        self.store_sel == self.stores.len()
    }

    fn request(&self) -> CaptureRequest {
        CaptureRequest {
            partitions: if self.whole {
                vec![]
            } else {
                self.chosen.clone()
            },
            raw: false,
            keep_unallocated: false,
        }
    }

    /// What the capture reads: used bytes where the background scan knows them, sizes otherwise.
    /// What the capture will read, as the plan decides it (tables, kept gaps, no unallocated space) with
    /// the filesystems' used bytes as scanned so far.
    fn estimate_bytes(&self, app: &App) -> u64 {
        let used = |s: &crate::plan::PlannedStream| {
            let path = match s.partition {
                Some(n) => self
                    .source
                    .partitions
                    .iter()
                    .find(|p| p.number == n)?
                    .path
                    .clone()?,
                None => self.source.path.clone(),
            };
            app.usage.get(&path).copied()
        };
        match crate::plan::plan_capture(&self.source, &self.request(), None) {
            Ok(plan) => plan.bytes_to_read(used),
            // Refused (a mounted partition; the wizard says why): the chosen partitions' used bytes.
            Err(_) => self
                .parts()
                .into_iter()
                .filter(|p| self.whole || self.chosen.contains(&p.number))
                .map(|p| {
                    p.path
                        .as_ref()
                        .and_then(|path| app.usage.get(path).copied())
                        .unwrap_or(p.size_bytes)
                })
                .sum(),
        }
    }

    /// The image's full path once a destination is open, or the network location typed; a snapshot
    /// carries the passphrase typed.
    pub fn output(&self) -> Option<Location> {
        let loc = match &self.remote {
            Some(r) => r.clone(),
            None => {
                let d = self.dest.as_ref()?;
                let path = d.dir.join(self.name.trim_start_matches('/'));
                // `FOLDER::NAME`: a snapshot in the repository there.
                Location::parse(&path.to_string_lossy()).unwrap_or_else(|_| path.into())
            }
        };
        Some(match loc {
            Location::Snapshot(mut s) => {
                s.passphrase = self.passphrase.clone();
                Location::Snapshot(s)
            }
            other => other,
        })
    }

    /// Before the summary: a snapshot's repository is looked at (whether it exists, is encrypted);
    /// an image file goes straight on.
    fn on_to_summary(&mut self) -> Step {
        self.repo = None;
        self.passphrase = None;
        self.pass = None;
        match self.output() {
            Some(Location::Snapshot(s)) => {
                self.looking = true;
                Step::Stay(vec![Effect::LookAtRepo(*s.repo, None)])
            }
            _ => {
                self.step = CapStep::Summary;
                Step::Stay(vec![])
            }
        }
    }

    /// The answer to [`Effect::LookAtRepo`]: an encrypted repository asks for its passphrase (a wrong
    /// one is said, and asked again); otherwise the summary follows.
    pub fn on_repo(&mut self, result: Result<crate::ops::RepoState, String>) -> Vec<Effect> {
        if !std::mem::take(&mut self.looking) {
            return vec![];
        }
        match result {
            Err(e) => {
                if let Some(p) = &mut self.pass {
                    p.clear();
                }
                self.error = Some(e);
            }
            Ok(state) => {
                let locked = state.exists && state.encrypted && !state.unlocked;
                if locked {
                    let repo = match self.output() {
                        Some(Location::Snapshot(s)) => *s.repo,
                        _ => return vec![],
                    };
                    self.pass = Some(PassEntry::new(repo, false));
                    self.step = CapStep::Pass;
                } else {
                    if let Some(p) = self.pass.take() {
                        self.passphrase = Some(p.first);
                    }
                    self.repo = Some(state);
                    self.step = CapStep::Summary;
                }
            }
        }
        vec![]
    }

    fn pass_key(&mut self, key: Key) -> Step {
        if self.looking {
            if key == Key::Esc {
                self.looking = false;
            }
            return Step::Stay(vec![]);
        }
        let Some(p) = &mut self.pass else {
            self.step = CapStep::Summary;
            return Step::Stay(vec![]);
        };
        match p.key(key, &mut self.error) {
            PassKey::Done(pass) if p.new => {
                self.passphrase = Some(pass);
                self.pass = None;
                self.step = CapStep::Summary;
            }
            PassKey::Done(pass) => {
                self.looking = true;
                return Step::Stay(vec![Effect::LookAtRepo(p.repo.clone(), Some(pass))]);
            }
            PassKey::Back => {
                let new = p.new;
                self.pass = None;
                self.step = if new {
                    CapStep::Summary
                } else if self.remote.is_some() {
                    CapStep::Url
                } else {
                    CapStep::Name
                };
            }
            PassKey::Stay => {}
        }
        Step::Stay(vec![])
    }

    /// Whether the snapshot goes into a repository the capture makes.
    pub fn new_repo(&self) -> bool {
        self.repo.as_ref().is_some_and(|r| !r.exists)
    }

    /// A warning about the destination's room for this capture, if any (none for a share: its free
    /// space is known only once it is mounted).
    pub fn space_warning(&self) -> Option<String> {
        if self.remote.is_some() {
            return None;
        }
        let d = self.dest.as_ref()?;
        store::space_warning(
            store::max_file_size(d.store.fs),
            d.free_bytes,
            self.estimate,
        )
    }

    pub fn on_key(&mut self, key: Key, app: &App) -> Step {
        if self.looking && self.step != CapStep::Pass {
            if key == Key::Esc {
                self.looking = false;
            }
            return Step::Stay(vec![]);
        }
        match self.step {
            CapStep::Parts => self.parts_key(key, app),
            CapStep::Dest => self.dest_key(key),
            CapStep::Name => self.name_key(key),
            CapStep::Pass => self.pass_key(key),
            CapStep::Url => {
                match self.entry.key(key, &mut self.error) {
                    EntryKey::Done(loc) => {
                        self.remote = Some(loc);
                        return self.on_to_summary();
                    }
                    EntryKey::Back => self.step = CapStep::Dest,
                    EntryKey::Stay => {}
                    EntryKey::ReadHostKey(loc) => {
                        return Step::Stay(vec![Effect::ReadHostKey(loc)]);
                    }
                }
                Step::Stay(vec![])
            }
            CapStep::Summary => match key {
                Key::Enter => match self.output() {
                    Some(output) => Step::Start(Request::Capture(CaptureSpec {
                        source: PathBuf::from(&self.source.path),
                        output,
                        partitions: self.request().partitions,
                        raw: false,
                        keep_unallocated: false,
                        level: self.level,
                        threads: app.threads,
                        ..Default::default()
                    })),
                    None => {
                        self.step = CapStep::Dest;
                        Step::Stay(vec![])
                    }
                },
                // A repository the capture makes: encrypted with a passphrase typed twice.
                Key::Char('e') if self.new_repo() => {
                    if let Some(Location::Snapshot(s)) = self.output() {
                        self.pass = Some(PassEntry::new(*s.repo, true));
                        self.step = CapStep::Pass;
                    }
                    Step::Stay(vec![])
                }
                Key::Esc | Key::Backspace | Key::Left => {
                    self.step = if self.remote.is_some() {
                        CapStep::Url
                    } else {
                        CapStep::Name
                    };
                    Step::Stay(vec![])
                }
                _ => Step::Stay(vec![]),
            },
        }
    }

    fn parts_key(&mut self, key: Key, app: &App) -> Step {
        let rows = 1 + self.parts().len();
        if move_sel(&mut self.cursor, rows, key) {
            return Step::Stay(vec![]);
        }
        match key {
            Key::Char(' ') => {
                if self.cursor == 0 {
                    self.whole = true;
                    self.chosen.clear();
                } else {
                    let n = self.parts()[self.cursor - 1].number;
                    self.whole = false;
                    if let Some(i) = self.chosen.iter().position(|&c| c == n) {
                        self.chosen.remove(i);
                    } else {
                        self.chosen.push(n);
                        self.chosen.sort_unstable();
                    }
                }
                self.estimate = self.estimate_bytes(app);
                Step::Stay(vec![])
            }
            Key::Enter => {
                if !self.whole && self.chosen.is_empty() {
                    self.error = Some(
                        "choose the whole disk or at least one partition (Space marks it)".into(),
                    );
                    return Step::Stay(vec![]);
                }
                // The plan's own refusals (an extended container, a vanished partition).
                if let Err(r) = plan::plan_capture(&self.source, &self.request(), None) {
                    self.error = Some(r.to_string());
                    return Step::Stay(vec![]);
                }
                self.estimate = self.estimate_bytes(app);
                self.step = CapStep::Dest;
                Step::Stay(vec![])
            }
            Key::Esc => Step::Back,
            _ => Step::Stay(vec![]),
        }
    }

    fn dest_key(&mut self, key: Key) -> Step {
        if self.opening {
            return Step::Stay(vec![]);
        }
        // The stores, then "Network location".
        if move_sel(&mut self.store_sel, self.stores.len() + 1, key) {
            return Step::Stay(vec![]);
        }
        match key {
            Key::Enter => match self.stores.get(self.store_sel) {
                None => {
                    self.remote = None;
                    self.step = CapStep::Url;
                    Step::Stay(vec![])
                }
                Some(s) => super::picker::open_store(
                    s,
                    crate::store::Access::Write,
                    "hold the image",
                    &mut self.opening,
                    &mut self.error,
                ),
            },
            Key::Esc | Key::Left => {
                self.step = CapStep::Parts;
                Step::Stay(vec![])
            }
            _ => Step::Stay(vec![]),
        }
    }

    pub fn on_store(&mut self, result: Result<OpenedStore, String>) {
        self.opening = false;
        match result {
            Ok(s) => {
                // A drive holding a repository: a new snapshot in it is the likely wish.
                if let Some(r) = s.repos.first() {
                    let folder = if r.rel.is_empty() {
                        "."
                    } else {
                        r.rel.as_str()
                    };
                    self.name = format!("{folder}::{}", self.snapshot_default());
                }
                self.dest = Some(s);
                self.remote = None;
                self.step = CapStep::Name;
                self.field = NameField::Name;
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn name_key(&mut self, key: Key) -> Step {
        match (self.field, key) {
            (_, Key::Tab) | (_, Key::BackTab) => {
                self.field = match self.field {
                    NameField::Name => NameField::Level,
                    NameField::Level => NameField::Name,
                };
            }
            (NameField::Name, Key::Char(c)) if !c.is_control() => self.name.push(c),
            (NameField::Name, Key::Backspace) => {
                self.name.pop();
            }
            (NameField::Level, Key::Char('+') | Key::Right | Key::Up) => {
                self.level = (self.level + 1).min(19)
            }
            (NameField::Level, Key::Char('-') | Key::Left | Key::Down) => {
                self.level = (self.level - 1).max(1)
            }
            (_, Key::Enter) => match self.check_name() {
                Ok(()) => return self.on_to_summary(),
                Err(e) => self.error = Some(e),
            },
            (_, Key::Esc) => {
                self.step = CapStep::Dest;
            }
            _ => {}
        }
        Step::Stay(vec![])
    }

    /// A snapshot name for this source: `pc-SERIAL` (or the model, or `pc`).
    pub fn snapshot_default(&self) -> String {
        let id = self
            .source
            .serial
            .as_deref()
            .or(self.source.model.as_deref())
            .map(store::sanitize)
            .unwrap_or_default();
        let name: String = format!("pc-{id}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        name.trim_end_matches('-').to_string()
    }

    /// The file name must be a relative path ending in `.rimg` that does not exist yet; or
    /// `FOLDER::NAME`, a snapshot in the repository in that folder (made when missing).
    pub fn check_name(&mut self) -> Result<(), String> {
        let name = self.name.trim().trim_start_matches('/').to_string();
        if let Some((folder, snap)) = name.rsplit_once("::") {
            crate::url::check_name(snap)?;
            if folder.is_empty()
                || Path::new(folder).components().any(|c| {
                    matches!(
                        c,
                        std::path::Component::ParentDir | std::path::Component::RootDir
                    )
                })
            {
                return Err(
                    "write FOLDER::NAME: the repository's folder on this drive (made if missing), \
                     then the snapshot's name"
                        .into(),
                );
            }
            self.name = name;
            return Ok(());
        }
        if name.is_empty() || name.ends_with('/') {
            return Err("give the image a file name".into());
        }
        if Path::new(&name).components().any(|c| {
            matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::RootDir
            )
        }) {
            return Err("the name must stay inside the chosen drive (no ..)".into());
        }
        let name = if name.ends_with(&format!(".{}", store::IMAGE_EXT)) {
            name
        } else {
            format!("{name}.{}", store::IMAGE_EXT)
        };
        self.name = name;
        if let Some(out) = self.output() {
            if out.local().is_some_and(Path::exists) {
                return Err(format!("{out} already exists; choose another name"));
            }
        }
        Ok(())
    }
}
