//! The rescue environment's program: PID 1 on the stick, and a CLI on an ordinary Linux host.
//!
//! Data flows detect → plan → engine → store; the TUI and the CLI are thin front ends over the same API.
//! Modules, one concept each:
//! - [`sys`]: the only place with raw syscalls, ioctls and `unsafe`, behind safe functions.
//! - [`init`]: PID 1 duties (mounts, console, supervisor, power off).
//! - [`hw`]: kernel modules (index, coldplug, hotplug uevents, the `/sbin/modprobe` helper).
//! - [`detect`]: block devices, partition tables and filesystems, read-only.
//! - [`engine`]: capture, restore, verify and clone pipelines, threads, progress events.
//! - [`plan`]: pure decisions: what a capture reads, where a restore writes, every safety refusal.
//! - [`fs`]: which bytes of a filesystem are in use (what capture must read).
//! - [`image`]: the image file format: writer, reader, index.
//! - [`cli`]: the command-line front end.

pub mod cli;
pub mod detect;
pub mod engine;
pub mod fs;
pub mod hw;
pub mod image;
pub mod init;
pub mod job;
pub mod ops;
pub mod plan;
pub mod store;
pub mod sys;
pub mod tui;
