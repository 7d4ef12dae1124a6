//! `ha-ingestor bench pipeline`: the hot path (decode → filter → encode) on one core.
//!
//! Frames are decoded, filtered and encoded in a loop on the calling thread
//! for at least the given time; the report gives events per second and, when
//! the counting allocator is installed (the binary), allocations and bytes
//! allocated per event.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::config::{FilterConfig, SchemaConfig};
use crate::event::{EventKind, SourceId};
use crate::pipeline::{Outcome, Pipeline, PipelineError};
use crate::source::homeassistant::decode::{ServerMessage, decode_frame};

/// Entities in the built-in corpus.
pub const CORPUS_ENTITIES: usize = 200;
/// Events in the built-in corpus.
pub const CORPUS_EVENTS: usize = 20_000;

/// The measured figures, as `--json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Where the frames came from.
    pub input: String,
    /// Events decoded (all types).
    pub events: u64,
    /// Of which `state_changed`.
    pub state_changed: u64,
    /// Measured wall time.
    pub seconds: f64,
    /// All events per second on one core.
    pub events_per_sec: f64,
    /// `state_changed` events per second on one core.
    pub state_changed_per_sec: f64,
    /// Points encoded.
    pub points: u64,
    /// Line-protocol bytes produced per event.
    pub output_bytes_per_event: f64,
    /// Heap allocations per event (`null` without the counting allocator).
    pub allocs_per_event: Option<f64>,
    /// Heap bytes allocated per event (`null` without the counting allocator).
    pub bytes_allocated_per_event: Option<f64>,
    /// Frames that failed to decode (should be 0 for recorded input).
    pub decode_errors: u64,
}

/// Reads one frame per line (the recorded `ha-ws-frames.jsonl` shape).
pub fn load_frames(path: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

/// The built-in realistic corpus (from the simulator's generator, fixed seed).
pub fn builtin_frames() -> Vec<String> {
    crate::source::simulator::corpus(CORPUS_ENTITIES, CORPUS_EVENTS, 1)
}

/// Groups event frames into HA's coalesced array frames of up to `size` messages
/// (`supported_features: coalesce_messages`), as a busy HA sends them; other frames pass unchanged.
pub fn coalesce(frames: &[String], size: usize) -> Vec<String> {
    if size <= 1 {
        return frames.to_vec();
    }
    let mut out = Vec::new();
    let mut group: Vec<&str> = Vec::with_capacity(size);
    let flush = |group: &mut Vec<&str>, out: &mut Vec<String>| {
        if !group.is_empty() {
            out.push(format!("[{}]", group.join(",")));
            group.clear();
        }
    };
    for frame in frames {
        if frame.starts_with("{\"type\":\"event\"")
            || frame.contains("\"type\":\"event\",\"event\"")
        {
            group.push(frame);
            if group.len() == size {
                flush(&mut group, &mut out);
            }
        } else {
            flush(&mut group, &mut out);
            out.push(frame.clone());
        }
    }
    flush(&mut group, &mut out);
    out
}

/// Runs the hot path over `frames` for at least `min_seconds` (and at least one pass).
pub fn run(frames: &[String], input: &str, min_seconds: f64) -> Result<BenchReport, PipelineError> {
    let source: SourceId = Arc::from("bench");
    let mut pipeline = Pipeline::new(&FilterConfig::default(), &SchemaConfig::default())?;
    let mut messages = Vec::with_capacity(64);
    let mut out = String::with_capacity(1 << 20);
    let counting = crate::alloc_counter::is_active();

    let mut pass = |count: bool, totals: &mut (u64, u64, u64, u64, u64), out: &mut String| {
        for frame in frames {
            messages.clear();
            decode_frame(frame, &source, &mut messages);
            for message in messages.drain(..) {
                match message {
                    Ok(ServerMessage::Event { event, .. }) => {
                        if count {
                            totals.0 += 1;
                            if matches!(event.kind, EventKind::StateChanged(_)) {
                                totals.1 += 1;
                            }
                        }
                        if let Outcome::Points(n) = pipeline.process(&event, out)
                            && count
                        {
                            totals.2 += n as u64;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => totals.4 += 1,
                }
            }
            if out.len() > 1 << 19 {
                if count {
                    totals.3 += out.len() as u64;
                }
                out.clear();
            }
        }
    };

    // One warm-up pass fills caches and scratch buffers.
    let mut warm = (0, 0, 0, 0, 0);
    pass(false, &mut warm, &mut out);
    out.clear();

    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (allocs_before, bytes_before) = crate::alloc_counter::snapshot();
    let started = Instant::now();
    loop {
        pass(true, &mut totals, &mut out);
        if started.elapsed().as_secs_f64() >= min_seconds {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (allocs_after, bytes_after) = crate::alloc_counter::snapshot();
    totals.3 += out.len() as u64;
    let (events, state_changed, points, output_bytes, decode_errors) = totals;
    let per_event = |n: u64| {
        if events == 0 {
            0.0
        } else {
            n as f64 / events as f64
        }
    };
    Ok(BenchReport {
        input: input.to_string(),
        events,
        state_changed,
        seconds,
        events_per_sec: events as f64 / seconds,
        state_changed_per_sec: state_changed as f64 / seconds,
        points,
        output_bytes_per_event: per_event(output_bytes),
        allocs_per_event: counting.then(|| per_event(allocs_after - allocs_before)),
        bytes_allocated_per_event: counting.then(|| per_event(bytes_after - bytes_before)),
        decode_errors,
    })
}
