//! Drawing: one function per screen, all from `App` state. Works from 80×24 up; nothing relies on colour.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Gauge, Paragraph, Sparkline};
use ratatui::Frame;

use crate::detect::{Disk, Partition};
use crate::units::human_size;
use crate::units::json_name;

use super::app::{App, Mode, Overlay, Screen, MENU};
use super::widgets::{bold, dialog, dim, fit, key_line, rows, select_list, text_box, wrap};

mod browse;
mod network;
mod repo;
mod wizards;
use wizards::{capture, clone, restore, verify};

/// Most lines the message area above the keys takes; a longer message ends with a pointer to the log,
/// which holds it whole.
const STATUS_LINES: usize = 6;

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let status = app
        .status
        .clone()
        .or_else(|| match app.screen {
            Screen::Overview if app.overlay.is_none() => super::grow::hint(app),
            _ => None,
        })
        .unwrap_or_default();
    // The message is wrapped, never cut: a refusal's reason and advice are read whole.
    let mut status = wrap(&status, area.width as usize);
    if status.len() > STATUS_LINES {
        status.truncate(STATUS_LINES - 1);
        status.push("… the whole message is in the log (l)".into());
    }
    let parts = rows(area, &[1, 0, status.len() as u16, 1]);
    let title = match &app.screen {
        Screen::Overview => "Disks",
        Screen::Capture(_) => "Capture",
        Screen::Restore(_) => "Restore",
        Screen::Verify(_) => "Verify",
        Screen::Clone(_) => "Clone",
        Screen::Browse(_) => "Browse",
        Screen::Network => "Network",
        Screen::Progress => "Working",
        Screen::Result(_) => "Result",
        Screen::Log { .. } => "Log",
    };
    let host = match app.mode {
        Mode::Pid1 => "rescue system",
        Mode::Host => "host",
    };
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(" RESCUE ", bold().add_modifier(Modifier::REVERSED)),
            Span::styled(format!(" {title}"), bold()),
            Span::styled(format!("   ({host})"), dim()),
        ])),
        parts[0],
    );
    let keys: Vec<(&str, &str)> = match &app.screen {
        Screen::Overview => overview(f, parts[1], app),
        Screen::Capture(w) => capture(f, parts[1], app, w),
        Screen::Restore(w) => restore(f, parts[1], w),
        Screen::Verify(w) => verify(f, parts[1], w),
        Screen::Clone(w) => clone(f, parts[1], w),
        Screen::Browse(w) => browse::browse(f, parts[1], w),
        Screen::Network => network::network(f, parts[1], app),
        Screen::Progress => progress(f, parts[1], app),
        Screen::Result(r) => {
            let mut lines = vec![Line::from(Span::styled(
                if r.ok {
                    "SUCCESS".to_string()
                } else {
                    "FAILED".to_string()
                },
                bold().add_modifier(Modifier::REVERSED),
            ))];
            lines.push(Line::from(Span::styled(r.title.clone(), bold())));
            lines.extend(r.lines.iter().map(|l| Line::from(l.clone())));
            lines.push(Line::from(match &r.log {
                Some(p) => format!("Log written to {}", p.display()),
                None => "No log file was written (see the log view, l)".to_string(),
            }));
            text_box(f, parts[1], "Result", lines);
            vec![("Enter", "back to the disks"), ("l", "log")]
        }
        Screen::Log { scroll } => {
            log_view(f, parts[1], app, *scroll);
            vec![("↑↓ PgUp PgDn", "scroll"), ("Esc", "back")]
        }
    };
    let status: Vec<Line<'static>> = status
        .into_iter()
        .map(|l| Line::from(Span::styled(l, bold())))
        .collect();
    f.render_widget(Paragraph::new(status), parts[2]);
    let mut keys = keys;
    keys.push(("?", "help"));
    f.render_widget(Paragraph::new(key_line(&keys)), parts[3]);
    if let Some(o) = &app.overlay {
        overlay(f, area, app, o);
    }
}

fn disk_flags(d: &Disk) -> Vec<String> {
    let mut v = Vec::new();
    if d.boot_medium {
        v.push("this rescue stick".to_string());
    }
    if d.removable {
        v.push("removable".into());
    }
    if d.read_only {
        v.push("read-only".into());
    }
    if !d.mounts.is_empty() || d.partitions.iter().any(|p| !p.mounts.is_empty()) {
        v.push("mounted".into());
    }
    if let Some(g) = &d.gpt {
        if !g.primary_header_valid {
            v.push("damaged primary GPT".into());
        }
        if !g.backup_header_valid {
            v.push("damaged backup GPT".into());
        }
    }
    if !d.problems.is_empty() {
        v.push("problems".into());
    }
    v
}

fn used_text(app: &App, path: Option<&str>, size: u64) -> String {
    match path.and_then(|p| app.usage.get(p)) {
        Some(&u) if size > 0 => format!("{:>3}%", (u as f64 * 100.0 / size as f64).round()),
        _ => "   -".into(),
    }
}

fn disk_row(d: &Disk, w: usize) -> String {
    let ident = [d.model.as_deref(), d.serial.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let flags = disk_flags(d);
    let s = format!(
        "{:<8} {:>10}  {:<4} {:<6} {}{}",
        d.name,
        human_size(d.size_bytes),
        json_name(&d.table),
        json_name(&d.transport),
        ident,
        if flags.is_empty() {
            String::new()
        } else {
            format!("  [{}]", flags.join(", "))
        }
    );
    fit(&s, w)
}

fn part_row(app: &App, p: &Partition, w: usize) -> String {
    let s = format!(
        "  {:>3} {:>10}  {:<6} {:<14} {} {}{}",
        p.number,
        human_size(p.size_bytes),
        p.fs.map(|f| json_name(&f)).unwrap_or_else(|| "-".into()),
        fit(p.fs_label.as_deref().unwrap_or(""), 14),
        used_text(app, p.path.as_deref(), p.size_bytes),
        p.type_name,
        if p.mounts.is_empty() {
            ""
        } else {
            "  [mounted]"
        }
    );
    fit(&s, w)
}

fn overview(f: &mut Frame, area: Rect, app: &App) -> Vec<(&'static str, &'static str)> {
    let detail_h = if area.height >= 30 { 12 } else { 8 };
    let parts = rows(area, &[0, detail_h]);
    let w = parts[0].width.saturating_sub(4) as usize;
    let items: Vec<(String, bool)> = app
        .rows
        .iter()
        .map(|r| {
            let d = &app.report.disks[r.disk];
            match r.part {
                None => (disk_row(d, w), true),
                Some(i) => (part_row(app, &d.partitions[i], w), true),
            }
        })
        .collect();
    let title = if items.is_empty() {
        "Disks: none found yet (plug one in; it appears here)".to_string()
    } else {
        format!("Disks ({})", app.report.disks.len())
    };
    select_list(f, parts[0], &title, items, app.sel);
    let mut lines: Vec<Line<'static>> = Vec::new();
    if let Some(r) = app.rows.get(app.sel) {
        let d = &app.report.disks[r.disk];
        match r.part {
            None => {
                lines.push(Line::from(Span::styled(d.path.clone(), bold())));
                lines.push(Line::from(format!(
                    "{} ({} bytes), {}-byte sectors (physical {}), {}, {} table{}",
                    human_size(d.size_bytes),
                    d.size_bytes,
                    d.logical_sector_size,
                    d.physical_sector_size,
                    json_name(&d.transport),
                    json_name(&d.table),
                    if d.rotational { ", rotational" } else { "" }
                )));
                lines.push(Line::from(format!(
                    "model {}  serial {}",
                    d.model.as_deref().map(str::trim).unwrap_or("-"),
                    d.serial.as_deref().unwrap_or("-")
                )));
                if let Some(g) = &d.gpt {
                    lines.push(Line::from(format!(
                        "GPT {}: primary header {}, backup header {}{}",
                        g.disk_guid.as_deref().unwrap_or("?"),
                        if g.primary_header_valid {
                            "ok"
                        } else {
                            "DAMAGED"
                        },
                        if g.backup_header_valid {
                            "ok"
                        } else {
                            "DAMAGED"
                        },
                        if g.hybrid_mbr { ", hybrid MBR" } else { "" }
                    )));
                }
                let flags = disk_flags(d);
                if !flags.is_empty() {
                    lines.push(Line::from(format!("flags: {}", flags.join(", "))));
                }
                if let Some(g) = super::grow::detail(app, &d.path) {
                    lines.push(Line::from(g));
                }
                for p in &d.problems {
                    lines.push(Line::from(format!("! {p}")));
                }
            }
            Some(i) => {
                let p = &d.partitions[i];
                lines.push(Line::from(Span::styled(
                    format!(
                        "{}  partition {} of {}",
                        p.path.as_deref().unwrap_or("(no device node)"),
                        p.number,
                        d.path
                    ),
                    bold(),
                )));
                lines.push(Line::from(format!(
                    "{} ({} bytes) from byte {}; type {} ({})",
                    human_size(p.size_bytes),
                    p.size_bytes,
                    p.start_bytes,
                    p.type_name,
                    p.part_type
                )));
                lines.push(Line::from(format!(
                    "filesystem {}  label {}  uuid {}",
                    p.fs.map(|f| json_name(&f))
                        .unwrap_or_else(|| "unknown".into()),
                    p.fs_label.as_deref().unwrap_or("-"),
                    p.fs_uuid.as_deref().unwrap_or("-")
                )));
                if let Some(u) = p.path.as_ref().and_then(|x| app.usage.get(x)) {
                    lines.push(Line::from(format!(
                        "used {} of {}",
                        human_size(*u),
                        human_size(p.size_bytes)
                    )));
                }
                if let Some(n) = &p.name {
                    lines.push(Line::from(format!("GPT name {n}")));
                }
                if !p.mounts.is_empty() {
                    lines.push(Line::from(format!(
                        "mounted on {} (u unmounts it)",
                        p.mounts.join(", ")
                    )));
                }
            }
        }
    }
    text_box(f, parts[1], "Details", lines);
    let mut keys = vec![
        ("↑↓", "select"),
        ("Enter", "menu"),
        ("c", "capture"),
        ("r", "restore"),
        ("v", "verify"),
        ("x", "clone"),
        ("l", "log"),
    ];
    keys.push(match app.mode {
        Mode::Host => ("q", "quit"),
        Mode::Pid1 => ("p", "power"),
    });
    keys
}

fn progress(f: &mut Frame, area: Rect, app: &App) -> Vec<(&'static str, &'static str)> {
    let Some(job) = &app.job else {
        return vec![];
    };
    let parts = rows(area, &[2, 3, 3, 5, 0]);
    f.render_widget(
        Paragraph::new(vec![
            Line::from(Span::styled(
                fit(&job.spec.title(), area.width as usize),
                bold(),
            )),
            Line::from(if job.cancel_requested {
                "Cancelling…".to_string()
            } else {
                String::new()
            }),
        ]),
        parts[0],
    );
    let p = job.progress.clone();
    let ratio = |done: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            (done as f64 / total as f64).clamp(0.0, 1.0)
        }
    };
    let (overall, current) = match &p {
        Some(p) => (
            ratio(p.bytes_done, p.bytes_total),
            ratio(p.current_done, p.current_total),
        ),
        None => (0.0, 0.0),
    };
    let phase = p.as_ref().map(|p| p.phase).unwrap_or("starting");
    f.render_widget(
        Gauge::default()
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!("Overall ({phase})")),
            )
            .ratio(overall)
            .use_unicode(false),
        parts[1],
    );
    f.render_widget(
        Gauge::default()
            .block(Block::default().borders(Borders::ALL).title(fit(
                &format!(
                    "Now: {}",
                    p.as_ref().map(|p| p.current.as_str()).unwrap_or("")
                ),
                area.width.saturating_sub(4) as usize,
            )))
            .ratio(current)
            .use_unicode(false),
        parts[2],
    );
    let stats = match &p {
        Some(p) => vec![
            Line::from(format!(
                "Done {} of {}   rate {}/s   elapsed {}   left {}",
                human_size(p.bytes_done),
                human_size(p.bytes_total),
                human_size(p.rate as u64),
                clock(p.elapsed_seconds),
                p.eta_seconds.map(clock).unwrap_or_else(|| "?".into())
            )),
            Line::from(if p.bytes_stored > 0 {
                format!(
                    "Read {}   stored {} ({:.2}:1)",
                    human_size(p.bytes_done),
                    human_size(p.bytes_stored),
                    p.bytes_done as f64 / p.bytes_stored.max(1) as f64
                )
            } else {
                String::new()
            }),
        ],
        None => vec![Line::from(
            "Preparing (reading tables and used-block maps)…",
        )],
    };
    text_box(f, parts[3], "Figures", stats);
    f.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title("Throughput"))
            .bar_set(symbols::bar::THREE_LEVELS)
            .data(
                job.rates
                    .iter()
                    .rev()
                    .take(parts[4].width.saturating_sub(2) as usize)
                    .rev()
                    .copied()
                    .collect::<Vec<u64>>(),
            ),
        parts[4],
    );
    vec![("Esc", "cancel"), ("l", "log")]
}

fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn log_view(f: &mut Frame, area: Rect, app: &App, scroll: usize) {
    let halves = Layout::default()
        .direction(Direction::Vertical)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(area);
    for (i, (title, lines)) in [("Rescue", &app.log), ("Kernel", &app.kernel_log)]
        .into_iter()
        .enumerate()
    {
        let h = halves[i].height.saturating_sub(2) as usize;
        // Long lines wrapped (nothing cut); scrolling stops with the first line at the top.
        let width = halves[i].width.saturating_sub(2) as usize;
        let lines: Vec<String> = lines.iter().flat_map(|l| wrap(l, width)).collect();
        let end = lines.len().saturating_sub(scroll).max(h.min(lines.len()));
        let start = end.saturating_sub(h);
        let shown: Vec<Line<'static>> = lines[start..end]
            .iter()
            .map(|l| Line::from(l.clone()))
            .collect();
        f.render_widget(
            Paragraph::new(shown).block(Block::default().borders(Borders::ALL).title(title)),
            halves[i],
        );
    }
}

fn overlay(f: &mut Frame, area: Rect, app: &App, o: &Overlay) {
    match o {
        Overlay::Help => {
            let lines = vec![
                Line::from(Span::styled("Keys", bold())),
                Line::from("↑ ↓ or j k   move        Enter   choose / next"),
                Line::from("Esc          back        Tab     next field"),
                Line::from("Space        mark a partition for capture"),
                Line::from(""),
                Line::from("c capture    r restore   v verify    x clone"),
                Line::from("l log        p power off or reboot    ? this help"),
                Line::from("u unmount the selected disk or partition (flushes it first)"),
                Line::from("n network: the links, DHCP"),
                Line::from("g grow the rescue stick's data partition (when offered)"),
                Line::from(if app.mode == Mode::Host {
                    "q quit (asks first while a job runs)"
                } else {
                    "q power menu"
                }),
                Line::from(""),
                Line::from("Sources are only read. Restore and clone destroy the target and"),
                Line::from("ask you to type its name first; the rescue stick, mounted disks and"),
                Line::from("the disk holding the image are refused."),
            ];
            dialog(f, area, "Help (Esc closes)", lines, 74);
        }
        Overlay::Menu { sel } => {
            let lines = MENU
                .iter()
                .enumerate()
                .map(|(i, (text, key))| {
                    let l = format!("{} {key}  {text}", if i == *sel { ">" } else { " " });
                    if i == *sel {
                        Line::from(Span::styled(
                            l,
                            Style::default().add_modifier(Modifier::REVERSED),
                        ))
                    } else {
                        Line::from(l)
                    }
                })
                .collect();
            dialog(f, area, "What to do", lines, 64);
        }
        Overlay::Power => dialog(
            f,
            area,
            "Power",
            vec![
                Line::from("p  power off (flushes and unmounts every drive)"),
                Line::from("r  reboot"),
                Line::from("Esc  back"),
            ],
            56,
        ),
        Overlay::ConfirmCancel => {
            let what = match app.job.as_ref().map(|j| &j.spec) {
                Some(super::app::Request::Capture(_)) => {
                    "The unfinished image is deleted; nothing that looks complete is left."
                }
                Some(super::app::Request::Restore(_)) | Some(super::app::Request::Clone(_)) => {
                    "The target is left INVALID (no partition table); restore it again later."
                }
                _ => "The check stops; the image is not changed.",
            };
            dialog(
                f,
                area,
                "Cancel?",
                vec![
                    Line::from(what),
                    Line::from("y  cancel the job    n  keep going"),
                ],
                76,
            )
        }
        Overlay::ConfirmGrow(plan) => dialog(
            f,
            area,
            "Grow the stick's data partition?",
            super::grow::dialog_lines(plan),
            78,
        ),
        Overlay::ConfirmQuit => dialog(
            f,
            area,
            "Quit?",
            vec![
                Line::from("A job is running; quitting cancels it."),
                Line::from("y  cancel and quit    n  keep going"),
            ],
            60,
        ),
    }
}
