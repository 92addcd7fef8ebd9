//! The builder: gets the kernel package, builds the static `rescue`, assembles the initramfs, the stick
//! image and the network boot files, and boots the result in QEMU. The binary is a thin CLI over these
//! modules; `qemu-tests` uses them too.

/// The stick image library, for callers that inspect what [`image::write_image`] reports.
pub use boot;

pub mod artifacts;
pub mod bootdisk;
pub mod checks;
pub mod firmware;
pub mod fixtures;
pub mod image;
pub mod kernel;
pub mod programs;
pub mod qemu;
pub mod servers;
pub mod static_build;
