//! From events to stored points: schema modes, line protocol, and the sinks.

pub mod buffer;
pub mod file;
pub mod influxdb;
pub mod line_protocol;
pub mod replay;
pub mod schema;

use std::sync::Arc;

use tokio::sync::mpsc;
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
    /// The chunk's sequence number in the durable buffer; the sink acknowledges it once delivered. `None` when unbuffered.
    pub seq: Option<u64>,
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

/// At the end of a sink's shutdown deadline: closes its input, counts what is still queued as dropped and says so.
pub fn account_unwritten(rx: &mut mpsc::Receiver<Chunk>, stats: &Stats, sink: &'static str) {
    rx.close();
    let mut left = 0u64;
    while let Ok(chunk) = rx.try_recv() {
        left += chunk.points as u64;
    }
    if left > 0 {
        tracing::error!(
            message = "Points still queued when the shutdown deadline passed were not written.",
            sink,
            points = left,
        );
        Stats::add(&stats.dropped, left);
    }
}
