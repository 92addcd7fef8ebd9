//! A byte range of a disk (a partition) seen as a device of its own: offset 0 is the range's first byte,
//! reads stop at its end and writes past its end fail. Lets code that formats or parses a filesystem
//! through `Read`/`Write`/`Seek` work on a partition of a whole-disk device or image file.

use std::io::{self, Read, Seek, SeekFrom, Write};

pub struct Region<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T> Region<T> {
    pub fn new(inner: T, start: u64, len: u64) -> Region<T> {
        Region {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Read + Seek> Read for Region<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<T: Write + Seek> Write for Region<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.pos.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a write of {} bytes at byte {} would leave the {}-byte partition",
                    buf.len(),
                    self.pos,
                    self.len
                ),
            ));
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T> Seek for Region<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_and_writes_stay_inside() {
        let mut disk = Cursor::new(vec![0u8; 100]);
        let mut r = Region::new(&mut disk, 10, 20);
        r.write_all(&[1; 20]).unwrap();
        assert!(r.write_all(&[2]).is_err(), "past the end");
        r.seek(SeekFrom::End(-5)).unwrap();
        let mut buf = vec![0u8; 10];
        assert_eq!(r.read(&mut buf).unwrap(), 5);
        assert!(r.seek(SeekFrom::Current(-100)).is_err());
        let v = disk.into_inner();
        assert_eq!(v[9], 0);
        assert_eq!(v[10..30], [1; 20]);
        assert_eq!(v[30], 0);
    }
}
