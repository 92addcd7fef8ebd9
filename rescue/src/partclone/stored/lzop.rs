//! The lzop file format, as lzop 1.0x writes it (read from lzop's source, `lzop.c` and `lzo.c`): a magic,
//! a header (its Adler-32 or CRC-32 checked), then blocks, each its decompressed and compressed sizes, the
//! checksums the header's flags ask for (Adler-32 and/or CRC-32 of the decompressed and of the compressed
//! bytes), and the bytes: stored as they are when no smaller, else LZO1X (decoded by the `lzo` crate). A
//! block of size 0 ends the file; files may follow one another. Blocks are at most 64 MiB (lzop's
//! `MAX_BLOCK_SIZE`; it writes 256 KiB).

use super::detect::LZOP_MAGIC;
use super::joined::{At, Joined};
use super::{Blocks, Error, Kind, Pending};

const MAX_BLOCK: u32 = 64 << 20;

const F_ADLER32_D: u32 = 0x0000_0001;
const F_ADLER32_C: u32 = 0x0000_0002;
const F_H_EXTRA_FIELD: u32 = 0x0000_0040;
const F_CRC32_D: u32 = 0x0000_0100;
const F_CRC32_C: u32 = 0x0000_0200;
const F_MULTIPART: u32 = 0x0000_0400;
const F_H_FILTER: u32 = 0x0000_0800;
const F_H_CRC32: u32 = 0x0000_1000;
/// The bits lzop leaves clear (`F_RESERVED`).
const F_RESERVED: u32 = 0x000F_C000;

/// Adler-32 (RFC 1950) from `a` (1 to start).
pub(super) fn adler32(a: u32, data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    // The most bytes summed before `b` could overflow a u32.
    const NMAX: usize = 5552;
    let (mut s1, mut s2) = (a & 0xFFFF, a >> 16);
    for chunk in data.chunks(NMAX) {
        for &b in chunk {
            s1 += u32::from(b);
            s2 += s1;
        }
        s1 %= MOD;
        s2 %= MOD;
    }
    (s2 << 16) | s1
}

/// The header's checksum as it is read: Adler-32 or CRC-32 of the bytes after the magic.
struct HeaderSum {
    adler: u32,
    crc: crc32fast::Hasher,
}

pub(super) struct Lzop {
    /// The file being read: where it begins and its header's flags.
    file: Option<(At, u32)>,
    packed: Vec<u8>,
    out: Pending,
}

impl Lzop {
    pub(super) fn new() -> Lzop {
        Lzop {
            file: None,
            packed: Vec::new(),
            out: Pending::default(),
        }
    }

    fn exact(src: &mut Joined, out: &mut [u8], at: At, what: &str) -> Result<(), Error> {
        if src.read_up_to(out)? < out.len() {
            return Err(src.truncated(at, what));
        }
        Ok(())
    }

    fn be32(src: &mut Joined, at: At) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        Lzop::exact(src, &mut b, at, "an lzop file")?;
        Ok(u32::from_be_bytes(b))
    }

    /// Header bytes, added to the header's checksum.
    fn field<const N: usize>(
        src: &mut Joined,
        at: At,
        sum: &mut HeaderSum,
    ) -> Result<[u8; N], Error> {
        let mut b = [0u8; N];
        Lzop::exact(src, &mut b, at, "an lzop header")?;
        sum.adler = adler32(sum.adler, &b);
        sum.crc.update(&b);
        Ok(b)
    }

    /// Begins the next file: false at the end of the data.
    fn next_file(&mut self, src: &mut Joined) -> Result<bool, Error> {
        let Some(at) = src.next_member(LZOP_MAGIC.len(), |h| h == LZOP_MAGIC, "lzop")? else {
            return Ok(false);
        };
        src.consume(LZOP_MAGIC.len());
        let unsupported = |src: &Joined, what: String| {
            src.error(
                at,
                Kind::Unsupported,
                format!("{what}, which this program does not read"),
            )
        };
        let mut sum = HeaderSum {
            adler: 1,
            crc: crc32fast::Hasher::new(),
        };
        let version = u16::from_be_bytes(Lzop::field::<2>(src, at, &mut sum)?);
        if version < 0x0900 {
            return Err(unsupported(
                src,
                format!("lzop file of version {version:#06x}"),
            ));
        }
        Lzop::field::<2>(src, at, &mut sum)?; // the LZO library's version
        if version >= 0x0940 {
            Lzop::field::<2>(src, at, &mut sum)?; // the version needed to extract
        }
        let [method] = Lzop::field::<1>(src, at, &mut sum)?;
        if version >= 0x0940 {
            Lzop::field::<1>(src, at, &mut sum)?; // the level
        }
        let flags = u32::from_be_bytes(Lzop::field::<4>(src, at, &mut sum)?);
        if flags & F_H_FILTER != 0 {
            Lzop::field::<4>(src, at, &mut sum)?;
        }
        Lzop::field::<8>(src, at, &mut sum)?; // mode, mtime
        if version >= 0x0940 {
            Lzop::field::<4>(src, at, &mut sum)?; // mtime, high bits
        }
        let [name_len] = Lzop::field::<1>(src, at, &mut sum)?;
        let mut name = [0u8; 255];
        let name = &mut name[..usize::from(name_len)];
        Lzop::exact(src, name, at, "an lzop header")?;
        sum.adler = adler32(sum.adler, name);
        sum.crc.update(name);
        let ours = if flags & F_H_CRC32 != 0 {
            sum.crc.finalize()
        } else {
            sum.adler
        };
        let stored = Lzop::be32(src, at)?;
        if stored != ours {
            return Err(src.error(
                at,
                Kind::Damaged,
                format!(
                    "damaged lzop header: its checksum is {stored:08x}, its bytes give {ours:08x}"
                ),
            ));
        }
        if !(1..=3).contains(&method) {
            return Err(unsupported(
                src,
                format!("lzop file of method {method} (this program reads LZO1X: methods 1 to 3)"),
            ));
        }
        if flags & F_RESERVED != 0 {
            return Err(src.error(
                at,
                Kind::Damaged,
                format!("damaged lzop header: reserved flags set ({flags:#010x})"),
            ));
        }
        if flags & F_H_FILTER != 0 {
            return Err(unsupported(src, "lzop file with a filter (lzop -F)".into()));
        }
        if flags & F_MULTIPART != 0 {
            return Err(unsupported(src, "multipart lzop file".into()));
        }
        if flags & F_H_EXTRA_FIELD != 0 {
            // Not used by lzop; skipped with its checksum.
            let len = u64::from(Lzop::be32(src, at)?);
            if src.skip(len + 4)? < len + 4 {
                return Err(src.truncated(at, "an lzop header"));
            }
        }
        self.file = Some((at, flags));
        Ok(true)
    }

    /// Decodes the next block of the file into `out`, or reads its end.
    fn block(&mut self, src: &mut Joined) -> Result<(), Error> {
        let Some((file, flags)) = self.file else {
            return Ok(());
        };
        let at = src.here();
        let damaged = |src: &Joined, what: String| {
            let (from, to) = (src.place(at), src.place(src.here()));
            src.error(
                at,
                Kind::Damaged,
                format!("damaged lzop data in the block from {from} to {to}: {what}"),
            )
        };
        let dst_len = Lzop::be32(src, file)?;
        if dst_len == 0 {
            self.file = None;
            return Ok(());
        }
        if dst_len == u32::MAX {
            return Err(src.error(
                at,
                Kind::Unsupported,
                "split lzop file, which this program does not read",
            ));
        }
        if dst_len > MAX_BLOCK {
            return Err(damaged(
                src,
                format!("a block of {dst_len} bytes (lzop's largest is {MAX_BLOCK})"),
            ));
        }
        let src_len = Lzop::be32(src, file)?;
        if src_len == 0 || src_len > dst_len {
            return Err(damaged(
                src,
                format!("{src_len} bytes stored for {dst_len}"),
            ));
        }
        let packed = src_len < dst_len;
        let mut want = [None; 4];
        for (i, (flag, on)) in [
            (F_ADLER32_D, true),
            (F_CRC32_D, true),
            (F_ADLER32_C, packed),
            (F_CRC32_C, packed),
        ]
        .into_iter()
        .enumerate()
        {
            if on && flags & flag != 0 {
                want[i] = Some(Lzop::be32(src, file)?);
            }
        }
        self.packed.resize(src_len as usize, 0);
        Lzop::exact(src, &mut self.packed, file, "an lzop file")?;
        let check = |src: &Joined, data: &[u8], adler: Option<u32>, crc: Option<u32>, of: &str| {
            if let Some(a) = adler {
                let ours = adler32(1, data);
                if a != ours {
                    return Err(damaged(
                        src,
                        format!("the Adler-32 of its {of} bytes is {a:08x}, they give {ours:08x}"),
                    ));
                }
            }
            if let Some(c) = crc {
                let ours = crc32fast::hash(data);
                if c != ours {
                    return Err(damaged(
                        src,
                        format!("the CRC-32 of its {of} bytes is {c:08x}, they give {ours:08x}"),
                    ));
                }
            }
            Ok(())
        };
        let n = dst_len as usize;
        if packed {
            check(src, &self.packed, want[2], want[3], "compressed")?;
            self.out.block.resize(n, 0);
            match lzo::decompress_into(&self.packed, &mut self.out.block[..n]) {
                Ok(got) if got == n => {}
                Ok(got) => return Err(damaged(src, format!("it decodes to {got} bytes, not {n}"))),
                Err(e) => return Err(damaged(src, e.to_string())),
            }
        } else {
            std::mem::swap(&mut self.packed, &mut self.out.block);
        }
        check(src, &self.out.block[..n], want[0], want[1], "decompressed")?;
        self.out.start = 0;
        self.out.end = n;
        Ok(())
    }
}

impl Blocks for Lzop {
    fn next_member(&mut self, src: &mut Joined) -> Result<bool, Error> {
        self.next_file(src)
    }

    fn in_member(&self) -> bool {
        self.file.is_some()
    }

    fn next_block(&mut self, src: &mut Joined) -> Result<(), Error> {
        self.block(src)
    }

    fn pending(&mut self) -> &mut Pending {
        &mut self.out
    }
}
