//! Our own depmod: the module table of one kernel, computed from every module's `.modinfo` because the
//! Debian package ships no `modules.dep`/`modules.alias`. It answers "which file is module X", "which
//! modules provide alias Y", and "what else must be loaded with X" (hard dependencies and softdeps), and
//! writes the subset that goes into the initramfs as a [`ModuleIndex`].
//!
//! Scanning reads each `.ko` whole (about 4000 files, a few hundred MB, mostly from the page cache right
//! after unpacking) on a few threads; parsing only touches the section headers and `.modinfo`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::index::{glob_match, normalize, ModuleEntry, ModuleIndex};
use crate::modinfo::{self, Builtin, ModInfo, ModInfoError};

#[derive(Debug, thiserror::Error)]
pub enum DepmodError {
    #[error("{path} has no kernel/ directory with modules (compressed .ko.xz/.ko.zst modules are not supported). Pass lib/modules/<release> of an unpacked kernel package")]
    NoModules { path: PathBuf },
    #[error("cannot read the modules directory {path}: {source}")]
    Walk { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Module(#[from] ModInfoError),
    #[error("cannot read {path}: {source}. The modules directory is incomplete; unpack the kernel package again")]
    Builtin { path: PathBuf, source: io::Error },
    #[error("module {module} depends on {dependency}, which is neither a module in {modules_dir} nor built into the kernel. The modules directory is incomplete; unpack the kernel package again")]
    MissingDependency {
        module: String,
        dependency: String,
        modules_dir: PathBuf,
    },
    #[error("no module named {name} in {modules_dir}")]
    UnknownModule { name: String, modules_dir: PathBuf },
}

/// One loadable module file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Normalised name (`usb_storage`).
    pub name: String,
    /// Relative to the release directory, `/`-separated (`kernel/drivers/usb/storage/usb-storage.ko`).
    pub path: String,
    /// File size in bytes (signature included).
    pub size: u64,
    pub info: ModInfo,
}

#[derive(Debug, Clone)]
pub struct ModuleDb {
    release: String,
    modules_dir: PathBuf,
    modules: BTreeMap<String, Module>,
    builtin: Builtin,
    /// (pattern, module) of loadable modules, by module name then modinfo order.
    aliases: Vec<(String, String)>,
}

impl ModuleDb {
    /// Reads every `kernel/**/*.ko` below `modules_dir` (`lib/modules/<release>`) and the builtin lists.
    /// The release is the directory's name.
    pub fn scan(modules_dir: &Path) -> Result<Self, DepmodError> {
        let mut paths = Vec::new();
        walk(&modules_dir.join("kernel"), "kernel", &mut paths).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                DepmodError::NoModules {
                    path: modules_dir.into(),
                }
            } else {
                DepmodError::Walk {
                    path: modules_dir.into(),
                    source,
                }
            }
        })?;
        if paths.is_empty() {
            return Err(DepmodError::NoModules {
                path: modules_dir.into(),
            });
        }
        paths.sort();
        let modules = read_all(modules_dir, &paths)?;

        let mut builtin = Builtin::default();
        if let Some(text) = read_optional(&modules_dir.join("modules.builtin"))? {
            builtin.add_builtin_list(&String::from_utf8_lossy(&text));
        }
        if let Some(data) = read_optional(&modules_dir.join("modules.builtin.modinfo"))? {
            builtin.add_builtin_modinfo(&data);
        }
        let release = modules_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self::from_parts(
            release,
            modules_dir.into(),
            modules,
            builtin,
        ))
    }

    /// A table from already parsed modules. When two files claim the same name, the first (in the given
    /// order) wins, which keeps the result independent of directory order.
    pub fn from_parts(
        release: String,
        modules_dir: PathBuf,
        list: Vec<Module>,
        builtin: Builtin,
    ) -> Self {
        let mut modules = BTreeMap::new();
        for m in list {
            modules.entry(m.name.clone()).or_insert(m);
        }
        let aliases = modules
            .values()
            .flat_map(|m: &Module| m.info.aliases.iter().map(|a| (a.clone(), m.name.clone())))
            .collect();
        ModuleDb {
            release,
            modules_dir,
            modules,
            builtin,
            aliases,
        }
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    pub fn modules_dir(&self) -> &Path {
        &self.modules_dir
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// All loadable modules, by name.
    pub fn modules(&self) -> impl Iterator<Item = &Module> {
        self.modules.values()
    }

    pub fn builtin(&self) -> &Builtin {
        &self.builtin
    }

    /// The loadable module called `name` (`-` and `_` are the same).
    pub fn get(&self, name: &str) -> Option<&Module> {
        self.modules.get(&normalize(name))
    }

    /// The modules whose file lies below `kernel/<dir>/`.
    pub fn under_dir(&self, dir: &str) -> Vec<&Module> {
        let prefix = format!("kernel/{}/", dir.trim_matches('/'));
        self.modules
            .values()
            .filter(|m| m.path.starts_with(&prefix))
            .collect()
    }

    /// Whether the kernel has `name_or_alias` built in, so there is nothing to load.
    pub fn is_builtin(&self, name_or_alias: &str) -> bool {
        self.builtin.names.contains(&normalize(name_or_alias))
            || self
                .builtin
                .aliases
                .iter()
                .any(|(p, _)| glob_match(p, name_or_alias))
    }

    /// Loadable modules providing `name_or_alias`: the module of that name, else every module with a
    /// matching alias pattern (sorted, without duplicates).
    pub fn resolve(&self, name_or_alias: &str) -> Vec<&str> {
        if let Some(m) = self.get(name_or_alias) {
            return vec![m.name.as_str()];
        }
        let found: BTreeSet<&str> = self
            .aliases
            .iter()
            .filter(|(p, _)| glob_match(p, name_or_alias))
            .map(|(_, m)| m.as_str())
            .collect();
        found.into_iter().collect()
    }

    /// `roots` and everything loading them can pull in: hard dependencies (each must exist, as module or
    /// builtin) and softdeps resolved through names or aliases (optional: unresolvable ones are ignored,
    /// as modprobe does).
    pub fn closure<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeSet<String>, DepmodError> {
        let mut out = BTreeSet::new();
        let mut queue = VecDeque::new();
        for r in roots {
            let m = self.get(r).ok_or_else(|| DepmodError::UnknownModule {
                name: r.to_string(),
                modules_dir: self.modules_dir.clone(),
            })?;
            queue.push_back(m);
        }
        while let Some(m) = queue.pop_front() {
            if !out.insert(m.name.clone()) {
                continue;
            }
            for dep in &m.info.depends {
                match self.get(dep) {
                    Some(d) => queue.push_back(d),
                    None if self.builtin.names.contains(dep) => {}
                    None => {
                        return Err(DepmodError::MissingDependency {
                            module: m.name.clone(),
                            dependency: dep.clone(),
                            modules_dir: self.modules_dir.clone(),
                        })
                    }
                }
            }
            for soft in m.info.softdep_pre.iter().chain(&m.info.softdep_post) {
                queue.extend(self.resolve(soft).into_iter().filter_map(|n| self.get(n)));
            }
        }
        Ok(out)
    }

    /// The index PID 1 reads, for the `selected` modules (which should be closed under
    /// [`closure`](Self::closure)). Softdeps are written as the selected module names they resolve to:
    /// PID 1 then needs no alias lookup for them, and aliases with `-` (`crypto-crc32c`) would not survive
    /// the index's name normalisation. `boot` modules not selected (e.g. builtin) are left out.
    pub fn to_index(
        &self,
        selected: &BTreeSet<String>,
        boot: &[String],
        params: &BTreeMap<String, String>,
    ) -> ModuleIndex {
        let mut idx = ModuleIndex {
            release: self.release.clone(),
            ..Default::default()
        };
        let soft = |names: &[String]| -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            for n in names.iter().flat_map(|n| self.resolve(n)) {
                if selected.contains(n) && !out.iter().any(|o| o == n) {
                    out.push(n.to_string());
                }
            }
            out
        };
        for m in selected.iter().filter_map(|n| self.get(n)) {
            idx.modules.insert(
                m.name.clone(),
                ModuleEntry {
                    path: m.path.clone(),
                    depends: m.info.depends.clone(),
                    softdep_pre: soft(&m.info.softdep_pre),
                    softdep_post: soft(&m.info.softdep_post),
                    params: params.get(&m.name).cloned().unwrap_or_default(),
                },
            );
            idx.aliases.extend(
                m.info
                    .aliases
                    .iter()
                    .filter(|a| index_safe(a))
                    .map(|a| (a.clone(), m.name.clone())),
            );
        }
        idx.aliases.extend(
            self.builtin
                .aliases
                .iter()
                .filter(|(a, _)| index_safe(a))
                .cloned(),
        );
        idx.builtin = self.builtin.names.clone();
        for b in boot.iter().map(|b| normalize(b)) {
            if idx.modules.contains_key(&b) && !idx.boot.contains(&b) {
                idx.boot.push(b);
            }
        }
        idx
    }
}

/// The index separates fields by spaces and records by lines.
fn index_safe(alias: &str) -> bool {
    !alias.is_empty() && !alias.chars().any(char::is_whitespace)
}

/// Collects `.ko` files below `dir`, as paths relative to the release directory. Symlinks are not
/// followed: a kernel tree has none, and following them could leave the tree.
fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ty = entry.file_type()?;
        let child = format!("{rel}/{name}");
        if ty.is_dir() {
            walk(&entry.path(), &child, out)?;
        } else if ty.is_file() && name.ends_with(".ko") {
            out.push(child);
        }
    }
    Ok(())
}

/// Parses all modules on up to 4 threads (I/O and parsing overlap; more threads gain nothing on the
/// 2-core build machines). Results keep the order of `paths`.
fn read_all(modules_dir: &Path, paths: &[String]) -> Result<Vec<Module>, DepmodError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(rel) = paths.get(i) else {
                return done;
            };
            let result = modinfo::read_module(&modules_dir.join(rel)).map(|(info, size)| Module {
                name: info.name.clone(),
                path: rel.clone(),
                size,
                info,
            });
            done.push((i, result));
        }
    };
    let mut results: Vec<(usize, Result<Module, ModInfoError>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in handles {
            // A panic in a worker is a bug in the ELF parser; surface it rather than lose modules.
            match h.join() {
                Ok(part) => all.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    results.sort_by_key(|(i, _)| *i);
    results
        .into_iter()
        .map(|(_, r)| r.map_err(DepmodError::from))
        .collect()
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, DepmodError> {
    match std::fs::read(path) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DepmodError::Builtin {
            path: path.into(),
            source,
        }),
    }
}

#[cfg(test)]
#[path = "depmod_tests.rs"]
mod tests;
