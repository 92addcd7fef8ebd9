//! `builder image`: the bootable stick, and `builder netboot`: the same kernel, initramfs and menu for
//! PXE/HTTP boot.
//!
//! The bootloaders come from Debian packages downloaded once with `apt-get download` into the builder
//! cache, by package name, so the current version is whatever the archive has: the signed `shim-signed`
//! and `grub-efi-amd64-signed` for UEFI; `grub-pc-bin` (GRUB's i386-pc `boot.img` and modules) and
//! `grub-common` of exactly the same version (its `grub-mkimage`, which builds the BIOS `core.img`) for
//! legacy BIOS. Both grub packages are unpacked in Rust into the cache; `grub-mkimage` runs from there, so
//! the tool and the modules always match and nothing is installed on the host. The kernel and initramfs
//! come from [`crate::artifacts::build`]; the image itself is written by the `boot` crate.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::kernel;

pub const SHIM_PACKAGE: &str = "shim-signed";
pub const SHIM_FILE: &str = "usr/lib/shim/shimx64.efi.signed";
pub const GRUB_PACKAGE: &str = "grub-efi-amd64-signed";
pub const GRUB_FILE: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
pub const GRUB_PC_PACKAGE: &str = "grub-pc-bin";
pub const GRUB_PC_DIR: &str = "usr/lib/grub/i386-pc";
pub const GRUB_COMMON_PACKAGE: &str = "grub-common";
pub const MKIMAGE_FILE: &str = "usr/bin/grub-mkimage";

fn package_file(package: &str, file: &str) -> anyhow::Result<Vec<u8>> {
    let deb = kernel::fetch_deb(package)?;
    let mut files = boot::deb::extract(&deb, &[file])?;
    files
        .remove(file)
        .with_context(|| format!("{file} missing from {}", deb.display()))
}

/// `grub-mkimage` and the i386-pc modules of one GRUB version, unpacked into the cache once:
/// `<cache>/grub-bios/<version>/{grub-mkimage,i386-pc/}`.
fn grub_bios_tools() -> anyhow::Result<PathBuf> {
    let pc_deb = kernel::fetch_deb(GRUB_PC_PACKAGE)?;
    let version = kernel::deb_version(&pc_deb).with_context(|| {
        format!(
            "{} is not named like a Debian package (NAME_VERSION_ARCH.deb); delete it and run again",
            pc_deb.display()
        )
    })?;
    let root = kernel::cache_dir().join("grub-bios");
    let dest = root.join(&version);
    if dest.join(".complete").is_file() {
        return Ok(dest);
    }
    let common_deb = kernel::fetch_deb_version(GRUB_COMMON_PACKAGE, &version)?;
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    // Unpacked beside the destination and renamed, so a parallel build never sees half a directory.
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&root)
        .with_context(|| format!("creating a directory in {}", root.display()))?;
    let write = |rel: &str, data: &[u8], mode: u32| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let p = tmp.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", p.display()))
    };
    for (rel, data) in boot::deb::extract_dir(&pc_deb, GRUB_PC_DIR)? {
        write(&format!("i386-pc/{rel}"), &data, 0o644)?;
    }
    let tool = boot::deb::extract(&common_deb, &[MKIMAGE_FILE])?;
    if let Some(data) = tool.get(MKIMAGE_FILE) {
        write("grub-mkimage", data, 0o755)?;
    }
    write(".complete", version.as_bytes(), 0o644)?;
    let unpacked = tmp.keep();
    if let Err(e) = std::fs::rename(&unpacked, &dest) {
        let _ = std::fs::remove_dir_all(&unpacked);
        if !dest.join(".complete").is_file() {
            return Err(e)
                .with_context(|| format!("renaming {} to {}", unpacked.display(), dest.display()));
        }
    }
    Ok(dest)
}

/// GRUB's i386-pc `boot.img` and a `core.img` made for the stick (temporary files under `scratch`).
pub fn bios_images(scratch: &Path) -> anyhow::Result<boot::bios::BiosBoot> {
    let tools = grub_bios_tools()?;
    let boot_path = tools.join("i386-pc/boot.img");
    let boot_img =
        std::fs::read(&boot_path).with_context(|| format!("reading {}", boot_path.display()))?;
    let core_img = boot::bios::make_core_image(
        &tools.join("grub-mkimage"),
        &tools.join("i386-pc"),
        boot::ESP_NUMBER,
        scratch,
    )?;
    Ok(boot::bios::BiosBoot { boot_img, core_img })
}

#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Bytes.
    pub size: u64,
    /// Make the serial-console menu entry the default.
    pub serial_default: bool,
    pub epoch: u64,
    /// Legacy BIOS boot (GRUB i386-pc) besides UEFI.
    pub bios: bool,
    pub data_fs: boot::DataFs,
    /// Appended to every menu entry's kernel command line.
    pub extra_args: String,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            size: boot::DEFAULT_SIZE,
            serial_default: false,
            epoch: crate::artifacts::source_date_epoch(),
            bios: true,
            data_fs: boot::DataFs::default(),
            extra_args: String::new(),
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
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = boot::StickSpec {
        shim: package_file(SHIM_PACKAGE, SHIM_FILE)?,
        grub: package_file(GRUB_PACKAGE, GRUB_FILE)?,
        vmlinuz: read(vmlinuz)?,
        initrd: read(initrd)?,
        bios: if opts.bios {
            Some(bios_images(dir)?)
        } else {
            None
        },
        data_fs: opts.data_fs,
        extra_args: opts.extra_args.clone(),
        size: opts.size,
        serial_default: opts.serial_default,
        epoch: opts.epoch,
    };
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

/// Writes `dir/boot.ipxe` beside the `vmlinuz` and `initramfs.img` that [`crate::artifacts::build`] put
/// there; `append` goes on every entry's kernel command line (`rescue.job=URL` for a fleet). Returns the
/// script's path.
pub fn write_ipxe_script(
    dir: &Path,
    serial_default: bool,
    append: &str,
) -> anyhow::Result<PathBuf> {
    for name in [boot::ipxe::KERNEL_NAME, boot::ipxe::INITRD_NAME] {
        let p = dir.join(name);
        anyhow::ensure!(
            p.is_file(),
            "{} is missing: the iPXE script loads it from the same directory; build it first",
            p.display()
        );
    }
    let path = dir.join(boot::ipxe::SCRIPT_NAME);
    std::fs::write(&path, boot::ipxe::script(serial_default, append))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_size_is_within_budget() {
        let o = ImageOptions::default();
        assert!(o.size <= 48_000_000);
        assert!(o.bios);
        assert_eq!(o.data_fs, boot::DataFs::Exfat);
    }

    #[test]
    fn ipxe_script_needs_the_boot_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_ipxe_script(dir.path(), false, "").unwrap_err();
        assert!(format!("{e:#}").contains("vmlinuz is missing"), "{e:#}");
        std::fs::write(dir.path().join("vmlinuz"), b"k").unwrap();
        std::fs::write(dir.path().join("initramfs.img"), b"i").unwrap();
        let p = write_ipxe_script(dir.path(), true, "").unwrap();
        let s = std::fs::read_to_string(p).unwrap();
        assert!(s.starts_with("#!ipxe"), "{s}");
    }
}
