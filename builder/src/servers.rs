//! Real servers for network tests, on 127.0.0.1 only, started by the test and ended by their PIDs (on
//! drop). A QEMU guest on the user network reaches them at 10.0.2.2. Test support: failures panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

/// Wait until something listens on 127.0.0.1:`port`, while each of `daemons` runs; what went wrong
/// otherwise.
fn listening_within(
    port: u16,
    daemons: &mut [(&str, &mut Server)],
    limit: Duration,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        for (what, server) in daemons.iter_mut() {
            if let Ok(Some(status)) = server.0.try_wait() {
                return Err(format!("{what} exited ({status})"));
            }
        }
        if start.elapsed() > limit {
            return Err(format!(
                "nothing listens on 127.0.0.1:{port} after {} s",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Start a server, its output into `log`; `package` is the Debian package to install when the program
/// is missing.
fn spawn(cmd: &mut Command, log: &Path, package: &str) -> Server {
    let out = std::fs::File::create(log).unwrap();
    let what = cmd.get_program().to_string_lossy().into_owned();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e} (apt-get install {package})"));
    Server(child)
}

/// Start a server (its output into `log`) and wait until it listens on `port`.
fn spawn_listening(cmd: &mut Command, log: &Path, port: u16, package: &str) -> Server {
    let what = cmd.get_program().to_string_lossy().into_owned();
    let mut server = spawn(cmd, log, package);
    if let Err(e) = listening_within(port, &mut [(&what, &mut server)], Duration::from_secs(30)) {
        panic!("{what}: {e} (see {})", log.display());
    }
    server
}

/// A server's process: ended by its PID and reaped when stopped or dropped.
struct Server(Child);

impl Server {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Samba's smbd with one share, `images`, writable by `root` with `password`.
pub struct Smbd {
    child: Server,
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
        let child = spawn_listening(
            Command::new("smbd")
                .args(["--foreground", "--no-process-group", "--debug-stdout"])
                .arg(format!("--configfile={}", conf.display())),
            &log,
            port,
            "samba",
        );
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
        self.child.stop();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The path of `name` in the share.
pub fn in_share(s: &Smbd, name: &str) -> PathBuf {
    Path::new(&s.share_dir).join(name)
}

/// nfs-ganesha serving one export, `export_dir`, read-write for root (no root squashing unless asked),
/// at the pseudo path `/images` (`nfs://HOST:PORT/images/…`). NFSv4 only: with NFSv3 enabled, ganesha
/// 4.3 exits (status 2) when it cannot register with the system's rpcbind (port 111), which a test must
/// not start. Graceless: a fresh recovery directory lets ganesha lift its grace period at once anyway,
/// but a server that had clients before would hold every open for 90 s.
pub struct Ganesha {
    /// Ended on drop.
    _server: Server,
    pub port: u16,
    pub export_dir: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ganesha {
    pub fn start() -> Ganesha {
        Ganesha::start_with("No_Root_Squash")
    }

    /// Root on the client is the anonymous user on the server, as many servers do by default.
    pub fn start_squashing_root() -> Ganesha {
        Ganesha::start_with("Root_Squash")
    }

    fn start_with(squash: &str) -> Ganesha {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let export_dir = d.join("export");
        for sub in ["export", "recovery"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let port = free_port();
        let conf = d.join("ganesha.conf");
        std::fs::write(
            &conf,
            format!(
                "NFS_CORE_PARAM {{\n\
                   Bind_Addr = 127.0.0.1;\n\
                   NFS_Port = {port};\n\
                   Protocols = 4;\n\
                   Enable_NLM = false;\n\
                   Enable_RQUOTA = false;\n\
                   Enable_UDP = false;\n\
                 }}\n\
                 NFSv4 {{\n\
                   RecoveryBackend = fs;\n\
                   RecoveryRoot = {recovery};\n\
                   Graceless = true;\n\
                   Only_Numeric_Owners = true;\n\
                 }}\n\
                 EXPORT {{\n\
                   Export_Id = 1;\n\
                   Path = {export};\n\
                   Pseudo = /images;\n\
                   Access_Type = RW;\n\
                   Squash = {squash};\n\
                   SecType = sys;\n\
                   FSAL {{ Name = VFS; }}\n\
                 }}\n",
                recovery = d.join("recovery").display(),
                export = export_dir.display(),
            ),
        )
        .unwrap();
        let log = d.join("ganesha.log");
        let child = spawn_listening(
            Command::new("ganesha.nfsd")
                .arg("-F")
                .arg("-f")
                .arg(&conf)
                .arg("-L")
                .arg(&log)
                .arg("-p")
                .arg(d.join("ganesha.pid"))
                .args(["-N", "NIV_EVENT"]),
            &d.join("ganesha.out"),
            port,
            "nfs-ganesha nfs-ganesha-vfs",
        );
        Ganesha {
            _server: child,
            port,
            export_dir,
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A test certificate authority and a server certificate it signed for 127.0.0.1 and 10.0.2.2 (the
/// host as a QEMU guest sees it), made with `openssl`.
pub struct TestCa {
    /// The CA's certificate (PEM): what a client is given with `--ca-file`.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rescue test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=rescue test server",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,IP:10.0.2.2,DNS:localhost\n\
             extendedKeyUsage=serverAuth\n\
             basicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        TestCa {
            ca_cert: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            _dir: dir,
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// The user nginx's `/private/` asks for (HTTP basic authentication).
pub const HTTP_USER: &str = "tech";

/// nginx serving `root` on 127.0.0.1 (HTTPS with `tls`): byte ranges as usual, none under `/noranges/`,
/// the same files under `/private/` only for [`HTTP_USER`] with `password`, and uploads (`PUT`) into
/// `root/results/`. The access log records the bytes sent per request.
pub struct Nginx {
    /// Ended on drop.
    _server: Server,
    pub port: u16,
    pub root: PathBuf,
    access_log: PathBuf,
    error_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(root: &Path, tls: Option<&TestCa>, password: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let hashed = Command::new("openssl")
            .args(["passwd", "-apr1", password])
            .output()
            .expect("openssl");
        assert!(hashed.status.success());
        let users = d.join("users");
        std::fs::write(
            &users,
            format!("{HTTP_USER}:{}", String::from_utf8_lossy(&hashed.stdout)),
        )
        .unwrap();
        let port = free_port();
        std::fs::create_dir_all(root.join("results")).unwrap();
        let access_log = d.join("access.log");
        let error_log = d.join("error.log");
        let listen = match tls {
            Some(ca) => format!(
                "listen 127.0.0.1:{port} ssl;\n\
                 ssl_certificate {};\n\
                 ssl_certificate_key {};\n",
                ca.server_cert.display(),
                ca.server_key.display()
            ),
            None => format!("listen 127.0.0.1:{port};\n"),
        };
        let temp = |n: &str| d.join(n).display().to_string();
        let conf = format!(
            "daemon off;\n\
             master_process off;\n\
             user root;\n\
             pid {pid};\n\
             error_log {err} info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               log_format bytes '$request_method $uri $status $body_bytes_sent';\n\
               access_log {acc} bytes;\n\
               client_body_temp_path {body};\n\
               proxy_temp_path {proxy};\n\
               fastcgi_temp_path {fcgi};\n\
               uwsgi_temp_path {uwsgi};\n\
               scgi_temp_path {scgi};\n\
               types {{ }}\n\
               default_type application/octet-stream;\n\
               server {{\n\
                 {listen}\
                 root {root};\n\
                 location /noranges/ {{ max_ranges 0; alias {root}/; }}\n\
                 location /private/ {{ auth_basic rescue; auth_basic_user_file {users}; alias {root}/; }}\n\
                 location /results/ {{ dav_methods PUT; client_max_body_size 16m; }}\n\
               }}\n\
             }}\n",
            pid = temp("nginx.pid"),
            err = error_log.display(),
            acc = access_log.display(),
            body = temp("body"),
            proxy = temp("proxy"),
            fcgi = temp("fcgi"),
            uwsgi = temp("uwsgi"),
            scgi = temp("scgi"),
            root = root.display(),
            users = users.display(),
        );
        let conf_path = d.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = spawn_listening(
            Command::new("nginx")
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(d),
            &d.join("nginx.out"),
            port,
            "nginx-light",
        );
        Nginx {
            _server: child,
            port,
            root: root.to_path_buf(),
            access_log,
            error_log,
            _dir: dir,
        }
    }

    /// Bytes of response bodies sent so far (from the access log).
    pub fn bytes_sent(&self) -> u64 {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// The access log (method, path, status, bytes per request) and the error log.
    pub fn log_text(&self) -> String {
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.access_log).unwrap_or_default(),
            std::fs::read_to_string(&self.error_log).unwrap_or_default()
        )
    }
}

/// OpenSSH's sshd on 127.0.0.1 with a temporary host key, letting `root` in with a temporary client key
/// only (no passwords), SFTP served by `internal-sftp`. Files go into `root_dir`, an absolute path the
/// URLs name (`sftp://root@HOST:PORT{root_dir}/x.rimg?fingerprint=…`).
pub struct Sshd {
    /// Ended on drop.
    _server: Server,
    pub port: u16,
    pub root_dir: PathBuf,
    /// The host key's fingerprint as `SHA256:…`.
    pub fingerprint: String,
    /// The host's public key as a `known_hosts` line wants it after the name (`ssh-ed25519 AAAA…`).
    pub host_public_key: String,
    /// The private key `root` may log in with.
    pub client_key: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let keygen = |name: &str| {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "rescue-test", "-f"])
                .arg(d.join(name))
                .status()
                .expect("ssh-keygen (apt-get install openssh-client)")
                .success();
            assert!(ok, "ssh-keygen {name}");
        };
        keygen("host_key");
        keygen("client_key");
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let fp = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(d.join("host_key.pub"))
            .output()
            .unwrap();
        let fingerprint = String::from_utf8_lossy(&fp.stdout)
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint from ssh-keygen -l")
            .to_string();
        let root_dir = d.join("images");
        std::fs::create_dir_all(&root_dir).unwrap();
        // sshd's privilege separation needs this (made by the service on a normal system).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let conf = d.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {hk}\n\
                 PidFile {pid}\n\
                 AuthorizedKeysFile {ak}\n\
                 PermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 Subsystem sftp internal-sftp\n\
                 LogLevel VERBOSE\n",
                hk = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let log = d.join("sshd.out");
        let child = spawn_listening(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&conf),
            &log,
            port,
            "openssh-server",
        );
        let host_public_key = std::fs::read_to_string(d.join("host_key.pub"))
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        Sshd {
            _server: child,
            port,
            root_dir,
            fingerprint,
            host_public_key,
            client_key: d.join("client_key"),
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A fresh random UUID from the kernel.
fn random_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_string()
}

/// A command's output as text.
fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn succeeded(what: &str, out: &std::process::Output) -> Result<(), String> {
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("{what} failed ({}): {}", out.status, text(out))),
    }
}

/// Keep a failed server's directory (not removed on drop) for its logs; their folder.
fn keep_logs(dir: tempfile::TempDir) -> PathBuf {
    dir.keep().join("log")
}

/// The last `n` lines of a file, for panic messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Ceph's S3 gateway, `radosgw`, over a single-node cluster in a temporary directory: one monitor, one
/// OSD keeping objects in memory (`memstore`: no disks), no manager, no cephx. The monitor, the OSD's
/// four messengers and the gateway listen on 127.0.0.1 only; everything they write stays in the
/// temporary directory. One S3 user with [`S3Server::access_key`] and [`S3Server::secret_key`];
/// requests are path-style (`{endpoint}/{bucket}/{key}`), signed with SigV4 (radosgw takes any region in
/// the signature; [`S3Server::region`] is the name of its zone group, the only `LocationConstraint` it
/// takes). Real S3 limits apply: multipart parts but the last are at least 5 MiB.
pub struct S3Server {
    // Ended in this order on drop: the gateway, then the OSD, then the monitor.
    rgw: Server,
    osd: Server,
    mon: Server,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub port: u16,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// A configuration for `s3cmd -c` with this server and user (see [`S3Server::s3cmd`]).
    pub s3cmd_config: PathBuf,
    log_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Start the cluster and the gateway, and create the user (about 1 s here).
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        for sub in ["run", "log", "mon", "osd", "rgw", "crash"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let log_dir = d.join("log");
        let fsid = random_uuid();
        let mon_port = free_port();
        let port = free_port();
        let conf = d.join("ceph.conf");
        let p = |s: &str| d.join(s).display().to_string();
        // `tcp_nodelay=1`: without it beast answers a small GET (a chunk's 40-byte frame header) in two
        // writes that Nagle and the client's delayed ACK hold for ~40 ms each (rook issue #17988), which
        // measures the server's stall instead of the client.
        std::fs::write(
            &conf,
            format!(
                "[global]\n\
                 fsid = {fsid}\n\
                 mon host = v1:127.0.0.1:{mon_port}\n\
                 public addr = 127.0.0.1\n\
                 cluster addr = 127.0.0.1\n\
                 ms bind msgr2 = false\n\
                 auth cluster required = none\n\
                 auth service required = none\n\
                 auth client required = none\n\
                 keyring = {keyring}\n\
                 run dir = {run}\n\
                 crash dir = {crash}\n\
                 log file = {log}/$name.log\n\
                 mon cluster log file = default={log}/cluster.log cluster={log}/cluster.log\n\
                 mon data = {mon}\n\
                 mon data avail crit = 0\n\
                 mon data avail warn = 0\n\
                 mon allow pool size one = true\n\
                 mon warn on pool no redundancy = false\n\
                 osd data = {osd}\n\
                 osd objectstore = memstore\n\
                 memstore device bytes = 4294967296\n\
                 osd pool default size = 1\n\
                 osd pool default min size = 1\n\
                 osd pool default pg num = 1\n\
                 osd pool default pgp num = 1\n\
                 osd pool default pg autoscale mode = off\n\
                 osd crush chooseleaf type = 0\n\
                 osd crush update on start = false\n\
                 osd class update on start = false\n\
                 paxos propose interval = 0.01\n\
                 paxos min wait = 0.001\n\
                 objecter tick interval = 0.1\n\
                 client mount timeout = 30\n\
                 [client.rgw]\n\
                 rgw frontends = beast endpoint=127.0.0.1:{port} tcp_nodelay=1\n\
                 rgw data = {rgw}\n\
                 rgw init timeout = 60\n",
                keyring = p("keyring"),
                run = p("run"),
                crash = p("crash"),
                log = log_dir.display(),
                mon = p("mon"),
                osd = p("osd"),
                rgw = p("rgw"),
            ),
        )
        .unwrap();
        let run = |program: &str, args: &[&str], stdin: &str| -> std::process::Output {
            let mut child = Command::new(program)
                .arg("-c")
                .arg(&conf)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("{program}: {e} (apt-get install ceph-mon ceph-osd radosgw)")
                });
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        };

        // The monitor `a` makes its store from a map of the monitors (itself), then serves.
        let monmap = p("monmap");
        let out = run(
            "monmaptool",
            &[
                "--create",
                "--fsid",
                &fsid,
                "--addv",
                "a",
                &format!("[v1:127.0.0.1:{mon_port}]"),
                &monmap,
            ],
            "",
        );
        if let Err(e) = succeeded("monmaptool --create", &out) {
            panic!("{e}; logs kept in {}", keep_logs(dir).display());
        }
        let out = run("ceph-mon", &["--mkfs", "-i", "a", "--monmap", &monmap], "");
        if let Err(e) = succeeded("ceph-mon --mkfs", &out) {
            panic!("{e}; logs kept in {}", keep_logs(dir).display());
        }
        let mon_log = log_dir.join("mon.out");
        let mut mon = spawn(
            Command::new("ceph-mon")
                .arg("-c")
                .arg(&conf)
                .args(["-i", "a", "-f"]),
            &mon_log,
            "ceph-mon",
        );
        let limit = Duration::from_secs(60);
        if let Err(e) = listening_within(mon_port, &mut [("ceph-mon", &mut mon)], limit) {
            drop(mon);
            let logs = keep_logs(dir);
            panic!(
                "ceph-mon: {e}; logs kept in {}\n{}",
                logs.display(),
                tail(&logs.join("mon.a.log"), 20)
            );
        }

        // osd.0 in the OSD map and the CRUSH map, set by this client rather than by the OSD as it starts:
        // an OSD's own early monitor command can reach the monitor before the OSD knows the cluster's
        // fsid, which the monitor refuses and the OSD exits. The `ceph` tool reads both commands from
        // its input (one Python start) and exits 0 whatever they answer: errors are read from stderr.
        let osd_uuid = random_uuid();
        let out = run(
            "ceph",
            &[],
            &format!("osd new {osd_uuid} 0\nosd crush add osd.0 1 root=default\n"),
        );
        if !out.status.success() || String::from_utf8_lossy(&out.stderr).contains("Error") {
            panic!(
                "ceph osd new, osd crush add failed: {}; logs kept in {}",
                text(&out),
                keep_logs(dir).display()
            );
        }
        let out = run(
            "ceph-osd",
            &["-i", "0", "--mkfs", "--osd-uuid", &osd_uuid],
            "",
        );
        if let Err(e) = succeeded("ceph-osd --mkfs", &out) {
            panic!("{e}; logs kept in {}", keep_logs(dir).display());
        }
        let mut osd = spawn(
            Command::new("ceph-osd")
                .arg("-c")
                .arg(&conf)
                .args(["-i", "0", "-f"]),
            &log_dir.join("osd.out"),
            "ceph-osd",
        );

        // The gateway creates its pools once the OSD is up, and listens when they are there.
        let mut rgw = spawn(
            Command::new("radosgw")
                .arg("-c")
                .arg(&conf)
                .args(["-n", "client.rgw", "-f"]),
            &log_dir.join("rgw.out"),
            "radosgw",
        );
        let waited = listening_within(
            port,
            &mut [
                ("radosgw", &mut rgw),
                ("ceph-osd", &mut osd),
                ("ceph-mon", &mut mon),
            ],
            limit,
        );
        if let Err(problem) = waited {
            drop((rgw, osd, mon));
            let logs = keep_logs(dir);
            panic!(
                "{problem}; logs kept in {}\n--- client.rgw.log\n{}\n--- osd.0.log\n{}\n--- mon.a.log\n{}",
                logs.display(),
                tail(&logs.join("client.rgw.log"), 20),
                tail(&logs.join("osd.0.log"), 20),
                tail(&logs.join("mon.a.log"), 20),
            );
        }

        let user = random_uuid().replace('-', "");
        let access_key = user[..20].to_uppercase();
        let secret_key = format!("{user}{}", &random_uuid()[..8]);
        let out = run(
            "radosgw-admin",
            &[
                "user",
                "create",
                "--uid",
                "rescue",
                "--display-name",
                "rescue tests",
                "--access-key",
                &access_key,
                "--secret-key",
                &secret_key,
            ],
            "",
        );
        if let Err(e) = succeeded("radosgw-admin user create", &out) {
            panic!("{e}; logs kept in {}", keep_logs(dir).display());
        }

        let s3cmd_config = d.join("s3cfg");
        std::fs::write(
            &s3cmd_config,
            format!(
                "[default]\n\
                 access_key = {access_key}\n\
                 secret_key = {secret_key}\n\
                 host_base = 127.0.0.1:{port}\n\
                 host_bucket = 127.0.0.1:{port}\n\
                 use_https = False\n\
                 signature_v2 = False\n\
                 bucket_location = US\n\
                 proxy_host =\n\
                 proxy_port = 0\n"
            ),
        )
        .unwrap();
        S3Server {
            rgw,
            osd,
            mon,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            access_key,
            secret_key,
            region: "default".to_string(),
            s3cmd_config,
            log_dir,
            _dir: dir,
        }
    }

    /// `s3cmd` set up for this server and user (path-style requests, SigV4, no proxy); add the
    /// subcommand and its arguments.
    pub fn s3cmd(&self) -> Command {
        let mut cmd = Command::new("s3cmd");
        cmd.arg("-c").arg(&self.s3cmd_config);
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Create a bucket owned by the user (`s3cmd mb`).
    pub fn create_bucket(&self, name: &str) {
        let out = self
            .s3cmd()
            .args(["mb", &format!("s3://{name}")])
            .output()
            .expect("s3cmd (apt-get install s3cmd)");
        assert!(
            out.status.success(),
            "s3cmd mb s3://{name}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
    }

    /// The daemons' process ids (gateway, OSD, monitor): all ended when the server is dropped.
    pub fn pids(&self) -> [u32; 3] {
        [self.rgw.0.id(), self.osd.0.id(), self.mon.0.id()]
    }

    /// The gateway's log (one line per request) and the end of the OSD's and the monitor's.
    pub fn log_text(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.log_dir.join(name)).unwrap_or_default();
        format!(
            "--- client.rgw.log\n{}{}\n--- osd.0.log (end)\n{}\n--- mon.a.log (end)\n{}",
            read("client.rgw.log"),
            read("rgw.out"),
            tail(&self.log_dir.join("osd.0.log"), 40),
            tail(&self.log_dir.join("mon.a.log"), 40),
        )
    }
}
