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

/// Open `image` as the disk it holds, or its partition `partition` alone (with `as_disk`, the disk with
/// only that partition); an image of one partition is that partition unless `as_disk`.
pub(super) fn open(
    image: &Location,
    partition: Option<u32>,
    as_disk: bool,
    net: &super::NetOptions,
) -> anyhow::Result<(super::place::Placed, Opened)> {
    let placed = super::place::place(image, false, net)?;
    let shown = placed.path.display().to_string();
    if let Some(format) = placed.virtual_format() {
        if partition.is_some() {
            bail!(
                "{shown} is a {} virtual disk: it is exported whole; leave out --partition",
                format.name()
            );
        }
        let file = File::open(&placed.path).with_context(|| format!("opening {shown}"))?;
        let v = crate::vdisk::open(Arc::new(file), &placed.path)?
            .ok_or_else(|| anyhow::anyhow!("{shown} is no virtual disk this program reads"))?;
        let size = v.size()?;
        let notes = v.notes;
        return Ok((
            placed,
            Opened {
                disk: v.disk,
                size,
                data: std::iter::once(0..size).collect(),
                sector: 512,
                what: format!("the {} disk", format.name()),
                notes,
            },
        ));
    }
    let reader = placed.open()?;
    let index = reader.index().clone();
    let partial = partition_image(&index);
    let select = match (partition, as_disk, &partial) {
        (Some(n), false, _) => Select::Partition(n),
        (Some(n), true, _) => Select::DiskWith(n),
        (None, false, Some(held)) if held.len() == 1 => Select::Partition(held[0]),
        (None, _, _) => Select::Disk,
    };
    let view = DiskView::new(reader, select).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
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
    Ok((
        placed,
        Opened {
            disk: Arc::new(view),
            size,
            data,
            sector,
            what,
            notes,
        },
    ))
}
