//! A repository on a directory: its `rescue-repo` file (what it is, its version, how it chunks), its
//! folders, creating one and opening one.
//!
//! ```text
//! REPO/rescue-repo                 this file (JSON), written last by `init`
//! REPO/chunks/ab/ab12…(64 hex)     chunk objects, named by their hash
//! REPO/snapshots/<id>.snap         snapshot files
//! REPO/tmp/                        files being written (a crash leaves them; nothing refers to them)
//! REPO/logs/                       the log and result files of captures into it and restores from it
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use super::chunks::ChunkStore;
use super::crypt::{KeySlot, Keys};

/// The file that makes a directory a repository.
pub const CONFIG_FILE: &str = "rescue-repo";
/// Its `format` value.
pub const REPO_FORMAT: &str = "rescue-repository";
/// The layout version this code writes and reads (docs/REPOSITORY.md).
pub const REPO_VERSION: u32 = 1;
/// Chunk size of new repositories: half the image default, so that a changed region costs less to
/// capture again (measured in README).
pub const DEFAULT_REPO_CHUNK_SIZE: u32 = 4 << 20;

/// What `rescue-repo` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    /// 32 hex digits, random; names the repository in logs.
    pub id: String,
    pub created_unix: u64,
    /// Nominal chunk size every capture into it uses: a region unchanged since the last capture then
    /// gives the same chunks again.
    pub chunk_size: u32,
    /// `none`, or [`super::crypt::SCHEME`] with the wrapped master key in `key`.
    pub encryption: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeySlot>,
}

/// An opened repository (and, once unlocked, an encrypted one's master key).
#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
    pub config: RepoConfig,
    pub keys: Option<Arc<Keys>>,
}

impl Repo {
    /// Create a repository in `root`, which must not exist or be an empty folder; encrypted with a new
    /// master key wrapped by `passphrase` when one is given.
    pub fn init(root: &Path, passphrase: Option<&str>) -> anyhow::Result<Repo> {
        if root.exists() {
            let mut entries = std::fs::read_dir(root)
                .with_context(|| format!("{} exists and is not a folder", root.display()))?;
            if root.join(CONFIG_FILE).exists() {
                bail!("{} is a repository already", root.display());
            }
            if entries.next().is_some() {
                bail!(
                    "{} is a folder with files in it; a repository is made in a new or empty folder",
                    root.display()
                );
            }
        }
        for d in ["chunks", "snapshots", "tmp", "logs"] {
            std::fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating {}", root.join(d).display()))?;
        }
        let mut config = RepoConfig {
            format: REPO_FORMAT.into(),
            version: REPO_VERSION,
            id: crate::image::ImageId::generate().to_string(),
            created_unix: crate::units::now_unix(),
            chunk_size: DEFAULT_REPO_CHUNK_SIZE,
            encryption: "none".into(),
            key: None,
        };
        let mut keys = None;
        if let Some(p) = passphrase {
            if p.is_empty() {
                bail!("an empty passphrase protects nothing; give one");
            }
            let (k, slot) = Keys::create(p, &config.id)?;
            config.encryption = super::crypt::SCHEME.into();
            config.key = Some(slot);
            keys = Some(Arc::new(k));
        }
        let text = serde_json::to_string_pretty(&config)? + "\n";
        let tmp = root.join("tmp").join(CONFIG_FILE);
        write_synced(&tmp, text.as_bytes())?;
        crate::sys::rename_noreplace(&tmp, &root.join(CONFIG_FILE))
            .or_else(|e| {
                if e.raw_os_error() == Some(libc::EINVAL) && !root.join(CONFIG_FILE).exists() {
                    std::fs::rename(&tmp, root.join(CONFIG_FILE))
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("creating {}", root.join(CONFIG_FILE).display()))?;
        sync_dir(root);
        Ok(Repo {
            root: root.to_path_buf(),
            config,
            keys,
        })
    }

    /// Whether its data is encrypted (then [`Self::unlock`] before reading or writing it).
    pub fn encrypted(&self) -> bool {
        self.config.key.is_some()
    }

    /// An encrypted repository's master key, from its passphrase; a plain repository needs none. Fails,
    /// before anything is read or written, without the right passphrase.
    pub fn unlock(&mut self, passphrase: Option<&str>) -> anyhow::Result<()> {
        let Some(slot) = &self.config.key else {
            return Ok(());
        };
        let Some(p) = passphrase else {
            bail!(
                "the repository {} is encrypted: give its passphrase (--passphrase-file FILE, the \
                 RESCUE_PASSPHRASE variable, or type it when asked)",
                self.root.display()
            );
        };
        match Keys::unlock(p, slot, &self.config.id)? {
            Some(k) => {
                self.keys = Some(Arc::new(k));
                Ok(())
            }
            None => bail!(
                "wrong passphrase for the repository {}; nothing was read or written",
                self.root.display()
            ),
        }
    }

    /// Open the repository in `root`.
    pub fn open(root: &Path) -> anyhow::Result<Repo> {
        let file = root.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if root.is_dir() {
                    bail!(
                        "{} is not a repository (it has no {CONFIG_FILE} file); make one with \
                         `rescue repo init {}`",
                        root.display(),
                        root.display()
                    );
                }
                bail!(
                    "there is no repository at {} (no such folder); make one with `rescue repo init \
                     {}`",
                    root.display(),
                    root.display()
                );
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", file.display())))
            }
        };
        let config: RepoConfig = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged or not a repository's (it is not the JSON this program writes)",
                file.display()
            )
        })?;
        if config.format != REPO_FORMAT {
            bail!(
                "{} says format `{}`, not `{REPO_FORMAT}`: this is not a rescue repository",
                file.display(),
                config.format
            );
        }
        if config.version != REPO_VERSION {
            bail!(
                "the repository {} has layout version {}; this program reads version {REPO_VERSION}. \
                 Use the rescue version that made it",
                root.display(),
                config.version
            );
        }
        let known = match (config.encryption.as_str(), &config.key) {
            ("none", None) => true,
            (s, Some(_)) => s == super::crypt::SCHEME,
            _ => false,
        };
        if !known {
            bail!(
                "the repository {} is encrypted with `{}`{}, which this program cannot read",
                root.display(),
                config.encryption,
                if config.key.is_none() {
                    " and has no key"
                } else {
                    ""
                }
            );
        }
        if !(crate::image::MIN_CHUNK_SIZE..=crate::image::MAX_CHUNK_SIZE)
            .contains(&config.chunk_size)
        {
            bail!(
                "{} gives a chunk size of {} bytes, outside {}..={}: the file is damaged",
                file.display(),
                config.chunk_size,
                crate::image::MIN_CHUNK_SIZE,
                crate::image::MAX_CHUNK_SIZE
            );
        }
        for d in ["chunks", "snapshots", "tmp"] {
            if !root.join(d).is_dir() {
                bail!(
                    "the repository {} has no {d} folder: it is damaged or incomplete",
                    root.display()
                );
            }
        }
        Ok(Repo {
            root: root.to_path_buf(),
            config,
            keys: None,
        })
    }

    pub fn chunks(&self) -> ChunkStore {
        ChunkStore::new(
            self.root.join("chunks"),
            self.root.join("tmp"),
            self.keys.clone(),
        )
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// Write `data` to `path` (created or replaced) and flush it to the device.
pub(super) fn write_synced(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// Flush a folder's entries (new names in it) to the device; best effort, as some file systems refuse.
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
