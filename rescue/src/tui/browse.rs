//! "Browse an image": the files inside an image (or a snapshot, or a virtual machine's disk) without
//! restoring it. A drive and an image on it (or a network location), the partition whose files to see,
//! then its folders: Enter opens a folder, Space marks a file or folder, `c` copies what is marked (or
//! the entry under the cursor) into a new folder on a drive that can be written. The copy is a job
//! ([`crate::ops::Request::CopyFiles`]): its progress and result screens are the other jobs'.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::ops::{CopyFilesSpec, FileEntry, FileKind, FilesSpec, Listing, Location, Request};
use crate::plan::StreamRole;
use crate::store::Store;

use super::app::{move_sel, App, Effect, ImageSummary, Key, OpenedStore};
use super::picker::{ImageKey, ImagePicker, Looked};
use super::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BStep {
    Store,
    Image,
    /// A network location instead of a drive's image list.
    Url,
    /// Which partition's files (skipped when the image holds one).
    Partition,
    Files,
    /// The drive to copy onto.
    Dest,
    /// The new folder's name on it.
    Name,
}

/// A partition offered: its number and a line describing it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartRow {
    pub number: u32,
    pub shown: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrowseWiz {
    pub step: BStep,
    pub pick: ImagePicker,
    pub image: Option<Location>,
    /// Waiting for the image to be read or a folder to be listed; Esc stops waiting.
    pub reading: bool,
    pub parts: Vec<PartRow>,
    pub part_sel: usize,
    pub partition: Option<u32>,
    /// The folder shown, and what the filesystem is.
    pub path: String,
    pub fs: String,
    pub entries: Vec<FileEntry>,
    pub sel: usize,
    /// Marked entries, by full path (across folders).
    pub marked: BTreeSet<String>,
    pub dests: Vec<Store>,
    pub dest_sel: usize,
    pub opening: bool,
    pub dest: Option<OpenedStore>,
    pub name: String,
    pub error: Option<String>,
    now_unix: u64,
}

/// `dir/name` as a path of the filesystem.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The folder above `path` (the root's is the root).
fn parent(path: &str) -> String {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((up, _)) => up.into(),
    }
}

impl BrowseWiz {
    pub fn new(app: &App) -> BrowseWiz {
        let mut dests = app.stores();
        dests.sort_by_key(|s| s.unusable.is_some());
        BrowseWiz {
            step: BStep::Store,
            pick: ImagePicker::new(app),
            image: None,
            reading: false,
            parts: Vec::new(),
            part_sel: 0,
            partition: None,
            path: "/".into(),
            fs: String::new(),
            entries: Vec::new(),
            sel: 0,
            marked: BTreeSet::new(),
            dests,
            dest_sel: 0,
            opening: false,
            dest: None,
            name: String::new(),
            error: None,
            now_unix: app.now_unix,
        }
    }

    pub fn typing(&self) -> bool {
        matches!(self.step, BStep::Url | BStep::Name)
            || (self.step == BStep::Image && self.pick.typing())
    }

    fn list(&mut self, path: String) -> Step {
        let Some(image) = self.image.clone() else {
            return Step::Stay(vec![]);
        };
        self.reading = true;
        Step::Stay(vec![Effect::ListFiles(
            FilesSpec {
                image,
                partition: self.partition,
            },
            path,
        )])
    }

    fn chosen(&mut self, image: Location) -> Step {
        self.image = Some(image.clone());
        self.marked.clear();
        self.reading = true;
        Step::Stay(vec![Effect::Inspect(image)])
    }

    pub fn on_key(&mut self, key: Key, _app: &App) -> Step {
        if self.reading || self.opening {
            if key == Key::Esc {
                self.reading = false;
                self.opening = false;
            }
            return Step::Stay(vec![]);
        }
        let picked = match self.step {
            BStep::Store if key == Key::Enter && self.pick.on_network_row() => {
                self.step = BStep::Url;
                return Step::Stay(vec![]);
            }
            BStep::Store => return self.pick.store_key(key, &mut self.error),
            BStep::Image => self.pick.image_key(key, &mut self.error),
            BStep::Url => self.pick.url_key(key, &mut self.error),
            BStep::Partition => return self.partition_key(key),
            BStep::Files => return self.files_key(key),
            BStep::Dest => return self.dest_key(key),
            BStep::Name => return self.name_key(key),
        };
        match picked {
            ImageKey::Chosen(image) => self.chosen(image),
            ImageKey::Back => {
                self.step = BStep::Store;
                Step::Stay(vec![])
            }
            ImageKey::Stay => Step::Stay(vec![]),
            ImageKey::ReadHostKey(loc) => Step::Stay(vec![Effect::ReadHostKey(loc)]),
            ImageKey::LookAtRepo(loc, pass) => Step::Stay(vec![Effect::LookAtRepo(loc, pass)]),
        }
    }

    fn partition_key(&mut self, key: Key) -> Step {
        if move_sel(&mut self.part_sel, self.parts.len(), key) {
            return Step::Stay(vec![]);
        }
        match key {
            Key::Enter => {
                self.partition = self.parts.get(self.part_sel).map(|p| p.number);
                self.list("/".into())
            }
            Key::Esc | Key::Left => {
                self.step = BStep::Image;
                Step::Stay(vec![])
            }
            _ => Step::Stay(vec![]),
        }
    }

    fn files_key(&mut self, key: Key) -> Step {
        if move_sel(&mut self.sel, self.entries.len(), key) {
            return Step::Stay(vec![]);
        }
        let selected = self.entries.get(self.sel).cloned();
        match key {
            Key::Enter | Key::Right => match selected {
                Some(e) if e.kind == FileKind::Dir => self.list(join(&self.path, &e.name)),
                Some(e) if key == Key::Enter => {
                    self.toggle(&e);
                    Step::Stay(vec![])
                }
                _ => Step::Stay(vec![]),
            },
            Key::Char(' ') => {
                if let Some(e) = selected {
                    self.toggle(&e);
                    self.sel = (self.sel + 1).min(self.entries.len().saturating_sub(1));
                }
                Step::Stay(vec![])
            }
            Key::Backspace | Key::Left if self.path != "/" => self.list(parent(&self.path)),
            Key::Char('c') => {
                if self.marked.is_empty() {
                    match selected {
                        Some(e) => {
                            self.marked.insert(join(&self.path, &e.name));
                        }
                        None => {
                            self.error = Some("this folder is empty: nothing to copy".into());
                            return Step::Stay(vec![]);
                        }
                    }
                }
                self.step = BStep::Dest;
                Step::Stay(vec![])
            }
            Key::Esc => {
                self.step = if self.parts.len() > 1 {
                    BStep::Partition
                } else {
                    BStep::Image
                };
                Step::Stay(vec![])
            }
            _ => Step::Stay(vec![]),
        }
    }

    fn toggle(&mut self, e: &FileEntry) {
        let p = join(&self.path, &e.name);
        if !self.marked.remove(&p) {
            self.marked.insert(p);
        }
    }

    fn dest_key(&mut self, key: Key) -> Step {
        if move_sel(&mut self.dest_sel, self.dests.len(), key) {
            return Step::Stay(vec![]);
        }
        match key {
            Key::Enter => match self.dests.get(self.dest_sel) {
                None => {
                    self.error = Some(
                        "no drive to copy onto: plug in a USB stick or a drive (it appears here)"
                            .into(),
                    );
                    Step::Stay(vec![])
                }
                Some(s) => super::picker::open_store(
                    s,
                    crate::store::Access::Write,
                    "hold the files",
                    &mut self.opening,
                    &mut self.error,
                ),
            },
            Key::Esc | Key::Left => {
                self.step = BStep::Files;
                Step::Stay(vec![])
            }
            _ => Step::Stay(vec![]),
        }
    }

    fn name_key(&mut self, key: Key) -> Step {
        match key {
            Key::Char(c) if !c.is_control() => self.name.push(c),
            Key::Backspace => {
                self.name.pop();
            }
            Key::Esc => self.step = BStep::Dest,
            Key::Enter => {
                let (Some(dest), Some(image)) = (&self.dest, &self.image) else {
                    return Step::Stay(vec![]);
                };
                let name = self.name.trim().trim_matches('/');
                if name.is_empty() || name.split('/').any(|p| p == "..") {
                    self.error = Some("name the new folder (no `..`)".into());
                    return Step::Stay(vec![]);
                }
                let out_dir: PathBuf = dest.dir.join(name);
                if out_dir.exists() {
                    self.error = Some(format!(
                        "{} exists already: files are never overwritten; choose another name",
                        out_dir.display()
                    ));
                    return Step::Stay(vec![]);
                }
                return Step::Start(Request::CopyFiles(CopyFilesSpec {
                    image: image.clone(),
                    partition: self.partition,
                    paths: self.marked.iter().cloned().collect(),
                    out_dir,
                }));
            }
            _ => {}
        }
        Step::Stay(vec![])
    }

    pub fn on_store(&mut self, result: Result<OpenedStore, String>) {
        if self.step == BStep::Dest {
            self.opening = false;
            match result {
                Ok(s) => {
                    self.dest = Some(s);
                    self.name = format!(
                        "files/{}-{}",
                        self.image_stem(),
                        crate::units::date_stamp(self.now_unix)
                    );
                    self.step = BStep::Name;
                }
                Err(e) => self.error = Some(e),
            }
            return;
        }
        if self.pick.on_store(result, &mut self.error) {
            self.step = BStep::Image;
        }
    }

    /// The image's name without its folder and extension, for the default folder name.
    fn image_stem(&self) -> String {
        let shown = self
            .image
            .as_ref()
            .map(|l| l.to_string())
            .unwrap_or_default();
        let last = shown.rsplit(['/', ':']).next().unwrap_or("image");
        let stem = last.split('@').next().unwrap_or(last);
        let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
        crate::store::sanitize(stem)
    }

    pub fn on_repo(&mut self, result: Result<crate::ops::RepoState, String>) -> Vec<Effect> {
        match self.pick.on_repo(result, &mut self.error) {
            Looked::Stay => vec![],
            Looked::List => {
                self.step = BStep::Image;
                vec![]
            }
            Looked::Inspect(image) => match self.chosen(image) {
                Step::Stay(e) => e,
                _ => vec![],
            },
        }
    }

    /// The image read: its partitions offered (none or one: straight to its files).
    pub fn on_image(&mut self, result: Result<ImageSummary, String>) -> Vec<Effect> {
        if !std::mem::take(&mut self.reading) {
            return vec![];
        }
        let i = match result {
            Ok(i) => i,
            Err(e) => {
                self.error = Some(e);
                return vec![];
            }
        };
        self.parts = i
            .layout
            .streams
            .iter()
            .filter(|s| s.kind == StreamRole::Partition)
            .filter_map(|s| s.partition)
            .map(|n| {
                let p = i.disk.partitions.iter().find(|p| p.number == n);
                PartRow {
                    number: n,
                    shown: format!(
                        "Partition {n}  {}  {}  {}",
                        p.map(|p| crate::units::human_size(p.size))
                            .unwrap_or_default(),
                        p.map(|p| p.fs_kind.as_str()).unwrap_or(""),
                        p.map(|p| p.fs_label.as_str()).unwrap_or("")
                    ),
                }
            })
            .collect();
        self.part_sel = 0;
        if self.parts.len() > 1 {
            self.step = BStep::Partition;
            return vec![];
        }
        // One partition (or a filesystem without a table): `ops::files` takes it as it is.
        self.partition = None;
        match self.list("/".into()) {
            Step::Stay(e) => e,
            _ => vec![],
        }
    }

    /// A folder listed: shown, the cursor on the folder just left when going up.
    pub fn on_files(&mut self, result: Result<Listing, String>) {
        if !std::mem::take(&mut self.reading) {
            return;
        }
        match result {
            Ok(l) => {
                let came_from = self
                    .path
                    .strip_prefix(l.path.trim_end_matches('/'))
                    .and_then(|rest| rest.strip_prefix('/'))
                    .filter(|_| l.path != self.path)
                    .map(|rest| rest.split('/').next().unwrap_or("").to_string());
                self.sel = came_from
                    .and_then(|name| l.entries.iter().position(|e| e.name == name))
                    .unwrap_or(0);
                self.path = l.path;
                self.fs = format!("{}, {}", l.what, l.fs);
                self.entries = l.entries;
                self.step = BStep::Files;
            }
            Err(e) => self.error = Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{join, parent};

    #[test]
    fn paths_join_and_go_up_within_the_root() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b c"), "/a/b c");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
    }
}
