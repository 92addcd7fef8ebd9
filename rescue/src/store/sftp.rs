//! Images over SFTP (`sftp://[user@]host[:port]/path/name.rimg`): read with positional reads (restore,
//! verify, inspect), written as `NAME.partial` and renamed once complete and flushed (capture), through
//! an SSH connection of our own (russh; there is no `ssh` program in the rescue system).
//!
//! The server is trusted only when its host key is pinned: `?fingerprint=SHA256:…` in the URL, or a
//! `known_hosts` file that names it (`~/.ssh/known_hosts`: on a host, the user's).
//! An unknown key is refused with its fingerprint, so the user can check it on the server and pin it;
//! a key that differs from the pinned one is refused as a possible impersonation. Authentication is by
//! key (`--identity FILE`, else `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`) or password.
//!
//! russh is asynchronous: each connection owns a small tokio runtime, and the blocking `ReadAt` and
//! `Write` here wait on it. A read or a write is split into requests of [`PIECE`] bytes sent at once, so
//! the link's latency is paid once per chunk, not once per piece.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use crate::image::ReadAt;
use crate::url::{Secret, Url};

/// Bytes per SFTP read or write request (OpenSSH's server answers reads of up to 255 KiB).
const PIECE: usize = 128 << 10;
/// Bytes a writer collects before sending them (as pieces, all at once).
const BATCH: usize = 4 << 20;

#[derive(Debug, Clone, Default)]
pub struct SftpOptions {
    pub password: Option<Secret>,
    /// A private key (OpenSSH format) to log in with.
    pub identity: Option<PathBuf>,
    /// `known_hosts` files to find the server's key in.
    pub known_hosts: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("{url}: {why}")]
pub struct SftpError {
    pub url: String,
    pub why: String,
}

/// What the host-key check saw, for the error message.
#[derive(Default)]
struct Seen {
    fingerprint: Option<String>,
    algorithm: Option<String>,
}

struct Checker {
    pinned: Vec<String>,
    seen: Arc<Mutex<Seen>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        let ok = self.pinned.iter().any(|p| p == &fp);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.fingerprint = Some(fp);
        seen.algorithm = Some(key.algorithm().to_string());
        Ok(ok)
    }
}

/// One SSH connection with its SFTP session.
pub struct Conn {
    rt: tokio::runtime::Runtime,
    sftp: Arc<RawSftpSession>,
    _ssh: client::Handle<Checker>,
    shown: String,
}

impl Conn {
    fn fail(&self, why: impl std::fmt::Display) -> SftpError {
        SftpError {
            url: self.shown.clone(),
            why: why.to_string(),
        }
    }

    fn io(&self, what: &str, e: russh_sftp::client::error::Error) -> io::Error {
        io::Error::other(format!("{}: {what}: {}", self.shown, sftp_words(&e)))
    }
}

/// An SFTP error in words (the server's status message when it sent one).
fn sftp_words(e: &russh_sftp::client::error::Error) -> String {
    match e {
        russh_sftp::client::error::Error::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => "no such file or folder on the server".into(),
            StatusCode::PermissionDenied => "the server refuses this user access to it".into(),
            _ if !s.error_message.is_empty() => s.error_message.clone(),
            code => format!("{code:?}"),
        },
        e => e.to_string(),
    }
}

/// The host-key fingerprints pinned for `url`: its `fingerprint` parameter, and every key `known_hosts`
/// files give for the host (plain or hashed names; `[host]:port` when the port is not 22).
fn pinned(url: &Url, opts: &SftpOptions) -> Vec<String> {
    let mut out: Vec<String> = url
        .param("fingerprint")
        .map(str::to_string)
        .into_iter()
        .collect();
    let port = url.port_or_default();
    let name = if port == 22 {
        url.host.clone()
    } else {
        format!("[{}]:{port}", url.host)
    };
    for file in &opts.known_hosts {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(hosts), Some(algo), Some(key)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            if hosts.starts_with('#') || hosts.starts_with('@') {
                continue;
            }
            if !hosts.split(',').any(|h| host_matches(h, &name)) {
                continue;
            }
            if let Ok(k) = PublicKey::from_openssh(&format!("{algo} {key}")) {
                out.push(k.fingerprint(HashAlg::Sha256).to_string());
            }
        }
    }
    out
}

/// A `known_hosts` host entry (a name, or `|1|salt|hash`) against `name`.
fn host_matches(entry: &str, name: &str) -> bool {
    if let Some(hashed) = entry.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let (Some(salt), Some(hash)) = (
            crate::units::base64_decode(salt),
            crate::units::base64_decode(hash),
        ) else {
            return false;
        };
        return hmac_sha1(&salt, name.as_bytes()) == hash.as_slice();
    }
    entry.eq_ignore_ascii_case(name)
}

/// HMAC-SHA1, for hashed `known_hosts` names (OpenSSH's `HashKnownHosts`, Debian's default).
fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    use ring::hmac;
    let k = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&k, msg);
    let mut out = [0u8; 20];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Connect to `url`'s server, check its key, log in and start SFTP. The network is brought up first
/// when no link has an address.
pub fn connect(url: &Url, opts: &SftpOptions) -> Result<Conn, SftpError> {
    let shown = url.to_string();
    let fail = |why: String| SftpError {
        url: shown.clone(),
        why,
    };
    let (addr, rt) = reach(url)?;
    let pinned = pinned(url, opts);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let checker = Checker {
        pinned,
        seen: seen.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(60)),
        keepalive_interval: Some(Duration::from_secs(15)),
        ..Default::default()
    });
    let user = url.user.clone().unwrap_or_else(|| "root".into());
    let password = url.password.clone().or_else(|| opts.password.clone());
    let keys = identities(opts);
    let (ssh, sftp) = rt.block_on(async {
        let connected = tokio::time::timeout(
            Duration::from_secs(20),
            client::connect(config, addr, checker),
        )
        .await
        .map_err(|_| fail("the server did not answer within 20 s".into()))?;
        let mut ssh = connected.map_err(|e| {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            match (&seen.fingerprint, e) {
                (Some(fp), russh::Error::UnknownKey) => {
                    let algo = seen.algorithm.clone().unwrap_or_default();
                    fail(key_refusal(url, &algo, fp))
                }
                (_, e) => fail(connect_words(&e)),
            }
        })?;
        let mut authed = false;
        let mut tried = Vec::new();
        for key in &keys {
            let hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
            let r = ssh
                .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(key.1.clone(), hash))
                .await
                .map_err(|e| fail(format!("logging in: {e}")))?;
            tried.push(format!("key {}", key.0.display()));
            if r.success() {
                authed = true;
                break;
            }
        }
        if !authed {
            if let Some(p) = &password {
                let r = ssh
                    .authenticate_password(&user, p.expose())
                    .await
                    .map_err(|e| fail(format!("logging in: {e}")))?;
                tried.push("a password".into());
                authed = r.success();
            }
        }
        if !authed {
            return Err(fail(format!(
                "the server refused the login of {user} (tried {}); give the right key with \
                 --identity FILE, or a password (in the URL, --credentials or RESCUE_PASSWORD)",
                if tried.is_empty() {
                    "nothing: no key found and no password given".to_string()
                } else {
                    tried.join(", ")
                }
            )));
        }
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| fail(format!("opening an SSH channel: {e}")))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| fail(format!("starting SFTP: {e}")))?;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(30);
        sftp.init()
            .await
            .map_err(|e| fail(format!("the server's SFTP does not start: {e}")))?;
        Ok::<_, SftpError>((ssh, sftp))
    })?;
    Ok(Conn {
        rt,
        sftp: Arc::new(sftp),
        _ssh: ssh,
        shown,
    })
}

/// The server's address (the network brought up first when no link has one) and a runtime for the
/// connection.
fn reach(url: &Url) -> Result<(std::net::SocketAddr, tokio::runtime::Runtime), SftpError> {
    let fail = |why: String| SftpError {
        url: url.to_string(),
        why,
    };
    crate::net::ensure_up();
    let ip = crate::net::address(&url.host)
        .map_err(|why| fail(format!("cannot find the server: {why}")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the SSH client: {e}")))?;
    Ok((std::net::SocketAddr::new(ip, url.port_or_default()), rt))
}

/// Why a server whose key nothing pins, or whose key is not the pinned one, is refused.
fn key_refusal(url: &Url, algo: &str, fp: &str) -> String {
    if url.param("fingerprint").is_some() {
        format!(
            "the server's host key ({algo} {fp}) is NOT the one the URL pins: another machine may be \
             answering in its place. Nothing was sent. If the server's key was changed on purpose, check \
             the new one on the server (ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub) and pin it",
            algo_file(algo)
        )
    } else {
        format!(
            "the server's host key is {algo} {fp}, and nothing pins it (no ?fingerprint= in the URL, \
             no known_hosts entry). Check it on the server (ssh-keygen -lf \
             /etc/ssh/ssh_host_{}_key.pub), then add ?fingerprint={fp} to the URL",
            algo_file(algo)
        )
    }
}

/// A server's host key as the key exchange showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `rsa-sha2-512`…
    pub algorithm: String,
    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// A `known_hosts` file names this key for the host (or the URL's `fingerprint` does).
    pub pinned: bool,
    /// The command that prints the key's fingerprint on the server, to compare.
    pub check_on_server: String,
}

/// The server's host key and whether anything pins it, for a front end that shows an unpinned key to
/// the user to compare and confirm. Only the key exchange happens: no login, nothing of ours is sent. A
/// key other than the one the URL pins is an error, as for [`connect`].
pub fn host_key(url: &Url, opts: &SftpOptions) -> Result<HostKey, SftpError> {
    let shown = url.to_string();
    let fail = |why: String| SftpError {
        url: shown.clone(),
        why,
    };
    let (addr, rt) = reach(url)?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let checker = Checker {
        pinned: pinned(url, opts),
        seen: seen.clone(),
    };
    let config = Arc::new(client::Config::default());
    let result = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(20),
            client::connect(config, addr, checker),
        )
        .await
    });
    let pinned = match result {
        Err(_) => return Err(fail("the server did not answer within 20 s".into())),
        Ok(Ok(handle)) => {
            let _ = rt.block_on(handle.disconnect(russh::Disconnect::ByApplication, "", "en"));
            true
        }
        Ok(Err(russh::Error::UnknownKey)) => false,
        Ok(Err(e)) => return Err(fail(connect_words(&e))),
    };
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let (Some(fingerprint), Some(algorithm)) = (seen.fingerprint.clone(), seen.algorithm.clone())
    else {
        return Err(fail("the server sent no host key".into()));
    };
    if !pinned && url.param("fingerprint").is_some() {
        return Err(fail(key_refusal(url, &algorithm, &fingerprint)));
    }
    Ok(HostKey {
        check_on_server: format!(
            "ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub",
            algo_file(&algorithm)
        ),
        algorithm,
        fingerprint,
        pinned,
    })
}

/// The key file OpenSSH keeps for a host-key algorithm, for the advice.
fn algo_file(algo: &str) -> &'static str {
    if algo.contains("ed25519") {
        "ed25519"
    } else if algo.contains("ecdsa") {
        "ecdsa"
    } else {
        "rsa"
    }
}

fn connect_words(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
            "the server refused the connection: is sshd running, on this port?".into()
        }
        e => format!("cannot connect: {e}"),
    }
}

/// The private keys to try: the one given, else the usual ones in `~/.ssh` (unencrypted only).
fn identities(opts: &SftpOptions) -> Vec<(PathBuf, Arc<russh::keys::PrivateKey>)> {
    let files: Vec<PathBuf> = match &opts.identity {
        Some(f) => vec![f.clone()],
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|n| home.join(".ssh").join(n))
                .filter(|p| p.is_file())
                .collect()
        }
    };
    files
        .into_iter()
        .filter_map(|f| {
            let k = russh::keys::load_secret_key(&f, None).ok()?;
            Some((f, Arc::new(k)))
        })
        .collect()
}

/// An image file on an SFTP server, read with positional reads.
#[derive(Clone)]
pub struct SftpFile {
    conn: Arc<Conn>,
    handle: String,
    size: u64,
}

impl SftpFile {
    pub fn open(url: &Url, opts: &SftpOptions) -> Result<SftpFile, SftpError> {
        let conn = Arc::new(connect(url, opts)?);
        let path = url.path.clone();
        let (handle, size) = conn
            .rt
            .block_on(async {
                let attrs = conn.sftp.stat(path.clone()).await?;
                let h = conn
                    .sftp
                    .open(path, OpenFlags::READ, FileAttributes::default())
                    .await?;
                Ok::<_, russh_sftp::client::error::Error>((h.handle, attrs.attrs.size))
            })
            .map_err(|e| conn.fail(sftp_words(&e)))?;
        Ok(SftpFile {
            size: size.unwrap_or(0),
            conn,
            handle,
        })
    }
}

impl ReadAt for SftpFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let sftp = &self.conn.sftp;
        self.conn.rt.block_on(async {
            let mut reads = Vec::new();
            for (i, piece) in buf.chunks_mut(PIECE).enumerate() {
                let at = offset + (i * PIECE) as u64;
                let handle = self.handle.clone();
                reads.push(async move {
                    // A server may answer with fewer bytes than asked: ask again for the rest.
                    let mut got = 0;
                    while got < piece.len() {
                        let want = (piece.len() - got) as u32;
                        let data = sftp
                            .read(handle.clone(), at + got as u64, want)
                            .await
                            .map_err(|e| self.conn.io("reading", e))?;
                        if data.data.is_empty() {
                            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                        }
                        let n = data.data.len().min(piece.len() - got);
                        piece[got..got + n].copy_from_slice(&data.data[..n]);
                        got += n;
                    }
                    Ok(())
                });
            }
            futures::future::try_join_all(reads).await?;
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

/// A new image being written on an SFTP server as `NAME.partial`.
pub struct SftpWriter {
    conn: Arc<Conn>,
    handle: String,
    offset: u64,
    buf: Vec<u8>,
    partial: String,
    final_path: String,
}

impl SftpWriter {
    /// Create `url`'s `.partial` file (replacing a stale one); refused when the image exists already.
    pub fn create(url: &Url, opts: &SftpOptions) -> Result<SftpWriter, SftpError> {
        let conn = Arc::new(connect(url, opts)?);
        let final_path = url.path.clone();
        let partial = format!("{final_path}.partial");
        let handle = conn.rt.block_on(async {
            if conn.sftp.stat(final_path.clone()).await.is_ok() {
                return Err(
                    conn.fail("already exists on the server; remove it or choose another name")
                );
            }
            conn.sftp
                .open(
                    partial.clone(),
                    OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                    FileAttributes::default(),
                )
                .await
                .map(|h| h.handle)
                .map_err(|e| conn.fail(format!("creating {partial}: {}", sftp_words(&e))))
        })?;
        Ok(SftpWriter {
            conn,
            handle,
            offset: 0,
            buf: Vec::with_capacity(BATCH),
            partial,
            final_path,
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let conn = &*self.conn;
        let handle = &self.handle;
        let base = self.offset;
        let data = std::mem::take(&mut self.buf);
        conn.rt.block_on(async {
            let writes: Vec<_> = data
                .chunks(PIECE)
                .enumerate()
                .map(|(i, piece)| async move {
                    conn.sftp
                        .write(handle.clone(), base + (i * PIECE) as u64, piece.to_vec())
                        .await
                        .map_err(|e| conn.io("writing the image", e))
                })
                .collect();
            futures::future::try_join_all(writes).await?;
            Ok::<_, io::Error>(())
        })?;
        self.offset += data.len() as u64;
        self.buf = data;
        self.buf.clear();
        Ok(())
    }

    /// Send what is left, flush it to the server's disk (`fsync@openssh.com` where offered), close the
    /// file and give it its name; fails when a file of that name appeared meanwhile (SFTP's rename does
    /// not replace).
    pub fn finish(mut self) -> Result<Vec<String>, SftpError> {
        self.send().map_err(|e| self.conn.fail(e))?;
        let mut notes = Vec::new();
        let conn = self.conn.clone();
        let (handle, partial, final_path) = (
            self.handle.clone(),
            self.partial.clone(),
            self.final_path.clone(),
        );
        conn.rt.block_on(async {
            if conn.sftp.fsync(handle.clone()).await.is_err() {
                notes.push(
                    "the SFTP server cannot flush files (no fsync@openssh.com): the image was closed, not \
                     flushed to its disk"
                        .to_string(),
                );
            }
            conn.sftp
                .close(handle)
                .await
                .map_err(|e| conn.fail(format!("closing the image: {}", sftp_words(&e))))?;
            conn.sftp
                .rename(partial.clone(), final_path.clone())
                .await
                .map_err(|e| {
                    conn.fail(format!(
                        "naming {partial} {final_path}: {} (a file of that name may have appeared)",
                        sftp_words(&e)
                    ))
                })?;
            Ok::<_, SftpError>(())
        })?;
        Ok(notes)
    }

    /// Remove the partial file (a capture that failed or was cancelled).
    pub fn abandon(self) {
        let conn = self.conn.clone();
        let (handle, partial) = (self.handle.clone(), self.partial.clone());
        let _ = conn.rt.block_on(async {
            let _ = conn.sftp.close(handle).await;
            conn.sftp.remove(partial).await
        });
    }

    pub fn partial_path(&self) -> &str {
        &self.partial
    }
}

impl io::Write for SftpWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BATCH {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The `known_hosts` file to look in: the user's.
pub fn default_known_hosts() -> Vec<PathBuf> {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".ssh/known_hosts"))
        .into_iter()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hashed_known_hosts_names_match_as_openssh_hashes_them() {
        // "[127.0.0.1]:2222" hashed with the salt "saltsaltsaltsaltsalt", as `ssh-keygen -H` writes it
        // (the HMAC-SHA1 computed with `openssl dgst -sha1 -mac HMAC`).
        let entry = "|1|c2FsdHNhbHRzYWx0c2FsdHNhbHQ=|iebyi1cfsh9nkBkSyjb/Fnl3o2M=";
        assert!(host_matches(entry, "[127.0.0.1]:2222"));
        assert!(!host_matches(entry, "[127.0.0.1]:2223"));
        assert!(host_matches("Server.Example", "server.example"));
    }
}
