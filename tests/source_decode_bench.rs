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
    let recorded = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ha-ws-frames.jsonl"
    ))
    .unwrap();
    let recorded: Vec<String> = recorded.lines().skip(3).map(str::to_string).collect();
    for (label, input) in [
        (
            "simulator corpus",
            ha_ingestor::source::simulator::corpus(500, 100_000, 1),
        ),
        (
            "recorded HA frames",
            recorded.iter().cycle().take(100_000).cloned().collect(),
        ),
    ] {
        println!("{label}:");
        run_decode(input);
    }
}

fn run_decode(frames: Vec<String>) {
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
            "  {label}: {:.0} events/s, {:.0} MB/s (mean frame {} bytes)",
            frames.len() as f64 / best,
            bytes as f64 / best / 1e6,
            bytes / frames.len()
        );
    }
}

/// HA's timestamps (about ten per `state_changed`): the fast path against chrono.
#[test]
#[ignore = "benchmark: run in release by hand"]
fn timestamp_parse_throughput() {
    let texts: Vec<String> = (0..100_000i64)
        .map(|i| {
            ha_ingestor::event::Timestamp::from_nanos(1_767_225_600_000_000_000 + i * 7_919_000)
                .to_rfc3339()
        })
        .collect();
    let time = |f: &dyn Fn(&str) -> i64| {
        let start = std::time::Instant::now();
        let mut sum = 0i64;
        for _ in 0..10 {
            for t in &texts {
                sum = sum.wrapping_add(f(t));
            }
        }
        (
            start.elapsed().as_secs_f64() * 1e9 / (texts.len() * 10) as f64,
            sum,
        )
    };
    let (fast, a) =
        time(&|t| ha_ingestor::event::Timestamp::parse_rfc3339(t).map_or(0, |t| t.as_nanos()));
    let (slow, b) = time(&|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .and_then(|d| d.timestamp_nanos_opt())
            .unwrap_or(0)
    });
    assert_eq!(a, b);
    println!("Timestamp::parse_rfc3339: {fast:.1} ns/timestamp; chrono: {slow:.1} ns/timestamp");
}
