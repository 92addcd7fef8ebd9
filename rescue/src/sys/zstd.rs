//! A zstd compression context with parameters the `zstd` crate does not reach. zstd 1.5.7 splits blocks
//! before compressing them ("pre-splitter", `ZSTD_c_blockSplitterLevel`, experimental and so not in
//! `zstd-safe`'s parameter list); on disk-image chunks of several MiB at level 3 that costs 6–10% of the
//! time for a 0.6% smaller output, which a window covering the whole chunk wins back at less cost (see
//! `image::chunk`).

use std::ptr::NonNull;

use zstd_sys::{ZSTD_cParameter, ZSTD_getErrorName, ZSTD_isError};

/// Compression parameters beyond the level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZstdParams {
    pub level: i32,
    /// log2 of the window; 0 keeps the level's.
    pub window_log: u32,
    /// log2 of the match finder's hash table; 0 keeps the level's.
    pub hash_log: u32,
    /// Turn the pre-splitter off.
    pub no_pre_split: bool,
}

pub struct ZstdCompressor {
    ctx: NonNull<zstd_sys::ZSTD_CCtx>,
}

// SAFETY: a ZSTD_CCtx is not tied to the thread that made it; `&mut self` keeps its use exclusive.
unsafe impl Send for ZstdCompressor {}

/// zstd's own name for the error in `code`, if it is one.
fn check(code: usize) -> Result<usize, String> {
    // SAFETY: both are pure functions of the code; the name is a static NUL-terminated string.
    unsafe {
        if ZSTD_isError(code) == 0 {
            return Ok(code);
        }
        let name = std::ffi::CStr::from_ptr(ZSTD_getErrorName(code));
        Err(name.to_string_lossy().into_owned())
    }
}

impl ZstdCompressor {
    pub fn new(p: ZstdParams) -> Result<ZstdCompressor, String> {
        // SAFETY: allocation only; a null result is handled.
        let ctx = NonNull::new(unsafe { zstd_sys::ZSTD_createCCtx() })
            .ok_or_else(|| "zstd could not allocate a compression context".to_string())?;
        let c = ZstdCompressor { ctx };
        c.set(ZSTD_cParameter::ZSTD_c_compressionLevel, p.level)?;
        if p.window_log > 0 {
            c.set(ZSTD_cParameter::ZSTD_c_windowLog, p.window_log as i32)?;
        }
        if p.hash_log > 0 {
            c.set(ZSTD_cParameter::ZSTD_c_hashLog, p.hash_log as i32)?;
        }
        if p.no_pre_split {
            // ZSTD_c_blockSplitterLevel (experimental parameter 20): 1 = no splitting.
            c.set(ZSTD_cParameter::ZSTD_c_experimentalParam20, 1)?;
        }
        Ok(c)
    }

    fn set(&self, param: ZSTD_cParameter, value: i32) -> Result<(), String> {
        // SAFETY: `ctx` is a live context owned by `self`.
        check(unsafe { zstd_sys::ZSTD_CCtx_setParameter(self.ctx.as_ptr(), param, value) })
            .map(|_| ())
            .map_err(|e| format!("zstd parameter {param:?} = {value}: {e}"))
    }

    /// Compress `src` into `dst` as one frame; the frame's length, or zstd's error (such as
    /// "Destination buffer is too small").
    pub fn compress(&mut self, src: &[u8], dst: &mut [u8]) -> Result<usize, String> {
        // SAFETY: `ctx` is live and exclusively ours; the pointers and lengths describe valid slices.
        check(unsafe {
            zstd_sys::ZSTD_compress2(
                self.ctx.as_ptr(),
                dst.as_mut_ptr().cast(),
                dst.len(),
                src.as_ptr().cast(),
                src.len(),
            )
        })
    }
}

impl ZstdCompressor {
    /// [`Self::compress`] fed `piece` bytes at a time, asking `stop` between pieces: a slow level can then
    /// be abandoned within one piece's time. `Ok(None)` when stopped (the context is ready for the next
    /// frame). The frame is the same format as [`Self::compress`]'s, with the content size in its header.
    pub fn compress_pieces(
        &mut self,
        src: &[u8],
        dst: &mut [u8],
        piece: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<usize>, String> {
        use zstd_sys::{ZSTD_EndDirective, ZSTD_ResetDirective};
        let ctx = self.ctx.as_ptr();
        // SAFETY: `ctx` is live and exclusively ours.
        unsafe {
            zstd_sys::ZSTD_CCtx_reset(ctx, ZSTD_ResetDirective::ZSTD_reset_session_only);
            check(zstd_sys::ZSTD_CCtx_setPledgedSrcSize(ctx, src.len() as u64))?;
        }
        let mut out = zstd_sys::ZSTD_outBuffer {
            dst: dst.as_mut_ptr().cast(),
            size: dst.len(),
            pos: 0,
        };
        let mut fed = 0;
        let result = loop {
            if stop() {
                break Ok(None);
            }
            let end = (fed + piece.max(1)).min(src.len());
            let last = end == src.len();
            let mut input = zstd_sys::ZSTD_inBuffer {
                src: src[..end].as_ptr().cast(),
                size: end,
                pos: fed,
            };
            let directive = if last {
                ZSTD_EndDirective::ZSTD_e_end
            } else {
                ZSTD_EndDirective::ZSTD_e_continue
            };
            // SAFETY: `ctx` is live; `input` and `out` describe the valid slices `src[..end]` and `dst`,
            // with positions within them.
            let left = check(unsafe {
                zstd_sys::ZSTD_compressStream2(ctx, &mut out, &mut input, directive)
            });
            fed = input.pos;
            match left {
                Err(e) => break Err(e),
                Ok(0) if last && fed == src.len() => break Ok(Some(out.pos)),
                Ok(_) if out.pos == out.size => {
                    break Err("Destination buffer is too small".to_string())
                }
                Ok(_) => {}
            }
        };
        if !matches!(result, Ok(Some(_))) {
            // SAFETY: as above; resetting a session never fails and makes the context reusable.
            unsafe {
                zstd_sys::ZSTD_CCtx_reset(ctx, ZSTD_ResetDirective::ZSTD_reset_session_only);
            }
        }
        result
    }
}

impl Drop for ZstdCompressor {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createCCtx and freed once, here.
        unsafe {
            zstd_sys::ZSTD_freeCCtx(self.ctx.as_ptr());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_decompress_with_the_zstd_crate_and_small_buffers_are_refused() {
        let text: Vec<u8> = b"a disk image chunk, more or less repetitive. "
            .iter()
            .copied()
            .cycle()
            .take(1 << 20)
            .collect();
        for p in [
            ZstdParams {
                level: 3,
                ..Default::default()
            },
            ZstdParams {
                level: 3,
                window_log: 23,
                no_pre_split: true,
                ..Default::default()
            },
            ZstdParams {
                level: 2,
                window_log: 23,
                hash_log: 15,
                ..Default::default()
            },
        ] {
            let mut c = ZstdCompressor::new(p).unwrap();
            let mut out = vec![0u8; 1 << 20];
            let n = c.compress(&text, &mut out).unwrap();
            assert!(n < 10_000);
            assert_eq!(zstd::bulk::decompress(&out[..n], text.len()).unwrap(), text);
            let e = c.compress(&text, &mut out[..8]).unwrap_err();
            assert!(e.contains("too small"), "{e}");
        }
        // Fed in pieces: the same bytes back, a stop honoured, and the context usable again afterwards.
        let mut c = ZstdCompressor::new(ZstdParams {
            level: 19,
            ..Default::default()
        })
        .unwrap();
        let mut out = vec![0u8; 1 << 20];
        assert_eq!(
            c.compress_pieces(&text, &mut out, 64 << 10, &|| true),
            Ok(None)
        );
        let n = c
            .compress_pieces(&text, &mut out, 64 << 10, &|| false)
            .unwrap()
            .unwrap();
        assert_eq!(zstd::bulk::decompress(&out[..n], text.len()).unwrap(), text);
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&out[..n]).ok(),
            Some(Some(text.len() as u64))
        );
        let e = c
            .compress_pieces(&text, &mut out[..8], 64 << 10, &|| false)
            .unwrap_err();
        assert!(e.contains("too small"), "{e}");
        let e = ZstdCompressor::new(ZstdParams {
            level: 3,
            window_log: 99,
            ..Default::default()
        });
        assert!(e.is_err(), "an impossible window is refused");
    }
}
