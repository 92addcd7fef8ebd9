//! Shares the kernel mounts itself, for image locations given as `smb://` and `nfs://` URLs: SMB 3.1.1
//! down to 2.1 through `cifs` (encrypted when the server can), NFSv4.2 down to 4.0 on the server's
//! pseudo-root, then NFSv3 on the longest exported folder of the path. There are no mount helpers in the
//! rescue system: the host name is resolved by `net`, and the kernel gets the address (`ip=`, `addr=`).
//! Once mounted, an image on a share is an ordinary file: `.partial`, locks, fsync and rename work as on
//! a local drive.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::url::{Scheme, Secret, Url};

/// Where shares are mounted.
pub const NET_MNT: &str = "/run/rescue/net";

/// A mounted share and the image's place on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub dir: PathBuf,
    /// The image file, under `dir`.
    pub image: PathBuf,
    /// How it was mounted, for the log: `SMB 3.1.1, encrypted`, `NFS 4.2`.
    pub how: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{url}: {what}")]
    Bad { url: String, what: String },
    #[error("{url}: cannot find the server: {why}")]
    Resolve { url: String, why: String },
    #[error("{url}: {why}")]
    Mount { url: String, why: String },
    #[error("{url}: {what}; correct the path in the URL")]
    NotThere { url: String, what: String },
}

/// One way to mount: the kernel's filesystem type, the source, the options (holding the password: never
/// shown), and how to describe it.
#[derive(Clone, PartialEq, Eq)]
pub struct Attempt {
    pub fstype: &'static str,
    pub source: String,
    pub data: String,
    pub how: String,
    /// The image's path below the mount point.
    pub rest: String,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The options hold the password.
        write!(f, "{} {} ({})", self.fstype, self.source, self.how)
    }
}

/// A value in cifs's comma-separated options: a comma is written twice.
fn cifs_value(v: &str) -> String {
    v.replace(',', ",,")
}

/// `/share/dir/a.rimg` → (`share`, `dir/a.rimg`).
pub fn split_share(path: &str) -> Option<(String, String)> {
    let p = path.trim_start_matches('/');
    let (share, rest) = p.split_once('/')?;
    (!share.is_empty() && !rest.trim_matches('/').is_empty())
        .then(|| (share.to_string(), rest.to_string()))
}

/// The ways to try mounting `url` (at address `ip`), best first.
pub fn attempts(url: &Url, ip: IpAddr, password: Option<&Secret>) -> Result<Vec<Attempt>, String> {
    let host = match ip {
        IpAddr::V4(v) => v.to_string(),
        IpAddr::V6(v) => format!("[{v}]"),
    };
    let port = url.port;
    match url.scheme {
        Scheme::Smb => {
            let (share, rest) = split_share(&url.path).ok_or(
                "an smb:// location needs a share and a file: smb://HOST/SHARE/PATH/NAME.rimg",
            )?;
            let user = url.user.as_deref().unwrap_or("guest");
            let pass = password
                .or(url.password.as_ref())
                .map(Secret::expose)
                .unwrap_or("");
            let mut base = format!(
                "ip={ip},username={},password={}",
                cifs_value(user),
                cifs_value(pass)
            );
            if let Some(p) = port {
                base.push_str(&format!(",port={p}"));
            }
            let mut out = Vec::new();
            for (vers, seal) in [
                ("3.1.1", true),
                ("3.1.1", false),
                ("3.0", true),
                ("3.0", false),
                ("2.1", false),
            ] {
                out.push(Attempt {
                    fstype: "cifs",
                    source: format!("//{host}/{share}"),
                    data: format!("{base},vers={vers}{}", if seal { ",seal" } else { "" }),
                    how: format!(
                        "SMB {vers}, {}",
                        if seal {
                            "encrypted"
                        } else {
                            "signed if the server asks, not encrypted"
                        }
                    ),
                    rest: rest.clone(),
                });
            }
            Ok(out)
        }
        Scheme::Nfs => {
            let path = url.path.trim_end_matches('/');
            if path.trim_matches('/').is_empty() {
                return Err(
                    "an nfs:// location needs a file: nfs://HOST/EXPORT/PATH/NAME.rimg".into(),
                );
            }
            let proto = if ip.is_ipv6() { ",proto=tcp6" } else { "" };
            // Soft mounts: a server that stops answering fails the operation after about 30 s (3
            // tries of 10 s) instead of hanging it for ever, as a hard mount would. A write lost that
            // way is an error, never a silently bad image: the capture fails, and images are verified.
            let tail = format!(
                ",soft,timeo=100,retrans=2{}",
                port.map(|p| format!(",port={p}")).unwrap_or_default()
            );
            let mut out = Vec::new();
            // NFSv4: the server's pseudo-root holds every export at its path.
            for minor in ["4.2", "4.1", "4.0"] {
                out.push(Attempt {
                    fstype: "nfs4",
                    source: format!("{host}:/"),
                    data: format!("vers={minor},addr={ip}{proto}{tail}"),
                    how: format!("NFS {minor}"),
                    rest: path.trim_start_matches('/').to_string(),
                });
            }
            // NFSv3 mounts an export itself: the longest folder of the path first.
            let dirs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            for n in (1..dirs.len()).rev() {
                out.push(Attempt {
                    fstype: "nfs",
                    source: format!("{host}:/{}", dirs[..n].join("/")),
                    data: format!(
                        "vers=3,proto=tcp{},addr={ip},mountproto=tcp{},nolock{tail}",
                        if ip.is_ipv6() { "6" } else { "" },
                        if ip.is_ipv6() { "6" } else { "" }
                    ),
                    how: "NFS 3".into(),
                    rest: dirs[n..].join("/"),
                });
            }
            Ok(out)
        }
        other => Err(format!(
            "{} locations are not mounted (they are read over the network)",
            other.name()
        )),
    }
}

/// The mount point for `url`'s share: one per server and share, reused while mounted.
pub fn mount_point(url: &Url, a: &Attempt) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(a.fstype.as_bytes());
    h.update(a.source.as_bytes());
    h.update(url.user.as_deref().unwrap_or("").as_bytes());
    let tag = h.finalize().to_hex();
    Path::new(NET_MNT).join(format!("{}-{}-{}", url.scheme.name(), url.host, &tag[..8]))
}

/// Mount the share holding `url`'s image (read-only unless `write`) and say where the image is. The
/// network is brought up (DHCP) first when no link has an address.
pub fn mount(url: &Url, password: Option<&Secret>, write: bool) -> Result<Share, RemoteError> {
    let shown = url.to_string();
    crate::net::ensure_up();
    let ip = crate::net::address(&url.host).map_err(|why| RemoteError::Resolve {
        url: shown.clone(),
        why,
    })?;
    let tries = attempts(url, ip, password).map_err(|what| RemoteError::Bad {
        url: shown.clone(),
        what,
    })?;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !write {
        flags |= MsFlags::MS_RDONLY;
    }
    let mut failed = Failures::default();
    for a in &tries {
        let dir = mount_point(url, a);
        std::fs::create_dir_all(&dir).map_err(|e| RemoteError::Mount {
            url: shown.clone(),
            why: format!("cannot create {}: {e}", dir.display()),
        })?;
        match crate::sys::mount_device(Path::new(&a.source), &dir, a.fstype, flags, Some(&a.data)) {
            Ok(()) => {
                // NFSv4 mounts the server's root, so an export that is not there shows only now.
                if let Some(what) = not_on_share(&dir, a, &url.path, write) {
                    let _ = crate::store::mount::unmount(&dir);
                    return Err(RemoteError::NotThere { url: shown, what });
                }
                let mut how = a.how.clone();
                if let Some(first) = failed.first() {
                    // Why the better ways were not taken (a server without SMB 3, or missing crypto).
                    how.push_str(&format!(" (first tried: {first})"));
                }
                return Ok(Share {
                    image: dir.join(&a.rest),
                    dir,
                    how,
                });
            }
            Err(e) => {
                failed.add(a, explain(&e));
                match e.raw_os_error() {
                    // A refused password is refused by every dialect: say so at once.
                    Some(libc::EACCES) | Some(libc::EKEYREJECTED) if a.fstype == "cifs" => break,
                    // No version reaches a host the network cannot reach.
                    Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => break,
                    _ => {}
                }
            }
        }
    }
    Err(RemoteError::Mount {
        url: shown,
        why: failed.to_string(),
    })
}

/// Why each way to mount failed, the ways that failed alike said once: `10.0.2.2:/ (NFS 4.2 / NFS 4.1),
/// 10.0.2.2:/images (NFS 3): the server refused the connection …`.
#[derive(Default)]
struct Failures(Vec<(String, Vec<Tried>)>);

/// A source and the ways it was tried (`NFS 4.2`, `NFS 4.1`).
type Tried = (String, Vec<String>);

impl Failures {
    fn add(&mut self, a: &Attempt, why: String) {
        let i = match self.0.iter().position(|(w, _)| *w == why) {
            Some(i) => i,
            None => {
                self.0.push((why, Vec::new()));
                self.0.len() - 1
            }
        };
        let tried = &mut self.0[i].1;
        match tried.iter_mut().find(|(source, _)| *source == a.source) {
            Some((_, hows)) => hows.push(a.how.clone()),
            None => tried.push((a.source.clone(), vec![a.how.clone()])),
        }
    }

    /// The first failure alone: `10.0.2.2:/ (NFS 4.2): why`.
    fn first(&self) -> Option<String> {
        let (why, tried) = self.0.first()?;
        let (source, hows) = tried.first()?;
        Some(format!("{source} ({}): {why}", hows.first()?))
    }
}

impl std::fmt::Display for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self
            .0
            .iter()
            .map(|(why, tried)| {
                let tried: Vec<String> = tried
                    .iter()
                    .map(|(source, hows)| format!("{source} ({})", hows.join(" / ")))
                    .collect();
                format!("{}: {why}", tried.join(", "))
            })
            .collect();
        f.write_str(&groups.join("; "))
    }
}

/// What of the image's path is not on the share mounted at `dir`: the first folder missing (or, when
/// reading, the image itself), as the URL names it, and what the folder above it holds. `None` when
/// all is there, or when it cannot be told (the operation then reports what it meets).
pub fn not_on_share(dir: &Path, a: &Attempt, url_path: &str, write: bool) -> Option<String> {
    let parts: Vec<&str> = a.rest.split('/').filter(|p| !p.is_empty()).collect();
    // The part of the URL's path the mount itself stands for: `/` (NFSv4), `/SHARE/` or `/EXPORT/`.
    let base = url_path
        .trim_end_matches('/')
        .strip_suffix(a.rest.trim_end_matches('/'))
        .filter(|b| b.ends_with('/'))
        .unwrap_or("/");
    let shown = |n: usize| format!("{base}{}", parts[..n].join("/"));
    // A capture creates the image, and the folders the front end asks to create (the TUI and jobs do;
    // the CLI's capture names a missing folder itself): only an NFSv4 export (the first folder below the
    // server's root) must be there. Reading needs the whole path.
    let needed = if write {
        usize::from(a.fstype == "nfs4").min(parts.len().saturating_sub(1))
    } else {
        parts.len()
    };
    let mut here = dir.to_path_buf();
    for (i, part) in parts.iter().take(needed).enumerate() {
        let next = here.join(part);
        match std::fs::metadata(&next) {
            Ok(_) => here = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(if a.fstype == "nfs4" && i == 0 {
                    // The server's root holds its exports (the first folder of each).
                    match listing(&here, "/") {
                        None => format!(
                            "the server has no export {} (it exports nothing to this machine)",
                            shown(1)
                        ),
                        Some(l) => format!("the server has no export {} (it offers {l})", shown(1)),
                    }
                } else {
                    let what = if !write && i + 1 == parts.len() {
                        "image"
                    } else {
                        "folder"
                    };
                    let above = match (i, base.trim_end_matches('/')) {
                        (0, "") => "/".to_string(),
                        (0, b) => b.to_string(),
                        _ => shown(i),
                    };
                    let held = match listing(&here, "") {
                        None => format!("{above} is empty"),
                        Some(l) => format!("{above} holds {l}"),
                    };
                    format!("there is no {what} {} on the server ({held})", shown(i + 1))
                });
            }
            Err(_) => return None,
        }
    }
    None
}

/// The names in `dir` (hidden ones left out), sorted, each after `prefix`: at most 8 and how many
/// more; `None` when there are none.
fn listing(dir: &Path, prefix: &str) -> Option<String> {
    const SHOWN: usize = 8;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .map(|n| format!("{prefix}{n}"))
        .collect();
    names.sort();
    let more = names.len().saturating_sub(SHOWN);
    names.truncate(SHOWN);
    let mut l = names.join(", ");
    if more > 0 {
        l.push_str(&format!(" and {more} more"));
    }
    (!l.is_empty()).then_some(l)
}

fn explain(e: &std::io::Error) -> String {
    let what = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EKEYREJECTED) => {
            "the server refused the user name or password (or this machine)"
        }
        Some(libc::ECONNREFUSED) => {
            "the server refused the connection (nothing listens on that port)"
        }
        Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) | Some(libc::ETIMEDOUT) => {
            "the server cannot be reached"
        }
        Some(libc::ENOENT) => "no such share or export on the server",
        Some(libc::ENODEV) => "this kernel cannot mount it (the module is missing)",
        Some(libc::EOPNOTSUPP) | Some(libc::EPROTONOSUPPORT) => "the server does not offer it",
        _ => "",
    };
    if what.is_empty() {
        e.to_string()
    } else {
        format!("{what} ({e})")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn smb_options_hold_the_address_user_and_escaped_password() {
        let u = Url::parse("smb://tech:p%2Cw@nas.lan:4450/backups/pc/a.rimg").unwrap();
        let a = attempts(&u, "10.0.2.2".parse().unwrap(), None).unwrap();
        assert_eq!(a[0].fstype, "cifs");
        assert_eq!(a[0].source, "//10.0.2.2/backups");
        assert_eq!(a[0].rest, "pc/a.rimg");
        assert_eq!(
            a[0].data,
            "ip=10.0.2.2,username=tech,password=p,,w,port=4450,vers=3.1.1,seal"
        );
        assert_eq!(a[0].how, "SMB 3.1.1, encrypted");
        assert!(a.iter().any(|x| x.data.ends_with("vers=2.1")));
        // Debug output never holds the options (the password).
        assert!(!format!("{a:?}").contains("p,,w"));
        // A password given apart from the URL wins.
        let a = attempts(&u, "10.0.2.2".parse().unwrap(), Some(&Secret::new("other"))).unwrap();
        assert!(a[0].data.contains("password=other,"));
        let bad = Url::parse("smb://nas/only-a-share").unwrap();
        assert!(attempts(&bad, "10.0.2.2".parse().unwrap(), None)
            .unwrap_err()
            .contains("needs a share and a file"));
    }

    #[test]
    fn nfs_tries_v4_on_the_pseudo_root_then_v3_exports() {
        let u = Url::parse("nfs://srv/export/pc/a.rimg").unwrap();
        let a = attempts(&u, "10.0.2.2".parse().unwrap(), None).unwrap();
        assert_eq!(
            (
                a[0].fstype,
                a[0].source.as_str(),
                a[0].data.as_str(),
                a[0].rest.as_str()
            ),
            (
                "nfs4",
                "10.0.2.2:/",
                "vers=4.2,addr=10.0.2.2,soft,timeo=100,retrans=2",
                "export/pc/a.rimg"
            )
        );
        let v3: Vec<(&str, &str)> = a
            .iter()
            .filter(|x| x.fstype == "nfs")
            .map(|x| (x.source.as_str(), x.rest.as_str()))
            .collect();
        assert_eq!(
            v3,
            [
                ("10.0.2.2:/export/pc", "a.rimg"),
                ("10.0.2.2:/export", "pc/a.rimg")
            ]
        );
        let v6 = attempts(&u, "fd00::2".parse().unwrap(), None).unwrap();
        assert_eq!(v6[0].source, "[fd00::2]:/");
        assert!(v6[0].data.contains("proto=tcp6"));
    }

    #[test]
    fn what_is_not_on_a_share_is_named_as_the_url_names_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("images")).unwrap();
        std::fs::write(r.join("images/disk.rimg"), b"").unwrap();
        let ip = "10.0.2.2".parse().unwrap();
        let v4 = |path: &str| {
            let u = Url::parse(&format!("nfs://srv{path}")).unwrap();
            (attempts(&u, ip, None).unwrap().remove(0), u.path)
        };
        let missing = |path: &str, write: bool| {
            let (a, p) = v4(path);
            not_on_share(r, &a, &p, write)
        };
        assert_eq!(missing("/images/new.rimg", true), None);
        assert_eq!(missing("/images/disk.rimg", false), None);
        assert_eq!(
            missing("/wrong/disk.rimg", true).unwrap(),
            "the server has no export /wrong (it offers /images)"
        );
        // A capture's missing folder is created by the TUI and jobs, and named by the CLI's capture.
        assert_eq!(missing("/images/pc/disk.rimg", true), None);
        assert_eq!(
            missing("/images/pc/disk.rimg", false).unwrap(),
            "there is no folder /images/pc on the server (/images holds disk.rimg)"
        );
        assert_eq!(
            missing("/images/other.rimg", false).unwrap(),
            "there is no image /images/other.rimg on the server (/images holds disk.rimg)"
        );
        // On an SMB share (or an NFSv3 export) the mount stands for the share.
        let u = Url::parse("smb://nas/backups/pc/a.rimg").unwrap();
        let a = attempts(&u, ip, None).unwrap().remove(0);
        for n in 0..10 {
            std::fs::write(r.join(format!("f{n}")), b"").unwrap();
        }
        assert_eq!(not_on_share(r, &a, &u.path, true), None);
        assert_eq!(
            not_on_share(r, &a, &u.path, false).unwrap(),
            "there is no folder /backups/pc on the server (/backups holds f0, f1, f2, f3, f4, f5, \
             f6, f7 and 3 more)"
        );
        let empty = tempfile::tempdir().unwrap();
        let (a, p) = v4("/images/a.rimg");
        assert_eq!(
            not_on_share(empty.path(), &a, &p, true).unwrap(),
            "the server has no export /images (it exports nothing to this machine)"
        );
    }

    #[test]
    fn ways_that_failed_alike_are_said_once() {
        let u = Url::parse("nfs://srv/images/a.rimg").unwrap();
        let a = attempts(&u, "10.0.2.2".parse().unwrap(), None).unwrap();
        let refused = explain(&std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let mut f = Failures::default();
        for x in &a[..3] {
            f.add(x, refused.clone());
        }
        f.add(
            &a[3],
            explain(&std::io::Error::from_raw_os_error(libc::ENOENT)),
        );
        let text = f.to_string();
        assert!(
            text.starts_with(
                "10.0.2.2:/ (NFS 4.2 / NFS 4.1 / NFS 4.0): the server refused the connection \
                 (nothing listens on that port) ("
            ),
            "{text}"
        );
        assert!(
            text.contains("; 10.0.2.2:/images (NFS 3): no such share or export on the server"),
            "{text}"
        );
        assert!(f
            .first()
            .unwrap()
            .starts_with("10.0.2.2:/ (NFS 4.2): the server refused"));
    }

    #[test]
    fn shares_are_split_from_their_path() {
        assert_eq!(
            split_share("/s/a/b.rimg"),
            Some(("s".into(), "a/b.rimg".into()))
        );
        assert_eq!(split_share("/s"), None);
        assert_eq!(split_share("/s/"), None);
    }
}
