//! Where events come from: Home Assistant's WebSocket API and MQTT brokers.

pub mod homeassistant;
pub mod mqtt;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::DeadLetters;
use crate::event::Event;
use crate::feedback::handoff::Handoff;
use crate::monitor::Stats;

/// What a source task needs from the application.
#[derive(Clone)]
pub struct SourceContext {
    /// Decoded events go here.
    pub tx: mpsc::Sender<Event>,
    /// Totals and health.
    pub stats: Arc<Stats>,
    /// Where undecodable input goes.
    pub dead_letters: Arc<DeadLetters>,
    /// Cancelled when the process stops.
    pub shutdown: CancellationToken,
    /// Where resume cursors are kept (`<data_dir>/cursor`); `None` keeps them in memory only.
    pub cursor_dir: Option<PathBuf>,
    /// Where a source that acknowledges upstream registers to learn when its events are safe.
    pub handoff: Arc<Handoff>,
    /// Cancelled once everything the sources handed on is safe (after the buffer's final sync):
    /// a source's background tasks then persist their final positions and end.
    pub settled: CancellationToken,
    /// A source's tasks that outlive it until `settled` (cursor writers); the application waits for them.
    pub background: tokio_util::task::TaskTracker,
    /// Commands to send to Home Assistant over this source's connection (alert notifications).
    pub commands: crate::feedback::commands::Commands,
}
