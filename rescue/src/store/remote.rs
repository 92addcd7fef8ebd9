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
            let port = port.map(|p| format!(",port={p}")).unwrap_or_default();
            let mut out = Vec::new();
            // NFSv4: the server's pseudo-root holds every export at its path.
            for minor in ["4.2", "4.1", "4.0"] {
                out.push(Attempt {
                    fstype: "nfs4",
                    source: format!("{host}:/"),
                    data: format!("vers={minor},addr={ip}{proto}{port}"),
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
                        "vers=3,proto=tcp{},addr={ip},mountproto=tcp{},nolock{port}",
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
    let ip = crate::net::resolve(&url.host)
        .map_err(|e| RemoteError::Resolve {
            url: shown.clone(),
            why: crate::units::chain(&e),
        })?
        .into_iter()
        .min_by_key(|a| a.is_ipv6())
        .ok_or_else(|| RemoteError::Resolve {
            url: shown.clone(),
            why: "no address".into(),
        })?;
    let tries = attempts(url, ip, password).map_err(|what| RemoteError::Bad {
        url: shown.clone(),
        what,
    })?;
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if !write {
        flags |= MsFlags::MS_RDONLY;
    }
    let mut errors: Vec<String> = Vec::new();
    for a in &tries {
        let dir = mount_point(url, a);
        std::fs::create_dir_all(&dir).map_err(|e| RemoteError::Mount {
            url: shown.clone(),
            why: format!("cannot create {}: {e}", dir.display()),
        })?;
        match crate::sys::mount_device(Path::new(&a.source), &dir, a.fstype, flags, Some(&a.data)) {
            Ok(()) => {
                let mut how = a.how.clone();
                if let Some(first) = errors.first() {
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
                let why = explain(a, &e);
                if !errors.contains(&why) {
                    errors.push(why);
                }
                // A refused password is refused by every dialect: say so at once.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EACCES) | Some(libc::EKEYREJECTED)
                ) && a.fstype == "cifs"
                {
                    break;
                }
            }
        }
    }
    Err(RemoteError::Mount {
        url: shown,
        why: errors.join("; "),
    })
}

fn explain(a: &Attempt, e: &std::io::Error) -> String {
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
        format!("{} ({}): {e}", a.source, a.how)
    } else {
        format!("{} ({}): {what} ({e})", a.source, a.how)
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
                "vers=4.2,addr=10.0.2.2",
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
    fn shares_are_split_from_their_path() {
        assert_eq!(
            split_share("/s/a/b.rimg"),
            Some(("s".into(), "a/b.rimg".into()))
        );
        assert_eq!(split_share("/s"), None);
        assert_eq!(split_share("/s/"), None);
    }
}
