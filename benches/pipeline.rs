//! `cargo bench --bench pipeline`: the hot path over the recorded frames and the built-in corpus.
//!
//! The same measurement as `ha-ingestor bench pipeline`, kept here so the
//! usual `cargo bench` finds it, with the process allocator of the binary
//! (mimalloc, counting). `benches/allocator.rs` runs it on glibc's allocator
//! for comparison. `BENCH_SECONDS` sets the time per case (default 3).

use ha_ingestor::alloc_counter::CountingAllocator;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[path = "common.rs"]
mod common;

fn main() {
    common::run_all("mimalloc (the binary's allocator)");
}
