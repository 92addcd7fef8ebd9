//! The firmware the initramfs's network and storage drivers ask for (Realtek, Broadcom, Tigon chips load
//! theirs at probe time; without it `r8169` gives a link that drops packets or none, `bnx2`/`bnx2x`/`tg3`
//! fail to probe). Debian ships it in the `non-free-firmware` archive area, which this machine's apt may
//! not list, so the builder keeps its own apt configuration for that area in its cache (its own lists,
//! package cache and sources; the system's apt state is only read).
//!
//! Chosen by rule, not by list: every file a selected module names in its `firmware=` modinfo is looked
//! up in the area's `Contents` index, the packages holding them are downloaded once into the builder
//! cache (`apt-get download`, reused) and the named files copied byte for byte to `/lib/firmware/`,
//! where the kernel loads them from by itself. Files the archive does not have are reported, not fatal:
//! a module names every file any chip it drives may load, and Debian does not carry all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};

use crate::kernel;
use crate::programs::ExtraFile;

/// Where the files go in the archive, and where the kernel's loader looks.
pub const FIRMWARE_DIR: &str = "lib/firmware";
/// What firmware was carried, from which packages, for which modules; and what was not found.
pub const REPORT: &str = "etc/rescue-firmware";
/// The archive area (component) that holds firmware since Debian 12.
const AREA: &str = "non-free-firmware";
/// How long downloaded package lists are used before asking the mirror again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The firmware found for the selected modules.
#[derive(Debug, Clone, Default)]
pub struct Firmware {
    /// `lib/firmware/<name>` files and the report, ready for the archive.
    pub files: Vec<ExtraFile>,
    /// Firmware files carried, and their total size.
    pub count: usize,
    pub bytes: u64,
    /// Package files they came from.
    pub packages: Vec<String>,
    /// (firmware name, modules naming it) that Debian's archive does not have.
    pub missing: Vec<(String, Vec<String>)>,
}

/// The files of `wanted` (firmware name → modules naming it) that Debian's non-free-firmware area has.
pub fn firmware_files(wanted: &BTreeMap<String, Vec<String>>) -> anyhow::Result<Firmware> {
    let apt = PrivateApt::new()?;
    let contents = apt.contents()?;
    let mut by_package: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, modules) in wanted {
        match safe_name(name).then(|| lookup(&contents, name)).flatten() {
            Some(package) => by_package.entry(package).or_default().push(name),
            None => missing.push((name.clone(), modules.clone())),
        }
    }
    let mut out = Firmware {
        missing,
        ..Firmware::default()
    };
    let mut carried: BTreeMap<String, (Vec<u8>, String)> = BTreeMap::new();
    for (package, names) in &by_package {
        let deb = apt.download(package)?;
        let file_name = deb
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let places: Vec<String> = names
            .iter()
            .flat_map(|n| [format!("lib/firmware/{n}"), format!("usr/lib/firmware/{n}")])
            .collect();
        let refs: Vec<&str> = places.iter().map(String::as_str).collect();
        let mut found = boot::deb::extract_present(&deb, &refs)
            .with_context(|| format!("reading the firmware package {}", deb.display()))?;
        for name in names {
            let data = [
                format!("lib/firmware/{name}"),
                format!("usr/lib/firmware/{name}"),
            ]
            .iter()
            .find_map(|p| found.remove(p));
            match data {
                Some(data) => {
                    carried.insert(name.to_string(), (data, file_name.clone()));
                }
                // The index said the package has it, the package does not: a newer package than the
                // lists; report it rather than fail the build.
                None => out.missing.push((name.to_string(), wanted[*name].clone())),
            }
        }
        out.packages.push(file_name);
    }
    out.missing.sort();
    out.count = carried.len();
    out.bytes = carried.values().map(|(d, _)| d.len() as u64).sum();
    out.files.push((
        REPORT.to_string(),
        report(wanted, &carried, &out).into_bytes(),
        0o644,
    ));
    for (name, (data, _)) in carried {
        out.files
            .push((format!("{FIRMWARE_DIR}/{name}"), data, 0o644));
    }
    Ok(out)
}

/// A firmware name that stays below `/lib/firmware`.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The package holding `lib/firmware/NAME` (or its /usr-merged place), from the Contents index.
fn lookup(contents: &BTreeMap<String, String>, name: &str) -> Option<String> {
    contents
        .get(&format!("lib/firmware/{name}"))
        .or_else(|| contents.get(&format!("usr/lib/firmware/{name}")))
        .cloned()
}

/// A Contents index: `PATH   area/section/package[,area/section/package…]` per line; the path may contain
/// spaces, the location list does not. The first package of each path is kept.
pub fn parse_contents(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end();
        let Some(split) = line.rfind(|c: char| c.is_ascii_whitespace()) else {
            continue;
        };
        let (path, locations) = (line[..split].trim_end(), &line[split + 1..]);
        let Some(package) = locations
            .split(',')
            .next()
            .and_then(|l| l.rsplit('/').next())
            .filter(|p| !p.is_empty())
        else {
            continue;
        };
        if !path.is_empty() {
            out.entry(path.trim_start_matches('/').to_string())
                .or_insert_with(|| package.to_string());
        }
    }
    out
}

fn report(
    wanted: &BTreeMap<String, Vec<String>>,
    carried: &BTreeMap<String, (Vec<u8>, String)>,
    fw: &Firmware,
) -> String {
    let mut s = format!(
        "# Firmware the modules of this initramfs name, from Debian's {AREA} area (each package's licence\n\
         # is in its /usr/share/doc/<package>/copyright).\n"
    );
    for p in &fw.packages {
        s.push_str(&format!("package {p}\n"));
    }
    for (name, (data, package)) in carried {
        s.push_str(&format!(
            "carried {name} {} bytes from {package} for {}\n",
            data.len(),
            wanted[name].join(",")
        ));
    }
    for (name, modules) in &fw.missing {
        s.push_str(&format!("not-in-debian {name} for {}\n", modules.join(",")));
    }
    s
}

/// apt with its own sources (the system's Debian mirror, the `non-free-firmware` area only), lists and
/// package cache below the builder cache.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new() -> anyhow::Result<Self> {
        let dir = kernel::cache_dir().join("apt-non-free-firmware");
        for d in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            std::fs::create_dir_all(dir.join(d))
                .with_context(|| format!("creating {}", dir.join(d).display()))?;
        }
        let (mirror, suite) = system_mirror();
        let line = format!("deb {mirror} {suite} {AREA}\n");
        let list = dir.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(&list, line).with_context(|| format!("writing {}", list.display()))?;
            // Lists of another mirror or suite must not be taken for these.
            remove_lists(&dir.join("lists"))?;
        }
        Ok(PrivateApt { dir })
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            format!("Dir::Etc::SourceParts={d}/sources.list.d"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::Cache={d}/cache"),
            // The cache is root's; apt's download sandbox user could not write there.
            "APT::Sandbox::User=root".to_string(),
            "Acquire::IndexTargets::deb::Contents-deb::MetaKey=$(COMPONENT)/Contents-$(ARCHITECTURE)"
                .to_string(),
            "Acquire::IndexTargets::deb::Contents-deb::ShortDescription=Contents-$(ARCHITECTURE)"
                .to_string(),
            "Acquire::IndexTargets::deb::Contents-deb::Description=$(RELEASE)/$(COMPONENT) $(ARCHITECTURE) Contents"
                .to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    /// The Contents index of the area (architecture-specific and `all`), fetched when missing or older
    /// than [`LISTS_MAX_AGE`]; an old copy is used when the mirror cannot be reached.
    fn contents(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let lists = self.dir.join("lists");
        let fresh = contents_files(&lists)?.iter().all(|f| {
            f.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < LISTS_MAX_AGE)
        });
        if contents_files(&lists)?.is_empty() || !fresh {
            eprintln!("builder: fetching the package lists of Debian's {AREA} area");
            let status = Command::new("apt-get")
                .args(["update", "-q"])
                .args(self.options())
                .stdout(std::process::Stdio::null())
                .status()
                .context("running apt-get update")?;
            if !status.success() {
                if contents_files(&lists)?.is_empty() {
                    bail!(
                        "apt-get update of Debian's {AREA} area failed ({status}) and no earlier lists are \
                         cached in {}. Check the network, or build without firmware (--no-firmware)",
                        lists.display()
                    );
                }
                eprintln!(
                    "builder: apt-get update failed ({status}); using the lists fetched before"
                );
            }
        }
        let mut all = BTreeMap::new();
        for file in contents_files(&lists)? {
            let out = Command::new("/usr/lib/apt/apt-helper")
                .arg("cat-file")
                .arg(&file)
                .output()
                .context("running /usr/lib/apt/apt-helper (part of apt)")?;
            if !out.status.success() {
                bail!(
                    "apt-helper cannot read {} ({}); delete {} and run again",
                    file.display(),
                    out.status,
                    lists.display()
                );
            }
            for (path, package) in parse_contents(&String::from_utf8_lossy(&out.stdout)) {
                all.entry(path).or_insert(package);
            }
        }
        if all.is_empty() {
            bail!(
                "Debian's {AREA} Contents index in {} lists no file. Delete that directory and run again, \
                 or build without firmware (--no-firmware)",
                lists.display()
            );
        }
        Ok(all)
    }

    fn download(&self, package: &str) -> anyhow::Result<PathBuf> {
        kernel::fetch_deb_with(package, &self.options())
    }
}

fn contents_files(lists: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(lists)
        .with_context(|| format!("reading {}", lists.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&format!("_{AREA}_Contents-")))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn remove_lists(lists: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(lists)
        .with_context(|| format!("reading {}", lists.display()))?
        .flatten()
    {
        if e.path().is_file() {
            std::fs::remove_file(e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// The Debian mirror and release the system's apt uses (not its -security or -updates suites), else
/// deb.debian.org and the release of /etc/os-release.
fn system_mirror() -> (String, String) {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let suite = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "bookworm".to_string());
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()));
    }
    let mirror = texts
        .iter()
        .find_map(|t| mirror_in(t))
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    (mirror, suite)
}

/// The first Debian archive URL (not the security archive) in a sources file, one-line or deb822.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .map(|w| w.trim_end_matches('/'))
        .find(|w| w.ends_with("/debian"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn contents_lines() {
        let text = "lib/firmware/tigon/tg3.bin                 non-free-firmware/kernel/firmware-misc-nonfree\n\
                    usr/share/doc/a b/c   non-free-firmware/doc/pkg-a,non-free-firmware/doc/pkg-b\n\
                    garbage\n\n";
        let c = parse_contents(text);
        assert_eq!(c["lib/firmware/tigon/tg3.bin"], "firmware-misc-nonfree");
        assert_eq!(c["usr/share/doc/a b/c"], "pkg-a");
        assert_eq!(c.len(), 2);
        assert_eq!(
            lookup(&c, "tigon/tg3.bin").as_deref(),
            Some("firmware-misc-nonfree")
        );
        assert_eq!(lookup(&c, "tigon/none.bin"), None);
    }

    #[test]
    fn names_that_leave_the_firmware_directory_are_refused() {
        for bad in ["", "/etc/shadow", "../x", "a/../../x", "a//b", "./a"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
        for good in ["tigon/tg3.bin", "rtl_nic/rtl8168h-2.fw", "x.bin"] {
            assert!(safe_name(good), "{good:?}");
        }
    }

    #[test]
    fn mirror_from_either_sources_format() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://deb.debian.org/debian\nSuites: bookworm\n\n\
                      URIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let one_line = "deb http://security.debian.org/debian-security bookworm-security main\n\
                        deb https://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(one_line).as_deref(),
            Some("https://mirror.example/debian")
        );
        assert_eq!(mirror_in("# deb http://x/debian bookworm main\n"), None);
    }
}
