//! Drawing the network screen (links, and what bringing them up said) and the step where a network
//! location is typed (URL, and the password as `*`).

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::Frame;

use crate::ops::Link;
use crate::tui::app::App;
use crate::tui::netloc::{KeyCheck, UrlEntry, UrlField};
use crate::tui::widgets::{field_line, fit, rows, text_box, wrap};

/// One link: name, driver, carrier, addresses.
fn link_row(l: &Link, w: usize) -> String {
    let state = match (l.up, l.carrier) {
        (false, _) => "link down",
        (true, Some(true)) => "carrier yes",
        (true, Some(false)) => "carrier no",
        (true, None) => "carrier ?",
    };
    let addresses = if l.addresses.is_empty() {
        "no address".to_string()
    } else {
        l.addresses.join(" ")
    };
    fit(
        &format!(
            "{:<10} {:<12} {:<12} {addresses}{}",
            l.name,
            l.driver.as_deref().unwrap_or("-"),
            state,
            if l.ethernet { "" } else { "  (not wired)" }
        ),
        w,
    )
}

pub(super) fn network(f: &mut Frame, area: Rect, app: &App) -> Vec<(&'static str, &'static str)> {
    let width = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line<'static>> = match &app.net.links {
        None => vec![Line::from("Reading the links…")],
        Some(l) if l.is_empty() => wrap(
            "No network link found: the NIC's driver may be missing (the kernel's messages are in \
             the log, l).",
            width,
        )
        .into_iter()
        .map(Line::from)
        .collect(),
        Some(links) => links
            .iter()
            .map(|l| Line::from(link_row(l, width)))
            .collect(),
    };
    let title = match &app.net.links {
        Some(l) => format!("Network links ({})", l.len()),
        None => "Network links".into(),
    };
    let list_h = (lines.len() as u16 + 2).clamp(3, area.height / 2);
    let parts = rows(area, &[list_h, 0]);
    text_box(f, parts[0], &title, lines);

    let said: Vec<String> = if app.net.lines.is_empty() {
        wrap(
            "d brings every wired link with a cable in up with DHCP. A network location (smb://, \
             http://, https://) also brings the network up by itself when it is first used.",
            width,
        )
    } else {
        app.net.lines.iter().flat_map(|l| wrap(l, width)).collect()
    };
    // The newest lines, as many as fit.
    let room = parts[1].height.saturating_sub(2) as usize;
    let said = said[said.len().saturating_sub(room)..]
        .iter()
        .map(|l| Line::from(l.clone()))
        .collect();
    let title = if app.net.busy {
        "DHCP (asking…)"
    } else {
        "DHCP"
    };
    text_box(f, parts[1], title, said);
    vec![
        ("d", "DHCP on every wired link"),
        ("r", "refresh"),
        ("l", "log"),
        ("Esc", "back"),
    ]
}

/// The URL and password fields, with lines of explanation under them.
pub(super) fn url_step(
    f: &mut Frame,
    area: Rect,
    title: &str,
    entry: &UrlEntry,
    info: Vec<Line<'static>>,
) -> Vec<(&'static str, &'static str)> {
    let cursor = |field| if entry.field == field { "_" } else { "" };
    let mut lines = vec![
        Line::from(format!("For example {}", entry.example())),
        Line::from(""),
        field_line(
            "URL:      ",
            &format!("{}{}", entry.shown_url(), cursor(UrlField::Url)),
            entry.field == UrlField::Url,
        ),
        field_line(
            "Password: ",
            &format!("{}{}", entry.shown_password(), cursor(UrlField::Password)),
            entry.field == UrlField::Password,
        ),
        Line::from(""),
    ];
    match &entry.host_key {
        KeyCheck::Reading => {
            lines.push(Line::from(
                "Reading the server's host key (nothing is sent to it)…",
            ));
            text_box(f, area, title, lines);
            return vec![("Esc", "stop waiting")];
        }
        KeyCheck::Unpinned(k) => {
            lines.extend([
                Line::from(Span::styled(
                    "The server's host key is not known here:",
                    Style::default().add_modifier(Modifier::BOLD),
                )),
                Line::from(format!("  {} {}", k.algorithm, k.fingerprint)),
                Line::from(format!(
                    "Compare it with what `{}` prints on the server.",
                    k.check_on_server
                )),
                Line::from(
                    "If they are the same, y trusts it: the URL then pins it (?fingerprint=), and a \
                     server answering with another key is refused. If not, another machine may be \
                     answering in its place.",
                ),
            ]);
            text_box(f, area, title, lines);
            return vec![("y", "trust this key"), ("n", "do not")];
        }
        KeyCheck::NotRead | KeyCheck::Pinned => {}
    }
    lines.extend(info);
    text_box(f, area, title, lines);
    vec![
        ("Tab", "URL / password"),
        ("Enter", "next"),
        ("Esc", "back"),
    ]
}
