//! exFAT (to come).

use super::read::FileReader;
use super::{Browse, BrowseError, Entry, Vol};

pub(crate) struct Exfat {
    vol: Vol,
}

impl Exfat {
    pub(crate) fn open(vol: Vol) -> Result<Exfat, BrowseError> {
        Err(vol.unsupported("browsing"))
    }
}

impl Browse for Exfat {
    fn kind(&self) -> &'static str {
        "exFAT"
    }
    fn root(&self) -> Result<Entry, BrowseError> {
        Err(self.vol.unsupported("browsing"))
    }
    fn children(&self, _dir: &Entry) -> Result<Vec<Entry>, BrowseError> {
        Err(self.vol.unsupported("browsing"))
    }
    fn open(&self, _file: &Entry) -> Result<FileReader, BrowseError> {
        Err(self.vol.unsupported("browsing"))
    }
}
