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

use super::backend::{Backend, DirBackend};
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

/// There is no repository where one was looked for (no such folder, or no configuration file in it): a
/// capture may make one there, where anything else fails.
#[derive(Debug)]
pub struct NoRepository(pub String);

impl std::fmt::Display for NoRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoRepository {}

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
    /// Its folder (how it is named in messages, and where its logs go).
    pub root: PathBuf,
    pub backend: Arc<dyn Backend>,
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
        Repo::init_on(Arc::new(DirBackend::new(root)), root, passphrase)
    }

    /// Create a repository in `backend` (named `root` in messages), which must hold none.
    pub fn init_on(
        backend: Arc<dyn Backend>,
        root: &Path,
        passphrase: Option<&str>,
    ) -> anyhow::Result<Repo> {
        if backend.get(CONFIG_FILE)?.is_some() {
            bail!("{} is a repository already", root.display());
        }
        if !backend.list("snapshots/")?.is_empty() || !backend.list("chunks/")?.is_empty() {
            bail!(
                "{} holds snapshots or chunks without a {CONFIG_FILE}: it is not empty",
                root.display()
            );
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
        let made = backend
            .put_new(CONFIG_FILE, text.as_bytes(), true)
            .with_context(|| format!("creating {}", root.join(CONFIG_FILE).display()))?;
        if !made {
            bail!("{} is a repository already", root.display());
        }
        Ok(Repo {
            root: root.to_path_buf(),
            backend,
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

    /// Open the repository in the folder `root` (sealed, if encrypted, until [`Self::unlock`]).
    pub fn open(root: &Path) -> anyhow::Result<Repo> {
        let repo = Repo::open_on(Arc::new(DirBackend::new(root)), root)?;
        for d in ["chunks", "snapshots", "tmp"] {
            if !root.join(d).is_dir() {
                bail!(
                    "the repository {} has no {d} folder: it is damaged or incomplete",
                    root.display()
                );
            }
        }
        Ok(repo)
    }

    /// Open the repository in `backend` (named `root` in messages).
    pub fn open_on(backend: Arc<dyn Backend>, root: &Path) -> anyhow::Result<Repo> {
        let file = root.join(CONFIG_FILE);
        let text = match backend.get(CONFIG_FILE) {
            Ok(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
            Ok(None) => {
                if backend.local_path(CONFIG_FILE).is_none() || root.is_dir() {
                    return Err(NoRepository(format!(
                        "{} is not a repository (it has no {CONFIG_FILE} file); make one with \
                         `rescue repo init {}`",
                        root.display(),
                        root.display()
                    ))
                    .into());
                }
                return Err(NoRepository(format!(
                    "there is no repository at {} (no such folder); make one with `rescue repo init \
                     {}`",
                    root.display(),
                    root.display()
                ))
                .into());
            }
            Err(e) => return Err(anyhow::Error::new(e)),
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
        Ok(Repo {
            root: root.to_path_buf(),
            backend,
            config,
            keys: None,
        })
    }

    pub fn chunks(&self) -> ChunkStore {
        ChunkStore::new(self.backend.clone(), self.keys.clone())
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}
