//! Clonezilla images (a Clonezilla directory, or one partclone image, whole or split) as an image kind
//! beside ours: restored, verified and described through the same requests. Reading is
//! [`crate::clonezilla`]'s, the layout and the writes `engine::clonezilla`'s; refusals are `plan`'s,
//! as for our images.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use anyhow::bail;

use crate::clonezilla::{self, Content, Image};
use crate::detect::{self, DetectOptions};
use crate::engine::clonezilla as engine_cz;
use crate::engine::progress::{Meter, Progress};
use crate::engine::{device, restore as engine_restore};
use crate::image::{CreationInfo, DiskInfo, PartitionInfo, TableKind};

use super::inspect::{ImageInfo, StreamSummary};
use super::place::Placed;
use super::restore::{environment, plan_onto, Restored};
use super::verify::VerifyOutcome;
use super::{Control, RestoreSpec};

/// Whether `path` (a local path) is a Clonezilla image: a directory Clonezilla wrote, or a partclone
/// image file (possibly compressed, the first of its pieces).
pub fn is_clonezilla(path: &Path) -> bool {
    if path.is_dir() {
        clonezilla::is_image_dir(path)
    } else {
        path.is_file() && clonezilla::is_partclone_file(path)
    }
}

fn open(placed: &Placed) -> anyhow::Result<Image> {
    Ok(clonezilla::open(&placed.path)?)
}

/// Restores a Clonezilla image: planned and refused as a restore of our images is, then written by
/// `engine::clonezilla` (checked first, tables last, read back).
pub(super) fn restore(
    spec: &RestoreSpec,
    placed: &Placed,
    opts: &DetectOptions,
    ctl: Control,
) -> anyhow::Result<Restored> {
    let image = open(placed)?;
    // A bare partclone image (or a `saveparts` image of one partition) is one partition: restored onto a
    // partition, or onto the whole of a target that is one.
    let bare = image.disk.is_none();
    let partition = match spec.partition {
        Some(n) => Some(n),
        None if bare && image.partitions.len() == 1 => Some(image.partitions[0].number),
        None => None,
    };
    let src = engine_cz::source_of(&image, partition).map_err(|e| {
        anyhow::anyhow!(
            "{}; nothing was written to {}",
            crate::units::chain(&e),
            spec.target.display()
        )
    })?;
    let mut env = environment(placed, opts);
    // The image is many files: a target that is one of them (a piece named as the target) is the image.
    let target_identity = detect::Identity::of(&spec.target);
    if target_identity.is_some()
        && image_files(&image)
            .iter()
            .any(|f| detect::Identity::of(f) == target_identity)
    {
        env.image_identity = target_identity;
    }
    let (target_disk, plan) = plan_onto(&src.layout, spec, partition, &env, opts)?;
    let target = device::Target::open(&spec.target)?;
    let ropts = engine_restore::RestoreOptions {
        threads: spec.threads.max(1),
        precheck: spec.precheck,
        verify: spec.verify,
        unused: spec.unused,
        cancel: ctl.cancel,
    };
    let mut report = engine_cz::restore(&src, &plan, &target, &ropts, ctl.progress)?;
    report.notes.extend(image.notes.iter().cloned());
    Ok(Restored {
        target: target_disk,
        root_hash: String::new(),
        report,
    })
}

/// Every file of the image: the directory's files, or a bare image's pieces.
fn image_files(image: &Image) -> Vec<std::path::PathBuf> {
    if image.path.is_dir() {
        std::fs::read_dir(&image.path)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    } else {
        crate::partclone::stored::pieces(&image.path).unwrap_or_else(|_| vec![image.path.clone()])
    }
}

/// Checks a Clonezilla image: its tables as a restore would use them, and every partclone stream read
/// through (every checksum, the header's and the bitmap's CRCs), several streams at a time.
pub(super) fn verify(
    placed: &Placed,
    against: Option<&Path>,
    progress: Option<Sender<Progress>>,
) -> anyhow::Result<VerifyOutcome> {
    if against.is_some() {
        bail!(
            "comparing a disk with a Clonezilla image (--against) is not supported; restore it with \
             `rescue restore` (which reads what it wrote back) or verify the image alone"
        );
    }
    let image = open(placed)?;
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    // The tables and every header, as a restore reads them; where the disk cannot be described, each
    // partition alone, so that every stream is still checked.
    let whole = match (&image.disk, image.partitions.len()) {
        (None, 1) => engine_cz::source_of(&image, Some(image.partitions[0].number)),
        _ => engine_cz::source_of(&image, None),
    };
    let sources = match whole {
        Ok(src) => vec![src],
        Err(e) => {
            problems.push(crate::units::chain(&e));
            image
                .partitions
                .iter()
                .filter_map(|p| engine_cz::source_of(&image, Some(p.number)).ok())
                .collect()
        }
    };
    for p in &image.partitions {
        if let Content::Unsupported { file, why } = &p.content {
            problems.push(format!("{}: {why}", file.display()));
        }
    }
    let list: Vec<(String, &Path, Option<u64>, u64)> = sources
        .iter()
        .flat_map(|src| {
            src.partclone_streams()
                .into_iter()
                .map(|(i, first, label, raw)| (label.to_string(), first, raw, src.data_bytes(i)))
        })
        .collect();
    let meter = Mutex::new(Meter::new(
        "verify",
        list.iter().map(|s| s.3).sum(),
        progress,
    ));
    let results: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let never = AtomicBool::new(false);
    let threads = super::default_threads().clamp(1, list.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((label, first, raw, _)) = list.get(i) else {
                    return;
                };
                let r = engine_cz::check_stream(first, *raw, &never, |n| {
                    if let Ok(mut m) = meter.lock() {
                        m.advance(n, 0);
                    }
                });
                let line = match r {
                    Ok(what) => format!("{label}: {what}"),
                    Err(e) => format!("!{label}: {}", crate::units::chain(&e)),
                };
                if let Ok(mut v) = results.lock() {
                    v.push((i, line));
                }
            });
        }
    });
    if let Ok(mut m) = meter.lock() {
        m.finish();
    }
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort();
    for (_, line) in results {
        match line.strip_prefix('!') {
            Some(p) => problems.push(p.to_string()),
            None => notes.push(line),
        }
    }
    notes.extend(image.notes.iter().cloned());
    Ok(VerifyOutcome {
        root_hash: String::new(),
        problems,
        unreadable_bytes: 0,
        notes,
        image_bytes: size_of(&image.path),
    })
}

/// Bytes of a file, or of every file in a directory (not recursing).
fn size_of(path: &Path) -> u64 {
    if path.is_dir() {
        crate::store::dir_bytes(path)
    } else {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

/// "2026-12-07 19:09:31 UTC" as seconds since the epoch.
fn parse_saved_at(text: &str) -> Option<i64> {
    let t = text.trim().trim_end_matches(" UTC");
    let (date, time) = t.split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let h: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let (&[y, m, day], &[hh, mm, ss]) = (d.as_slice(), h.as_slice()) else {
        return None;
    };
    let days = crate::units::days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(day).ok()?);
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// A Clonezilla image described as an image of ours is (for `inspect` and the restore wizard): its disk,
/// the layout a restore places, and a stream per partition.
pub(super) fn as_image(placed: &Placed) -> anyhow::Result<ImageInfo> {
    let image = open(placed)?;
    let bare = image.disk.is_none();
    let src = match (&image.disk, image.partitions.len()) {
        (None, 1) => engine_cz::source_of(&image, Some(image.partitions[0].number))?,
        _ => engine_cz::source_of(&image, None)?,
    };
    let mut streams = Vec::new();
    let mut compression = None;
    let mut tool = String::new();
    for p in &image.partitions {
        let Content::Partclone { first, fs } = &p.content else {
            continue;
        };
        let pieces = crate::partclone::stored::pieces(first).unwrap_or_default();
        if compression.is_none() {
            compression = crate::partclone::stored::open(first)
                .ok()
                .map(|o| o.compression.name());
        }
        let header = src
            .headers
            .iter()
            .find(|(i, _)| src.layout.streams[*i].partition == Some(p.number))
            .map(|(_, h)| h);
        if let Some(h) = header {
            tool = format!("partclone {}", h.partclone_version);
        }
        streams.push(StreamSummary {
            label: format!("partition {} ({})", p.number, p.name),
            partition: Some(p.number),
            disk_offset: p.start,
            length: p.len,
            used_bytes: header.map_or(0, |h| {
                h.used_bitmap.unwrap_or(h.used_blocks) * u64::from(h.block_size)
            }),
            stored_bytes: pieces
                .iter()
                .filter_map(|f| std::fs::metadata(f).ok())
                .map(|m| m.len())
                .sum(),
            shared_bytes: 0,
            capture: "FilesystemAware".into(),
            reason: format!(
                "partclone image of {fs}, {} piece{}",
                pieces.len(),
                if pieces.len() == 1 { "" } else { "s" }
            ),
        });
    }
    let disk = match &image.disk {
        Some(d) => DiskInfo {
            size: d.size_bytes,
            logical_sector_size: d.table.sector_size,
            physical_sector_size: d.table.sector_size,
            model: String::new(),
            serial: String::new(),
            transport: String::new(),
            path: format!("/dev/{}", d.name),
            table_kind: match d.table.label {
                clonezilla::sfdisk::Label::Gpt => TableKind::Gpt,
                clonezilla::sfdisk::Label::Dos => TableKind::Mbr,
                clonezilla::sfdisk::Label::Other(_) => TableKind::Other,
            },
            table_id: d.table.label_id.clone().unwrap_or_default(),
            partitions: d
                .table
                .entries
                .iter()
                .map(|e| {
                    let ss = u64::from(d.table.sector_size);
                    let fs = image
                        .partitions
                        .iter()
                        .find(|p| p.number == e.number)
                        .map(|p| match &p.content {
                            Content::Partclone { fs, .. } => fs.clone(),
                            Content::Swap { .. } => "swap".into(),
                            _ => String::new(),
                        })
                        .unwrap_or_default();
                    PartitionInfo {
                        number: e.number,
                        start: e.start * ss,
                        size: e.size * ss,
                        type_id: e.kind.clone(),
                        name: e.name.clone().unwrap_or_default(),
                        uuid: e.uuid.clone().unwrap_or_default(),
                        fs_kind: fs,
                        fs_label: String::new(),
                        fs_uuid: String::new(),
                    }
                })
                .collect(),
        },
        None => DiskInfo {
            size: src.layout.size_bytes,
            logical_sector_size: src.layout.logical_sector_size,
            physical_sector_size: src.layout.logical_sector_size,
            path: image
                .partitions
                .first()
                .map(|p| format!("/dev/{}", p.name))
                .unwrap_or_default(),
            partitions: image
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    number: p.number,
                    start: p.start,
                    size: p.len,
                    fs_kind: match &p.content {
                        Content::Partclone { fs, .. } => fs.clone(),
                        _ => String::new(),
                    },
                    ..PartitionInfo::default()
                })
                .collect(),
            ..DiskInfo::default()
        },
    };
    let used_bytes = streams.iter().map(|s| s.used_bytes).sum();
    let description = format!(
        "{} ({}{}{})",
        if bare && image.partitions.len() == 1 && !image.path.is_dir() {
            "A partclone image"
        } else {
            "A Clonezilla image"
        },
        if tool.is_empty() { "partclone" } else { &tool },
        compression.map(|c| format!(", {c}")).unwrap_or_default(),
        image
            .saved_at
            .as_ref()
            .map(|s| format!(", saved {s}"))
            .unwrap_or_default()
    );
    Ok(ImageInfo {
        path: placed.path.clone(),
        image_bytes: size_of(&image.path),
        root_hash: String::new(),
        format: description.clone(),
        required_features: 0,
        creation: CreationInfo {
            tool_name: "Clonezilla".into(),
            tool_version: image.saved_by.clone().unwrap_or(tool),
            created_unix: image
                .saved_at
                .as_deref()
                .and_then(parse_saved_at)
                .unwrap_or(0),
            host_name: String::new(),
            notes: image.notes.clone(),
        },
        disk,
        layout: src.layout,
        streams,
        used_bytes,
        repeated_bytes: 0,
        unreadable: Vec::new(),
        unallocated: Vec::new(),
        virtual_format: None,
        other_format: Some(description),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_saved_at;

    #[test]
    fn clonezilla_dates_read_as_unix_time() {
        assert_eq!(parse_saved_at("1970-01-01 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_saved_at("2026-12-07 19:09:31 UTC"),
            Some(1_796_670_571)
        );
        assert_eq!(parse_saved_at("yesterday"), None);
    }
}

/// What [`import_clonezilla`] made: the capture's outcome (the new image or snapshot), and the import's
/// own figures.
#[derive(Debug)]
pub struct ClonezillaImported {
    pub capture: super::Outcome,
    /// The directory's bytes, and the seconds the restore into the temporary disk took.
    pub source_bytes: u64,
    pub restore_seconds: f64,
    /// The temporary disk's size, and the bytes written into it.
    pub temp_size: u64,
    pub temp_written: u64,
}

/// Removes the temporary disk however the import ends.
struct Temporary(std::path::PathBuf);

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A Clonezilla image (a directory, or one partclone image) made into an image of ours at `output` (a
/// file, or a repository's snapshot `REPO::NAME`): its disk restored (checked first, read back) into a
/// temporary sparse file beside the output, that file captured as any disk is (filesystem-aware,
/// deduplicated, the new image verified), and the temporary file removed, whatever happens. It needs free
/// space for the data the image holds, not for the disk's size.
pub fn import_clonezilla(
    source: &Path,
    output: &crate::url::Location,
    level: i32,
    net: &super::NetOptions,
    ctl: super::Control,
) -> anyhow::Result<ClonezillaImported> {
    use crate::url::Location;
    if !is_clonezilla(source) {
        bail!(
            "{} is neither a Clonezilla image directory nor a partclone image",
            source.display()
        );
    }
    let near = match output {
        Location::Local(p) => p.parent().map(Path::to_path_buf),
        Location::Snapshot(s) => match s.repo.as_ref() {
            Location::Local(p) => Some(p.clone()),
            _ => None,
        },
        Location::Remote(_) => None,
    };
    let Some(near) = near.map(|p| {
        if p.as_os_str().is_empty() {
            ".".into()
        } else {
            p
        }
    }) else {
        bail!(
            "importing a Clonezilla image into {output} is not supported: import it into a file or a \
             repository on this machine (or a mounted share), then copy that"
        );
    };
    let placed = Placed::local(source);
    let image = open(&placed)?;
    let single = image.disk.is_none() && image.partitions.len() == 1;
    let src = engine_cz::source_of(&image, single.then(|| image.partitions[0].number))?;
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "clonezilla".into());
    let temp = near.join(format!(".{name}.clonezilla-import.disk"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| anyhow::anyhow!("creating the temporary disk {}: {e}", temp.display()))?;
    let guard = Temporary(temp.clone());
    file.set_len(src.layout.size_bytes)?;
    drop(file);
    let spec = RestoreSpec {
        image: Location::Local(source.to_path_buf()),
        target: temp.clone(),
        confirmed: true,
        ..RestoreSpec::default()
    };
    let started = std::time::Instant::now();
    let restored = restore(&spec, &placed, &super::detect_options(), ctl.clone())?;
    let restore_seconds = started.elapsed().as_secs_f64();
    let capture = super::CaptureSpec {
        source: temp.clone(),
        output: output.clone(),
        level,
        verify: true,
        ..super::CaptureSpec::default()
    };
    let how = super::RunOptions {
        net: net.clone(),
        ..super::RunOptions::default()
    };
    let mut out = super::run(
        &super::Request::Capture(capture),
        &how,
        &super::detect_options(),
        ctl,
    );
    drop(guard);
    if let Some(e) = &out.error {
        bail!("{e}");
    }
    out.notes.insert(
        0,
        format!(
            "imported from the Clonezilla image {} through a temporary disk of {} bytes",
            source.display(),
            src.layout.size_bytes
        ),
    );
    Ok(ClonezillaImported {
        capture: out,
        source_bytes: size_of(&image.path),
        restore_seconds,
        temp_size: src.layout.size_bytes,
        temp_written: restored.report.bytes_written,
    })
}
