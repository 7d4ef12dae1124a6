//! Between sources and sinks: keeps what the user wants and encodes it.
//!
//! The stage is cheap CPU work and runs inline in one task: it takes events in
//! batches from its bounded input channel, decides with the [`rules`] chain
//! (HA's include/exclude [`filter`] first, then the ordered rules), encodes
//! what is kept into one [`Chunk`] per batch and hands that to the sink.
//! Counters, per-rule ones included, are added once per batch, not per event.

pub mod explain;
pub mod expression;
pub mod filter;
pub mod rules;
pub mod time_window;
pub mod transform;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{FilterConfig, SchemaConfig};
use crate::event::Event;
use crate::monitor::Stats;
use crate::monitor::metrics as names;
use crate::sink::Chunk;
use crate::sink::schema::{Encoded, Encoder, PointOverrides, SchemaError, SkipReason};
use rules::{RuleChain, RuleError};

/// Events taken from the channel per round; bounds a chunk's size.
const BATCH: usize = 1024;

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
}

impl Pipeline {
    /// Compiles the filter chain and the schema once.
    pub fn new(filter: &FilterConfig, schema: &SchemaConfig) -> Result<Pipeline, PipelineError> {
        Ok(Pipeline {
            chain: RuleChain::new(filter)?,
            encoder: Encoder::new(schema)?,
            overrides: PointOverrides::default(),
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
        outcome(self.encoder.encode_with(event, &self.overrides, out))
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
        let eval_seconds = metrics::histogram!(names::PIPELINE_EVENT_SECONDS);
        let mut sample = 0u32;
        loop {
            if rx.recv_many(&mut events, BATCH).await == 0 {
                break;
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
            for mut event in events.drain(..) {
                chunk.marks.note(event.meta.mark);
                sample = sample.wrapping_add(1);
                let started = sample.is_multiple_of(EVAL_SAMPLE).then(std::time::Instant::now);
                let outcome = self.process_mut(&mut event, &mut chunk.lines);
                if let Some(started) = started {
                    eval_seconds.record(started.elapsed().as_secs_f64());
                }
                match outcome {
                    Outcome::Points(n) => chunk.points += n,
                    Outcome::Filtered => filtered += 1,
                    Outcome::Skipped(reason) => {
                        match skipped.iter_mut().find(|(r, _)| *r == reason) {
                            Some((_, n)) => *n += 1,
                            None => skipped.push((reason, 1)),
                        }
                    }
                }
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
        }
    }
}
