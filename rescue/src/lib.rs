//! The rescue environment's program: PID 1 on the stick, and a CLI on an ordinary Linux host.
//!
//! Data flows detect → plan → engine → store; the CLI, the TUI and jobs are thin front ends over `ops`.
//! Modules, one concept each:
//! - [`units`]: sizes, JSON names and dates as people read them (the bottom layer).
//! - [`url`]: image locations as URLs, and showing them without their password.
//! - [`sys`]: the only place with raw syscalls, ioctls and `unsafe`, behind safe functions (also signal
//!   handling and the file a second Ctrl-C removes).
//! - [`init`]: PID 1 duties (mounts, console, supervisor, power off).
//! - [`hw`]: kernel modules (index, coldplug, hotplug uevents, the `/sbin/modprobe` helper).
//! - [`net`]: network links, addresses (DHCP, static), name resolution.
//! - [`detect`]: block devices, partition tables and filesystems, read-only; selectors.
//! - [`fs`]: which bytes of a filesystem are in use (what capture must read).
//! - [`partclone`]: partclone's image streams (what Clonezilla stores per partition), read and checked.
//! - [`clonezilla`]: Clonezilla's image directories (tables, partitions, partclone pieces), read.
//! - [`nbd`]: a disk served over the Network Block Device protocol, read-only or through an overlay.
//! - [`image`]: the image file format: writer, reader, index, verify.
//! - [`plan`]: pure decisions: what a capture reads, where a restore writes, every safety refusal.
//! - [`engine`]: capture, restore, verify and clone pipelines, threads, progress events.
//! - [`store`]: where images live: usable filesystems, mounting (ntfs-3g for NTFS), growing the stick.
//! - [`ops`]: whole operations from paths to results, for every front end.
//! - [`job`]: unattended jobs (docs/JOBS.md).
//! - [`tui`]: the full-screen interface.
//! - [`cli`]: the command-line front end.

// `unsafe` lives in `sys` only, behind safe functions (each block with a `// SAFETY:` comment).
#![deny(unsafe_code)]

pub mod browse;
pub mod cli;
pub mod clonezilla;
pub mod detect;
pub mod engine;
pub mod fs;
pub mod hw;
pub mod image;
pub mod init;
pub mod job;
pub mod nbd;
pub mod net;
pub mod ops;
pub mod partclone;
pub mod plan;
pub mod repo;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod tui;
pub mod units;
pub mod url;
pub mod vdisk;
