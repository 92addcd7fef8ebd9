//! Putting it together: the initramfs is `rescue` as `/init`, the selected modules copied byte for byte
//! from the kernel tree, the module index PID 1 reads, and a few directories and device nodes, written as
//! one sorted cpio newc archive and compressed with zstd (the Debian kernel has `CONFIG_RD_ZSTD=y`).
//!
//! The output is a function of the inputs only: same kernel tree, `rescue` binary, rules, extra files,
//! `SOURCE_DATE_EPOCH` and zstd level give the same bytes (single-threaded zstd is deterministic).
//!
//! Layout:
//! ```text
//! /init                                   rescue (0755)
//! /sbin/modprobe -> /init                 the kernel's request_module helper
//! /dev/console                            c 5 1, for the kernel's stdin/stdout of /init
//! /dev /proc /sys /run /mnt, /tmp (1777)  mount points
//! /lib/modules/<release>/<path>.ko        selected modules
//! /lib/modules/<release>/modules.rescue   the module index (see `index`)
//! /etc/rescue-release                     what was built from what
//! ```
//!
//! plus `extra_files`: the builder adds ntfs-3g with its libraries under `/usr/lib/rescue/ntfs-3g/`
//! ([`crate::programs`]) and the firmware the selected modules name under `/lib/firmware/`, where the
//! kernel loads it from by itself ([`Selected::firmware`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::cpio::{Archive, CpioError};
use crate::deb::KernelTree;
use crate::depmod::{DepmodError, ModuleDb};
use crate::index::{self, ModuleIndex};
use crate::select::{self, Category, SelectError, Selection};

/// Measured on the rescue system with its network (50.6 MB of cpio, 2026-12-07): level 9 gives 12.8 MB
/// in 1.2 s, level 15 12.7 MB in 9 s, level 19 11.4 MB in 30 s (`xz -9e` would give 10.0 MB in 38 s, but
/// the kernel decompresses xz several times slower than zstd). The kernel decompresses every zstd level
/// equally fast, so the smaller image costs only build time; level 19's window (8 MiB) is far below the
/// kernel decompressor's limit (128 MiB).
pub const DEFAULT_ZSTD_LEVEL: i32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read the rescue binary {path}: {source}. Build it first (cargo build -p rescue --release with the static target) or pass its path")]
    Rescue { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Depmod(#[from] DepmodError),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("cannot read the kernel module {path}: {source}. The unpacked kernel is damaged; delete it and unpack the package again")]
    Module { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error("zstd compression of the initramfs failed: {source}")]
    Compress { source: io::Error },
    #[error("zstd level {level} is out of range; use 1 to 19 (20-22 need windows the kernel may refuse)")]
    Level { level: i32 },
}

/// Everything the archive is made from.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    pub kernel: KernelTree,
    pub rescue_binary: PathBuf,
    pub rules: Vec<Category>,
    /// Module parameters written to the index (`usb_storage` → `delay_use=1`); none by default.
    pub params: BTreeMap<String, String>,
    /// (path in the archive, contents, permission bits), e.g. a job file. Must not collide with the
    /// layout above.
    pub extra_files: Vec<(String, Vec<u8>, u32)>,
    /// The mtime of every entry: `SOURCE_DATE_EPOCH`, or 0.
    pub source_date_epoch: u64,
    pub zstd_level: i32,
}

impl InitramfsSpec {
    /// The default module rules, no parameters or extra files, [`DEFAULT_ZSTD_LEVEL`].
    pub fn new(kernel: KernelTree, rescue_binary: PathBuf, source_date_epoch: u64) -> Self {
        InitramfsSpec {
            kernel,
            rescue_binary,
            rules: select::default_rules(),
            params: BTreeMap::new(),
            extra_files: Vec::new(),
            source_date_epoch,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The zstd-compressed cpio archive, ready to be the initrd.
    pub archive: Vec<u8>,
    pub uncompressed_len: usize,
    pub module_count: usize,
    /// Sum of the selected `.ko` sizes.
    pub modules_bytes: u64,
    pub selection: Selection,
    pub index: ModuleIndex,
}

/// The modules a spec's rules choose from its kernel, before any archive is written: what the builder
/// needs to know to fetch the firmware those modules ask for.
#[derive(Debug, Clone)]
pub struct Selected {
    db: ModuleDb,
    pub selection: Selection,
    pub index: ModuleIndex,
}

impl Selected {
    /// The firmware files (paths below `/lib/firmware`) the selected modules declare, each with the
    /// modules that name it. A module names every file any of its chips may load; most machines need one
    /// or none of them.
    pub fn firmware(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in &self.selection.modules {
            let Some(m) = self.db.get(name) else { continue };
            for fw in &m.info.firmware {
                out.entry(fw.clone()).or_default().push(m.name.clone());
            }
        }
        out
    }
}

/// Scans the kernel's modules and applies the spec's rules.
pub fn select_modules(spec: &InitramfsSpec) -> Result<Selected, BuildError> {
    let db = ModuleDb::scan(&spec.kernel.modules_dir)?;
    let selection = select::select(&db, &spec.rules)?;
    let index = db.to_index(&selection.modules, &selection.boot, &spec.params);
    Ok(Selected {
        db,
        selection,
        index,
    })
}

/// Builds the compressed initramfs described by `spec`.
pub fn build_initramfs(spec: &InitramfsSpec) -> Result<BuildOutput, BuildError> {
    let selected = select_modules(spec)?;
    build_selected(spec, selected)
}

/// Builds the compressed initramfs of `spec` with modules already selected by [`select_modules`] (with
/// the same spec; its extra files may have grown since, e.g. by the firmware the modules name).
pub fn build_selected(spec: &InitramfsSpec, selected: Selected) -> Result<BuildOutput, BuildError> {
    if !(1..=19).contains(&spec.zstd_level) {
        return Err(BuildError::Level {
            level: spec.zstd_level,
        });
    }
    let (archive, selection, index, modules_bytes) = assemble(spec, selected)?;
    let mut cpio = Vec::new();
    let uncompressed_len = archive.write_to(&mut cpio, spec.source_date_epoch)? as usize;
    let compressed =
        compress(&cpio, spec.zstd_level).map_err(|source| BuildError::Compress { source })?;
    Ok(BuildOutput {
        archive: compressed,
        uncompressed_len,
        module_count: selection.modules.len(),
        modules_bytes,
        selection,
        index,
    })
}

/// A single zstd frame with a checksum, so a corrupted initrd fails loudly in the kernel's decompressor
/// instead of unpacking garbage. One thread: zstd's output then depends only on the level and input.
fn compress(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut enc = zstd::stream::Encoder::new(Vec::with_capacity(data.len() / 3), level)?;
    enc.include_checksum(true)?;
    enc.include_contentsize(true)?;
    enc.set_pledged_src_size(Some(data.len() as u64))?;
    enc.write_all(data)?;
    enc.finish()
}

/// The archive's entries, the selection and the index, and the module bytes.
fn assemble(
    spec: &InitramfsSpec,
    selected: Selected,
) -> Result<(Archive, Selection, ModuleIndex, u64), BuildError> {
    let rescue = std::fs::read(&spec.rescue_binary).map_err(|source| BuildError::Rescue {
        path: spec.rescue_binary.clone(),
        source,
    })?;
    let Selected {
        db,
        selection,
        index,
    } = selected;

    let mut a = Archive::new();
    a.add_file("init", 0o755, rescue)?;
    a.add_symlink("sbin/modprobe", "/init")?;
    a.add_dir("dev", 0o755)?;
    a.add_char_device("dev/console", 0o600, 5, 1)?;
    for d in ["proc", "sys", "run", "mnt"] {
        a.add_dir(d, 0o755)?;
    }
    a.add_dir("tmp", 0o1777)?;

    let release_dir = format!("lib/modules/{}", db.release());
    let mut modules_bytes = 0;
    for entry in index.modules.values() {
        let path = spec.kernel.modules_dir.join(&entry.path);
        let bytes = std::fs::read(&path).map_err(|source| BuildError::Module {
            path: path.clone(),
            source,
        })?;
        modules_bytes += bytes.len() as u64;
        a.add_file(&format!("{release_dir}/{}", entry.path), 0o644, bytes)?;
    }
    a.add_file(
        &format!("{release_dir}/{}", index::FILE_NAME),
        0o644,
        index.to_text().into_bytes(),
    )?;
    a.add_file(
        "etc/rescue-release",
        0o644,
        release_info(spec, &db, &selection).into_bytes(),
    )?;
    for (path, data, mode) in &spec.extra_files {
        a.add_file(path, *mode, data.clone())?;
    }
    Ok((a, selection, index, modules_bytes))
}

/// Build facts that are themselves reproducible: no host names, paths or clock readings.
fn release_info(spec: &InitramfsSpec, db: &ModuleDb, sel: &Selection) -> String {
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let categories: BTreeSet<&str> = spec.rules.iter().map(|c| c.name.as_str()).collect();
    format!(
        "builder {}\nkernel-release {}\nkernel-image {}\nsource-date-epoch {}\nzstd-level {}\nmodules {}\n\
         boot-modules {}\nmodule-rules {}\n",
        env!("CARGO_PKG_VERSION"),
        db.release(),
        file_name(&spec.kernel.vmlinuz),
        spec.source_date_epoch,
        spec.zstd_level,
        sel.modules.len(),
        sel.boot.join(","),
        categories.into_iter().collect::<Vec<_>>().join(","),
    )
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
