//! What an image holds, read from its index alone: for `inspect` and for the restore wizard.

use std::ops::Range;
use std::path::PathBuf;

use crate::image::{CreationInfo, DiskInfo, ExtentKind, Index, StreamKind};
use crate::plan;

use crate::url::Location;

/// An image's identity, source disk and streams.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub path: PathBuf,
    /// The image file's size.
    pub image_bytes: u64,
    pub root_hash: String,
    /// The format version, `MAJOR.MINOR`.
    pub format: String,
    pub required_features: u64,
    pub creation: CreationInfo,
    /// The source disk as recorded at capture.
    pub disk: DiskInfo,
    /// The source layout, for planning a restore.
    pub layout: plan::Layout,
    pub streams: Vec<StreamSummary>,
    /// Bytes meant to be captured, over every stream.
    pub used_bytes: u64,
    /// Bytes found more than once and stored once.
    pub repeated_bytes: u64,
    /// Source ranges that could not be read at capture: `(stream, disk bytes)`.
    pub unreadable: Vec<(String, Range<u64>)>,
    /// Disk ranges of unallocated space that was not read at all (FORMAT.md §7.3).
    pub unallocated: Vec<Range<u64>>,
    /// A virtual machine's disk (its format: `qcow2`, `VHDX`…), not an image of ours: no root hash, no
    /// streams, no creation info; it is restored whole, as a clone of the disk it holds.
    pub virtual_format: Option<&'static str>,
    /// An image of another program (a Clonezilla directory, a partclone image), described: no root hash,
    /// restored from its own streams.
    pub other_format: Option<String>,
}

/// One stream of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub label: String,
    /// The source partition it holds, if it is one.
    pub partition: Option<u32>,
    pub disk_offset: u64,
    pub length: u64,
    pub used_bytes: u64,
    /// Bytes of the image file written for it (each chunk counted for the first stream using it).
    pub stored_bytes: u64,
    /// Bytes of it held by chunks an earlier stream stored.
    pub shared_bytes: u64,
    /// How it was read (`Raw`, `FilesystemAware`) and why.
    pub capture: String,
    pub reason: String,
}

/// Open the image and describe it; fails, naming the file, when it is not a readable image. An image on
/// a share is read there (the share mounted for the call).
pub fn inspect(location: &Location, net: &super::NetOptions) -> anyhow::Result<ImageInfo> {
    let placed = super::place::place(location, false, net)?;
    if let Some(format) = placed.virtual_format() {
        return virtual_as_image(&placed.path, format);
    }
    if placed.clonezilla() {
        return super::clonezilla::as_image(&placed);
    }
    let image = placed.open()?;
    let index = image.index();
    let storage = index.stream_storage();
    let streams = index
        .streams
        .iter()
        .zip(&storage)
        .map(|(s, st)| StreamSummary {
            label: s.info.label.clone(),
            partition: match s.info.kind {
                StreamKind::Partition { number } => Some(number),
                _ => None,
            },
            disk_offset: s.info.disk_offset,
            length: s.info.length,
            used_bytes: s.used_bytes,
            stored_bytes: st.stored_bytes,
            shared_bytes: st.shared_bytes,
            capture: format!("{:?}", s.info.capture),
            reason: s.info.capture_reason.clone(),
        })
        .collect();
    Ok(ImageInfo {
        path: placed.path.clone(),
        image_bytes: image.file_len(),
        root_hash: image.root_hash().to_string(),
        format: format!("{}.{}", image.header().major, image.header().minor),
        required_features: image.header().required_features,
        creation: index.creation.clone(),
        disk: index.disk.clone(),
        layout: crate::engine::layout_of(index),
        streams,
        used_bytes: index.streams.iter().map(|s| s.used_bytes).sum(),
        repeated_bytes: index.repeated_bytes(),
        unreadable: unreadable_ranges(index),
        unallocated: unallocated_ranges(index),
        virtual_format: None,
        other_format: None,
    })
}

/// A virtual machine's disk, inspected: its format, what the format says, and the disk it holds as
/// detection sees it (partitions, filesystems).
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualInfo {
    pub path: PathBuf,
    pub format: &'static str,
    pub file_bytes: u64,
    pub notes: Vec<String>,
    pub disk: crate::detect::Disk,
}

/// The virtual disk `location` is, inspected; `None` when it is no virtual disk (an image of ours, or
/// something else: [`inspect`] says which).
pub fn inspect_virtual(
    location: &Location,
    net: &super::NetOptions,
) -> anyhow::Result<Option<VirtualInfo>> {
    let placed = super::place::place(location, false, net)?;
    let Some(format) = placed.virtual_format() else {
        return Ok(None);
    };
    let file = std::fs::File::open(&placed.path)?;
    // Opened once here for its notes (and its refusals, with the reason).
    let v = crate::vdisk::open(std::sync::Arc::new(file), &placed.path)?
        .ok_or_else(|| anyhow::anyhow!("{} is no virtual disk", placed.path.display()))?;
    let disk = super::detect_one(&placed.path, &super::detect_options())?;
    Ok(Some(VirtualInfo {
        path: placed.path.clone(),
        format: format.name(),
        file_bytes: std::fs::metadata(&placed.path)
            .map(|m| m.len())
            .unwrap_or(0),
        notes: v.notes,
        disk,
    }))
}

/// A virtual machine's disk described as an image is (for the restore wizard): the disk it holds as
/// detection sees it, laid out as a capture of it would be. No root hash, no streams: it is no image of
/// ours.
fn virtual_as_image(
    path: &std::path::Path,
    format: crate::vdisk::Format,
) -> anyhow::Result<ImageInfo> {
    let disk = super::detect_one(path, &super::detect_options())?;
    let plan = plan::plan_capture(&disk, &plan::CaptureRequest::default(), None)
        .map_err(|r| anyhow::anyhow!("{}: {r}", path.display()))?;
    Ok(ImageInfo {
        path: path.to_path_buf(),
        image_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        root_hash: String::new(),
        format: format!("{} virtual disk", format.name()),
        required_features: 0,
        creation: CreationInfo::default(),
        disk: crate::engine::disk_info(&disk),
        layout: plan.layout,
        streams: Vec::new(),
        used_bytes: 0,
        repeated_bytes: 0,
        unreadable: Vec::new(),
        unallocated: Vec::new(),
        virtual_format: Some(format.name()),
        other_format: None,
    })
}

/// Disk ranges of the gap streams that were not read at all.
fn unallocated_ranges(index: &Index) -> Vec<Range<u64>> {
    index
        .streams
        .iter()
        .filter(|s| {
            s.info.kind == StreamKind::Gap
                && s.info.length > 0
                && s.extents.iter().all(|e| e.kind == ExtentKind::Unused)
        })
        .map(|s| s.info.disk_offset..s.info.disk_offset + s.info.length)
        .collect()
}

fn unreadable_ranges(index: &Index) -> Vec<(String, Range<u64>)> {
    let mut out = Vec::new();
    for s in &index.streams {
        for e in s
            .extents
            .iter()
            .filter(|e| e.kind == ExtentKind::Unreadable)
        {
            let start = s.info.disk_offset + e.offset;
            out.push((s.info.label.clone(), start..start + e.len));
        }
    }
    out
}
