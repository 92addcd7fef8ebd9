//! The server: a Unix socket (the default) or a TCP port, one thread per client, and a handle that
//! stops it — closing every connection and removing the socket file it made.
//!
//! TCP listens on the loopback interface unless the caller allows another address: NBD has no
//! password and this server no TLS, so a server on a network interface lets any machine that reaches
//! it read the disk (and, with an overlay, write the export). The Unix socket is made readable and
//! writable by its owner only.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::handshake::{self, Outcome};
use super::{transmission, Export, Log, Served};

/// The port IANA gives NBD.
pub const DEFAULT_PORT: u16 = 10809;
/// At most this many clients at once; more are turned away as they connect.
const MAX_CLIENTS: usize = 32;
/// During the handshake, a client silent for this long is disconnected (idle after it is fine).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the accept loop looks whether it should stop.
const POLL_MS: u16 = 100;

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// What a server serves and how.
pub struct Config {
    pub export: Export,
    pub listen: Listen,
    /// Listen on a TCP address that is not a loopback one (with a warning).
    pub allow_remote: bool,
    /// Make the export writable, its writes kept in this new file (docs/NBD.md, "Overlay").
    pub overlay: Option<PathBuf>,
    pub log: Log,
}

/// `ADDR:PORT` as given on a command line: a port alone, `:PORT`, an address alone (port 10809),
/// `localhost:PORT`, or both (`[::1]:PORT` for IPv6). Without an address, 127.0.0.1.
pub fn parse_tcp(s: &str) -> Result<SocketAddr, String> {
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = |p: &str| p.parse::<u16>().ok();
    let s = s.trim();
    if s.is_empty() {
        return Ok(SocketAddr::new(loopback, DEFAULT_PORT));
    }
    if let Some(p) = port(s) {
        return Ok(SocketAddr::new(loopback, p));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    if let Some((host, p)) = s.rsplit_once(':') {
        if matches!(host, "" | "localhost") {
            if let Some(p) = port(p) {
                return Ok(SocketAddr::new(loopback, p));
            }
        }
    }
    Err(format!(
        "{s:?} is not ADDR:PORT: give an IP address and a port (127.0.0.1:{DEFAULT_PORT}, \
         [::1]:{DEFAULT_PORT}) or a port alone"
    ))
}

/// A running server: it accepts clients on its own thread until [`Server::shutdown`] (or until it is
/// dropped).
pub struct Server {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    url: String,
    warnings: Vec<String>,
    /// The socket file made, and its identity (device, inode), to remove it only if it is still ours.
    socket: Option<(PathBuf, (u64, u64))>,
    local: Option<SocketAddr>,
}

struct Shared {
    served: Served,
    stop: AtomicBool,
    clients: Mutex<Clients>,
}

#[derive(Default)]
struct Clients {
    next: u64,
    /// The open connections (to close them when stopping) and their threads.
    open: Vec<(u64, Stream)>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Open the overlay if any, listen, and start accepting clients.
    pub fn start(config: Config) -> io::Result<Server> {
        let mut warnings = Vec::new();
        if let Listen::Tcp(addr) = &config.listen {
            if !addr.ip().is_loopback() {
                if !config.allow_remote {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "{} is not a loopback address: a server there lets any machine that can \
                             reach this one read the disk (NBD has no password, and this server no \
                             encryption); listen on 127.0.0.1, or allow remote clients explicitly",
                            addr.ip()
                        ),
                    ));
                }
                warnings.push(format!(
                    "listening on {addr}, beyond this machine: anyone who can reach it can read the \
                     disk{} — no password, no encryption",
                    if config.overlay.is_some() {
                        " and write the export"
                    } else {
                        ""
                    }
                ));
            }
        }
        let served = Served::new(config.export, config.overlay.as_deref(), config.log)?;
        let bound = bind(&config.listen);
        let (listener, url, socket, local) = match bound {
            Ok(b) => b,
            Err(e) => {
                if let Some(p) = &config.overlay {
                    // Made a moment ago, empty: nothing of anyone's is lost.
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            served,
            stop: AtomicBool::new(false),
            clients: Mutex::new(Clients::default()),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("nbd-accept".into())
                .spawn(move || accept_loop(&shared, &listener))?
        };
        Ok(Server {
            shared,
            accept: Some(accept),
            url,
            warnings,
            socket,
            local,
        })
    }

    /// The URL clients connect to (`nbd+unix:///?socket=PATH`, `nbd://ADDR:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the caller should tell the user (a server listening beyond this machine).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The TCP address listened on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// How many clients are connected now.
    pub fn clients(&self) -> usize {
        self.shared.lock().open.len()
    }

    /// Serve until `stop` says so (asked every 100 ms), then shut down.
    pub fn serve_until(mut self, stop: impl Fn() -> bool) -> io::Result<()> {
        while !stop() && self.accept.as_ref().is_some_and(|t| !t.is_finished()) {
            std::thread::sleep(Duration::from_millis(POLL_MS.into()));
        }
        self.stop_now()
    }

    /// Serve until Ctrl-C, SIGTERM or SIGHUP (the caller catches them: `sys::signals`), then shut down.
    pub fn serve_forever(self) -> io::Result<()> {
        self.serve_until(crate::sys::signals::interrupted)
    }

    /// Stop accepting, close every connection, wait for their threads, write the overlay to stable
    /// storage and remove the socket file.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> io::Result<()> {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let (open, threads) = {
            let mut c = self.shared.lock();
            (std::mem::take(&mut c.open), std::mem::take(&mut c.threads))
        };
        for (_, stream) in &open {
            let _ = stream.shutdown();
        }
        for t in threads {
            let _ = t.join();
        }
        if let Some((path, id)) = self.socket.take() {
            let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == id);
            if ours {
                std::fs::remove_file(&path)?;
            }
        }
        match &self.shared.served.overlay {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.accept.is_some() {
            let _ = self.stop_now();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

type Bound = (
    Listener,
    String,
    Option<(PathBuf, (u64, u64))>,
    Option<SocketAddr>,
);

fn bind(listen: &Listen) -> io::Result<Bound> {
    match listen {
        Listen::Unix(path) => {
            let (l, id) = bind_unix(path)?;
            l.set_nonblocking(true)?;
            let url = format!("nbd+unix:///?socket={}", url_path(path));
            Ok((Listener::Unix(l), url, Some((path.clone(), id)), None))
        }
        Listen::Tcp(addr) => {
            let l = TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            l.set_nonblocking(true)?;
            let local = l.local_addr()?;
            let url = format!("nbd://{local}/");
            Ok((Listener::Tcp(l), url, None, Some(local)))
        }
    }
}

/// Listen on a socket file at `path`: a stale one (no server answers on it) is replaced; a live one,
/// or anything else at that path, is refused.
fn bind_unix(path: &Path) -> io::Result<(UnixListener, (u64, u64))> {
    let named = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("socket {}: {what}: {e}", path.display()))
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "socket {}: another server is listening on it; stop it or name another path",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path).map_err(|e| named(e, "a stale socket cannot be removed"))?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; name a path that does not exist yet",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e, "cannot be looked at")),
    }
    let l = UnixListener::bind(path).map_err(|e| named(e, "cannot listen"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| named(e, "cannot be made private"))?;
    let m = std::fs::symlink_metadata(path)?;
    Ok((l, (m.dev(), m.ino())))
}

/// `path` for the query of a URL: what is not plainly safe there is percent-encoded.
fn url_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut s = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn accept_loop(shared: &Arc<Shared>, listener: &Listener) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let fd = match listener {
        Listener::Unix(l) => l.as_fd(),
        Listener::Tcp(l) => l.as_fd(),
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(POLL_MS)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                shared
                    .served
                    .log(&format!("waiting for clients failed: {e}"));
                std::thread::sleep(Duration::from_millis(POLL_MS.into()));
                continue;
            }
        }
        let accepted = match listener {
            Listener::Unix(l) => l
                .accept()
                .map(|(s, _)| (Stream::Unix(s), "a local client".to_string())),
            Listener::Tcp(l) => l.accept().map(|(s, peer)| {
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), format!("client {peer}"))
            }),
        };
        match accepted {
            Ok((stream, peer)) => admit(shared, stream, peer),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                shared
                    .served
                    .log(&format!("accepting a client failed: {e}"));
                std::thread::sleep(Duration::from_millis(POLL_MS.into()));
            }
        }
    }
}

/// Start a thread for a new client, unless there are too many.
fn admit(shared: &Arc<Shared>, stream: Stream, peer: String) {
    let mut c = shared.lock();
    c.threads.retain(|t| !t.is_finished());
    if c.open.len() >= MAX_CLIENTS {
        drop(c);
        shared.served.log(&format!(
            "turned away {peer}: {MAX_CLIENTS} clients are connected already"
        ));
        return;
    }
    c.next += 1;
    let id = c.next;
    let who = format!("{peer} (#{id})");
    let kept = match stream.try_clone() {
        Ok(k) => k,
        Err(e) => {
            drop(c);
            shared.served.log(&format!("turned away {peer}: {e}"));
            return;
        }
    };
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("nbd-client-{id}"))
            .spawn(move || {
                client(&shared, &stream, &who);
                shared.lock().open.retain(|(i, _)| *i != id);
            })
    };
    match thread {
        Ok(t) => {
            c.open.push((id, kept));
            c.threads.push(t);
        }
        Err(e) => {
            drop(c);
            shared
                .served
                .log(&format!("cannot start a thread for {peer}: {e}"));
        }
    }
}

/// One client's connection, from its handshake to its end, logged.
fn client(shared: &Shared, stream: &Stream, who: &str) {
    let served = &shared.served;
    served.log(&format!("{who} connected"));
    let run = || -> io::Result<()> {
        stream.set_blocking()?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        let mut reader = BufReader::with_capacity(64 << 10, stream);
        let mut writer = BufWriter::with_capacity(64 << 10, NoSigPipe(stream.fd()));
        match handshake::negotiate(served, &mut reader, &mut writer)? {
            Outcome::Transmission(n) => {
                stream.set_read_timeout(None)?;
                transmission::serve(served, &n, &mut reader, &mut writer, who)
            }
            Outcome::Ended => Ok(()),
        }
    };
    let end = match run() {
        Ok(()) => "disconnected".to_string(),
        Err(_) if shared.stop.load(Ordering::SeqCst) => {
            "disconnected: the server is stopping".to_string()
        }
        Err(e) => match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
                "disconnected: no handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
            io::ErrorKind::InvalidData => format!("disconnected: {e}"),
            _ => format!("went away: {e}"),
        },
    };
    served.log(&format!("{who} {end}"));
    let _ = stream.shutdown();
}

/// A client's socket.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }

    fn set_blocking(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(false),
            Stream::Tcp(s) => s.set_nonblocking(false),
        }
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn shutdown(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tcp(s) => (&*s).read(buf),
        }
    }
}

/// Writes to a socket that fail with `EPIPE` when the client has gone, instead of raising SIGPIPE
/// (which the CLI leaves at its default action for listings: it would end the whole server).
struct NoSigPipe<'a>(BorrowedFd<'a>);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{send, MsgFlags};
        loop {
            match send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
