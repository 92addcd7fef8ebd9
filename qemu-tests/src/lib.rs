//! End-to-end test harness: builds (once) the kernel + initramfs with the builder, boots them under QEMU
//! with disk fixtures, drives and reads the serial console with timeouts, and talks to QEMU's monitor (QMP)
//! for hotplug. Every failure message carries the tail of the serial log.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use builder::artifacts::{self, KernelSource};
use builder::qemu::Vm;

pub mod nbd;

/// Kernel and initramfs to boot.
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
}

/// `RESCUE_BOOT_DIR` when a script built them already; otherwise build them (once per process, under a
/// file lock so parallel test processes do not write the same files at once).
pub fn boot_files() -> &'static BootFiles {
    static FILES: OnceLock<BootFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        if let Some(dir) = std::env::var_os("RESCUE_BOOT_DIR") {
            let dir = PathBuf::from(dir);
            return BootFiles {
                vmlinuz: dir.join("vmlinuz"),
                initramfs: dir.join("initramfs.img"),
            };
        }
        let dir = builder::static_build::workspace_root().join("target/qemu-tests/boot");
        let result = with_lock(&dir, || {
            artifacts::build(
                &dir,
                &KernelSource::Default,
                None,
                artifacts::FirmwareChoice::Include,
            )
        });
        match result {
            Ok(b) => BootFiles {
                vmlinuz: b.vmlinuz,
                initramfs: b.initramfs,
            },
            Err(e) => panic!("building the kernel and initramfs for the QEMU tests failed: {e:#}"),
        }
    })
}

fn with_lock<T>(dir: &Path, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::File::create(dir.join(".lock"))?;
    lock.lock().context("locking the boot files directory")?;
    let r = f();
    let _ = lock.unlock();
    r
}

/// A running guest and everything it printed on the serial console.
pub struct Guest {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
    qmp: Option<PathBuf>,
    _dir: tempfile::TempDir,
    pub started: Instant,
}

impl Guest {
    /// Boot `vm` (its kernel/initrd are replaced by the test boot files), with a QMP socket.
    pub fn boot(mut vm: Vm) -> anyhow::Result<Guest> {
        let files = boot_files();
        vm.kernel = files.vmlinuz.clone();
        vm.initrd = files.initramfs.clone();
        let dir = tempfile::tempdir()?;
        let qmp = dir.path().join("qmp.sock");
        vm.monitor = Some(qmp.clone());
        let mut child = vm
            .command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64 (install qemu-system-x86: see scripts/setup)")?;
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            });
        }
        Ok(Guest {
            stdin: child.stdin.take(),
            child,
            output,
            qmp: Some(qmp),
            _dir: dir,
            started: Instant::now(),
        })
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The last `n` lines of the serial log, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let out = self.output();
        let lines: Vec<&str> = out.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Wait until the serial output contains `needle` (searching from byte offset `from`); returns the
    /// offset just past it.
    pub fn wait_for_from(
        &mut self,
        needle: &str,
        from: usize,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if let Some(i) = out.get(from..).and_then(|s| s.find(needle)) {
                return Ok(from + i + needle.len());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "QEMU exited ({status}) before printing {needle:?}; serial log tail:\n{}",
                    self.tail(60)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {needle:?}; serial log tail:\n{}",
                    self.tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<usize> {
        self.wait_for_from(needle, 0, timeout)
    }

    /// Bytes printed so far: an offset for [`Guest::screen`] and [`Guest::wait_for_from`].
    pub fn output_len(&self) -> usize {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The 80×24 screen a terminal shows after everything the guest printed from byte `from` on (the
    /// TUI draws on the serial console, which reports no size, at 80×24).
    pub fn screen(&self, from: usize) -> String {
        let out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        const ROWS: std::num::NonZeroU16 = std::num::NonZeroU16::new(24).unwrap();
        const COLS: std::num::NonZeroU16 = std::num::NonZeroU16::new(80).unwrap();
        let mut parser = vt100::Parser::new(ROWS, COLS, 0);
        parser.process(out.get(from..).unwrap_or_default());
        parser.screen().contents()
    }

    /// Wait until the screen shows `needle`, and until the frame that shows it is complete (nothing more
    /// arrived for a moment: over the serial line a frame arrives in pieces, and the needle may be drawn
    /// before the rest of it); returns the screen.
    pub fn wait_screen(
        &mut self,
        from: usize,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen(from);
            if screen.contains(needle) {
                return Ok(self.settled(from, needle).unwrap_or(screen));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "QEMU exited ({status}) while waiting for {needle:?} on the screen:\n{screen}"
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {needle:?} on the screen:\n{screen}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The screen once it has stayed the same for 150 ms, if it still shows `needle` (at most 1 s of
    /// waiting: a screen that keeps changing, such as progress, is returned as it is then).
    fn settled(&self, from: usize, needle: &str) -> Option<String> {
        let until = Instant::now() + Duration::from_secs(1);
        let mut screen = self.screen(from);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(150));
            let now = self.screen(from);
            if now == screen {
                break;
            }
            screen = now;
        }
        Some(screen).filter(|s| s.contains(needle))
    }

    /// What PID 1 printed between its command markers (`rescue.cmd=` or `rescue.job=`; CRLF as LF,
    /// trimmed) and the status it reported, waiting up to `timeout` for the end marker.
    pub fn marked_output(&mut self, timeout: Duration) -> anyhow::Result<(String, i32)> {
        let begin = self.wait_for(rescue::init::CMD_BEGIN, BOOT_TIMEOUT)?;
        let end_marker = format!("{} rc=", rescue::init::CMD_END);
        let end = self.wait_for_from(&end_marker, begin, timeout)?;
        self.wait_for_from("@@", end, Duration::from_secs(10))?;
        let out = self.output();
        let text = out[begin..end - end_marker.len()].replace("\r\n", "\n");
        let rc = out[end..]
            .split("@@")
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(-1);
        Ok((text.trim().to_string(), rc))
    }

    /// Type on the serial console.
    pub fn send(&mut self, text: &str) -> anyhow::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the guest's console input is closed")?;
        stdin.write_all(text.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Run one QMP command and return its `return` value.
    pub fn qmp(
        &self,
        command: &str,
        arguments: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let path = self.qmp.as_ref().context("no QMP socket")?;
        let mut stream = None;
        for _ in 0..100 {
            match UnixStream::connect(path) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let stream = stream.with_context(|| format!("connecting to QMP at {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line)?; // greeting
        let mut call = |cmd: serde_json::Value| -> anyhow::Result<serde_json::Value> {
            writeln!(writer, "{cmd}")?;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    bail!("QMP connection closed");
                }
                let v: serde_json::Value = serde_json::from_str(&line)?;
                if let Some(r) = v.get("return") {
                    return Ok(r.clone());
                }
                if let Some(e) = v.get("error") {
                    bail!("QMP {cmd} failed: {e}");
                }
            }
        };
        call(serde_json::json!({"execute": "qmp_capabilities"}))?;
        call(serde_json::json!({"execute": command, "arguments": arguments}))
    }

    /// Whether QEMU has exited (the guest powered off, or QEMU failed).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Wait for QEMU to exit (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!(
                        "QEMU exited with {status}; serial log tail:\n{}",
                        self.tail(60)
                    );
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the guest did not power off within {timeout:?}; serial log tail:\n{}",
                    self.tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Generous limits: TCG on two shared cores is slow, and CI may run two guests at once.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The result of one `rescue.cmd=` boot.
pub struct CmdRun {
    pub stdout: String,
    pub rc: i32,
    pub serial: String,
}

/// Boot with `rescue.cmd="CMD"`, wait for the command to finish and the guest to power off.
pub fn run_command(mut vm: Vm, cmd: &str) -> anyhow::Result<CmdRun> {
    vm.append = format!("{} rescue.cmd=\"{cmd}\"", vm.append);
    let mut g = Guest::boot(vm)?;
    let (stdout, rc) = g.marked_output(BOOT_TIMEOUT)?;
    g.wait_exit(Duration::from_secs(60))?;
    Ok(CmdRun {
        stdout,
        rc,
        serial: g.output(),
    })
}
