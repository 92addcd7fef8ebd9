//! NTFS (to come).

use super::read::FileReader;
use super::{Browse, BrowseError, Entry, Vol};

pub(crate) struct Ntfs {
    vol: Vol,
}

impl Ntfs {
    pub(crate) fn open(vol: Vol) -> Result<Ntfs, BrowseError> {
        Err(vol.unsupported("browsing"))
    }
}

impl Browse for Ntfs {
    fn kind(&self) -> &'static str {
        "NTFS"
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

/// Decompresses one LZNT1 compression unit of `len` bytes stored in `ranges` of the partition.
pub(crate) fn decompress_unit(
    vol: &Vol,
    _ranges: &[(u64, u64)],
    _len: u64,
    _what: &str,
) -> Result<Vec<u8>, BrowseError> {
    Err(vol.unsupported("compressed files"))
}
