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
    pub dir: PathBuf,
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
    eprintln!("{}", mount::unmount(&a.dir)?);
    Ok(0)
}
