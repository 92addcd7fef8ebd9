//! Where an image named by a [`Location`] is: a local path (the path itself, or the file on a share
//! mounted for it, `smb://` and `nfs://`, unmounted again when the operation is over), a file on a web
//! server read by range requests (`http://`, `https://`; read-only), or a file on an SFTP server
//! (`sftp://`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::image::{ImageFile, ReadAt, SharedReader};
use crate::repo::{Repo, RepoLock, SnapshotImage, SnapshotRef};
use crate::store::http::{HttpFile, HttpOptions};
use crate::store::remote::{self, Share};
use crate::store::sftp::{HostKey, SftpFile, SftpOptions};
use crate::sys::AlignedBuf;
use crate::url::{Location, Scheme, Secret, Url};

/// What reaching a network location needs besides its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetOptions {
    /// The user when the URL names none (from a credentials file).
    pub user: Option<String>,
    /// The password when the URL names a user and no password (from `--credentials`,
    /// `RESCUE_PASSWORD` or a prompt).
    pub password: Option<Secret>,
    /// HTTPS: trust only the CA certificates (PEM) in this file instead of the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// SFTP: the private key to log in with (else the user's usual keys in `~/.ssh`).
    pub identity: Option<PathBuf>,
    /// An encrypted repository's passphrase (`--passphrase-file`, `RESCUE_PASSPHRASE`, a prompt).
    pub passphrase: Option<Secret>,
}

impl NetOptions {
    /// These options with the passphrase a snapshot's location carries (typed in the interface), which
    /// goes before one given to the command.
    pub fn for_snapshot(&self, s: &SnapshotRef) -> NetOptions {
        let mut net = self.clone();
        if s.passphrase.is_some() {
            net.passphrase = s.passphrase.clone();
        }
        net
    }
}

/// An image being read: a file (local, or on a mounted share), a file on a web server or an SFTP server,
/// or a snapshot in a repository.
pub enum ImageSource {
    File(ImageFile),
    Http(HttpFile),
    Sftp(SftpFile),
    Snapshot(Arc<SnapshotImage>),
}

impl ReadAt for ImageSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            ImageSource::File(f) => f.read_exact_at(buf, offset),
            ImageSource::Http(h) => h.read_exact_at(buf, offset),
            ImageSource::Sftp(s) => s.read_exact_at(buf, offset),
            ImageSource::Snapshot(s) => s.read_exact_at(buf, offset),
        }
    }
    fn size(&self) -> io::Result<u64> {
        match self {
            ImageSource::File(f) => f.size(),
            ImageSource::Http(h) => h.size(),
            ImageSource::Sftp(s) => s.size(),
            ImageSource::Snapshot(s) => s.size(),
        }
    }
    fn read_span(&self, buf: &mut AlignedBuf, offset: u64, len: usize) -> io::Result<usize> {
        match self {
            ImageSource::File(f) => f.read_span(buf, offset, len),
            ImageSource::Http(h) => h.read_span(buf, offset, len),
            ImageSource::Sftp(s) => s.read_span(buf, offset, len),
            ImageSource::Snapshot(s) => s.read_span(buf, offset, len),
        }
    }
}

pub(super) struct Placed {
    /// The image as a local path; for a web server, its URL as shown (password redacted).
    pub path: PathBuf,
    pub share: Option<Share>,
    reach: Reach,
}

/// How the image is reached besides a local path.
enum Reach {
    Path,
    Http(HttpFile),
    Sftp(SftpFile),
    /// A new image to be written there (capture).
    SftpNew(Url, SftpOptions),
    /// A snapshot, its file (which stands for the image in the checks of a restore), and the
    /// repository's shared lock, held while the snapshot is read.
    Snapshot {
        image: Arc<SnapshotImage>,
        file: PathBuf,
        _lock: Option<RepoLock>,
    },
    /// A new snapshot of this name (capture).
    RepoNew(Box<Repo>, String),
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(s) = &self.share {
            // Flushed and unmounted; a share still busy is detached (the kernel finishes it).
            let _ = crate::store::mount::unmount(&s.dir);
        }
    }
}

impl Placed {
    pub fn local(path: &Path) -> Placed {
        Placed {
            path: path.to_path_buf(),
            share: None,
            reach: Reach::Path,
        }
    }

    /// A capture onto an SFTP server: where, and how to connect.
    pub fn sftp_new(&self) -> Option<(&Url, &SftpOptions)> {
        match &self.reach {
            Reach::SftpNew(url, opts) => Some((url, opts)),
            _ => None,
        }
    }

    /// A capture into a repository: which, and the snapshot's name.
    pub fn repo_new(&self) -> Option<(&Repo, &str)> {
        match &self.reach {
            Reach::RepoNew(repo, name) => Some((repo, name)),
            _ => None,
        }
    }

    /// Where the log and result files go when not beside the image: a repository's `logs` folder,
    /// named after the snapshot.
    pub fn record_base(&self) -> Option<PathBuf> {
        match &self.reach {
            Reach::RepoNew(repo, name) => Some(repo.root.join("logs").join(name)),
            Reach::Snapshot { image, file, .. } => {
                let root = file.parent()?.parent()?;
                Some(root.join("logs").join(&image.meta.name))
            }
            _ => self.share.as_ref().map(|s| s.image.clone()),
        }
    }

    /// The image's local path (`None` for one on a web server); for a snapshot, its snapshot file.
    pub fn local_path(&self) -> Option<&Path> {
        match &self.reach {
            Reach::Path => Some(self.path.as_path()),
            Reach::Snapshot { file, .. } => Some(file),
            _ => None,
        }
    }

    /// Whether this is a Clonezilla image (a directory, or a partclone image file) on this machine or a
    /// mounted share.
    pub fn clonezilla(&self) -> bool {
        matches!(self.reach, Reach::Path) && super::clonezilla::is_clonezilla(&self.path)
    }

    /// The format of the virtual machine disk this is, when it is one (a file on this machine or a
    /// mounted share that [`crate::vdisk`] recognises).
    pub fn virtual_format(&self) -> Option<crate::vdisk::Format> {
        if !matches!(self.reach, Reach::Path) {
            return None;
        }
        let file = std::fs::File::open(&self.path).ok()?;
        crate::vdisk::sniff(&file)
    }

    /// A snapshot opened for reading, named as `label` in messages; `share` when the repository is on
    /// one; `lock` held until the operation is over.
    pub fn snapshot(
        image: SnapshotImage,
        file: PathBuf,
        label: String,
        share: Option<Share>,
        lock: Option<RepoLock>,
    ) -> Placed {
        Placed {
            path: PathBuf::from(label),
            share,
            reach: Reach::Snapshot {
                image: Arc::new(image),
                file,
                _lock: lock,
            },
        }
    }

    /// Open the image for reading, with where it is in every error.
    pub fn open(&self) -> anyhow::Result<SharedReader<ImageSource>> {
        let shown = self.path.display().to_string();
        let source = self.source()?;
        // A virtual machine's disk is no image of ours: say what it is and what can be done with it.
        let vm = match &source {
            ImageSource::File(f) => crate::vdisk::sniff(f).map(|v| v.name()),
            _ => None,
        };
        SharedReader::open(Arc::new(source)).with_context(|| match vm {
            Some(format) => format!(
                "reading the image {shown}: it is a {format} virtual disk, not an image of this \
                 program; `rescue disks {shown}` shows what it holds, `rescue capture {shown} -o \
                 IMAGE.rimg` makes an image of it, and restore and verify take it as it is"
            ),
            None => format!("reading the image {shown}"),
        })
    }

    /// The image's bytes, as positional reads (for copying it whole).
    pub fn source(&self) -> anyhow::Result<ImageSource> {
        let shown = self.path.display().to_string();
        Ok(match &self.reach {
            Reach::Http(h) => ImageSource::Http(h.clone()),
            Reach::Sftp(s) => ImageSource::Sftp(s.clone()),
            Reach::SftpNew(url, opts) => ImageSource::Sftp(SftpFile::open(url, opts)?),
            Reach::Snapshot { image, .. } => ImageSource::Snapshot(image.clone()),
            Reach::RepoNew(repo, name) => bail!(
                "the snapshot {name} in {} is being made; it cannot be read yet",
                repo.root.display()
            ),
            Reach::Path => {
                let file = ImageFile::open(&self.path)
                    .with_context(|| format!("opening the image {shown}"))?;
                ImageSource::File(file)
            }
        })
    }

    /// An error of the operation on this image as the user named it (`loc`): the share's local path
    /// replaced by the URL, and what to do when the server refused to let a capture write.
    pub fn describe_error(&self, loc: &Location, e: &anyhow::Error, write: bool) -> String {
        let text = super::describe(e);
        let (Some(share), Location::Remote(url)) = (&self.share, loc) else {
            return text;
        };
        let shown = loc.to_string();
        let mut text = text.replace(&share.image.display().to_string(), &shown);
        // Refused on the image (or its `.partial`), not on the disk being read.
        let denied = text.contains(&shown)
            && e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::PermissionDenied)
            });
        if write && denied {
            text.push_str(match url.scheme {
                Scheme::Nfs => {
                    "; the NFS server does not let this machine write there as root: export the \
                     folder to it with no_root_squash, or choose another folder"
                }
                _ => {
                    "; the server does not let this user write there: give the user write access, \
                     or choose another folder"
                }
            });
        }
        if [
            "os error 112",
            "os error 110",
            "os error 104",
            "os error 103",
            "os error 113",
        ]
        .iter()
        .any(|g| text.contains(g))
        {
            text = text.replace(
                "check that the target drive is present and has free space",
                "the server stopped answering: check that it is running and reachable",
            );
            if !text.contains("the server stopped answering") {
                text.push_str(
                    "; the server stopped answering: check that it is running and reachable, then \
                     run again",
                );
            }
        }
        text
    }

    /// How the image is reached, for the outcome's notes.
    pub fn note(&self) -> Option<String> {
        if let Some(s) = &self.share {
            return Some(format!("the image is on a share mounted with {}", s.how));
        }
        match &self.reach {
            Reach::Http(h) => Some(format!(
                "the image was read from {} by range requests",
                h.url()
            )),
            Reach::Sftp(_) | Reach::SftpNew(..) => Some(format!(
                "the image is on an SFTP server: {}",
                self.path.display()
            )),
            Reach::Path | Reach::Snapshot { .. } | Reach::RepoNew(..) => None,
        }
    }
}

/// A small file (a job) fetched whole from a web server, up to `limit` bytes.
pub fn fetch(url: &Url, net: &NetOptions, limit: u64) -> anyhow::Result<Vec<u8>> {
    match url.scheme {
        Scheme::Http | Scheme::Https => {
            Ok(crate::store::http::fetch(url, &http_options(net), limit)?)
        }
        _ => bail!("{url}: only http:// and https:// can be fetched this way"),
    }
}

/// Send `bytes` to a web server as a new file (`PUT`; refused when the file exists).
pub(super) fn put(url: &Url, net: &NetOptions, bytes: &[u8]) -> anyhow::Result<()> {
    match url.scheme {
        Scheme::Http | Scheme::Https => {
            Ok(crate::store::http::put(url, &http_options(net), bytes)?)
        }
        _ => bail!("{url}: results can only be sent to http:// and https:// folders"),
    }
}

fn http_options(net: &NetOptions) -> HttpOptions {
    HttpOptions {
        ca_file: net.ca_file.clone(),
        password: net.password.clone(),
    }
}

/// Whether `loc` can be used for reading or (`write`) for a new image, decided from the URL alone, before
/// anything is mounted or connected: a web server cannot take an image, and an smb:// URL names a share
/// and then the file. Front ends ask it to refuse a typed URL at once; [`place`] asks it first.
pub fn check_location(loc: &Location, write: bool) -> Result<(), String> {
    let Location::Remote(url) = loc else {
        return Ok(());
    };
    if write && !url.scheme.writable() {
        return Err(format!(
            "{url}: a web server cannot take an image (http and https are only read); capture to a \
             local drive or a share (smb://, nfs://, sftp://)"
        ));
    }
    if url.scheme == Scheme::Smb && remote::split_share(&url.path).is_none() {
        return Err(format!(
            "{url}: an smb:// location names the share and then the file: \
             smb://HOST/SHARE/FOLDER/NAME.{}",
            crate::store::IMAGE_EXT
        ));
    }
    Ok(())
}

fn sftp_options(net: &NetOptions) -> SftpOptions {
    SftpOptions {
        password: net.password.clone(),
        identity: net.identity.clone(),
        known_hosts: crate::store::sftp::default_known_hosts(),
    }
}

/// An sftp:// location's server host key and whether the URL or `known_hosts` pins it (no login); `None`
/// for other locations. Front ends show an unpinned key for the user to compare with the server's and
/// then pin it in the URL (`?fingerprint=`), as an ssh client asks before its first connection.
pub fn sftp_host_key(loc: &Location, net: &NetOptions) -> Result<Option<HostKey>, String> {
    match loc {
        Location::Remote(url) if url.scheme == Scheme::Sftp => {
            crate::store::sftp::host_key(url, &sftp_options(net))
                .map(Some)
                .map_err(|e| e.to_string())
        }
        _ => Ok(None),
    }
}

/// Where `loc` is; a share is mounted read-write when `write`.
pub(super) fn place(loc: &Location, write: bool, net: &NetOptions) -> anyhow::Result<Placed> {
    check_location(loc, write).map_err(anyhow::Error::msg)?;
    match loc {
        Location::Local(p) => Ok(Placed::local(p)),
        Location::Remote(url) => {
            let mut url = url.clone();
            if url.user.is_none() {
                url.user = net.user.clone();
            }
            place_remote(&url, write, net)
        }
        Location::Snapshot(s) => place_snapshot(s, write, &net.for_snapshot(s)),
    }
}

/// A snapshot to read, or (`write`) a new one to capture, in a repository on a local folder or an
/// SMB/NFS share (mounted like a share holding an image).
fn place_snapshot(s: &SnapshotRef, write: bool, net: &NetOptions) -> anyhow::Result<Placed> {
    let (repo, share) = open_repo(&s.repo, write, net)?;
    if write {
        return Ok(Placed {
            path: PathBuf::from(s.to_string()),
            share,
            reach: Reach::RepoNew(Box::new(repo), s.name.clone()),
        });
    }
    let lock = repo.lock_shared(&format!("reading {s}"))?;
    let entry = crate::repo::resolve(&repo, &s.name, &s.when)?;
    let label = format!("{}::{}", s.repo, entry.label());
    let mut image = SnapshotImage::open(&repo, &entry)?;
    image.label = label.clone();
    Ok(Placed::snapshot(
        image,
        entry.path,
        label,
        share,
        Some(lock),
    ))
}

/// The repository at `loc` (a folder, or an SMB/NFS share's folder, mounted read-write when `write`),
/// and the share mounted for it (unmounted when dropped).
pub(super) fn open_repo(
    loc: &Location,
    write: bool,
    net: &NetOptions,
) -> anyhow::Result<(Repo, Option<Share>)> {
    let (mut repo, share) = open_sealed(loc, write, net)?;
    repo.unlock(net.passphrase.as_ref().map(Secret::expose))
        .map_err(|e| shown_as(e, &repo.root, loc, share.is_some()))?;
    Ok((repo, share))
}

/// A message about the mounted share's folder `root` said with the URL the user gave instead; the
/// [`NoRepository`](crate::repo::NoRepository) kind kept.
pub(super) fn shown_as(
    e: anyhow::Error,
    root: &Path,
    loc: &Location,
    on_share: bool,
) -> anyhow::Error {
    if !on_share {
        return e;
    }
    let text = super::describe(&e).replace(&root.display().to_string(), &loc.to_string());
    if e.downcast_ref::<crate::repo::NoRepository>().is_some() {
        crate::repo::NoRepository(text).into()
    } else {
        anyhow::anyhow!("{text}")
    }
}

/// [`open_repo`] without unlocking an encrypted repository.
pub(super) fn open_sealed(
    loc: &Location,
    write: bool,
    net: &NetOptions,
) -> anyhow::Result<(Repo, Option<Share>)> {
    let (root, share) = match loc {
        Location::Local(p) => (p.clone(), None),
        Location::Remote(url) if url.scheme == Scheme::S3 => {
            let shown = PathBuf::from(url.to_string());
            return Ok((Repo::open_on(s3_backend(url, net)?, &shown)?, None));
        }
        Location::Remote(url) if matches!(url.scheme, Scheme::Smb | Scheme::Nfs) => {
            let mut url = url.clone();
            if url.user.is_none() {
                url.user = net.user.clone();
            }
            let share = remote::mount(&url, net.password.as_ref(), write)?;
            (share.image.clone(), Some(share))
        }
        other => bail!(
            "{other}: a repository is a folder on a drive or on an SMB or NFS share, or an S3 \
             bucket (s3://); it cannot be on {}",
            match other {
                Location::Remote(u) => format!("an {} server", u.scheme.name()),
                _ => "another repository".to_string(),
            }
        ),
    };
    let repo = Repo::open(&root).map_err(|e| shown_as(e, &root, loc, share.is_some()))?;
    Ok((repo, share))
}

/// The S3 bucket and prefix `url` names, its keys from the URL, `net` or the environment.
pub(super) fn s3_backend(
    url: &Url,
    net: &NetOptions,
) -> anyhow::Result<std::sync::Arc<dyn crate::repo::Backend>> {
    let client = crate::store::s3::S3Client::open(
        url,
        net.user.as_deref(),
        net.password.as_ref(),
        net.ca_file.as_deref(),
    )?;
    Ok(std::sync::Arc::new(crate::repo::S3Backend::new(client)))
}

fn place_remote(url: &Url, write: bool, net: &NetOptions) -> anyhow::Result<Placed> {
    match url.scheme {
        Scheme::S3 => bail!(
            "{url}: an S3 bucket holds repositories, not image files: name a snapshot in it, \
             {url}::NAME (make the repository with `rescue repo init {url}`)"
        ),
        // Both are mounted by the kernel; NFS (AUTH_SYS) takes no password, `remote::attempts` gives
        // it to SMB only.
        Scheme::Smb | Scheme::Nfs => {
            let share = remote::mount(url, net.password.as_ref(), write)?;
            Ok(Placed {
                path: share.image.clone(),
                share: Some(share),
                reach: Reach::Path,
            })
        }
        Scheme::Http | Scheme::Https => {
            let file = HttpFile::open(url, &http_options(net))?;
            Ok(Placed {
                path: PathBuf::from(url.to_string()),
                share: None,
                reach: Reach::Http(file),
            })
        }
        Scheme::Sftp => {
            let opts = sftp_options(net);
            let reach = if write {
                Reach::SftpNew(url.clone(), opts)
            } else {
                Reach::Sftp(SftpFile::open(url, &opts)?)
            };
            Ok(Placed {
                path: PathBuf::from(url.to_string()),
                share: None,
                reach,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_url_and_blame_a_silent_server_not_a_drive() {
        let loc = Location::parse("smb://u:pw@nas/images/a.rimg").unwrap();
        let placed = Placed {
            path: "/run/rescue/net/x/a.rimg".into(),
            share: Some(Share {
                dir: "/run/rescue/net/x".into(),
                image: "/run/rescue/net/x/a.rimg".into(),
                how: "SMB 3.1.1".into(),
            }),
            reach: Reach::Path,
        };
        let e = anyhow::anyhow!(
            "no image was left at /run/rescue/net/x/a.rimg: writing the image failed: Host is down \
             (os error 112); check that the target drive is present and has free space, then capture \
             again"
        );
        let text = placed.describe_error(&loc, &e, true);
        assert_eq!(
            text,
            "no image was left at smb://u:***@nas/images/a.rimg: writing the image failed: Host is \
             down (os error 112); the server stopped answering: check that it is running and \
             reachable, then capture again"
        );
        // Dropping `placed` would unmount: keep the test from touching the system.
        std::mem::forget(placed);
    }

    #[test]
    fn errors_on_a_share_name_the_url_and_what_to_do() {
        let image = PathBuf::from("/run/rescue/net/nfs-10.0.2.2-0/images/disk.rimg");
        let placed = |scheme: &str| {
            let loc = Location::parse(&format!("{scheme}://u:hunter2@10.0.2.2/images/disk.rimg"));
            let placed = Placed {
                path: image.clone(),
                share: Some(Share {
                    // Not mounted: the unmount on drop finds nothing to do.
                    dir: PathBuf::from("/nonexistent-share"),
                    image: image.clone(),
                    how: "NFS 4.2".into(),
                }),
                reach: Reach::Path,
            };
            (loc.unwrap(), placed)
        };
        let denied = || {
            anyhow::Error::new(io::Error::from(io::ErrorKind::PermissionDenied))
                .context(format!("cannot create the image {}", image.display()))
        };
        let (loc, p) = placed("nfs");
        let text = p.describe_error(&loc, &denied(), true);
        assert!(
            text.starts_with(
                "cannot create the image nfs://u:***@10.0.2.2/images/disk.rimg: permission denied"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("with no_root_squash, or choose another folder"),
            "{text}"
        );
        // Reading: no advice about writing; nor when the disk was refused, not the image.
        let text = p.describe_error(&loc, &denied(), false);
        assert!(!text.contains("no_root_squash"), "{text}");
        let disk = anyhow::Error::new(io::Error::from(io::ErrorKind::PermissionDenied))
            .context("opening /dev/vda");
        let text = p.describe_error(&loc, &disk, true);
        assert_eq!(text, "opening /dev/vda: permission denied");
        let (loc, p) = placed("smb");
        let text = p.describe_error(&loc, &denied(), true);
        assert!(text.contains("give the user write access"), "{text}");
        // A local image is said as it is.
        let local = Placed::local(&image);
        let text = local.describe_error(&Location::from(image.as_path()), &denied(), true);
        assert!(
            text.starts_with("cannot create the image /run/rescue/net/"),
            "{text}"
        );
    }
}
