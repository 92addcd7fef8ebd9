//! From a kernel source to `vmlinuz` + `initramfs.img` in an output directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::{firmware, kernel, programs, static_build};

/// Whether the initramfs carries the firmware its drivers name (from Debian's non-free-firmware area).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirmwareChoice {
    #[default]
    Include,
    /// Only free software on the stick; Realtek, Broadcom and Tigon NICs may then not work.
    Leave,
}

#[derive(Debug, Clone)]
pub enum KernelSource {
    /// Debian 12's current `linux-image-amd64`, downloaded into the cache once.
    Default,
    Deb(PathBuf),
    Files {
        kernel: PathBuf,
        modules_dir: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct Built {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub release: String,
    pub module_count: usize,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub seconds: f64,
    /// What firmware went in (empty when left out).
    pub firmware: firmware::Firmware,
}

/// `SOURCE_DATE_EPOCH` when set (reproducible builds), else 0.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn kernel_tree(source: &KernelSource) -> anyhow::Result<initramfs::deb::KernelTree> {
    let deb = match source {
        KernelSource::Files {
            kernel,
            modules_dir,
        } => return initramfs::deb::KernelTree::from_dirs(kernel, modules_dir).map_err(Into::into),
        KernelSource::Deb(p) => p.clone(),
        KernelSource::Default => kernel::default_kernel_deb()?,
    };
    let name = deb
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = std::fs::metadata(&deb)
        .with_context(|| format!("kernel package {}", deb.display()))?
        .len();
    let dest = kernel::cache_dir()
        .join("kernels")
        .join(format!("{name}-{size}"));
    Ok(initramfs::deb::unpack_kernel_deb(&deb, &dest)?)
}

/// Write `out_dir/vmlinuz` and `out_dir/initramfs.img`. `rescue_bin` skips building `rescue`.
/// `Built::seconds` counts the kernel and initramfs work, not compiling `rescue`.
pub fn build(
    out_dir: &Path,
    source: &KernelSource,
    rescue_bin: Option<&Path>,
    firmware_choice: FirmwareChoice,
) -> anyhow::Result<Built> {
    // The kernel first: a bad package is reported before minutes of compiling.
    let start = Instant::now();
    let tree = kernel_tree(source)?;
    let programs = programs::ntfs3g_files()?;
    let kernel_seconds = start.elapsed().as_secs_f64();
    let rescue = match rescue_bin {
        Some(p) => {
            static_build::check_static(p)?;
            p.to_path_buf()
        }
        None => static_build::build_rescue()?,
    };
    let start = Instant::now();
    let mut spec = initramfs::build::InitramfsSpec::new(tree.clone(), rescue, source_date_epoch());
    spec.extra_files.extend(programs);
    let selected = initramfs::build::select_modules(&spec)?;
    let firmware = match firmware_choice {
        FirmwareChoice::Include => firmware::firmware_files(&selected.firmware())?,
        FirmwareChoice::Leave => firmware::Firmware::default(),
    };
    spec.extra_files.extend(firmware.files.iter().cloned());
    let out = initramfs::build::build_selected(&spec, selected)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let initramfs = out_dir.join("initramfs.img");
    let vmlinuz = out_dir.join("vmlinuz");
    write_atomic(&initramfs, &out.archive)?;
    let kernel_bytes = std::fs::read(&tree.vmlinuz)
        .with_context(|| format!("reading {}", tree.vmlinuz.display()))?;
    write_atomic(&vmlinuz, &kernel_bytes)?;
    Ok(Built {
        vmlinuz,
        initramfs,
        release: tree.release.clone(),
        module_count: out.module_count,
        compressed_bytes: out.archive.len() as u64,
        uncompressed_bytes: out.uncompressed_len as u64,
        seconds: kernel_seconds + start.elapsed().as_secs_f64(),
        firmware,
    })
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
