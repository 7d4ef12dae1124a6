//! Rough decode throughput of the WebSocket source on the simulator's corpus.
//!
//! Run by hand in release:
//! `cargo test --release --test source_decode_bench -- --ignored --nocapture`.
//!
//! This test binary uses mimalloc as its global allocator. With glibc's malloc
//! the same loop measured ~260k events/s for single frames but only ~80k/s for
//! coalesced arrays of 256: perf showed half the time in `_int_malloc` and
//! `malloc_consolidate` (a batch of events allocated then freed together
//! defeats glibc's per-thread cache). With mimalloc both reach ~400k/s
//! (2-core Xeon VM, shared), so the binary should use it too.

use ha_ingestor::event::SourceId;
use ha_ingestor::source::homeassistant::decode::decode_frame;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn source() -> SourceId {
    SourceId::from("homeassistant")
}

/// Best of five passes over 100 000 events, as single frames and as HA's coalesced arrays.
#[test]
#[ignore = "benchmark: run in release by hand"]
fn decode_throughput() {
    let frames = ha_ingestor::source::simulator::corpus(500, 100_000, 1);
    let bytes: usize = frames.iter().map(String::len).sum();
    let arrays: Vec<String> = frames
        .chunks(256)
        .map(|c| format!("[{}]", c.join(",")))
        .collect();
    let src = source();
    let mut out = Vec::with_capacity(512);
    for (label, input) in [("single frames", &frames), ("arrays of 256", &arrays)] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let mut events = 0usize;
            for frame in input {
                decode_frame(frame, &src, &mut out);
                events += out.iter().filter(|r| r.is_ok()).count();
                out.clear();
            }
            assert_eq!(events, frames.len());
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!(
            "{label}: {:.0} events/s, {:.0} MB/s (mean frame {} bytes)",
            frames.len() as f64 / best,
            bytes as f64 / best / 1e6,
            bytes / frames.len()
        );
    }
}
