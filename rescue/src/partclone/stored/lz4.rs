//! lz4 frames as the lz4 tool writes them (the frame format, lz4's doc/lz4_Frame_format.md): frames and
//! skippable frames one after another, independent or linked blocks, block and content checksums
//! (XXH32) checked, the content size checked when given. Blocks are decoded by `lz4_flex` (safe decoder);
//! the frame is read here. Buffers are the frame's maximum block size (at most 4 MiB), twice.

use std::hash::Hasher as _;

use twox_hash::XxHash32;

use super::detect::{skippable, LZ4_MAGIC};
use super::joined::{At, Joined};
use super::{Blocks, Error, Kind, Pending};

/// How far back a linked block may refer: lz4's window.
const WINDOW: usize = 64 << 10;

struct Frame {
    at: At,
    independent: bool,
    block_sums: bool,
    content_sum: Option<XxHash32>,
    content_size: Option<u64>,
    max_block: usize,
    /// Bytes the frame has decoded so far.
    len: u64,
}

pub(super) struct Lz4 {
    frame: Option<Frame>,
    /// A block as stored, and decoded.
    packed: Vec<u8>,
    /// A block decoded, not all returned yet.
    out: Pending,
    /// The last bytes decoded (up to 64 KiB), which a linked block may refer to.
    dict: Vec<u8>,
}

impl Lz4 {
    pub(super) fn new() -> Lz4 {
        Lz4 {
            frame: None,
            packed: Vec::new(),
            out: Pending::default(),
            dict: Vec::new(),
        }
    }

    /// Reads exactly `out.len()` bytes of the frame begun at `at`.
    fn exact(src: &mut Joined, out: &mut [u8], at: At, what: &str) -> Result<(), Error> {
        if src.read_up_to(out)? < out.len() {
            return Err(src.truncated(at, what));
        }
        Ok(())
    }

    fn le32(src: &mut Joined, at: At, what: &str) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        Lz4::exact(src, &mut b, at, what)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reads what follows the last frame: nothing, a skippable frame (skipped), or a frame's header.
    /// False at the end.
    fn next_frame(&mut self, src: &mut Joined) -> Result<bool, Error> {
        loop {
            let head = src.peek(4)?;
            if head.is_empty() {
                return Ok(false);
            }
            let magic =
                (head.len() == 4).then(|| u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
            let at = src.here();
            match magic {
                Some(m) if skippable(m) => {
                    src.consume(4);
                    let size = u64::from(Lz4::le32(src, at, "an lz4 skippable frame")?);
                    if src.skip(size)? < size {
                        return Err(src.truncated(at, "an lz4 skippable frame"));
                    }
                }
                Some(LZ4_MAGIC) => {
                    src.consume(4);
                    self.header(src, at)?;
                    return Ok(true);
                }
                _ => return Err(src.garbage("lz4")),
            }
        }
    }

    /// Reads a frame descriptor (after the magic) and checks its checksum.
    fn header(&mut self, src: &mut Joined, at: At) -> Result<(), Error> {
        let what = "an lz4 frame header";
        let mut d = [0u8; 15];
        Lz4::exact(src, &mut d[..2], at, what)?;
        let (flg, bd) = (d[0], d[1]);
        let bad = |what: String| {
            src.error(
                at,
                Kind::Damaged,
                format!("damaged lz4 frame header: {what}"),
            )
        };
        if flg >> 6 != 1 {
            return Err(src.error(
                at,
                Kind::Unsupported,
                format!(
                    "lz4 frame of version {} (this program reads version 1)",
                    flg >> 6
                ),
            ));
        }
        if flg & 0x02 != 0 || bd & 0x8F != 0 {
            return Err(bad(format!(
                "reserved bits set (FLG {flg:#04x}, BD {bd:#04x})"
            )));
        }
        let max_block = match (bd >> 4) & 7 {
            4 => 64 << 10,
            5 => 256 << 10,
            6 => 1 << 20,
            7 => 4 << 20,
            n => return Err(bad(format!("block maximum size code {n}"))),
        };
        let has_size = flg & 0x08 != 0;
        let has_dict = flg & 0x01 != 0;
        let len = 2 + if has_size { 8 } else { 0 } + if has_dict { 4 } else { 0 };
        Lz4::exact(src, &mut d[2..len + 1], at, what)?;
        let hc = ((XxHash32::oneshot(0, &d[..len]) >> 8) & 0xFF) as u8;
        if hc != d[len] {
            return Err(src.error(
                at,
                Kind::Damaged,
                format!(
                    "damaged lz4 frame header: its checksum is {:#04x}, its bytes give {hc:#04x}",
                    d[len]
                ),
            ));
        }
        if has_dict {
            return Err(src.error(
                at,
                Kind::Unsupported,
                "lz4 frame compressed with a dictionary, which this program does not read",
            ));
        }
        let content_size = has_size.then(|| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[2..10]);
            u64::from_le_bytes(b)
        });
        self.frame = Some(Frame {
            at,
            independent: flg & 0x20 != 0,
            block_sums: flg & 0x10 != 0,
            content_sum: (flg & 0x04 != 0).then(|| XxHash32::with_seed(0)),
            content_size,
            max_block,
            len: 0,
        });
        self.dict.clear();
        Ok(())
    }

    /// Decodes the next block of the frame into `out`, or reads the frame's end (and its checksum).
    fn block(&mut self, src: &mut Joined) -> Result<(), Error> {
        let Some(f) = self.frame.as_mut() else {
            return Ok(());
        };
        let frame_at = f.at;
        let what = "an lz4 frame";
        let at = src.here();
        let size = Lz4::le32(src, frame_at, what)?;
        if size == 0 {
            // The end mark, then the content checksum.
            if let Some(sum) = f.content_sum.take() {
                let sum_at = src.here();
                let stored = Lz4::le32(src, frame_at, what)?;
                if stored != sum.finish_32() {
                    return Err(src.error(
                        sum_at,
                        Kind::Damaged,
                        format!(
                            "damaged lz4 data: the content checksum of the frame begun at {} is \
                             {stored:08x}, its data gives {:08x}: the damage is between the two",
                            src.place(frame_at),
                            sum.finish_32()
                        ),
                    ));
                }
            }
            if let Some(n) = f.content_size {
                if n != f.len {
                    return Err(src.error(
                        at,
                        Kind::Damaged,
                        format!(
                            "damaged lz4 data: the frame says {n} bytes, it holds {}",
                            f.len
                        ),
                    ));
                }
            }
            self.frame = None;
            return Ok(());
        }
        let stored = size & 0x8000_0000 != 0;
        let len = (size & 0x7FFF_FFFF) as usize;
        if len > f.max_block {
            return Err(src.error(
                at,
                Kind::Damaged,
                format!(
                    "damaged lz4 data: a block of {len} bytes in a frame of blocks up to {}",
                    f.max_block
                ),
            ));
        }
        self.packed.resize(len, 0);
        Lz4::exact(src, &mut self.packed, frame_at, what)?;
        if f.block_sums {
            let stored_sum = Lz4::le32(src, frame_at, what)?;
            let sum = XxHash32::oneshot(0, &self.packed);
            if stored_sum != sum {
                return Err(src.error(
                    at,
                    Kind::Damaged,
                    format!(
                        "damaged lz4 data in the block from {} to {}: its checksum is \
                         {stored_sum:08x}, its bytes give {sum:08x}",
                        src.place(at),
                        src.place(src.here())
                    ),
                ));
            }
        }
        let n = if stored {
            std::mem::swap(&mut self.packed, &mut self.out.block);
            len
        } else {
            self.out.block.resize(f.max_block, 0);
            let r = if f.independent || self.dict.is_empty() {
                lz4_flex::block::decompress_into(&self.packed, &mut self.out.block)
            } else {
                lz4_flex::block::decompress_into_with_dict(
                    &self.packed,
                    &mut self.out.block,
                    &self.dict,
                )
            };
            r.map_err(|e| {
                let (from, to) = (src.place(at), src.place(src.here()));
                src.error(
                    at,
                    Kind::Damaged,
                    format!("damaged lz4 data in the block from {from} to {to}: {e}"),
                )
            })?
        };
        if let Some(sum) = f.content_sum.as_mut() {
            sum.write(&self.out.block[..n]);
        }
        f.len += n as u64;
        if !f.independent {
            // Keep the last 64 KiB decoded.
            if n >= WINDOW {
                self.dict.clear();
                self.dict.extend_from_slice(&self.out.block[n - WINDOW..n]);
            } else {
                let keep = (WINDOW - n).min(self.dict.len());
                self.dict.drain(..self.dict.len() - keep);
                self.dict.extend_from_slice(&self.out.block[..n]);
            }
        }
        self.out.start = 0;
        self.out.end = n;
        Ok(())
    }
}

impl Blocks for Lz4 {
    fn next_member(&mut self, src: &mut Joined) -> Result<bool, Error> {
        self.next_frame(src)
    }

    fn in_member(&self) -> bool {
        self.frame.is_some()
    }

    fn next_block(&mut self, src: &mut Joined) -> Result<(), Error> {
        self.block(src)
    }

    fn pending(&mut self) -> &mut Pending {
        &mut self.out
    }
}
