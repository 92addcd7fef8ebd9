//! `builder image`: the bootable stick. The signed bootloaders come from Debian's `shim-signed` and
//! `grub-efi-amd64-signed` packages (downloaded once with `apt-get download` into the builder cache, by
//! package name, so the current version is whatever the archive has); the kernel and initramfs from
//! [`crate::artifacts::build`]; the image itself is written by the `boot` crate.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

pub const SHIM_PACKAGE: &str = "shim-signed";
pub const SHIM_FILE: &str = "usr/lib/shim/shimx64.efi.signed";
pub const GRUB_PACKAGE: &str = "grub-efi-amd64-signed";
pub const GRUB_FILE: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

fn package_file(package: &str, file: &str) -> anyhow::Result<Vec<u8>> {
    let deb = crate::kernel::fetch_deb(package)?;
    let mut files = boot::deb::extract(&deb, &[file])?;
    files
        .remove(file)
        .with_context(|| format!("{file} missing from {}", deb.display()))
}

#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Bytes.
    pub size: u64,
    /// Make the serial-console menu entry the default.
    pub serial_default: bool,
    pub epoch: u64,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            size: boot::DEFAULT_SIZE,
            serial_default: false,
            epoch: crate::artifacts::source_date_epoch(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ImageReport {
    pub path: PathBuf,
    pub info: boot::StickInfo,
    pub seconds: f64,
}

/// Writes the stick image `out` from a built kernel and initramfs.
pub fn write_image(
    out: &Path,
    vmlinuz: &Path,
    initrd: &Path,
    opts: &ImageOptions,
) -> anyhow::Result<ImageReport> {
    let start = Instant::now();
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let spec = boot::StickSpec {
        shim: package_file(SHIM_PACKAGE, SHIM_FILE)?,
        grub: package_file(GRUB_PACKAGE, GRUB_FILE)?,
        vmlinuz: read(vmlinuz)?,
        initrd: read(initrd)?,
        size: opts.size,
        serial_default: opts.serial_default,
        epoch: opts.epoch,
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Written beside the target and renamed, so a failed build never leaves a plausible-looking image.
    let tmp = out.with_extension("partial");
    let info = boot::write_stick(&tmp, &spec)?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(ImageReport {
        path: out.to_path_buf(),
        info,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_size_is_within_budget() {
        assert!(ImageOptions::default().size <= 48_000_000);
    }
}
