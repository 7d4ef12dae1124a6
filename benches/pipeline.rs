//! `cargo bench --bench pipeline`: the hot path over the recorded frames and the built-in corpus.
//!
//! The same measurement as `ha-ingestor bench pipeline`, kept here so the
//! usual `cargo bench` finds it. Allocation counts need the binary (it installs
//! the counting allocator), so this bench installs it too.

use std::path::Path;

use ha_ingestor::alloc_counter::CountingAllocator;
use ha_ingestor::bench;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn main() {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ha-ws-frames.jsonl");
    let inputs = [
        (
            "recorded frames (tests/fixtures/ha-ws-frames.jsonl)".to_string(),
            bench::load_frames(&fixtures).expect("fixtures are readable"),
        ),
        ("built-in corpus".to_string(), bench::builtin_frames()),
    ];
    for (name, frames) in inputs {
        let r = bench::run(&frames, &name, seconds).expect("default pipeline builds");
        println!(
            "{name}: {:.0} events/s, {:.0} state_changed/s on one core; {:.1} allocations and {:.0} bytes allocated per event",
            r.events_per_sec,
            r.state_changed_per_sec,
            r.allocs_per_event.unwrap_or(f64::NAN),
            r.bytes_allocated_per_event.unwrap_or(f64::NAN)
        );
    }
}
