//! The codecs of a DMG's compressed chunks: each chunk is one whole stream that decompresses to exactly
//! the chunk's sectors. ADC (Apple Data Compression, the oldest, `UDCO`) is decoded here; zlib (`UDZO`),
//! bzip2 (`UDBZ`), LZFSE (`ULFO`) and xz/LZMA (`ULMO`) by their crates, each bounded: the output is a
//! buffer of the chunk's size (one byte more, to tell a stream that gives too much), xz's memory is
//! limited, and LZFSE streams through fixed ring buffers into that buffer.

use std::io;

/// How a compressed chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Adc,
    Zlib,
    Bzip2,
    Lzfse,
    Xz,
}

/// Memory liblzma may use for one chunk's xz stream (xz -9 needs 65 MiB).
const XZ_MEMORY: u64 = 128 << 20;

impl Codec {
    /// The codec of a chunk type, if it is a compressed one.
    pub(crate) fn of_type(t: u32) -> Option<Codec> {
        Some(match t {
            0x8000_0004 => Codec::Adc,
            0x8000_0005 => Codec::Zlib,
            0x8000_0006 => Codec::Bzip2,
            0x8000_0007 => Codec::Lzfse,
            0x8000_0008 => Codec::Xz,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Codec::Adc => "ADC",
            Codec::Zlib => "zlib",
            Codec::Bzip2 => "bzip2",
            Codec::Lzfse => "LZFSE",
            Codec::Xz => "xz",
        }
    }
}

/// `input` decompressed: exactly `len` bytes, or why not.
pub(crate) fn decompress(codec: Codec, input: &[u8], len: usize) -> Result<Vec<u8>, String> {
    // One byte more than the chunk holds: a stream that fills it gives too much.
    let mut out = vec![0u8; len + 1];
    let got = match codec {
        Codec::Adc => adc(input, &mut out)?,
        Codec::Zlib => zlib(input, &mut out)?,
        Codec::Bzip2 => bzip2(input, &mut out)?,
        Codec::Lzfse => lzfse(input, &mut out)?,
        Codec::Xz => xz(input, &mut out)?,
    };
    if got > len {
        return Err(format!("it gives more than the chunk's {len} bytes"));
    }
    if got < len {
        return Err(format!("it gives {got} bytes, not the chunk's {len}"));
    }
    out.truncate(len);
    Ok(out)
}

/// Apple Data Compression: a byte with its top bit set starts `(b & 0x7f) + 1` literal bytes; `01llllll`
/// `oooooooo oooooooo` copies `l + 4` bytes from `o + 1` bytes back; `0lllll oo oooooooo` (top two bits
/// clear) copies `((b >> 2) & 0xf) + 3` bytes from `o + 1` back (the copy may overlap what it writes).
fn adc(input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let (mut i, mut o) = (0usize, 0usize);
    while let Some(&b) = input.get(i) {
        if b & 0x80 != 0 {
            let n = usize::from(b & 0x7f) + 1;
            let lit = input
                .get(i + 1..i + 1 + n)
                .ok_or_else(|| format!("its stream ends inside a literal run at byte {i}"))?;
            let dst = out
                .get_mut(o..o + n)
                .ok_or_else(|| "it gives more than the chunk holds".to_string())?;
            dst.copy_from_slice(lit);
            i += 1 + n;
            o += n;
            continue;
        }
        let (n, back, width) = if b & 0x40 != 0 {
            let hi = input.get(i + 1);
            let lo = input.get(i + 2);
            let (Some(&hi), Some(&lo)) = (hi, lo) else {
                return Err(format!("its stream ends inside a copy at byte {i}"));
            };
            (
                usize::from(b & 0x3f) + 4,
                usize::from(u16::from_be_bytes([hi, lo])) + 1,
                3,
            )
        } else {
            let Some(&lo) = input.get(i + 1) else {
                return Err(format!("its stream ends inside a copy at byte {i}"));
            };
            (
                usize::from((b >> 2) & 0x0f) + 3,
                (usize::from(b & 0x03) << 8 | usize::from(lo)) + 1,
                2,
            )
        };
        if back > o {
            return Err(format!(
                "byte {i} of its stream copies from {back} bytes back, before the chunk's start ({o} \
                 bytes out)"
            ));
        }
        if o + n > out.len() {
            return Err("it gives more than the chunk holds".to_string());
        }
        // Byte by byte: a copy from close behind repeats what it has just written.
        for k in o..o + n {
            out[k] = out[k - back];
        }
        i += width;
        o += n;
    }
    Ok(o)
}

/// Run a streaming decoder over `input` into `out` until its stream ends or `out` is full: `step`
/// decodes from the input left into the room left and says how much it took and gave, and whether its
/// stream ended.
fn drive(
    name: &str,
    input: &[u8],
    out: &mut [u8],
    mut step: impl FnMut(&[u8], &mut [u8]) -> Result<(usize, usize, bool), String>,
) -> Result<usize, String> {
    let (mut i, mut o) = (0usize, 0usize);
    loop {
        let (Some(src), Some(dst)) = (input.get(i..), out.get_mut(o..)) else {
            return Err(format!("the {name} decoder went past its buffers"));
        };
        let (took, gave, ended) = step(src, dst)?;
        i += took;
        o += gave;
        if ended || o == out.len() {
            return Ok(o);
        }
        if took == 0 && gave == 0 {
            return Err(format!(
                "the {name} stream ends before its end mark (cut short)"
            ));
        }
    }
}

fn zlib(input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut d = flate2::Decompress::new(true);
    drive("zlib", input, out, |src, dst| {
        let (i, o) = (d.total_in(), d.total_out());
        let status = d
            .decompress(src, dst, flate2::FlushDecompress::Finish)
            .map_err(|e| format!("a damaged zlib stream ({e})"))?;
        let ended = status == flate2::Status::StreamEnd;
        Ok((
            (d.total_in() - i) as usize,
            (d.total_out() - o) as usize,
            ended,
        ))
    })
}

fn bzip2(input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut d = bzip2::Decompress::new(false);
    drive("bzip2", input, out, |src, dst| {
        let (i, o) = (d.total_in(), d.total_out());
        let status = d
            .decompress(src, dst)
            .map_err(|e| format!("a damaged bzip2 stream ({e})"))?;
        let ended = status == bzip2::Status::StreamEnd;
        Ok((
            (d.total_in() - i) as usize,
            (d.total_out() - o) as usize,
            ended,
        ))
    })
}

fn xz(input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    // xz (what Apple writes), or the older .lzma format.
    let mut s = liblzma::stream::Stream::new_auto_decoder(XZ_MEMORY, 0)
        .map_err(|e| format!("the xz decoder did not start ({e})"))?;
    drive("xz", input, out, |src, dst| {
        let (i, o) = (s.total_in(), s.total_out());
        let status = s
            .process(src, dst, liblzma::stream::Action::Finish)
            .map_err(|e| match e {
                liblzma::stream::Error::MemLimit => format!(
                    "the xz stream needs more than the {} MiB this program gives one chunk",
                    XZ_MEMORY >> 20
                ),
                e => format!("a damaged xz stream ({e})"),
            })?;
        let ended = status == liblzma::stream::Status::StreamEnd;
        Ok((
            (s.total_in() - i) as usize,
            (s.total_out() - o) as usize,
            ended,
        ))
    })
}

/// LZFSE through the crate's ring-buffered decoder (fixed memory) into `out`; a stream that would give
/// more than `out` holds stops at its end.
fn lzfse(input: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut sink = Bounded { out, at: 0 };
    let mut src = input;
    let mut d = lzfse_rust::LzfseRingDecoder::default();
    match d.decode(&mut src, &mut sink) {
        Ok(_) => Ok(sink.at),
        // Full: `decompress` says it gives too much.
        Err(_) if sink.at == sink.out.len() => Ok(sink.at),
        Err(e) => Err(format!("a damaged LZFSE stream ({e})")),
    }
}

/// A writer into a fixed buffer that fails when it is full.
struct Bounded<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.out.len() - self.at;
        if room == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the chunk is full",
            ));
        }
        let n = buf.len().min(room);
        self.out[self.at..self.at + n].copy_from_slice(&buf[..n]);
        self.at += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
