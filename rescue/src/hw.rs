//! Hardware bring-up without udev or kmod: the module index the builder wrote ([`initramfs::index`]),
//! a loader that loads modules with their dependencies in parallel ([`loader`]), coldplug of the devices
//! present at boot and a listener for devices that appear later ([`uevent`]), and the `/sbin/modprobe`
//! helper the kernel runs when it wants a module itself ([`modprobe_main`]).

pub mod loader;
pub mod uevent;

use std::path::{Path, PathBuf};

pub use loader::{LoadReport, ModuleLoader};

#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("cannot read the module index {path} (the initramfs is incomplete; rebuild it with the builder)")]
    IndexRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module index {path}")]
    IndexParse {
        path: PathBuf,
        source: initramfs::index::IndexError,
    },
    #[error("cannot open module file {path}")]
    ModuleOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the kernel refused module {name} ({path})")]
    ModuleLoad {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("module {name} failed to load earlier: {reason}")]
    Failed { name: String, reason: String },
    #[error("no module provides `{0}`")]
    NotFound(String),
}

/// `/lib/modules/<release>` of the running kernel.
pub fn modules_dir(root: &Path) -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    root.join("lib/modules").join(release)
}

/// The kernel runs `/sbin/modprobe -q -- NAME` (a symlink to us) when it needs a module: a filesystem
/// type, a crypto algorithm, a block major. Returns the process exit code.
pub fn modprobe_main(args: &[String]) -> i32 {
    let mut quiet = false;
    let mut names = Vec::new();
    let mut options_done = false;
    for a in args {
        match a.as_str() {
            "--" if !options_done => options_done = true,
            "-q" | "--quiet" if !options_done => quiet = true,
            s if s.starts_with('-') && !options_done => {}
            s => names.push(s.to_string()),
        }
    }
    let loader = match ModuleLoader::open(&modules_dir(Path::new("/"))) {
        Ok(l) => l,
        Err(e) => {
            if !quiet {
                eprintln!("modprobe: {}", crate::units::chain(&e));
            }
            return 1;
        }
    };
    let mut rc = 0;
    for name in names {
        if let Err(e) = loader.load_alias(&name) {
            if !quiet {
                eprintln!("modprobe: {}", crate::units::chain(&e));
            }
            rc = 1;
        }
    }
    rc
}
