//! Drawing the wizards: capture, restore, verify and clone, one step at a time.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::Frame;

use crate::store::date_time;
use crate::units::human_size;
use crate::units::json_name;

use super::network::url_step;
use super::{disk_row, part_row};
use crate::tui::app::App;
use crate::tui::capture::{CapStep, CaptureWiz, NameField};
use crate::tui::clone::{CloneStep, CloneWiz, VStep, VerifyWiz};
use crate::tui::restore::{RStep, RestoreWiz};
use crate::tui::widgets::{bold, field_line, fit, rows, select_list, text_box, with_info_box};

pub(super) fn step_title(step: usize, of: usize, what: &str) -> String {
    format!("Step {step} of {of}: {what}")
}

/// The drives, then the row that leads to typing a network location.
pub(super) fn store_items(
    stores: &[crate::store::Store],
    w: usize,
    network: &str,
) -> Vec<(String, bool)> {
    let mut items: Vec<(String, bool)> = stores
        .iter()
        .map(|s| match &s.unusable {
            None => (fit(&s.title(), w), true),
            Some(why) => (fit(&format!("{}  -- {why}", s.title()), w), false),
        })
        .collect();
    items.push((fit(network, w), true));
    items
}

/// The last row of the destinations in the capture wizard.
pub const NETWORK_DEST: &str = "Network location (smb://…)";
/// The last row of the drives holding images (restore, verify).
pub const NETWORK_SOURCE: &str = "Network location (smb://, http://, https://…)";

pub(super) fn capture(
    f: &mut Frame,
    area: Rect,
    app: &App,
    w: &CaptureWiz,
) -> Vec<(&'static str, &'static str)> {
    let width = area.width.saturating_sub(4) as usize;
    match w.step {
        CapStep::Parts => {
            let parts = rows(area, &[0, 4]);
            let mut items = vec![(
                format!(
                    "[{}] The whole disk {}: partition table, {} partitions and the gaps between",
                    if w.whole { "x" } else { " " },
                    w.source.path,
                    w.parts().len()
                ),
                true,
            )];
            for p in w.parts() {
                let mark = if !w.whole && w.chosen.contains(&p.number) {
                    "x"
                } else {
                    " "
                };
                items.push((
                    fit(&format!("[{mark}] {}", part_row(app, p, width)), width),
                    true,
                ));
            }
            select_list(
                f,
                parts[0],
                &step_title(1, 4, &format!("what to capture from {}", w.source.path)),
                items,
                w.cursor,
            );
            text_box(
                f,
                parts[1],
                "To read",
                vec![Line::from(format!(
                    "{} of data (used blocks where the filesystem is known; the image is usually smaller)",
                    human_size(w.estimate)
                ))],
            );
            vec![("Space", "mark"), ("Enter", "next"), ("Esc", "cancel")]
        }
        CapStep::Dest => {
            let info = if w.opening {
                "Mounting…".to_string()
            } else if w.on_network_row() {
                "An image file on an SMB share: type its URL and the password next. The share's free space \
                 is known only once it is mounted, when the capture starts."
                    .into()
            } else if w.stores.is_empty() {
                "No filesystem found. Plug in a drive formatted ext4, FAT32, exFAT or NTFS; it appears here.".into()
            } else {
                let why = match w.stores.get(w.store_sel) {
                    Some(s) => match &s.unusable {
                        Some(why) => format!("{} cannot hold the image: {why}. ", s.title()),
                        None => String::new(),
                    },
                    None => String::new(),
                };
                format!(
                    "{why}Up to {} will be read. Drives are mounted when chosen; others are listed with \
                     the reason they cannot be used.",
                    human_size(w.estimate)
                )
            };
            let list = with_info_box(f, area, 5, "Destination", &info);
            select_list(
                f,
                list,
                &step_title(2, 4, "where to write the image"),
                store_items(&w.stores, width, NETWORK_DEST),
                w.store_sel,
            );
            vec![("Enter", "choose"), ("Esc", "back")]
        }
        CapStep::Url => {
            let info = vec![Line::from(format!(
                ".{} is added to a name without it. The share is mounted when the capture starts; its \
                 free space is known only then (no space check before).",
                crate::store::IMAGE_EXT
            ))];
            url_step(
                f,
                area,
                &step_title(3, 4, "the network location"),
                &w.entry,
                info,
            )
        }
        CapStep::Name => {
            let d = w.dest.as_ref();
            let mut lines = vec![
                Line::from(format!(
                    "On {} (mounted on {})",
                    d.map(|d| d.store.title()).unwrap_or_default(),
                    d.map(|d| d.dir.display().to_string()).unwrap_or_default()
                )),
                Line::from(""),
                field_line(
                    "File name: ",
                    &format!("{}_", w.name),
                    w.field == NameField::Name,
                ),
                field_line(
                    "Compression level: ",
                    &format!(
                        "{} (1 fastest … 19 smallest; {} is a good default)",
                        w.level,
                        crate::ops::DEFAULT_LEVEL
                    ),
                    w.field == NameField::Level,
                ),
                Line::from(""),
                Line::from(format!(
                    "Free space: {}   data to read: up to {}",
                    d.and_then(|d| d.free_bytes)
                        .map(human_size)
                        .unwrap_or_else(|| "unknown".into()),
                    human_size(w.estimate)
                )),
            ];
            if let Some(warn) = w.space_warning() {
                lines.push(Line::from(Span::styled(format!("Warning: {warn}"), bold())));
            }
            lines.push(Line::from(""));
            lines.push(Line::from(if w.name.contains("::") {
                "FOLDER::NAME adds a snapshot to the repository in FOLDER (made if missing): it \
                 stores only the data the repository does not hold yet. A plain name makes one image \
                 file."
                    .to_string()
            } else {
                format!(
                    "Or FOLDER::NAME (e.g. backups::{}): a snapshot in a repository, storing only the \
                     data it does not hold yet.",
                    w.snapshot_default()
                )
            }));
            text_box(
                f,
                area,
                &step_title(3, 4, "file name and compression"),
                lines,
            );
            vec![
                ("Tab", "next field"),
                ("+/-", "level"),
                ("Enter", "next"),
                ("Esc", "back"),
            ]
        }
        CapStep::Summary => {
            let what = if w.whole {
                "the whole disk (tables, partitions, gaps)".to_string()
            } else {
                format!(
                    "partition{} {}",
                    if w.chosen.len() == 1 { "" } else { "s" },
                    w.chosen
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let mut lines = vec![
                Line::from(format!(
                    "Source:      {} {} ({})",
                    w.source.path,
                    w.source.model.as_deref().map(str::trim).unwrap_or(""),
                    human_size(w.source.size_bytes)
                )),
                Line::from(format!("Captures:    {what}")),
                Line::from(format!(
                    "Image:       {}",
                    w.output().map(|p| p.to_string()).unwrap_or_default()
                )),
                Line::from(format!("Compression: zstd level {}", w.level)),
                Line::from(format!("To read:     up to {}", human_size(w.estimate))),
            ];
            if w.remote.is_some() {
                lines.push(Line::from(
                    "Free space:  unknown until the share is mounted (not checked)",
                ));
            }
            if let Some(r) = &w.repo {
                lines.push(Line::from(super::repo::repo_line(
                    r,
                    w.passphrase.is_some(),
                )));
            }
            lines.extend([
                Line::from(""),
                Line::from("The source is only read (it is set read-only while it is read)."),
                Line::from(
                    "The image is written as .partial and renamed when complete and verified.",
                ),
            ]);
            if let Some(warn) = w.space_warning() {
                lines.push(Line::from(Span::styled(format!("Warning: {warn}"), bold())));
            }
            text_box(f, area, &step_title(4, 4, "summary"), lines);
            if w.new_repo() {
                return vec![
                    ("Enter", "start the capture"),
                    ("e", "encrypt the new repository"),
                    ("Esc", "back"),
                ];
            }
            vec![("Enter", "start the capture"), ("Esc", "back")]
        }
        CapStep::Pass => {
            let Some(p) = &w.pass else {
                return vec![];
            };
            super::repo::pass_step(f, area, &step_title(3, 4, "the passphrase"), p, w.looking)
        }
    }
}

pub(super) fn restore(
    f: &mut Frame,
    area: Rect,
    w: &RestoreWiz,
) -> Vec<(&'static str, &'static str)> {
    let width = area.width.saturating_sub(4) as usize;
    match w.step {
        RStep::Store => {
            select_list(
                f,
                area,
                &step_title(1, 5, "the drive holding the image"),
                store_items(&w.pick.stores, width, NETWORK_SOURCE),
                w.pick.store_sel,
            );
            vec![("Enter", "open"), ("Esc", "cancel")]
        }
        RStep::Image => {
            if let Some(p) = &w.pick.pass {
                let title = step_title(2, 5, "the repository's passphrase");
                return super::repo::pass_step(f, area, &title, p, w.pick.looking.is_some());
            }
            select_list(
                f,
                area,
                &step_title(
                    2,
                    5,
                    if w.reading {
                        "the image (reading it…)"
                    } else {
                        "the image"
                    },
                ),
                super::repo::image_items(&w.pick, width),
                w.pick.image_sel,
            );
            vec![("Enter", "inspect"), ("Esc", "back")]
        }
        RStep::Url => url_step(
            f,
            area,
            &step_title(2, 5, "the image's network location"),
            &w.pick.entry,
            vec![Line::from(if w.reading {
                "Reading the image… (Esc stops waiting)"
            } else {
                "A share is mounted to read the image; a web server is read by range requests."
            })],
        ),
        RStep::Details => {
            let Some(i) = &w.image else {
                return vec![];
            };
            let parts = rows(area, &[9, 0]);
            let mut lines = vec![
                Line::from(Span::styled(i.location.to_string(), bold())),
                Line::from(format!(
                    "{} {} {} {} ({}, {}-byte sectors, {})",
                    if i.virtual_format.is_some() {
                        "Holds"
                    } else {
                        "From"
                    },
                    i.disk.path,
                    i.disk.model.trim(),
                    i.disk.serial,
                    human_size(i.disk.size),
                    i.disk.logical_sector_size,
                    i.disk.table_kind.describe()
                )),
                Line::from(format!(
                    "Created {}{} by {} {}",
                    date_time(i.creation.created_unix.max(0) as u64),
                    crate::store::on_host(&i.creation.host_name),
                    i.creation.tool_name,
                    i.creation.tool_version
                )),
                Line::from(format!(
                    "Image {}; needs a disk of at least {}",
                    human_size(i.size_bytes),
                    human_size(i.layout.min_target_size())
                )),
                Line::from(format!("Root hash {}", i.root_hash)),
                Line::from(if i.unreadable_ranges > 0 {
                    format!(
                        "{} unreadable ranges on the source were saved as holes (written as zeros)",
                        i.unreadable_ranges
                    )
                } else {
                    "No unreadable ranges".to_string()
                }),
            ];
            // No capture of ours behind it: what it is and how it is restored instead.
            let foreign = match (&i.other_format, i.virtual_format) {
                (Some(format), _) => Some((
                    format.clone(),
                    "Restored from its partclone images (checked first), tables last, read back",
                )),
                (None, Some(format)) => Some((
                    format!("A {format} virtual machine disk"),
                    "Restored as a clone of the disk it holds (V2P), whole or one partition",
                )),
                (None, None) => None,
            };
            if let Some((what, how)) = foreign {
                lines.splice(
                    2..,
                    [
                        Line::from(format!(
                            "{what}, {}; needs a disk of at least {}",
                            human_size(i.size_bytes),
                            human_size(i.layout.min_target_size())
                        )),
                        Line::from(how),
                    ],
                );
            }
            text_box(f, parts[0], &step_title(3, 5, "what to restore"), lines);
            let mut items = vec![(
                format!(
                    "The whole image ({} partitions) onto a disk",
                    i.disk.partitions.len()
                ),
                true,
            )];
            for n in w.image_partitions() {
                let p = i.disk.partitions.iter().find(|p| p.number == n);
                items.push((
                    fit(
                        &format!(
                            "Partition {n}  {}  {}  {}  onto a partition",
                            p.map(|p| human_size(p.size)).unwrap_or_default(),
                            p.map(|p| p.fs_kind.as_str()).unwrap_or(""),
                            p.map(|p| p.fs_label.as_str()).unwrap_or("")
                        ),
                        width,
                    ),
                    true,
                ));
            }
            select_list(f, parts[1], "Restore", items, w.part_sel);
            let check = if w.precheck {
                "check image first: on"
            } else {
                "check image first: OFF"
            };
            vec![("Enter", "choose"), ("c", check), ("Esc", "back")]
        }
        RStep::Target => {
            let info = match w.targets.get(w.target_sel).map(|t| &t.verdict) {
                Some(Err(why)) => format!("Refused: {why}"),
                Some(Ok(p)) if p.overwritten.is_empty() => {
                    "The target holds nothing recognisable.".into()
                }
                Some(Ok(p)) => format!("Holds now (will be lost): {}", p.overwritten.join("; ")),
                None => "No disks.".into(),
            };
            let list = with_info_box(f, area, 5, "Target", &info);
            let items = w
                .targets
                .iter()
                .map(|t| {
                    let label = format!(
                        "{:<14} {:>10}  {} {}",
                        t.device,
                        human_size(match t.part {
                            Some(n) => t
                                .disk
                                .partitions
                                .iter()
                                .find(|p| p.number == n)
                                .map(|p| p.size_bytes)
                                .unwrap_or(0),
                            None => t.disk.size_bytes,
                        }),
                        json_name(&t.disk.transport),
                        t.disk.model.as_deref().map(str::trim).unwrap_or("")
                    );
                    match &t.verdict {
                        Ok(_) => (fit(&label, width), true),
                        Err(_) => (fit(&format!("{label}  -- refused"), width), false),
                    }
                })
                .collect();
            select_list(
                f,
                list,
                &step_title(4, 5, "the target"),
                items,
                w.target_sel,
            );
            vec![("Enter", "choose"), ("Esc", "back")]
        }
        RStep::Confirm => {
            let Some(t) = w.targets.get(w.target_sel) else {
                return vec![];
            };
            let mut lines = vec![Line::from(Span::styled(
                format!("EVERYTHING ON {} WILL BE DESTROYED.", t.device),
                bold(),
            ))];
            lines.push(Line::from(format!(
                "{} {} {}",
                t.disk.path,
                t.disk.model.as_deref().map(str::trim).unwrap_or(""),
                human_size(t.disk.size_bytes)
            )));
            lines.push(Line::from(""));
            lines.push(Line::from(Span::styled("Before:", bold())));
            if let Ok(p) = &t.verdict {
                if p.overwritten.is_empty() {
                    lines.push(Line::from("  nothing recognisable"));
                }
                for o in &p.overwritten {
                    lines.push(Line::from(format!("  {o}")));
                }
            }
            lines.push(Line::from(Span::styled("After:", bold())));
            if let Some(i) = &w.image {
                match w.chosen_partition() {
                    None => {
                        lines.push(Line::from(format!(
                            "  the {} from the image",
                            i.disk.table_kind.describe()
                        )));
                        for p in &i.disk.partitions {
                            lines.push(Line::from(format!(
                                "  partition {} ({}, {}{})",
                                p.number,
                                human_size(p.size),
                                if p.fs_kind.is_empty() { "?" } else { &p.fs_kind },
                                if p.fs_label.is_empty() {
                                    String::new()
                                } else {
                                    format!(" \"{}\"", p.fs_label)
                                }
                            )));
                        }
                    }
                    Some(n) => lines.push(Line::from(format!(
                        "  {} holds partition {n} of the image; the table and other partitions stay",
                        t.device
                    ))),
                }
            }
            lines.push(Line::from(if w.precheck {
                "Every chunk of the image is checked before the first write."
            } else {
                "The image is NOT checked first: a damaged chunk stops the restore part-way."
            }));
            lines.push(field_line(
                &format!(
                    "Type {} to confirm: ",
                    crate::tui::app::short_name(&t.device)
                ),
                &format!("{}_", w.typed),
                true,
            ));
            text_box(f, area, &step_title(5, 5, "confirm"), lines);
            vec![("Enter", "restore"), ("Esc", "back")]
        }
    }
}

pub(super) fn verify(
    f: &mut Frame,
    area: Rect,
    w: &VerifyWiz,
) -> Vec<(&'static str, &'static str)> {
    let width = area.width.saturating_sub(4) as usize;
    match w.step {
        VStep::Store => {
            select_list(
                f,
                area,
                &step_title(1, 2, "the drive holding the image"),
                store_items(&w.pick.stores, width, NETWORK_SOURCE),
                w.pick.store_sel,
            );
            vec![("Enter", "open"), ("Esc", "cancel")]
        }
        VStep::Image => {
            if let Some(p) = &w.pick.pass {
                let title = step_title(2, 2, "the repository's passphrase");
                return super::repo::pass_step(f, area, &title, p, w.pick.looking.is_some());
            }
            select_list(
                f,
                area,
                &step_title(2, 2, "the image to verify"),
                super::repo::image_items(&w.pick, width),
                w.pick.image_sel,
            );
            vec![("Enter", "verify"), ("Esc", "back")]
        }
        VStep::Url => url_step(
            f,
            area,
            &step_title(2, 2, "the image's network location"),
            &w.pick.entry,
            vec![],
        ),
    }
}

pub(super) fn clone(f: &mut Frame, area: Rect, w: &CloneWiz) -> Vec<(&'static str, &'static str)> {
    let width = area.width.saturating_sub(4) as usize;
    match w.step {
        CloneStep::Target => {
            let info = match w.targets.get(w.sel) {
                Some((_, Err(why))) => format!("Refused: {why}"),
                Some((_, Ok(p))) if !p.overwritten.is_empty() => {
                    format!("Holds now (will be lost): {}", p.overwritten.join("; "))
                }
                Some(_) => "The target holds nothing recognisable.".into(),
                None => "There is no other disk.".into(),
            };
            let list = with_info_box(f, area, 5, "Target", &info);
            let items = w
                .targets
                .iter()
                .map(|(d, v)| {
                    let s = disk_row(d, width);
                    match v {
                        Ok(_) => (s, true),
                        Err(_) => (fit(&format!("{s}  -- refused"), width), false),
                    }
                })
                .collect();
            select_list(
                f,
                list,
                &step_title(1, 2, &format!("clone {} onto", w.source.path)),
                items,
                w.sel,
            );
            vec![("Enter", "choose"), ("Esc", "cancel")]
        }
        CloneStep::Confirm => {
            let Some((t, v)) = w.targets.get(w.sel) else {
                return vec![];
            };
            let mut lines = vec![
                Line::from(Span::styled(
                    format!("EVERYTHING ON {} WILL BE DESTROYED.", t.path),
                    bold(),
                )),
                Line::from(format!(
                    "It becomes a copy of {} ({}).",
                    w.source.path,
                    human_size(w.source.size_bytes)
                )),
                Line::from(""),
            ];
            if let Ok(p) = v {
                for o in &p.overwritten {
                    lines.push(Line::from(format!("  loses {o}")));
                }
            }
            lines.push(Line::from(""));
            lines.push(field_line(
                &format!("Type {} to confirm: ", crate::tui::app::short_name(&t.path)),
                &format!("{}_", w.typed),
                true,
            ));
            text_box(f, area, &step_title(2, 2, "confirm"), lines);
            vec![("Enter", "clone"), ("Esc", "back")]
        }
    }
}
