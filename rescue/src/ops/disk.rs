//! An image read as the disk it holds, whatever it is: ours (a file, on a share, a web or SFTP server, a
//! repository snapshot), read through its index ([`crate::image::DiskView`], every chunk checked), or a
//! virtual machine's disk read through its format's tables ([`crate::vdisk`]). For export, NBD and
//! browsing files.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::image::{DiskView, ReadAt, Select};
use crate::url::Location;

/// The disk (or partition) an image holds, ready to be read.
pub(super) struct Opened {
    pub disk: Arc<dyn ReadAt>,
    pub size: u64,
    pub data: Vec<Range<u64>>,
    pub sector: u32,
    pub what: String,
    /// The partition this is, when it is one.
    pub partition: Option<u32>,
    pub notes: Vec<String>,
}

/// Whether an image holds only some of its disk's partitions (captured with `--partition`): the numbers
/// of those it holds, when so.
fn partition_image(index: &crate::image::Index) -> Option<Vec<u32>> {
    use crate::image::StreamKind;
    let held: Vec<u32> = index
        .streams
        .iter()
        .filter_map(|s| match s.info.kind {
            StreamKind::Partition { number } => Some(number),
            _ => None,
        })
        .collect();
    let containers = ["0x05", "0x0f", "0x85"];
    let missing = index
        .disk
        .partitions
        .iter()
        .any(|p| !held.contains(&p.number) && !containers.contains(&p.type_id.as_str()));
    missing.then_some(held)
}

/// How an image's disk will be read, for how many decompressed chunks to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reading {
    /// Once from start to end (an export): a few chunks for the read-ahead.
    InOrder,
    /// Here and there, a folder's metadata, then its files (browsing files).
    Browsing,
    /// At random for as long as it is served (a VM booting from it, `qemu-img`, a mounted filesystem):
    /// as many as an eighth of the memory available holds, up to 2 GiB.
    Serving,
}

impl Reading {
    fn cached_chunks(self) -> usize {
        let chunk = u64::from(crate::image::DEFAULT_CHUNK_SIZE);
        match self {
            Reading::InOrder => crate::image::CACHED,
            Reading::Browsing => 32,
            Reading::Serving => {
                let available = std::fs::read_to_string("/proc/meminfo")
                    .ok()
                    .and_then(|m| {
                        m.lines()
                            .find_map(|l| l.strip_prefix("MemAvailable:"))
                            .and_then(|v| {
                                v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
                            })
                    })
                    .map_or(512 << 20, |kib| kib << 10);
                let budget = (available / 8).clamp(64 << 20, 2 << 30);
                usize::try_from(budget / chunk).unwrap_or(crate::image::CACHED)
            }
        }
    }
}

/// Open `image` as the disk it holds, or its partition `partition` alone (with `as_disk`, the disk with
/// only that partition); an image of one partition is that partition unless `as_disk`. A virtual disk is
/// opened whole only.
pub(super) fn open(
    image: &Location,
    partition: Option<u32>,
    as_disk: bool,
    reading: Reading,
    net: &super::NetOptions,
) -> anyhow::Result<(super::place::Placed, Opened)> {
    let placed = super::place::place(image, false, net)?;
    let opened = match placed.virtual_format() {
        Some(format) if partition.is_some() => bail!(
            "{} is a {} virtual disk: it is exported whole; leave out --partition",
            placed.path.display(),
            format.name()
        ),
        Some(format) => open_virtual(&placed, format)?,
        None => open_ours(&placed, partition, as_disk, reading)?,
    };
    Ok((placed, opened))
}

/// Open `image` for reading the files inside it: as [`open`] does, but a virtual disk's partition is
/// found through the disk's own partition table, and a file that is neither an image of ours nor a
/// virtual disk (a raw disk image, a block device) is read as a raw disk.
pub(super) fn open_for_files(
    image: &Location,
    partition: Option<u32>,
    net: &super::NetOptions,
) -> anyhow::Result<(super::place::Placed, Opened)> {
    let placed = super::place::place(image, false, net)?;
    let whole = match placed.virtual_format() {
        Some(format) => open_virtual(&placed, format)?,
        None => match open_ours(&placed, partition, false, Reading::Browsing) {
            Ok(o) => return Ok((placed, o)),
            Err(e) if not_an_image(&e) => open_raw(&placed)?,
            Err(e) => return Err(e),
        },
    };
    let opened = match partition {
        Some(n) => partition_of(whole, n, &placed.path.display().to_string())?,
        None => whole,
    };
    Ok((placed, opened))
}

/// Whether `e` says the file is no image of ours at all (rather than a damaged or unreadable one).
fn not_an_image(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::image::ImageError>(),
            Some(crate::image::ImageError::NotAnImage { .. })
        )
    })
}

/// A virtual machine's disk file, read as its guest disk.
fn open_virtual(
    placed: &super::place::Placed,
    format: crate::vdisk::Format,
) -> anyhow::Result<Opened> {
    let shown = placed.path.display().to_string();
    let file = File::open(&placed.path).with_context(|| format!("opening {shown}"))?;
    let v = crate::vdisk::open(Arc::new(file), &placed.path)?
        .ok_or_else(|| anyhow::anyhow!("{shown} is no virtual disk this program reads"))?;
    let size = v.size()?;
    Ok(Opened {
        disk: v.disk,
        size,
        data: std::iter::once(0..size).collect(),
        sector: 512,
        what: format!("the {} disk", format.name()),
        partition: None,
        notes: v.notes,
    })
}

/// A file that is neither an image of ours nor a virtual disk, read byte for byte as a disk.
fn open_raw(placed: &super::place::Placed) -> anyhow::Result<Opened> {
    let source = placed.source()?;
    let size = source
        .size()
        .with_context(|| format!("reading the size of {}", placed.path.display()))?;
    Ok(Opened {
        disk: Arc::new(source),
        size,
        data: std::iter::once(0..size).collect(),
        sector: 512,
        what: "the raw disk".to_string(),
        partition: None,
        notes: Vec::new(),
    })
}

/// The partition table of `o` (a whole disk) and the filesystem of each partition, as detection finds
/// them; `shown` names the image in messages.
pub(super) fn table(o: &Opened, shown: &str) -> anyhow::Result<crate::detect::Disk> {
    let cursor = crate::vdisk::Cursor::new(o.disk.clone())
        .with_context(|| format!("reading {} of {shown}", o.what))?;
    Ok(crate::detect::detect_image(
        cursor,
        o.size,
        shown,
        &crate::detect::DetectOptions::default(),
    ))
}

/// The partitions of `disk`, one line each (number, size, filesystem), to choose from.
pub(super) fn list_partitions(disk: &crate::detect::Disk) -> String {
    disk.partitions
        .iter()
        .filter(|p| !p.extended)
        .map(|p| {
            format!(
                "{} ({}, {})",
                p.number,
                crate::units::human_size(p.size_bytes),
                p.fs.map(|f| crate::units::json_name(&f))
                    .unwrap_or_else(|| format!("no filesystem recognised, {}", p.type_name))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Partition `n` of the whole disk `whole`, found through the disk's partition table.
fn partition_of(whole: Opened, n: u32, shown: &str) -> anyhow::Result<Opened> {
    let disk = table(&whole, shown)?;
    pick(whole, &disk, n, shown)
}

/// Partition `n` of the whole disk `whole`, whose table is `disk`.
pub(super) fn pick(
    whole: Opened,
    disk: &crate::detect::Disk,
    n: u32,
    shown: &str,
) -> anyhow::Result<Opened> {
    let Some(p) = disk
        .partitions
        .iter()
        .find(|p| p.number == n && !p.extended)
    else {
        if disk.partitions.is_empty() {
            bail!(
                "{} of {shown} has no partition table, so no partition {n}; leave out --partition",
                whole.what
            );
        }
        bail!(
            "{} of {shown} has no partition {n}; its partitions are {}: name one with --partition N",
            whole.what,
            list_partitions(disk)
        );
    };
    let part = crate::image::Slice::new(whole.disk, p.start_bytes, p.size_bytes).map_err(|e| {
        anyhow::anyhow!(
            "partition {n} of {shown} ends past the end of {} (the disk is cut short?): {e}",
            whole.what
        )
    })?;
    Ok(Opened {
        disk: Arc::new(part),
        size: p.size_bytes,
        data: std::iter::once(0..p.size_bytes).collect(),
        sector: 512,
        what: format!("partition {n} of {}", whole.what),
        partition: Some(n),
        notes: whole.notes,
    })
}

/// One of our images (a file, on a server, a snapshot) as its disk or one of its partitions.
fn open_ours(
    placed: &super::place::Placed,
    partition: Option<u32>,
    as_disk: bool,
    reading: Reading,
) -> anyhow::Result<Opened> {
    let shown = placed.path.display().to_string();
    let reader = placed.open()?;
    let index = reader.index().clone();
    let partial = partition_image(&index);
    let select = match (partition, as_disk, &partial) {
        (Some(n), false, _) => Select::Partition(n),
        (Some(n), true, _) => Select::DiskWith(n),
        (None, false, Some(held)) if held.len() == 1 => Select::Partition(held[0]),
        (None, _, _) => Select::Disk,
    };
    let view = DiskView::new(reader, select)
        .map_err(|e| anyhow::anyhow!("{shown}: {e}"))?
        .with_cache(reading.cached_chunks());
    let mut notes = Vec::new();
    let unreadable = view.unreadable_bytes();
    if unreadable > 0 {
        notes.push(format!(
            "{unreadable} bytes could not be read from the source when the image was made; they are \
             zeros in the export"
        ));
    }
    if let (Select::Disk, Some(held)) = (select, &partial) {
        notes.push(format!(
            "the image holds only partition {} of its disk; the others are zeros in the export",
            held.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let what = match select {
        Select::Partition(n) => format!("partition {n}"),
        Select::DiskWith(n) => format!("the disk with partition {n}"),
        Select::Disk => "the disk".to_string(),
    };
    let sector = match select {
        Select::Partition(_) => 512,
        _ => index.disk.logical_sector_size.max(512),
    };
    let data = view.data();
    let size = view.size()?;
    let partition = match select {
        Select::Partition(n) => Some(n),
        _ => None,
    };
    Ok(Opened {
        disk: Arc::new(view),
        size,
        data,
        sector,
        what,
        partition,
        notes,
    })
}
