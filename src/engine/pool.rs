//! Buffers of evicted messages, kept for the next ones.
//!
//! Once rings are full every publish evicts a message; handing its buffer to the new one
//! takes the allocator off the steady-state path (which matters most with musl's
//! allocator in the static builds). The pool is small and bounded, and emptied when the
//! broker goes quiet.

/// A recycled buffer is at most this much larger than the message it carries; the
/// per-entry overhead counted against the limits includes it.
pub(crate) const MAX_SLACK: usize = 32;
/// Most bytes of buffers the pool keeps.
const POOL_BYTES: usize = 256 * 1024;
/// Buffers larger than this are freed, not kept.
const MAX_BUFFER: usize = 64 * 1024;

#[derive(Debug, Default)]
pub(crate) struct Pool {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

impl Pool {
    /// An empty buffer for `len` bytes: recycled when the newest one in the pool fits
    /// with at most [`MAX_SLACK`] bytes to spare.
    pub(crate) fn take(&mut self, len: usize) -> Vec<u8> {
        if let Some(b) = self.buffers.last() {
            let cap = b.capacity();
            if cap >= len && cap <= len + MAX_SLACK {
                self.bytes -= cap;
                if let Some(b) = self.buffers.pop() {
                    return b;
                }
            }
        }
        Vec::with_capacity(len)
    }

    /// Keeps `buffer` for later if there is room.
    pub(crate) fn give(&mut self, buffer: Vec<u8>) {
        let cap = buffer.capacity();
        if cap <= MAX_BUFFER && self.bytes + cap <= POOL_BYTES {
            self.bytes += cap;
            self.buffers.push(buffer);
        }
    }

    /// Frees every kept buffer.
    pub(crate) fn clear(&mut self) {
        self.buffers = Vec::new();
        self.bytes = 0;
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_buffers_that_fit() {
        let mut p = Pool::default();
        p.give(Vec::with_capacity(100));
        let b = p.take(80);
        assert_eq!(b.capacity(), 100, "recycled");
        p.give(b);
        assert_eq!(p.take(60).capacity(), 60, "too much slack: a new one");
        assert_eq!(p.take(200).capacity(), 200, "too small: a new one");
        assert_eq!(p.take(100 - MAX_SLACK).capacity(), 100);
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn stays_bounded() {
        let mut p = Pool::default();
        p.give(Vec::with_capacity(MAX_BUFFER + 1));
        assert_eq!(p.bytes(), 0, "large buffers are freed");
        for _ in 0..10_000 {
            p.give(Vec::with_capacity(1000));
        }
        assert!(p.bytes() <= POOL_BYTES);
        p.clear();
        assert_eq!(p.bytes(), 0);
    }
}
