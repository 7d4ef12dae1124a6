//! `cargo bench --bench allocator`: the hot path on glibc's allocator, the measured reason the binary uses mimalloc.

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

#[path = "common.rs"]
mod common;

fn main() {
    common::run_all("glibc malloc (std::alloc::System)");
}
