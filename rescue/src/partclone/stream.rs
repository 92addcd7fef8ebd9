//! Reading a stream: header, bitmap, then the used blocks in order with their checksums.

use std::io::{self, Read};
use std::ops::Range;

use super::checksum::{ChecksumMode, Sum};
use super::header::{BitmapMode, Header, HEADER_V2_LEN};
use super::{Error, Kind, Limits};

/// What ends a version 0001 bitmap.
const BITMAP_MAGIC: &[u8; 8] = b"BiTmAgIc";
/// Bytes read at a time for the bitmap and for what follows the last block.
const CHUNK: usize = 64 << 10;

/// Consecutive used blocks: their numbers in the filesystem and their bytes (`blocks.len() ×
/// block_size`), which belong at byte `blocks.start × block_size` of the filesystem.
#[derive(Debug)]
pub struct Run<'a> {
    pub blocks: Range<u64>,
    pub data: &'a [u8],
}

/// The used blocks as partclone's bitmap records them.
enum Bitmap {
    /// Bit `n % 8` of byte `n / 8` is block `n`.
    Bits(Vec<u8>),
    /// Every block (a version 0002 image without a bitmap).
    All,
}

/// A partclone image stream being read (see the module's notes). A checksum is compared as soon as the
/// last block of its group has been read, before the run holding that block is returned; the runs before
/// it in the same group were returned unchecked. A caller that writes runs as they come (a restore) must
/// treat them as final only once the stream has ended without error.
pub struct Stream<R> {
    reader: R,
    name: String,
    header: Header,
    bitmap: Bitmap,
    /// Blocks the bitmap marks as used: how many the stream holds.
    used: u64,
    /// Bytes of the stream read so far.
    offset: u64,
    /// The next block number to look at.
    next: u64,
    /// Used blocks read so far.
    done: u64,
    sum: Sum,
    /// Blocks since the last checksum, the first of them, and the offset of its data.
    in_group: u32,
    group_first: u64,
    group_offset: u64,
    checksums: u64,
    run_blocks: u64,
    buf: Vec<u8>,
    ended: bool,
    failed: bool,
}

impl<R: Read> Stream<R> {
    /// Read the header and the bitmap of the stream `reader` (called `name` in errors), within the
    /// default [`Limits`].
    pub fn open(reader: R, name: &str) -> Result<Stream<R>, Error> {
        Stream::with_limits(reader, name, Limits::default())
    }

    pub fn with_limits(reader: R, name: &str, limits: Limits) -> Result<Stream<R>, Error> {
        let mut s = Stream {
            reader,
            name: name.to_owned(),
            header: Header {
                version: super::Version::V2,
                partclone_version: String::new(),
                fs: String::new(),
                device_size: 0,
                total_blocks: 0,
                used_blocks: 0,
                used_bitmap: None,
                block_size: 1,
                cpu_bits: None,
                checksum: ChecksumMode::None,
                blocks_per_checksum: 0,
                reseed: true,
                bitmap: BitmapMode::None,
            },
            bitmap: Bitmap::All,
            used: 0,
            offset: 0,
            next: 0,
            done: 0,
            sum: Sum::new(ChecksumMode::None),
            in_group: 0,
            group_first: 0,
            group_offset: 0,
            checksums: 0,
            run_blocks: 1,
            buf: Vec::new(),
            ended: false,
            failed: false,
        };
        let mut head = [0u8; HEADER_V2_LEN];
        let n = s.read_full(&mut head)?;
        s.header = Header::parse(&head[..n], name)?;
        if s.header.header_len() > HEADER_V2_LEN {
            // Version 0001: 4096 bytes nobody uses follow its fields.
            s.skip(
                s.header.header_len() - HEADER_V2_LEN,
                "the version 0001 header",
            )?;
        }
        let h = &s.header;
        if h.block_size > limits.max_block_size {
            return Err(s.error(
                Kind::Unsupported,
                format!(
                    "{}-byte blocks (this reader takes up to {})",
                    h.block_size, limits.max_block_size
                ),
            ));
        }
        let kept = match h.bitmap {
            BitmapMode::None => 0,
            _ => h.total_blocks.div_ceil(8),
        };
        if kept > limits.max_bitmap_bytes {
            return Err(s.error(
                Kind::Unsupported,
                format!(
                    "a bitmap of {} blocks ({kept} bytes; this reader keeps up to {})",
                    h.total_blocks, limits.max_bitmap_bytes
                ),
            ));
        }
        s.run_blocks = (limits.run_bytes / h.block_size as usize).max(1) as u64;
        s.sum = Sum::new(h.checksum);
        match h.bitmap {
            BitmapMode::Bit => s.read_bit_bitmap(kept)?,
            BitmapMode::Byte => s.read_byte_bitmap()?,
            BitmapMode::None => s.used = s.header.total_blocks,
        }
        s.group_offset = s.offset;
        Ok(s)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Used blocks: what the bitmap marks, and so what the stream holds.
    pub fn used_blocks(&self) -> u64 {
        self.used
    }

    /// Whether block `block` of the filesystem is in the stream.
    pub fn is_used(&self, block: u64) -> bool {
        block < self.header.total_blocks
            && match &self.bitmap {
                Bitmap::All => true,
                Bitmap::Bits(b) => b[(block / 8) as usize] >> (block % 8) & 1 == 1,
            }
    }

    /// Bytes read from the stream so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Checksums read and found right so far.
    pub fn checksums(&self) -> u64 {
        self.checksums
    }

    /// Whether the last block and its checksum have been read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next consecutive used blocks, `None` after the last one (and its checksum).
    pub fn next_run(&mut self) -> Result<Option<Run<'_>>, Error> {
        if self.failed {
            return Err(self.error(Kind::Invalid, "reading stopped at an earlier error"));
        }
        match self.read_run() {
            Ok(Some(blocks)) => {
                let len = self.buf.len();
                Ok(Some(Run {
                    blocks,
                    data: &self.buf[..len],
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// The reader, positioned after what has been read.
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn read_run(&mut self) -> Result<Option<Range<u64>>, Error> {
        if self.ended {
            return Ok(None);
        }
        if self.done == self.used {
            self.end()?;
            return Ok(None);
        }
        let total = self.header.total_blocks;
        let mut first = self.next;
        while first < total && !self.is_used(first) {
            if first.is_multiple_of(8) && first + 8 <= total {
                if let Bitmap::Bits(b) = &self.bitmap {
                    if b[(first / 8) as usize] == 0 {
                        first += 8;
                        continue;
                    }
                }
            }
            first += 1;
        }
        let want = self.run_blocks.min(self.used - self.done);
        let mut count = 0;
        while count < want && first + count < total && self.is_used(first + count) {
            count += 1;
        }
        if count == 0 {
            // The bitmap was counted when read, so this cannot happen; an error all the same.
            return Err(self.error(Kind::Invalid, "fewer used blocks than counted"));
        }
        let bs = self.header.block_size as usize;
        self.buf.resize(count as usize * bs, 0);
        for i in 0..count {
            let block = first + i;
            let at = i as usize * bs;
            let mut buf = std::mem::take(&mut self.buf);
            let r = self.read_block(block, &mut buf[at..at + bs]);
            self.buf = buf;
            r?;
        }
        self.next = first + count;
        self.done += count;
        if self.done == self.used {
            self.end()?;
        }
        Ok(Some(first..first + count))
    }

    /// Read block `block` into `out`, and the checksum its group ends with.
    fn read_block(&mut self, block: u64, out: &mut [u8]) -> Result<(), Error> {
        if self.in_group == 0 {
            self.group_first = block;
            self.group_offset = self.offset;
        }
        let n = self.read_full(out)?;
        if n < out.len() {
            return Err(self
                .error(
                    Kind::Truncated,
                    format!(
                        "the stream ends inside block {block} (used block {} of {})",
                        self.done + 1,
                        self.used
                    ),
                )
                .blocks(block..=block));
        }
        self.sum.update(out);
        self.in_group += 1;
        if self.header.blocks_per_checksum > 0 && self.in_group == self.header.blocks_per_checksum {
            self.check_sum(block)?;
        }
        Ok(())
    }

    /// After the last block: the checksum of a partial last group.
    fn end(&mut self) -> Result<(), Error> {
        if self.header.blocks_per_checksum > 0 && self.in_group > 0 {
            let last = self.next.saturating_sub(1);
            self.check_sum(last)?;
        }
        self.ended = true;
        Ok(())
    }

    /// Read and compare the checksum of the blocks `group_first..=last`.
    fn check_sum(&mut self, last: u64) -> Result<(), Error> {
        let mode = self.header.checksum;
        let size = mode.size();
        let mut stored = [0u8; 16];
        let at = self.offset;
        let n = self.read_full(&mut stored[..size])?;
        let blocks = self.group_first..=last;
        if n < size {
            return Err(self
                .error(
                    Kind::Truncated,
                    format!(
                        "the stream ends inside the {} of blocks {}..={}",
                        mode.name(),
                        blocks.start(),
                        blocks.end()
                    ),
                )
                .blocks(blocks));
        }
        let computed = self.sum.value();
        if computed[..size] != stored[..size] {
            let since = if self.header.reseed {
                ""
            } else {
                " (chained from the first block; these are the blocks since the last one found right)"
            };
            return Err(Error::new(
                &self.name,
                at,
                Kind::Checksum,
                format!(
                    "the {} of blocks {}..={} (bytes {}..{} of the stream){since} is {}, the image says {}",
                    mode.name(),
                    blocks.start(),
                    blocks.end(),
                    self.group_offset,
                    at,
                    hex(&computed[..size]),
                    hex(&stored[..size]),
                ),
            )
            .blocks(blocks));
        }
        self.checksums += 1;
        self.in_group = 0;
        if self.header.reseed {
            self.sum = Sum::new(mode);
        }
        Ok(())
    }

    /// Version 0002's bitmap: a bit per block, then its CRC32.
    fn read_bit_bitmap(&mut self, len: u64) -> Result<(), Error> {
        let start = self.offset;
        let mut bits = Vec::new();
        let mut crc = crc32fast::Hasher::new();
        let mut chunk = vec![0u8; CHUNK];
        while (bits.len() as u64) < len {
            let want = (len - bits.len() as u64).min(CHUNK as u64) as usize;
            let n = self.read_full(&mut chunk[..want])?;
            bits.extend_from_slice(&chunk[..n]);
            crc.update(&chunk[..n]);
            if n < want {
                return Err(self.error(
                    Kind::Truncated,
                    format!(
                        "the stream ends inside the bitmap (bytes {start}..{})",
                        start + len
                    ),
                ));
            }
        }
        let at = self.offset;
        let mut stored = [0u8; 4];
        if self.read_full(&mut stored)? < 4 {
            return Err(self.error(Kind::Truncated, "the stream ends inside the bitmap's CRC32"));
        }
        let stored = u32::from_le_bytes(stored);
        let computed = !crc.finalize();
        if stored != computed {
            return Err(Error::new(
                &self.name,
                at,
                Kind::Checksum,
                format!(
                    "the CRC32 of the bitmap (bytes {start}..{at}) is {computed:#010x}, the image says \
                     {stored:#010x}"
                ),
            ));
        }
        let total = self.header.total_blocks;
        if !total.is_multiple_of(8) {
            // Bits past the last block are not blocks.
            if let Some(last) = bits.last_mut() {
                *last &= (1u8 << (total % 8)) - 1;
            }
        }
        self.used = bits.iter().map(|b| u64::from(b.count_ones())).sum();
        self.bitmap = Bitmap::Bits(bits);
        Ok(())
    }

    /// Version 0001's bitmap: a byte per block (1 = used, anything else not, as partclone reads it),
    /// then `BiTmAgIc`.
    fn read_byte_bitmap(&mut self) -> Result<(), Error> {
        let start = self.offset;
        let total = self.header.total_blocks;
        let mut bits = Vec::new();
        let mut chunk = vec![0u8; CHUNK];
        let mut block = 0u64;
        while block < total {
            let want = (total - block).min(CHUNK as u64) as usize;
            let n = self.read_full(&mut chunk[..want])?;
            for &b in &chunk[..n] {
                if block.is_multiple_of(8) {
                    bits.push(0u8);
                }
                if b == 1 {
                    if let Some(last) = bits.last_mut() {
                        *last |= 1 << (block % 8);
                    }
                    self.used += 1;
                }
                block += 1;
            }
            if n < want {
                return Err(self.error(
                    Kind::Truncated,
                    format!(
                        "the stream ends inside the bitmap (bytes {start}..{})",
                        start + total
                    ),
                ));
            }
        }
        let at = self.offset;
        let mut magic = [0u8; 8];
        let n = self.read_full(&mut magic)?;
        if n < 8 {
            return Err(self.error(
                Kind::Truncated,
                "the stream ends inside the bitmap's signature",
            ));
        }
        if &magic != BITMAP_MAGIC {
            return Err(Error::new(
                &self.name,
                at,
                Kind::Invalid,
                "no \"BiTmAgIc\" after the bitmap",
            ));
        }
        self.bitmap = Bitmap::Bits(bits);
        Ok(())
    }

    /// Skip `len` bytes (`what`), reading them.
    fn skip(&mut self, len: usize, what: &str) -> Result<(), Error> {
        let mut chunk = vec![0u8; len.min(CHUNK)];
        let mut left = len;
        while left > 0 {
            let want = left.min(chunk.len());
            let n = self.read_full(&mut chunk[..want])?;
            if n < want {
                return Err(self.error(Kind::Truncated, format!("the stream ends inside {what}")));
            }
            left -= n;
        }
        Ok(())
    }

    /// Fill `buf` as far as the stream goes: fewer bytes only at its end.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut n = 0;
        while n < buf.len() {
            match self.reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.offset += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let mut err = self.error(Kind::Io, "reading the stream");
                    err.source = Some(e);
                    return Err(err);
                }
            }
        }
        Ok(n)
    }

    fn error(&self, kind: Kind, what: impl Into<String>) -> Error {
        Error::new(&self.name, self.offset, kind, what)
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("0x");
    // Little-endian values, shown as numbers.
    for x in b.iter().rev() {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// What [`verify`] found: a whole stream read and every CRC and checksum right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub header: Header,
    /// Blocks the bitmap marks as used (and the stream holds).
    pub used_blocks: u64,
    /// Bytes of block data.
    pub data_bytes: u64,
    /// Checksums found right (not counting the header's and the bitmap's CRCs).
    pub checksums: u64,
    /// The stream's length up to its last checksum.
    pub stream_bytes: u64,
    /// Bytes after that, which partclone ignores (a well-formed stream has none).
    pub trailing_bytes: u64,
}

/// Read the whole stream `reader` (called `name`), checking every CRC and checksum.
pub fn verify<R: Read>(reader: R, name: &str) -> Result<Report, Error> {
    let mut s = Stream::open(reader, name)?;
    let mut data_bytes = 0u64;
    while let Some(run) = s.next_run()? {
        data_bytes += run.data.len() as u64;
    }
    let stream_bytes = s.offset;
    let mut trailing_bytes = 0u64;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = s.read_full(&mut chunk)?;
        trailing_bytes += n as u64;
        if n < chunk.len() {
            break;
        }
    }
    Ok(Report {
        used_blocks: s.used,
        data_bytes,
        checksums: s.checksums,
        stream_bytes,
        trailing_bytes,
        header: s.header,
    })
}
