//! `serve`: an image's disk (or one partition) as an NBD export ([`crate::nbd`]), read-only, or writable
//! through a copy-on-write overlay file that leaves the image untouched. Any image the program reads:
//! ours (every chunk checked as it is read), a repository snapshot, a virtual machine's disk.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;

use super::Control;
use crate::nbd;
use crate::url::Location;

/// What to serve, and where.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServeSpec {
    pub image: Location,
    /// Serve this partition of the image alone (with `as_disk`, the disk with only it).
    pub partition: Option<u32>,
    pub as_disk: bool,
    /// A Unix socket (the default, at [`default_socket`]) or a TCP `ADDR:PORT`.
    pub socket: Option<PathBuf>,
    pub listen: Option<String>,
    /// Listen on a TCP address beyond this machine.
    pub allow_remote: bool,
    /// Make the export writable, its writes kept in this new file.
    pub overlay: Option<PathBuf>,
}

/// A server that is up: where clients connect, and what to tell the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Serving {
    pub url: String,
    /// What is served ("the disk", "partition 2") and its size.
    pub what: String,
    pub size: u64,
    pub writable: bool,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

/// The socket a server listens on when none is named: in the temporary folder, named after the image.
pub fn default_socket(image: &Location) -> PathBuf {
    let name = match image {
        Location::Local(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()),
        Location::Remote(u) => u.path.rsplit('/').next().map(str::to_string),
        Location::Snapshot(s) => Some(s.name.clone()),
    }
    .filter(|n| !n.is_empty())
    .unwrap_or_else(|| "image".into());
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    std::env::temp_dir().join(format!("rescue-{safe}.nbd"))
}

/// The allocation the image's data ranges describe: data where it holds bytes, holes elsewhere.
fn allocation(data: Vec<std::ops::Range<u64>>, size: u64) -> Arc<dyn nbd::Allocation> {
    Arc::new(
        move |offset: u64, _len: u64| -> std::io::Result<Vec<nbd::Extent>> {
            let i = data.partition_point(|r| r.end <= offset);
            let (len, hole) = match data.get(i) {
                Some(r) if r.start <= offset => (r.end - offset, false),
                Some(r) => (r.start - offset, true),
                None => (size.saturating_sub(offset), true),
            };
            Ok(vec![nbd::Extent {
                len: len.max(1),
                hole,
                zero: hole,
            }])
        },
    )
}

/// Serve as `spec` says until `ctl.cancel` is set (Ctrl-C); `ready` hears where, once clients can
/// connect.
pub fn serve(
    spec: &ServeSpec,
    net: &super::NetOptions,
    ctl: Control,
    ready: impl FnOnce(&Serving),
) -> anyhow::Result<()> {
    let (placed, o) = super::disk::open(
        &spec.image,
        spec.partition,
        spec.as_disk,
        super::disk::Reading::Serving,
        net,
    )?;
    let listen = match (&spec.listen, &spec.socket) {
        (Some(_), Some(_)) => anyhow::bail!("name a socket or an address to listen on, not both"),
        (Some(addr), None) => nbd::Listen::Tcp(nbd::parse_tcp(addr).map_err(anyhow::Error::msg)?),
        (None, socket) => nbd::Listen::Unix(
            socket
                .clone()
                .unwrap_or_else(|| default_socket(&spec.image)),
        ),
    };
    let name = placed
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let export = nbd::Export {
        name,
        description: format!("{} of {}", o.what, placed.path.display()),
        disk: o.disk.clone(),
        allocation: Some(allocation(o.data.clone(), o.size)),
    };
    let server = nbd::Server::start(nbd::Config {
        export,
        listen,
        allow_remote: spec.allow_remote,
        overlay: spec.overlay.clone(),
        log: nbd::stderr_log(),
    })
    .with_context(|| format!("serving {}", placed.path.display()))?;
    ready(&Serving {
        url: server.url().to_string(),
        what: o.what.clone(),
        size: o.size,
        writable: spec.overlay.is_some(),
        warnings: server.warnings().to_vec(),
        notes: o.notes.clone(),
    });
    server
        .serve_until(|| ctl.cancel.load(Ordering::Relaxed))
        .context("stopping the NBD server")?;
    drop(placed);
    Ok(())
}
