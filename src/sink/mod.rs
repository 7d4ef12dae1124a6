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
    /// The highest upstream mark per source among the events behind these lines (filtered ones included); released once the chunk is safe. Not stored in the buffer.
    pub marks: crate::handoff::Marks,
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
    /// Where the sink reports delivered buffer records; `None` without the durable buffer.
    pub acks: Option<Acks>,
}

/// The sink's delivery reports to the durable buffer: "every record up to this sequence is delivered".
///
/// Sinks deliver in order, so one number says it all; the buffer's acknowledging
/// task reads the latest value and removes the records (several reports made
/// while it works are coalesced).
#[derive(Debug, Clone)]
pub struct Acks(tokio::sync::watch::Sender<u64>);

impl Acks {
    /// A reporter and the receiver the buffer's acknowledging task reads.
    pub fn channel() -> (Acks, tokio::sync::watch::Receiver<u64>) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        (Acks(tx), rx)
    }

    /// A reporter whose receiver starts at `seq` (a target's saved position: reports at or below it change nothing).
    pub fn channel_from(seq: u64) -> (Acks, tokio::sync::watch::Receiver<u64>) {
        let (tx, rx) = tokio::sync::watch::channel(seq);
        (Acks(tx), rx)
    }

    /// Records up to and including `seq` are delivered (or set aside as dead letters).
    pub fn delivered(&self, seq: u64) {
        self.0.send_if_modified(|v| {
            if seq > *v {
                *v = seq;
                true
            } else {
                false
            }
        });
    }
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
