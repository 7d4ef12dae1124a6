//! Between sources and sinks: keeps what the user wants and encodes it.
//!
//! The stage is cheap CPU work and runs inline in one task: it takes events in
//! batches from its bounded input channel, decides with the [`rules`] chain
//! (HA's include/exclude [`filter`] first, then the ordered rules), encodes
//! what is kept into one [`Chunk`] per batch and hands that to the sink.
//! Counters, per-rule ones included, are added once per batch, not per event.

pub mod expression;
pub mod filter;
pub mod rate;
pub mod rules;
pub mod time_window;
pub mod transform;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{FilterConfig, SchemaConfig};
use crate::encode::Chunk;
use crate::encode::{Encoded, Encoder, PointOverrides, SchemaError, SkipReason};
use crate::event::Event;
use crate::monitor::Stats;
use crate::monitor::metrics as names;
use rate::{Offer, ShapeReason, Shaper};
use rules::{RuleChain, RuleError};

/// Events taken from the channel per round; bounds a chunk's size.
const BATCH: usize = 1024;

/// A round that took fewer events than this waits [`COALESCE_WINDOW`] for more
/// before it is processed: at a home's rates (tens to hundreds of events/s) one
/// chunk then carries many events, so the buffer commits, and wakes the threads
/// after it, once per window instead of once per event. A busier stream fills
/// rounds beyond this and is never held.
const COALESCE_BELOW: usize = 64;

/// How long a small round waits for more events (see [`COALESCE_BELOW`]): the
/// latency it adds to a quiet stream, far below the buffer's `fsync_interval`.
const COALESCE_WINDOW: std::time::Duration = std::time::Duration::from_millis(50);

/// How often the rate shaper looks at the wall clock (throttle intervals, heartbeats).
const SHAPE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// One event in this many has its pipeline time measured (the clock is read twice).
const EVAL_SAMPLE: u32 = 64;

/// Why the pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The filter gate or a rule did not compile.
    #[error(transparent)]
    Filter(#[from] RuleError),
    /// The schema did not compile.
    #[error("schema: {0}")]
    Schema(#[from] SchemaError),
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Encoded into this many points.
    Points(usize),
    /// Removed by the filter.
    Filtered,
    /// Kept, but the schema writes nothing for it.
    Skipped(SkipReason),
    /// Held by its rule's throttle; written later (its mark waits with it).
    Held,
    /// Removed by its rule's rate shaping.
    Shaped(ShapeReason),
}

fn outcome(encoded: Encoded) -> Outcome {
    match encoded {
        Encoded::Points(n) => Outcome::Points(n),
        Encoded::Skipped(reason) => Outcome::Skipped(reason),
    }
}

/// The compiled filter chain and encoder.
pub struct Pipeline {
    chain: RuleChain,
    encoder: Encoder,
    /// A transform's measurement and tags for the event being encoded (reused).
    overrides: PointOverrides,
    /// Per-entity rate state, when a rule has `rate`.
    shaper: Option<Shaper>,
    /// Points the shaper wrote on its own (held intervals, heartbeats) since the run loop last looked.
    shaped_points: usize,
    /// Heartbeat points among them.
    heartbeats: u64,
}

impl Pipeline {
    /// Compiles the filter chain and the schema once.
    pub fn new(filter: &FilterConfig, schema: &SchemaConfig) -> Result<Pipeline, PipelineError> {
        Ok(Pipeline {
            chain: RuleChain::new(filter)?,
            encoder: Encoder::new(schema)?,
            overrides: PointOverrides::default(),
            shaper: Shaper::new(&filter.rules).map_err(|(rule, e)| {
                PipelineError::Filter(RuleError::Rule {
                    rule,
                    key: e.key,
                    message: e.message,
                })
            })?,
            shaped_points: 0,
            heartbeats: 0,
        })
    }

    /// Filters, transforms and encodes one borrowed event (copied only when a transform applies).
    #[inline]
    pub fn process(&mut self, event: &Event, out: &mut String) -> Outcome {
        if !self.chain.decide(event).keep {
            return Outcome::Filtered;
        }
        if self.chain.applied().is_empty() {
            return outcome(self.encoder.encode(event, out));
        }
        let mut owned = event.clone();
        self.transform_and_encode(&mut owned, out)
    }

    /// Filters, transforms in place and encodes one event, appending its lines to `out`: the hot path.
    #[inline]
    pub fn process_mut(&mut self, event: &mut Event, out: &mut String) -> Outcome {
        if !self.chain.decide(event).keep {
            return Outcome::Filtered;
        }
        if self.chain.applied().is_empty() {
            return outcome(self.encoder.encode(event, out));
        }
        self.transform_and_encode(event, out)
    }

    fn transform_and_encode(&mut self, event: &mut Event, out: &mut String) -> Outcome {
        self.overrides.clear();
        if !self.chain.apply_transforms(event, &mut self.overrides) {
            return Outcome::Filtered;
        }
        if let Some(rule) = self.chain.rate_rule()
            && let Some(shaper) = self.shaper.as_mut()
        {
            let offer = shaper.offer(rule, event, &self.overrides, tokio::time::Instant::now());
            self.write_emitted(out);
            match offer {
                Offer::Write => {}
                Offer::Held => return Outcome::Held,
                Offer::Drop(reason) => return Outcome::Shaped(reason),
            }
        }
        outcome(self.encoder.encode_with(event, &self.overrides, out))
    }

    /// Encodes the points the shaper wrote on its own into `out`.
    fn write_emitted(&mut self, out: &mut String) {
        let Some(shaper) = self.shaper.as_mut() else {
            return;
        };
        for e in shaper.drain_emitted() {
            if let Encoded::Points(n) = self.encoder.encode_with(&e.event, &e.overrides, out) {
                self.shaped_points += n;
                self.heartbeats += u64::from(e.heartbeat);
            }
        }
    }

    /// Runs the shaper's wall-clock work (throttle intervals over, heartbeats due) into `out`.
    pub fn tick(&mut self, out: &mut String) {
        if let Some(shaper) = self.shaper.as_mut() {
            shaper.tick(tokio::time::Instant::now());
            self.write_emitted(out);
        }
    }

    /// Writes every held throttle interval into `out` (at shutdown).
    pub fn flush(&mut self, out: &mut String) {
        if let Some(shaper) = self.shaper.as_mut() {
            shaper.flush(tokio::time::Instant::now());
            self.write_emitted(out);
        }
    }

    /// Takes the count of points the shaper wrote on its own (and how many were heartbeats).
    pub fn take_shaped_points(&mut self) -> (usize, u64) {
        let taken = (self.shaped_points, self.heartbeats);
        self.shaped_points = 0;
        self.heartbeats = 0;
        taken
    }

    /// The compiled rule chain (for `check` and `explain`).
    pub fn chain(&self) -> &RuleChain {
        &self.chain
    }

    /// The stage task: runs until every sender of `rx` is gone, then returns (dropping `tx`).
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        tx: mpsc::Sender<Chunk>,
        stats: Arc<Stats>,
    ) {
        let mut events = Vec::with_capacity(BATCH);
        let mut skipped: Vec<(SkipReason, u64)> = Vec::new();
        // Handles made once: rule names are bounded by the config.
        let rule_counters: Vec<(metrics::Counter, metrics::Counter)> = self
            .chain
            .rule_names()
            .map(|name| {
                (
                    metrics::counter!(names::FILTER_RULE_MATCHES, "rule" => name.to_string()),
                    metrics::counter!(names::FILTER_RULE_ERRORS, "rule" => name.to_string()),
                )
            })
            .collect();
        let outcome_counters: Vec<[metrics::Counter; 3]> = self
            .chain
            .rule_names()
            .map(|name| {
                [
                    metrics::counter!(names::FILTER_RULE_INCLUDED, "rule" => name.to_string()),
                    metrics::counter!(names::FILTER_RULE_EXCLUDED, "rule" => name.to_string()),
                    metrics::counter!(names::FILTER_RULE_TRANSFORMED, "rule" => name.to_string()),
                ]
            })
            .collect();
        let rule_seconds: Vec<metrics::Histogram> = self
            .chain
            .rule_names()
            .map(|name| {
                metrics::histogram!(names::FILTER_RULE_EVAL_SECONDS, "rule" => name.to_string())
            })
            .collect();
        let eval_seconds = metrics::histogram!(names::PIPELINE_EVENT_SECONDS);
        let mut sample = 0u32;
        // Rate shaping needs the wall clock: throttle intervals end and heartbeats fall due without input.
        let mut tick = tokio::time::interval(SHAPE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut released = crate::feedback::handoff::Marks::default();
        let mut shaped: Vec<(ShapeReason, u64)> = Vec::new();
        loop {
            let (closed, ticked) = if self.shaper.is_some() {
                tokio::select! {
                    n = rx.recv_many(&mut events, BATCH) => (n == 0, false),
                    _ = tick.tick() => (false, true),
                }
            } else {
                (rx.recv_many(&mut events, BATCH).await == 0, false)
            };
            if closed && self.shaper.is_none() {
                break;
            }
            if !closed && !events.is_empty() && events.len() < COALESCE_BELOW {
                // Sends do not wake this task while it sleeps: one wake-up per window.
                tokio::time::sleep(COALESCE_WINDOW).await;
                while events.len() < BATCH {
                    match rx.try_recv() {
                        Ok(event) => events.push(event),
                        Err(_) => break,
                    }
                }
            }
            metrics::gauge!(names::QUEUE_DEPTH, "queue" => "pipeline").set(rx.len() as f64);
            let mut chunk = Chunk {
                lines: String::with_capacity(events.len() * 256),
                points: 0,
                seq: None,
                marks: Default::default(),
            };
            let mut filtered = 0u64;
            skipped.clear();
            shaped.clear();
            if ticked {
                self.tick(&mut chunk.lines);
            }
            stats.rates.observe(&events);
            for mut event in events.drain(..) {
                let mark = event.meta.mark;
                sample = sample.wrapping_add(1);
                let started = sample
                    .is_multiple_of(EVAL_SAMPLE)
                    .then(std::time::Instant::now);
                let outcome = self.process_mut(&mut event, &mut chunk.lines);
                if let Some(started) = started {
                    eval_seconds.record(started.elapsed().as_secs_f64());
                }
                // With rate shaping a held event's mark waits (see `rate`); otherwise it travels now.
                match self.shaper.as_mut() {
                    None => chunk.marks.note(mark),
                    Some(shaper) => shaper.ledger.seen(mark),
                }
                match outcome {
                    Outcome::Points(n) => chunk.points += n,
                    Outcome::Filtered => filtered += 1,
                    Outcome::Held => {}
                    Outcome::Shaped(reason) => {
                        match shaped.iter_mut().find(|(r, _)| *r == reason) {
                            Some((_, n)) => *n += 1,
                            None => shaped.push((reason, 1)),
                        }
                    }
                    Outcome::Skipped(reason) => {
                        match skipped.iter_mut().find(|(r, _)| *r == reason) {
                            Some((_, n)) => *n += 1,
                            None => skipped.push((reason, 1)),
                        }
                    }
                }
            }
            if closed {
                self.flush(&mut chunk.lines);
            }
            let (points, heartbeats) = self.take_shaped_points();
            chunk.points += points;
            if heartbeats > 0 {
                metrics::counter!(names::PIPELINE_HEARTBEATS).increment(heartbeats);
            }
            if let Some(shaper) = &self.shaper {
                shaper.ledger.fill(&mut chunk.marks);
                // Only what moved travels: the ledger repeats the same watermarks every round.
                if chunk.marks == released {
                    chunk.marks = Default::default();
                } else {
                    released = chunk.marks.clone();
                }
                metrics::gauge!(names::PIPELINE_HELD).set(shaper.ledger.held() as f64);
            }
            for (reason, n) in &shaped {
                Stats::add(&stats.filtered, *n);
                metrics::counter!(names::PIPELINE_DISCARDED, "reason" => reason.as_str())
                    .increment(*n);
            }
            if filtered > 0 {
                Stats::add(&stats.filtered, filtered);
                metrics::counter!(names::PIPELINE_DISCARDED, "reason" => "filtered")
                    .increment(filtered);
            }
            self.chain.drain_counts(|i, counts| {
                if let Some((matches, errors)) = rule_counters.get(i) {
                    matches.increment(counts.matches);
                    errors.increment(counts.errors);
                }
            });
            self.chain.drain_eval_times(|i, seconds| {
                if let Some(h) = rule_seconds.get(i) {
                    h.record(seconds);
                }
            });
            self.chain.drain_outcomes(|i, o| {
                if let Some([included, excluded, transformed]) = outcome_counters.get(i) {
                    included.increment(o.included);
                    excluded.increment(o.excluded);
                    transformed.increment(o.transformed);
                }
            });
            for (reason, n) in &skipped {
                Stats::add(&stats.skipped, *n);
                metrics::counter!(names::ENCODER_SKIPPED, "reason" => reason.as_str())
                    .increment(*n);
            }
            if chunk.points == 0 && chunk.marks.is_empty() {
                if closed {
                    break;
                }
                continue;
            }
            // A chunk with no points but marks still travels, so the marks of filtered events are released in order.
            let points = chunk.points as u64;
            Stats::add(&stats.encoded, points);
            metrics::counter!(names::ENCODER_POINTS).increment(points);
            if tx.send(chunk).await.is_err() {
                Stats::add(&stats.dropped, points);
                tracing::error!(message = "The sink stopped; points lost.", points);
                break;
            }
            if closed {
                break;
            }
        }
    }
}
