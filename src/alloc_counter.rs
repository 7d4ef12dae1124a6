//! The process allocator: mimalloc, counting allocations so the benchmark can report them per event.
//!
//! mimalloc rather than the system allocator: with glibc's allocator, decoding
//! coalesced array frames (HA's normal delivery) measured 80k events/s on one
//! core against 410k with mimalloc (see docs/BENCHMARKS.md). The binary
//! installs [`CountingAllocator`] as its global allocator; counting costs two
//! relaxed atomic additions per allocation. Library users (tests) that
//! do not install it read zeros, and [`is_active`] tells them so.
//!
//! [`return_freed_memory_at_once`] sets mimalloc's purge delay to 0: mimalloc 3
//! keeps freed pages for a second (its default) before it gives them back, and at
//! 5,000 MQTT messages/s that held 44–48 MiB where 40 MiB are needed, for no CPU that
//! the benchmarks can tell (docs/BENCHMARKS.md, "Where the rest goes").

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// mimalloc, counting what passes through it.
pub struct CountingAllocator;

// SAFETY: every method forwards to `MiMalloc` unchanged; the counters are plain atomics.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, i.e. from `MiMalloc`.
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// (allocations, bytes) so far.
pub fn snapshot() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

/// Whether the counting allocator is installed in this process.
pub fn is_active() -> bool {
    let before = snapshot().0;
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    snapshot().0 != before
}

/// mimalloc's `mi_option_purge_delay` (the same position in mimalloc 2's and 3's
/// `mi_option_t`; `libmimalloc-sys` names only the options around it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The environment variable with which mimalloc itself reads its purge delay.
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// Makes mimalloc return freed pages to the OS at once instead of a second later, so
/// resident memory follows what the process holds (see the module doc); a
/// `MIMALLOC_PURGE_DELAY` in the environment is left to mimalloc.
pub fn return_freed_memory_at_once() {
    if std::env::var_os(PURGE_DELAY_VAR).is_none() {
        // SAFETY: sets one of mimalloc's integer options; any value is valid for it.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set_to_zero() {
        if std::env::var_os(PURGE_DELAY_VAR).is_some() {
            return; // mimalloc's own setting, left alone on purpose
        }
        // SAFETY: reads one of mimalloc's options.
        let delay = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // Position 15 is the purge delay: mimalloc 3's default for it is a second, and no
        // other option of that enum defaults to 1,000.
        assert_eq!(delay(), 1000, "mimalloc's default purge delay");
        return_freed_memory_at_once();
        assert_eq!(delay(), 0);
    }
}
