//! Typing an encrypted repository's passphrase: one field shown as one `*` per character, or two for a
//! new repository (the same passphrase twice, as `rescue repo init --encrypt` asks). The passphrase is a
//! [`Secret`]: it never prints, and it reaches the operation inside the snapshot's location
//! ([`crate::url::SnapshotRef::passphrase`]), as a URL's password does.

use crate::ops::{Location, Secret};

use super::app::Key;

#[derive(Debug, Clone, PartialEq)]
pub struct PassEntry {
    /// The repository it is for.
    pub repo: Location,
    pub first: Secret,
    pub again: Secret,
    /// For a repository the capture makes: typed twice.
    pub new: bool,
    /// The second field has the keyboard.
    pub on_again: bool,
}

/// What a key in the fields did.
#[derive(Debug, PartialEq)]
pub enum PassKey {
    Stay,
    Done(Secret),
    Back,
}

impl PassEntry {
    pub fn new(repo: Location, new: bool) -> PassEntry {
        PassEntry {
            repo,
            first: Secret::new(""),
            again: Secret::new(""),
            new,
            on_again: false,
        }
    }

    /// A field as shown: one `*` per character.
    pub fn shown(s: &Secret) -> String {
        "*".repeat(s.expose().chars().count())
    }

    /// Empty the fields (after a wrong passphrase).
    pub fn clear(&mut self) {
        self.first = Secret::new("");
        self.again = Secret::new("");
        self.on_again = false;
    }

    pub fn key(&mut self, key: Key, error: &mut Option<String>) -> PassKey {
        let field = if self.on_again {
            &mut self.again
        } else {
            &mut self.first
        };
        match key {
            Key::Char(c) if !c.is_control() => {
                *field = Secret::new(format!("{}{c}", field.expose()))
            }
            Key::Backspace => {
                let mut s = field.expose().to_string();
                s.pop();
                *field = Secret::new(s);
            }
            Key::Tab | Key::BackTab | Key::Up | Key::Down if self.new => {
                self.on_again = !self.on_again
            }
            Key::Esc => return PassKey::Back,
            Key::Enter => {
                if self.first.expose().is_empty() {
                    *error = Some(if self.new {
                        "type a passphrase for the new repository (an empty one protects nothing)"
                            .into()
                    } else {
                        format!("type the passphrase of the repository {}", self.repo)
                    });
                    self.on_again = false;
                } else if self.new && !self.on_again {
                    self.on_again = true;
                } else if self.new && self.again != self.first {
                    *error = Some("the two passphrases differ; type them again".into());
                    self.clear();
                } else {
                    return PassKey::Done(self.first.clone());
                }
            }
            _ => {}
        }
        PassKey::Stay
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn typed(e: &mut PassEntry, text: &str) {
        for c in text.chars() {
            e.key(Key::Char(c), &mut None);
        }
    }

    #[test]
    fn a_new_passphrase_is_typed_twice_and_never_shown() {
        let mut e = PassEntry::new(Location::Local("/mnt/r".into()), true);
        let mut err = None;
        assert_eq!(e.key(Key::Enter, &mut err), PassKey::Stay);
        assert!(err.take().unwrap().contains("protects nothing"));
        typed(&mut e, "correct horse");
        assert_eq!(PassEntry::shown(&e.first), "*************");
        assert_eq!(e.key(Key::Enter, &mut err), PassKey::Stay);
        assert!(e.on_again);
        typed(&mut e, "correct hors");
        assert_eq!(e.key(Key::Enter, &mut err), PassKey::Stay);
        assert!(err.take().unwrap().contains("differ"));
        assert!(e.first.expose().is_empty() && !e.on_again);
        typed(&mut e, "pw");
        e.key(Key::Tab, &mut err);
        typed(&mut e, "pw");
        assert_eq!(
            e.key(Key::Enter, &mut err),
            PassKey::Done(Secret::new("pw"))
        );
        assert!(!format!("{e:?}").contains("pw\""));
    }

    #[test]
    fn an_existing_repository_asks_once() {
        let mut e = PassEntry::new(Location::Local("/mnt/r".into()), false);
        typed(&mut e, "abc");
        e.key(Key::Backspace, &mut None);
        assert_eq!(
            e.key(Key::Enter, &mut None),
            PassKey::Done(Secret::new("ab"))
        );
        assert_eq!(e.key(Key::Esc, &mut None), PassKey::Back);
    }
}
