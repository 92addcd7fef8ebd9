//! The overview: moving through disks and partitions, the one-letter actions (also what the menu
//! runs), unmounting, and the overlays (menu, help, power, confirmations).

use std::path::PathBuf;

use crate::detect::Report;

use super::app::{App, Effect, Key, Mode, Overlay, Row, Screen, MENU};
use super::capture::CaptureWiz;
use super::clone::{CloneWiz, VerifyWiz};
use super::restore::RestoreWiz;

impl App {
    pub(super) fn overview_key(&mut self, key: Key) -> Vec<Effect> {
        let n = self.rows.len();
        match key {
            Key::Up | Key::Char('k') => self.sel = self.sel.saturating_sub(1),
            Key::Down | Key::Char('j') => self.sel = (self.sel + 1).min(n.saturating_sub(1)),
            Key::Home => self.sel = 0,
            Key::End => self.sel = n.saturating_sub(1),
            Key::PageUp => self.sel = self.sel.saturating_sub(10),
            Key::PageDown => self.sel = (self.sel + 10).min(n.saturating_sub(1)),
            Key::Enter => self.overlay = Some(Overlay::Menu { sel: 0 }),
            Key::Char(c) => return self.action(c),
            _ => {}
        }
        vec![]
    }

    /// Unmount what is mounted of the selected disk or partition (a drive mounted to hold images must be
    /// unmounted before it can be restored or cloned onto, or unplugged).
    fn unmount_selected(&mut self) -> Vec<Effect> {
        let Some(row) = self.rows.get(self.sel).copied() else {
            return vec![];
        };
        let d = &self.report.disks[row.disk];
        let (name, mounts): (String, Vec<String>) = match row.part {
            Some(i) => {
                let p = &d.partitions[i];
                (
                    p.path.clone().unwrap_or_else(|| d.path.clone()),
                    p.mounts.clone(),
                )
            }
            None => (
                d.path.clone(),
                d.mounts
                    .iter()
                    .chain(d.partitions.iter().flat_map(|p| &p.mounts))
                    .cloned()
                    .collect(),
            ),
        };
        if mounts.is_empty() {
            self.note(format!("{name} is not mounted"));
            return vec![];
        }
        if self.job.is_some() {
            self.note("a job is running: unmount once it has finished");
            return vec![];
        }
        self.note(format!("unmounting {}…", mounts.join(", ")));
        vec![Effect::Unmount(
            mounts.into_iter().map(PathBuf::from).collect(),
        )]
    }

    /// What unmounting said: each mount point unmounted, or why not.
    pub fn on_unmounted(&mut self, results: Vec<Result<String, String>>) {
        for r in results {
            match r {
                Ok(m) => self.note(m),
                Err(e) => self.note(format!("could not unmount: {e}")),
            }
        }
    }

    /// The overview's one-letter actions (also what the menu runs).
    fn action(&mut self, c: char) -> Vec<Effect> {
        self.status = None;
        match c {
            'c' => match self.rows.get(self.sel).copied() {
                Some(row) => {
                    let disk = self.report.disks[row.disk].clone();
                    let part = row.part.map(|i| disk.partitions[i].number);
                    match CaptureWiz::new(self, disk, part) {
                        Ok(w) => self.screen = Screen::Capture(Box::new(w)),
                        Err(why) => self.note(why),
                    }
                }
                None => self.note("no disk to capture"),
            },
            'r' => self.screen = Screen::Restore(Box::new(RestoreWiz::new(self))),
            'v' => self.screen = Screen::Verify(Box::new(VerifyWiz::new(self))),
            'b' => self.screen = Screen::Browse(Box::new(super::browse::BrowseWiz::new(self))),
            'x' => match self.selected_disk().cloned() {
                Some(d) => self.screen = Screen::Clone(Box::new(CloneWiz::new(self, d))),
                None => self.note("no disk to clone"),
            },
            'g' => super::grow::on_key_g(self),
            'u' => return self.unmount_selected(),
            'n' => return self.open_network(),
            'l' => self.screen = Screen::Log { scroll: 0 },
            'p' => self.overlay = Some(Overlay::Power),
            'q' => return self.quit_key(Screen::Overview),
            _ => {}
        }
        vec![]
    }

    pub(super) fn overlay_key(&mut self, overlay: Overlay, key: Key) -> Vec<Effect> {
        match overlay {
            Overlay::Help => {
                if matches!(key, Key::Esc | Key::Enter | Key::Char('?') | Key::Char('q')) {
                    self.overlay = None;
                }
                vec![]
            }
            Overlay::Menu { sel } => match key {
                Key::Up | Key::Char('k') => {
                    self.overlay = Some(Overlay::Menu {
                        sel: sel.saturating_sub(1),
                    });
                    vec![]
                }
                Key::Down | Key::Char('j') => {
                    self.overlay = Some(Overlay::Menu {
                        sel: (sel + 1).min(MENU.len() - 1),
                    });
                    vec![]
                }
                Key::Enter => {
                    self.overlay = None;
                    let c = MENU[sel].1;
                    if c == '?' {
                        self.overlay = Some(Overlay::Help);
                        vec![]
                    } else {
                        self.action(c)
                    }
                }
                Key::Char(c) if MENU.iter().any(|m| m.1 == c) => {
                    self.overlay = None;
                    self.action(c)
                }
                Key::Esc | Key::Char('q') => {
                    self.overlay = None;
                    vec![]
                }
                _ => vec![],
            },
            Overlay::Power => match key {
                Key::Char('p') | Key::Char('r') if self.job.is_some() => {
                    self.overlay = None;
                    self.note("a job is running: cancel it first (Esc on the progress screen)");
                    vec![]
                }
                Key::Char('p') if self.mode == Mode::Pid1 => vec![Effect::PowerOff],
                Key::Char('r') if self.mode == Mode::Pid1 => vec![Effect::Reboot],
                Key::Char('p') | Key::Char('r') => {
                    self.overlay = None;
                    self.note("power off and reboot are only offered by the rescue system; on a host, quit with q");
                    vec![]
                }
                Key::Esc | Key::Char('q') | Key::Char('n') => {
                    self.overlay = None;
                    vec![]
                }
                _ => vec![],
            },
            Overlay::ConfirmCancel => match key {
                Key::Char('y') => {
                    self.overlay = None;
                    if let Some(j) = &mut self.job {
                        j.cancel_requested = true;
                    }
                    self.note("cancelling: stopping at the next chunk");
                    vec![Effect::Cancel]
                }
                Key::Char('n') | Key::Esc => {
                    self.overlay = None;
                    vec![]
                }
                _ => vec![],
            },
            Overlay::ConfirmQuit => match key {
                Key::Char('y') => vec![Effect::Cancel, Effect::Quit],
                Key::Char('n') | Key::Esc => {
                    self.overlay = None;
                    vec![]
                }
                _ => vec![],
            },
            Overlay::ConfirmGrow(plan) => match super::grow::confirm(&plan, key) {
                Some(Some(spec)) => {
                    self.overlay = None;
                    let (screen, effects) = self.start(spec);
                    self.screen = screen;
                    effects
                }
                Some(None) => {
                    self.overlay = None;
                    vec![]
                }
                None => vec![],
            },
        }
    }
}

pub fn rows_of(report: &Report) -> Vec<Row> {
    let mut rows = Vec::new();
    for (i, d) in report.disks.iter().enumerate() {
        rows.push(Row {
            disk: i,
            part: None,
        });
        for (j, _) in d.partitions.iter().enumerate() {
            rows.push(Row {
                disk: i,
                part: Some(j),
            });
        }
    }
    rows
}
