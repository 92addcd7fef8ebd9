//! Where an image named by a [`Location`] is, as a local path: the path itself, or the file on a share
//! mounted for it (`smb://`, `nfs://`), unmounted again when the operation is over.

use std::path::PathBuf;

use anyhow::bail;

use crate::store::remote::{self, Share};
use crate::url::{Location, Scheme};

pub(super) struct Placed {
    pub path: PathBuf,
    pub share: Option<Share>,
}

impl Drop for Placed {
    fn drop(&mut self) {
        if let Some(s) = &self.share {
            // Flushed and unmounted; a share still busy is detached (the kernel finishes it).
            let _ = crate::store::mount::unmount(&s.dir);
        }
    }
}

/// The local path of `loc`; a share is mounted read-write when `write`.
pub(super) fn place(loc: &Location, write: bool) -> anyhow::Result<Placed> {
    match loc {
        Location::Local(p) => Ok(Placed {
            path: p.clone(),
            share: None,
        }),
        Location::Remote(url) => match url.scheme {
            // NFS is mounted by `store::remote` too, but is not offered until its end-to-end test
            // against a real server (nfs-ganesha) is in place.
            Scheme::Nfs => bail!(
                "{url}: images on NFS shares are not supported yet; use an SMB share or a local drive"
            ),
            Scheme::Smb => {
                let share = remote::mount(url, None, write)?;
                Ok(Placed {
                    path: share.image.clone(),
                    share: Some(share),
                })
            }
            Scheme::Http | Scheme::Https | Scheme::Sftp => bail!(
                "{url}: images cannot be read over {} yet; copy the image to a local drive or an SMB or \
                 NFS share",
                url.scheme.name()
            ),
        },
    }
}
