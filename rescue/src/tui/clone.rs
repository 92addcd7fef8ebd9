//! The clone wizard (the selected disk → another disk, confirmed by typing its name) and the verify
//! wizard (a drive → an image, or a network location → check every hash).

use std::path::PathBuf;

use crate::detect::Disk;
use crate::ops::CloneSpec;
use crate::plan::{self, RestorePlan};

use super::app::{move_sel, short_name, App, Effect, Key, OpenedStore, Request};
use super::picker::{ImageKey, ImagePicker, Looked};
use super::restore::confirms;
use super::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneStep {
    Target,
    Confirm,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CloneWiz {
    pub source: Disk,
    pub step: CloneStep,
    /// Every other disk with the plan's verdict.
    pub targets: Vec<(Disk, Result<RestorePlan, String>)>,
    pub sel: usize,
    pub typed: String,
    pub error: Option<String>,
}

impl CloneWiz {
    pub fn new(app: &App, source: Disk) -> CloneWiz {
        let targets: Vec<_> = app
            .report
            .disks
            .iter()
            .filter(|d| d.path != source.path)
            .map(|d| {
                let mut d = d.clone();
                if d.transport == crate::detect::Transport::File {
                    d.logical_sector_size = source.logical_sector_size;
                }
                let verdict = plan::plan_clone(&source, &d, false, true)
                    .map(|(_, r)| r)
                    .map_err(|r| r.to_string());
                (d, verdict)
            })
            .collect();
        let sel = targets.iter().position(|t| t.1.is_ok()).unwrap_or(0);
        CloneWiz {
            source,
            step: CloneStep::Target,
            targets,
            sel,
            typed: String::new(),
            error: None,
        }
    }

    pub fn typing(&self) -> bool {
        self.step == CloneStep::Confirm
    }

    pub fn on_key(&mut self, key: Key, _app: &App) -> Step {
        match self.step {
            CloneStep::Target => {
                if move_sel(&mut self.sel, self.targets.len(), key) {
                    return Step::Stay(vec![]);
                }
                match key {
                    Key::Enter => match self.targets.get(self.sel) {
                        None => {
                            self.error = Some(
                                "there is no other disk to clone onto; plug one in (it appears here)"
                                    .into(),
                            );
                        }
                        Some((_, Err(why))) => self.error = Some(format!("refused: {why}")),
                        Some(_) => {
                            self.typed.clear();
                            self.step = CloneStep::Confirm;
                        }
                    },
                    Key::Esc => return Step::Back,
                    _ => {}
                }
                Step::Stay(vec![])
            }
            CloneStep::Confirm => {
                let Some((target, _)) = self.targets.get(self.sel).cloned() else {
                    self.step = CloneStep::Target;
                    return Step::Stay(vec![]);
                };
                match key {
                    Key::Char(c) if !c.is_control() => self.typed.push(c),
                    Key::Backspace => {
                        self.typed.pop();
                    }
                    Key::Esc => self.step = CloneStep::Target,
                    Key::Enter if confirms(&self.typed, &target.path) => {
                        return Step::Start(Request::Clone(CloneSpec {
                            source: PathBuf::from(&self.source.path),
                            target: PathBuf::from(&target.path),
                            confirmed: true,
                            ..Default::default()
                        }));
                    }
                    Key::Enter => {
                        self.error = Some(format!(
                            "type {} (the target's name) to confirm that everything on it may be destroyed",
                            short_name(&target.path)
                        ))
                    }
                    _ => {}
                }
                Step::Stay(vec![])
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VStep {
    Store,
    Image,
    /// A network location instead of a drive's image list.
    Url,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyWiz {
    pub step: VStep,
    pub pick: ImagePicker,
    pub error: Option<String>,
}

impl VerifyWiz {
    pub fn new(app: &App) -> VerifyWiz {
        VerifyWiz {
            step: VStep::Store,
            pick: ImagePicker::new(app),
            error: None,
        }
    }

    pub fn typing(&self) -> bool {
        self.step == VStep::Url || (self.step == VStep::Image && self.pick.typing())
    }

    pub fn on_key(&mut self, key: Key, _app: &App) -> Step {
        let k = match self.step {
            VStep::Store if key == Key::Enter && self.pick.on_network_row() => {
                self.step = VStep::Url;
                return Step::Stay(vec![]);
            }
            VStep::Store => return self.pick.store_key(key, &mut self.error),
            VStep::Image => self.pick.image_key(key, &mut self.error),
            VStep::Url => self.pick.url_key(key, &mut self.error),
        };
        match k {
            ImageKey::Chosen(image) => Step::Start(Request::Verify(crate::ops::VerifySpec {
                image,
                against: None,
            })),
            ImageKey::Back => {
                self.step = VStep::Store;
                Step::Stay(vec![])
            }
            ImageKey::Stay => Step::Stay(vec![]),
            ImageKey::ReadHostKey(loc) => Step::Stay(vec![Effect::ReadHostKey(loc)]),
            ImageKey::LookAtRepo(loc, pass) => Step::Stay(vec![Effect::LookAtRepo(loc, pass)]),
        }
    }

    /// The answer to [`Effect::LookAtRepo`]: the snapshots listed, the passphrase asked for, or (no
    /// repository at the URL typed) the image there to verify.
    pub fn on_repo(&mut self, result: Result<crate::ops::RepoState, String>) -> Option<Request> {
        match self.pick.on_repo(result, &mut self.error) {
            Looked::Stay => None,
            Looked::List => {
                self.step = VStep::Image;
                None
            }
            Looked::Inspect(image) => Some(Request::Verify(crate::ops::VerifySpec {
                image,
                against: None,
            })),
        }
    }

    pub fn on_store(&mut self, result: Result<OpenedStore, String>) {
        if self.pick.on_store(result, &mut self.error) {
            self.step = VStep::Image;
        }
    }
}
