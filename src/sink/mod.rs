//! From events to stored points: schema modes, line protocol, and the sinks.

pub mod file;
pub mod influxdb;
pub mod line_protocol;
pub mod replay;
pub mod schema;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::dead_letter::DeadLetters;
use crate::monitor::Stats;

/// Encoded line protocol on its way to a sink: whole lines, each ending in `\n`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The lines.
    pub lines: String,
    /// How many lines (points) `lines` holds.
    pub points: usize,
}

/// What a sink task needs from the application besides its input channel.
#[derive(Clone)]
pub struct SinkContext {
    /// Totals and health.
    pub stats: Arc<Stats>,
    /// Where rejected lines go.
    pub dead_letters: Arc<DeadLetters>,
    /// Cancelled when the process stops; the sink then drains its channel and flushes.
    pub shutdown: CancellationToken,
}
