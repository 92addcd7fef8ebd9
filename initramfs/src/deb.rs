//! Unpacking the stock Debian kernel package: `linux-image-*.deb` is an `ar` archive whose `data.tar.xz`
//! holds `boot/vmlinuz-<release>` and `lib/modules/<release>/`. Only those (and `boot/config-*`) are
//! extracted, byte for byte: modules carry an appended signature that Secure Boot checks.
//!
//! The result is a cache: extraction goes to `<dest>.tmp-<pid>`, gets a marker file last, and is renamed
//! to `<dest>` in one step, so a crash never leaves a `dest` that looks complete. A complete `dest` is
//! returned without reading the package again. Archive paths are untrusted: absolute paths and `..` are
//! refused, nothing is written through a symlink, and symlinks pointing outside `dest` are not created.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Written last into a finished extraction; its presence is what makes a cache directory valid.
const MARKER: &str = ".rescue-unpacked";

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("the kernel package {path} does not exist ({source}). Run the builder once to download it, or pass the path of a linux-image-*.deb")]
    Missing { path: PathBuf, source: io::Error },
    #[error("cannot read the kernel package {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a Debian package (no ar archive header). Pass a linux-image-*.deb, or delete the file and download it again")]
    NotAr { path: PathBuf },
    #[error("the Debian package {path} has no data.tar.xz, data.tar.zst, data.tar.gz or data.tar member (it has: {members}). It is not a kernel package or is damaged; download it again")]
    NoDataTar { path: PathBuf, members: String },
    #[error("{member} in {path} is truncated or damaged ({source}). Delete the package and download it again")]
    Corrupt {
        path: PathBuf,
        member: String,
        source: io::Error,
    },
    #[error("{member} in {path} has an unsafe entry `{entry}`: {reason}. The package was not made by Debian; do not use it")]
    UnsafeEntry {
        path: PathBuf,
        member: String,
        entry: String,
        reason: &'static str,
    },
    #[error("cannot write {path} while unpacking the kernel package: {source}. Check free space and permissions of the cache directory")]
    Write { path: PathBuf, source: io::Error },
    #[error("the kernel package {path} contains no boot/vmlinuz-{release}. It is not a kernel image package (linux-image-*); pass one")]
    NoVmlinuz { path: PathBuf, release: String },
    #[error("the kernel package {path} contains no lib/modules/<release>/ directory (or several and no matching vmlinuz: {found}). Pass a linux-image-* package with modules")]
    NoModules { path: PathBuf, found: String },
    #[error("{path} exists but is not a kernel unpacked by the builder. Remove it or choose another cache directory")]
    ForeignDest { path: PathBuf },
    #[error("kernel file {path}: {source}. Pass an existing vmlinuz with --kernel")]
    KernelFile { path: PathBuf, source: io::Error },
    #[error("modules directory {path}: {reason}. Pass lib/modules/<release> of the same kernel with --modules-dir")]
    ModulesDir { path: PathBuf, reason: String },
}

/// An unpacked kernel: the image to boot and its modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTree {
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules_dir: PathBuf,
}

impl KernelTree {
    /// A kernel given as files (`--kernel FILE --modules-dir DIR`); the release is the directory's name.
    pub fn from_dirs(kernel_file: &Path, modules_dir: &Path) -> Result<Self, DebError> {
        let meta = fs::metadata(kernel_file).map_err(|source| DebError::KernelFile {
            path: kernel_file.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(DebError::KernelFile {
                path: kernel_file.to_path_buf(),
                source: io::Error::other("not a regular file"),
            });
        }
        let dir_err = |reason: String| DebError::ModulesDir {
            path: modules_dir.to_path_buf(),
            reason,
        };
        match fs::metadata(modules_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(dir_err("not a directory".into())),
            Err(e) => return Err(dir_err(e.to_string())),
        }
        let release = modules_dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| dir_err("its name is not a kernel release".into()))?;
        Ok(KernelTree {
            release: release.to_string(),
            vmlinuz: kernel_file.to_path_buf(),
            modules_dir: modules_dir.to_path_buf(),
        })
    }

    fn in_dest(dest: &Path, release: &str) -> Self {
        KernelTree {
            release: release.to_string(),
            vmlinuz: dest.join("boot").join(format!("vmlinuz-{release}")),
            modules_dir: dest.join("lib/modules").join(release),
        }
    }
}

/// Unpacks the kernel and modules of `deb` into `dest`, or returns the tree already there. `dest` should
/// be keyed by the package (the builder uses its file name and size), since a complete `dest` is trusted.
pub fn unpack_kernel_deb(deb: &Path, dest: &Path) -> Result<KernelTree, DebError> {
    if let Some(tree) = complete(dest)? {
        return Ok(tree);
    }
    // Before creating anything, so a typo in the package path leaves no directories behind.
    fs::metadata(deb).map_err(|e| open_error(deb, e))?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DebError::Write { path, source }
    };
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(write_err(parent))?;
    remove_stale_tmp(dest);
    let tmp = tmp_path(dest, std::process::id());
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(write_err(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(write_err(&tmp))?;
    let finished = extract(deb, &tmp).and_then(|release| {
        let (files, bytes) = file_totals(&tmp).map_err(write_err(&tmp))?;
        let marker = tmp.join(MARKER);
        fs::write(
            &marker,
            format!("release {release}\nfiles {files}\nbytes {bytes}\n"),
        )
        .map_err(write_err(&marker))?;
        // Another builder may have finished the same package meanwhile: use its result, never delete it.
        if let Some(tree) = complete(dest)? {
            return Ok(tree);
        }
        if dest.exists() {
            // `complete` refused it, so it is ours but damaged (or empty): replace it.
            fs::remove_dir_all(dest).map_err(write_err(dest))?;
        }
        match fs::rename(&tmp, dest) {
            Ok(()) => Ok(KernelTree::in_dest(dest, &release)),
            Err(e) => complete(dest)?.ok_or(DebError::Write {
                path: dest.to_path_buf(),
                source: e,
            }),
        }
    });
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    finished
}

fn open_error(deb: &Path, source: io::Error) -> DebError {
    if source.kind() == io::ErrorKind::NotFound {
        DebError::Missing {
            path: deb.to_path_buf(),
            source,
        }
    } else {
        DebError::Read {
            path: deb.to_path_buf(),
            source,
        }
    }
}

fn tmp_path(dest: &Path, pid: u32) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{pid}"));
    dest.with_file_name(name)
}

/// The tree in `dest` if a finished extraction is there; `ForeignDest` for a non-empty directory we did
/// not make, so a mistyped cache path never gets deleted. The marker records how many files and bytes
/// were extracted: files are not fsynced one by one (thousands of them), so after a power loss a tree can
/// look finished with files missing or cut short, and the totals catch that for a few thousand stats.
fn complete(dest: &Path) -> Result<Option<KernelTree>, DebError> {
    let Ok(mut entries) = fs::read_dir(dest) else {
        return Ok(None);
    };
    let marker = match fs::read_to_string(dest.join(MARKER)) {
        Ok(m) => m,
        Err(_) if entries.next().is_none() => return Ok(None),
        Err(_) => {
            return Err(DebError::ForeignDest {
                path: dest.to_path_buf(),
            })
        }
    };
    let field = |key: &str| {
        marker
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(str::trim)
    };
    let (Some(release), Some(files), Some(bytes)) =
        (field("release"), field("files"), field("bytes"))
    else {
        return Ok(None);
    };
    let tree = KernelTree::in_dest(dest, release);
    let totals = file_totals(dest)
        .ok()
        .map(|(f, b)| (f.to_string(), b.to_string()));
    let intact = totals.as_ref().map(|(f, b)| (f.as_str(), b.as_str())) == Some((files, bytes));
    Ok((intact && tree.vmlinuz.is_file() && tree.modules_dir.is_dir()).then_some(tree))
}

/// Number and total size of the regular files below `dir`, the marker excepted.
fn file_totals(dir: &Path) -> io::Result<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() && !(d == dir && entry.file_name() == MARKER) {
                files += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((files, bytes))
}

/// Extractions of processes that no longer run are garbage (hundreds of MB each).
fn remove_stale_tmp(dest: &Path) {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return;
    };
    let prefix = format!("{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Finds the data member and extracts it into `dest`; returns the kernel release.
fn extract(deb: &Path, dest: &Path) -> Result<String, DebError> {
    let mut file = File::open(deb).map_err(|e| open_error(deb, e))?;
    let mut magic = [0u8; 8];
    let read = file.read_exact(&mut magic).and_then(|()| file.rewind());
    match read {
        Ok(()) if &magic == b"!<arch>\n" => {}
        Err(e) if e.kind() != io::ErrorKind::UnexpectedEof => {
            return Err(DebError::Read {
                path: deb.into(),
                source: e,
            })
        }
        _ => return Err(DebError::NotAr { path: deb.into() }),
    }
    let mut archive = ar::Archive::new(BufReader::new(file));
    let mut members = Vec::new();
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(|source| DebError::Corrupt {
            path: deb.into(),
            member: "the ar archive".into(),
            source,
        })?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        let reader: Box<dyn Read + '_> = match name.as_str() {
            "data.tar.xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            "data.tar.zst" => {
                Box::new(zstd::stream::read::Decoder::new(entry).map_err(|source| {
                    DebError::Corrupt {
                        path: deb.into(),
                        member: name.clone(),
                        source,
                    }
                })?)
            }
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data.tar" => Box::new(entry),
            _ => {
                members.push(name);
                continue;
            }
        };
        return Unpacker {
            deb,
            member: &name,
            dest,
        }
        .run(reader);
    }
    Err(DebError::NoDataTar {
        path: deb.into(),
        members: if members.is_empty() {
            "nothing".into()
        } else {
            members.join(", ")
        },
    })
}

struct Unpacker<'a> {
    deb: &'a Path,
    member: &'a str,
    dest: &'a Path,
}

impl Unpacker<'_> {
    fn corrupt(&self, source: io::Error) -> DebError {
        DebError::Corrupt {
            path: self.deb.into(),
            member: self.member.into(),
            source,
        }
    }

    fn unsafe_entry(&self, entry: &Path, reason: &'static str) -> DebError {
        DebError::UnsafeEntry {
            path: self.deb.into(),
            member: self.member.into(),
            entry: entry.display().to_string(),
            reason,
        }
    }

    fn run(&self, reader: Box<dyn Read + '_>) -> Result<String, DebError> {
        let mut tar = tar::Archive::new(reader);
        let mut releases = BTreeSet::new();
        let mut kernels = BTreeSet::new();
        for entry in tar.entries().map_err(|e| self.corrupt(e))? {
            let mut entry = entry.map_err(|e| self.corrupt(e))?;
            let raw = entry.path().map_err(|e| self.corrupt(e))?.into_owned();
            let Some(rel) = self.wanted(&raw)? else {
                continue;
            };
            let mut parts = rel.iter().map(|c| c.to_string_lossy().into_owned());
            match (
                parts.next().as_deref(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) {
                // A release directory counts once something is in it.
                (Some("lib"), Some(_), Some(release), Some(_)) => {
                    releases.insert(release);
                }
                (Some("boot"), Some(file), None, _) => {
                    if let Some(r) = file.strip_prefix("vmlinuz-") {
                        kernels.insert(r.to_string());
                    }
                }
                _ => {}
            }
            self.write_entry(&mut entry, &raw, &rel)?;
        }
        // The tar end marker comes before the end of the compressed stream; reading to the end makes the
        // decompressor check the stream's integrity (xz and zstd checksums).
        io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(|e| self.corrupt(e))?;
        let release = match releases.len() {
            0 => None,
            1 => releases.iter().next().cloned(),
            _ => releases.intersection(&kernels).next().cloned(),
        }
        .ok_or_else(|| DebError::NoModules {
            path: self.deb.into(),
            found: releases.iter().cloned().collect::<Vec<_>>().join(", "),
        })?;
        if !kernels.contains(&release) {
            return Err(DebError::NoVmlinuz {
                path: self.deb.into(),
                release,
            });
        }
        Ok(release)
    }

    /// The destination path (relative) of an archive entry, or None for entries we do not need.
    /// `usr/lib/modules` (merged-/usr packages) lands in `lib/modules` as well.
    fn wanted(&self, raw: &Path) -> Result<Option<PathBuf>, DebError> {
        let mut parts = Vec::new();
        for c in raw.components() {
            match c {
                Component::CurDir => {}
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                Component::ParentDir => return Err(self.unsafe_entry(raw, "it contains `..`")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.unsafe_entry(raw, "it is an absolute path"))
                }
            }
        }
        if parts.first().map(String::as_str) == Some("usr")
            && parts.get(1..3) == Some(&["lib".into(), "modules".into()])
        {
            parts.remove(0);
        }
        let keep = match parts
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["boot", file] => file.starts_with("vmlinuz-") || file.starts_with("config-"),
            ["lib", "modules", _, ..] => true,
            _ => false,
        };
        Ok(keep.then(|| parts.iter().collect()))
    }

    fn write_entry<R: Read>(
        &self,
        entry: &mut tar::Entry<R>,
        raw: &Path,
        rel: &Path,
    ) -> Result<(), DebError> {
        let target = self.dest.join(rel);
        let werr = |source| DebError::Write {
            path: target.clone(),
            source,
        };
        self.check_no_symlink_in_parents(raw, rel)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            return fs::create_dir_all(&target).map_err(werr);
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(werr)?;
        }
        // A repeated path replaces the earlier entry, as in tar; remove_file never follows a symlink.
        match fs::remove_file(&target) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(werr(e)),
            _ => {}
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            let mode = entry.header().mode().map_err(|e| self.corrupt(e))? & 0o777;
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode | 0o600)
                .open(&target)
                .map_err(werr)?;
            let expected = entry.size();
            let copied = io::copy(entry, &mut out).map_err(|e| self.corrupt(e))?;
            if copied != expected {
                return Err(self.corrupt(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ends after {copied} of {expected} bytes", raw.display()),
                )));
            }
        } else if kind.is_symlink() {
            let link = entry
                .link_name()
                .map_err(|e| self.corrupt(e))?
                .ok_or_else(|| self.unsafe_entry(raw, "a symlink without a target"))?;
            // Debian once shipped `build -> /usr/src/linux-headers-...`; such links are useless here and
            // must not point out of the cache, so they are left out rather than refused.
            if stays_inside(rel, &link) {
                std::os::unix::fs::symlink(&link, &target).map_err(werr)?;
            }
        } else if kind.is_hard_link() {
            let link = entry
                .link_name()
                .map_err(|e| self.corrupt(e))?
                .ok_or_else(|| self.unsafe_entry(raw, "a hard link without a target"))?;
            let Some(source) = self.wanted(&link)? else {
                return Err(self.unsafe_entry(raw, "a hard link to a file that is not extracted"));
            };
            self.check_no_symlink_in_parents(raw, &source)?;
            fs::hard_link(self.dest.join(&source), &target).map_err(werr)?;
        }
        // Devices, FIFOs and other types have no place in a kernel package; they are skipped.
        Ok(())
    }

    /// Writing below a symlink would follow it, possibly out of `dest`.
    fn check_no_symlink_in_parents(&self, raw: &Path, rel: &Path) -> Result<(), DebError> {
        let mut path = self.dest.to_path_buf();
        let n = rel.components().count();
        for c in rel.components().take(n.saturating_sub(1)) {
            path.push(c);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(self.unsafe_entry(raw, "it lies below a symlink"));
            }
        }
        Ok(())
    }
}

/// Whether the relative symlink at `rel` pointing to `link` resolves (lexically) inside the tree root.
fn stays_inside(rel: &Path, link: &Path) -> bool {
    let mut depth = rel.components().count() as isize - 1;
    for c in link.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
#[path = "deb_tests.rs"]
mod tests;
