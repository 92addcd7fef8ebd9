//! `rescue mount` and `rescue umount`: thin wrappers over `store::mount`.

use std::path::PathBuf;

use crate::store::mount;

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// The device holding the filesystem: a partition (/dev/sdb1), a disk formatted as a whole, or a
    /// selector such as label=RESCUE-DATA (docs/SELECTORS.md).
    pub device: PathBuf,
    /// Where to mount it; created if missing.
    pub dir: PathBuf,
    /// The filesystem type (ext4, vfat, exfat, ...); detected from the device when not given.
    #[arg(long)]
    pub fstype: Option<String>,
    /// Mount read-only: nothing on the device changes.
    #[arg(long)]
    pub read_only: bool,
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// The directory a filesystem is mounted on.
    #[arg(required_unless_present = "all_fuse")]
    pub dir: Option<PathBuf>,
    /// Unmount every FUSE filesystem (NTFS through ntfs-3g), waiting for each program to close its
    /// volume: what PID 1 runs at power off, before it stops every process.
    #[arg(long, hide = true)]
    pub all_fuse: bool,
}

pub fn mount(a: MountArgs) -> anyhow::Result<i32> {
    let msg = mount::mount_at(
        &a.device,
        &a.dir,
        a.fstype.as_deref(),
        a.read_only,
        &super::detect_options(),
    )?;
    eprintln!("{msg}");
    Ok(0)
}

pub fn umount(a: UmountArgs) -> anyhow::Result<i32> {
    if a.all_fuse {
        for line in mount::unmount_fuse_filesystems() {
            eprintln!("rescue: {line}");
        }
        return Ok(0);
    }
    match &a.dir {
        Some(dir) => eprintln!("{}", mount::unmount(dir)?),
        None => anyhow::bail!("name the directory to unmount"),
    }
    Ok(0)
}
