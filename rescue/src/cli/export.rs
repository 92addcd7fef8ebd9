//! `rescue export`: an image written out as a self-contained image file (a snapshot, or any image), or as
//! a virtual machine's disk file (`--format`: raw, VHD, VHDX, VMDK, VDI, qcow2).

use std::path::PathBuf;

use serde_json::json;

use crate::ops;
use crate::units::human_size;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The snapshot (REPO::NAME[@TIME]), image, or virtual machine disk to write out.
    pub image: PathBuf,
    /// What to write: `rimg` (an image of this program, the default) or a virtual machine disk: raw
    /// (sparse), vhd (dynamic), vhd-fixed, vhdx, vmdk (monolithicSparse), vmdk-stream (streamOptimized,
    /// as in OVA), vdi, qcow2.
    #[arg(long, default_value = "rimg", value_parser = parse_format)]
    pub format: Format,
    /// qcow2 only: compress clusters with zlib (any QEMU) or zstd (QEMU 5.1 and later); none by default.
    #[arg(long, value_parser = parse_compress)]
    pub compress: Option<ops::Compress>,
    /// Export this partition of the image alone (a virtual disk holding just the filesystem).
    #[arg(long)]
    pub partition: Option<u32>,
    /// An image of one partition: write the disk around it (its partition table, the partition at its
    /// place) instead of the partition alone.
    #[arg(long)]
    pub as_disk: bool,
    /// The image file to write (a self-contained image; written as FILE.partial until complete).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Do not read the written file back to check every chunk's hash.
    #[arg(long)]
    pub no_verify: bool,
    /// Progress as JSON lines on stderr and the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: super::imaging::NetArgs,
}

/// `rescue export`: a snapshot as one image file, then (unless asked not to) the file verified.
pub fn run(a: ExportArgs) -> anyhow::Result<i32> {
    let image = ops::Location::parse(&a.image.to_string_lossy())?;
    let net = a.net.options(&image)?;
    if let Format::Disk(format) = a.format {
        return disk(&a, image, format, &net);
    }
    if a.compress.is_some() || a.partition.is_some() || a.as_disk {
        anyhow::bail!(
            "--compress, --partition and --as-disk are for virtual disk formats (--format qcow2, vhdx, …); \
             an image of this program is copied as it is"
        );
    }
    let (ctl, printers) = super::progress::control(a.json, true);
    let result = ops::export(&image, &a.output, &net, ctl);
    printers.finish();
    let e = result?;
    let mut verified = false;
    if !a.no_verify {
        let req = ops::Request::Verify(ops::VerifySpec {
            image: ops::Location::Local(a.output.clone()),
            against: None,
        });
        let (ctl, printers) = super::progress::control(a.json, true);
        let out = ops::run(
            &req,
            &ops::RunOptions::default(),
            &super::detect_options(),
            ctl,
        );
        printers.finish();
        if let Some(err) = out.error {
            anyhow::bail!(
                "{} was written but does not verify: {err}",
                a.output.display()
            );
        }
        verified = true;
    }
    if a.json {
        println!(
            "{}",
            json!({"ok": true, "image": image.to_string(), "output": a.output, "bytes": e.bytes,
                   "root_hash": e.root_hash, "verified": verified, "seconds": e.seconds})
        );
    } else {
        eprintln!(
            "wrote {} ({}) from {} in {:.1} s{}; root hash {}",
            a.output.display(),
            human_size(e.bytes),
            image,
            e.seconds,
            if verified { ", verified" } else { "" },
            e.root_hash
        );
    }
    Ok(0)
}

/// What `--format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An image of this program.
    Rimg,
    Disk(ops::DiskFormat),
}

fn parse_format(s: &str) -> Result<Format, String> {
    if s == "rimg" {
        return Ok(Format::Rimg);
    }
    ops::DiskFormat::parse(s).map(Format::Disk).ok_or_else(|| {
        let names: Vec<&str> = ops::DiskFormat::ALL.iter().map(|f| f.name()).collect();
        format!("unknown format `{s}`: rimg, {}", names.join(", "))
    })
}

fn parse_compress(s: &str) -> Result<ops::Compress, String> {
    ops::Compress::parse(s).ok_or_else(|| format!("unknown compression `{s}`: none, zlib or zstd"))
}

/// `export --format FMT`: a virtual machine's disk file.
fn disk(
    a: &ExportArgs,
    image: ops::Location,
    format: ops::DiskFormat,
    net: &ops::NetOptions,
) -> anyhow::Result<i32> {
    let spec = ops::ExportSpec {
        image: image.clone(),
        output: a.output.clone(),
        format,
        compress: a.compress.unwrap_or_default(),
        partition: a.partition,
        as_disk: a.as_disk,
        verify: !a.no_verify,
    };
    let (ctl, printers) = super::progress::control(a.json, true);
    let result = ops::export_disk(&spec, net, ctl);
    printers.finish();
    let e = result?;
    if a.json {
        println!(
            "{}",
            json!({"ok": true, "image": image.to_string(), "output": a.output, "format": format.name(),
                   "what": e.what, "disk_bytes": e.size, "data_bytes": e.data_bytes,
                   "file_bytes": e.file_len, "allocated_bytes": e.allocated, "verified": e.verified,
                   "seconds": e.seconds, "notes": e.notes})
        );
    } else {
        for n in &e.notes {
            eprintln!("note: {n}");
        }
        eprintln!(
            "wrote {} ({} file, {} on disk): {} of {} ({}), {} of data, in {:.1} s{}",
            a.output.display(),
            format.name(),
            human_size(e.allocated),
            e.what,
            image,
            human_size(e.size),
            human_size(e.data_bytes),
            e.seconds,
            if e.verified {
                ", read back and verified"
            } else {
                ""
            }
        );
    }
    Ok(0)
}
