//! The TUI's state and how keys change it. Nothing here touches a device or the terminal: a key gives a
//! list of [`Effect`]s that `term` carries out, reporting back through the `on_*` methods. That keeps
//! every wizard testable as a state machine.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::ops::Location;

use crate::detect::{Disk, Report};
use crate::ops::{CreationInfo, DiskInfo};
use crate::plan;
use crate::plan::grow::{DataContents, GrowPlan};
use crate::store::{ImageEntry, Store};

use super::capture::CaptureWiz;
use super::clone::{CloneWiz, VerifyWiz};
pub use super::job::{JobResult, Running};
use super::network::NetState;
pub use super::overview::rows_of;
use super::restore::RestoreWiz;
pub use crate::ops::Request;

/// Keys, independent of the terminal library.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Up,
    Down,
    Left,
    Right,
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    PageUp,
    PageDown,
    Home,
    End,
    Char(char),
}

/// Where the UI runs: as PID 1 of the rescue system, or as a program on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pid1,
    Host,
}

/// What `term` must do for the state machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Quit,
    PowerOff,
    Reboot,
    /// Mount (if needed) the store, to write an image or only to read, and list its images and free
    /// space; answer with `on_store`.
    OpenStore(Store, crate::store::Access),
    /// Read an image's index (on a drive, a share or a web server; a URL's password is in it); answer
    /// with `on_image`.
    Inspect(Location),
    /// List a folder of an image's filesystem; answer with `on_files`.
    ListFiles(crate::ops::FilesSpec, String),
    Start(Request),
    Cancel,
    /// Detect the disks again.
    Redetect,
    /// Flush and unmount these mount points (of the selected disk or partition); answer with
    /// `on_unmounted`.
    Unmount(Vec<PathBuf>),
    /// List the network links; answer with `on_links`.
    ListLinks,
    /// Bring every wired link up with DHCP, in the background; answer with `on_net_line` for each step
    /// and `on_net_done`.
    BringUpDhcp,
    /// Read an sftp:// server's host key (no login), in the background; answer with `on_host_key`.
    ReadHostKey(Location),
    /// Look at the repository there (with an encrypted one's passphrase: unlock it and list its
    /// snapshots), in the background; answer with `on_repo`.
    LookAtRepo(Location, Option<crate::ops::Secret>),
}

/// A mounted store: where it is, its free space and the images on it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedStore {
    pub store: Store,
    pub dir: PathBuf,
    pub free_bytes: Option<u64>,
    /// Image files, then the snapshots of the repositories found (named `DIR/REPO::NAME@TIME`).
    pub images: Vec<ImageEntry>,
    /// The repositories found (folders relative to `dir`), for the capture wizard's default.
    pub repos: Vec<crate::ops::FoundRepo>,
}

/// What the UI shows about an image before restoring it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    pub location: Location,
    pub size_bytes: u64,
    pub root_hash: String,
    pub creation: CreationInfo,
    pub disk: DiskInfo,
    pub layout: plan::Layout,
    /// The disk holding the image file (never a restore target); none for a network location.
    pub image_disk: Option<String>,
    pub unreadable_ranges: usize,
    /// A virtual machine's disk (its format), restored as a clone of the disk it holds copies.
    pub virtual_format: Option<&'static str>,
    /// An image of another program (a Clonezilla directory), described in a line.
    pub other_format: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Screen {
    Overview,
    Capture(Box<CaptureWiz>),
    Restore(Box<RestoreWiz>),
    Verify(Box<VerifyWiz>),
    Clone(Box<CloneWiz>),
    /// The files inside an image, and copying some out.
    Browse(Box<super::browse::BrowseWiz>),
    /// The network links, and bringing them up.
    Network,
    Progress,
    Result(JobResult),
    Log {
        scroll: usize,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    Help,
    /// The action menu (Enter on the overview).
    Menu {
        sel: usize,
    },
    Power,
    ConfirmCancel,
    ConfirmQuit,
    /// Grow the rescue stick's data partition? (`g` when it is offered)
    ConfirmGrow(Box<GrowPlan>),
}

/// One row of the overview tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub disk: usize,
    /// Index into the disk's partitions.
    pub part: Option<usize>,
}

pub const MENU: [(&str, char); 11] = [
    ("Capture the selected disk or partition to an image", 'c'),
    ("Restore an image onto a disk or partition", 'r'),
    ("Verify an image", 'v'),
    ("Browse the files in an image and copy some out", 'b'),
    ("Clone the selected disk onto another disk", 'x'),
    ("Grow the rescue stick's data partition", 'g'),
    ("Unmount the selected disk or partition", 'u'),
    ("Network: the links, and DHCP", 'n'),
    ("Show the log", 'l'),
    ("Power off or reboot", 'p'),
    ("Help", '?'),
];

pub struct App {
    pub mode: Mode,
    pub report: Report,
    /// Used bytes per partition (or whole-disk filesystem) device path, filled in the background.
    pub usage: HashMap<String, u64>,
    /// What the rescue stick's data partition holds, per stick (disk path), read in the background.
    pub stick_data: HashMap<String, DataContents>,
    pub rows: Vec<Row>,
    pub sel: usize,
    pub screen: Screen,
    pub overlay: Option<Overlay>,
    /// Our own messages (shown in the log view), oldest first.
    pub log: Vec<String>,
    /// Kernel messages, oldest first.
    pub kernel_log: Vec<String>,
    /// A one-line message under the screen: the last refusal, error or hint.
    pub status: Option<String>,
    /// Folders given on the command line (host), offered as stores.
    pub folders: Vec<Store>,
    pub job: Option<Running>,
    /// The clock for default image names (fixed in tests).
    pub now_unix: u64,
    pub threads: usize,
    /// The network screen's links and what bringing them up said.
    pub net: NetState,
}

impl App {
    pub fn new(mode: Mode, report: Report, now_unix: u64) -> App {
        let mut app = App {
            mode,
            report: Report::default(),
            usage: HashMap::new(),
            stick_data: HashMap::new(),
            rows: Vec::new(),
            sel: 0,
            screen: Screen::Overview,
            overlay: None,
            log: Vec::new(),
            kernel_log: Vec::new(),
            status: None,
            folders: Vec::new(),
            job: None,
            now_unix,
            threads: crate::ops::default_threads(),
            net: NetState::default(),
        };
        app.set_report(report);
        app
    }

    pub fn note(&mut self, msg: impl Into<String>) {
        let msg = msg.into();
        self.log.push(msg.clone());
        self.status = Some(msg);
    }

    /// New detection results (hotplug or after a job): keep the selection on the same device.
    pub fn set_report(&mut self, report: Report) {
        let selected = self.selected_path();
        let before: Vec<String> = self.report.disks.iter().map(|d| d.path.clone()).collect();
        for d in &report.disks {
            if !before.is_empty() && !before.contains(&d.path) {
                self.log.push(format!("disk appeared: {}", d.path));
            }
        }
        for p in &before {
            if !report.disks.iter().any(|d| &d.path == p) {
                self.log.push(format!("disk removed: {p}"));
            }
        }
        self.report = report;
        self.rows = rows_of(&self.report);
        self.sel = selected
            .and_then(|p| {
                self.rows
                    .iter()
                    .position(|r| self.row_path(r).as_deref() == Some(p.as_str()))
            })
            .unwrap_or(0)
            .min(self.rows.len().saturating_sub(1));
    }

    pub fn row_path(&self, r: &Row) -> Option<String> {
        let d = self.report.disks.get(r.disk)?;
        match r.part {
            None => Some(d.path.clone()),
            Some(i) => d.partitions.get(i).map(|p| {
                p.path
                    .clone()
                    .unwrap_or_else(|| format!("{}#{}", d.path, p.number))
            }),
        }
    }

    fn selected_path(&self) -> Option<String> {
        self.rows.get(self.sel).and_then(|r| self.row_path(r))
    }

    pub fn selected_disk(&self) -> Option<&Disk> {
        self.rows
            .get(self.sel)
            .and_then(|r| self.report.disks.get(r.disk))
    }

    /// Every store: detected filesystems, then folders from the command line.
    pub fn stores(&self) -> Vec<Store> {
        let mut v = self.folders.clone();
        v.extend(crate::store::stores(&self.report));
        v.sort_by_key(|s| s.unusable.is_some());
        v
    }

    pub fn on_key(&mut self, key: Key) -> Vec<Effect> {
        if let Some(overlay) = self.overlay.clone() {
            return self.overlay_key(overlay, key);
        }
        if key == Key::Char('?') && !self.typing() {
            self.overlay = Some(Overlay::Help);
            return vec![];
        }
        let was = self.place();
        let screen = std::mem::replace(&mut self.screen, Screen::Overview);
        let (screen, effects) = match screen {
            Screen::Overview => {
                let e = self.overview_key(key);
                // overview_key may have switched screens itself.
                let s = std::mem::replace(&mut self.screen, Screen::Overview);
                (s, e)
            }
            Screen::Capture(mut w) => match w.on_key(key, self) {
                super::Step::Stay(e) => (Screen::Capture(w), e),
                super::Step::Back => (Screen::Overview, vec![]),
                super::Step::Start(spec) => self.start(spec),
            },
            Screen::Restore(mut w) => match w.on_key(key, self) {
                super::Step::Stay(e) => (Screen::Restore(w), e),
                super::Step::Back => (Screen::Overview, vec![]),
                super::Step::Start(spec) => self.start(spec),
            },
            Screen::Verify(mut w) => match w.on_key(key, self) {
                super::Step::Stay(e) => (Screen::Verify(w), e),
                super::Step::Back => (Screen::Overview, vec![]),
                super::Step::Start(spec) => self.start(spec),
            },
            Screen::Clone(mut w) => match w.on_key(key, self) {
                super::Step::Stay(e) => (Screen::Clone(w), e),
                super::Step::Back => (Screen::Overview, vec![]),
                super::Step::Start(spec) => self.start(spec),
            },
            Screen::Browse(mut w) => match w.on_key(key, self) {
                super::Step::Stay(e) => (Screen::Browse(w), e),
                super::Step::Back => (Screen::Overview, vec![]),
                super::Step::Start(spec) => self.start(spec),
            },
            Screen::Network => {
                let e = self.network_key(key);
                let s = std::mem::replace(&mut self.screen, Screen::Overview);
                (s, e)
            }
            Screen::Progress => {
                match key {
                    Key::Esc | Key::Char('c') if self.job.is_some() => {
                        if matches!(self.job.as_ref().map(|j| &j.spec), Some(Request::Grow(_))) {
                            self.note(
                                "growing takes seconds and is not stopped halfway; please wait",
                            );
                        } else {
                            self.overlay = Some(Overlay::ConfirmCancel)
                        }
                    }
                    Key::Char('q') => return self.quit_key(Screen::Progress),
                    _ => {}
                }
                (Screen::Progress, vec![])
            }
            Screen::Result(r) => match key {
                Key::Enter | Key::Esc => (Screen::Overview, vec![Effect::Redetect]),
                Key::Char('l') => (Screen::Log { scroll: 0 }, vec![]),
                Key::Char('q') => return self.quit_key(Screen::Result(r)),
                _ => (Screen::Result(r), vec![]),
            },
            Screen::Log { scroll } => {
                let max = self.log.len() + self.kernel_log.len();
                let scroll = match key {
                    Key::Up | Key::Char('k') => scroll + 1,
                    Key::Down | Key::Char('j') => scroll.saturating_sub(1),
                    Key::PageUp => scroll + 10,
                    Key::PageDown => scroll.saturating_sub(10),
                    Key::Home => max,
                    Key::End => 0,
                    Key::Esc | Key::Char('l') | Key::Enter => {
                        return {
                            self.screen = if self.job.is_some() {
                                Screen::Progress
                            } else {
                                Screen::Overview
                            };
                            vec![]
                        }
                    }
                    _ => scroll,
                };
                (
                    Screen::Log {
                        scroll: scroll.min(max),
                    },
                    vec![],
                )
            }
        };
        self.screen = screen;
        // A message belongs to the step it was said on: moving to another step or screen clears it.
        if self.place() != was {
            self.status = None;
        }
        if let Some(e) = self.take_wizard_error() {
            self.note(e);
        }
        effects
    }

    /// The screen, and the step of a wizard, the user is on.
    fn place(&self) -> (std::mem::Discriminant<Screen>, String) {
        let step = match &self.screen {
            Screen::Capture(w) => format!("{:?}", w.step),
            Screen::Restore(w) => format!("{:?}", w.step),
            Screen::Verify(w) => format!("{:?}", w.step),
            Screen::Clone(w) => format!("{:?}", w.step),
            Screen::Browse(w) => format!("{:?}", w.step),
            _ => String::new(),
        };
        (std::mem::discriminant(&self.screen), step)
    }

    /// Whether a text field has the keyboard (so letters are text, not commands).
    pub fn typing(&self) -> bool {
        match &self.screen {
            Screen::Capture(w) => w.typing(),
            Screen::Restore(w) => w.typing(),
            Screen::Verify(w) => w.typing(),
            Screen::Clone(w) => w.typing(),
            Screen::Browse(w) => w.typing(),
            _ => false,
        }
    }

    pub(super) fn start(&mut self, spec: Request) -> (Screen, Vec<Effect>) {
        self.log.push(format!("started: {}", spec.title()));
        self.status = None;
        self.job = Some(Running {
            spec: spec.clone(),
            progress: None,
            rates: Vec::new(),
            cancel_requested: false,
        });
        (Screen::Progress, vec![Effect::Start(spec)])
    }

    pub(super) fn quit_key(&mut self, back: Screen) -> Vec<Effect> {
        self.screen = back;
        match self.mode {
            Mode::Host if self.job.is_some() => {
                self.overlay = Some(Overlay::ConfirmQuit);
                vec![]
            }
            Mode::Host => vec![Effect::Quit],
            Mode::Pid1 => {
                self.overlay = Some(Overlay::Power);
                vec![]
            }
        }
    }
}

/// Move a list selection with the usual keys; returns whether the key was a movement.
pub fn move_sel(sel: &mut usize, len: usize, key: Key) -> bool {
    let last = len.saturating_sub(1);
    match key {
        Key::Up | Key::Char('k') => *sel = sel.saturating_sub(1),
        Key::Down | Key::Char('j') => *sel = (*sel + 1).min(last),
        Key::Home => *sel = 0,
        Key::End => *sel = last,
        Key::PageUp => *sel = sel.saturating_sub(10),
        Key::PageDown => *sel = (*sel + 10).min(last),
        _ => return false,
    }
    true
}

/// The kernel name of a device path (`/dev/sdb1` → `sdb1`): what a person types to confirm.
pub fn short_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
