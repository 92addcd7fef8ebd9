//! The Debian userspace programs the initramfs carries: ntfs-3g and ntfs-3g.probe (the kernel has no
//! NTFS driver; see docs/DEPENDENCIES.md), with the shared libraries they need and glibc's loader, in the
//! layout of [`initramfs::programs`]. The packages are fetched like the kernel and the bootloaders
//! (`apt-get download` into the builder cache, reused), `libntfs-3g89` at exactly the version of
//! `ntfs-3g`, and read in Rust. The files are copied byte for byte, so the same packages give the same
//! archive; which packages they were is written beside them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use initramfs::programs as layout;

use crate::kernel;

pub const NTFS3G_PACKAGE: &str = "ntfs-3g";
pub const LIBNTFS3G_PACKAGE: &str = "libntfs-3g89";
pub const LIBC_PACKAGE: &str = "libc6";

/// What goes into the archive: (path without the leading `/`, contents, permission bits).
pub type ExtraFile = (String, Vec<u8>, u32);

/// One file to take from a package: where it may be (before and after the /usr merge) and where it
/// goes, relative to [`layout::NTFS3G_DIR`].
struct Wanted {
    places: [&'static str; 2],
    dest: &'static str,
    mode: u32,
}

const FROM_NTFS3G: &[Wanted] = &[
    Wanted {
        places: ["bin/ntfs-3g", "usr/bin/ntfs-3g"],
        dest: layout::NTFS3G,
        mode: 0o755,
    },
    Wanted {
        places: ["bin/ntfs-3g.probe", "usr/bin/ntfs-3g.probe"],
        dest: layout::NTFS3G_PROBE,
        mode: 0o755,
    },
];
const FROM_LIBNTFS3G: &[Wanted] = &[Wanted {
    places: [
        "lib/x86_64-linux-gnu/libntfs-3g.so.89",
        "usr/lib/x86_64-linux-gnu/libntfs-3g.so.89",
    ],
    dest: "lib/libntfs-3g.so.89",
    mode: 0o644,
}];
const FROM_LIBC: &[Wanted] = &[
    Wanted {
        places: [
            "lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/x86_64-linux-gnu/libc.so.6",
        ],
        dest: "lib/libc.so.6",
        mode: 0o644,
    },
    Wanted {
        places: [
            "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        ],
        dest: layout::LOADER,
        mode: 0o755,
    },
];

/// ntfs-3g, its probe, libntfs-3g, libc and the loader, ready for the archive.
pub fn ntfs3g_files() -> anyhow::Result<Vec<ExtraFile>> {
    let ntfs_deb = kernel::fetch_deb(NTFS3G_PACKAGE)?;
    let version = kernel::deb_version(&ntfs_deb).with_context(|| {
        format!(
            "{} is not named like a Debian package (NAME_VERSION_ARCH.deb); delete it and run again",
            ntfs_deb.display()
        )
    })?;
    let lib_deb = kernel::fetch_deb_version(LIBNTFS3G_PACKAGE, &version)?;
    let libc_deb = kernel::fetch_deb(LIBC_PACKAGE)?;
    let mut files = BTreeMap::new();
    for (deb, wanted) in [
        (&ntfs_deb, FROM_NTFS3G),
        (&lib_deb, FROM_LIBNTFS3G),
        (&libc_deb, FROM_LIBC),
    ] {
        take(deb, wanted, &mut files)?;
    }
    check_libraries(&files)?;
    let mut out: Vec<ExtraFile> = files
        .into_iter()
        .map(|(dest, (data, mode))| (archive_path(dest), data, mode))
        .collect();
    let packages: String = [&ntfs_deb, &lib_deb, &libc_deb]
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| format!("{}\n", n.to_string_lossy()))
        .collect();
    out.push((archive_path(layout::PACKAGES), packages.into_bytes(), 0o644));
    Ok(out)
}

fn archive_path(rel: &str) -> String {
    format!("{}/{rel}", layout::NTFS3G_DIR.trim_start_matches('/'))
}

/// Read `wanted` out of `deb` into `files` (by destination), each from the first place it is found.
fn take(
    deb: &Path,
    wanted: &[Wanted],
    files: &mut BTreeMap<&'static str, (Vec<u8>, u32)>,
) -> anyhow::Result<()> {
    let places: Vec<&str> = wanted.iter().flat_map(|w| w.places).collect();
    let mut found = boot::deb::extract_present(deb, &places)?;
    for w in wanted {
        let data = w
            .places
            .iter()
            .find_map(|p| found.remove(*p))
            .with_context(|| {
                format!(
                    "{} holds none of {}; is it the right package? Delete it from the builder cache and \
                     run again",
                    deb.display(),
                    w.places.join(", ")
                )
            })?;
        files.insert(w.dest, (data, w.mode));
    }
    Ok(())
}

/// Every shared library the programs and libraries name must be among the files carried: a new Debian
/// release that links ntfs-3g against another library must fail here, not in a rescue at a customer's
/// desk.
fn check_libraries(files: &BTreeMap<&'static str, (Vec<u8>, u32)>) -> anyhow::Result<()> {
    let carried: Vec<&str> = files
        .keys()
        .filter_map(|k| k.strip_prefix("lib/"))
        .collect();
    for (name, (data, _)) in files {
        for lib in needed_libraries(data).with_context(|| format!("reading {name} as ELF"))? {
            if !carried.contains(&lib.as_str()) {
                bail!(
                    "{name} needs {lib}, which the builder does not put into the initramfs (it carries {}); \
                     add its package to builder/src/programs.rs",
                    carried.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// The DT_NEEDED names of an ELF64 little-endian file.
pub fn needed_libraries(data: &[u8]) -> anyhow::Result<Vec<String>> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(data)?;
    let (Some(dynamic), Some(dynstr)) = (
        file.section_by_name(".dynamic"),
        file.section_by_name(".dynstr"),
    ) else {
        return Ok(Vec::new());
    };
    let strings = dynstr.data()?;
    let mut out = Vec::new();
    for entry in dynamic.data()?.chunks_exact(16) {
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let (tag, value) = (word(&entry[..8]), word(&entry[8..]));
        match tag {
            0 => break,
            1 => {
                let start = usize::try_from(value).unwrap_or(usize::MAX);
                let rest = strings
                    .get(start..)
                    .context("a DT_NEEDED name lies outside .dynstr")?;
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needed_libraries_of_a_system_program() {
        let data = std::fs::read("/bin/sh").expect("/bin/sh exists on Debian");
        let libs = needed_libraries(&data).expect("an ELF file");
        assert!(libs.iter().any(|l| l == "libc.so.6"), "{libs:?}");
    }

    #[test]
    fn every_destination_is_inside_the_programs_directory() {
        for w in FROM_NTFS3G.iter().chain(FROM_LIBNTFS3G).chain(FROM_LIBC) {
            let p = archive_path(w.dest);
            assert!(p.starts_with("usr/lib/rescue/ntfs-3g/"), "{p}");
        }
        assert!(FROM_LIBC.iter().any(|w| w.dest == layout::LOADER));
    }
}
