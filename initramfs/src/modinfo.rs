//! What a kernel module says about itself: the `.modinfo` ELF section of a `.ko`, and the
//! `modules.builtin.modinfo` file that records the same for modules compiled into the kernel.
//!
//! `.modinfo` is a sequence of NUL-terminated `key=value` strings (`depends=jbd2,mbcache`, `alias=fs-ext4`,
//! `softdep=pre: crypto-crc32c`, ...). Debian's package ships no `modules.dep`/`modules.alias`, so this is
//! the only source of the dependency and alias tables. Parsing never fails on odd contents: a malformed
//! record is skipped, because one strange module must not stop the build of the whole module table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use crate::index::normalize;

#[derive(Debug, thiserror::Error)]
pub enum ModInfoError {
    #[error("cannot read the kernel module {path}: {source}. Check that the modules directory is complete (unpack the kernel package again)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid ELF kernel module: {source}. The file is damaged; unpack the kernel package again")]
    Elf {
        path: PathBuf,
        source: object::Error,
    },
    #[error("{path} has no .modinfo section, so it is not a kernel module. Remove it from the modules directory")]
    NoModinfo { path: PathBuf },
}

/// The fields of `.modinfo` the builder uses. Names in `depends` are normalised (`_` for `-`); `aliases`
/// and softdeps are kept as written, because aliases are glob patterns and softdeps may name aliases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    pub depends: Vec<String>,
    pub aliases: Vec<String>,
    pub softdep_pre: Vec<String>,
    pub softdep_post: Vec<String>,
    pub firmware: Vec<String>,
    pub vermagic: Option<String>,
}

/// Iterates the `(key, value)` pairs of a NUL-separated record list; records without `=` or that are not
/// UTF-8 are skipped.
fn records(data: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    data.split(|&b| b == 0)
        .filter_map(|r| std::str::from_utf8(r).ok())
        .filter_map(|r| r.split_once('='))
}

/// Parses the raw bytes of a `.modinfo` section. `fallback_name` is used when there is no `name=` record
/// (kernels before 5.x did not write one); it is normalised.
pub fn parse_modinfo(data: &[u8], fallback_name: &str) -> ModInfo {
    let mut info = ModInfo::default();
    for (key, value) in records(data) {
        match key {
            "name" if !value.is_empty() => info.name = normalize(value),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(normalize),
            ),
            "alias" if !value.is_empty() => info.aliases.push(value.to_string()),
            "softdep" => parse_softdep(value, &mut info.softdep_pre, &mut info.softdep_post),
            "firmware" if !value.is_empty() => info.firmware.push(value.to_string()),
            "vermagic" => info.vermagic = Some(value.trim_end().to_string()),
            _ => {}
        }
    }
    if info.name.is_empty() {
        info.name = normalize(fallback_name);
    }
    info
}

/// `pre: a b post: c` (either part optional, in either order, as modprobe.d accepts). Words before any
/// `pre:`/`post:` marker are ignored, as kmod does.
fn parse_softdep(value: &str, pre: &mut Vec<String>, post: &mut Vec<String>) {
    #[derive(Clone, Copy)]
    enum Part {
        None,
        Pre,
        Post,
    }
    let mut part = Part::None;
    for word in value.split_whitespace() {
        match word {
            "pre:" => part = Part::Pre,
            "post:" => part = Part::Post,
            w => match part {
                Part::Pre => pre.push(w.to_string()),
                Part::Post => post.push(w.to_string()),
                Part::None => {}
            },
        }
    }
}

/// The module name a file would have without a `name=` record: the file name up to the first `.`
/// (`usb-storage.ko` → `usb_storage`, also for `.ko.xz`).
pub fn name_from_path(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    normalize(file.split('.').next().unwrap_or_default())
}

/// Parses the `.modinfo` section of a module's ELF bytes. `path` is only used for messages and the
/// fallback name; the bytes are not modified (the appended signature is ignored by the ELF parser).
pub fn modinfo_from_elf(path: &Path, elf: &[u8]) -> Result<ModInfo, ModInfoError> {
    let file = object::File::parse(elf).map_err(|source| ModInfoError::Elf {
        path: path.to_path_buf(),
        source,
    })?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| ModInfoError::NoModinfo {
            path: path.to_path_buf(),
        })?;
    let data = section.data().map_err(|source| ModInfoError::Elf {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_modinfo(data, &name_from_path(path)))
}

/// Reads a `.ko` file and parses its `.modinfo`. Returns the info and the file's size in bytes.
pub fn read_module(path: &Path) -> Result<(ModInfo, u64), ModInfoError> {
    let bytes = std::fs::read(path).map_err(|source| ModInfoError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((modinfo_from_elf(path, &bytes)?, bytes.len() as u64))
}

/// Modules compiled into the kernel: nothing to load for them, but their names and aliases must still
/// resolve so that PID 1 does not report them as missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Builtin {
    pub names: BTreeSet<String>,
    /// (glob pattern, normalised module name), in file order.
    pub aliases: Vec<(String, String)>,
}

impl Builtin {
    /// Adds the records of `modules.builtin.modinfo`: `modname.key=value`, NUL-separated. A module counts
    /// as builtin when it has a `file=` record; other prefixes (`printk.parm=...`) are core kernel
    /// parameters, not modules. Aliases are kept for every prefix, since they are what a lookup sees.
    pub fn add_builtin_modinfo(&mut self, data: &[u8]) {
        for (key, value) in records(data) {
            let Some((module, field)) = key.split_once('.') else {
                continue;
            };
            if module.is_empty() {
                continue;
            }
            match field {
                "file" => {
                    self.names.insert(normalize(module));
                }
                "alias" if !value.is_empty() => {
                    self.aliases.push((value.to_string(), normalize(module)))
                }
                _ => {}
            }
        }
    }

    /// Adds the names of `modules.builtin`: one `kernel/.../name.ko` path a line.
    pub fn add_builtin_list(&mut self, text: &str) {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            self.names.insert(name_from_path(Path::new(line)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fake_ko, modinfo_bytes};
    use proptest::prelude::*;

    #[test]
    fn parses_a_real_shaped_section() {
        let data = modinfo_bytes(&[
            ("softdep", "pre: crypto-crc32c"),
            ("license", "GPL"),
            ("alias", "fs-ext4"),
            ("alias", "ext3"),
            ("depends", "jbd2,mbcache,crc16"),
            ("name", "ext4"),
            (
                "vermagic",
                "6.1.0-56-amd64 SMP preempt mod_unload modversions ",
            ),
        ]);
        let info = parse_modinfo(&data, "whatever");
        assert_eq!(info.name, "ext4");
        assert_eq!(info.depends, ["jbd2", "mbcache", "crc16"]);
        assert_eq!(info.aliases, ["fs-ext4", "ext3"]);
        assert_eq!(info.softdep_pre, ["crypto-crc32c"]);
        assert!(info.softdep_post.is_empty());
        assert_eq!(
            info.vermagic.as_deref(),
            Some("6.1.0-56-amd64 SMP preempt mod_unload modversions")
        );
    }

    #[test]
    fn softdep_both_parts_and_empty_depends() {
        let data = modinfo_bytes(&[
            ("depends", ""),
            ("softdep", "pre: a b post: c-d"),
            ("softdep", "post: e"),
            ("firmware", "x/y.bin"),
        ]);
        let info = parse_modinfo(&data, "usb-storage");
        assert_eq!(info.name, "usb_storage");
        assert!(info.depends.is_empty());
        assert_eq!(info.softdep_pre, ["a", "b"]);
        assert_eq!(info.softdep_post, ["c-d", "e"]);
        assert_eq!(info.firmware, ["x/y.bin"]);
    }

    #[test]
    fn reads_modinfo_from_an_elf_module() {
        let ko = fake_ko(&modinfo_bytes(&[
            ("name", "virtio_blk"),
            ("depends", "virtio"),
        ]));
        let info = modinfo_from_elf(Path::new("virtio_blk.ko"), &ko).unwrap();
        assert_eq!(info.name, "virtio_blk");
        assert_eq!(info.depends, ["virtio"]);
    }

    #[test]
    fn rejects_non_elf_and_elf_without_modinfo() {
        let e = modinfo_from_elf(Path::new("/x/a.ko"), b"not an elf").unwrap_err();
        assert!(matches!(e, ModInfoError::Elf { .. }), "{e}");
        assert!(e.to_string().contains("/x/a.ko"));

        let mut obj = object::write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let id = obj.add_section(Vec::new(), b".text".to_vec(), object::SectionKind::Text);
        obj.append_section_data(id, &[0xc3], 1);
        let e = modinfo_from_elf(Path::new("b.ko"), &obj.write().unwrap()).unwrap_err();
        assert!(matches!(e, ModInfoError::NoModinfo { .. }), "{e}");
    }

    #[test]
    fn builtin_modinfo_and_list() {
        let data = modinfo_bytes(&[
            ("unix.file", "net/unix/unix"),
            ("unix.alias", "net-pf-1"),
            ("printk.parm", "time:Show timing"),
            ("crc32c_generic.alias", "crypto-crc32c"),
            (".alias", "nameless"),
            ("noseparator", "x"),
        ]);
        let mut b = Builtin::default();
        b.add_builtin_modinfo(&data);
        b.add_builtin_list("kernel/fs/nls/nls-base.ko\n\nkernel/mm/zsmalloc.ko\n");
        assert_eq!(
            b.names.iter().map(String::as_str).collect::<Vec<_>>(),
            ["nls_base", "unix", "zsmalloc"]
        );
        assert_eq!(
            b.aliases,
            [
                ("net-pf-1".to_string(), "unix".to_string()),
                ("crypto-crc32c".to_string(), "crc32c_generic".to_string())
            ]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let info = parse_modinfo(&data, "m");
            prop_assert!(!info.name.is_empty());
            let _ = modinfo_from_elf(Path::new("m.ko"), &data);
            Builtin::default().add_builtin_modinfo(&data);
        }

        #[test]
        fn generated_records_round_trip(
            name in "[a-z][a-z0-9_]{0,15}",
            deps in proptest::collection::vec("[a-z][a-z0-9_]{0,10}", 0..5),
            aliases in proptest::collection::vec("[a-z0-9:*?-]{1,20}", 0..5),
            pre in proptest::collection::vec("[a-z][a-z0-9_-]{0,10}", 0..3),
            post in proptest::collection::vec("[a-z][a-z0-9_-]{0,10}", 0..3),
            firmware in proptest::collection::vec("[a-z0-9/._-]{1,20}", 0..3),
            noise in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,20}"), 0..4),
        ) {
            let mut pairs: Vec<(String, String)> = vec![("name".into(), name.clone())];
            pairs.push(("depends".into(), deps.join(",")));
            pairs.extend(aliases.iter().map(|a| ("alias".to_string(), a.clone())));
            if !pre.is_empty() || !post.is_empty() {
                pairs.push(("softdep".into(), format!("pre: {} post: {}", pre.join(" "), post.join(" "))));
            }
            pairs.extend(firmware.iter().map(|f| ("firmware".to_string(), f.clone())));
            let known = ["name", "depends", "alias", "softdep", "firmware", "vermagic"];
            pairs.extend(noise.into_iter().filter(|(k, _)| !known.contains(&k.as_str())));
            let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let info = parse_modinfo(&modinfo_bytes(&refs), "fallback");
            prop_assert_eq!(info.name, name);
            prop_assert_eq!(info.depends, deps);
            prop_assert_eq!(info.aliases, aliases);
            prop_assert_eq!(info.softdep_pre, pre);
            prop_assert_eq!(info.softdep_post, post);
            prop_assert_eq!(info.firmware, firmware);
            prop_assert_eq!(info.vermagic, None);
        }
    }
}
