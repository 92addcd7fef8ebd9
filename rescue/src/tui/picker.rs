//! Choosing an image: a drive that holds images (mounted when chosen), then an image on it; or, from the
//! list's last row, a network location typed with its password. The first steps of the restore and
//! verify wizards.

use crate::ops::{Location, RepoState, Secret};
use crate::repo::SnapshotEntry;
use crate::store::Store;
use crate::url::{Scheme, SnapshotRef, When};

use super::app::{move_sel, App, Effect, Key, OpenedStore};
use super::netloc::{EntryKey, UrlEntry};
use super::unlock::{PassEntry, PassKey};
use super::Step;

#[derive(Debug, Clone, PartialEq)]
pub struct ImagePicker {
    pub stores: Vec<Store>,
    pub store_sel: usize,
    /// Waiting for `term` to open the chosen store.
    pub opening: bool,
    pub opened: Option<OpenedStore>,
    pub image_sel: usize,
    /// The URL and password fields (the last row of the list of drives).
    pub entry: UrlEntry,
    /// A repository reached by its URL: its snapshots are the list instead of a drive's images.
    pub remote: Option<Listed>,
    /// Encrypted repositories on the opened drive unlocked with the passphrase typed.
    pub unlocked: Vec<Listed>,
    /// An encrypted repository's passphrase being typed.
    pub pass: Option<PassEntry>,
    /// Waiting for `term` to look at this repository ([`Effect::LookAtRepo`]): its location, the
    /// passphrase sent, and the location typed to read as an image if no repository is there.
    pub looking: Option<Looking>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Looking {
    pub repo: Location,
    pub passphrase: Option<Secret>,
    pub else_image: Option<Location>,
    /// Typed as a URL (its snapshots become the list), rather than a repository on the drive.
    pub by_url: bool,
}

/// A repository whose snapshots are listed, and the passphrase that unlocked it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub repo: Location,
    pub passphrase: Option<Secret>,
    pub snapshots: Vec<SnapshotEntry>,
}

impl Listed {
    /// The snapshot as a location that carries the passphrase.
    fn location(&self, e: &SnapshotEntry) -> Location {
        Location::Snapshot(SnapshotRef {
            repo: Box::new(self.repo.clone()),
            name: e.meta.name.clone(),
            when: When::At(e.meta.time.clone()),
            passphrase: self.passphrase.clone(),
        })
    }
}

/// One row of the image list.
#[derive(Debug, Clone, PartialEq)]
pub enum PickRow {
    /// An image file or a snapshot: as shown (relative to the drive), its size, time and location.
    Image {
        shown: String,
        size_bytes: u64,
        time_unix: u64,
        location: Location,
    },
    /// An encrypted repository not unlocked yet: Enter asks for its passphrase.
    Locked { shown: String, repo: Location },
}

/// What a key on the image list did.
#[derive(Debug)]
pub enum ImageKey {
    Stay,
    Chosen(Location),
    /// Back to the list of drives.
    Back,
    /// Read the sftp:// server's host key first ([`EntryKey::ReadHostKey`]).
    ReadHostKey(Location),
    /// Look at this repository (with this passphrase): [`Effect::LookAtRepo`].
    LookAtRepo(Location, Option<Secret>),
}

/// What looking at a repository means for the wizard.
#[derive(Debug, PartialEq)]
pub enum Looked {
    Stay,
    /// Its snapshots (or its passphrase field) are the image list now.
    List,
    /// No repository there: read the location typed as an image.
    Inspect(Location),
}

impl ImagePicker {
    /// Every store that can be mounted, write-protected drives included (mounted read-only; a job's log
    /// then goes to the log view only), and the folders given on the command line.
    pub fn new(app: &App) -> ImagePicker {
        let mut stores = app.folders.clone();
        stores.extend(crate::store::readable_stores(&app.report));
        stores.sort_by_key(|s| s.unusable.is_some());
        ImagePicker {
            stores,
            store_sel: 0,
            opening: false,
            opened: None,
            image_sel: 0,
            entry: UrlEntry::new(false),
            remote: None,
            unlocked: Vec::new(),
            pass: None,
            looking: None,
        }
    }

    /// Whether a text field has the keyboard.
    pub fn typing(&self) -> bool {
        self.pass.is_some()
    }

    /// The image list: a repository reached by URL lists its snapshots; a drive its image files, the
    /// snapshots of its repositories, and its encrypted repositories (their snapshots once unlocked).
    pub fn rows(&self) -> Vec<PickRow> {
        let snapshot_rows = |l: &Listed, prefix: &str| {
            l.snapshots
                .iter()
                .rev()
                .map(|e| PickRow::Image {
                    shown: format!("{prefix}{}", e.label()),
                    size_bytes: e.meta.image_bytes,
                    time_unix: e.meta.time_unix,
                    location: l.location(e),
                })
                .collect::<Vec<_>>()
        };
        if let Some(r) = &self.remote {
            return snapshot_rows(r, "");
        }
        let Some(o) = &self.opened else {
            return Vec::new();
        };
        let mut rows: Vec<PickRow> = o
            .images
            .iter()
            .map(|i| PickRow::Image {
                shown: i
                    .path
                    .strip_prefix(&o.dir)
                    .unwrap_or(&i.path)
                    .display()
                    .to_string(),
                size_bytes: i.size_bytes,
                time_unix: i.modified_unix,
                // A snapshot is listed as `DIR/REPO::NAME@TIME`.
                location: Location::parse(&i.path.to_string_lossy())
                    .unwrap_or_else(|_| i.path.clone().into()),
            })
            .collect();
        for r in o.repos.iter().filter(|r| r.encrypted) {
            let repo = Location::Local(o.dir.join(&r.rel));
            let shown = if r.rel.is_empty() {
                "(the drive's repository)".to_string()
            } else {
                r.rel.clone()
            };
            match self.unlocked.iter().find(|l| l.repo == repo) {
                Some(l) => rows.extend(snapshot_rows(l, &format!("{shown}::"))),
                None => rows.push(PickRow::Locked {
                    shown: format!("{shown}::  (encrypted repository: Enter, then its passphrase)"),
                    repo,
                }),
            }
        }
        rows
    }

    /// The answer to [`Effect::LookAtRepo`].
    pub fn on_repo(
        &mut self,
        result: Result<RepoState, String>,
        error: &mut Option<String>,
    ) -> Looked {
        let Some(l) = self.looking.take() else {
            // The user stopped waiting (Esc).
            return Looked::Stay;
        };
        let state = match result {
            Ok(s) => s,
            Err(e) => {
                if let Some(p) = &mut self.pass {
                    p.clear();
                }
                *error = Some(e);
                return Looked::Stay;
            }
        };
        if !state.exists {
            return match l.else_image {
                Some(loc) => Looked::Inspect(loc),
                None => {
                    *error = Some(format!("there is no repository at {}", l.repo));
                    Looked::Stay
                }
            };
        }
        let by_url = l.by_url;
        if state.encrypted && !state.unlocked {
            self.pass = Some(PassEntry::new(l.repo.clone(), false));
            if by_url {
                self.remote = Some(Listed {
                    repo: l.repo,
                    passphrase: None,
                    snapshots: Vec::new(),
                });
            }
            return Looked::List;
        }
        self.pass = None;
        let listed = Listed {
            repo: l.repo,
            passphrase: l.passphrase,
            snapshots: state.snapshots,
        };
        if listed.snapshots.is_empty() {
            *error = Some(format!(
                "the repository {} holds no snapshot yet",
                listed.repo
            ));
        }
        if by_url {
            self.remote = Some(listed);
            self.image_sel = 0;
        } else {
            let first = self
                .rows()
                .iter()
                .position(|r| matches!(r, PickRow::Locked { repo, .. } if *repo == listed.repo));
            self.unlocked.push(listed);
            self.image_sel = first.unwrap_or(0);
        }
        Looked::List
    }

    /// Whether the selection is the list's last row, "Network location": Enter there goes to the URL.
    pub fn on_network_row(&self) -> bool {
        self.store_sel == self.stores.len()
    }

    /// Keys on the list of drives: Enter opens the drive (an effect), Esc leaves the wizard. The wizard
    /// takes Enter on the network row itself (see [`ImagePicker::on_network_row`]).
    pub fn store_key(&mut self, key: Key, error: &mut Option<String>) -> Step {
        // The drives, then "Network location".
        if self.opening || move_sel(&mut self.store_sel, self.stores.len() + 1, key) {
            return Step::Stay(vec![]);
        }
        match key {
            Key::Enter => match self.stores.get(self.store_sel) {
                None => {
                    *error = Some(
                        "no drive with images found: plug in the drive holding them (it appears here), \
                         or choose the network location"
                            .into(),
                    );
                    Step::Stay(vec![])
                }
                Some(s) => open_store(
                    s,
                    crate::store::Access::Read,
                    "be opened",
                    &mut self.opening,
                    error,
                ),
            },
            Key::Esc => Step::Back,
            _ => Step::Stay(vec![]),
        }
    }

    /// Keys on the list of images (and in the passphrase field of an encrypted repository).
    pub fn image_key(&mut self, key: Key, error: &mut Option<String>) -> ImageKey {
        if self.looking.is_some() {
            if key == Key::Esc {
                self.looking = None;
            }
            return ImageKey::Stay;
        }
        if let Some(p) = &mut self.pass {
            return match p.key(key, error) {
                PassKey::Done(pass) => {
                    let repo = p.repo.clone();
                    let by_url = self.remote.is_some();
                    self.look(repo, Some(pass), None, by_url)
                }
                PassKey::Back => {
                    self.pass = None;
                    if self.remote.take().is_some() {
                        return ImageKey::Back;
                    }
                    ImageKey::Stay
                }
                PassKey::Stay => ImageKey::Stay,
            };
        }
        let rows = self.rows();
        if move_sel(&mut self.image_sel, rows.len(), key) {
            return ImageKey::Stay;
        }
        match key {
            Key::Enter => match rows.get(self.image_sel) {
                Some(PickRow::Image { location, .. }) => ImageKey::Chosen(location.clone()),
                Some(PickRow::Locked { repo, .. }) => {
                    self.pass = Some(PassEntry::new(repo.clone(), false));
                    ImageKey::Stay
                }
                None => {
                    *error = Some("no image here; go back (Esc) and choose another drive".into());
                    ImageKey::Stay
                }
            },
            Key::Esc | Key::Left => {
                self.remote = None;
                ImageKey::Back
            }
            _ => ImageKey::Stay,
        }
    }

    fn look(
        &mut self,
        repo: Location,
        passphrase: Option<Secret>,
        else_image: Option<Location>,
        by_url: bool,
    ) -> ImageKey {
        self.looking = Some(Looking {
            repo: repo.clone(),
            passphrase: passphrase.clone(),
            else_image,
            by_url,
        });
        ImageKey::LookAtRepo(repo, passphrase)
    }

    /// Keys in the URL and password fields. A URL naming a repository (`s3://…`, `…::NAME`, or a share's
    /// folder without an image's name) lists its snapshots; a share's folder with no repository in it
    /// is then read as an image file.
    pub fn url_key(&mut self, key: Key, error: &mut Option<String>) -> ImageKey {
        match self.entry.key(key, error) {
            EntryKey::Done(Location::Snapshot(s)) => {
                self.remote = None;
                self.look(*s.repo, None, None, true)
            }
            EntryKey::Done(Location::Remote(u)) if u.scheme == Scheme::S3 => {
                self.remote = None;
                self.look(Location::Remote(u), None, None, true)
            }
            EntryKey::Done(Location::Remote(u))
                if matches!(u.scheme, Scheme::Smb | Scheme::Nfs) && !names_a_file(&u.path) =>
            {
                self.remote = None;
                let loc = Location::Remote(u);
                self.look(loc.clone(), None, Some(loc), true)
            }
            EntryKey::Done(loc) => ImageKey::Chosen(loc),
            EntryKey::ReadHostKey(loc) => ImageKey::ReadHostKey(loc),
            EntryKey::Back => ImageKey::Back,
            EntryKey::Stay => ImageKey::Stay,
        }
    }

    /// The opened drive: whether it lists images (then the image step follows).
    pub fn on_store(
        &mut self,
        result: Result<OpenedStore, String>,
        error: &mut Option<String>,
    ) -> bool {
        self.opening = false;
        match result {
            Ok(s) if s.images.is_empty() && !s.repos.iter().any(|r| r.encrypted) => {
                *error = Some(format!(
                    "no images (*.rimg) or virtual machine disks on {}; choose another drive",
                    s.store.title()
                ));
                false
            }
            Ok(s) => {
                self.opened = Some(s);
                self.image_sel = 0;
                self.remote = None;
                self.unlocked.clear();
                self.pass = None;
                true
            }
            Err(e) => {
                *error = Some(e);
                false
            }
        }
    }
}

/// Open the drive chosen (`opening` set, an effect to carry out), or say why it cannot be used to
/// `what` ("be opened", "hold the image").
pub fn open_store(
    s: &Store,
    access: crate::store::Access,
    what: &str,
    opening: &mut bool,
    error: &mut Option<String>,
) -> Step {
    if let Some(why) = &s.unusable {
        *error = Some(format!("{} cannot {what}: {why}", s.title()));
        return Step::Stay(vec![]);
    }
    *opening = true;
    Step::Stay(vec![Effect::OpenStore(s.clone(), access)])
}

/// Whether a share's path ends in a file's name (`pc.rimg`, `disk.img`) rather than a folder's.
fn names_a_file(path: &str) -> bool {
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    !path.ends_with('/')
        && last
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.is_empty() && !ext.is_empty() && ext.len() <= 5)
}
