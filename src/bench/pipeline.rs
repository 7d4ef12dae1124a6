//! `ha-ingestor bench pipeline`: the hot path (decode → filter → encode) on one core;
//! `ha-ingestor bench rules`: the filter chain alone, and its share of that path.
//!
//! Frames are decoded, filtered and encoded in a loop on the calling thread
//! for at least the given time; the report gives events per second and, when
//! the counting allocator is installed (the binary), allocations and bytes
//! allocated per event.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::thread_cpu_nanos;
use crate::config::{FilterConfig, SchemaConfig};
use crate::encode::Encoder;
use crate::event::{EventKind, SourceId};
use crate::pipeline::rules::RuleChain;
use crate::pipeline::{Outcome, Pipeline, PipelineError};
use crate::source::homeassistant::decode::{ServerMessage, decode_frame};

/// Entities in the built-in corpus.
pub const CORPUS_ENTITIES: usize = 200;
/// Events in the built-in corpus.
pub const CORPUS_EVENTS: usize = 20_000;

/// The source id the decoded events carry: the HA source's (as `app` wires it), so a
/// rule matching on `source` decides in both benches as it does in the service.
const SOURCE: &str = "homeassistant";

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
    /// Whether the run recorded metrics as the service does (`--metrics`).
    pub metrics: bool,
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
    crate::simulator::corpus(CORPUS_ENTITIES, CORPUS_EVENTS, 1)
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

/// Runs the hot path with the default config (keep everything, HA schema).
pub fn run(frames: &[String], input: &str, min_seconds: f64) -> Result<BenchReport, PipelineError> {
    run_with(
        frames,
        input,
        min_seconds,
        &FilterConfig::default(),
        &SchemaConfig::default(),
    )
}

/// Runs the hot path over `frames` for at least `min_seconds` (and at least one pass) with the given `[filter]` and `[schema]`.
pub fn run_with(
    frames: &[String],
    input: &str,
    min_seconds: f64,
    filter: &FilterConfig,
    schema: &SchemaConfig,
) -> Result<BenchReport, PipelineError> {
    run_monitored(frames, input, min_seconds, filter, schema, false)
}

/// Events per batch of the pipeline task (its `recv_many` limit), where it updates its metrics.
const PIPELINE_BATCH: usize = 1024;

/// Events per batch handed to the rate tracker by `bench pipeline --metrics`. The
/// service hands it whole pipeline batches (up to [`PIPELINE_BATCH`]), which it holds
/// anyway; here the events would otherwise be dropped at once, and holding 1024
/// decoded events would measure the allocator's cache misses, not monitoring. At 64
/// the tracker's per-batch cost (a lock, a clock read) is still spread thin.
const RATES_BATCH: usize = 64;

/// The metric updates the service makes on the hot path, for `bench pipeline --metrics`:
/// per frame the source's bytes, per event its received counter (by event type) and
/// `Stats`, per batch of [`PIPELINE_BATCH`] events the pipeline's gauge and
/// counters and the status page's rate tracker (which keeps the per-domain
/// counter). They go to whatever recorder is installed.
struct HotPathMetrics {
    stats: crate::monitor::Stats,
    bytes: metrics::Counter,
    by_type: std::collections::HashMap<String, metrics::Counter>,
    in_batch: usize,
    batch_points: u64,
    /// The batch's events, kept until the batch is handed to the rate tracker.
    batch: Vec<crate::event::Event>,
}

impl HotPathMetrics {
    fn new() -> Self {
        HotPathMetrics {
            stats: crate::monitor::Stats::default(),
            bytes: metrics::counter!(crate::monitor::metrics::SOURCE_RECEIVED_BYTES, "source" => SOURCE),
            by_type: std::collections::HashMap::new(),
            in_batch: 0,
            batch_points: 0,
            batch: Vec::with_capacity(RATES_BATCH),
        }
    }

    fn frame(&self, len: usize) {
        self.bytes.increment(len as u64);
    }

    fn event(&mut self, event: crate::event::Event, points: u64) {
        let event_type = event.event_type();
        // As the HA source's meters: one handle per event type, made once.
        match self.by_type.get(event_type) {
            Some(c) => c.increment(1),
            None => {
                let c = metrics::counter!(crate::monitor::metrics::SOURCE_RECEIVED_EVENTS, "source" => SOURCE, "event_type" => event_type.to_string());
                c.increment(1);
                self.by_type.insert(event_type.to_string(), c);
            }
        }
        self.batch.push(event);
        if self.batch.len() == RATES_BATCH {
            self.stats.rates.observe(&self.batch);
            self.batch.clear();
        }
        crate::monitor::Stats::add(&self.stats.received, 1);
        self.in_batch += 1;
        self.batch_points += points;
        if self.in_batch == PIPELINE_BATCH {
            metrics::gauge!(crate::monitor::metrics::QUEUE_DEPTH, "queue" => "pipeline").set(0.0);
            crate::monitor::Stats::add(&self.stats.encoded, self.batch_points);
            metrics::counter!(crate::monitor::metrics::ENCODER_POINTS).increment(self.batch_points);
            self.in_batch = 0;
            self.batch_points = 0;
        }
    }
}

/// [`run_with`], and with `metrics` the service's metric updates on the hot path too.
pub fn run_monitored(
    frames: &[String],
    input: &str,
    min_seconds: f64,
    filter: &FilterConfig,
    schema: &SchemaConfig,
    metrics: bool,
) -> Result<BenchReport, PipelineError> {
    let source: SourceId = Arc::from(SOURCE);
    let mut pipeline = Pipeline::new(filter, schema)?;
    let mut monitor = metrics.then(HotPathMetrics::new);
    let mut messages = Vec::with_capacity(64);
    let mut out = String::with_capacity(1 << 20);
    let counting = crate::alloc_counter::is_active();

    let mut pass = |count: bool, totals: &mut (u64, u64, u64, u64, u64), out: &mut String| {
        for frame in frames {
            messages.clear();
            if let Some(m) = &monitor {
                m.frame(frame.len());
            }
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
                        let outcome = pipeline.process(&event, out);
                        if let Some(m) = &mut monitor {
                            let points = match outcome {
                                Outcome::Points(n) => n as u64,
                                _ => 0,
                            };
                            m.event(event, points);
                        }
                        if let Outcome::Points(n) = outcome
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
        metrics,
    })
}

/// Which rules of a config `bench rules` keeps (its `--rules` values: all, no-expressions, static).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RuleSelection {
    /// Every rule.
    #[default]
    All,
    /// Every rule without an expression.
    NoExpressions,
    /// Only rules decided from the cache (event type, domain, entity, source).
    Static,
}

impl RuleSelection {
    /// The filter config with only the selected rules.
    pub fn apply(self, filter: &FilterConfig) -> FilterConfig {
        let mut filter = filter.clone();
        filter.rules.retain(|rule| {
            let m = &rule.matches;
            match self {
                RuleSelection::All => true,
                RuleSelection::NoExpressions => m.expression.is_none(),
                RuleSelection::Static => {
                    m.expression.is_none()
                        && m.state.is_none()
                        && m.attribute.is_empty()
                        && m.time.is_none()
                }
            }
        });
        filter
    }
}

/// What `bench rules` measured: the chain alone, and decode / chain / encode per event.
#[derive(Debug, Clone, Serialize)]
pub struct RulesReport {
    /// Where the frames came from.
    pub input: String,
    /// Rules in the chain.
    pub rules: usize,
    /// Events in one pass.
    pub events: u64,
    /// Of which kept by the chain.
    pub kept: u64,
    /// Decisions per second with the decision cache (the hot path).
    pub decisions_per_sec: f64,
    /// Decisions per second evaluating every rule in full (no cache).
    pub uncached_decisions_per_sec: f64,
    /// Nanoseconds per event to decode its frame.
    pub decode_ns_per_event: f64,
    /// Nanoseconds per event in the chain (cached).
    pub chain_ns_per_event: f64,
    /// Nanoseconds per event to encode (kept events only, averaged over all events).
    pub encode_ns_per_event: f64,
    /// The chain's share of decode + chain + encode.
    pub chain_share: f64,
    /// The thread's CPU time over wall time while measuring with the cache (`null` without
    /// Linux's schedstat): below 1 when the machine is loaded and the thread waited for a core.
    pub cpu_share: Option<f64>,
    /// Decisions per second of the thread's CPU time, with the cache: the per-core figure
    /// even on a loaded machine (stage times scaled by `cpu_share`).
    pub decisions_per_cpu_sec: Option<f64>,
    /// As `decisions_per_cpu_sec`, every rule in full (no cache).
    pub uncached_decisions_per_cpu_sec: Option<f64>,
    /// CPU nanoseconds per event in the chain (cached): `chain_ns_per_event` × `cpu_share`.
    pub chain_cpu_ns_per_event: Option<f64>,
    /// Rule runs timed per event for the sampled per-rule evaluation time (cached chain).
    pub rule_time_samples_per_event: f64,
    /// Measured cost of timing one rule run (two clock reads), CPU nanoseconds.
    pub clock_pair_ns: f64,
    /// What the sampled per-rule timing adds per event: samples per event × `clock_pair_ns`
    /// (included in the chain's figures above).
    pub rule_timing_ns_per_event: f64,
}

/// Seconds spent in each stage over all passes.
#[derive(Default)]
struct StageTimes {
    passes: u64,
    decode: f64,
    chain: f64,
    encode: f64,
    /// Thread CPU seconds over wall seconds of the timed passes (`None` without schedstat).
    cpu_share: Option<f64>,
    /// Rule runs timed for `ha_ingestor_filter_rule_eval_seconds` (one event in 64).
    rule_time_samples: u64,
}

/// Nanoseconds of the two clock reads that time one rule run (`Instant::now`, then `elapsed`).
fn clock_pair_ns() -> f64 {
    const N: u32 = 200_000;
    let mut sink = std::time::Duration::ZERO;
    let cpu_start = thread_cpu_nanos();
    let started = Instant::now();
    for _ in 0..N {
        let t = Instant::now();
        sink += std::hint::black_box(t).elapsed();
    }
    let wall = started.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    // Per CPU-second when schedstat is there, as the other figures.
    let seconds = match (cpu_start, thread_cpu_nanos()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => wall,
    };
    seconds * 1e9 / f64::from(N)
}

/// Measures the filter chain over the events of `frames` for at least `min_seconds` per mode.
///
/// Every pass decodes the frames afresh (timed as decode), then decides
/// every event (timed as chain), then encodes the kept ones (timed as
/// encode): an old state a rule reads is decoded lazily inside the chain, as
/// in the pipeline, and not once for all passes.
pub fn rules(
    frames: &[String],
    input: &str,
    min_seconds: f64,
    filter: &FilterConfig,
    schema: &SchemaConfig,
) -> Result<RulesReport, PipelineError> {
    let source: SourceId = Arc::from(SOURCE);
    let mut chain = RuleChain::new(filter)?;
    let mut encoder = Encoder::new(schema)?;
    let mut messages = Vec::with_capacity(64);
    let mut events = Vec::new();
    let mut keep = Vec::new();
    let mut out = String::with_capacity(1 << 20);
    let mut kept = 0u64;

    let mut run = |cached: bool, timed: bool, times: &mut StageTimes| {
        let t = Instant::now();
        events.clear();
        for frame in frames {
            decode_frame(frame, &source, &mut messages);
            for message in messages.drain(..) {
                if let Ok(ServerMessage::Event { event, .. }) = message {
                    events.push(event);
                }
            }
        }
        let t_decode = t.elapsed().as_secs_f64();
        let t = Instant::now();
        keep.clear();
        for event in &events {
            let d = if cached {
                chain.decide(event)
            } else {
                chain.decide_uncached(event)
            };
            keep.push(d.keep);
        }
        let t_chain = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (event, k) in events.iter().zip(&keep) {
            if *k {
                std::hint::black_box(encoder.encode(event, &mut out));
            }
        }
        out.clear();
        let t_encode = t.elapsed().as_secs_f64();
        // The pipeline drains the sampled per-rule times once per batch; so does each pass.
        let mut samples = 0u64;
        chain.drain_eval_times(|_, _| samples += 1);
        if timed {
            times.passes += 1;
            times.decode += t_decode;
            times.chain += t_chain;
            times.encode += t_encode;
            times.rule_time_samples += samples;
        }
        kept = keep.iter().filter(|k| **k).count() as u64;
    };

    let mut measure = |cached: bool| {
        let mut times = StageTimes::default();
        run(cached, false, &mut times);
        // CPU time is read only around the whole loop (a read costs microseconds, more than a
        // pass of the cached chain); each stage's share of it is taken as its share of wall time.
        let cpu_start = thread_cpu_nanos();
        let started = Instant::now();
        while times.passes == 0 || started.elapsed().as_secs_f64() < min_seconds {
            run(cached, true, &mut times);
        }
        let wall = started.elapsed().as_secs_f64();
        times.cpu_share = match (cpu_start, thread_cpu_nanos()) {
            (Some(a), Some(b)) if b > a && wall > 0.0 => {
                Some(((b - a) as f64 / 1e9 / wall).min(1.0))
            }
            _ => None,
        };
        times
    };
    let with_cache = measure(true);
    let without_cache = measure(false);
    let n = events.len() as u64;
    let ns = |seconds: f64, passes: u64| {
        if n == 0 || passes == 0 {
            0.0
        } else {
            seconds * 1e9 / (passes * n) as f64
        }
    };
    let rate = |ns: f64| if ns > 0.0 { 1e9 / ns } else { 0.0 };
    let decode_ns = ns(with_cache.decode, with_cache.passes);
    let chain_ns = ns(with_cache.chain, with_cache.passes);
    let encode_ns = ns(with_cache.encode, with_cache.passes);
    let total = decode_ns + chain_ns + encode_ns;
    let uncached_ns = ns(without_cache.chain, without_cache.passes);
    let samples_per_event = if n == 0 || with_cache.passes == 0 {
        0.0
    } else {
        with_cache.rule_time_samples as f64 / (with_cache.passes * n) as f64
    };
    let clock_pair = clock_pair_ns();
    let chain_cpu_ns = with_cache.cpu_share.map(|share| chain_ns * share);
    Ok(RulesReport {
        input: input.to_string(),
        rules: filter.rules.len(),
        events: n,
        kept,
        decisions_per_sec: rate(chain_ns),
        uncached_decisions_per_sec: rate(uncached_ns),
        decode_ns_per_event: decode_ns,
        chain_ns_per_event: chain_ns,
        encode_ns_per_event: encode_ns,
        chain_share: if total > 0.0 { chain_ns / total } else { 0.0 },
        cpu_share: with_cache.cpu_share,
        decisions_per_cpu_sec: chain_cpu_ns.map(rate),
        uncached_decisions_per_cpu_sec: without_cache
            .cpu_share
            .map(|share| rate(uncached_ns * share)),
        chain_cpu_ns_per_event: chain_cpu_ns,
        rule_time_samples_per_event: samples_per_event,
        clock_pair_ns: clock_pair,
        rule_timing_ns_per_event: samples_per_event * clock_pair,
    })
}
