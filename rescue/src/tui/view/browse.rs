//! Drawing the "browse an image" wizard: the image, its partition, its folders, where to copy.

use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::Frame;

use super::network::url_step;
use super::wizards::{step_title, store_items, NETWORK_SOURCE};
use crate::ops::{FileEntry, FileKind};
use crate::store::date_time;
use crate::tui::browse::{join, BStep, BrowseWiz};
use crate::tui::widgets::{field_line, fit, rows, select_list, text_box, with_info_box};
use crate::units::human_size;

/// One row of a folder: marked or not, kind, size, time, name.
fn entry_row(w: &BrowseWiz, e: &FileEntry, width: usize) -> String {
    let mark = if w.marked.contains(&join(&w.path, &e.name)) {
        "[x]"
    } else {
        "[ ]"
    };
    let (kind, size) = match e.kind {
        FileKind::Dir => ("dir ", String::new()),
        FileKind::File => ("    ", human_size(e.size)),
        FileKind::Symlink => ("link", String::new()),
        FileKind::Other => ("    ", e.other.clone().unwrap_or_default()),
    };
    let time = e
        .modified_unix
        .filter(|t| *t > 0)
        .map(|t| date_time(t as u64))
        .unwrap_or_default();
    let name = match (&e.kind, &e.target) {
        (FileKind::Dir, _) => format!("{}/", e.name),
        (FileKind::Symlink, Some(t)) => format!("{} -> {t}", e.name),
        _ => e.name.clone(),
    };
    fit(
        &format!("{mark} {kind} {size:>10}  {time:16}  {name}"),
        width,
    )
}

pub(super) fn browse(
    f: &mut Frame,
    area: Rect,
    w: &BrowseWiz,
) -> Vec<(&'static str, &'static str)> {
    let width = area.width.saturating_sub(4) as usize;
    match w.step {
        BStep::Store => {
            select_list(
                f,
                area,
                &step_title(1, 4, "the drive holding the image"),
                store_items(&w.pick.stores, width, NETWORK_SOURCE),
                w.pick.store_sel,
            );
            vec![("Enter", "open"), ("Esc", "cancel")]
        }
        BStep::Image => {
            if let Some(p) = &w.pick.pass {
                let title = step_title(2, 4, "the repository's passphrase");
                return super::repo::pass_step(f, area, &title, p, w.pick.looking.is_some());
            }
            let list = if w.reading {
                with_info_box(
                    f,
                    area,
                    5,
                    "Reading",
                    "Reading the image… (Esc stops waiting)",
                )
            } else {
                area
            };
            select_list(
                f,
                list,
                &step_title(2, 4, "the image whose files to see"),
                super::repo::image_items(&w.pick, width),
                w.pick.image_sel,
            );
            vec![("Enter", "open"), ("Esc", "back")]
        }
        BStep::Url => url_step(
            f,
            area,
            &step_title(2, 4, "the image's network location"),
            &w.pick.entry,
            vec![Line::from(if w.reading {
                "Reading the image… (Esc stops waiting)"
            } else {
                "A share is mounted to read the image; a web server is read by range requests."
            })],
        ),
        BStep::Partition => {
            let items = w
                .parts
                .iter()
                .map(|p| (fit(&p.shown, width), true))
                .collect();
            select_list(
                f,
                area,
                &step_title(2, 4, "the partition whose files to see"),
                items,
                w.part_sel,
            );
            vec![("Enter", "open"), ("Esc", "back")]
        }
        BStep::Files => {
            let parts = rows(area, &[0, 3]);
            let items: Vec<(String, bool)> = w
                .entries
                .iter()
                .map(|e| (entry_row(w, e, width), true))
                .collect();
            let title = fit(&format!("Step 3 of 4: {}   ({})", w.path, w.fs), width);
            if items.is_empty() {
                text_box(
                    f,
                    parts[0],
                    &title,
                    vec![Line::from("This folder is empty.")],
                );
            } else {
                select_list(f, parts[0], &title, items, w.sel);
            }
            let marked = match w.marked.len() {
                0 => "Nothing marked: c copies the entry under the cursor".to_string(),
                n => format!("{n} marked (in this and other folders): c copies them"),
            };
            let status = if w.reading {
                "Reading the folder… (Esc stops waiting)".to_string()
            } else {
                marked
            };
            text_box(f, parts[1], "Marked", vec![Line::from(status)]);
            vec![
                ("Enter", "open / mark"),
                ("Space", "mark"),
                ("Backspace", "up"),
                ("c", "copy"),
                ("Esc", "back"),
            ]
        }
        BStep::Dest => {
            let items = w
                .dests
                .iter()
                .map(|s| match &s.unusable {
                    None => (fit(&s.title(), width), true),
                    Some(why) => (fit(&format!("{}  -- {why}", s.title()), width), false),
                })
                .collect();
            let list = if w.opening {
                with_info_box(f, area, 5, "Opening", "Mounting the drive…")
            } else {
                area
            };
            select_list(
                f,
                list,
                &step_title(4, 4, "the drive to copy the files onto"),
                items,
                w.dest_sel,
            );
            vec![("Enter", "choose"), ("Esc", "back")]
        }
        BStep::Name => {
            let d = w.dest.as_ref();
            let lines = vec![
                Line::from(format!(
                    "On {} (mounted on {}); free space {}",
                    d.map(|d| d.store.title()).unwrap_or_default(),
                    d.map(|d| d.dir.display().to_string()).unwrap_or_default(),
                    d.and_then(|d| d.free_bytes)
                        .map(human_size)
                        .unwrap_or_else(|| "unknown".into())
                )),
                Line::from(""),
                field_line("New folder: ", &format!("{}_", w.name), true),
                Line::from(""),
                Line::from(format!(
                    "Copies {} entr{} (folders with everything in them), keeping names and times; \
                     nothing is overwritten",
                    w.marked.len(),
                    if w.marked.len() == 1 { "y" } else { "ies" }
                )),
            ];
            text_box(f, area, &step_title(4, 4, "the folder to copy into"), lines);
            vec![("Enter", "copy"), ("Esc", "back")]
        }
    }
}
