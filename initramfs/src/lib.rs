//! Everything that turns a stock Debian kernel package into our initramfs, on the build host:
//! unpacking the `.deb` ([`deb`]), reading each module's `.modinfo` and computing the dependency, alias
//! and softdep tables the package does not ship ([`modinfo`], [`depmod`]), choosing the module set by
//! rules ([`select`]), and writing a reproducible, compressed cpio newc archive ([`cpio`], [`build`]).
//!
//! [`index`] is the module index PID 1 reads and [`programs`] the place of the Debian userspace programs
//! (ntfs-3g) in the archive; they are the only parts built without the `build` feature, so the static
//! `rescue` binary does not carry the archive and compression code.

pub mod index;
pub mod programs;

#[cfg(feature = "build")]
pub mod build;
#[cfg(feature = "build")]
pub mod cpio;
#[cfg(feature = "build")]
pub mod deb;
#[cfg(feature = "build")]
pub mod depmod;
#[cfg(feature = "build")]
pub mod modinfo;
#[cfg(feature = "build")]
pub mod select;

#[cfg(test)]
#[cfg(feature = "build")]
mod testutil;
