//! Drawing what the wizards show of repositories: the image list with snapshots and encrypted
//! repositories, the passphrase step, and the summary's line about the repository.

use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::Frame;

use crate::ops::RepoState;
use crate::store::date_time;
use crate::tui::picker::{ImagePicker, PickRow};
use crate::tui::unlock::PassEntry;
use crate::tui::widgets::{field_line, fit, text_box};
use crate::units::human_size;

/// The image list's rows: images and snapshots with size and time; an encrypted repository dimmed
/// until unlocked.
pub(super) fn image_items(p: &ImagePicker, w: usize) -> Vec<(String, bool)> {
    p.rows()
        .into_iter()
        .map(|r| match r {
            PickRow::Image {
                shown,
                size_bytes,
                time_unix,
                ..
            } => (
                fit(
                    &format!(
                        "{shown:<40} {:>10}  {}",
                        human_size(size_bytes),
                        date_time(time_unix)
                    ),
                    w,
                ),
                true,
            ),
            PickRow::Locked { shown, .. } => (fit(&shown, w), true),
        })
        .collect()
}

/// The passphrase field (two for a new repository).
pub(super) fn pass_step(
    f: &mut Frame,
    area: Rect,
    title: &str,
    p: &PassEntry,
    checking: bool,
) -> Vec<(&'static str, &'static str)> {
    let cursor = |on: bool| if on { "_" } else { "" };
    let mut lines = vec![
        Line::from(if p.new {
            format!(
                "The new repository {} will be encrypted (XChaCha20-Poly1305, the key wrapped by \
                 this passphrase with Argon2id). Without the passphrase nothing in it can be read: \
                 keep it safe.",
                p.repo
            )
        } else {
            format!("The repository {} is encrypted.", p.repo)
        }),
        Line::from(""),
        field_line(
            "Passphrase: ",
            &format!("{}{}", PassEntry::shown(&p.first), cursor(!p.on_again)),
            !p.on_again,
        ),
    ];
    if p.new {
        lines.push(field_line(
            "Again:      ",
            &format!("{}{}", PassEntry::shown(&p.again), cursor(p.on_again)),
            p.on_again,
        ));
    }
    lines.push(Line::from(""));
    if checking {
        lines.push(Line::from("Checking the passphrase…"));
        text_box(f, area, title, lines);
        return vec![("Esc", "stop waiting")];
    }
    text_box(f, area, title, lines);
    vec![("Enter", "go on"), ("Esc", "back")]
}

/// The summary's line about the repository a snapshot goes into.
pub(super) fn repo_line(r: &RepoState, passphrase: bool) -> String {
    if !r.exists {
        return format!(
            "Repository:  new, made by this capture ({})",
            if passphrase {
                "encrypted with the passphrase typed"
            } else {
                "not encrypted; e encrypts it"
            }
        );
    }
    let latest = r
        .snapshots
        .last()
        .map(|e| format!(", the latest {}", e.label()))
        .unwrap_or_default();
    format!(
        "Repository:  {} snapshots{latest}{}; only chunks it lacks are stored",
        r.snapshots.len(),
        if r.encrypted { ", encrypted" } else { "" }
    )
}
