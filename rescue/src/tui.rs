//! The full-screen terminal UI: what a person sees after booting the stick, and `rescue tui` on a host.
//!
//! It holds no imaging logic. `app` is a pure state machine (keys in, effects out) over the detection
//! report; the wizards (`capture`, `restore`, `clone`) decide with `plan` and show its refusals; `view`
//! draws the state with ratatui; `term` owns the terminal, runs effects (mounting, opening images,
//! running `ops` in a thread) and feeds their results back. `job` holds what a background job is;
//! `browse` shows the files inside an image and copies some out; `grow` offers to grow the rescue
//! stick's data partition; `netloc` is the URL and password fields of a
//! network location; `network` the screen of network links.

pub mod answers;
pub mod app;
pub mod browse;
pub mod capture;
pub mod clone;
pub mod grow;
pub mod job;
pub mod netloc;
pub mod network;
pub mod overview;
pub mod picker;
pub mod restore;
pub mod term;
pub mod unlock;
pub mod view;
mod widgets;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_grow;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_net;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_repo;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_wrap;

pub use app::{App, Effect, Key, Mode};
pub use term::run;

/// What a wizard wants after a key.
#[derive(Debug)]
pub enum Step {
    Stay(Vec<app::Effect>),
    /// Leave the wizard for the overview.
    Back,
    Start(app::Request),
}
