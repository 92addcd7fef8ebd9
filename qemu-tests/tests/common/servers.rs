//! Real servers for network tests, on 127.0.0.1 only, started by the test and ended by their PIDs (on
//! drop). A QEMU guest on the user network reaches them at 10.0.2.2.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (taken from the kernel, then released for the server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 30 s");
}

/// Samba's smbd with one share, `images`, writable by `root` with `password`.
pub struct Smbd {
    child: Child,
    pub port: u16,
    pub share_dir: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Smbd {
    pub fn start(password: &str) -> Smbd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let share_dir = d.join("share");
        for sub in ["share", "private", "lock", "state", "cache", "pid"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let port = free_port();
        let conf = d.join("smb.conf");
        let p = |s: &str| d.join(s).display().to_string();
        std::fs::write(
            &conf,
            format!(
                "[global]\n\
                 server role = standalone server\n\
                 interfaces = 127.0.0.1\n\
                 bind interfaces only = yes\n\
                 smb ports = {port}\n\
                 disable netbios = yes\n\
                 server min protocol = SMB2_10\n\
                 smb encrypt = desired\n\
                 private dir = {}\n\
                 lock directory = {}\n\
                 state directory = {}\n\
                 cache directory = {}\n\
                 pid directory = {}\n\
                 passdb backend = tdbsam:{}/passdb.tdb\n\
                 log file = {}/log.%m\n\
                 log level = 1\n\
                 load printers = no\n\
                 printing = bsd\n\
                 printcap name = /dev/null\n\
                 [images]\n\
                 path = {}\n\
                 read only = no\n\
                 valid users = root\n",
                p("private"),
                p("lock"),
                p("state"),
                p("cache"),
                p("pid"),
                p("private"),
                p("state"),
                share_dir.display()
            ),
        )
        .unwrap();
        let mut add = Command::new("smbpasswd")
            .arg("-c")
            .arg(&conf)
            .args(["-a", "-s", "root"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("smbpasswd (apt-get install samba)");
        use std::io::Write;
        add.stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n{password}\n").as_bytes())
            .unwrap();
        assert!(add.wait().unwrap().success(), "smbpasswd failed");
        let log = d.join("smbd.out");
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("smbd")
            .args(["--foreground", "--no-process-group", "--debug-stdout"])
            .arg(format!("--configfile={}", conf.display()))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("smbd (apt-get install samba)");
        wait_listening(port, &mut child, "smbd");
        Smbd {
            child,
            port,
            share_dir,
            log,
            _dir: dir,
        }
    }

    /// Stop the server now (a share that disappears mid-operation).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Smbd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The path of `name` in the share.
pub fn in_share(s: &Smbd, name: &str) -> PathBuf {
    Path::new(&s.share_dir).join(name)
}
