//! The offer to grow the rescue stick's data partition, never made silently: when `plan::grow` says the
//! stick has room and its data partition is empty, the overview's status line says how much is unused and
//! that `g` grows it; `g` opens a dialog that says what happens (the empty partition is re-created as a
//! new exFAT filesystem, the boot files stay), and only `y` starts the job. The decision is the plan's;
//! this module words it. `term` calls [`check_stick`] in the background (what the data partition holds);
//! the job itself is `ops::run`, and [`result_lines`] words its outcome.

use ratatui::text::{Line, Span};

use crate::detect::{FsKind, Report};
use crate::plan::grow::{data_partition, plan_grow, DataContents, GrowPlan, GrowRefusal};
use crate::store::grow::GrowReport;
use crate::units::human_size;
use crate::units::json_name;

use super::app::{App, Key, Overlay, Request};
use super::widgets::bold;

/// The rescue stick in the report and whether its data partition can grow; `None` without a stick.
pub fn verdict(app: &App) -> Option<Result<GrowPlan, GrowRefusal>> {
    let disk = app.report.disks.iter().find(|d| d.boot_medium)?;
    let contents = app
        .stick_data
        .get(&disk.path)
        .cloned()
        .unwrap_or_else(|| DataContents::Unknown("it is still being read".into()));
    Some(plan_grow(disk, &contents))
}

/// Bytes the data partition would gain.
fn gain(p: &GrowPlan) -> u64 {
    p.new_size().saturating_sub(p.old_size())
}

/// The overview's status line while growing is offered.
pub fn hint(app: &App) -> Option<String> {
    let p = verdict(app)?.ok()?;
    Some(format!(
        "{} of the rescue stick is unused: press g to grow its data partition",
        human_size(gain(&p))
    ))
}

/// A line for the stick's details in the overview.
pub fn detail(app: &App, disk_path: &str) -> Option<String> {
    let stick = app.report.disks.iter().find(|d| d.boot_medium)?;
    if stick.path != disk_path {
        return None;
    }
    Some(match verdict(app)? {
        Ok(p) => format!(
            "g: grow data partition {} {} → {} (re-created empty)",
            p.partition_name(),
            human_size(p.old_size()),
            human_size(p.new_size())
        ),
        Err(GrowRefusal::AlreadyFull { .. }) => "the data partition fills the stick".into(),
        Err(why) => format!("data partition not grown: {why}"),
    })
}

/// `g` on the overview: the dialog, or why not.
pub fn on_key_g(app: &mut App) {
    match verdict(app) {
        None => app.note(
            "no rescue stick found: only the data partition of the stick this system booted from is grown",
        ),
        Some(Err(why)) => app.note(format!("not grown: {why}")),
        Some(Ok(plan)) => app.overlay = Some(Overlay::ConfirmGrow(Box::new(plan))),
    }
}

/// A key in the dialog: `Some(Some(job))` to start, `Some(None)` to close, `None` to stay.
pub fn confirm(plan: &GrowPlan, key: Key) -> Option<Option<Request>> {
    match key {
        Key::Char('y') => Some(Some(Request::Grow(Box::new(plan.clone())))),
        Key::Char('n') | Key::Char('q') | Key::Esc => Some(None),
        _ => None,
    }
}

fn fs_name(fs: FsKind) -> String {
    match fs {
        FsKind::Vfat => "FAT".into(),
        FsKind::Exfat => "exFAT".into(),
        other => json_name(&other),
    }
}

/// The dialog's text; lines are short enough for an 80-column screen.
pub fn dialog_lines(p: &GrowPlan) -> Vec<Line<'static>> {
    vec![
        Line::from(format!(
            "The rescue stick {} ({}) has {} unused after its",
            p.disk,
            human_size(p.disk_size),
            human_size(gain(p))
        )),
        Line::from("data partition. Growing it:"),
        Line::from("- moves the partition table's backup copy to the end of the stick;"),
        Line::from(Span::styled(
            format!(
                "- RE-CREATES the data partition {} ({}, {}, empty)",
                p.partition_name(),
                human_size(p.old_size()),
                fs_name(p.old_fs)
            ),
            bold(),
        )),
        Line::from(format!(
            "  as a new, empty exFAT filesystem \"RESCUE-DATA\" of {}.",
            human_size(p.new_size())
        )),
        Line::from("It holds no files, so nothing is lost. The boot files (EFI system"),
        Line::from("partition, BIOS boot code) are not touched: the stick stays bootable."),
        Line::from(""),
        Line::from("y  grow the data partition now        n  not now"),
    ]
}

/// What the data partition of each rescue stick in `report` holds, read-only.
pub fn check_stick(report: &Report) -> Vec<(String, DataContents)> {
    report
        .disks
        .iter()
        .filter(|d| d.boot_medium && data_partition(d).is_some())
        .map(|d| (d.path.clone(), crate::store::grow::data_contents(d)))
        .collect()
}

/// The result screen's lines for the stick grown as `plan` said.
pub fn result_lines(plan: &GrowPlan, r: &GrowReport) -> Vec<String> {
    let mut lines = vec![
        format!(
            "Data partition {}: {} → {}, a new empty exFAT filesystem \"RESCUE-DATA\" (serial {:04X}-{:04X})",
            plan.partition_name(),
            human_size(r.old_size),
            human_size(r.new_size),
            r.serial >> 16,
            r.serial & 0xFFFF
        ),
        format!(
            "Partition table: the backup copy moved to LBA {}, the end of the stick",
            r.backup_header_lba
        ),
        "The EFI system partition and the BIOS boot code were not touched".into(),
    ];
    if let Some(e) = &r.reread_failed {
        lines.push(format!(
            "Warning: the kernel could not re-read the partition table ({e}); restart the rescue system before using the data partition"
        ));
    }
    lines
}
