//! Used bytes of the filesystems on a disk, from their used-block maps (for the TUI's "used %").

use std::path::Path;

use crate::detect::{Disk, FsKind};
use crate::engine::capture::Window;
use crate::engine::device;

/// Calls `found(device, used bytes)` for every filesystem of `disk` whose used-block map can be read,
/// until it returns false. Reads only; nothing is locked.
pub fn filesystem_usage(disk: &Disk, found: &mut dyn FnMut(String, u64) -> bool) {
    let regions: Vec<(String, u64, u64, FsKind)> = if disk.partitions.is_empty() {
        disk.fs
            .map(|fs| (disk.path.clone(), 0, disk.size_bytes, fs))
            .into_iter()
            .collect()
    } else {
        disk.partitions
            .iter()
            .filter_map(|p| Some((p.path.clone()?, p.start_bytes, p.size_bytes, p.fs?)))
            .collect()
    };
    if regions.is_empty() {
        return;
    }
    let Ok(source) = device::Source::open_unlocked(Path::new(&disk.path)) else {
        return;
    };
    for (dev, start, size, fs) in regions {
        if !crate::plan::has_used_map(Some(fs)) {
            continue;
        }
        let mut w = Window::new(&source, start, size);
        if let Ok(map) = crate::fs::used_map(&mut w, size, fs) {
            if !found(dev, map.used_bytes) {
                return;
            }
        }
    }
}
