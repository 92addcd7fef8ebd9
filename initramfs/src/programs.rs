//! Where the few Debian userspace programs the rescue system carries live in the initramfs: today
//! ntfs-3g (and its probe), because the kernel has no NTFS driver and an NTFS writer of our own would
//! risk people's data. The builder writes this layout, `rescue` runs the programs from it; PID 1 stays the
//! static `rescue`.
//!
//! The programs are dynamically linked against Debian's glibc. They run through the loader named
//! explicitly with `--library-path`, so nothing is placed in `/lib`, `/lib64` or an `ld.so.cache`, and no
//! other program in the initramfs can pick up these libraries by accident:
//!
//! ```text
//! /usr/lib/rescue/ntfs-3g/bin/ntfs-3g            from the ntfs-3g package
//! /usr/lib/rescue/ntfs-3g/bin/ntfs-3g.probe      from the ntfs-3g package
//! /usr/lib/rescue/ntfs-3g/lib/libntfs-3g.so.89   from libntfs-3g89 (the same version)
//! /usr/lib/rescue/ntfs-3g/lib/libc.so.6          from libc6
//! /usr/lib/rescue/ntfs-3g/lib/ld-linux-x86-64.so.2  from libc6
//! /usr/lib/rescue/ntfs-3g/PACKAGES               the package files they came from
//! ```

/// The directory (absolute, as seen by the running rescue system).
pub const NTFS3G_DIR: &str = "/usr/lib/rescue/ntfs-3g";
/// The programs, relative to [`NTFS3G_DIR`].
pub const NTFS3G: &str = "bin/ntfs-3g";
pub const NTFS3G_PROBE: &str = "bin/ntfs-3g.probe";
/// The libraries' directory, relative to [`NTFS3G_DIR`].
pub const LIB_DIR: &str = "lib";
/// glibc's dynamic loader, relative to [`NTFS3G_DIR`].
pub const LOADER: &str = "lib/ld-linux-x86-64.so.2";
/// Which package files the programs came from, relative to [`NTFS3G_DIR`].
pub const PACKAGES: &str = "PACKAGES";
