//! Images read over HTTP and HTTPS (`restore`, `verify`, `inspect`; read-only): an [`HttpFile`] reads any
//! byte range of the image with a range request, so a restore fetches only the chunks it needs, from as
//! many threads as it reads with (the agent keeps one connection per thread), and nothing is staged in
//! memory or on a disk. TLS is verified against the Mozilla roots (or only the CAs of `--ca-file`); host
//! names are resolved by `net`, never by the C library. Every response after the first must come from the
//! same file (`If-Range` with its `ETag` or date), so an image replaced on the server while it is being
//! read is an error, not a mix of two images.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::http::Uri;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

use crate::image::ReadAt;
use crate::url::{Scheme, Secret, Url};

/// How many times a failed range request is tried again (after 1, 2, 4 s) before the read fails.
const RETRIES: u32 = 3;

/// What an HTTP(S) location needs besides its URL.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Trust only the CA certificates (PEM) in this file instead of the Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// The password when the URL names a user but holds none.
    pub password: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: {why}")]
    Request { url: String, why: String },
    #[error("{url}: the server answered HTTP {status}{}: {advice}", if .reason.is_empty() { String::new() } else { format!(" ({})", .reason) })]
    Status {
        url: String,
        status: u16,
        reason: String,
        advice: &'static str,
    },
    #[error(
        "{url}: the server sends only whole files (it ignored the byte range asked for); reading an image \
         over HTTP needs range requests — serve it with nginx, Apache, lighttpd or caddy, or use an SMB \
         share"
    )]
    NoRanges { url: String },
    #[error(
        "{url}: the image changed on the server while it was being read (its ETag or date is not the \
         one it had when opened); run again once it is no longer being replaced"
    )]
    Changed { url: String },
    #[error("{url}: the CA file {file}: {why}")]
    CaFile {
        url: String,
        file: String,
        why: String,
    },
}

/// An image file on an HTTP(S) server, read by byte ranges.
#[derive(Clone)]
pub struct HttpFile {
    agent: Agent,
    /// The URL as sent (no user or password in it).
    target: String,
    /// The URL as shown (password redacted).
    shown: String,
    authorization: Option<String>,
    size: u64,
    /// `ETag` (strong) or `Last-Modified` of the file when opened, sent as `If-Range`.
    validator: Option<String>,
}

impl std::fmt::Debug for HttpFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpFile({}, {} bytes)", self.shown, self.size)
    }
}

/// Host names resolved by [`crate::net::resolve`] (the rescue system has no NSS and its own resolver
/// configuration).
#[derive(Debug)]
struct NetResolver;

impl Resolver for NetResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let ips = crate::net::resolve(host).map_err(|e| {
            ureq::Error::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("cannot find the server {host}: {}", crate::units::chain(&e)),
            ))
        })?;
        let mut out = self.empty();
        for ip in ips.into_iter().take(16) {
            out.push(SocketAddr::new(ip, port));
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// An agent that verifies TLS against the Mozilla roots, or only against the CAs in `ca_file`.
pub fn agent(shown: &str, ca_file: Option<&Path>) -> Result<Agent, HttpError> {
    let roots = match ca_file {
        None => RootCerts::WebPki,
        Some(file) => {
            let bad = |why: String| HttpError::CaFile {
                url: shown.to_string(),
                file: file.display().to_string(),
                why,
            };
            let pem = std::fs::read(file).map_err(|e| bad(e.to_string()))?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad(
                    "holds no certificate (PEM, -----BEGIN CERTIFICATE-----)".into(),
                ));
            }
            RootCerts::new_with_certs(&certs)
        }
    };
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(120)))
        .max_redirects(5)
        .user_agent(concat!("rescue/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(Agent::with_parts(
        config,
        DefaultConnector::default(),
        NetResolver,
    ))
}

/// `http(s)://host[:port]/path?query`, without user and password.
fn target_of(url: &Url) -> String {
    let mut bare = url.clone();
    bare.user = None;
    bare.password = None;
    bare.expose()
}

/// `Basic …` for the URL's user and password (or `password`), if it names a user.
fn authorization(url: &Url, password: Option<&Secret>) -> Option<String> {
    let user = url.user.as_deref()?;
    let pass = url
        .password
        .as_ref()
        .or(password)
        .map(Secret::expose)
        .unwrap_or("");
    Some(format!(
        "Basic {}",
        crate::units::base64(format!("{user}:{pass}").as_bytes())
    ))
}

/// What to tell the user about an HTTP status.
fn advice(status: u16) -> &'static str {
    match status {
        401 => {
            "the server wants a user name and password: give them in the URL (https://USER@HOST/…) \
                with the password from --credentials or RESCUE_PASSWORD"
        }
        403 => "the server refuses this file to this user; check its permissions on the server",
        404 | 410 => {
            "there is no such file on the server; check the path (inspect lists what an image \
                      holds, not a server's folders)"
        }
        416 => "the file is smaller than its index says: it is cut short on the server",
        500..=599 => "the server failed; see its error log",
        _ => "the server did not send the file",
    }
}

/// The error for an answer with `status`, and what to do about it.
fn status_error(shown: &str, status: ureq::http::StatusCode, advice: &'static str) -> HttpError {
    HttpError::Status {
        url: shown.to_string(),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or_default().to_string(),
        advice,
    }
}

/// A `ureq` error in words, with advice where there is some.
fn request_error(shown: &str, e: ureq::Error) -> HttpError {
    let text = crate::units::chain(&e);
    let why = match e {
        ureq::Error::Timeout(_) => format!("the server did not answer in time ({text})"),
        ureq::Error::HostNotFound => "cannot find the server (no address for its name)".into(),
        ureq::Error::ConnectionFailed => "cannot connect to the server".into(),
        _ if text.contains("certificate") || text.contains("UnknownIssuer") => format!(
            "the server's TLS certificate is not trusted ({text}); if the server uses a CA of its own, \
             give its certificate with --ca-file FILE"
        ),
        ureq::Error::Io(ref io) if io.kind() == io::ErrorKind::ConnectionRefused => format!(
            "the server refused the connection ({text}); is the web server running, on this port?"
        ),
        _ => text,
    };
    HttpError::Request {
        url: shown.to_string(),
        why,
    }
}

impl HttpFile {
    /// Open `url` for reading: one request for its first byte learns its size and checks that the
    /// server serves ranges. The network is brought up (DHCP) first when no link has an address.
    pub fn open(url: &Url, opts: &HttpOptions) -> Result<HttpFile, HttpError> {
        debug_assert!(matches!(url.scheme, Scheme::Http | Scheme::Https));
        let shown = url.to_string();
        crate::net::ensure_up();
        let mut file = HttpFile {
            agent: agent(&shown, opts.ca_file.as_deref())?,
            target: target_of(url),
            shown,
            authorization: authorization(url, opts.password.as_ref()),
            size: 0,
            validator: None,
        };
        let resp = file.get(0, 0)?;
        let status = resp.status().as_u16();
        if status == 200 {
            return Err(HttpError::NoRanges { url: file.shown });
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        file.size = header("content-range")
            .as_deref()
            .and_then(content_range_total)
            .ok_or_else(|| HttpError::Request {
                url: file.shown.clone(),
                why: "the server's answer to a range request has no usable Content-Range (bytes \
                      0-0/SIZE)"
                    .into(),
            })?;
        // A weak ETag may not be used with If-Range; then the date.
        file.validator = header("etag")
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| header("last-modified"));
        Ok(file)
    }

    /// GET `len` bytes (at least one) at `offset`; a status other than 206 is an error (200 to the first
    /// request: the server ignores ranges, handled by `open`).
    fn get(&self, offset: u64, len: u64) -> Result<ureq::http::Response<ureq::Body>, HttpError> {
        let mut req = self.agent.get(&self.target).header(
            "Range",
            format!("bytes={offset}-{}", offset + len.max(1) - 1),
        );
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        if let Some(v) = &self.validator {
            req = req.header("If-Range", v);
        }
        // The body is the image's, never compressed by the server on the way.
        req = req.header("Accept-Encoding", "identity");
        let resp = req.call().map_err(|e| request_error(&self.shown, e))?;
        match resp.status().as_u16() {
            206 => Ok(resp),
            200 if self.size == 0 => Ok(resp),
            200 => Err(HttpError::Changed {
                url: self.shown.clone(),
            }),
            status => Err(status_error(&self.shown, resp.status(), advice(status))),
        }
    }

    fn read_once(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut resp = self.get(offset, buf.len() as u64).map_err(io_error)?;
        let start = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(content_range_start);
        if start != Some(offset) {
            return Err(io::Error::other(format!(
                "{}: the server sent another range than the one asked for (bytes {offset}-)",
                self.shown
            )));
        }
        resp.body_mut().as_reader().read_exact(buf)
    }

    pub fn url(&self) -> &str {
        &self.shown
    }
}

fn io_error(e: HttpError) -> io::Error {
    let kind = match &e {
        HttpError::Status { status: 416, .. } => io::ErrorKind::UnexpectedEof,
        HttpError::Request { .. } => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// `bytes START-END/TOTAL` → TOTAL.
fn content_range_total(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// `bytes START-END/TOTAL` → START.
fn content_range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

impl ReadAt for HttpFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if offset.saturating_add(buf.len() as u64) > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut tries = 0;
        loop {
            match self.read_once(buf, offset) {
                Ok(()) => return Ok(()),
                // A dropped connection or a slow answer is tried again; what the server said is final.
                Err(e)
                    if tries < RETRIES
                        && matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::UnexpectedEof
                                | io::ErrorKind::TimedOut
                        ) =>
                {
                    std::thread::sleep(Duration::from_secs(1 << tries));
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

/// A small file (a job) fetched whole, up to `limit` bytes.
pub fn fetch(url: &Url, opts: &HttpOptions, limit: u64) -> Result<Vec<u8>, HttpError> {
    let shown = url.to_string();
    crate::net::ensure_up();
    let agent = agent(&shown, opts.ca_file.as_deref())?;
    let mut req = agent.get(target_of(url));
    if let Some(a) = authorization(url, opts.password.as_ref()) {
        req = req.header("Authorization", a);
    }
    let mut resp = req.call().map_err(|e| request_error(&shown, e))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(status_error(&shown, resp.status(), advice(status)));
    }
    resp.body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(|e| request_error(&shown, e))
}

/// Write `bytes` to `url` with a PUT (a result file sent to a WebDAV folder); the server must not have
/// a file there already (`If-None-Match: *`).
pub fn put(url: &Url, opts: &HttpOptions, bytes: &[u8]) -> Result<(), HttpError> {
    let shown = url.to_string();
    let agent = agent(&shown, opts.ca_file.as_deref())?;
    let mut req = agent.put(target_of(url)).header("If-None-Match", "*");
    if let Some(a) = authorization(url, opts.password.as_ref()) {
        req = req.header("Authorization", a);
    }
    let resp = req.send(bytes).map_err(|e| request_error(&shown, e))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        let advice = match status {
            405 | 501 => "the server does not accept uploads here (for nginx: dav_methods PUT)",
            412 => "a file of that name is there already",
            _ => advice(status),
        };
        return Err(status_error(&shown, resp.status(), advice));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_read() {
        assert_eq!(content_range_total("bytes 0-0/12345"), Some(12345));
        assert_eq!(content_range_start("bytes 4096-8191/12345"), Some(4096));
        assert_eq!(content_range_total("bytes 0-0/*"), None);
        assert_eq!(content_range_start("items 1-2/3"), None);
    }

    #[test]
    fn the_password_goes_in_a_header_not_the_url() {
        let url = Url::parse("https://tech:s3cret@example.org:8443/img/a.rimg?sig=1").unwrap();
        assert_eq!(target_of(&url), "https://example.org:8443/img/a.rimg?sig=1");
        assert_eq!(
            authorization(&url, None).unwrap(),
            format!("Basic {}", crate::units::base64(b"tech:s3cret"))
        );
        let anonymous = Url::parse("http://example.org/a.rimg").unwrap();
        assert_eq!(authorization(&anonymous, None), None);
    }
}
