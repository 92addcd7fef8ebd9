//! An S3-compatible object store (`s3://[KEY:SECRET@]BUCKET/PREFIX?endpoint=URL&region=R`), for
//! repositories: whole-object GET and PUT (multipart above [`MULTIPART_OVER`]), ranged GET, HEAD, listing
//! and DELETE, path-style, signed with AWS Signature V4. `rusty-s3` builds the signed requests and reads
//! the XML answers; the requests go through the same `ureq` agent as web images (our resolver, rustls
//! with the Mozilla roots or `--ca-file`).
//!
//! SigV4 signatures carry the time, and servers refuse ones more than 15 minutes off: a rescued PC's clock
//! is often wrong, so the client signs with the server's time (its `Date` header) when they differ.

use std::io;
use std::sync::Mutex;
use std::time::Duration;

use rusty_s3::actions::{
    CompleteMultipartUpload, CreateMultipartUpload, ListObjectsV2, S3Action, UploadPart,
};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use ureq::Agent;

use crate::url::{Secret, Url};

/// Objects larger than this are sent in parts (S3 allows 5 GiB in one PUT; parts keep a failed
/// transfer's cost low and are what very large snapshot indexes need).
pub const MULTIPART_OVER: usize = 64 << 20;
const PART: usize = 16 << 20;
/// How long a signed request stays valid.
const VALID: Duration = Duration::from_secs(600);

/// Where the access key and secret come from besides the URL.
pub const ACCESS_KEY_VAR: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY_VAR: &str = "AWS_SECRET_ACCESS_KEY";

pub struct S3Client {
    agent: Agent,
    bucket: Bucket,
    creds: Credentials,
    /// Keys are stored under `prefix/` in the bucket ("" for the bucket's root).
    prefix: String,
    /// The location as shown (no secret).
    shown: String,
    /// Seconds to add to this machine's clock to get the server's.
    skew: Mutex<i64>,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Client({})", self.shown)
    }
}

fn err(kind: io::ErrorKind, text: String) -> io::Error {
    io::Error::new(kind, text)
}

impl S3Client {
    /// A client for `url`; the access key and secret from the URL, else `key`/`secret` (a credentials
    /// file, a prompt), else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`. Checks the bucket answers.
    pub fn open(
        url: &Url,
        key: Option<&str>,
        secret: Option<&Secret>,
        ca_file: Option<&std::path::Path>,
    ) -> io::Result<S3Client> {
        let shown = url.to_string();
        let bad = |why: String| err(io::ErrorKind::InvalidInput, format!("{shown}: {why}"));
        let endpoint = url.param("endpoint").ok_or_else(|| {
            bad(
                "name the S3 server with ?endpoint=https://HOST[:PORT] (path-style requests)"
                    .into(),
            )
        })?;
        let endpoint: url::Url = endpoint
            .parse()
            .map_err(|e| bad(format!("the endpoint `{endpoint}` is not a URL ({e})")))?;
        let region = url.param("region").unwrap_or("us-east-1").to_string();
        let bucket =
            Bucket::new(endpoint, UrlStyle::Path, url.host.clone(), region).map_err(|e| {
                bad(format!(
                    "the endpoint and bucket do not make an S3 URL ({e})"
                ))
            })?;
        let access = url
            .user
            .clone()
            .or_else(|| key.map(str::to_string))
            .or_else(|| std::env::var(ACCESS_KEY_VAR).ok())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                bad(format!(
                    "no access key: give it as the URL's user, in a credentials file (username=, \
                     password=), or in {ACCESS_KEY_VAR} and {SECRET_KEY_VAR}"
                ))
            })?;
        let secret = url
            .password
            .clone()
            .or_else(|| secret.cloned())
            .or_else(|| std::env::var(SECRET_KEY_VAR).ok().map(Secret::new))
            .ok_or_else(|| bad(format!("no secret key for {access}")))?;
        crate::net::ensure_up();
        let agent = super::http::agent(&shown, ca_file).map_err(|e| bad(e.to_string()))?;
        let prefix = url.path.trim_matches('/').to_string();
        let client = S3Client {
            agent,
            creds: Credentials::new(access, secret.expose()),
            bucket,
            prefix,
            shown,
            skew: Mutex::new(0),
        };
        client.check()?;
        Ok(client)
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn full(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    fn sign<'a>(&self, action: &impl S3Action<'a>) -> String {
        let skew = *self.skew.lock().unwrap_or_else(|p| p.into_inner());
        let now = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(skew);
        action.sign_with_time(VALID, &now).to_string()
    }

    /// A request's answer; transport failures named with the location.
    fn call(
        &self,
        what: &str,
        req: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> io::Result<ureq::http::Response<ureq::Body>> {
        req.map_err(|e| err(io::ErrorKind::Other, format!("{}: {what}: {e}", self.shown)))
    }

    /// The error for an answer that is not a success.
    fn status(&self, what: &str, mut resp: ureq::http::Response<ureq::Body>) -> io::Error {
        let code = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_string()
            .unwrap_or_default();
        let s3 = between(&body, "<Code>", "</Code>").unwrap_or_default();
        let advice = match (code, s3.as_str()) {
            (_, "NoSuchBucket") => {
                "the bucket does not exist: create it on the server first".to_string()
            }
            (403, "RequestTimeTooSkewed") => {
                "this machine's clock is too far from the server's".to_string()
            }
            (403, _) => "the server refused the access key or secret key".to_string(),
            (404, _) => "no such object".to_string(),
            _ => format!("HTTP {code} {s3}"),
        };
        err(
            match code {
                403 => io::ErrorKind::PermissionDenied,
                404 => io::ErrorKind::NotFound,
                _ => io::ErrorKind::Other,
            },
            format!("{}: {what}: {advice}", self.shown),
        )
    }

    /// Learn the server's time from a response, for the next signatures.
    fn note_date(&self, resp: &ureq::http::Response<ureq::Body>) -> bool {
        let Some(date) = resp.headers().get("date").and_then(|d| d.to_str().ok()) else {
            return false;
        };
        let Ok(server) = jiff::fmt::rfc2822::parse(date) else {
            return false;
        };
        let diff = server.timestamp().as_second() - jiff::Timestamp::now().as_second();
        let mut skew = self.skew.lock().unwrap_or_else(|p| p.into_inner());
        let changed = (diff - *skew).abs() > 60;
        if changed {
            *skew = diff;
        }
        changed
    }

    /// A listing of one key: the bucket answers and the credentials are accepted (signed again with the
    /// server's time when the clocks differ).
    fn check(&self) -> io::Result<()> {
        for _ in 0..2 {
            let mut list = ListObjectsV2::new(&self.bucket, Some(&self.creds));
            list.query_mut().insert("max-keys", "1");
            let resp = self.call(
                "listing the bucket",
                self.agent.get(self.sign(&list)).call(),
            )?;
            let skewed = self.note_date(&resp);
            if resp.status().is_success() {
                return Ok(());
            }
            if !(resp.status().as_u16() == 403 && skewed) {
                return Err(self.status("listing the bucket", resp));
            }
        }
        Err(err(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: the server refused the access key or secret key",
                self.shown
            ),
        ))
    }

    pub fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let full = self.full(key);
        let action = self.bucket.get_object(Some(&self.creds), &full);
        let resp = self.call(
            "reading an object",
            self.agent.get(self.sign(&action)).call(),
        )?;
        match resp.status().as_u16() {
            200 => self.body(key, resp).map(Some),
            404 => Ok(None),
            _ => Err(self.status(&format!("reading {key}"), resp)),
        }
    }

    pub fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let resp = self.ranged_get(key, offset, len as u64)?;
        if resp.status().as_u16() != 206 && resp.status().as_u16() != 200 {
            return Err(self.status(&format!("reading {key}"), resp));
        }
        let partial = resp.status().as_u16() == 206;
        let body = self.body(key, resp)?;
        let got = if partial {
            body
        } else {
            // A server that ignored the range: take the part asked for.
            body.get(offset as usize..).unwrap_or_default().to_vec()
        };
        if got.len() < len {
            return Err(err(
                io::ErrorKind::UnexpectedEof,
                format!("{}: {key} is shorter than expected", self.shown),
            ));
        }
        Ok(got[..len].to_vec())
    }

    /// A GET of `len` (> 0) bytes of the object `key` from `offset`.
    fn ranged_get(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> io::Result<ureq::http::Response<ureq::Body>> {
        let full = self.full(key);
        let action = self.bucket.get_object(Some(&self.creds), &full);
        let range = format!("bytes={offset}-{}", offset + len - 1);
        self.call(
            "reading an object",
            self.agent
                .get(self.sign(&action))
                .header("Range", &range)
                .call(),
        )
    }

    /// A response's whole body, the object `key`'s bytes.
    fn body(&self, key: &str, mut resp: ureq::http::Response<ureq::Body>) -> io::Result<Vec<u8>> {
        resp.body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| {
                err(
                    io::ErrorKind::Other,
                    format!("{}: reading {key}: {e}", self.shown),
                )
            })
    }

    /// The object's size and its first `len` bytes (all of it when shorter), or `None` when there is
    /// none: one ranged GET, the size read from its `Content-Range`.
    pub fn get_start(&self, key: &str, len: usize) -> io::Result<Option<(u64, Vec<u8>)>> {
        let resp = self.ranged_get(key, 0, len.max(1) as u64)?;
        let status = resp.status().as_u16();
        let total = match status {
            404 => return Ok(None),
            // Not satisfiable: an empty object.
            416 => return Ok(Some((0, Vec::new()))),
            206 => resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit_once('/'))
                .and_then(|(_, t)| t.trim().parse::<u64>().ok()),
            200 => None,
            _ => return Err(self.status(&format!("reading {key}"), resp)),
        };
        let body = self.body(key, resp)?;
        let total = match (status, total) {
            (200, _) => body.len() as u64,
            (_, Some(t)) => t,
            _ => {
                return Err(err(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: reading {key}: the server's partial answer gives no total size",
                        self.shown
                    ),
                ))
            }
        };
        let mut start = body;
        start.truncate(len);
        Ok(Some((total, start)))
    }

    /// The object's size, or `None` when there is none.
    pub fn head(&self, key: &str) -> io::Result<Option<u64>> {
        let full = self.full(key);
        let action = self.bucket.head_object(Some(&self.creds), &full);
        let resp = self.call(
            "looking up an object",
            self.agent.head(self.sign(&action)).call(),
        )?;
        match resp.status().as_u16() {
            200 => Ok(resp
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            404 => Ok(None),
            _ => Err(self.status(&format!("looking up {key}"), resp)),
        }
    }

    pub fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        if data.len() > MULTIPART_OVER {
            return self.put_parts(key, data);
        }
        let full = self.full(key);
        let action = self.bucket.put_object(Some(&self.creds), &full);
        let resp = self.call(
            "storing an object",
            self.agent.put(self.sign(&action)).send(data),
        )?;
        if !resp.status().is_success() {
            return Err(self.status(&format!("storing {key}"), resp));
        }
        Ok(())
    }

    /// A multipart upload: the object appears only when it is complete.
    fn put_parts(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let full = self.full(key);
        let create = self
            .bucket
            .create_multipart_upload(Some(&self.creds), &full);
        let mut resp = self.call(
            "starting an upload",
            self.agent.post(self.sign(&create)).send_empty(),
        )?;
        if !resp.status().is_success() {
            return Err(self.status(&format!("starting the upload of {key}"), resp));
        }
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let started = CreateMultipartUpload::parse_response(&text).map_err(|e| {
            err(
                io::ErrorKind::InvalidData,
                format!("{}: the answer to starting an upload: {e}", self.shown),
            )
        })?;
        let id = started.upload_id().to_string();
        let mut etags = Vec::new();
        for (i, part) in data.chunks(PART).enumerate() {
            let n = u16::try_from(i + 1)
                .map_err(|_| err(io::ErrorKind::InvalidInput, "too many parts".into()))?;
            let up = UploadPart::new(&self.bucket, Some(&self.creds), &full, n, &id);
            let resp = self.call(
                "uploading a part",
                self.agent.put(self.sign(&up)).send(part),
            )?;
            if !resp.status().is_success() {
                return Err(self.status(&format!("uploading part {n} of {key}"), resp));
            }
            let etag = resp
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            etags.push(etag);
        }
        let complete = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.creds),
            &full,
            &id,
            etags.iter().map(String::as_str),
        );
        let url = self.sign(&complete);
        let resp = self.call(
            "completing an upload",
            self.agent.post(url).send(complete.body()),
        )?;
        if !resp.status().is_success() {
            return Err(self.status(&format!("completing the upload of {key}"), resp));
        }
        Ok(())
    }

    /// Every object whose key starts with `prefix`: (key, size, last modified as the server wrote it).
    pub fn list(&self, prefix: &str) -> io::Result<Vec<(String, u64, String)>> {
        let full = self.full(prefix);
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = ListObjectsV2::new(&self.bucket, Some(&self.creds));
            list.with_prefix(full.as_str());
            if let Some(t) = &token {
                list.with_continuation_token(t.as_str());
            }
            let mut resp = self.call("listing objects", self.agent.get(self.sign(&list)).call())?;
            if !resp.status().is_success() {
                return Err(self.status("listing objects", resp));
            }
            let text = resp
                .body_mut()
                .with_config()
                .limit(256 << 20)
                .read_to_string()
                .map_err(|e| {
                    err(
                        io::ErrorKind::Other,
                        format!("{}: listing objects: {e}", self.shown),
                    )
                })?;
            let page = ListObjectsV2::parse_response(&text).map_err(|e| {
                err(
                    io::ErrorKind::InvalidData,
                    format!("{}: the object listing: {e}", self.shown),
                )
            })?;
            for c in page.contents {
                if let Some(k) = c.key.strip_prefix(&strip) {
                    out.push((k.to_string(), c.size, c.last_modified));
                }
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn delete(&self, key: &str) -> io::Result<()> {
        let full = self.full(key);
        let action = self.bucket.delete_object(Some(&self.creds), &full);
        let resp = self.call(
            "removing an object",
            self.agent.delete(self.sign(&action)).call(),
        )?;
        if !resp.status().is_success() && resp.status().as_u16() != 404 {
            return Err(self.status(&format!("removing {key}"), resp));
        }
        Ok(())
    }
}

/// The text between `a` and `b` in `s`.
fn between(s: &str, a: &str, b: &str) -> Option<String> {
    let start = s.find(a)? + a.len();
    let end = s[start..].find(b)? + start;
    Some(s[start..end].to_string())
}
