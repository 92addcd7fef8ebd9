//! Typing a network location: a URL field and a password field (shown as one `*` per character), checked
//! on Enter. The capture wizard uses it for the share an image is written to, the image picker (restore,
//! verify) for an image on a share or a web server. The password goes into the URL's [`Secret`], which
//! never prints; the URL field is shown with any password in it redacted.
//!
//! An sftp:// server's host key is read before the location is taken (Enter asks the front end to read
//! it, [`EntryKey::ReadHostKey`]): a key `known_hosts` or the URL pins goes on at once; an unpinned one is
//! shown with the command that prints it on the server, and `y` pins it in the URL (`?fingerprint=`), as
//! an ssh client asks before its first connection. Nothing is sent to a server before its key is pinned.

use crate::ops::{HostKey, Location, NetOptions, Secret};
use crate::store::IMAGE_EXT;
use crate::url::redact;
use crate::url::{Scheme, SnapshotRef, Url};

use super::app::Key;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlField {
    Url,
    Password,
}

/// The two fields and what they are for.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlEntry {
    pub text: String,
    pub password: Secret,
    pub field: UrlField,
    /// For writing an image (a scheme that can take one; `.rimg` added) rather than reading one.
    pub write: bool,
    /// Enter was pressed once without the password the URL's user needs: the next Enter goes on.
    asked: bool,
    pub host_key: KeyCheck,
}

/// Where the sftp:// server's host key stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyCheck {
    #[default]
    NotRead,
    /// Being read in the background.
    Reading,
    /// Read; nothing pins it: shown for the user to compare and confirm.
    Unpinned(HostKey),
    /// Pinned (by `known_hosts`, the URL, or the user's `y`).
    Pinned,
}

/// What a key in the fields did.
#[derive(Debug)]
pub enum EntryKey {
    Stay,
    /// A checked location, the password in its URL.
    Done(Location),
    /// Back to the list before.
    Back,
    /// Read this sftp:// server's host key in the background and answer with
    /// [`UrlEntry::on_host_key`].
    ReadHostKey(Location),
}

impl UrlEntry {
    pub fn new(write: bool) -> UrlEntry {
        UrlEntry {
            text: String::new(),
            password: Secret::new(""),
            field: UrlField::Url,
            write,
            asked: false,
            host_key: KeyCheck::NotRead,
        }
    }

    /// The answer to [`EntryKey::ReadHostKey`]: whether the location can now be taken (Enter again, which
    /// the caller sends); otherwise the key waits for the user's `y`, or `error` says what failed.
    pub fn on_host_key(
        &mut self,
        result: Result<Option<HostKey>, String>,
        error: &mut Option<String>,
    ) -> bool {
        if self.host_key != KeyCheck::Reading {
            // The user stopped waiting (Esc) or changed the URL.
            return false;
        }
        match result {
            Ok(Some(k)) if !k.pinned => {
                self.host_key = KeyCheck::Unpinned(k);
                false
            }
            Ok(_) => {
                self.host_key = KeyCheck::Pinned;
                true
            }
            Err(e) => {
                self.host_key = KeyCheck::NotRead;
                *error = Some(e);
                false
            }
        }
    }

    /// Keys while a host key is read or shown.
    fn host_key_key(&mut self, key: Key, error: &mut Option<String>) -> EntryKey {
        match (&self.host_key, key) {
            (KeyCheck::Unpinned(k), Key::Char('y') | Key::Char('Y')) => {
                let fp = k.fingerprint.clone();
                if let Ok(Location::Remote(mut url)) = Location::parse(self.text.trim()) {
                    url.query.retain(|(k, _)| k != "fingerprint");
                    url.query.push(("fingerprint".into(), fp));
                    self.text = url.to_string();
                }
                self.host_key = KeyCheck::Pinned;
                self.key(Key::Enter, error)
            }
            (KeyCheck::Unpinned(_), Key::Char('n') | Key::Char('N') | Key::Esc)
            | (KeyCheck::Reading, Key::Esc) => {
                self.host_key = KeyCheck::NotRead;
                *error = Some("the server's key was not trusted; nothing was sent to it".into());
                EntryKey::Stay
            }
            _ => EntryKey::Stay,
        }
    }

    /// The URL as shown: a password typed into it is redacted.
    pub fn shown_url(&self) -> String {
        redact(&self.text)
    }

    /// The password as shown: one `*` per character.
    pub fn shown_password(&self) -> String {
        "*".repeat(self.password.expose().chars().count())
    }

    /// An example for the help text.
    pub fn example(&self) -> &'static str {
        if self.write {
            "smb://user@nas/share/images/pc.rimg, or smb://user@nas/share/repo::pc17 (a snapshot in a \
             repository)"
        } else {
            "smb://user@nas/share/images/pc.rimg, https://server/images/pc.rimg, or a repository: \
             smb://user@nas/share/repo"
        }
    }

    pub fn key(&mut self, key: Key, error: &mut Option<String>) -> EntryKey {
        if matches!(self.host_key, KeyCheck::Reading | KeyCheck::Unpinned(_)) {
            return self.host_key_key(key, error);
        }
        if matches!(key, Key::Char(_) | Key::Backspace) && self.field == UrlField::Url {
            // Another URL: another server, or another pin.
            self.host_key = KeyCheck::NotRead;
        }
        match key {
            Key::Tab | Key::BackTab => {
                self.field = match self.field {
                    UrlField::Url => UrlField::Password,
                    UrlField::Password => UrlField::Url,
                }
            }
            Key::Up => self.field = UrlField::Url,
            Key::Down => self.field = UrlField::Password,
            Key::Char(c) if !c.is_control() => match self.field {
                UrlField::Url => self.text.push(c),
                UrlField::Password => {
                    self.password = Secret::new(format!("{}{c}", self.password.expose()))
                }
            },
            Key::Backspace => match self.field {
                UrlField::Url => {
                    self.text.pop();
                }
                UrlField::Password => {
                    let mut p = self.password.expose().to_string();
                    p.pop();
                    self.password = Secret::new(p);
                }
            },
            Key::Enter => match self.check() {
                Ok(Location::Remote(url))
                    if url.scheme == Scheme::Sftp && self.host_key != KeyCheck::Pinned =>
                {
                    self.host_key = KeyCheck::Reading;
                    return EntryKey::ReadHostKey(Location::Remote(url));
                }
                Ok(loc) => return EntryKey::Done(loc),
                Err(e) => *error = Some(e),
            },
            Key::Esc => return EntryKey::Back,
            _ => {}
        }
        EntryKey::Stay
    }

    /// The location typed, or why it cannot be used. A password typed into the URL moves to the password
    /// field; for writing, `.rimg` is added to a name without it (the URL field shows both).
    pub fn check(&mut self) -> Result<Location, String> {
        let text = self.text.trim().to_string();
        if text.is_empty() {
            return Err(format!("type the image's URL, e.g. {}", self.example()));
        }
        let not_url = || {
            format!(
                "{} is not a URL: type one like {} (drives of this machine are in the list before: Esc)",
                redact(&text),
                self.example()
            )
        };
        // A snapshot in a repository on a share or an S3 server: `URL::NAME`.
        let (mut url, snapshot) = match Location::parse(&text).map_err(|e| e.to_string())? {
            Location::Remote(url) => (url, None),
            Location::Snapshot(s) => match &*s.repo {
                Location::Remote(url) => (url.clone(), Some(s.clone())),
                _ => return Err(not_url()),
            },
            Location::Local(_) => return Err(not_url()),
        };
        if snapshot.is_some() || url.scheme == Scheme::S3 {
            if !matches!(url.scheme, Scheme::Smb | Scheme::Nfs | Scheme::S3) {
                return Err(format!(
                    "{url}: a repository is a folder on an SMB or NFS share, or an S3 bucket (s3://)"
                ));
            }
            if self.write && snapshot.is_none() {
                return Err(format!(
                    "{url}: an S3 bucket holds a repository: end the URL with ::NAME, the snapshot's \
                     name (e.g. ::pc17)"
                ));
            }
        } else {
            crate::ops::check_location(&Location::Remote(url.clone()), self.write)?;
        }
        if let Some(p) = url.password.take() {
            if !self.password.expose().is_empty() && self.password != p {
                return Err(
                    "the URL holds a password and the password field another one: keep one of them"
                        .into(),
                );
            }
            self.password = p;
        }
        if self.write && snapshot.is_none() {
            if url.path.ends_with('/') {
                return Err(format!(
                    "{url}: names a folder; end the URL with the image's file name (…/pc.{IMAGE_EXT})"
                ));
            }
            if !url.path.ends_with(&format!(".{IMAGE_EXT}")) {
                url.path.push_str(&format!(".{IMAGE_EXT}"));
            }
        }
        // What the field shows from now on: no password, the name as it will be used.
        let whole = |url: &Url| match &snapshot {
            Some(s) => Location::Snapshot(SnapshotRef {
                repo: Box::new(Location::Remote(url.clone())),
                ..s.clone()
            }),
            None => Location::Remote(url.clone()),
        };
        self.text = whole(&url).to_string();
        let typed = (!self.password.expose().is_empty()).then(|| self.password.clone());
        let loc = Location::Remote(url.clone());
        if typed.is_none() && NetOptions::default().needs_password(&loc) && !self.asked {
            self.asked = true;
            self.field = UrlField::Password;
            return Err(format!(
                "type the password of {} (Tab: the password field), or press Enter again to go on \
                 without one",
                url.user.as_deref().unwrap_or("the user")
            ));
        }
        url.password = typed;
        Ok(whole(&url))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn typed(write: bool, url: &str, password: &str) -> UrlEntry {
        let mut e = UrlEntry::new(write);
        let mut err = None;
        for c in url.chars() {
            e.key(Key::Char(c), &mut err);
        }
        e.key(Key::Tab, &mut err);
        for c in password.chars() {
            e.key(Key::Char(c), &mut err);
        }
        e
    }

    #[test]
    fn the_password_goes_into_the_url_and_is_never_shown() {
        let mut e = typed(true, "smb://tech@nas/share/images/pc", "s3cret,pw");
        assert_eq!(e.shown_password(), "*********");
        assert!(!format!("{e:?}").contains("s3cret"));
        let Location::Remote(u) = e.check().unwrap() else {
            panic!()
        };
        assert_eq!(u.password.as_ref().unwrap().expose(), "s3cret,pw");
        assert_eq!(u.path, "/share/images/pc.rimg");
        assert_eq!(u.to_string(), "smb://tech:***@nas/share/images/pc.rimg");
        assert_eq!(e.text, "smb://tech@nas/share/images/pc.rimg");
    }

    #[test]
    fn a_password_typed_into_the_url_moves_to_its_field() {
        let mut e = typed(false, "https://tech:hunter2@web/a.rimg", "");
        assert_eq!(e.shown_url(), "https://tech:***@web/a.rimg");
        let Location::Remote(u) = e.check().unwrap() else {
            panic!()
        };
        assert_eq!(u.password.unwrap().expose(), "hunter2");
        assert!(!e.text.contains("hunter2"));
        assert_eq!(e.shown_password(), "*******");
        let mut e = typed(false, "https://tech:hunter2@web/a.rimg", "other");
        assert!(e.check().unwrap_err().contains("keep one"));
    }

    #[test]
    fn unusable_locations_are_refused_with_the_reason() {
        let why = |write, url: &str| typed(write, url, "pw").check().unwrap_err();
        assert!(why(true, "").contains("type the image's URL"));
        assert!(why(true, "/mnt/x.rimg").contains("is not a URL"));
        assert!(why(true, "ftp://nas/x.rimg").contains("unknown scheme"));
        assert!(why(true, "https://web/images/x.rimg").contains("cannot take an image"));
        assert!(why(true, "smb://nas/images").contains("names the share and then the file"));
        assert!(why(true, "smb://nas/images/folder/").contains("names a folder"));
        assert!(why(false, "smb:///images/x.rimg").contains("no host"));
        // Reading: any scheme, and the name is taken as it is.
        let mut e = typed(false, "http://web/pc.img", "");
        assert!(matches!(e.check(), Ok(Location::Remote(u)) if u.path == "/pc.img"));
    }

    #[test]
    fn a_snapshot_in_a_repository_on_a_share_or_s3_is_a_location() {
        let mut e = typed(true, "smb://tech@nas/share/repo::pc17", "pw");
        let Location::Snapshot(s) = e.check().unwrap() else {
            panic!()
        };
        assert_eq!(s.name, "pc17");
        let Location::Remote(u) = *s.repo else {
            panic!()
        };
        assert_eq!(u.path, "/share/repo");
        assert_eq!(u.password.unwrap().expose(), "pw");
        assert_eq!(e.text, "smb://tech@nas/share/repo::pc17");
        // The password typed into the repository's URL moves to its field.
        let mut e = typed(
            false,
            "s3://KEY:SECRET@bucket/p?endpoint=http://10.0.2.2:7480",
            "",
        );
        let Location::Remote(u) = e.check().unwrap() else {
            panic!()
        };
        assert_eq!(u.password.unwrap().expose(), "SECRET");
        assert!(!e.text.contains("SECRET"));
        let why = |write, url: &str| typed(write, url, "pw").check().unwrap_err();
        assert!(why(true, "s3://KEY@bucket/p").contains("end the URL with ::NAME"));
        assert!(why(true, "https://web/repo::pc").contains("a repository is a folder"));
        assert!(why(false, "/mnt/repo::pc").contains("is not a URL"));
    }

    #[test]
    fn a_missing_password_is_asked_for_once() {
        let mut e = typed(true, "smb://tech@nas/share/pc.rimg", "");
        let mut err = None;
        assert!(matches!(e.key(Key::Enter, &mut err), EntryKey::Stay));
        assert!(err.unwrap().contains("password of tech"));
        assert_eq!(e.field, UrlField::Password);
        assert!(matches!(
            e.key(Key::Enter, &mut None),
            EntryKey::Done(Location::Remote(u)) if u.password.is_none()
        ));
        // Guest access names no user: nothing to ask.
        let mut e = typed(true, "smb://nas/share/pc.rimg", "");
        assert!(e.check().is_ok());
    }
}
