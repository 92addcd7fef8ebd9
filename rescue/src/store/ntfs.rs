//! NTFS drives as stores, through ntfs-3g over the kernel's FUSE: the rescue kernel has no NTFS driver,
//! and writing NTFS is left to the proven implementation (docs/DEPENDENCIES.md). In the rescue system
//! the programs are the ones the builder put into the initramfs ([`initramfs::programs`]), run through
//! their own loader; on a host, `ntfs-3g` and `ntfs-3g.probe` from `PATH` (Debian's ntfs-3g package).
//!
//! A read-write mount is only made after `ntfs-3g.probe --readwrite` says the volume may be written:
//! ntfs-3g itself silently falls back to read-only on a hibernated volume, and with its default
//! `recover` option it would throw away the journal of a volume Windows did not close. The probe exits
//! with ntfs-3g's volume status codes (`include/ntfs-3g/volume.h`: 14 hibernated, also for Windows'
//! Fast Startup; 15 unclean journal), which become [`NtfsError`]s that say what to do. Mounts use
//! `norecover`, so a volume that changed state in between is refused rather than repaired.
//!
//! Unmounting a FUSE filesystem returns before the ntfs-3g process has finished closing the volume
//! (writing its last metadata, marking it clean), so [`wait_for_exit`] waits for that process.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use initramfs::programs as layout;

/// The type `store::mount` mounts NTFS as: not a kernel driver, the ntfs-3g program.
pub const FSTYPE: &str = "ntfs-3g";

/// How long an unmounted volume's ntfs-3g may take to write its last metadata and exit.
pub const EXIT_WAIT: Duration = Duration::from_secs(120);

const READ_ONLY_HINT: &str =
    "Images on it can still be read from it mounted read-only (`rescue mount --read-only`)";

#[derive(Debug, thiserror::Error)]
pub enum NtfsError {
    #[error(
        "{device} cannot be written: Windows was hibernated or shut down with Fast Startup, and keeps \
         this drive's state to resume from; writing now could destroy files when Windows resumes. Start \
         Windows and shut it down fully (turn off Fast Startup in Control Panel > Power Options > Choose \
         what the power buttons do, or run `shutdown /s /f /t 0`), then try again. {READ_ONLY_HINT}"
    )]
    Hibernated { device: String },
    #[error(
        "{device} cannot be written: it was not closed cleanly (unplugged or switched off while in use) \
         and its journal holds changes not yet in place. Connect it to Windows and let Windows check it \
         (`chkdsk /f X:`), then try again. {READ_ONLY_HINT}"
    )]
    Unclean { device: String },
    #[error("{device} does not hold a valid NTFS filesystem; `rescue disks` shows what it holds")]
    NotNtfs { device: String },
    #[error("the NTFS filesystem on {device} is damaged ({detail}); repair it with `chkdsk /f` on Windows first")]
    Corrupt { device: String, detail: String },
    #[error("{device} is in use (already mounted, or held by another program); `rescue umount` it first")]
    InUse { device: String },
    #[error(
        "{device} is part of a Windows software RAID (dynamic disk), which ntfs-3g cannot mount"
    )]
    Raid { device: String },
    #[error("mounting {device} with ntfs-3g needs root (run as root, or with sudo)")]
    Privilege { device: String },
    #[error(
        "ntfs-3g could not use FUSE for {device} ({detail}): /dev/fuse is missing or the fuse module \
         could not be loaded"
    )]
    Fuse { device: String, detail: String },
    #[error("ntfs-3g failed on {device} (exit status {code}): {detail}")]
    Failed {
        device: String,
        code: i32,
        detail: String,
    },
    #[error("ntfs-3g was killed ({status}) while working on {device}")]
    Killed { device: String, status: String },
    #[error("cannot run {program} ({advice})")]
    Run {
        program: String,
        source: io::Error,
        advice: &'static str,
    },
    #[error(
        "ntfs-3g mounted {device} read-only although writing was asked (the volume changed state); it \
         was unmounted again. Try again, or use `rescue mount --read-only` to read images from it"
    )]
    NotWritable { device: String },
    #[error(
        "the ntfs-3g process (pid {pid}) of {dir} has not finished {secs} s after the unmount: it may \
         still be writing to the drive. Do not unplug it yet"
    )]
    StillRunning { pid: i32, dir: PathBuf, secs: u64 },
}

impl NtfsError {
    /// The volume can be mounted read-only although not for writing (Windows holds it).
    pub fn readable_only(&self) -> bool {
        matches!(
            self,
            NtfsError::Hibernated { .. } | NtfsError::Unclean { .. }
        )
    }
}

/// ntfs-3g's exit status (`ntfs_volume_status`) as an error; `detail` is what it printed.
pub fn status_error(code: i32, device: &str, detail: &str) -> NtfsError {
    let device = device.to_string();
    let detail = if detail.is_empty() {
        "no message".to_string()
    } else {
        detail.to_string()
    };
    match code {
        12 => NtfsError::NotNtfs { device },
        13 => NtfsError::Corrupt { device, detail },
        14 => NtfsError::Hibernated { device },
        15 => NtfsError::Unclean { device },
        16 => NtfsError::InUse { device },
        17 => NtfsError::Raid { device },
        19 => NtfsError::Privilege { device },
        21 => NtfsError::Fuse { device, detail },
        code => NtfsError::Failed {
            device,
            code,
            detail,
        },
    }
}

/// Where ntfs-3g is: the copy in the initramfs (run through its own loader) or the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Programs {
    /// The initramfs directory, when the programs come from there.
    bundled: Option<PathBuf>,
}

impl Programs {
    /// The initramfs copy when this is the rescue system, else the host's from `PATH`.
    pub fn find() -> Programs {
        let dir = Path::new(layout::NTFS3G_DIR);
        Programs {
            bundled: dir
                .join(layout::NTFS3G)
                .is_file()
                .then(|| dir.to_path_buf()),
        }
    }

    /// A command running `program` (`layout::NTFS3G` or `layout::NTFS3G_PROBE`).
    fn command(&self, program: &str) -> Command {
        let name = Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match &self.bundled {
            // The loader named explicitly, with the libraries beside it: nothing in /lib is needed.
            Some(dir) => {
                let mut c = Command::new(dir.join(layout::LOADER));
                c.arg("--library-path")
                    .arg(dir.join(layout::LIB_DIR))
                    .arg("--argv0")
                    .arg(&name)
                    .arg(dir.join(program));
                c
            }
            None => Command::new(name),
        }
    }

    fn advice(&self) -> &'static str {
        if self.bundled.is_some() {
            "the rescue system's copy of ntfs-3g is damaged; rebuild the stick"
        } else {
            "install ntfs-3g with `apt-get install ntfs-3g`"
        }
    }
}

/// Run `cmd` to its end; its exit status and what it printed on stderr.
fn run(programs: &Programs, mut cmd: Command, device: &str) -> Result<(i32, String), NtfsError> {
    let program = format!("{:?}", cmd.get_program());
    // stdout is not read: ntfs-3g's daemon keeps no copy of our pipes (it detaches to /dev/null).
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| NtfsError::Run {
            program: program.trim_matches('"').to_string(),
            source,
            advice: programs.advice(),
        })?;
    let detail = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match out.status.code() {
        Some(code) => Ok((code, detail)),
        None => Err(NtfsError::Killed {
            device: device.to_string(),
            status: out.status.to_string(),
        }),
    }
}

/// Whether the NTFS on `device` may be written (not hibernated, journal clean, not damaged).
pub fn probe_writable(programs: &Programs, device: &Path) -> Result<(), NtfsError> {
    let dev = device.display().to_string();
    let mut cmd = programs.command(layout::NTFS3G_PROBE);
    cmd.arg("--readwrite").arg(device);
    match run(programs, cmd, &dev)? {
        (0, _) => Ok(()),
        (code, detail) => Err(status_error(code, &dev, &detail)),
    }
}

/// The `-o` options of a mount: never repair a journal (that is Windows' job), no set-id programs or
/// device nodes from the drive, and writes passed on in large pieces.
pub fn mount_options(read_only: bool) -> String {
    let mode = if read_only { "ro" } else { "rw" };
    format!("{mode},norecover,nosuid,nodev,big_writes")
}

/// Mount the NTFS on `device` at the directory `dir`: read-write only after the probe allowed it.
/// `is_read_only(dir)` reads the live mount table, to catch ntfs-3g's own fallback to read-only.
pub fn mount(
    device: &Path,
    dir: &Path,
    read_only: bool,
    is_read_only: impl Fn(&Path) -> Option<bool>,
) -> Result<(), NtfsError> {
    let programs = Programs::find();
    let dev = device.display().to_string();
    if !read_only {
        probe_writable(&programs, device)?;
    }
    let mut cmd = programs.command(layout::NTFS3G);
    cmd.arg(device)
        .arg(dir)
        .arg("-o")
        .arg(mount_options(read_only));
    match run(&programs, cmd, &dev)? {
        (0, _) => {}
        (code, detail) => return Err(status_error(code, &dev, &detail)),
    }
    if !read_only && is_read_only(dir) == Some(true) {
        let daemon = daemon_of(dir);
        let _ = nix::mount::umount2(dir, nix::mount::MntFlags::empty());
        if let Some(pid) = daemon {
            let _ = wait_for_exit(pid, dir, EXIT_WAIT);
        }
        return Err(NtfsError::NotWritable { device: dev });
    }
    Ok(())
}

/// Whether an mountinfo filesystem type is served by a FUSE program (ntfs-3g on a block device is
/// `fuseblk`).
pub fn is_fuse_type(fstype: &str) -> bool {
    fstype == "fuseblk" || fstype == "fuse" || fstype.starts_with("fuse.")
}

/// The process serving the ntfs-3g mount on `dir`: the one whose command line has `dir` as an argument
/// and runs ntfs-3g (directly, or through the loader).
pub fn daemon_of(dir: &Path) -> Option<i32> {
    let procs = std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let raw = std::fs::read(e.path().join("cmdline")).ok()?;
        let args = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some((pid, args))
    });
    daemon_in(procs, &dir.to_string_lossy())
}

/// [`daemon_of`] over (pid, arguments) pairs.
fn daemon_in(procs: impl Iterator<Item = (i32, Vec<String>)>, dir: &str) -> Option<i32> {
    let runs_ntfs3g = |args: &[String]| {
        args.iter().take(6).any(|a| {
            Path::new(a)
                .file_name()
                .is_some_and(|n| n == "ntfs-3g" || n == "mount.ntfs-3g" || n == "mount.ntfs")
        })
    };
    procs
        .filter(|(_, args)| runs_ntfs3g(args) && args.iter().any(|a| a == dir))
        .map(|(pid, _)| pid)
        .min()
}

/// Whether process `pid` is gone (or a zombie: finished, waiting for its parent to collect it).
fn has_exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Wait until the ntfs-3g process `pid` of the unmounted `dir` has exited: only then is everything it
/// had to write on the drive.
pub fn wait_for_exit(pid: i32, dir: &Path, limit: Duration) -> Result<(), NtfsError> {
    let start = Instant::now();
    while !has_exited(pid) {
        if start.elapsed() >= limit {
            return Err(NtfsError::StillRunning {
                pid,
                dir: dir.to_path_buf(),
                secs: limit.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_reasons_with_what_to_do() {
        let e = status_error(14, "/dev/sdb1", "Windows is hibernated, refused to mount.");
        assert!(e.readable_only());
        let m = e.to_string();
        assert!(m.contains("/dev/sdb1") && m.contains("Fast Startup"), "{m}");
        assert!(
            m.contains("shutdown /s /f /t 0") && m.contains("read-only"),
            "{m}"
        );
        let e = status_error(15, "/dev/sdb1", "");
        assert!(e.readable_only());
        assert!(e.to_string().contains("chkdsk"), "{e}");
        assert!(matches!(
            status_error(12, "/dev/sdb1", ""),
            NtfsError::NotNtfs { .. }
        ));
        assert!(!status_error(13, "/dev/sdb1", "x").readable_only());
        let e = status_error(99, "/dev/sdb1", "");
        assert!(
            e.to_string().contains("(exit status 99): no message"),
            "{e}"
        );
    }

    #[test]
    fn options_never_repair_and_keep_modes_apart() {
        assert!(mount_options(true).starts_with("ro,"));
        assert!(mount_options(false).starts_with("rw,"));
        assert!(mount_options(false).contains("norecover"));
        assert!(!mount_options(false).contains("remove_hiberfile"));
    }

    #[test]
    fn the_daemon_is_found_by_its_mount_point() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let procs = vec![
            (10, args(&["/bin/sh", "/mnt/a"])),
            (
                42,
                args(&[
                    "/usr/lib/rescue/ntfs-3g/lib/ld-linux-x86-64.so.2",
                    "--library-path",
                    "/usr/lib/rescue/ntfs-3g/lib",
                    "--argv0",
                    "ntfs-3g",
                    "/usr/lib/rescue/ntfs-3g/bin/ntfs-3g",
                    "/dev/vdb1",
                    "/run/rescue/mnt/vdb1",
                    "-o",
                    "rw",
                ]),
            ),
            (50, args(&["ntfs-3g", "/dev/loop0", "/tmp/m", "-o", "rw"])),
        ];
        assert_eq!(
            daemon_in(procs.clone().into_iter(), "/run/rescue/mnt/vdb1"),
            Some(42)
        );
        assert_eq!(daemon_in(procs.clone().into_iter(), "/tmp/m"), Some(50));
        assert_eq!(daemon_in(procs.into_iter(), "/mnt/a"), None);
    }

    #[test]
    fn fuse_types() {
        assert!(is_fuse_type("fuseblk") && is_fuse_type("fuse.sshfs"));
        assert!(!is_fuse_type("ext4"));
    }

    #[test]
    fn a_missing_process_has_exited() {
        assert!(has_exited(i32::MAX));
        assert!(!has_exited(std::process::id() as i32));
    }
}
