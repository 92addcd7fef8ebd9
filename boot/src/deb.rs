//! Reading chosen files out of a Debian package (the signed shim and grub), in memory. A `.deb` is an `ar`
//! archive whose `data.tar.xz` (or plain `data.tar`) holds the files; symlinks inside the package are
//! followed, since Debian may ship the signed binary under a versioned name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error(
        "cannot read the package {path}: {source}. Delete it from the builder cache and run again"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error("the package {path} has no data.tar.xz or data.tar (it has: {members}). Delete it from the builder cache and run again")]
    NoData { path: PathBuf, members: String },
    #[error("the package {path} contains no {file}. Is it the right package (shim-signed, grub-efi-amd64-signed, grub-pc-bin, grub-common, ntfs-3g, libntfs-3g89, libc6)?")]
    NoFile { path: PathBuf, file: String },
}

fn read_err(path: &Path) -> impl Fn(io::Error) -> DebError + '_ {
    move |source| DebError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The `data.tar` stream of `deb`, decompressed.
fn data_tar(deb: &Path) -> Result<Vec<u8>, DebError> {
    let f = File::open(deb).map_err(read_err(deb))?;
    let mut ar = ar::Archive::new(BufReader::new(f));
    let mut members = Vec::new();
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.map_err(read_err(deb))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let mut raw = Vec::new();
        match name.as_str() {
            "data.tar.xz" => {
                liblzma::read::XzDecoder::new(entry)
                    .read_to_end(&mut raw)
                    .map_err(read_err(deb))?;
                return Ok(raw);
            }
            "data.tar" => {
                entry.read_to_end(&mut raw).map_err(read_err(deb))?;
                return Ok(raw);
            }
            _ => members.push(name),
        }
    }
    Err(DebError::NoData {
        path: deb.to_path_buf(),
        members: members.join(", "),
    })
}

/// `./usr/lib/x` and `usr/lib/x` are the same file.
fn normalize(p: &str) -> String {
    p.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// Resolves a symlink target relative to the link's directory.
fn resolve(link: &str, target: &str) -> String {
    if let Some(abs) = target.strip_prefix('/') {
        return abs.to_string();
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for t in target.split('/') {
        match t {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            t => parts.push(t),
        }
    }
    parts.join("/")
}

/// Regular files and symlinks (resolved to package paths) of the package's data archive.
type Contents = (BTreeMap<String, Vec<u8>>, BTreeMap<String, String>);

fn contents(deb: &Path) -> Result<Contents, DebError> {
    let tar_bytes = data_tar(deb)?;
    let mut files = BTreeMap::new();
    let mut links = BTreeMap::new();
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    for entry in archive.entries().map_err(read_err(deb))? {
        let mut entry = entry.map_err(read_err(deb))?;
        let path = normalize(&entry.path().map_err(read_err(deb))?.to_string_lossy());
        match entry.header().entry_type() {
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(read_err(deb))?;
                files.insert(path, data);
            }
            tar::EntryType::Symlink => {
                if let Ok(Some(t)) = entry.link_name() {
                    links.insert(path.clone(), resolve(&path, &t.to_string_lossy()));
                }
            }
            _ => {}
        }
    }
    Ok((files, links))
}

/// Every regular file under the package directory `dir` (e.g. `usr/lib/grub/i386-pc`), by its path
/// relative to `dir`. An empty result is an error: the package is not the one expected.
pub fn extract_dir(deb: &Path, dir: &str) -> Result<BTreeMap<String, Vec<u8>>, DebError> {
    let (files, _) = contents(deb)?;
    let prefix = format!("{}/", normalize(dir).trim_end_matches('/'));
    let out: BTreeMap<String, Vec<u8>> = files
        .into_iter()
        .filter_map(|(p, data)| p.strip_prefix(&prefix).map(|rel| (rel.to_string(), data)))
        .collect();
    if out.is_empty() {
        return Err(DebError::NoFile {
            path: deb.to_path_buf(),
            file: prefix,
        });
    }
    Ok(out)
}

/// The contents of each of `wanted` (package paths such as `usr/lib/shim/shimx64.efi.signed`).
pub fn extract(deb: &Path, wanted: &[&str]) -> Result<BTreeMap<String, Vec<u8>>, DebError> {
    let out = extract_present(deb, wanted)?;
    match wanted.iter().find(|w| !out.contains_key(**w)) {
        Some(w) => Err(DebError::NoFile {
            path: deb.to_path_buf(),
            file: w.to_string(),
        }),
        None => Ok(out),
    }
}

/// The contents of those of `wanted` the package has: for files whose place moved between releases
/// (`lib/…` before the /usr merge, `usr/lib/…` after), asked for at both places.
pub fn extract_present(deb: &Path, wanted: &[&str]) -> Result<BTreeMap<String, Vec<u8>>, DebError> {
    let (mut files, links) = contents(deb)?;
    let mut out = BTreeMap::new();
    for w in wanted {
        let mut p = normalize(w);
        // A few hops at most; a loop in a package is damage, reported as a missing file.
        for _ in 0..8 {
            match links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        if let Some(data) = files.remove(&p) {
            out.insert(w.to_string(), data);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly by design

    use super::*;

    /// A minimal package: ar(debian-binary, data.tar.xz) with one file and a symlink to it.
    fn fake_deb(path: &Path) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(
            &mut h,
            "./usr/lib/shim/shimx64.efi.signed.latest",
            &b"SHIM"[..],
        )
        .unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_size(0);
        l.set_entry_type(tar::EntryType::Symlink);
        tar.append_link(
            &mut l,
            "./usr/lib/shim/shimx64.efi.signed",
            "shimx64.efi.signed.latest",
        )
        .unwrap();
        let raw = tar.into_inner().unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        std::io::Write::write_all(&mut xz, &raw).unwrap();
        let xz = xz.finish().unwrap();
        let mut ar = ar::Builder::new(File::create(path).unwrap());
        ar.append(
            &ar::Header::new(b"debian-binary".to_vec(), 4),
            &b"2.0\n"[..],
        )
        .unwrap();
        ar.append(
            &ar::Header::new(b"data.tar.xz".to_vec(), xz.len() as u64),
            &xz[..],
        )
        .unwrap();
    }

    #[test]
    fn extracts_files_through_symlinks_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("shim-signed_1_amd64.deb");
        fake_deb(&deb);
        let got = extract(&deb, &["usr/lib/shim/shimx64.efi.signed"]).unwrap();
        assert_eq!(got["usr/lib/shim/shimx64.efi.signed"], b"SHIM");
        let e = extract(&deb, &["usr/lib/grub/grubx64.efi.signed"]).unwrap_err();
        assert!(e.to_string().contains("grubx64.efi.signed"), "{e}");
        let all = extract_dir(&deb, "./usr/lib/shim/").unwrap();
        assert_eq!(
            all.keys().collect::<Vec<_>>(),
            ["shimx64.efi.signed.latest"]
        );
        let e = extract_dir(&deb, "usr/lib/grub").unwrap_err();
        assert!(e.to_string().contains("usr/lib/grub/"), "{e}");
        let e = extract(&dir.path().join("none.deb"), &["x"]).unwrap_err();
        assert!(e.to_string().contains("none.deb"), "{e}");
    }

    #[test]
    fn symlinks_resolve_relative_to_their_directory() {
        assert_eq!(
            resolve(
                "usr/lib/shim/shimx64.efi.signed",
                "shimx64.efi.signed.latest"
            ),
            "usr/lib/shim/shimx64.efi.signed.latest"
        );
        assert_eq!(resolve("a/b/c", "../d"), "a/d");
        assert_eq!(resolve("a/b/c", "/x/y"), "x/y");
        assert_eq!(normalize("./usr/lib/x"), "usr/lib/x");
    }
}
