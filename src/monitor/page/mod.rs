//! The status page at `/` and its data at `/api/stats`.
//!
//! The page is one HTML file with its script and style sheet, embedded in the
//! binary (`include_str!`): no CDN, nothing fetched from elsewhere. It polls
//! `/api/stats` every second and `/alerts` every few seconds (showing "alerts
//! unavailable" when that endpoint is missing) and draws its charts on a
//! `<canvas>` with a few lines of hand-written script.
//!
//! Every URL the page uses is relative (`page.js`, `api/stats`, `alerts`, no icon
//! fetched from the root), so it works at `/` and under any prefix a proxy adds
//! (Home Assistant's Ingress: `/api/hassio_ingress/<token>/`).

pub mod errors;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::rates::RatesSnapshot;
use super::stats::SourceHealth;
use super::{Stats, Totals};
pub use errors::{LogEntry, RecentErrorsLayer};

/// Entities listed by `/api/stats` (of the [`super::rates::TRACKED_ENTITIES`] tracked).
pub const TOP_ENTITIES: usize = 10;

const INDEX_HTML: &str = include_str!("assets/index.html");
const PAGE_JS: &str = include_str!("assets/page.js");
const PAGE_CSS: &str = include_str!("assets/page.css");

/// What the status page shows of the durable buffer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BufferView {
    /// Records (chunks) waiting.
    pub records: u64,
    /// Points waiting.
    pub points: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// The configured limit (`[buffer] max_bytes`).
    pub max_bytes: u64,
    /// `bytes / max_bytes`, in percent.
    pub fill_percent: f64,
    /// Age of the oldest waiting record, seconds.
    pub oldest_age_seconds: Option<f64>,
    /// The policy when full (`block`, `drop_oldest`).
    pub when_full: String,
}

type ProbeFn = dyn Fn() -> Result<BufferView, String> + Send + Sync;

/// A late-bound reader of the durable buffer: the topology registers it once the buffer is open.
#[derive(Default)]
pub struct BufferProbe {
    // A std Mutex: held to clone the Arc, never across an `.await`.
    probe: Mutex<Option<Arc<ProbeFn>>>,
}

impl std::fmt::Debug for BufferProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferProbe")
            .field("set", &self.get().is_some())
            .finish()
    }
}

impl BufferProbe {
    /// Registers how to read the buffer (a blocking call: it may read the oldest record's header).
    pub fn set(&self, probe: impl Fn() -> Result<BufferView, String> + Send + Sync + 'static) {
        *self.lock() = Some(Arc::new(probe));
    }

    /// Forgets the probe, so the buffer it holds can close (the topology calls it when it stops).
    pub fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<ProbeFn>>> {
        match self.probe.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn get(&self) -> Option<Arc<ProbeFn>> {
        self.lock().clone()
    }
}

/// What the sink last reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkView {
    /// `influxdb` or `file`, once it reported.
    pub name: Option<String>,
    /// Seconds since the last successful write.
    pub last_write_age_seconds: Option<f64>,
}

/// The answer of `/api/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct ApiStats {
    /// When this was taken (RFC 3339, UTC).
    pub time: String,
    /// Seconds since the process started counting (monotonic: the page derives its rates from it).
    pub uptime_seconds: f64,
    /// The build version.
    pub version: &'static str,
    /// What `/ready` says.
    pub ready: bool,
    /// Why not ready, one reason each.
    pub reasons: Vec<String>,
    /// Connection state per source.
    pub connections: BTreeMap<String, SourceHealth>,
    /// The sink.
    pub sink: SinkView,
    /// The buffer, when enabled and open.
    pub buffer: Option<BufferView>,
    /// Why the buffer could not be read, if it could not.
    pub buffer_error: Option<String>,
    /// Counters since start.
    pub totals: Totals,
    /// Rates per source, domain and event type; top entities; history.
    pub rates: RatesSnapshot,
    /// The latest WARN/ERROR log events, newest first.
    pub errors: Vec<LogEntry>,
    /// The last gap filled from Home Assistant's history, and what it recovered.
    pub last_gap: Option<crate::monitor::GapReport>,
    /// This replica's share of the fleet's homes (owned of total, shard) and where each resumed from.
    pub fleet: Option<crate::monitor::FleetView>,
}

/// Builds the answer of `/api/stats` (reads the buffer off the runtime).
pub async fn api_stats(stats: &Stats) -> ApiStats {
    let (buffer, buffer_error) = match stats.buffer_probe.get() {
        None => (None, None),
        Some(probe) => match tokio::task::spawn_blocking(move || probe()).await {
            Ok(Ok(view)) => (Some(view), None),
            Ok(Err(error)) => (None, Some(error)),
            Err(error) => (None, Some(format!("buffer probe failed: {error}"))),
        },
    };
    let readiness = stats.readiness();
    let totals = stats.totals();
    ApiStats {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        uptime_seconds: stats.rates.uptime().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION"),
        ready: readiness.ready,
        reasons: readiness.reasons,
        connections: readiness.sources,
        sink: SinkView {
            name: readiness.sink,
            last_write_age_seconds: readiness.last_write_age_seconds,
        },
        buffer,
        buffer_error,
        totals,
        rates: stats.rates.snapshot(totals, TOP_ENTITIES),
        errors: errors::recent(),
        last_gap: stats.last_gap(),
        fleet: stats.fleet(),
    }
}

/// The page's routes: `/`, its two assets and `/api/stats`.
pub fn routes(stats: Arc<Stats>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/page.js", get(script))
        .route("/page.css", get(style))
        .route("/api/stats", get(stats_json))
        .with_state(stats)
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn stats_json(State(stats): State<Arc<Stats>>) -> Response {
    let body = api_stats(&stats).await;
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffer_is_absent_until_registered_and_errors_are_reported() {
        let stats = Stats::default();
        stats.register_source("homeassistant");
        let s = api_stats(&stats).await;
        assert!(s.buffer.is_none() && s.buffer_error.is_none());
        assert!(!s.ready);
        assert!(!s.connections["homeassistant"].connected);

        stats
            .buffer_probe
            .set(|| Err("cannot read the oldest record".into()));
        let s = api_stats(&stats).await;
        assert!(s.buffer.is_none());
        assert_eq!(
            s.buffer_error.as_deref(),
            Some("cannot read the oldest record")
        );

        let view = BufferView {
            records: 2,
            points: 10,
            bytes: 512,
            max_bytes: 1024,
            fill_percent: 50.0,
            oldest_age_seconds: Some(1.5),
            when_full: "block".into(),
        };
        let shown = view.clone();
        stats.buffer_probe.set(move || Ok(shown.clone()));
        let s = api_stats(&stats).await;
        assert_eq!(s.buffer, Some(view));
        // The JSON keys the page reads.
        let json = serde_json::to_value(&s).expect("serializes");
        for key in [
            "rates",
            "totals",
            "connections",
            "buffer",
            "errors",
            "uptime_seconds",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        assert!(json["rates"]["total"]["written"].get("15m").is_some());
    }
}
