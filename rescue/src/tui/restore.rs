//! The restore wizard: where the images are (a drive, or a network location typed with its password) →
//! which image (its layout and creation info) → whole image or one partition → target (refused ones say
//! why) → what will be overwritten, confirmed by typing the target's name → run, with read-back
//! verification.

use std::path::PathBuf;

use crate::detect::{Disk, Report};
use crate::ops::{Location, RestoreSpec};
use crate::plan::{self, Environment, RestorePlan, StreamRole};

use super::app::{move_sel, short_name, App, Effect, ImageSummary, Key, OpenedStore, Request};
use super::picker::{ImageKey, ImagePicker, Looked};
use super::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RStep {
    Store,
    Image,
    /// A network location instead of a drive's image list.
    Url,
    Details,
    Target,
    Confirm,
}

/// A place the image could go, with the plan's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow {
    pub disk: Disk,
    /// For a partition restore: the target partition's number.
    pub part: Option<u32>,
    /// The device written (`/dev/sdb` or `/dev/sdb2`).
    pub device: String,
    pub verdict: Result<RestorePlan, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestoreWiz {
    pub step: RStep,
    pub pick: ImagePicker,
    pub image: Option<ImageSummary>,
    /// 0 = the whole image; i = the i-th partition stream of the image.
    pub part_sel: usize,
    pub targets: Vec<TargetRow>,
    pub target_sel: usize,
    pub typed: String,
    pub error: Option<String>,
    /// Check every chunk of the image before the first write (`c` on the details step turns it off, for
    /// an image verified already).
    pub precheck: bool,
    /// Waiting for `term` to read the chosen image (over the network, this can take seconds).
    pub reading: bool,
}

impl RestoreWiz {
    pub fn new(app: &App) -> RestoreWiz {
        RestoreWiz {
            step: RStep::Store,
            pick: ImagePicker::new(app),
            image: None,
            part_sel: 0,
            targets: Vec::new(),
            target_sel: 0,
            typed: String::new(),
            error: None,
            precheck: true,
            reading: false,
        }
    }

    pub fn typing(&self) -> bool {
        matches!(self.step, RStep::Confirm | RStep::Url)
            || (self.step == RStep::Image && self.pick.typing())
    }

    /// What a key on the image list or in the URL fields did.
    fn chosen(&mut self, k: ImageKey) -> Step {
        match k {
            ImageKey::Chosen(loc) => {
                self.reading = true;
                Step::Stay(vec![Effect::Inspect(loc)])
            }
            ImageKey::Back => {
                self.step = RStep::Store;
                Step::Stay(vec![])
            }
            ImageKey::Stay => Step::Stay(vec![]),
            ImageKey::ReadHostKey(loc) => Step::Stay(vec![Effect::ReadHostKey(loc)]),
            ImageKey::LookAtRepo(loc, pass) => Step::Stay(vec![Effect::LookAtRepo(loc, pass)]),
        }
    }

    /// The answer to [`Effect::LookAtRepo`]: its snapshots listed, its passphrase asked for, or (no
    /// repository at the URL typed) the location read as an image.
    pub fn on_repo(&mut self, result: Result<crate::ops::RepoState, String>) -> Vec<Effect> {
        match self.pick.on_repo(result, &mut self.error) {
            Looked::Stay => vec![],
            Looked::List => {
                self.step = RStep::Image;
                vec![]
            }
            Looked::Inspect(loc) => {
                self.reading = true;
                vec![Effect::Inspect(loc)]
            }
        }
    }

    /// The image's partition streams, in the order offered.
    pub fn image_partitions(&self) -> Vec<u32> {
        self.image
            .as_ref()
            .map(|i| {
                i.layout
                    .streams
                    .iter()
                    .filter(|s| s.kind == StreamRole::Partition)
                    .filter_map(|s| s.partition)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The image partition chosen, or `None` for the whole image.
    pub fn chosen_partition(&self) -> Option<u32> {
        if self.part_sel == 0 {
            None
        } else {
            self.image_partitions().get(self.part_sel - 1).copied()
        }
    }

    pub fn on_key(&mut self, key: Key, app: &App) -> Step {
        if self.reading {
            // Esc stops waiting (the answer is then ignored); other keys wait.
            if key == Key::Esc {
                self.reading = false;
            }
            return Step::Stay(vec![]);
        }
        match self.step {
            RStep::Store if key == Key::Enter && self.pick.on_network_row() => {
                self.step = RStep::Url;
                Step::Stay(vec![])
            }
            RStep::Store => self.pick.store_key(key, &mut self.error),
            RStep::Image => {
                let k = self.pick.image_key(key, &mut self.error);
                self.chosen(k)
            }
            RStep::Url => {
                let k = self.pick.url_key(key, &mut self.error);
                self.chosen(k)
            }
            RStep::Details => {
                let n = 1 + self.image_partitions().len();
                if move_sel(&mut self.part_sel, n, key) {
                    return Step::Stay(vec![]);
                }
                match key {
                    Key::Char('c') => {
                        self.precheck = !self.precheck;
                        Step::Stay(vec![])
                    }
                    Key::Enter => {
                        self.targets = self.target_rows(&app.report);
                        self.target_sel = self
                            .targets
                            .iter()
                            .position(|t| t.verdict.is_ok())
                            .unwrap_or(0);
                        self.step = RStep::Target;
                        Step::Stay(vec![])
                    }
                    Key::Esc | Key::Left => {
                        self.step = match self.image.as_ref().map(|i| &i.location) {
                            Some(Location::Remote(_)) => RStep::Url,
                            Some(Location::Snapshot(_)) | Some(Location::Local(_)) | None => {
                                RStep::Image
                            }
                        };
                        Step::Stay(vec![])
                    }
                    _ => Step::Stay(vec![]),
                }
            }
            RStep::Target => {
                if move_sel(&mut self.target_sel, self.targets.len(), key) {
                    return Step::Stay(vec![]);
                }
                match key {
                    Key::Enter => match self.targets.get(self.target_sel) {
                        Some(TargetRow {
                            verdict: Err(why), ..
                        }) => {
                            self.error = Some(format!("refused: {why}"));
                            Step::Stay(vec![])
                        }
                        Some(_) => {
                            self.typed.clear();
                            self.step = RStep::Confirm;
                            Step::Stay(vec![])
                        }
                        None => {
                            self.error = Some("no disk to restore onto".into());
                            Step::Stay(vec![])
                        }
                    },
                    Key::Esc | Key::Left => {
                        self.step = RStep::Details;
                        Step::Stay(vec![])
                    }
                    _ => Step::Stay(vec![]),
                }
            }
            RStep::Confirm => {
                let Some(t) = self.targets.get(self.target_sel).cloned() else {
                    self.step = RStep::Target;
                    return Step::Stay(vec![]);
                };
                match key {
                    Key::Char(c) if !c.is_control() => self.typed.push(c),
                    Key::Backspace => {
                        self.typed.pop();
                    }
                    Key::Esc => self.step = RStep::Target,
                    Key::Enter => {
                        if !confirms(&self.typed, &t.device) {
                            self.error = Some(format!(
                                "type {} (the target's name) to confirm that everything on it may be destroyed",
                                short_name(&t.device)
                            ));
                            return Step::Stay(vec![]);
                        }
                        let Some(image) = &self.image else {
                            return Step::Stay(vec![]);
                        };
                        return Step::Start(Request::Restore(RestoreSpec {
                            image: image.location.clone(),
                            target: PathBuf::from(&t.disk.path),
                            partition: self.chosen_partition(),
                            to_partition: t.part,
                            confirmed: true,
                            precheck: self.precheck,
                            threads: app.threads,
                            ..Default::default()
                        }));
                    }
                    _ => {}
                }
                Step::Stay(vec![])
            }
        }
    }

    pub fn on_store(&mut self, result: Result<OpenedStore, String>) {
        if self.pick.on_store(result, &mut self.error) {
            self.step = RStep::Image;
        }
    }

    pub fn on_image(&mut self, result: Result<ImageSummary, String>, _report: &Report) {
        if !std::mem::take(&mut self.reading) {
            // The user stopped waiting (Esc).
            return;
        }
        match result {
            Ok(i) => {
                self.image = Some(i);
                self.part_sel = 0;
                self.step = RStep::Details;
            }
            Err(e) => self.error = Some(e),
        }
    }

    /// Every disk (whole-image restore) or every partition (partition restore), with the plan's verdict.
    pub fn target_rows(&self, report: &Report) -> Vec<TargetRow> {
        let Some(image) = &self.image else {
            return vec![];
        };
        // An image on a share or a web server is on no disk here; its URL names it in refusals.
        let env = Environment {
            image_disk: image.image_disk.clone(),
            image_path: image.location.to_string(),
            image_identity: image.location.local().and_then(crate::detect::Identity::of),
        };
        let mut rows = Vec::new();
        for d in &report.disks {
            let mut d = d.clone();
            if d.transport == crate::detect::Transport::File {
                d.logical_sector_size = image.layout.logical_sector_size;
            }
            match self.chosen_partition() {
                None => rows.push(TargetRow {
                    device: d.path.clone(),
                    part: None,
                    verdict: plan::plan_restore_disk(&image.layout, &d, &env, true)
                        .map_err(|r| r.to_string()),
                    disk: d,
                }),
                Some(n) => {
                    for p in d.partitions.iter().filter(|p| !p.extended) {
                        rows.push(TargetRow {
                            device: p
                                .path
                                .clone()
                                .unwrap_or_else(|| format!("{} partition {}", d.path, p.number)),
                            part: Some(p.number),
                            verdict: plan::plan_restore_partition(
                                &image.layout,
                                n,
                                &d,
                                Some(p.number),
                                &env,
                                true,
                            )
                            .map_err(|r| r.to_string()),
                            disk: d.clone(),
                        });
                    }
                }
            }
        }
        rows
    }
}

/// The typed confirmation: the device's kernel name (`sdb`) or its full path.
pub fn confirms(typed: &str, device: &str) -> bool {
    let t = typed.trim();
    !t.is_empty() && (t == device || t == short_name(device))
}
