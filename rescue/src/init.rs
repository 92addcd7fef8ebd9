//! PID 1 on the rescue stick: mounts the kernel filesystems, takes the console, loads modules (coldplug,
//! then hotplug for the rest of the session), and supervises the front end — the UI, restarting it if it
//! dies, or the commands given as `rescue.cmd=` (separated by a standalone `;`), run in order until one
//! fails. PID 1 itself never exits: the kernel would panic.

pub mod cmdline;

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::hw::{self, uevent, ModuleLoader};
use crate::sys::{self, PowerAction};

/// Exit codes the front-end child uses to ask PID 1 for an action.
pub const EXIT_POWEROFF: i32 = 10;
pub const EXIT_REBOOT: i32 = 11;

/// Lines the test harness looks for on the serial console.
pub const CMD_BEGIN: &str = "@@RESCUE-CMD-BEGIN@@";
/// Exit status of `rescue job --on-stick` when the stick holds no job file: PID 1 then shows the UI.
pub const EXIT_NO_JOB: i32 = 3;
/// The job file on the stick's data partition that runs by itself at boot.
pub const STICK_JOB_FILE: &str = "rescue-job.toml";
pub const CMD_END: &str = "@@RESCUE-CMD-END";
pub const READY: &str = "rescue: ready";

/// Entry point when we are process 1. Never returns.
pub fn run_pid1() -> ! {
    let start = Instant::now();
    loop {
        let r = std::panic::catch_unwind(|| pid1_main(start));
        // Only a bug gets here. Keep the machine alive and reachable: report, then supervise the UI again.
        eprintln!(
            "rescue: PID 1 recovered from an internal error ({r:?}); restarting the front end"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A line from PID 1 on the console; a URL's password in it (a command of `rescue.cmd=`) is hidden.
fn log(msg: &str) {
    eprintln!("rescue: {}", crate::url::redact(msg));
}

fn mount_basics() {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let mounts: [(&str, &str, &str, MsFlags, Option<&str>); 6] = [
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        ("proc", "/proc", "proc", nosuid, None),
        ("sysfs", "/sys", "sysfs", nosuid, None),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "tmpfs",
            "/tmp",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("gid=5,mode=0620,ptmxmode=0666"),
        ),
    ];
    for (src, target, fstype, flags, data) in mounts {
        if let Err(e) = sys::mount_fs(src, target, fstype, flags, data) {
            log(&format!("cannot mount {fstype} on {target}: {e}"));
        }
    }
}

/// efivarfs exists only on UEFI boots and needs its module; ENODEV on BIOS is expected.
fn mount_efivarfs() {
    if Path::new("/sys/firmware/efi").is_dir() {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
        if let Err(e) = sys::mount_fs(
            "efivarfs",
            "/sys/firmware/efi/efivars",
            "efivarfs",
            flags,
            None,
        ) {
            log(&format!("cannot mount efivarfs: {e}"));
        }
    }
}

/// Open the primary console's real tty (the last one in `console/active` is `/dev/console`), make it our
/// controlling terminal and our stdio, and give a serial console that reports 0×0 a usable size.
fn take_console() {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let name = active
        .split_whitespace()
        .last()
        .unwrap_or("console")
        .to_string();
    let path = format!("/dev/{name}");
    let tty = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            log(&format!(
                "cannot open console {path}: {e}; staying on /dev/console"
            ));
            return;
        }
    };
    if let Err(e) = sys::make_controlling_tty(tty.as_fd()) {
        log(&format!("cannot make {path} the controlling terminal: {e}"));
    }
    if let Err(e) = sys::redirect_stdio(tty.as_fd()) {
        log(&format!("cannot redirect stdio to {path}: {e}"));
    }
    match sys::window_size(tty.as_fd()) {
        Ok((0, _)) | Ok((_, 0)) | Err(_) => {
            let _ = sys::set_window_size(tty.as_fd(), 80, 24);
        }
        Ok(_) => {}
    }
    std::env::set_var(
        "TERM",
        if name.starts_with("ttyS") {
            "vt220"
        } else {
            "linux"
        },
    );
}

fn pid1_main(start: Instant) {
    mount_basics();
    take_console();
    std::env::set_var("PATH", "/sbin:/bin");
    std::env::set_var("HOME", "/");
    if let Err(e) = sys::disable_ctrl_alt_del() {
        log(&format!("cannot disable Ctrl-Alt-Del: {e}"));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let verbose = cmdline::flag(&cmdline, "rescue.verbose");

    bring_up_hardware(start);
    mount_efivarfs();

    if !verbose {
        // The UI owns the console from here on; kernel messages stay in the kernel log.
        let _ = sys::set_console_loglevel(1);
    }
    if let Some(net) = cmdline::param(&cmdline, "rescue.net") {
        // Asked for at boot: links come up before any command, job or the UI (a child does the work).
        run_child(&["net".into(), "up".into(), net.into()]);
    }
    match cmdline::param(&cmdline, "rescue.cmd") {
        Some(cmd) => {
            println!("{CMD_BEGIN}");
            let rc = run_commands(&cmdline::split_commands(&cmd));
            println!("\n{CMD_END} rc={rc}@@");
            shutdown(PowerAction::PowerOff);
        }
        None => {
            if let Some(job) = cmdline::param(&cmdline, "rescue.job") {
                // A job named on the command line: a path on the stick's data partition, a URL (a
                // netbooted machine of a fleet), or inline.
                let on_stick = !job.contains('=') && !crate::url::looks_like_url(&job);
                run_job(&job, on_stick, 0);
            } else if cmdline::param(&cmdline, "rescue.stick").is_some() {
                // Booted from the stick: a job file on its data partition runs by itself (mass
                // restore), after a countdown that Enter cancels.
                run_job(STICK_JOB_FILE, true, 10);
            }
            ui_loop()
        }
    }
}

/// Run `rescue job` as a child between the command markers and act on its status: power off or reboot
/// when the job succeeded and asked for it; a failure stays on screen until Enter is pressed.
fn run_job(job: &str, on_stick: bool, countdown: u64) {
    // The child prints the begin marker once it has a job; with no job file on the stick, a normal boot
    // shows no markers.
    let mut args: Vec<OsString> = vec![
        "job".into(),
        job.into(),
        "--apply-after".into(),
        "--markers".into(),
    ];
    if on_stick {
        args.push("--on-stick".into());
    }
    if countdown > 0 {
        args.push("--countdown".into());
        args.push(countdown.to_string().into());
    }
    let rc = run_child(&args);
    if rc != EXIT_NO_JOB {
        println!("\n{CMD_END} rc={rc}@@");
    }
    match rc {
        0 | EXIT_NO_JOB => {}
        EXIT_POWEROFF => shutdown(PowerAction::PowerOff),
        EXIT_REBOOT => shutdown(PowerAction::Reboot),
        _ => {
            log("the job FAILED (see above). Press Enter for the menu.");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
    }
}

fn ui_loop() -> ! {
    loop {
        println!("{READY}");
        match run_child(&[OsString::from("ui")]) {
            EXIT_POWEROFF => shutdown(PowerAction::PowerOff),
            EXIT_REBOOT => shutdown(PowerAction::Reboot),
            rc => {
                log(&format!(
                    "the user interface ended (status {rc}); starting it again"
                ));
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Load the modules every boot needs, then coldplug, then wait until devices stop appearing.
fn bring_up_hardware(start: Instant) {
    let dir = hw::modules_dir(Path::new("/"));
    let loader = match ModuleLoader::open(&dir) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            log(&format!(
                "{}; continuing without loadable modules",
                crate::units::chain(&e)
            ));
            return;
        }
    };
    let socket = sys::UeventSocket::open();
    let activity = match socket {
        Ok(s) => Some(uevent::spawn_listener(s, loader.clone(), |_| {})),
        Err(e) => {
            log(&format!(
                "cannot listen for device events: {e}; hotplugged devices will not be seen"
            ));
            None
        }
    };
    // Storage and USB controllers first: they decide when the disks appear. Filesystems and the other
    // boot modules load meanwhile on their own thread; only the front end waits for them.
    let aliases = uevent::coldplug_aliases(Path::new("/sys"));
    let uefi = Path::new("/sys/firmware/efi").is_dir();
    let boot: Vec<String> = loader
        .index()
        .boot
        .iter()
        .filter(|m| uefi || m.as_str() != "efivarfs")
        .cloned()
        .collect();
    let boot_loader = loader.clone();
    let boot_thread = std::thread::spawn(move || boot_loader.load_all(&boot, 1));
    let report = loader.load_all(&aliases, 2);
    let settled = activity
        .as_ref()
        .map(|a| {
            a.wait_settled(
                Path::new("/sys"),
                Duration::from_millis(300),
                Duration::from_secs(15),
            )
        })
        .unwrap_or(true);
    let detected_ms = start.elapsed().as_millis();
    let boot_report = boot_thread.join().unwrap_or_default();
    for (name, err) in boot_report.failed.iter().chain(&report.failed) {
        log(&format!("module {name}: {err}"));
    }
    let disks = std::fs::read_dir("/sys/block")
        .map(|d| d.count())
        .unwrap_or(0);
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    log(&format!(
        "{} modules loaded ({} at boot, {} for {} devices); all disks detected{} in {} ms since /init started \
         ({} block devices; kernel uptime {} s)",
        loader.loaded().len(),
        boot_report.loaded.len(),
        report.loaded.len(),
        aliases.len(),
        if settled { "" } else { " (timed out waiting for devices)" },
        detected_ms,
        disks,
        uptime.split_whitespace().next().unwrap_or("?"),
    ));
}

/// Run the `rescue.cmd` commands in order, each as its own child, and stop at the first that fails: a
/// capture whose mount failed must not write into the initramfs instead. Returns the failing status, or 0.
fn run_commands(commands: &[Vec<String>]) -> i32 {
    if commands.is_empty() {
        log("rescue.cmd= holds no command; nothing to run (example: rescue.cmd=\"disks --json\")");
        return 2;
    }
    let n = commands.len();
    for (i, args) in commands.iter().enumerate() {
        let name = args.first().map(String::as_str).unwrap_or("");
        // With one command the output between the markers is exactly the command's (tests parse it).
        if n > 1 {
            log(&format!("command {} of {n}: {}", i + 1, args.join(" ")));
        }
        let started = Instant::now();
        let rc = run_child(&args.iter().map(OsString::from).collect::<Vec<_>>());
        let took = started.elapsed().as_secs_f64();
        if rc != 0 {
            if n > 1 {
                let skipped = n - i - 1;
                log(&format!(
                    "command {} of {n} ({name}) failed with status {rc} after {took:.1} s{}",
                    i + 1,
                    if skipped > 0 {
                        format!("; the {skipped} after it were not run")
                    } else {
                        String::new()
                    }
                ));
            }
            return rc;
        }
        if n > 1 {
            log(&format!(
                "command {} of {n} ({name}) done in {took:.1} s",
                i + 1
            ));
        }
    }
    0
}

/// `args` with the password taken out of every URL that holds one, and that password (to be handed to
/// the child in `RESCUE_PASSWORD`): a command line is readable by every process in `/proc/PID/cmdline`.
/// Two different passwords stay where they are (the child could not tell which is which).
pub fn hide_passwords(args: &[OsString]) -> (Vec<OsString>, Option<crate::url::Secret>) {
    let mut found: Option<crate::url::Secret> = None;
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        let parsed = a
            .to_str()
            .filter(|t| crate::url::looks_like_url(t))
            .and_then(|t| crate::url::Url::parse(t).ok());
        match parsed {
            Some(mut url) if url.password.is_some() => {
                let password = url.password.take();
                if found.is_some() && found != password {
                    return (args.to_vec(), None);
                }
                found = password;
                out.push(OsString::from(url.expose()));
            }
            _ => out.push(a.clone()),
        }
    }
    (out, found)
}

/// Run `/init ARGS` on the console and wait for it, reaping every other child meanwhile.
fn run_child(args: &[OsString]) -> i32 {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/init".into());
    let (args, password) = hide_passwords(args);
    let mut command = Command::new(&exe);
    command.args(&args);
    if let Some(p) = &password {
        command.env(crate::url::PASSWORD_VAR, p.expose());
    }
    let child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            log(&format!("cannot start {}: {e}", exe.display()));
            return 127;
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        // As PID 1 we inherit every orphan; reaping them here keeps the process table clean.
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, rc)) if p == pid => return rc,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                log(&format!("the front end was killed by {sig:?}"));
                return 128 + sig as i32;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                log(&format!("waiting for children failed: {e}"));
                return 1;
            }
        }
    }
}

/// Stop everything, flush, unmount what was mounted from disks, then power off or reboot.
fn shutdown(action: PowerAction) -> ! {
    // Flushing large caches to a slow USB drive can take many seconds: say what is happening.
    log(match action {
        PowerAction::Reboot => "syncing disks and restarting… do not unplug anything yet",
        _ => "syncing disks and powering off… do not unplug anything yet",
    });
    // ntfs-3g must close its volumes itself (stopped, it leaves them unclean): unmount FUSE first and
    // wait for each program to finish, while nothing has been stopped yet.
    // (A child does it: PID 1 does no such work itself.)
    run_child(&["umount".into(), "--all-fuse".into()]);
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while let Ok(status) = waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
    nix::unistd::sync();
    unmount_disks();
    let err = sys::power(action);
    log(&format!(
        "power off/reboot failed: {err}; it is safe to switch the machine off now"
    ));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn unmount_disks() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let virtual_fs = [
        "proc", "sysfs", "devtmpfs", "tmpfs", "devpts", "efivarfs", "rootfs", "ramfs",
    ];
    for line in mounts.lines().rev() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 2 && !virtual_fs.contains(&f[2]) {
            let target = f[1].replace("\\040", " ");
            if let Err(e) = sys::unmount(&target) {
                log(&format!("cannot unmount {target}: {e}"));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_command_line_for_the_environment() {
        let args: Vec<OsString> = [
            "capture",
            "serial=A",
            "-o",
            "smb://u:pw%2C1@nas/s/a.rimg",
            "--json",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let (out, password) = hide_passwords(&args);
        assert_eq!(out[3], "smb://u@nas/s/a.rimg");
        assert_eq!(password.unwrap().expose(), "pw,1");
        assert_eq!(out[4], "--json");
        // Two different passwords: left as they are.
        let two: Vec<OsString> = ["x", "smb://u:a@h/s/a.rimg", "https://u:b@h/a.rimg"]
            .iter()
            .map(OsString::from)
            .collect();
        let (out, password) = hide_passwords(&two);
        assert_eq!(out, two);
        assert!(password.is_none());
    }
}
