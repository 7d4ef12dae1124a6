//! Between sources and sinks: keeps what the user wants and encodes it.
//!
//! The stage is cheap CPU work and runs inline in one task: it takes events in
//! batches from its bounded input channel, decides with the [`rules`] chain
//! (HA's include/exclude [`filter`] first, then the ordered rules), encodes
//! what is kept into one [`Chunk`] per batch and hands that to the sink.
//! Counters, per-rule ones included, are added once per batch, not per event.

pub mod expression;
pub mod filter;
pub mod rules;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{FilterConfig, SchemaConfig};
use crate::event::Event;
use crate::monitor::Stats;
use crate::monitor::metrics as names;
use crate::sink::Chunk;
use crate::sink::schema::{Encoded, Encoder, SchemaError, SkipReason};
use rules::{RuleChain, RuleError};

/// Events taken from the channel per round; bounds a chunk's size.
const BATCH: usize = 1024;

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

/// The compiled filter chain and encoder.
pub struct Pipeline {
    chain: RuleChain,
    encoder: Encoder,
}

impl Pipeline {
    /// Compiles the filter chain and the schema once.
    pub fn new(filter: &FilterConfig, schema: &SchemaConfig) -> Result<Pipeline, PipelineError> {
        Ok(Pipeline {
            chain: RuleChain::new(filter)?,
            encoder: Encoder::new(schema)?,
        })
    }

    /// Filters and encodes one event, appending its lines to `out`: the hot path.
    #[inline]
    pub fn process(&mut self, event: &Event, out: &mut String) -> Outcome {
        if !self.chain.decide(event).keep {
            return Outcome::Filtered;
        }
        match self.encoder.encode(event, out) {
            Encoded::Points(n) => Outcome::Points(n),
            Encoded::Skipped(reason) => Outcome::Skipped(reason),
        }
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
            stats.rates.observe(&events);
            for event in events.drain(..) {
                chunk.marks.note(event.meta.mark);
                match self.process(&event, &mut chunk.lines) {
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
