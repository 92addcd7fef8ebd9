//! The builder: gets the kernel package, builds the static `rescue`, assembles the initramfs (and later the
//! stick image), and boots the result in QEMU. The binary is a thin CLI over these modules; `qemu-tests`
//! uses them too.

pub mod artifacts;
pub mod fixtures;
pub mod image;
pub mod kernel;
pub mod qemu;
pub mod static_build;
