//! The cases both bench targets run: recorded and built-in frames, single and coalesced.

use std::path::Path;

use ha_ingestor::bench::pipeline as bench;

/// Runs every case and prints one line each.
pub fn run_all(allocator: &str) {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures/ha-ws-frames.jsonl");
    let recorded = bench::load_frames(&fixtures).expect("fixtures are readable");
    let builtin = bench::builtin_frames();
    println!("allocator: {allocator}");
    for (name, frames) in [
        ("recorded frames", &recorded),
        ("built-in corpus", &builtin),
    ] {
        for size in [1, 256] {
            let input = bench::coalesce(frames, size);
            let label = if size == 1 {
                format!("{name}, one event per frame")
            } else {
                format!("{name}, arrays of {size}")
            };
            let r = bench::run(&input, &label, seconds).expect("default pipeline builds");
            let allocs = r
                .allocs_per_event
                .map(|a| {
                    format!(
                        "; {a:.1} allocations, {:.0} bytes allocated per event",
                        r.bytes_allocated_per_event.unwrap_or(0.0)
                    )
                })
                .unwrap_or_default();
            println!(
                "  {label}: {:.0} events/s, {:.0} state_changed/s on one core{allocs}",
                r.events_per_sec, r.state_changed_per_sec
            );
        }
    }
}
