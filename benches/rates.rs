//! `cargo bench --bench rates`: what the status page's rate tracking costs the pipeline.
//!
//! Decodes the recorded frames (and the built-in corpus) once, then measures, per
//! event, the pipeline stage's work (filter + encode, `Pipeline::process`) alone and
//! with the once-per-batch `Rates::observe` hook, in batches of 1024 as the stage
//! takes them. `BENCH_SECONDS` sets the time per case (default 3).

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

/// Nanoseconds per event of the stage's work, with or without the rates hook.
fn measure(events: &[Event], with_rates: bool, seconds: f64) -> f64 {
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
    let started = Instant::now();
    loop {
        pass(&mut n);
        if started.elapsed().as_secs_f64() >= seconds {
            break;
        }
    }
    started.elapsed().as_secs_f64() * 1e9 / n as f64
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let recorded =
        ha_ingestor::bench::load_frames(std::path::Path::new("tests/fixtures/ha-ws-frames.jsonl"))
            .expect("recorded frames");
    for (name, frames) in [
        ("recorded frames", recorded),
        ("built-in corpus", ha_ingestor::bench::builtin_frames()),
    ] {
        let events = events(&frames);
        // Alternate the two so machine noise hits both alike.
        let (mut without, mut with) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            without = without.min(measure(&events, false, seconds));
            with = with.min(measure(&events, true, seconds));
        }
        println!(
            "{name}: {} events; filter+encode {without:.0} ns/event; with rates {with:.0} ns/event; rates cost {:.1} % of the stage",
            events.len(),
            (with - without) * 100.0 / without
        );
    }
}
