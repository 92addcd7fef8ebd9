//! Loads kernel modules with their dependencies, from several threads at once.
//!
//! Each module goes through `Loading` → `Loaded`/`Failed` exactly once; a thread that needs a module another
//! thread is loading waits for it, so dependencies are always in the kernel before their users and no file
//! is handed to `finit_module` twice.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use initramfs::index::{ModuleIndex, FILE_NAME};

use super::HwError;
use crate::sys;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Loading,
    Loaded,
    Failed(String),
}

pub struct ModuleLoader {
    index: ModuleIndex,
    dir: PathBuf,
    state: Mutex<HashMap<String, State>>,
    changed: Condvar,
    /// Cumulative count of modules this loader put into the kernel.
    loaded: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub elapsed: Duration,
}

impl ModuleLoader {
    /// Read `DIR/modules.rescue`.
    pub fn open(dir: &Path) -> Result<Self, HwError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|source| HwError::IndexRead {
            path: path.clone(),
            source,
        })?;
        let index =
            ModuleIndex::parse(&text).map_err(|source| HwError::IndexParse { path, source })?;
        Ok(Self::new(index, dir.to_path_buf()))
    }

    pub fn new(index: ModuleIndex, dir: PathBuf) -> Self {
        // Modules already in the kernel (loaded by an earlier process, e.g. modprobe) count as loaded.
        let mut state = HashMap::new();
        if let Ok(text) = std::fs::read_to_string("/proc/modules") {
            for line in text.lines() {
                if let Some(name) = line.split(' ').next() {
                    state.insert(name.to_string(), State::Loaded);
                }
            }
        }
        ModuleLoader {
            index,
            dir,
            state: Mutex::new(state),
            changed: Condvar::new(),
            loaded: Mutex::new(Vec::new()),
        }
    }

    pub fn index(&self) -> &ModuleIndex {
        &self.index
    }

    /// Load whatever provides `name_or_alias` (a module name or a device's modalias). Builtin or unknown
    /// modaliases are fine for coldplug callers, which ignore `NotFound`.
    pub fn load_alias(&self, name_or_alias: &str) -> Result<(), HwError> {
        let modules = self.index.resolve(name_or_alias);
        if modules.is_empty() {
            if self.index.is_builtin(name_or_alias) {
                return Ok(());
            }
            return Err(HwError::NotFound(name_or_alias.to_string()));
        }
        let mut first_err = None;
        for m in modules {
            if let Err(e) = self.load(&m) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Load `name` and everything it needs, in dependency order.
    pub fn load(&self, name: &str) -> Result<(), HwError> {
        self.load_counted(name).map(|_| ())
    }

    /// Like [`Self::load`], returning the modules this call put into the kernel.
    fn load_counted(&self, name: &str) -> Result<Vec<String>, HwError> {
        let mut new = Vec::new();
        for m in self.index.load_order(name) {
            if self.load_one(&m)? {
                new.push(m);
            }
        }
        Ok(new)
    }

    /// `Ok(true)` when this call loaded it, `Ok(false)` when it was already in the kernel.
    fn load_one(&self, name: &str) -> Result<bool, HwError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match state.get(name) {
                Some(State::Loaded) => return Ok(false),
                Some(State::Failed(reason)) => {
                    return Err(HwError::Failed {
                        name: name.to_string(),
                        reason: reason.clone(),
                    })
                }
                Some(State::Loading) => {
                    state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                None => break,
            }
        }
        state.insert(name.to_string(), State::Loading);
        drop(state);

        let result = self.insert_module(name);

        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => state.insert(name.to_string(), State::Loaded),
            Err(e) => state.insert(name.to_string(), State::Failed(crate::units::chain(e))),
        };
        drop(state);
        self.changed.notify_all();
        if matches!(result, Ok(true)) {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(name.to_string());
        }
        result
    }

    fn insert_module(&self, name: &str) -> Result<bool, HwError> {
        let Some(entry) = self.index.modules.get(name) else {
            return Err(HwError::NotFound(name.to_string()));
        };
        let path = self.dir.join(&entry.path);
        let file = File::open(&path).map_err(|source| HwError::ModuleOpen {
            path: path.clone(),
            source,
        })?;
        sys::finit_module(&file, &entry.params).map_err(|source| HwError::ModuleLoad {
            name: name.to_string(),
            path,
            source,
        })
    }

    /// Load every module that provides one of `aliases`, on `threads` threads. Aliases no module provides
    /// are ignored (most devices need no module or have a builtin driver).
    pub fn load_all(&self, aliases: &[String], threads: usize) -> LoadReport {
        let start = Instant::now();
        // Keep the callers' order (first wanted, first loaded), without duplicates.
        let mut seen = BTreeSet::new();
        let mut wanted = Vec::new();
        for a in aliases {
            for m in self.index.resolve(a) {
                if seen.insert(m.clone()) {
                    wanted.push(m);
                }
            }
        }
        let work: Mutex<Vec<String>> = Mutex::new(wanted.into_iter().rev().collect());
        let failed = Mutex::new(Vec::new());
        let loaded = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| loop {
                    let next = work.lock().unwrap_or_else(|p| p.into_inner()).pop();
                    let Some(name) = next else { break };
                    match self.load_counted(&name) {
                        Ok(new) => loaded.lock().unwrap_or_else(|p| p.into_inner()).extend(new),
                        Err(e) => failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((name, crate::units::chain(&e))),
                    }
                });
            }
        });
        LoadReport {
            loaded: loaded.into_inner().unwrap_or_else(|p| p.into_inner()),
            failed: failed.into_inner().unwrap_or_else(|p| p.into_inner()),
            elapsed: start.elapsed(),
        }
    }

    /// Names of every module this loader has put into the kernel so far.
    pub fn loaded(&self) -> Vec<String> {
        self.loaded.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use initramfs::index::ModuleEntry;

    fn loader_with(state: &[(&str, State)]) -> ModuleLoader {
        let mut index = ModuleIndex::default();
        index.modules.insert(
            "a".into(),
            ModuleEntry {
                path: "missing/a.ko".into(),
                depends: vec!["b".into()],
                ..Default::default()
            },
        );
        index.modules.insert(
            "b".into(),
            ModuleEntry {
                path: "missing/b.ko".into(),
                ..Default::default()
            },
        );
        index.aliases.push(("pci:v1234*".into(), "a".into()));
        index.builtin.insert("unix".into());
        let l = ModuleLoader::new(index, PathBuf::from("/nonexistent"));
        let mut s = l.state.lock().unwrap();
        s.clear();
        for (n, st) in state {
            s.insert(n.to_string(), st.clone());
        }
        drop(s);
        l
    }

    #[test]
    fn already_loaded_modules_are_not_loaded_again() {
        let l = loader_with(&[("a", State::Loaded), ("b", State::Loaded)]);
        l.load_alias("pci:v1234d5678").unwrap();
        assert!(l.loaded().is_empty());
    }

    #[test]
    fn a_missing_file_fails_with_its_path_and_is_remembered() {
        let l = loader_with(&[]);
        let e = l.load("a").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/missing/b.ko"), "{e}");
        let again = l.load("b").unwrap_err().to_string();
        assert!(again.contains("failed to load earlier"), "{again}");
    }

    #[test]
    fn builtin_and_unknown_aliases() {
        let l = loader_with(&[]);
        assert!(l.load_alias("unix").is_ok());
        assert!(matches!(
            l.load_alias("pci:v9999"),
            Err(HwError::NotFound(_))
        ));
        let r = l.load_all(&["pci:v9999".into()], 2);
        assert!(r.loaded.is_empty() && r.failed.is_empty());
    }
}
