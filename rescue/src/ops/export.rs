//! `export --format`: an image (ours, a snapshot, or a virtual machine's disk) written as a virtual disk
//! file for a VM: raw, VHD, VHDX, VMDK, VDI or qcow2 ([`crate::vdisk::write`]). Written as
//! `OUTPUT.partial`, read back through our own reader of that format and compared with what was read
//! from the image (a BLAKE3 hash per piece), flushed, and only then renamed.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};

use super::Control;
use crate::engine::progress::Meter;
use crate::image::ReadAt;
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
    let (placed, o) = super::disk::open(
        &spec.image,
        spec.partition,
        spec.as_disk,
        super::disk::Reading::InOrder,
        net,
    )?;
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
