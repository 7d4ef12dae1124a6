//! In-process counters and health state that every stage reports to.
//!
//! The Prometheus metrics carry the labelled detail; these few atomics exist so
//! `/ready`, the demo's status line and its summary can read totals cheaply.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::config::TargetReadiness;

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
    /// The last gap filled from Home Assistant's history, for the status page.
    last_gap: Mutex<Option<GapReport>>,
    /// Which homes this process runs of the fleet's, and where each resumed from (`/api/stats`).
    fleet: Mutex<Option<FleetView>>,
}

/// This replica's share of the fleet's homes (`/api/stats`): set once Home Assistant sources are configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetView {
    /// `shard.index`, when sharded.
    pub shard_index: Option<u32>,
    /// `shard.count`, when sharded.
    pub shard_count: Option<u32>,
    /// Homes listed in the configuration (every replica's).
    pub homes_total: usize,
    /// The homes this process runs, by name.
    pub homes_owned: Vec<String>,
    /// Per owned home, where its first connection resumed from: `cursor` (the local file),
    /// `store` (the store's last point of the home, less the margin: a home new to this
    /// replica), or `none` (nothing to resume from).
    pub resumed_from: BTreeMap<String, String>,
}

/// What the last gap backfilled from Home Assistant's history recovered (`/api/stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapReport {
    /// The source that filled it.
    pub source: String,
    /// The resume cursor: HA's time of the last event made safe before the gap.
    pub from: String,
    /// The gap's end: the newest state Home Assistant had when the connection was made.
    pub to: String,
    /// States handed on from history (and, for entities HA does not record, from `get_states`).
    pub states: u64,
    /// Attributes HA's recorder does not keep, put back.
    pub attributes_restored: u64,
    /// Times the commit check waited for HA's recorder.
    pub commit_waits: u64,
    /// Entities that changed in the gap with no history: only their current state was recovered.
    pub unrecorded_entities: u64,
    /// HA's recorder confirmed it had committed the gap's end before it was read.
    pub confirmed: bool,
}

#[derive(Debug, Default)]
struct Health {
    sources: BTreeMap<String, SourceHealth>,
    /// Per sink target, by name (one entry per `[[influxdb]]` target, or the file sink).
    sinks: BTreeMap<String, SinkHealth>,
    /// Peers whose TLS certificate is not verified, by config key; a note in `/ready`.
    tls_unverified: std::collections::BTreeSet<String>,
}

/// What `/ready` knows about one source.
#[derive(Debug, Clone, Serialize)]
pub struct SourceHealth {
    /// Connected and subscribed.
    pub connected: bool,
    /// The last connection error, if any.
    pub last_error: Option<String>,
}

/// What `/ready` knows about one sink target.
#[derive(Debug, Clone)]
pub struct SinkHealth {
    /// The name (`influxdb`, `file`, or the target's `name`).
    pub name: String,
    /// Where it writes (credentials removed), when it is a server.
    pub url: Option<String>,
    /// Which of its failures make the process not ready.
    pub readiness: TargetReadiness,
    /// Whether the last write succeeded.
    pub last_write_ok: bool,
    /// The last failure was a refusal that does not heal by itself (401/403/404…), not an outage.
    pub refused: bool,
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
    /// Sink name, if one reported (several targets: their names, comma-separated).
    pub sink: Option<String>,
    /// Seconds since the last successful write (several targets: of the one that wrote longest ago).
    pub last_write_age_seconds: Option<f64>,
    /// Every sink target, in name order.
    pub sinks: Vec<SinkReport>,
    /// What an operator should know that does not make the process unready (TLS verification off).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One sink target as `/ready` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    /// The target's name.
    pub name: String,
    /// Where it writes (credentials removed).
    pub url: Option<String>,
    /// Its `readiness` policy: which failures make the process not ready.
    pub readiness: TargetReadiness,
    /// The last write succeeded (or none was tried yet).
    pub writing: bool,
    /// The last failure was a refusal (credentials, missing database) rather than an outage.
    pub refused: bool,
    /// The last write error, if any.
    pub last_error: Option<String>,
    /// Seconds since its last successful write.
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
    /// Notes a filled gap (the latest one is kept).
    pub fn gap_filled(&self, report: GapReport) {
        let mut last = match self.last_gap.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *last = Some(report);
    }

    /// Records this process's share of the fleet's homes.
    pub fn set_fleet(&self, view: FleetView) {
        *self.fleet.lock().unwrap_or_else(|p| p.into_inner()) = Some(view);
    }

    /// Notes where an owned home resumed from (`cursor`, `store` or `none`).
    pub fn home_resumed(&self, home: &str, from: &str) {
        let mut fleet = self.fleet.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(view) = fleet.as_mut() {
            view.resumed_from.insert(home.to_string(), from.to_string());
        }
    }

    /// This process's share of the fleet's homes, once set.
    pub fn fleet(&self) -> Option<FleetView> {
        self.fleet.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last gap filled from Home Assistant's history, if any.
    pub fn last_gap(&self) -> Option<GapReport> {
        match self.last_gap.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

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

    /// Registers a sink target before its first write, so `/ready` lists it and applies its policy.
    pub fn register_sink(&self, name: &str, url: Option<String>, readiness: TargetReadiness) {
        let mut h = self.health();
        let sink = Self::sink_entry(&mut h, name);
        sink.url = url;
        sink.readiness = readiness;
    }

    fn sink_entry<'h>(h: &'h mut Health, name: &str) -> &'h mut SinkHealth {
        h.sinks
            .entry(name.to_string())
            .or_insert_with(|| SinkHealth {
                name: name.to_string(),
                url: None,
                readiness: TargetReadiness::default(),
                last_write_ok: true,
                refused: false,
                last_error: None,
                last_success: None,
            })
    }

    /// Records the outcome of a sink write (a failure counts as an outage, not a refusal).
    pub fn sink_result(&self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                let mut h = self.health();
                let sink = Self::sink_entry(&mut h, name);
                sink.last_write_ok = true;
                sink.refused = false;
                sink.last_success = Some(Instant::now());
            }
            Err(e) => self.sink_failed(name, e, false),
        }
    }

    /// Records a failed sink write; `refused`: the server refuses it for a reason that does not heal by itself.
    pub fn sink_failed(&self, name: &str, error: String, refused: bool) {
        let mut h = self.health();
        let sink = Self::sink_entry(&mut h, name);
        sink.last_write_ok = false;
        sink.refused = refused;
        sink.last_error = Some(error);
    }

    /// Records that `peer`'s (a config key's) TLS certificate is not verified: the gauge
    /// `ha_ingestor_tls_verification_disabled{peer}` is 1 and `/ready` carries a note.
    pub fn tls_verification_disabled(&self, peer: &str) {
        metrics::gauge!(crate::monitor::metrics::TLS_VERIFICATION_DISABLED, "peer" => peer.to_string())
            .set(1.0);
        self.health().tls_unverified.insert(peer.to_string());
    }

    /// Ready when every registered source is connected and no sink target fails in a way its `readiness` policy counts.
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
        for sink in h.sinks.values() {
            let counts = match sink.readiness {
                TargetReadiness::AnyFailure => true,
                TargetReadiness::Refused => sink.refused,
                TargetReadiness::Ignore => false,
            };
            if sink.last_write_ok || !counts {
                continue;
            }
            let at = sink
                .url
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default();
            reasons.push(format!(
                "last write to {}{at} failed: {}",
                sink.name,
                sink.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
        let sinks: Vec<SinkReport> = h
            .sinks
            .values()
            .map(|s| SinkReport {
                name: s.name.clone(),
                url: s.url.clone(),
                readiness: s.readiness,
                writing: s.last_write_ok,
                refused: s.refused,
                last_error: s.last_error.clone(),
                last_write_age_seconds: s.last_success.map(|t| t.elapsed().as_secs_f64()),
            })
            .collect();
        let sink = (!sinks.is_empty()).then(|| {
            sinks
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        });
        let last_write_age_seconds = sinks
            .iter()
            .filter_map(|s| s.last_write_age_seconds)
            .reduce(f64::max);
        Readiness {
            ready: reasons.is_empty(),
            reasons,
            sources: h.sources.clone(),
            sink,
            last_write_age_seconds,
            sinks,
            notes: h
                .tls_unverified
                .iter()
                .map(|peer| {
                    format!(
                        "TLS certificate verification is disabled for {peer} (insecure_skip_verify)"
                    )
                })
                .collect(),
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

    #[test]
    fn each_target_is_reported_and_counts_by_its_policy() {
        let s = Stats::default();
        s.register_sink(
            "local",
            Some("http://a:8086/".into()),
            TargetReadiness::AnyFailure,
        );
        s.register_sink(
            "offsite",
            Some("http://b:8086/".into()),
            TargetReadiness::Refused,
        );
        s.register_sink("spare", None, TargetReadiness::Ignore);
        let r = s.readiness();
        assert!(r.ready, "{:?}", r.reasons);
        let names: Vec<&str> = r.sinks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["local", "offsite", "spare"]);
        assert_eq!(r.sink.as_deref(), Some("local, offsite, spare"));

        // An outage of the `refused`-policy target and any failure of an ignored one keep it ready.
        s.sink_result("local", Ok(()));
        s.sink_failed("offsite", "connection refused".into(), false);
        s.sink_failed("spare", "401 unauthorized".into(), true);
        let r = s.readiness();
        assert!(r.ready, "{:?}", r.reasons);
        assert!(!r.sinks[1].writing && !r.sinks[1].refused);
        assert!(r.sinks[0].last_write_age_seconds.is_some());

        // Refused credentials on it do not.
        s.sink_failed("offsite", "401 unauthorized".into(), true);
        let r = s.readiness();
        assert!(!r.ready);
        assert_eq!(r.reasons.len(), 1, "{:?}", r.reasons);
        assert!(
            r.reasons[0].contains("offsite (http://b:8086/)"),
            "{:?}",
            r.reasons
        );

        // Any failure of the default-policy target does.
        s.sink_result("offsite", Ok(()));
        s.sink_failed("local", "connection refused".into(), false);
        let r = s.readiness();
        assert!(!r.ready);
        assert!(r.reasons[0].contains("local"), "{:?}", r.reasons);
    }
}
