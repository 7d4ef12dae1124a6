//! Where encoded lines go: the durable buffer, then a writer (InfluxDB over HTTP, or the
//! local line-protocol file sink). Lines arrive as [`Chunk`]s from the encoder.

pub mod buffer;
pub mod file;
pub mod influxdb;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::DeadLetters;
use crate::encode::Chunk;
use crate::feedback::acks::Acks;
use crate::monitor::Stats;

/// What a sink task needs from the application besides its input channel.
#[derive(Clone)]
pub struct SinkContext {
    /// Totals and health.
    pub stats: Arc<Stats>,
    /// Where rejected lines go.
    pub dead_letters: Arc<DeadLetters>,
    /// Cancelled when the process stops; the sink then drains its channel and flushes.
    pub shutdown: CancellationToken,
    /// Where the sink reports delivered buffer records; `None` without the durable buffer.
    pub acks: Option<Acks>,
}

/// At the end of a sink's shutdown deadline: closes its input, counts what is still queued as dropped and says so.
pub fn account_unwritten(rx: &mut mpsc::Receiver<Chunk>, stats: &Stats, sink: &'static str) {
    rx.close();
    let mut left = 0u64;
    let mut kept = 0u64;
    while let Ok(chunk) = rx.try_recv() {
        match chunk.seq {
            Some(_) => kept += chunk.points as u64,
            None => left += chunk.points as u64,
        }
    }
    if kept > 0 {
        tracing::warn!(
            message = "Points not delivered before the shutdown deadline stay in the buffer; they are delivered at the next start.",
            sink,
            points = kept,
        );
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
