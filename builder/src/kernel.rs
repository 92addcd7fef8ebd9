//! Where the kernel comes from: by default Debian 12's current `linux-image-amd64` dependency, fetched with
//! `apt-get download` into a cache outside the repository and reused; or a given `.deb`; or a kernel file
//! and a modules directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Cache root: `$RESCUE_CACHE_DIR`, else `$XDG_CACHE_HOME/rescue-builder`, else `~/.cache/rescue-builder`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RESCUE_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("rescue-builder")
}

/// The versioned package `linux-image-amd64` currently depends on, e.g. `linux-image-6.1.0-56-amd64`.
/// The number moves with point releases and old packages vanish from the mirror, so it is never hard-coded.
pub fn resolve_kernel_package(meta: &str) -> anyhow::Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", meta])
        .output()
        .context("running apt-cache (is this a Debian system with apt?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_depends(&text).with_context(|| {
        format!(
            "apt-cache knows no dependency of {meta} (status {}). Run `apt-get update` as root, or pass \
             --kernel-deb PATH",
            out.status
        )
    })
}

fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.trim_matches(|c| c == '<' || c == '>').to_string())
        .find(|d| d.starts_with("linux-image-") && !d.contains("-unsigned"))
}

/// A cached `PACKAGE_*.deb` (the newest by name), downloading it by package name when absent: the kernel,
/// the bootloader packages of the stick, and the userspace programs of the initramfs (ntfs-3g, libc6).
pub fn fetch_deb(package: &str) -> anyhow::Result<PathBuf> {
    fetch(&format!("{package}_"), package, &[], || {
        "Check the network and `apt-get update`, or pass --kernel-deb PATH".to_string()
    })
}

/// [`fetch_deb`] through apt with these options (`-o NAME=VALUE` pairs): another archive area's lists.
pub fn fetch_deb_with(package: &str, apt_options: &[String]) -> anyhow::Result<PathBuf> {
    fetch(&format!("{package}_"), package, apt_options, || {
        "Check the network, or build without it".to_string()
    })
}

/// A cached `PACKAGE_VERSION_*.deb`, downloading exactly that version when absent: for packages whose
/// files must match another package's (grub-common's `grub-mkimage` and grub-pc-bin's modules,
/// libntfs-3g89 and ntfs-3g).
pub fn fetch_deb_version(package: &str, version: &str) -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("debs");
    fetch(
        &format!("{package}_{version}_"),
        &format!("{package}={}", version.replace("%3a", ":")),
        &[],
        || {
            format!(
                "The archive may have moved on: delete the cached {package}* packages and the one whose \
                 version it must match (grub-pc-bin, ntfs-3g) in {} and run again",
                dir.display()
            )
        },
    )
}

/// The cached package whose file name starts with `prefix`, else `apt-get download apt_name`. The package
/// directory is locked meanwhile: builds running in parallel (tests) would otherwise download one package
/// into the same file at once, or read it half written.
fn fetch(
    prefix: &str,
    apt_name: &str,
    apt_options: &[String],
    advice: impl FnOnce() -> String,
) -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("debs");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the cache directory {}", dir.display()))?;
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if let Some(found) = find_with_prefix(&dir, prefix)? {
        return Ok(found);
    }
    eprintln!("builder: downloading {apt_name} into {}", dir.display());
    let status = Command::new("apt-get")
        .args(apt_options)
        .args(["download", "-q", apt_name])
        .current_dir(&dir)
        .status()
        .context("running apt-get download")?;
    if !status.success() {
        bail!(
            "apt-get download {apt_name} failed ({status}). {}",
            advice()
        );
    }
    find_with_prefix(&dir, prefix)?.with_context(|| {
        format!(
            "apt-get download left no {prefix}*.deb in {}",
            dir.display()
        )
    })
}

/// The version in a package file name `NAME_VERSION_ARCH.deb` (an epoch's `:` stays escaped as `%3a`).
pub fn deb_version(deb: &Path) -> Option<String> {
    let name = deb.file_name()?.to_str()?;
    let mut fields = name.strip_suffix(".deb")?.split('_');
    fields.next()?;
    fields.next().map(str::to_string)
}

fn find_with_prefix(dir: &Path, prefix: &str) -> anyhow::Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            n.starts_with(prefix) && n.ends_with(".deb")
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

/// The default kernel: resolve, fetch (or reuse), and fall back to the newest cached package when apt
/// cannot be asked (offline).
pub fn default_kernel_deb() -> anyhow::Result<PathBuf> {
    match resolve_kernel_package("linux-image-amd64") {
        Ok(pkg) => fetch_deb(&pkg),
        Err(e) => {
            let dir = cache_dir().join("debs");
            if let Ok(Some(p)) = find_with_prefix(&dir, "linux-image-") {
                eprintln!("builder: {e:#}; using the cached {}", p.display());
                return Ok(p);
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends() {
        let text = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(text).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_depends("linux-image-amd64\n"), None);
    }

    #[test]
    fn versions_from_package_file_names() {
        let v = |p: &str| deb_version(Path::new(p));
        assert_eq!(
            v("/c/grub-pc-bin_2.06-13+deb12u2_amd64.deb").as_deref(),
            Some("2.06-13+deb12u2")
        );
        assert_eq!(v("x_1%3a2.0-1_all.deb").as_deref(), Some("1%3a2.0-1"));
        assert_eq!(v("notadeb.txt"), None);
    }
}
