//! `cargo bench --bench rates`: what the status page's rate tracking costs the pipeline.
//!
//! Decodes the recorded frames (and the built-in corpus) once, then measures, per
//! event, the pipeline stage's work (filter + encode, `Pipeline::process`) alone and
//! with the once-per-batch `Rates::observe` hook, in batches of 1024 as the stage
//! takes them, with a Prometheus recorder installed as in the service. Each case
//! reports wall-clock and this thread's CPU time (`/proc/thread-self/schedstat`) per
//! event; the two alternate, `BENCH_ROUNDS` rounds (default 5), best of each.
//! `BENCH_SECONDS` sets the time per run (default 3); `BENCH_EVENTS` keeps only the
//! first N events of each input (e.g. 1024: a working set that stays in cache).

use std::sync::Arc;
use std::time::Instant;

use ha_ingestor::config::{FilterConfig, SchemaConfig};
use ha_ingestor::event::{Event, SourceId};
use ha_ingestor::monitor::rates::Rates;
use ha_ingestor::pipeline::Pipeline;
use ha_ingestor::source::homeassistant::decode::{ServerMessage, decode_frame};

const BATCH: usize = 1024;

fn events(frames: &[String]) -> Vec<Event> {
    let source: SourceId = Arc::from("homeassistant");
    let mut messages = Vec::new();
    let mut out = Vec::new();
    for frame in frames {
        decode_frame(frame, &source, &mut messages);
        for m in messages.drain(..) {
            if let Ok(ServerMessage::Event { event, .. }) = m {
                out.push(event);
            }
        }
    }
    out
}

/// Nanoseconds this thread has run on a CPU (first field of `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// Nanoseconds per event of the stage's work (wall, thread CPU), with or without the rates hook.
fn measure(events: &[Event], with_rates: bool, seconds: f64) -> (f64, Option<f64>) {
    let mut pipeline =
        Pipeline::new(&FilterConfig::default(), &SchemaConfig::default()).expect("pipeline");
    let rates = Rates::default();
    let mut out = String::with_capacity(1 << 20);
    let mut n = 0u64;
    let mut pass = |count: &mut u64| {
        for batch in events.chunks(BATCH) {
            if with_rates {
                rates.observe(batch);
            }
            for e in batch {
                pipeline.process(e, &mut out);
            }
            out.clear();
            *count += batch.len() as u64;
        }
    };
    let mut warm = 0;
    pass(&mut warm);
    let cpu_before = thread_cpu_ns();
    let started = Instant::now();
    loop {
        pass(&mut n);
        if started.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    let wall = started.elapsed().as_secs_f64() * 1e9 / n as f64;
    let cpu = match (cpu_before, thread_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / n as f64),
        _ => None,
    };
    (wall, cpu)
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // As in the service: metric handles record into a Prometheus registry.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::set_global_recorder(recorder).expect("no recorder installed yet");
    let recorded = ha_ingestor::bench::pipeline::load_frames(std::path::Path::new(
        "tests/data/fixtures/ha-ws-frames.jsonl",
    ))
    .expect("recorded frames");
    for (name, frames) in [
        ("recorded frames", recorded),
        (
            "built-in corpus",
            ha_ingestor::bench::pipeline::builtin_frames(),
        ),
    ] {
        let mut events = events(&frames);
        if let Some(n) = std::env::var("BENCH_EVENTS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        {
            events.truncate(n);
        }
        // Alternate the two so machine noise hits both alike; keep the best of each.
        let best = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (mut without, mut with) = ((f64::MAX, None), (f64::MAX, None));
        for _ in 0..rounds {
            let w = measure(&events, false, seconds);
            without = (without.0.min(w.0), best(without.1, w.1));
            let r = measure(&events, true, seconds);
            with = (with.0.min(r.0), best(with.1, r.1));
        }
        let cost = |a: f64, b: f64| (b - a) * 100.0 / a;
        println!(
            "{name}: {} events; wall: filter+encode {:.0} ns/event, with rates {:.0} ns/event, rates cost {:+.1} %",
            events.len(),
            without.0,
            with.0,
            cost(without.0, with.0)
        );
        if let (Some(a), Some(b)) = (without.1, with.1) {
            println!(
                "{name}: thread CPU: filter+encode {a:.0} ns/event, with rates {b:.0} ns/event, rates cost {:+.1} %",
                cost(a, b)
            );
        }
    }
}
