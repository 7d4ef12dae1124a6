//! The monitor listener: `/health` (alive), `/ready` (connected and writing), `/metrics`
//! (Prometheus), the status page; every route behind the access rules of [`super::access`].

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use super::Stats;
use super::access::{Access, Peer, guard};
use super::metrics as names;
use crate::config::MonitorConfig;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once; later calls return the same handle.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            STARTED.get_or_init(Instant::now);
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::SINK_BATCH_DURATION.to_string()),
                    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::SINK_BATCH_POINTS.to_string()),
                        &[1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0],
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::SINK_END_TO_END_LATENCY.to_string()),
                        super::latency::END_TO_END_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::BUFFER_DURABLE_LATENCY.to_string()),
                        super::latency::DURABLE_BUCKETS,
                    )
                });
            let builder = match builder {
                Ok(b) => b,
                Err(error) => {
                    tracing::error!(message = "Cannot configure the metrics histograms.", %error);
                    return None;
                }
            };
            match builder.install_recorder() {
                Ok(handle) => {
                    metrics::gauge!(names::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"))
                        .set(1.0);
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(message = "Metrics recorder not installed; /metrics will be empty.", %error);
                    None
                }
            }
        })
        .clone()
}

#[derive(Clone)]
struct AppState {
    stats: Arc<Stats>,
    prometheus: Option<PrometheusHandle>,
}

/// The routes, separate from the listener so tests can call them in-process.
pub fn router(stats: Arc<Stats>) -> Router {
    let page = super::page::routes(stats.clone());
    let state = AppState {
        stats,
        prometheus: prometheus(),
    };
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/alerts", get(alerts_json))
        .with_state(state)
        .merge(page)
}

async fn health() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"status\":\"ok\"}",
    )
}

async fn ready(State(state): State<AppState>) -> Response {
    let readiness = state.stats.readiness();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(readiness)).into_response()
}

async fn alerts_json(State(state): State<AppState>) -> Response {
    axum::Json(state.stats.alerts.view()).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.prometheus else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response();
    };
    if let Some(started) = STARTED.get() {
        metrics::gauge!(names::UPTIME).set(started.elapsed().as_secs_f64());
    }
    super::process::refresh();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("monitor: cannot listen on {addr}: {source}")]
pub struct ListenError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The bind error.
    pub source: std::io::Error,
}

/// Default longest wait for a request's headers, counted from the connection's opening or the end of the previous answer (also the keep-alive idle limit); `[monitor] header_timeout`.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Default connections served at once; further ones get a 503 and are closed; `[monitor] max_connections`.
pub const MAX_CONNECTIONS: usize = 64;
/// Once shutdown begins, how long open connections may take to finish before they are dropped.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds `addr` with every other `[monitor]` setting at its default (open, as without tokens).
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = ()> + use<>), ListenError> {
    let cfg = MonitorConfig {
        listen: addr,
        ..MonitorConfig::default()
    };
    serve_config(&cfg, stats, shutdown).await
}

/// Binds `cfg.listen` now (so a taken port fails start-up) and returns the bound address
/// and the serving future, every route behind `cfg`'s access rules ([`super::access`]).
pub async fn serve_config(
    cfg: &MonitorConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, impl Future<Output = ()> + use<>), ListenError> {
    let addr = cfg.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ListenError { addr, source })?;
    for warning in cfg.warnings() {
        tracing::warn!(message = "Monitor access is open.", %warning);
    }
    let access = Arc::new(Access::new(cfg));
    let app = router(stats).layer(axum::middleware::from_fn_with_state(access, guard));
    let limits = Limits {
        header_timeout: cfg.header_timeout,
        max_connections: cfg.max_connections.max(1),
    };
    Ok((bound, accept_loop(listener, app, limits, shutdown)))
}

/// The listener's per-connection limits.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: std::time::Duration,
    max_connections: usize,
}

/// Accepts until `shutdown`, at most `max_connections` at once, each with the header timeout; then gives open connections [`SHUTDOWN_GRACE`].
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(message = "Monitor accept failed.", %error);
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Best effort and never waiting: the client learns why, the slot stays free.
            let _ = stream.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 21\r\nconnection: close\r\n\r\ntoo many connections\n",
            );
            tracing::debug!(
                message = "Monitor connection refused: limit reached.",
                limit = limits.max_connections
            );
            continue;
        };
        // The access rules need the peer (`ingress_only_from`): each connection's requests carry it.
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone().layer(axum::Extension(Peer(peer))),
        );
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
}
