//! Passwords for network locations from elsewhere than the URL: a credentials file (`--credentials FILE`,
//! a job's `image.credentials`) in the form `mount.cifs` and `smbclient -A` read, and
//! `RESCUE_PASSWORD`. A password is held as a [`Secret`]: never printed.

use std::path::Path;

use anyhow::Context;

use super::place::NetOptions;
use crate::url::{Location, Scheme, Secret};

pub use crate::url::PASSWORD_VAR;

/// Read `username=` and `password=` (and `user=`, `pass=`) lines; `#` comments and `domain=` are allowed,
/// anything else is named as a mistake (without the line, which may be a password).
pub fn parse_credentials(text: &str) -> Result<(Option<String>, Option<Secret>), String> {
    let (mut user, mut password) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {} is not KEY=VALUE (username=…, password=…)",
                n + 1
            ));
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "username" | "user" => user = Some(value.trim().to_string()),
            // The password is taken as written: spaces may be part of it.
            "password" | "pass" => password = Some(Secret::new(value)),
            "domain" | "workgroup" => {}
            other => {
                return Err(format!(
                    "line {}: unknown key `{other}` (username, password, domain)",
                    n + 1
                ))
            }
        }
    }
    Ok((user, password))
}

/// Where a job or the command line can also give an encrypted repository's passphrase.
pub const PASSPHRASE_VAR: &str = "RESCUE_PASSPHRASE";

/// A passphrase file's passphrase: its first line, as written (without the line end).
pub fn read_passphrase_file(file: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the passphrase file {}", file.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        anyhow::bail!("the passphrase file {} is empty", file.display());
    }
    Ok(Secret::new(line))
}

impl NetOptions {
    /// Add the passphrase `file` holds, else `RESCUE_PASSPHRASE`'s; one set already is kept.
    pub fn with_passphrase(mut self, file: Option<&Path>) -> anyhow::Result<NetOptions> {
        if self.passphrase.is_none() {
            self.passphrase = match file {
                Some(f) => Some(read_passphrase_file(f)?),
                None => std::env::var(PASSPHRASE_VAR)
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(Secret::new),
            };
        }
        Ok(self)
    }

    /// Add what `file` (a credentials file) and `RESCUE_PASSWORD` hold; what is set already is kept.
    pub fn with_credentials(mut self, file: Option<&Path>) -> anyhow::Result<NetOptions> {
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading the credentials file {}", file.display()))?;
            let (user, password) = parse_credentials(&text)
                .map_err(|e| anyhow::anyhow!("the credentials file {}: {e}", file.display()))?;
            self.user = self.user.or(user);
            self.password = self.password.or(password);
        }
        if self.password.is_none() {
            self.password = std::env::var(PASSWORD_VAR)
                .ok()
                .filter(|p| !p.is_empty())
                .map(Secret::new);
        }
        Ok(self)
    }

    /// Whether `loc` names a user but no password is known for it: the front end may ask for one.
    pub fn needs_password(&self, loc: &Location) -> bool {
        match loc {
            Location::Local(_) => false,
            Location::Snapshot(s) => self.needs_password(&s.repo),
            Location::Remote(url) => {
                // NFS has no passwords; SFTP logs in with keys first, and says when it needs one.
                !matches!(url.scheme, Scheme::Nfs | Scheme::Sftp)
                    && (url.user.is_some() || self.user.is_some())
                    && url.password.is_none()
                    && self.password.is_none()
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_are_read_and_mistakes_named_without_the_line() {
        let (u, p) =
            parse_credentials("# for the NAS\nusername=tech\npassword= with space\ndomain=WORK\n")
                .unwrap();
        assert_eq!(u.as_deref(), Some("tech"));
        assert_eq!(p.unwrap().expose(), " with space");
        let e = parse_credentials("username=tech\nhunter2\n").unwrap_err();
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
        let e = parse_credentials("secret=hunter2\n").unwrap_err();
        assert!(e.contains("`secret`") && !e.contains("hunter2"), "{e}");
    }

    proptest::proptest! {
        /// Any user and password written as a file read back as they were; any text is read without
        /// panicking, and a refusal never repeats a line of it.
        #[test]
        fn credentials_files_round_trip(user in "[A-Za-z0-9._-]{1,20}", password in "[^\r\n]{0,40}",
                                        junk in "[a-z0-9]{9,40}") {
            let (u, p) = parse_credentials(&format!("username={user}\npassword={password}\n")).unwrap();
            proptest::prop_assert_eq!(u.as_deref(), Some(user.as_str()));
            let p = p.unwrap();
            proptest::prop_assert_eq!(p.expose(), password.as_str());
            if let Err(e) = parse_credentials(&format!("username={user}\n{junk}\n")) {
                proptest::prop_assert!(!e.contains(&junk), "{}", e);
            }
        }
    }

    #[test]
    fn a_password_is_needed_only_for_a_named_user_without_one() {
        let none = NetOptions::default();
        let loc = |s: &str| Location::parse(s).unwrap();
        assert!(none.needs_password(&loc("smb://tech@nas/share/a.rimg")));
        assert!(!none.needs_password(&loc("smb://tech:pw@nas/share/a.rimg")));
        assert!(!none.needs_password(&loc("smb://nas/share/a.rimg")));
        assert!(!none.needs_password(&loc("/images/a.rimg")));
        assert!(!none.needs_password(&loc("nfs://nas/export/a.rimg")));
        let with = NetOptions {
            password: Some(Secret::new("pw")),
            ..Default::default()
        };
        assert!(!with.needs_password(&loc("https://tech@web/a.rimg")));
    }
}
