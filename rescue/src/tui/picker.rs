//! Choosing an image: a drive that holds images (mounted when chosen), then an image on it; or, from the
//! list's last row, a network location typed with its password. The first steps of the restore and
//! verify wizards.

use crate::ops::Location;
use crate::store::Store;

use super::app::{move_sel, App, Effect, Key, OpenedStore};
use super::netloc::{EntryKey, UrlEntry};
use super::Step;

#[derive(Debug, Clone, PartialEq)]
pub struct ImagePicker {
    pub stores: Vec<Store>,
    pub store_sel: usize,
    /// Waiting for `term` to open the chosen store.
    pub opening: bool,
    pub opened: Option<OpenedStore>,
    pub image_sel: usize,
    /// The URL and password fields (the last row of the list of drives).
    pub entry: UrlEntry,
}

/// What a key on the image list did.
#[derive(Debug)]
pub enum ImageKey {
    Stay,
    Chosen(Location),
    /// Back to the list of drives.
    Back,
    /// Read the sftp:// server's host key first ([`EntryKey::ReadHostKey`]).
    ReadHostKey(Location),
}

impl ImagePicker {
    /// Every store that can be mounted, write-protected drives included (mounted read-only; a job's log
    /// then goes to the log view only), and the folders given on the command line.
    pub fn new(app: &App) -> ImagePicker {
        let mut stores = app.folders.clone();
        stores.extend(crate::store::readable_stores(&app.report));
        stores.sort_by_key(|s| s.unusable.is_some());
        ImagePicker {
            stores,
            store_sel: 0,
            opening: false,
            opened: None,
            image_sel: 0,
            entry: UrlEntry::new(false),
        }
    }

    /// Whether the selection is the list's last row, "Network location": Enter there goes to the URL.
    pub fn on_network_row(&self) -> bool {
        self.store_sel == self.stores.len()
    }

    /// Keys on the list of drives: Enter opens the drive (an effect), Esc leaves the wizard. The wizard
    /// takes Enter on the network row itself (see [`ImagePicker::on_network_row`]).
    pub fn store_key(&mut self, key: Key, error: &mut Option<String>) -> Step {
        // The drives, then "Network location".
        if self.opening || move_sel(&mut self.store_sel, self.stores.len() + 1, key) {
            return Step::Stay(vec![]);
        }
        match key {
            Key::Enter => match self.stores.get(self.store_sel) {
                None => {
                    *error = Some(
                        "no drive with images found: plug in the drive holding them (it appears here), \
                         or choose the network location"
                            .into(),
                    );
                    Step::Stay(vec![])
                }
                Some(s) if s.unusable.is_some() => {
                    *error = Some(format!(
                        "{} cannot be opened: {}",
                        s.title(),
                        s.unusable.clone().unwrap_or_default()
                    ));
                    Step::Stay(vec![])
                }
                Some(s) => {
                    self.opening = true;
                    Step::Stay(vec![Effect::OpenStore(
                        s.clone(),
                        crate::store::Access::Read,
                    )])
                }
            },
            Key::Esc => Step::Back,
            _ => Step::Stay(vec![]),
        }
    }

    /// Keys on the list of images.
    pub fn image_key(&mut self, key: Key, error: &mut Option<String>) -> ImageKey {
        let n = self.opened.as_ref().map_or(0, |o| o.images.len());
        if move_sel(&mut self.image_sel, n, key) {
            return ImageKey::Stay;
        }
        match key {
            Key::Enter => match self
                .opened
                .as_ref()
                .and_then(|o| o.images.get(self.image_sel))
            {
                // A snapshot is listed as `DIR/REPO::NAME@TIME`.
                Some(img) => ImageKey::Chosen(
                    Location::parse(&img.path.to_string_lossy())
                        .unwrap_or_else(|_| img.path.clone().into()),
                ),
                None => {
                    *error = Some("no image here; go back (Esc) and choose another drive".into());
                    ImageKey::Stay
                }
            },
            Key::Esc | Key::Left => ImageKey::Back,
            _ => ImageKey::Stay,
        }
    }

    /// Keys in the URL and password fields.
    pub fn url_key(&mut self, key: Key, error: &mut Option<String>) -> ImageKey {
        match self.entry.key(key, error) {
            EntryKey::Done(loc) => ImageKey::Chosen(loc),
            EntryKey::ReadHostKey(loc) => ImageKey::ReadHostKey(loc),
            EntryKey::Back => ImageKey::Back,
            EntryKey::Stay => ImageKey::Stay,
        }
    }

    /// The opened drive: whether it lists images (then the image step follows).
    pub fn on_store(
        &mut self,
        result: Result<OpenedStore, String>,
        error: &mut Option<String>,
    ) -> bool {
        self.opening = false;
        match result {
            Ok(s) if s.images.is_empty() => {
                *error = Some(format!(
                    "no images (*.rimg) on {}; choose another drive",
                    s.store.title()
                ));
                false
            }
            Ok(s) => {
                self.opened = Some(s);
                self.image_sel = 0;
                true
            }
            Err(e) => {
                *error = Some(e);
                false
            }
        }
    }
}
