//! The module index that the builder writes into the initramfs and PID 1 reads.
//!
//! The stock kernel package ships no `modules.dep`/`modules.alias`; the builder computes them from each
//! module's `.modinfo` and writes this one small text file instead, so PID 1 needs no kmod. The file is
//! `/lib/modules/<release>/modules.rescue`; one record per line, fields separated by single spaces, lists
//! by commas, `-` for an empty list:
//!
//! ```text
//! rescue-module-index 1
//! release 6.1.0-56-amd64
//! module ext4 kernel/fs/ext4/ext4.ko jbd2,mbcache,crc16
//! softdep ext4 pre crc32c -
//! alias fs-ext4 ext4
//! param usb_storage delay_use=1
//! builtin unix
//! boot ext4
//! ```
//!
//! `module NAME PATH DEPS` (path relative to the release directory), `softdep NAME PRE POST`,
//! `alias PATTERN NAME` (a shell glob as modinfo writes it), `param NAME PARAMS...` (the rest of the line,
//! passed to `finit_module`), `builtin NAME` (compiled into the kernel: nothing to load), `boot NAME`
//! (loaded at boot whatever the hardware). Names are normalised with `_` for `-`, as the kernel does.

use std::collections::{BTreeMap, BTreeSet};

/// First line of every index; bump the number on an incompatible change.
pub const MAGIC: &str = "rescue-module-index 1";
/// File name inside `/lib/modules/<release>/`.
pub const FILE_NAME: &str = "modules.rescue";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("module index: line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("module index does not start with `{MAGIC}`: it was written by another version of the builder")]
    Magic,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleEntry {
    /// Path of the `.ko` relative to `/lib/modules/<release>/`.
    pub path: String,
    pub depends: Vec<String>,
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
    /// Parameters passed to `finit_module` (empty for none).
    pub params: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleIndex {
    pub release: String,
    pub modules: BTreeMap<String, ModuleEntry>,
    /// (glob pattern, module name), in file order.
    pub aliases: Vec<(String, String)>,
    pub builtin: BTreeSet<String>,
    /// Modules to load at boot regardless of hardware (filesystems, efivarfs...).
    pub boot: Vec<String>,
}

/// Module names compare with `-` and `_` as the same character; the kernel uses `_`.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

fn parse_list(s: &str) -> Vec<String> {
    if s == "-" {
        Vec::new()
    } else {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(normalize)
            .collect()
    }
}

impl ModuleIndex {
    /// Serialise deterministically (sorted modules, aliases in insertion order).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(MAGIC);
        out.push('\n');
        out.push_str(&format!("release {}\n", self.release));
        for (name, m) in &self.modules {
            out.push_str(&format!("module {name} {} {}\n", m.path, list(&m.depends)));
            if !m.softdep_pre.is_empty() || !m.softdep_post.is_empty() {
                out.push_str(&format!(
                    "softdep {name} {} {}\n",
                    list(&m.softdep_pre),
                    list(&m.softdep_post)
                ));
            }
            if !m.params.is_empty() {
                out.push_str(&format!("param {name} {}\n", m.params));
            }
        }
        for (pattern, name) in &self.aliases {
            out.push_str(&format!("alias {pattern} {name}\n"));
        }
        for name in &self.builtin {
            out.push_str(&format!("builtin {name}\n"));
        }
        for name in &self.boot {
            out.push_str(&format!("boot {name}\n"));
        }
        out
    }

    pub fn parse(text: &str) -> Result<Self, IndexError> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, l)) if l == MAGIC => {}
            _ => return Err(IndexError::Magic),
        }
        let mut idx = ModuleIndex::default();
        for (i, line) in lines {
            let line_no = i + 1;
            let err = |reason: &str| IndexError::Syntax {
                line: line_no,
                reason: reason.to_string(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kind, rest) = line.split_once(' ').ok_or_else(|| err("no fields"))?;
            let f: Vec<&str> = rest.split(' ').collect();
            match (kind, f.as_slice()) {
                ("release", [r]) => idx.release = r.to_string(),
                ("module", [name, path, deps]) => {
                    let e = idx.modules.entry(normalize(name)).or_default();
                    e.path = path.to_string();
                    e.depends = parse_list(deps);
                }
                ("softdep", [name, pre, post]) => {
                    let e = idx
                        .modules
                        .get_mut(&normalize(name))
                        .ok_or_else(|| err("softdep before its module"))?;
                    e.softdep_pre = parse_list(pre);
                    e.softdep_post = parse_list(post);
                }
                ("param", [name, ..]) => {
                    let params = rest.split_once(' ').map(|(_, p)| p).unwrap_or("");
                    let e = idx
                        .modules
                        .get_mut(&normalize(name))
                        .ok_or_else(|| err("param before its module"))?;
                    e.params = params.to_string();
                }
                ("alias", [pattern, name]) => {
                    idx.aliases.push((pattern.to_string(), normalize(name)))
                }
                ("builtin", [name]) => {
                    idx.builtin.insert(normalize(name));
                }
                ("boot", [name]) => idx.boot.push(normalize(name)),
                _ => {
                    return Err(err(&format!(
                        "unknown record `{kind}` or wrong field count"
                    )))
                }
            }
        }
        Ok(idx)
    }

    /// Module names (loadable, not builtin) that provide `name_or_alias`: the module of that name, or every
    /// module with an alias pattern that matches it (a modalias such as `pci:v00008086d...`).
    pub fn resolve(&self, name_or_alias: &str) -> Vec<String> {
        let n = normalize(name_or_alias);
        if self.modules.contains_key(&n) {
            return vec![n];
        }
        if self.builtin.contains(&n) {
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if glob_match(pattern, name_or_alias)
                && self.modules.contains_key(module)
                && !out.contains(module)
            {
                out.push(module.clone());
            }
        }
        out
    }

    /// Whether the name or alias is satisfied by the kernel itself (builtin), so nothing must be loaded.
    pub fn is_builtin(&self, name_or_alias: &str) -> bool {
        let n = normalize(name_or_alias);
        self.builtin.contains(&n)
            || self
                .aliases
                .iter()
                .any(|(p, m)| self.builtin.contains(m) && glob_match(p, name_or_alias))
    }

    /// The modules to load for `name`, in load order: soft pre-dependencies and hard dependencies first,
    /// `name`, then soft post-dependencies. Unknown names in dependency lists are skipped (they may be
    /// builtin); cycles are broken.
    pub fn load_order(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut visiting = BTreeSet::new();
        self.visit(&normalize(name), &mut out, &mut visiting);
        out
    }

    fn visit(&self, name: &str, out: &mut Vec<String>, visiting: &mut BTreeSet<String>) {
        if out.iter().any(|m| m == name) || !visiting.insert(name.to_string()) {
            return;
        }
        if let Some(e) = self.modules.get(name) {
            for d in e.softdep_pre.iter().chain(&e.depends) {
                self.visit_any(d, out, visiting);
            }
            out.push(name.to_string());
            for d in &e.softdep_post {
                self.visit_any(d, out, visiting);
            }
        }
    }

    /// Softdeps may name an alias (`crc32c`) rather than a module.
    fn visit_any(
        &self,
        name_or_alias: &str,
        out: &mut Vec<String>,
        visiting: &mut BTreeSet<String>,
    ) {
        for m in self.resolve(name_or_alias) {
            self.visit(&m, out, visiting);
        }
    }
}

/// Shell-style glob as used by module aliases: `*`, `?` and `[...]` classes (with `!`/`^` negation and
/// ranges). Iterative with single backtracking point, so no pathological blow-up.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_match(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Matches `c` against the class starting at `p[start] == '['`. Returns (matched, index after `]`), or
/// None when the class is unterminated (then `[` is literal).
fn class_match(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = i < p.len() && (p[i] == '!' || p[i] == '^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ModuleIndex {
        let mut idx = ModuleIndex {
            release: "6.1.0-56-amd64".into(),
            ..Default::default()
        };
        idx.modules.insert(
            "ext4".into(),
            ModuleEntry {
                path: "kernel/fs/ext4/ext4.ko".into(),
                depends: vec!["jbd2".into(), "mbcache".into()],
                softdep_pre: vec!["crc32c".into()],
                ..Default::default()
            },
        );
        for (n, d) in [
            ("jbd2", vec![]),
            ("mbcache", vec![]),
            ("crc32c_generic", vec![]),
        ] {
            idx.modules.insert(
                n.into(),
                ModuleEntry {
                    path: format!("kernel/{n}.ko"),
                    depends: d,
                    ..Default::default()
                },
            );
        }
        idx.modules.insert(
            "usb_storage".into(),
            ModuleEntry {
                path: "kernel/drivers/usb/storage/usb-storage.ko".into(),
                params: "delay_use=1 quirks=".into(),
                ..Default::default()
            },
        );
        idx.aliases
            .push(("crypto-crc32c".into(), "crc32c_generic".into()));
        idx.aliases.push(("crc32c".into(), "crc32c_generic".into()));
        idx.aliases.push((
            "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*".into(),
            "usb_storage".into(),
        ));
        idx.builtin.insert("unix".into());
        idx.boot.push("ext4".into());
        idx
    }

    #[test]
    fn text_round_trip() {
        let idx = sample();
        let text = idx.to_text();
        assert_eq!(ModuleIndex::parse(&text).unwrap(), idx);
    }

    #[test]
    fn load_order_puts_dependencies_first() {
        let idx = sample();
        assert_eq!(
            idx.load_order("ext4"),
            ["crc32c_generic", "jbd2", "mbcache", "ext4"]
        );
    }

    #[test]
    fn resolves_names_and_aliases() {
        let idx = sample();
        assert_eq!(idx.resolve("usb-storage"), ["usb_storage"]);
        assert_eq!(
            idx.resolve("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"),
            ["usb_storage"]
        );
        assert!(idx
            .resolve("usb:v0781p5567d0100dc00dsc00dp00ic03isc01ip01in00")
            .is_empty());
        assert!(idx.is_builtin("unix"));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(ModuleIndex::parse("hello"), Err(IndexError::Magic));
        assert!(matches!(
            ModuleIndex::parse(&format!("{MAGIC}\nmodule a")),
            Err(IndexError::Syntax { line: 2, .. })
        ));
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "pci:v00008086d*sv*sd*bc01sc06i01*",
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"
        ));
        assert!(glob_match("a[0-9]b", "a5b"));
        assert!(!glob_match("a[!0-9]b", "a5b"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acd"));
        assert!(glob_match("a*b*c", "axxbyyc"));
    }

    proptest! {
        #[test]
        fn glob_never_panics(p in "[a-z*?\\[\\]!^-]{0,12}", t in "[a-z\\[\\]-]{0,12}") {
            let _ = glob_match(&p, &t);
        }

        #[test]
        fn literal_patterns_match_only_themselves(a in "[a-z0-9:]{0,16}", b in "[a-z0-9:]{0,16}") {
            prop_assert_eq!(glob_match(&a, &b), a == b);
            prop_assert!(glob_match("*", &b));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = ModuleIndex::parse(&format!("{MAGIC}\n{s}"));
        }
    }
}
