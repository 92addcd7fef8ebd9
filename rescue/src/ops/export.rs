//! `export --format`: an image (ours, a snapshot, or a virtual machine's disk) written as a virtual disk
//! file for a VM: raw, VHD, VHDX, VMDK, VDI or qcow2 ([`crate::vdisk::write`]). Written as
//! `OUTPUT.partial`, read back through our own reader of that format and compared with what was read
//! from the image (a BLAKE3 hash per piece), flushed, and only then renamed.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};

use super::Control;
use crate::engine::progress::Meter;
use crate::image::{DiskView, ReadAt, Select};
use crate::url::Location;
use crate::vdisk::write::{self, Compress, Target};

/// What to export, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSpec {
    pub image: Location,
    pub output: PathBuf,
    pub format: Target,
    pub compress: Compress,
    /// Export this partition of the image alone (or, with `as_disk`, the disk with only it).
    pub partition: Option<u32>,
    /// A partition image: the disk around it (its tables, the partition at its place) instead.
    pub as_disk: bool,
    /// Read the written file back and compare it with the image.
    pub verify: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskExported {
    /// What was exported ("the disk", "partition 2").
    pub what: String,
    pub format: Target,
    /// The guest disk's size.
    pub size: u64,
    /// Bytes the image holds data for (read from it).
    pub data_bytes: u64,
    /// The file's length, and the bytes it takes on its filesystem (holes left out).
    pub file_len: u64,
    pub allocated: u64,
    pub verified: bool,
    pub seconds: f64,
    pub notes: Vec<String>,
}

/// A source's reads, recorded: each piece's place and hash, to compare the written file with.
struct Recorded<'a> {
    disk: &'a dyn ReadAt,
    pieces: Mutex<Vec<(u64, usize, blake3::Hash)>>,
}

impl ReadAt for Recorded<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.disk.read_exact_at(buf, offset)?;
        if let Ok(mut p) = self.pieces.lock() {
            p.push((offset, buf.len(), blake3::hash(buf)));
        }
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        self.disk.size()
    }
}

/// The disk (or partition) an image holds, ready to be read for export.
struct Opened {
    disk: Arc<dyn ReadAt>,
    size: u64,
    data: Vec<Range<u64>>,
    sector: u32,
    what: String,
    notes: Vec<String>,
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

fn open(
    spec: &ExportSpec,
    net: &super::NetOptions,
) -> anyhow::Result<(super::place::Placed, Opened)> {
    let placed = super::place::place(&spec.image, false, net)?;
    let shown = placed.path.display().to_string();
    if let Some(format) = placed.virtual_format() {
        if spec.partition.is_some() {
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
    let select = match (spec.partition, spec.as_disk, &partial) {
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

/// Export as `spec` says; see the module's documentation.
pub fn export_disk(
    spec: &ExportSpec,
    net: &super::NetOptions,
    ctl: Control,
) -> anyhow::Result<DiskExported> {
    let started = std::time::Instant::now();
    let output = &spec.output;
    if output.exists() {
        bail!(
            "{} already exists; remove it or choose another name",
            output.display()
        );
    }
    let (placed, o) = open(spec, net)?;
    if o.size > spec.format.max_size() {
        bail!(
            "{} of {} is {} bytes; a {} file holds at most {} bytes: choose vhdx or qcow2",
            o.what,
            placed.path.display(),
            o.size,
            spec.format.name(),
            spec.format.max_size()
        );
    }
    let partial = super::capture::partial_path(output);
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::anyhow!(
                "cannot write {}: the folder {} does not exist; create it or choose another place",
                output.display(),
                output.parent().unwrap_or(Path::new(".")).display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot create {}", partial.display())),
        })?;
    let _abort = crate::sys::on_abort::RemoveOnAbort::new(&partial);
    let done = (|| -> anyhow::Result<(write::Written, bool)> {
        let total: u64 = o.data.iter().map(|r| r.end - r.start).sum();
        let recorded = Recorded {
            disk: o.disk.as_ref(),
            pieces: Mutex::new(Vec::new()),
        };
        let shown = format!("{} of {}", o.what, placed.path.display());
        let src = write::Source {
            disk: &recorded,
            size: o.size,
            data: &o.data,
            sector: o.sector,
            name: &shown,
        };
        let mut meter = Meter::new("export", total, ctl.progress.clone());
        let written = write::write(
            spec.format,
            spec.compress,
            &src,
            &file,
            &partial,
            &mut |n| {
                if ctl.cancel.load(Ordering::Relaxed) {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
                }
                meter.advance(n, n);
                Ok(())
            },
        )?;
        meter.finish();
        file.sync_all()
            .with_context(|| format!("flushing {} to disk", partial.display()))?;
        let pieces = recorded.pieces.into_inner().unwrap_or_default();
        if spec.verify {
            check_written(spec.format, &partial, output, o.size, &pieces, &ctl)?;
        }
        Ok((written, spec.verify))
    })();
    let (written, verified) = match done {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!(
                "the export of {} did not complete; nothing was left at {}",
                placed.path.display(),
                output.display()
            )));
        }
    };
    drop(file);
    super::capture::finalize(&partial, output)?;
    let allocated = std::fs::metadata(output)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap_or(0);
    Ok(DiskExported {
        what: o.what,
        format: spec.format,
        size: o.size,
        data_bytes: o.data.iter().map(|r| r.end - r.start).sum(),
        file_len: written.file_len,
        allocated,
        verified,
        seconds: started.elapsed().as_secs_f64(),
        notes: o.notes,
    })
}

/// Read `partial` (to be `output`) through our reader of `format` and compare every piece read from the
/// image with it.
fn check_written(
    format: Target,
    partial: &Path,
    output: &Path,
    size: u64,
    pieces: &[(u64, usize, blake3::Hash)],
    ctl: &Control,
) -> anyhow::Result<()> {
    let file: Arc<dyn ReadAt> = Arc::new(
        File::open(partial).with_context(|| format!("reading back {}", partial.display()))?,
    );
    let disk: Arc<dyn ReadAt> = if format == Target::Raw {
        file
    } else {
        crate::vdisk::open(file, partial)?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} was written but is not recognised as {} when read back",
                    output.display(),
                    format.name()
                )
            })?
            .disk
    };
    let read_size = disk.size()?;
    if read_size != size {
        bail!(
            "{} was written but reads back as a disk of {read_size} bytes instead of {size}",
            output.display()
        );
    }
    let total = pieces.iter().map(|p| p.1 as u64).sum();
    let mut meter = Meter::new("verify", total, ctl.progress.clone());
    let mut buf = Vec::new();
    for &(at, len, hash) in pieces {
        if ctl.cancel.load(Ordering::Relaxed) {
            bail!("cancelled");
        }
        buf.resize(len, 0);
        disk.read_exact_at(&mut buf, at)
            .with_context(|| format!("reading back {} at disk byte {at}", output.display()))?;
        if blake3::hash(&buf) != hash {
            bail!(
                "{} was written but its disk bytes {at}..{} differ from the image's when read back",
                output.display(),
                at + len as u64
            );
        }
        meter.advance(len as u64, 0);
    }
    meter.finish();
    Ok(())
}
