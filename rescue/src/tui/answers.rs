//! What `term` reports back to the state machine: a store opened, an image read, progress, a job
//! finished, used space, the stick's data partition, unmounting.

use crate::ops::Progress;
use crate::plan::grow::DataContents;

use super::app::{App, Effect, ImageSummary, JobResult, Key, OpenedStore, Screen};

impl App {
    pub fn on_store(&mut self, result: Result<OpenedStore, String>) {
        match &mut self.screen {
            Screen::Capture(w) => w.on_store(result),
            Screen::Restore(w) => w.on_store(result),
            Screen::Verify(w) => w.on_store(result),
            Screen::Browse(w) => w.on_store(result),
            _ => {}
        }
        if let Some(e) = self.take_wizard_error() {
            self.note(e);
        }
    }

    pub fn on_image(&mut self, result: Result<ImageSummary, String>) -> Vec<Effect> {
        let mut effects = Vec::new();
        match &mut self.screen {
            Screen::Restore(w) => {
                let report = self.report.clone();
                w.on_image(result, &report);
            }
            Screen::Browse(w) => effects = w.on_image(result),
            _ => {}
        }
        if let Some(e) = self.take_wizard_error() {
            self.note(e);
        }
        effects
    }

    /// A folder of an image's filesystem, listed for the browse wizard.
    pub fn on_files(&mut self, result: Result<crate::ops::Listing, String>) {
        if let Screen::Browse(w) = &mut self.screen {
            w.on_files(result);
        }
        if let Some(e) = self.take_wizard_error() {
            self.note(e);
        }
    }

    /// The sftp:// server's host key read for the URL being typed: pinned goes on (as Enter), unpinned
    /// waits for the user, a failure is said.
    pub fn on_host_key(
        &mut self,
        result: Result<Option<crate::ops::HostKey>, String>,
    ) -> Vec<Effect> {
        let go_on = match &mut self.screen {
            Screen::Capture(w) => w.entry.on_host_key(result, &mut w.error),
            Screen::Restore(w) => w.pick.entry.on_host_key(result, &mut w.error),
            Screen::Verify(w) => w.pick.entry.on_host_key(result, &mut w.error),
            Screen::Browse(w) => w.pick.entry.on_host_key(result, &mut w.error),
            _ => false,
        };
        if let Some(e) = self.take_wizard_error() {
            self.note(e);
        }
        if go_on {
            self.on_key(Key::Enter)
        } else {
            Vec::new()
        }
    }

    /// A repository looked at ([`Effect::LookAtRepo`]): the wizard that asked goes on.
    pub fn on_repo(&mut self, result: Result<crate::ops::RepoState, String>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut start = None;
        match &mut self.screen {
            Screen::Capture(w) => effects = w.on_repo(result),
            Screen::Restore(w) => effects = w.on_repo(result),
            Screen::Verify(w) => start = w.on_repo(result),
            Screen::Browse(w) => effects = w.on_repo(result),
            _ => {}
        }
        if let Some(e) = self.take_wizard_error() {
            self.note(e);
        }
        if let Some(req) = start {
            let (screen, e) = self.start(req);
            self.screen = screen;
            effects = e;
        }
        effects
    }

    pub(super) fn take_wizard_error(&mut self) -> Option<String> {
        match &mut self.screen {
            Screen::Capture(w) => w.error.take(),
            Screen::Restore(w) => w.error.take(),
            Screen::Verify(w) => w.error.take(),
            Screen::Clone(w) => w.error.take(),
            Screen::Browse(w) => w.error.take(),
            _ => None,
        }
    }

    pub fn on_progress(&mut self, p: Progress) {
        if let Some(j) = &mut self.job {
            j.rates.push(p.rate as u64);
            if j.rates.len() > 240 {
                j.rates.remove(0);
            }
            j.progress = Some(p);
        }
    }

    pub fn on_finished(&mut self, result: JobResult) {
        self.log.push(format!(
            "{}: {}",
            if result.ok { "finished" } else { "failed" },
            result.title
        ));
        self.log
            .extend(result.lines.iter().map(|l| format!("  {l}")));
        self.job = None;
        self.overlay = None;
        self.status = None;
        self.screen = Screen::Result(result);
    }

    pub fn on_usage(&mut self, device: String, used: u64) {
        self.usage.insert(device, used);
    }

    /// What the data partition of the rescue stick `disk` holds (read by `term` in the background).
    pub fn on_stick_data(&mut self, disk: String, contents: DataContents) {
        self.stick_data.insert(disk, contents);
    }
}
