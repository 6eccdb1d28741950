//! Activation buffers recycled across training steps. Every step allocates the same set of
//! buffers; freshly allocated (or returned-to-the-OS) memory costs a page fault per 4 KB and a
//! memset, which measured a fifth of a step on small networks. A [`Buf`] goes back to a pool when
//! dropped and the next request of the same length takes it, contents unspecified.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Floats the pool may hold idle (1 GiB).
const POOL_LIMIT: usize = 1 << 28;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    held: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// Floats of slack in each allocation, so that the buffer can start on a 64-byte boundary.
const SLACK: usize = 64 / std::mem::size_of::<f32>() - 1;

/// A recycled `f32` buffer whose first element sits on a 64-byte boundary: a 16-lane load of a
/// channel block then never straddles two cache lines (the allocator only promises 16 bytes,
/// and a split load costs twice).
#[derive(Debug, Default)]
pub struct Buf {
    raw: Vec<f32>,
    off: usize,
    len: usize,
}

/// Floats to skip at the start of `raw` to reach a 64-byte boundary.
fn aligned_offset(raw: &[f32]) -> usize {
    let misalign = raw.as_ptr() as usize % 64;
    (64 - misalign) % 64 / std::mem::size_of::<f32>()
}

impl Buf {
    fn wrap(raw: Vec<f32>, len: usize) -> Buf {
        let off = aligned_offset(&raw);
        debug_assert!(off + len <= raw.len());
        Buf { raw, off, len }
    }

    /// A buffer of `len` floats whose contents are unspecified (finite garbage from an earlier
    /// step, or zeros): for outputs that are written in full.
    pub fn uninit(len: usize) -> Buf {
        if len == 0 {
            return Buf::default();
        }
        let reused = POOL.lock().ok().and_then(|mut guard| {
            let pool = guard.as_mut()?;
            let v = pool.free.get_mut(&len)?.pop()?;
            pool.held -= len;
            Some(v)
        });
        Buf::wrap(reused.unwrap_or_else(|| vec![0.0; len + SLACK]), len)
    }

    /// A buffer of `len` zeros.
    pub fn zeros(len: usize) -> Buf {
        let mut b = Buf::uninit(len);
        b.fill(0.0);
        b
    }

    /// A copy of `values`.
    pub fn from_slice(values: &[f32]) -> Buf {
        let mut b = Buf::uninit(values.len());
        b.copy_from_slice(values);
        b
    }

    /// The values as a vector, taken out of the pool's reach.
    pub fn into_vec(mut self) -> Vec<f32> {
        let mut raw = std::mem::take(&mut self.raw);
        raw.truncate(self.off + self.len);
        raw.drain(..self.off);
        raw
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.raw);
        let len = self.len;
        if len == 0 || v.len() != len + SLACK {
            return;
        }
        if let Ok(mut guard) = POOL.lock() {
            let pool = guard.get_or_insert_with(|| Pool { free: HashMap::new(), held: 0 });
            if pool.held + len <= POOL_LIMIT {
                pool.held += len;
                pool.free.entry(len).or_default().push(v);
            }
        }
    }
}

impl Clone for Buf {
    fn clone(&self) -> Buf {
        Buf::from_slice(self)
    }
}

impl Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.raw[self.off..self.off + self.len]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_recycled_by_length_and_zeroed_on_request() {
        let len = 12_345;
        let mut a = Buf::uninit(len);
        a.fill(3.0);
        let ptr = a.as_ptr();
        drop(a);
        let b = Buf::uninit(len);
        // The same allocation comes back (unless another test took it meanwhile).
        if b.as_ptr() == ptr {
            assert!(b.iter().all(|&v| v == 3.0));
        }
        drop(b);
        let z = Buf::zeros(len);
        assert!(z.iter().all(|&v| v == 0.0));
        assert_eq!(Buf::uninit(0).len(), 0);
        for n in [1, 17, 1000] {
            let b = Buf::from_slice(&vec![1.5; n]);
            assert_eq!(b.as_ptr() as usize % 64, 0, "buffer of {n} starts on a cache line");
            assert_eq!(b.into_vec(), vec![1.5; n]);
        }
    }
}
