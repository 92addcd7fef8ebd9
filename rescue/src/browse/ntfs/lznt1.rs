//! LZNT1, the compression of NTFS compressed files: a unit (16 clusters) is a series of chunks of at
//! most 4096 bytes of output, each with a 2-byte header (size − 1 in the low 12 bits, bit 15 set when
//! compressed). A compressed chunk is groups of a flag byte and eight tokens: a literal byte, or a
//! 16-bit back-reference whose split between offset and length widens as the chunk's output grows.

/// Output of one chunk.
const CHUNK: usize = 4096;

/// Decompresses `src` into at most `limit` bytes; a chunk that yields less than 4096 bytes before
/// another chunk is padded with zeros. `Err` names what is malformed.
pub(crate) fn decompress(src: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::with_capacity(limit.min(64 << 10));
    let mut at = 0usize;
    while at + 2 <= src.len() && out.len() < limit {
        let header = u16::from_le_bytes([src[at], src[at + 1]]);
        if header == 0 {
            break;
        }
        let size = usize::from(header & 0x0FFF) + 1;
        let body = src
            .get(at + 2..at + 2 + size)
            .ok_or_else(|| format!("chunk at byte {at} runs past the compressed data"))?;
        at += 2 + size;
        // Every chunk but the first starts on a 4096-byte boundary of the output.
        out.resize(out.len().div_ceil(CHUNK) * CHUNK, 0);
        let start = out.len();
        if header & 0x8000 == 0 {
            out.extend_from_slice(body);
        } else {
            chunk(body, &mut out, start)
                .map_err(|e| format!("chunk at byte {}: {e}", at - 2 - size))?;
        }
        if out.len() - start > CHUNK {
            return Err(format!(
                "chunk at byte {} yields more than 4096 bytes",
                at - 2 - size
            ));
        }
    }
    out.truncate(limit);
    Ok(out)
}

/// One compressed chunk's tokens, appended to `out` (whose chunk starts at `start`).
fn chunk(body: &[u8], out: &mut Vec<u8>, start: usize) -> Result<(), String> {
    let mut i = 0usize;
    while i < body.len() {
        let flags = body[i];
        i += 1;
        for bit in 0..8 {
            if i >= body.len() {
                return Ok(());
            }
            if flags & (1 << bit) == 0 {
                out.push(body[i]);
                i += 1;
                continue;
            }
            let token = u16::from_le_bytes([body[i], *body.get(i + 1).ok_or("a token is cut")?]);
            i += 2;
            let pos = out.len() - start;
            if pos == 0 {
                return Err("a back-reference before any output".into());
            }
            // Offset bits: 4 while the chunk's output is at most 16 bytes, one more per doubling.
            let mut offset_bits = 4u32;
            let mut p = pos - 1;
            while p >= 16 {
                offset_bits += 1;
                p >>= 1;
            }
            let length_bits = 16 - offset_bits;
            let offset = usize::from(token >> length_bits) + 1;
            let len = usize::from(token & ((1u16 << length_bits) - 1)) + 3;
            if offset > pos {
                return Err(format!(
                    "a back-reference reaches {offset} bytes back from {pos}"
                ));
            }
            if pos + len > CHUNK {
                return Err("a back-reference runs past 4096 bytes".into());
            }
            for _ in 0..len {
                let b = out[out.len() - offset];
                out.push(b);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_references_and_raw_chunks() {
        // "abcabcabcabc": 3 literals, then a reference 3 back for 9 bytes (offset bits 4 at pos 3).
        let token: u16 = ((3 - 1) << 12) | (9 - 3);
        let mut c = vec![0b0000_1000, b'a', b'b', b'c'];
        c.extend_from_slice(&token.to_le_bytes());
        let mut src = (0x8000u16 | 0x3000 | (c.len() as u16 - 1))
            .to_le_bytes()
            .to_vec();
        src.extend_from_slice(&c);
        // A raw chunk of 4096 bytes follows.
        src.extend_from_slice(&(0x3000u16 | 4095).to_le_bytes());
        src.extend(std::iter::repeat_n(7u8, 4096));
        let out = decompress(&src, 65536).unwrap();
        assert_eq!(&out[..12], b"abcabcabcabc");
        assert!(out[12..4096].iter().all(|&b| b == 0));
        assert_eq!(out.len(), 8192);
        assert!(out[4096..].iter().all(|&b| b == 7));
        // A reference further back than the output is refused.
        let bad = [0x02, 0xB0, 0x01, 0x00, 0x10];
        assert!(decompress(&bad, 4096).is_err());
    }
}
