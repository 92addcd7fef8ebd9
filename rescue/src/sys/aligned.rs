//! Page-aligned byte buffers: what direct I/O (O_DIRECT) reads into and writes from, and what the capture
//! pipeline passes from reader to compressor to image writer (and back, for reuse) without copying.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The alignment: a page, enough for the direct I/O of every block device and file system.
pub const ALIGN: usize = 4096;

/// Whether a read or write of `buf` at `offset` meets direct I/O's rules on a device with `sector`-byte
/// logical sectors: memory aligned to a page, offset and length to the sector.
pub fn fits_direct_io(buf: &[u8], offset: u64, sector: u32) -> bool {
    let sector = u64::from(sector.max(512));
    (buf.as_ptr() as usize).is_multiple_of(ALIGN)
        && offset.is_multiple_of(sector)
        && (buf.len() as u64).is_multiple_of(sector)
}

/// A byte buffer whose memory starts on a page boundary. Its capacity is fixed at creation; every byte of
/// it is initialised (zeroed) then, so `set_len` within the capacity is safe.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    cap: usize,
}

// SAFETY: the buffer owns its memory exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared references only read, like &Vec<u8>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer that can hold `cap` bytes (at least one page is allocated).
    pub fn with_capacity(cap: usize) -> AlignedBuf {
        let layout = Self::layout(cap);
        // SAFETY: the layout has a non-zero size (at least ALIGN).
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        AlignedBuf { ptr, len: 0, cap }
    }

    /// A buffer holding a copy of `data`.
    pub fn copy_of(data: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::with_capacity(data.len());
        b.set_len(data.len());
        b.copy_from_slice(data);
        b
    }

    fn layout(cap: usize) -> Layout {
        let size = cap.max(1).next_multiple_of(ALIGN);
        Layout::from_size_align(size, ALIGN)
            .unwrap_or_else(|_| panic!("a buffer of {cap} bytes cannot be allocated"))
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Make the buffer `len` bytes long (at most its capacity). The bytes are whatever the buffer held
    /// there before (zeros if never written).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap, "length {len} beyond capacity {}", self.cap);
        self.len = len;
    }

    /// Make the buffer `len` bytes long, replacing it with a larger one first when its capacity is too
    /// small (the bytes are then zeros).
    pub fn fit(&mut self, len: usize) {
        if self.cap < len {
            *self = AlignedBuf::with_capacity(len);
        }
        self.set_len(len);
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_capacity` with this very layout, and not used after this.
        unsafe { dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` holds `cap >= len` initialised bytes owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> AlignedBuf {
        let mut b = AlignedBuf::with_capacity(self.cap);
        b.set_len(self.len);
        b.copy_from_slice(self);
        b
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &AlignedBuf) -> bool {
        **self == **other
    }
}

impl Eq for AlignedBuf {}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} of {} bytes)", self.len, self.cap)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn aligned_zeroed_and_resizable_within_capacity() {
        let mut b = AlignedBuf::with_capacity(10_000);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert!(b.is_empty());
        b.set_len(10_000);
        assert!(b.iter().all(|&x| x == 0));
        b[9_999] = 7;
        b.set_len(5);
        b.set_len(10_000);
        assert_eq!(b[9_999], 7, "bytes survive shrinking and growing");
        assert_eq!(AlignedBuf::copy_of(b"abc").to_vec(), b"abc");
        assert_eq!(b.clone(), b);
    }

    #[test]
    fn direct_io_needs_aligned_memory_offset_and_length() {
        let mut b = AlignedBuf::with_capacity(8192);
        b.set_len(8192);
        assert!(fits_direct_io(&b, 4096, 512));
        assert!(fits_direct_io(&b[..512], 512, 512));
        assert!(
            !fits_direct_io(&b[..512], 512, 4096),
            "4Kn: 512 bytes are not a sector"
        );
        assert!(!fits_direct_io(&b[1..513], 0, 512), "memory off the page");
        assert!(!fits_direct_io(&b[..1000], 0, 512), "length off the sector");
        assert!(!fits_direct_io(&b, 100, 512), "offset off the sector");
    }

    #[test]
    #[should_panic(expected = "beyond capacity")]
    fn growing_past_the_capacity_panics() {
        AlignedBuf::with_capacity(100).set_len(101);
    }
}
