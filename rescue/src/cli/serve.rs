//! `rescue serve`: an image's disk (or one partition) as an NBD export, for QEMU, `qemu-img`, `nbdcopy`,
//! `nbd-client` and the like (docs/NBD.md). Runs until Ctrl-C.

use std::path::PathBuf;

use serde_json::json;

use crate::ops;
use crate::units::human_size;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The image, snapshot (REPO::NAME[@TIME]) or virtual machine disk to serve.
    pub image: PathBuf,
    /// Serve this partition of the image alone.
    #[arg(long)]
    pub partition: Option<u32>,
    /// An image of one partition: serve the disk around it (its partition table, the partition at its
    /// place) instead of the partition alone.
    #[arg(long)]
    pub as_disk: bool,
    /// The Unix socket to listen on (default: rescue-NAME.nbd in the temporary folder).
    #[arg(long, conflicts_with = "listen")]
    pub socket: Option<PathBuf>,
    /// Listen on TCP instead: ADDR:PORT, or ADDR for port 10809. Loopback unless --allow-remote.
    #[arg(long)]
    pub listen: Option<String>,
    /// Let --listen name an address other machines can reach (NBD has no password nor encryption).
    #[arg(long, requires = "listen")]
    pub allow_remote: bool,
    /// Make the export writable, every write kept in this new file; the image is never written.
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// Print where the server listens as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub net: super::imaging::NetArgs,
}

/// `rescue serve`: serve until interrupted.
pub fn run(a: ServeArgs) -> anyhow::Result<i32> {
    let image = ops::Location::parse(&a.image.to_string_lossy())?;
    let net = a.net.options(&image)?;
    let spec = ops::ServeSpec {
        image,
        partition: a.partition,
        as_disk: a.as_disk,
        socket: a.socket.clone(),
        listen: a.listen.clone(),
        allow_remote: a.allow_remote,
        overlay: a.overlay.clone(),
    };
    let ctl = ops::Control {
        cancel: ops::cancel_on_signals(),
        ..ops::Control::default()
    };
    let json = a.json;
    ops::serve(&spec, &net, ctl, |s| {
        for w in &s.warnings {
            eprintln!("rescue: warning: {w}");
        }
        for n in &s.notes {
            eprintln!("rescue: note: {n}");
        }
        if json {
            println!(
                "{}",
                json!({"url": s.url, "serving": s.what, "size": s.size, "writable": s.writable})
            );
        } else {
            eprintln!(
                "serving {} ({}, {}) at {}",
                s.what,
                human_size(s.size),
                if s.writable {
                    "writable through the overlay"
                } else {
                    "read-only"
                },
                s.url
            );
            eprintln!("for example: qemu-img info '{}'; Ctrl-C stops", s.url);
        }
        // The line is what a script waits for: out before the first client.
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })?;
    eprintln!("rescue: server stopped");
    Ok(0)
}
