//! Restore and clone planning: where each stream of an image goes on a target disk or partition, which
//! tables are written as captured or rebuilt for another size, and every refusal of DESIGN §4.

use std::ops::Range;

use super::{
    human, list_numbers, plan_capture, CapturePlan, CaptureRequest, Layout, Refusal, StreamRole,
};
use crate::detect::{Disk, Identity, PartitionTable};

/// Facts about the running system a restore or clone is checked against.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Disk holding the image file being read (`detect::disk_holding`).
    pub image_disk: Option<String>,
    /// Display path of the image, for messages.
    pub image_path: String,
    /// The image file itself (a file target that is the image is refused).
    pub image_identity: Option<Identity>,
}

/// Where one stream of the image lands on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index into `Layout::streams`.
    pub stream: usize,
    pub target_offset: u64,
}

/// How the partition table reaches the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TablePlan {
    /// Write the captured table streams as they are (same size, or MBR).
    AsCaptured,
    /// GPT on a disk of another size: rewrite the primary and backup for `target_size`.
    RelocateGpt { target_size: u64 },
    /// Per-partition restore: leave the target's table alone.
    Untouched,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePlan {
    pub target: String,
    pub placements: Vec<Placement>,
    /// Streams not written, with the reason (free space beyond a smaller target's end or under its moved
    /// GPT backup).
    pub skipped: Vec<(usize, String)>,
    pub tables: TablePlan,
    /// Ranges to wipe before any data is written, so an interrupted restore leaves no valid-looking table.
    pub invalidate: Vec<Range<u64>>,
    /// What the target holds now and will lose, for the confirmation screen.
    pub overwritten: Vec<String>,
}

/// Checks shared by restore and clone, in the order a person wants to hear them.
/// `action` says what happens to the target, for the refusal of an image on it ("the disk being
/// overwritten").
fn check_target(target: &Disk, env: &Environment, action: &'static str) -> Result<(), Refusal> {
    if target.boot_medium {
        return Err(Refusal::TargetIsBootMedium {
            target: target.path.clone(),
        });
    }
    if target.identity.is_some() && target.identity == env.image_identity {
        return Err(Refusal::TargetIsImage {
            target: target.path.clone(),
        });
    }
    if env.image_disk.as_deref() == Some(target.path.as_str()) {
        return Err(Refusal::ImageOnDisk {
            image: env.image_path.clone(),
            disk: target.path.clone(),
            action,
        });
    }
    let mut mounts: Vec<String> = target.mounts.clone();
    for p in &target.partitions {
        mounts.extend(
            p.mounts
                .iter()
                .map(|m| format!("{} on {m}", p.path.as_deref().unwrap_or("partition"))),
        );
    }
    if !mounts.is_empty() {
        return Err(Refusal::Mounted {
            what: target.path.clone(),
            mounts: mounts.join(", "),
        });
    }
    if target.read_only {
        return Err(Refusal::ReadOnly {
            target: target.path.clone(),
        });
    }
    Ok(())
}

/// One line per thing the target holds now.
pub fn describe_contents(target: &Disk) -> Vec<String> {
    let mut out = Vec::new();
    for p in target.partitions.iter().filter(|p| !p.extended) {
        out.push(format!(
            "partition {} ({})",
            p.number,
            describe_partition(p)
        ));
    }
    if out.is_empty() {
        out.push(match target.fs {
            Some(fs) => format!(
                "a {} filesystem on the whole disk",
                format!("{fs:?}").to_lowercase()
            ),
            None => "no recognised partitions".to_string(),
        });
    }
    out
}

/// `20.0 MiB, ext4 "data"`: a partition's size, filesystem and label.
fn describe_partition(p: &crate::detect::Partition) -> String {
    format!(
        "{}, {}{}",
        human(p.size_bytes),
        p.fs.map(|f| format!("{f:?}").to_lowercase())
            .unwrap_or_else(|| "unknown contents".into()),
        p.fs_label
            .as_ref()
            .map(|l| format!(" \"{l}\""))
            .unwrap_or_default()
    )
}

fn describe_disk(d: &Disk) -> String {
    let ident: Vec<&str> = [d.model.as_deref(), d.serial.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    format!(
        "{} {}",
        human(d.size_bytes),
        if ident.is_empty() {
            "disk".to_string()
        } else {
            ident.join(" ")
        }
    )
}

/// Plan writing a whole image (`layout`) onto `target`.
pub fn plan_restore_disk(
    layout: &Layout,
    target: &Disk,
    env: &Environment,
    confirmed: bool,
) -> Result<RestorePlan, Refusal> {
    if !layout.covers_disk() {
        return Err(Refusal::PartialImage {
            image: env.image_path.clone(),
            partitions: list_numbers(layout.streams.iter().filter_map(|s| s.partition)),
        });
    }
    check_target(target, env, "the disk being overwritten")?;
    if target.logical_sector_size != layout.logical_sector_size
        && layout.table != PartitionTable::None
    {
        return Err(Refusal::SectorSize {
            target: target.path.clone(),
            target_sector: target.logical_sector_size,
            image_sector: layout.logical_sector_size,
        });
    }
    let need = layout.min_target_size();
    if target.size_bytes < need {
        return Err(Refusal::TooSmall {
            target: target.path.clone(),
            unit: "disk",
            have: target.size_bytes,
            have_h: human(target.size_bytes),
            need,
            need_h: human(need),
        });
    }
    if !confirmed {
        return Err(Refusal::NotConfirmed {
            target: target.path.clone(),
            description: format!(
                "{}; holds {}",
                describe_disk(target),
                describe_contents(target).join(", ")
            ),
        });
    }
    let mut plan = place_disk(
        layout,
        &target.path,
        target.size_bytes,
        target.logical_sector_size,
    );
    plan.overwritten = describe_contents(target);
    Ok(plan)
}

/// Where a whole-disk image's streams and tables go on a disk of `target_size` bytes (at least
/// [`Layout::min_target_size`]), with no refusal checked: what [`plan_restore_disk`] decides once every
/// check passed, and what `verify --against` compares a restored disk with.
pub fn place_disk(layout: &Layout, target: &str, target_size: u64, sector: u32) -> RestorePlan {
    let same_size = target_size == layout.size_bytes;
    let gpt_moves = layout.table == PartitionTable::Gpt && !same_size;
    let mut placements = Vec::new();
    let mut skipped = Vec::new();
    // Where the rebuilt GPT's backup will start: free space captured there is not written, or the backup
    // would overwrite it (and its read-back fail).
    let room = if gpt_moves {
        target_size.saturating_sub(layout.gpt_backup_len(layout.data_end()))
    } else {
        target_size
    };
    for (i, s) in layout.streams.iter().enumerate() {
        // GPT structures are rebuilt for the new size; the backup's old place is free space now.
        if gpt_moves && s.is_table() {
            continue;
        }
        let end = s.disk_offset + s.len;
        if end > room {
            // Only gaps can reach past `need`; what was beyond the smaller disk's end is free space.
            skipped.push((
                i,
                format!(
                    "{} bytes of free space that do not fit on {target} (past its end or where its GPT backup \
                     goes)",
                    s.len
                ),
            ));
            continue;
        }
        placements.push(Placement {
            stream: i,
            target_offset: s.disk_offset,
        });
    }
    let ls = u64::from(sector);
    // The first and last 34 sectors hold every table we know (MBR, GPT primary and backup).
    let edge = (34 * ls).min(target_size / 2);
    RestorePlan {
        target: target.to_string(),
        placements,
        skipped,
        tables: if gpt_moves {
            TablePlan::RelocateGpt { target_size }
        } else {
            TablePlan::AsCaptured
        },
        invalidate: vec![0..edge, target_size - edge..target_size],
        overwritten: Vec::new(),
    }
}

/// Plan writing one partition stream of the image into a target partition (or a whole target device that
/// is itself a partition or a file, when `target_partition` is None).
pub fn plan_restore_partition(
    layout: &Layout,
    image_partition: u32,
    target: &Disk,
    target_partition: Option<u32>,
    env: &Environment,
    confirmed: bool,
) -> Result<RestorePlan, Refusal> {
    check_target(
        target,
        env,
        "the disk one of whose partitions would be overwritten",
    )?;
    let Some((index, stream)) = layout
        .streams
        .iter()
        .enumerate()
        .find(|(_, s)| s.kind == StreamRole::Partition && s.partition == Some(image_partition))
    else {
        return Err(Refusal::NoSuchImagePartition {
            number: image_partition,
            available: list_numbers(layout.streams.iter().filter_map(|s| s.partition)),
        });
    };
    let target_numbers = || {
        list_numbers(
            target
                .partitions
                .iter()
                .filter(|p| !p.extended)
                .map(|p| p.number),
        )
    };
    let (offset, room, what) = match target_partition {
        Some(n) => {
            let Some(p) = target
                .partitions
                .iter()
                .find(|p| p.number == n && !p.extended)
            else {
                return Err(Refusal::NoSuchPartition {
                    disk: target.path.clone(),
                    number: n,
                    available: target_numbers(),
                });
            };
            (
                p.start_bytes,
                p.size_bytes,
                format!("partition {n} of {}", target.path),
            )
        }
        // A whole disk with a partition table is almost never meant: its table would be overwritten by
        // the start of the filesystem.
        None if target.table != PartitionTable::None => {
            return Err(Refusal::PartitionOntoPartitionedDisk {
                target: target.path.clone(),
                image_partition,
                partitions: target_numbers(),
            });
        }
        None => (0, target.size_bytes, target.path.clone()),
    };
    if room < stream.len {
        return Err(Refusal::TooSmall {
            target: what,
            unit: if target_partition.is_some() {
                "partition"
            } else {
                "disk"
            },
            have: room,
            have_h: human(room),
            need: stream.len,
            need_h: human(stream.len),
        });
    }
    if !confirmed {
        return Err(Refusal::NotConfirmed {
            target: what,
            description: format!("{} will be overwritten", human(stream.len)),
        });
    }
    Ok(RestorePlan {
        target: target.path.clone(),
        placements: vec![Placement {
            stream: index,
            target_offset: offset,
        }],
        skipped: Vec::new(),
        tables: TablePlan::Untouched,
        invalidate: Vec::new(),
        // What is lost: the partition's filesystem and label, as the confirmation shows them.
        overwritten: match target_partition
            .and_then(|n| target.partitions.iter().find(|p| p.number == n))
        {
            Some(p) => vec![format!("{what} ({})", describe_partition(p))],
            None => vec![format!("{what}: {}", describe_contents(target).join(", "))],
        },
    })
}

/// Plan a disk-to-disk clone: the capture plan of `source`, restored onto `target`.
pub fn plan_clone(
    source: &Disk,
    target: &Disk,
    raw: bool,
    confirmed: bool,
) -> Result<(CapturePlan, RestorePlan), Refusal> {
    let same_identity = match (&source.serial, &target.serial) {
        (Some(a), Some(b)) => a == b && source.model == target.model,
        _ => false,
    };
    let same_path = source.path == target.path
        || (source.identity.is_some() && source.identity == target.identity);
    if same_path || same_identity {
        return Err(Refusal::TargetIsSource {
            target: target.path.clone(),
        });
    }
    let capture = plan_capture(
        source,
        &CaptureRequest {
            partitions: Vec::new(),
            raw,
            keep_unallocated: false,
        },
        None,
    )?;
    let restore = plan_restore_disk(&capture.layout, target, &Environment::default(), confirmed)?;
    Ok((capture, restore))
}
