//! In-process counters and health state that every stage reports to.
//!
//! The Prometheus metrics carry the labelled detail; these few atomics exist so
//! `/ready`, the demo's status line and its summary can read totals cheaply.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

/// Totals across all sources and sinks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events decoded from any source.
    pub received: AtomicU64,
    /// Events removed by the filter (by the user's choice).
    pub filtered: AtomicU64,
    /// Events that give no point by the schema's rules (unknown/unavailable, removed entity).
    pub skipped: AtomicU64,
    /// Points produced by the encoder.
    pub encoded: AtomicU64,
    /// Points accepted by the sink.
    pub written: AtomicU64,
    /// Points or events lost without a dead letter (must stay 0).
    pub dropped: AtomicU64,
    /// Points the sink set aside in the dead-letter file (so encoded = written + dead_lettered + dropped).
    pub dead_lettered: AtomicU64,
    /// Frames or messages that could not be decoded; each is set aside in the dead-letter file too.
    pub decode_errors: AtomicU64,
    health: Mutex<Health>,
    /// The alert rules' latest states, served at `/alerts`.
    pub alerts: std::sync::Arc<super::alerts::Board>,
    /// Event rates per source, domain and event type, fed once per batch by the pipeline (`/api/stats`).
    pub rates: super::rates::Rates,
    /// How the status page reads the durable buffer, once the topology registered it.
    pub buffer_probe: super::page::BufferProbe,
}

#[derive(Debug, Default)]
struct Health {
    sources: BTreeMap<String, SourceHealth>,
    sink: Option<SinkHealth>,
}

/// What `/ready` knows about one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    /// Connected and subscribed.
    pub connected: bool,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// What `/ready` knows about the sink.
#[derive(Debug, Clone)]
pub struct SinkHealth {
    /// The name (`influxdb`, `file`).
    pub name: String,
    /// Whether the last write succeeded.
    pub last_write_ok: bool,
    /// The last write error, if any.
    pub last_error: Option<String>,
    /// When the last write succeeded.
    pub last_success: Option<Instant>,
}

/// The answer of `/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// All sources connected and the last write succeeded.
    pub ready: bool,
    /// Why not, one reason per line.
    pub reasons: Vec<String>,
    /// Per-source state.
    pub sources: BTreeMap<String, SourceHealth>,
    /// Sink name, if one reported.
    pub sink: Option<String>,
    /// Seconds since the last successful write.
    pub last_write_age_seconds: Option<f64>,
}

/// A snapshot of the totals, as the demo prints and writes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Events decoded.
    pub received: u64,
    /// Events filtered out.
    pub filtered: u64,
    /// Events that give no point.
    pub skipped: u64,
    /// Points encoded.
    pub encoded: u64,
    /// Points written.
    pub written: u64,
    /// Lost without a dead letter.
    pub dropped: u64,
    /// Points the sink set aside.
    pub dead_lettered: u64,
    /// Undecodable input, set aside by the sources.
    pub decode_errors: u64,
}

impl Stats {
    /// Adds `n` to a counter (relaxed: these are statistics, not synchronisation).
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every total.
    pub fn totals(&self) -> Totals {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            received: r(&self.received),
            filtered: r(&self.filtered),
            skipped: r(&self.skipped),
            encoded: r(&self.encoded),
            written: r(&self.written),
            dropped: r(&self.dropped),
            dead_lettered: r(&self.dead_lettered),
            decode_errors: r(&self.decode_errors),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // A std Mutex: held for a few field writes, never across an `.await`.
        match self.health.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Registers a source as expected-but-not-yet-connected, so `/ready` waits for it.
    pub fn register_source(&self, name: &str) {
        self.health()
            .sources
            .entry(name.to_string())
            .or_insert(SourceHealth {
                connected: false,
                last_error: None,
            });
    }

    /// Records a source's connection state and, when it dropped, why.
    pub fn source_state(&self, name: &str, connected: bool, error: Option<String>) {
        let mut h = self.health();
        let entry = h.sources.entry(name.to_string()).or_insert(SourceHealth {
            connected,
            last_error: None,
        });
        entry.connected = connected;
        if error.is_some() {
            entry.last_error = error;
        }
    }

    /// Records the outcome of a sink write.
    pub fn sink_result(&self, name: &str, result: Result<(), String>) {
        let mut h = self.health();
        let sink = h.sink.get_or_insert_with(|| SinkHealth {
            name: name.to_string(),
            last_write_ok: true,
            last_error: None,
            last_success: None,
        });
        match result {
            Ok(()) => {
                sink.last_write_ok = true;
                sink.last_success = Some(Instant::now());
            }
            Err(e) => {
                sink.last_write_ok = false;
                sink.last_error = Some(e);
            }
        }
    }

    /// Ready when every registered source is connected and the last write (if any) succeeded.
    pub fn readiness(&self) -> Readiness {
        let h = self.health();
        let mut reasons = Vec::new();
        for (name, s) in &h.sources {
            if !s.connected {
                reasons.push(match &s.last_error {
                    Some(e) => format!("source {name} is not connected: {e}"),
                    None => format!("source {name} is not connected yet"),
                });
            }
        }
        if let Some(sink) = &h.sink
            && !sink.last_write_ok
        {
            reasons.push(format!(
                "last write to {} failed: {}",
                sink.name,
                sink.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
            sources: h.sources.clone(),
            sink: h.sink.as_ref().map(|s| s.name.clone()),
            last_write_age_seconds: h
                .sink
                .as_ref()
                .and_then(|s| s.last_success)
                .map(|t| t.elapsed().as_secs_f64()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_sources_and_sink() {
        let s = Stats::default();
        s.register_source("homeassistant");
        assert!(!s.readiness().ready);
        s.source_state("homeassistant", true, None);
        assert!(s.readiness().ready);
        s.sink_result("influxdb", Err("connection refused".into()));
        let r = s.readiness();
        assert!(!r.ready);
        assert!(
            r.reasons[0].contains("connection refused"),
            "{:?}",
            r.reasons
        );
        s.sink_result("influxdb", Ok(()));
        assert!(s.readiness().ready);
    }
}
