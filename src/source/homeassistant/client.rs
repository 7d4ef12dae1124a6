//! The Home Assistant WebSocket client task: connect, authenticate, subscribe, forward, reconnect.
//!
//! One task owns the connection and its state (the id counter, the pending
//! results, the back-off). It reads the socket continuously; every decoded event
//! goes to the pipeline channel; undecodable input is counted and set aside as
//! a dead letter, and the stream goes on.
//!
//! Decisions:
//! - **Message size.** tungstenite treats an oversized message as fatal for the
//!   connection. It is therefore allowed up to a hard cap (4 × `max_message_bytes`,
//!   at least 16 MiB) and `max_message_bytes` is enforced here: a message between
//!   the two is counted and set aside (`too_large`) and the connection survives;
//!   only one beyond the hard cap costs a reconnect (also counted `too_large`).
//! - **Back-off.** Exponential with jitter: the n-th consecutive failure waits a
//!   uniformly random time between `reconnect_min` and `min(reconnect_min × 2ⁿ,
//!   reconnect_max)`. The streak resets once a connection stayed subscribed for
//!   60 s. A refused token always waits `reconnect_max`: HA counts failed logins
//!   toward IP bans, so it must never be retried in a hot loop.
//! - **Dead-letter input** is cut to 1 MiB, so a huge bad frame cannot fill the disk.
//! - **Heartbeat.** An application-level `ping` every `ping_interval`; no `pong`
//!   within `pong_timeout` declares the connection dead (`PingTimeout`), which is
//!   counted (`reconnects_total{reason="ping_timeout"}`), logged at WARN and
//!   re-established. The read loop is biased toward the socket, so a pong that
//!   already arrived is read before the deadline is judged.
//! - **HA restarts.** `homeassistant_stop` followed by the socket closing is a
//!   restart, not a failure: logged at INFO, counted as `reason="ha_restart"`, not
//!   in `errors_total`; refused connections until HA is back log at DEBUG. When
//!   the user subscribes to a list of event types without `homeassistant_stop`,
//!   a private subscription to it is added whose events are not forwarded.
//! - **Initial snapshot.** On the first connection of the process that gets it
//!   through (`initial_snapshot`), `get_states` is read once subscribed and every
//!   state is handed on as a `state_changed` event with no old state, at its own
//!   `last_updated`. The Event model has no provenance field; such events carry
//!   the source id `<source>/snapshot` (nothing downstream keys on the source id).
//!   They are not bus events, so `Stats::received` does not count them. States
//!   the live stream already delivered, and (resuming from a saved cursor)
//!   states at or before the cursor, are not repeated.
//! - **Gap backfill.** The time of the last event handed on is the resume cursor
//!   (`cursor.rs`, saved in `<data_dir>/cursor/`). Every connection made while a
//!   cursor exists (after a reconnect, or at start-up from the file) reads
//!   `get_states` for the entity ids and asks `history/history_during_period` from
//!   the cursor, `backfill_chunk` entities per request, one request at a time, in
//!   the lossless form. Rows at or before the cursor and rows this connection
//!   already handed on (live or snapshot, by `(entity_id, last_updated)`) are
//!   skipped; the rest go on as `state_changed` events with source
//!   `<source>/backfill`. Until the gap is filled the persisted cursor stays at its
//!   start, so a crash mid-backfill resumes from there. A refused history request
//!   gives the gap up (logged, counted as unrecoverable). Events other than state
//!   changes in a gap are counted and logged with the time span.
//! - **Entities subscription** (`subscription = "entities"`). `subscribe_entities`
//!   replaces `subscribe_events`; a cache per connection (`entities.rs`) turns its
//!   compressed states and diffs into `state_changed` events handed on like live
//!   ones (marks, cursor, metrics). Its first message holds every current state:
//!   handed on as the snapshot (source `<source>/snapshot`) on the first
//!   connection, and after that only where newer than the cursor. It replaces
//!   `get_states` for the snapshot; `get_states` is still read for the entity ids
//!   of a gap, which is backfilled from the history as with events. A removal
//!   has no time from HA: it carries the ingest time and does not move the cursor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::source::backoff::Backoff;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::cursor::{self, Cursor};
use super::decode::{DecodeError, ServerMessage, decode_binary_frame, decode_frame};
use super::entities::StateCache;
use super::history;
use super::protocol::{ClientMessage, ErrorInfo, Features, ServerReply};
use crate::config::{HaSubscription, HomeAssistantConfig};
use crate::dead_letter::DeadLetter;
use crate::event::{EntityId, Event, STATE_CHANGED, SourceId, State, StateChanged, Timestamp};
use crate::monitor::Stats;
use crate::monitor::metrics::{
    SOURCE_BACKFILLED_POINTS, SOURCE_CONNECTED, SOURCE_CONNECTS, SOURCE_ERRORS, SOURCE_GAP_SECONDS,
    SOURCE_LAG_SECONDS, SOURCE_LAST_EVENT_TIMESTAMP, SOURCE_RECEIVED_BYTES, SOURCE_RECEIVED_EVENTS,
    SOURCE_RECONNECTS, SOURCE_SNAPSHOT_STATES, SOURCE_UNRECOVERABLE_GAP_SECONDS,
};
use crate::source::SourceContext;

/// A connection that stayed subscribed this long resets the back-off streak.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Largest input kept in one dead letter.
const DEAD_LETTER_INPUT_MAX: usize = 1 << 20;
/// Distinct `event_type` label values per source; further types count as `other`.
const MAX_EVENT_TYPE_LABELS: usize = 256;
/// The event HA fires as it shuts down (a restart too); the socket closing after it is no failure.
pub const HOMEASSISTANT_STOP: &str = "homeassistant_stop";
/// The command that reads a gap from HA's recorder.
const HISTORY: &str = "history/history_during_period";
/// The `reason` label of a connection lost to a Home Assistant restart.
const REASON_HA_RESTART: &str = "ha_restart";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What `ha-ingestor check` reports about a reachable Home Assistant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeInfo {
    /// The version HA announced.
    pub ha_version: String,
    /// The WebSocket URL that was used.
    pub url: String,
}

/// Why a connection could not be made or was lost.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// HA refused the token (`auth_invalid`); retrying soon would count toward an IP ban.
    #[error("Home Assistant refused the access token: {message}")]
    AuthInvalid {
        /// HA's reason.
        message: String,
    },
    /// TCP, DNS or HTTP upgrade failure: HA is not reachable at the URL.
    #[error("cannot connect to Home Assistant: {0}")]
    Connect(String),
    /// A step did not finish within `connect_timeout`.
    #[error("timed out {0}")]
    Timeout(String),
    /// HA sent something the protocol does not allow at that point.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// TLS setup or handshake failure (certificate, CA file).
    #[error("TLS error: {0}")]
    Tls(String),
    /// A command was answered with `success: false`.
    #[error("Home Assistant refused {command}: {code}: {message}")]
    Command {
        /// The command sent.
        command: &'static str,
        /// HA's error code.
        code: String,
        /// HA's message.
        message: String,
    },
    /// The connection ended.
    #[error("connection lost: {0}")]
    Closed(String),
    /// A `ping` got no `pong` in time: the connection is dead even if the socket looks open.
    #[error("no pong within {waited:?} of a ping: connection declared dead")]
    PingTimeout {
        /// The configured `pong_timeout`.
        waited: Duration,
    },
    /// No token was configured (config loading should have refused this).
    #[error("no access token configured for Home Assistant")]
    NoToken,
}

impl ClientError {
    /// True when the token was refused (not a reachability problem).
    pub fn is_auth(&self) -> bool {
        matches!(self, ClientError::AuthInvalid { .. })
    }

    /// A bounded label for `SOURCE_ERRORS`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::AuthInvalid { .. } => "auth_invalid",
            ClientError::Connect(_) => "connect",
            ClientError::Timeout(_) => "timeout",
            ClientError::Protocol(_) => "protocol",
            ClientError::Tls(_) => "tls",
            ClientError::Command { .. } => "command",
            ClientError::Closed(_) => "closed",
            ClientError::PingTimeout { .. } => "ping_timeout",
            ClientError::NoToken => "config",
        }
    }
}

/// Runs until ctx.shutdown is cancelled: connect, auth, supported_features(coalesce), subscribe, forward events, reconnect with backoff.
pub async fn run(cfg: HomeAssistantConfig, source: SourceId, ctx: SourceContext) {
    ctx.stats.register_source(&source);
    let setup = build_connector(&cfg).and_then(|c| match &cfg.token {
        Some(token) => Ok((c, token.clone())),
        None => Err(ClientError::NoToken),
    });
    let (connector, token) = match setup {
        Ok(ok) => ok,
        Err(error) => {
            tracing::error!(message = "Home Assistant source cannot start.", source = %source, %error);
            ctx.stats
                .source_state(&source, false, Some(error.to_string()));
            ctx.shutdown.cancelled().await;
            return;
        }
    };
    let cursor_path = ctx
        .cursor_dir
        .as_ref()
        .map(|dir| cursor::path_for(dir, &source));
    let start = match cursor_path.as_deref().map(cursor::load) {
        Some(Ok(start)) => start,
        Some(Err(error)) => {
            tracing::warn!(message = "Cannot read the resume cursor; starting without a backfill.", source = %source, %error);
            None
        }
        None => None,
    };
    let cursor = Arc::new(Cursor::new(start, Some(ctx.handoff.register(&source))));
    // The writer outlives this task: its last save comes once everything handed on is safe.
    if let Some(path) = cursor_path {
        ctx.background.spawn(cursor::keep_saved(
            cursor.clone(),
            path,
            ctx.settled.clone(),
        ));
    }
    let url = cfg.websocket_url();
    let link = Link {
        cfg: &cfg,
        url: &url,
        token: &token,
        connector: &connector,
        source: &source,
        ctx: &ctx,
        cursor: &cursor,
    };
    supervise(&link).await;
}

/// Connects, streams and reconnects until shutdown or until the pipeline closes its channel.
async fn supervise(link: &Link<'_>) {
    let Link {
        cfg,
        url,
        source,
        ctx,
        cursor,
        ..
    } = *link;
    let mut meters = Meters::new(source);
    let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
    let mut failures_in_streak: u64 = 0;
    let mut auth_refusals_in_streak: u64 = 0;
    // Set by a restart of HA; connection failures until it is back are expected, not noise.
    let mut restarting = false;
    // The snapshot is taken once per process, on the first connection that gets it through.
    let mut snapshot_wanted = cfg.initial_snapshot;
    loop {
        let mut report = SessionReport::default();
        // Every connection after one that handed something on, and the first when a
        // cursor was saved by an earlier run, fills the gap since the cursor.
        let backfill_from = cursor.resume_from().filter(|_| cfg.backfill);
        if let Some(from) = backfill_from {
            cursor.hold(from);
        }
        let plan = Plan {
            snapshot: snapshot_wanted,
            backfill_from,
            after_restart: restarting,
        };
        let outcome = tokio::select! {
            _ = ctx.shutdown.cancelled() => None,
            r = session(link, &plan, &mut meters, &mut report) => Some(r),
        };
        if report.snapshot_done {
            snapshot_wanted = false;
        }
        if report.subscribed_at.is_some() {
            meters.connected.set(0.0);
        }
        let error = match outcome {
            // Shut down, or the pipeline closed its channel: nothing left to deliver to.
            None | Some(Ok(())) => {
                ctx.stats.source_state(source, false, None);
                return;
            }
            Some(Err(error)) => error,
        };
        if let Some(at) = report.subscribed_at {
            failures_in_streak = 0;
            auth_refusals_in_streak = 0;
            restarting = false;
            if at.elapsed() >= STABLE_AFTER {
                backoff.reset();
            }
        }
        let ha_restart = report.ha_stopping && matches!(error, ClientError::Closed(_));
        if report.subscribed_at.is_some() {
            let reason = if ha_restart {
                REASON_HA_RESTART
            } else {
                error.kind()
            };
            metrics::counter!(SOURCE_RECONNECTS, "source" => source.to_string(), "reason" => reason)
                .increment(1);
        }
        // A restart of HA is no error; every other end of a connection is.
        if !ha_restart {
            metrics::counter!(SOURCE_ERRORS, "source" => source.to_string(), "error_type" => error.kind())
                .increment(1);
            ctx.stats
                .source_state(source, false, Some(error.to_string()));
        }
        let delay = if ha_restart {
            restarting = true;
            ctx.stats.source_state(
                source,
                false,
                Some("Home Assistant is restarting".to_string()),
            );
            let delay = backoff.next_delay();
            tracing::info!(message = "Home Assistant is restarting; reconnecting.", source = %source, url = %url, retry_in = ?delay);
            delay
        } else if error.is_auth() {
            auth_refusals_in_streak += 1;
            if auth_refusals_in_streak == 1 {
                tracing::error!(
                    message = "Home Assistant refused the access token; check homeassistant.token (retrying slowly: HA counts failed logins toward IP bans).",
                    source = %source,
                    url = %url,
                    reason = %error,
                    retry_in = ?cfg.reconnect_max,
                );
            }
            cfg.reconnect_max
        } else {
            failures_in_streak += 1;
            let delay = backoff.next_delay();
            if restarting {
                // HA is still coming back up: refused connections are expected.
                tracing::debug!(message = "Home Assistant not back yet; reconnecting.", source = %source, %error, attempt = failures_in_streak, retry_in = ?delay);
            } else if failures_in_streak == 1 || failures_in_streak.is_multiple_of(10) {
                tracing::warn!(message = "Home Assistant connection failed; reconnecting.", source = %source, url = %url, %error, attempt = failures_in_streak, retry_in = ?delay);
            } else {
                tracing::debug!(message = "Home Assistant connection failed; reconnecting.", source = %source, %error, attempt = failures_in_streak, retry_in = ?delay);
            }
            delay
        };
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                ctx.stats.source_state(source, false, None);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Connects and authenticates once, for `ha-ingestor check`; distinguishes a refused token from an unreachable peer.
pub async fn probe(cfg: &HomeAssistantConfig) -> Result<ProbeInfo, ClientError> {
    let token = cfg.token.as_deref().ok_or(ClientError::NoToken)?;
    let connector = build_connector(cfg)?;
    let url = cfg.websocket_url();
    let mut ws = connect(cfg, &url, &connector).await?;
    let ha_version = tokio::time::timeout(cfg.connect_timeout, authenticate(&mut ws, token))
        .await
        .map_err(|_| ClientError::Timeout("waiting for authentication".into()))??;
    let _ = ws.close(None).await;
    Ok(ProbeInfo { ha_version, url })
}

/// What a session leaves behind for the reconnect logic, even when it was cancelled.
#[derive(Default)]
struct SessionReport {
    subscribed_at: Option<Instant>,
    /// `homeassistant_stop` was received: HA is shutting down or restarting.
    ha_stopping: bool,
    /// Every state of the initial snapshot was handed on.
    snapshot_done: bool,
}

/// A gap being filled from HA's history on this connection.
struct Gap {
    /// The cursor: rows at or before it were handed on already.
    from: Timestamp,
    /// History requests still to make (a chunk of entities × a time window); `None` until `get_states` answered.
    chunks: Option<std::collections::VecDeque<HistoryWindow>>,
    /// The reply being waited for keeps rows after this time (the request's start) …
    in_flight_after: Timestamp,
    /// … and up to this one (its window's end; `None`: no end).
    in_flight_until: Option<Timestamp>,
    /// The `time_fired` of the first live event on this connection: the gap's end.
    first_live: Option<Timestamp>,
    /// Rows handed on so far.
    backfilled: u64,
    /// HA refused a history request: the gap was reported lost as a whole.
    failed: bool,
    /// The gap is a restart of HA: what cannot be recovered is logged at INFO, not WARN.
    expected: bool,
}

/// One history request of a gap: these entities, from `start` to `end` (`None`: now).
#[derive(Debug, Clone, PartialEq)]
struct HistoryWindow {
    entity_ids: Vec<String>,
    start: Timestamp,
    end: Option<Timestamp>,
}

/// Splits a gap from `from` to `now` into requests: every chunk of entities, window by window.
fn history_windows(
    ids: &[String],
    chunk: usize,
    from: Timestamp,
    now: Timestamp,
    window: Duration,
) -> std::collections::VecDeque<HistoryWindow> {
    let step = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX).max(1);
    let mut out = std::collections::VecDeque::new();
    let mut start = from;
    loop {
        let end = start.as_nanos().saturating_add(step);
        let last = end >= now.as_nanos();
        for entity_ids in ids.chunks(chunk.max(1)) {
            out.push_back(HistoryWindow {
                entity_ids: entity_ids.to_vec(),
                start,
                end: (!last).then_some(Timestamp::from_nanos(end)),
            });
        }
        if last {
            return out;
        }
        start = Timestamp::from_nanos(end);
    }
}

impl Gap {
    fn new(from: Timestamp, expected: bool) -> Self {
        Gap {
            expected,
            from,
            chunks: None,
            in_flight_after: from,
            in_flight_until: None,
            first_live: None,
            backfilled: 0,
            failed: false,
        }
    }
}

/// `(entity_id, last_updated)` of the states this connection handed on while a
/// snapshot or a backfill is pending, so that neither repeats one the live
/// stream (or the snapshot) already delivered.
#[derive(Default)]
struct Delivered(HashSet<(EntityId, Timestamp)>);

impl Delivered {
    /// Notes the new state of a state change.
    fn note(&mut self, event: &Event) {
        if let Some(new) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) {
            self.0.insert((new.entity_id.clone(), new.last_updated));
        }
    }

    /// Whether `state` was handed on already.
    fn contains(&self, state: &State) -> bool {
        self.0
            .contains(&(state.entity_id.clone(), state.last_updated))
    }
}

/// What a session does besides streaming, decided by the task across sessions.
struct Plan {
    /// Read `get_states` once subscribed and hand every state on.
    snapshot: bool,
    /// Fill the gap since this time from HA's history once subscribed.
    backfill_from: Option<Timestamp>,
    /// The previous connection ended with a restart of HA: its gap is expected, not a warning.
    after_restart: bool,
}

/// Metric handles, resolved once so the hot path does no label allocation.
struct Meters {
    source: String,
    /// The source id backfilled events carry: `<source>/backfill`.
    backfill_source: SourceId,
    backfilled: metrics::Counter,
    gap_seconds: metrics::Histogram,
    lost_gap_seconds: metrics::Histogram,
    /// The source id snapshot events carry: `<source>/snapshot`.
    snapshot_source: SourceId,
    snapshot: metrics::Counter,
    bytes: metrics::Counter,
    connects: metrics::Counter,
    connected: metrics::Gauge,
    state_changed: metrics::Counter,
    by_type: HashMap<String, metrics::Counter>,
    lag: metrics::Histogram,
    last_event: metrics::Gauge,
}

impl Meters {
    fn new(source: &str) -> Self {
        Meters {
            source: source.to_string(),
            backfill_source: SourceId::from(format!("{source}/backfill")),
            backfilled: metrics::counter!(SOURCE_BACKFILLED_POINTS, "source" => source.to_string()),
            gap_seconds: metrics::histogram!(SOURCE_GAP_SECONDS, "source" => source.to_string()),
            lost_gap_seconds: metrics::histogram!(SOURCE_UNRECOVERABLE_GAP_SECONDS, "source" => source.to_string()),
            snapshot_source: SourceId::from(format!("{source}/snapshot")),
            snapshot: metrics::counter!(SOURCE_SNAPSHOT_STATES, "source" => source.to_string()),
            bytes: metrics::counter!(SOURCE_RECEIVED_BYTES, "source" => source.to_string()),
            connects: metrics::counter!(SOURCE_CONNECTS, "source" => source.to_string()),
            connected: metrics::gauge!(SOURCE_CONNECTED, "source" => source.to_string()),
            state_changed: metrics::counter!(SOURCE_RECEIVED_EVENTS, "source" => source.to_string(), "event_type" => STATE_CHANGED),
            by_type: HashMap::new(),
            lag: metrics::histogram!(SOURCE_LAG_SECONDS, "source" => source.to_string()),
            last_event: metrics::gauge!(SOURCE_LAST_EVENT_TIMESTAMP, "source" => source.to_string()),
        }
    }

    /// Lag of one live event behind HA's clock (the two clocks may differ a little; a negative lag counts as 0).
    fn lag(&self, time_fired: Timestamp, now: Timestamp) {
        let lag = (now.as_nanos() - time_fired.as_nanos()).max(0) as f64 / 1e9;
        self.lag.record(lag);
    }

    fn event(&mut self, event_type: &str) {
        if event_type == STATE_CHANGED {
            self.state_changed.increment(1);
            return;
        }
        if let Some(counter) = self.by_type.get(event_type) {
            counter.increment(1);
            return;
        }
        let label = if self.by_type.len() < MAX_EVENT_TYPE_LABELS {
            event_type
        } else {
            "other"
        };
        let counter = metrics::counter!(SOURCE_RECEIVED_EVENTS, "source" => self.source.clone(), "event_type" => label.to_string());
        counter.increment(1);
        if label == event_type {
            self.by_type.insert(event_type.to_string(), counter);
        }
    }
}

fn hard_message_cap(cfg: &HomeAssistantConfig) -> usize {
    cfg.max_message_bytes.saturating_mul(4).max(16 << 20)
}

/// Plain for `ws://`; rustls on the ring provider for `wss://` (webpki roots + `tls.ca_file`).
fn build_connector(cfg: &HomeAssistantConfig) -> Result<Connector, ClientError> {
    if !cfg.websocket_url().starts_with("wss://") {
        return Ok(Connector::Plain);
    }
    let config = crate::tls::client_config(&cfg.tls, "homeassistant")
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    Ok(Connector::Rustls(Arc::new(config)))
}

async fn connect(
    cfg: &HomeAssistantConfig,
    url: &str,
    connector: &Connector,
) -> Result<Ws, ClientError> {
    let cap = hard_message_cap(cfg);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(cap))
        .max_frame_size(Some(cap));
    let attempt = tokio_tungstenite::connect_async_tls_with_config(
        url,
        Some(ws_config),
        true,
        Some(connector.clone()),
    );
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Err(_) => Err(ClientError::Timeout(format!("connecting to {url}"))),
        Ok(Err(error)) => Err(match error {
            tungstenite::Error::Tls(e) => ClientError::Tls(format!("{url}: {e}")),
            // rustls handshake failures (unknown issuer, bad name) arrive wrapped in io::Error.
            tungstenite::Error::Io(e)
                if e.get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) =>
            {
                ClientError::Tls(format!("{url}: {e}"))
            }
            tungstenite::Error::Http(response) => {
                ClientError::Connect(format!("{url}: HTTP status {}", response.status()))
            }
            other => ClientError::Connect(format!("{url}: {other}")),
        }),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// Reads the next message of the auth phase (the first element of the frame).
async fn next_control(ws: &mut Ws, source: &SourceId) -> Result<ServerMessage, ClientError> {
    let mut out = Vec::with_capacity(1);
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => decode_frame(&text, source, &mut out),
            Some(Ok(Message::Binary(bytes))) => decode_binary_frame(&bytes, source, &mut out),
            Some(Ok(Message::Close(frame))) => {
                return Err(ClientError::Closed(close_reason(frame.as_ref())));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(ClientError::Closed(error.to_string())),
            None => return Err(ClientError::Closed("end of stream".into())),
        }
        if let Some(first) = out.drain(..).next() {
            return first.map_err(|e| ClientError::Protocol(e.to_string()));
        }
    }
}

fn close_reason(frame: Option<&tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) => format!("closed by Home Assistant ({}: {})", f.code, f.reason),
        None => "closed by Home Assistant".to_string(),
    }
}

/// `auth_required` → `auth` → `auth_ok`; returns HA's version.
async fn authenticate(ws: &mut Ws, token: &str) -> Result<String, ClientError> {
    let source = SourceId::from("auth");
    match next_control(ws, &source).await? {
        ServerMessage::Reply(ServerReply::AuthRequired { .. }) => {}
        other => {
            return Err(ClientError::Protocol(format!(
                "expected auth_required, got {}",
                describe(&other)
            )));
        }
    }
    let auth = ClientMessage::Auth {
        access_token: token.to_string(),
    };
    ws.send(Message::text(auth.to_json()))
        .await
        .map_err(|e| ClientError::Closed(e.to_string()))?;
    match next_control(ws, &source).await {
        Ok(ServerMessage::Reply(ServerReply::AuthOk { ha_version })) => Ok(ha_version),
        Ok(ServerMessage::Reply(ServerReply::AuthInvalid { message })) => {
            Err(ClientError::AuthInvalid { message })
        }
        Ok(other) => Err(ClientError::Protocol(format!(
            "expected auth_ok, got {}",
            describe(&other)
        ))),
        Err(e) => Err(e),
    }
}

fn describe(msg: &ServerMessage) -> String {
    match msg {
        ServerMessage::Reply(ServerReply::AuthRequired { .. }) => "auth_required".into(),
        ServerMessage::Reply(ServerReply::AuthOk { .. }) => "auth_ok".into(),
        ServerMessage::Reply(ServerReply::AuthInvalid { .. }) => "auth_invalid".into(),
        ServerMessage::Reply(ServerReply::Result { id, .. }) => format!("result {id}"),
        ServerMessage::Reply(ServerReply::Pong { id }) => format!("pong {id}"),
        ServerMessage::Event { id, .. } => format!("event {id}"),
        ServerMessage::Entities { id, .. } => format!("entities event {id}"),
        ServerMessage::Other { kind } => kind.clone(),
    }
}

/// Everything a session needs that outlives it.
struct Link<'a> {
    cfg: &'a HomeAssistantConfig,
    url: &'a str,
    token: &'a str,
    connector: &'a Connector,
    source: &'a SourceId,
    ctx: &'a SourceContext,
    cursor: &'a Cursor,
}

/// One connection: returns `Ok(())` only when the pipeline channel closed.
async fn session(
    link: &Link<'_>,
    plan: &Plan,
    meters: &mut Meters,
    report: &mut SessionReport,
) -> Result<(), ClientError> {
    let Link {
        cfg,
        url,
        token,
        connector,
        source,
        ctx,
        cursor,
    } = *link;
    let mut gap = plan
        .backfill_from
        .map(|from| Gap::new(from, plan.after_restart));
    let mut delivered = (plan.snapshot || gap.is_some()).then(Delivered::default);
    let mut ws = connect(cfg, url, connector).await?;
    let ha_version = tokio::time::timeout(cfg.connect_timeout, authenticate(&mut ws, token))
        .await
        .map_err(|_| ClientError::Timeout("waiting for authentication".into()))??;

    // Ids strictly increase per connection; every command's result is checked.
    let mut next_id: u64 = 1;
    let mut pending: Vec<(u64, &'static str)> = Vec::new();
    let mut commands = vec![ClientMessage::SupportedFeatures {
        id: next_id,
        features: Features {
            coalesce_messages: Some(1),
        },
    }];
    pending.push((next_id, "supported_features"));
    next_id += 1;
    let entities_mode = cfg.subscription == HaSubscription::Entities;
    // The `subscribe_entities` subscription and its cache (a new one per connection:
    // HA starts every subscription with every current state).
    let mut entities: Option<(u64, StateCache)> = None;
    if entities_mode {
        commands.push(ClientMessage::SubscribeEntities {
            id: next_id,
            entity_ids: (!cfg.entity_ids.is_empty()).then(|| cfg.entity_ids.clone()),
        });
        pending.push((next_id, "subscribe_entities"));
        entities = Some((next_id, StateCache::new()));
        next_id += 1;
    } else {
        let types: Vec<Option<String>> = if cfg.event_types.is_empty() {
            vec![None]
        } else {
            cfg.event_types.iter().cloned().map(Some).collect()
        };
        for event_type in types {
            commands.push(ClientMessage::SubscribeEvents {
                id: next_id,
                event_type,
            });
            pending.push((next_id, "subscribe_events"));
            next_id += 1;
        }
    }
    // The first `a` of the entities stream holds every current state: handed on
    // as the snapshot (first connection) and, with a cursor, where it is newer
    // than the cursor (changed while disconnected).
    let resume_at_start = cursor.resume_from();
    let mut initial_pending = entities_mode;
    // A restart must be told apart from a failure even when the user did not
    // subscribe to `homeassistant_stop`: a private subscription whose events are
    // only noted, never forwarded.
    let stop_watch = (entities_mode
        || (!cfg.event_types.is_empty()
            && !cfg.event_types.iter().any(|t| t == HOMEASSISTANT_STOP)))
    .then(|| {
        let id = next_id;
        commands.push(ClientMessage::SubscribeEvents {
            id,
            event_type: Some(HOMEASSISTANT_STOP.to_string()),
        });
        pending.push((id, "subscribe_events"));
        next_id += 1;
        id
    });
    for command in &commands {
        ws.feed(Message::text(command.to_json()))
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))?;
    }
    ws.flush()
        .await
        .map_err(|e| ClientError::Closed(e.to_string()))?;

    let results_deadline = tokio::time::sleep(cfg.connect_timeout);
    tokio::pin!(results_deadline);
    let mut ping_tick =
        tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    ping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // (ping id, when its pong is overdue)
    let mut awaiting_pong: Option<(u64, Instant)> = None;
    let mut decoded = Vec::new();
    loop {
        let pong_due = awaiting_pong.map(|(_, due)| due);
        // Biased toward the socket: frames already received (a late pong among
        // them) are read before a deadline is judged.
        let wake = tokio::select! {
            biased;
            frame = ws.next() => Wake::Frame(frame),
            _ = &mut results_deadline, if report.subscribed_at.is_none() => Wake::SetupOverdue,
            _ = tokio::time::sleep_until(pong_due.unwrap_or_else(Instant::now)), if pong_due.is_some() => Wake::PongOverdue,
            _ = ping_tick.tick(), if awaiting_pong.is_none() => Wake::Ping,
            command = ctx.commands.next(source), if report.subscribed_at.is_some() => Wake::Command(command),
        };
        let frame = match wake {
            Wake::Frame(frame) => frame,
            Wake::SetupOverdue => {
                return Err(ClientError::Timeout(
                    "waiting for subscription results".into(),
                ));
            }
            Wake::PongOverdue => {
                return Err(ClientError::PingTimeout {
                    waited: cfg.pong_timeout,
                });
            }
            Wake::Ping => {
                let id = next_id;
                next_id += 1;
                ws.send(Message::text(ClientMessage::Ping { id }.to_json()))
                    .await
                    .map_err(|e| ClientError::Closed(e.to_string()))?;
                awaiting_pong = Some((id, Instant::now() + cfg.pong_timeout));
                continue;
            }
            Wake::Command(command) => {
                // Fire-and-forget (see `commands`): the result is not awaited.
                let id = next_id;
                next_id += 1;
                ws.send(Message::text(command.to_json(id)))
                    .await
                    .map_err(|e| ClientError::Closed(e.to_string()))?;
                continue;
            }
        };
        let message = match frame {
            Some(Ok(message)) => message,
            Some(Err(tungstenite::Error::Capacity(error))) => {
                record_bad_input(ctx, source, "too_large", &error.to_string(), b"");
                return Err(ClientError::Closed(format!(
                    "message over the hard cap: {error}"
                )));
            }
            Some(Err(error)) => return Err(ClientError::Closed(error.to_string())),
            None => return Err(ClientError::Closed("end of stream".into())),
        };
        let bytes: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => return Err(ClientError::Closed(close_reason(frame.as_ref()))),
            _ => continue,
        };
        meters.bytes.increment(bytes.len() as u64);
        if bytes.len() > cfg.max_message_bytes {
            let error = DecodeError::TooLarge {
                size: bytes.len(),
                limit: cfg.max_message_bytes,
            };
            record_bad_input(ctx, source, error.kind(), &error.to_string(), bytes);
            continue;
        }
        match &message {
            Message::Text(text) => decode_frame(text, source, &mut decoded),
            _ => decode_binary_frame(bytes, source, &mut decoded),
        }
        // One clock read per frame: a coalesced frame's events arrived together.
        let arrived = Timestamp::now();
        for item in decoded.drain(..) {
            match item {
                Ok(ServerMessage::Event { event, id }) => {
                    if event.event_type() == HOMEASSISTANT_STOP && !report.ha_stopping {
                        report.ha_stopping = true;
                        tracing::info!(message = "Home Assistant is stopping.", source = %source);
                    }
                    if Some(id) == stop_watch {
                        continue;
                    }
                    let time = event.time_fired;
                    let mut live = Live {
                        gap: &mut gap,
                        delivered: &mut delivered,
                        arrived,
                    };
                    if !hand_on_live(event, time, &mut live, link, meters).await {
                        return Ok(());
                    }
                }
                Ok(ServerMessage::Entities { id, message }) => {
                    let Some((_, cache)) = entities.as_mut().filter(|(sub, _)| *sub == id) else {
                        continue;
                    };
                    let initial = std::mem::take(&mut initial_pending);
                    let mut changes = Vec::new();
                    let tagged = if initial {
                        &meters.snapshot_source
                    } else {
                        source
                    };
                    cache.apply(message, tagged, arrived, &mut changes);
                    for change in changes {
                        let event = match change {
                            Ok(event) => event,
                            Err(error) => {
                                record_bad_input(
                                    ctx,
                                    source,
                                    "unknown_entity",
                                    &error.to_string(),
                                    b"",
                                );
                                continue;
                            }
                        };
                        if initial {
                            let wanted = plan.snapshot || resume_at_start.is_some();
                            let newer = resume_at_start.is_none_or(|c| event.time_fired > c);
                            if !(wanted && newer) {
                                continue;
                            }
                            let done = delivered.get_or_insert_default();
                            if !hand_on_initial(event, done, link, meters).await {
                                return Ok(());
                            }
                            continue;
                        }
                        // A removal has no time from HA: the cursor keeps the last state's time.
                        let cursor_time = match event.state_changed() {
                            Some(StateChanged {
                                new_state: None,
                                old_state: Some(old),
                                ..
                            }) => old
                                .state()
                                .map_or(resume_at_start.unwrap_or_default(), |o| o.last_updated),
                            _ => event.time_fired,
                        };
                        let mut live = Live {
                            gap: &mut gap,
                            delivered: &mut delivered,
                            arrived,
                        };
                        if !hand_on_live(event, cursor_time, &mut live, link, meters).await {
                            return Ok(());
                        }
                    }
                    if initial {
                        if plan.snapshot {
                            report.snapshot_done = true;
                        }
                        // Without a gap to fill, nothing else needs what was delivered.
                        if gap.is_none() {
                            delivered = None;
                        }
                        tracing::info!(message = "Entity states received.", source = %source, entities = cache.len());
                    }
                }
                Ok(ServerMessage::Reply(ServerReply::Pong { id })) => {
                    if awaiting_pong.is_some_and(|(ping, _)| ping == id) {
                        awaiting_pong = None;
                    }
                }
                Ok(ServerMessage::Reply(ServerReply::Result {
                    id,
                    success,
                    error,
                    result,
                })) => {
                    let Some(at) = pending.iter().position(|(p, _)| *p == id) else {
                        continue;
                    };
                    let (_, command) = pending.remove(at);
                    if command == HISTORY {
                        let Some(g) = gap.as_mut() else { continue };
                        if success {
                            let mut rows = history::rows_after(
                                result.unwrap_or_default(),
                                g.in_flight_after,
                                &meters.backfill_source,
                            );
                            // The request ran a microsecond past the window (whatever HA's end bound):
                            // a row there belongs to the next window.
                            if let Some(until) = g.in_flight_until {
                                rows.events.retain(|e| e.time_fired <= until);
                            }
                            let done = delivered.get_or_insert_default();
                            if !hand_on_backfill(rows, g, done, link, meters).await {
                                return Ok(());
                            }
                        } else {
                            give_up_gap(g, error.unwrap_or_default(), meters, source);
                        }
                        continue_gap(&mut ws, &mut next_id, &mut pending, &mut gap, link, meters)
                            .await?;
                        if gap.is_none() {
                            delivered = None;
                        }
                        continue;
                    }
                    if !success && command == "supported_features" {
                        // Cores older than 2022.x do not know the command: go on without arrays.
                        let error = error.unwrap_or_default();
                        tracing::info!(message = "Home Assistant does not support message coalescing; continuing without it.", source = %source, code = %error.code);
                    } else if !success {
                        let error = error.unwrap_or_default();
                        return Err(ClientError::Command {
                            command,
                            code: error.code,
                            message: error.message,
                        });
                    }
                    if command == "get_states" {
                        let states = states_from_result(result, ctx, source);
                        if let Some(g) = gap.as_mut() {
                            // With `entity_ids`, the gap is filled for those entities only.
                            let ids: Vec<String> = states
                                .iter()
                                .map(|s| s.entity_id.to_string())
                                .filter(|id| {
                                    !entities_mode
                                        || cfg.entity_ids.is_empty()
                                        || cfg.entity_ids.contains(id)
                                })
                                .collect();
                            g.chunks = Some(history_windows(
                                &ids,
                                cfg.backfill_chunk,
                                g.from,
                                Timestamp::now(),
                                cfg.backfill_window,
                            ));
                        }
                        if plan.snapshot && !entities_mode {
                            let after = gap.as_ref().map(|g| g.from);
                            let done = delivered.get_or_insert_default();
                            if !hand_on_snapshot(states, after, done, link, meters).await {
                                return Ok(());
                            }
                            report.snapshot_done = true;
                        }
                        continue_gap(&mut ws, &mut next_id, &mut pending, &mut gap, link, meters)
                            .await?;
                        if gap.is_none() {
                            delivered = None;
                        }
                        continue;
                    }
                    if pending.is_empty() && report.subscribed_at.is_none() {
                        report.subscribed_at = Some(Instant::now());
                        // Asked before the source is reported ready, so "ready" implies "asked".
                        // The entities stream brings its own snapshot; get_states then only names the gap's entities.
                        if (plan.snapshot && !entities_mode) || gap.is_some() {
                            let id = next_id;
                            next_id += 1;
                            ws.send(Message::text(ClientMessage::GetStates { id }.to_json()))
                                .await
                                .map_err(|e| ClientError::Closed(e.to_string()))?;
                            pending.push((id, "get_states"));
                        }
                        meters.connected.set(1.0);
                        meters.connects.increment(1);
                        ctx.stats.source_state(source, true, None);
                        tracing::info!(message = "Connected to Home Assistant and subscribed.", source = %source, url = %url, ha_version = %ha_version, event_types = ?cfg.event_types);
                    }
                }
                Ok(ServerMessage::Reply(ServerReply::AuthInvalid { message })) => {
                    return Err(ClientError::AuthInvalid { message });
                }
                Ok(other) => {
                    tracing::debug!(message = "Ignored a Home Assistant message.", source = %source, kind = %describe(&other));
                }
                Err(error) => {
                    let input = error.element().map_or(bytes, str::as_bytes);
                    record_bad_input(ctx, source, error.kind(), &error.to_string(), input);
                }
            }
        }
    }
}

/// Reads the states of a `get_states` result one by one; a state that does not decode is set aside, the others are kept.
fn states_from_result(
    result: Option<serde_json::Value>,
    ctx: &SourceContext,
    source: &SourceId,
) -> Vec<State> {
    let items = match result {
        Some(serde_json::Value::Array(items)) => items,
        other => {
            let input = other.map(|v| v.to_string()).unwrap_or_default();
            record_bad_input(
                ctx,
                source,
                "invalid_field",
                "get_states result is not an array",
                input.as_bytes(),
            );
            return Vec::new();
        }
    };
    let mut states = Vec::with_capacity(items.len());
    for item in items {
        match State::deserialize(&item) {
            Ok(state) => states.push(state),
            Err(error) => record_bad_input(
                ctx,
                source,
                "invalid_field",
                &format!("get_states: {error}"),
                item.to_string().as_bytes(),
            ),
        }
    }
    states
}

/// A current state as a `state_changed` event at HA's own `last_updated`, so re-writing it is idempotent.
fn snapshot_event(state: State, source: &SourceId) -> Event {
    Event::from_state(source.clone(), state)
}

/// Hands every current state on as a snapshot event; false when the pipeline closed its channel.
///
/// States the live stream of this connection already delivered are skipped,
/// and so, with a cursor (a restart that resumes), are states last updated at
/// or before it: the earlier run handed them on.
async fn hand_on_snapshot(
    states: Vec<State>,
    after: Option<Timestamp>,
    delivered: &mut Delivered,
    link: &Link<'_>,
    meters: &Meters,
) -> bool {
    let mut count = 0;
    for state in states {
        if after.is_some_and(|from| state.last_updated <= from) || delivered.contains(&state) {
            continue;
        }
        count += 1;
        let mut event = snapshot_event(state, &meters.snapshot_source);
        let time = event.time_fired;
        delivered.note(&event);
        let mark = link.cursor.stamp(&mut event);
        if link.ctx.tx.send(event).await.is_err() {
            return false;
        }
        link.cursor.advance(time, mark);
        meters.snapshot.increment(1);
    }
    tracing::info!(message = "Initial snapshot handed on.", source = %link.source, states = count);
    true
}

/// Where a live event of this connection is noted besides the cursor.
struct Live<'s> {
    gap: &'s mut Option<Gap>,
    delivered: &'s mut Option<Delivered>,
    /// When the frame that carried it arrived (for the lag).
    arrived: Timestamp,
}

/// Hands one live event on and moves the cursor to `cursor_time`; false when the pipeline closed its channel.
async fn hand_on_live(
    mut event: Event,
    cursor_time: Timestamp,
    live: &mut Live<'_>,
    link: &Link<'_>,
    meters: &mut Meters,
) -> bool {
    meters.event(event.event_type());
    Stats::add(&link.ctx.stats.received, 1);
    let time = event.time_fired;
    meters.lag(time, live.arrived);
    meters.last_event.set(time.as_nanos() as f64 / 1e9);
    if let Some(gap) = live.gap.as_mut() {
        gap.first_live.get_or_insert(time);
    }
    if let Some(delivered) = live.delivered.as_mut() {
        delivered.note(&event);
    }
    let mark = link.cursor.stamp(&mut event);
    if link.ctx.tx.send(event).await.is_err() {
        return false;
    }
    link.cursor.advance(cursor_time, mark);
    true
}

/// Hands on one state of the first `subscribe_entities` event, as the snapshot does; false when the pipeline closed its channel.
async fn hand_on_initial(
    mut event: Event,
    delivered: &mut Delivered,
    link: &Link<'_>,
    meters: &Meters,
) -> bool {
    let Some(new) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) else {
        return true;
    };
    if delivered.contains(new) {
        return true;
    }
    delivered.note(&event);
    let time = event.time_fired;
    let mark = link.cursor.stamp(&mut event);
    if link.ctx.tx.send(event).await.is_err() {
        return false;
    }
    link.cursor.advance(time, mark);
    meters.snapshot.increment(1);
    true
}

/// Hands on the rows of one history reply that this connection has not delivered; false when the pipeline closed its channel.
async fn hand_on_backfill(
    rows: history::Backfill,
    gap: &mut Gap,
    delivered: &Delivered,
    link: &Link<'_>,
    meters: &Meters,
) -> bool {
    for error in rows.errors {
        record_bad_input(
            link.ctx,
            link.source,
            "invalid_field",
            &error.to_string(),
            b"",
        );
    }
    for mut event in rows.events {
        let Some(new) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) else {
            continue;
        };
        if delivered.contains(new) {
            continue;
        }
        let time = event.time_fired;
        let mark = link.cursor.stamp(&mut event);
        if link.ctx.tx.send(event).await.is_err() {
            return false;
        }
        link.cursor.advance(time, mark);
        gap.backfilled += 1;
        meters.backfilled.increment(1);
    }
    true
}

/// HA refused a history request: the gap is given up as a whole, counted and logged.
fn give_up_gap(gap: &mut Gap, error: ErrorInfo, meters: &Meters, source: &SourceId) {
    metrics::counter!(SOURCE_ERRORS, "source" => source.to_string(), "error_type" => "backfill")
        .increment(1);
    tracing::warn!(message = "Home Assistant refused the history request; the gap cannot be backfilled.", source = %source, code = %error.code, reason = %error.message);
    gap.chunks = Some(Default::default());
    gap.failed = true;
    let to = gap.first_live.unwrap_or_else(Timestamp::now);
    report_lost_gap(meters, source, gap, to, "state changes and other events");
}

/// Asks for the next chunk of the gap, or, when none is left, reports the gap filled and releases the cursor.
async fn continue_gap(
    ws: &mut Ws,
    next_id: &mut u64,
    pending: &mut Vec<(u64, &'static str)>,
    gap: &mut Option<Gap>,
    link: &Link<'_>,
    meters: &Meters,
) -> Result<(), ClientError> {
    let Some(g) = gap.as_mut() else {
        return Ok(());
    };
    if let Some(id) = next_history_request(ws, next_id, g).await? {
        pending.push((id, HISTORY));
    } else {
        finish_gap(g, link.cfg, meters, link.source);
        link.cursor.release();
        *gap = None;
    }
    Ok(())
}

/// Sends the history request for the next chunk of entities; `None` when no chunk is left.
async fn next_history_request(
    ws: &mut Ws,
    next_id: &mut u64,
    gap: &mut Gap,
) -> Result<Option<u64>, ClientError> {
    let Some(window) = gap.chunks.as_mut().and_then(|c| c.pop_front()) else {
        return Ok(None);
    };
    let id = *next_id;
    *next_id += 1;
    // Windows after the first: changes after `start` only (the previous window ended
    // one microsecond — HA's resolution — after it, so a change exactly at `start` is
    // in that one), and no state clamped to the window's start.
    let first = window.start == gap.from;
    gap.in_flight_after = window.start;
    gap.in_flight_until = window.end;
    // The lossless form: every change, every attribute (HA's defaults drop some).
    let request = ClientMessage::HistoryDuringPeriod {
        id,
        start_time: window.start.to_rfc3339(),
        end_time: window
            .end
            .map(|end| Timestamp::from_nanos(end.as_nanos() + 1_000).to_rfc3339()),
        entity_ids: window.entity_ids,
        include_start_time_state: first,
        significant_changes_only: false,
        minimal_response: false,
        no_attributes: false,
    };
    ws.send(Message::text(request.to_json()))
        .await
        .map_err(|e| ClientError::Closed(e.to_string()))?;
    Ok(Some(id))
}

/// Reports a filled gap; events other than state changes in it are lost and said so.
fn finish_gap(gap: &Gap, cfg: &HomeAssistantConfig, meters: &Meters, source: &SourceId) {
    if gap.failed {
        return;
    }
    let to = gap.first_live.unwrap_or_else(Timestamp::now);
    let seconds = seconds_between(gap.from, to);
    meters.gap_seconds.record(seconds);
    tracing::info!(message = "Gap backfilled from Home Assistant's history.", source = %source, from = %gap.from, to = %to, gap_s = seconds, states = gap.backfilled);
    // The entities subscription never asked for other events: none were lost.
    let other_events = cfg.subscription == HaSubscription::Events
        && (cfg.event_types.is_empty()
            || cfg
                .event_types
                .iter()
                .any(|t| t != crate::event::STATE_CHANGED));
    if other_events {
        report_lost_gap(meters, source, gap, to, "events other than state changes");
    }
}

/// Counts and logs a span of time whose events (of the kind named) cannot be recovered.
///
/// At INFO after a restart of HA (expected), else at WARN.
fn report_lost_gap(meters: &Meters, source: &SourceId, gap: &Gap, to: Timestamp, what: &str) {
    let from = gap.from;
    let seconds = seconds_between(from, to);
    meters.lost_gap_seconds.record(seconds);
    if gap.expected {
        tracing::info!(message = "Events in a gap cannot be recovered from Home Assistant's history.", source = %source, lost = what, from = %from, to = %to, gap_s = seconds, cause = "Home Assistant restarted");
    } else {
        tracing::warn!(message = "Events in a gap cannot be recovered from Home Assistant's history.", source = %source, lost = what, from = %from, to = %to, gap_s = seconds);
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_nanos().saturating_sub(from.as_nanos())).max(0) as f64 / 1e9
}

/// What woke the read loop.
enum Wake {
    /// The socket yielded a frame, an error or its end.
    Frame(Option<Result<Message, tungstenite::Error>>),
    /// The subscription results did not all arrive within `connect_timeout`.
    SetupOverdue,
    /// The outstanding ping got no pong within `pong_timeout`.
    PongOverdue,
    /// Time to send the next ping.
    Ping,
    /// A command from [`super::commands::Commands`] to send.
    Command(super::commands::Command),
}

/// Counts undecodable input and sets it aside; the stream goes on.
fn record_bad_input(
    ctx: &SourceContext,
    source: &SourceId,
    kind: &'static str,
    reason: &str,
    input: &[u8],
) {
    // Every decode error is also a dead letter: `decode_errors` is the source side of that count.
    Stats::add(&ctx.stats.decode_errors, 1);
    metrics::counter!(SOURCE_ERRORS, "source" => source.to_string(), "error_type" => kind)
        .increment(1);
    ctx.dead_letters.record(DeadLetter {
        stage: "source",
        kind,
        reason,
        source,
        input: &input[..input.len().min(DEAD_LETTER_INPUT_MAX)],
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_split_into_contiguous_windows_for_every_entity_chunk() {
        let ids: Vec<String> = (0..5).map(|i| format!("sensor.s{i}")).collect();
        let hour = Duration::from_secs(3600);
        let from = Timestamp::from_nanos(1_000_000_000_000);
        let now = Timestamp::from_nanos(from.as_nanos() + 2 * 3_600_000_000_000 + 5);
        let windows: Vec<HistoryWindow> = history_windows(&ids, 2, from, now, hour).into();
        // Three windows (two full hours and the rest up to now) × three chunks (2 + 2 + 1).
        assert_eq!(windows.len(), 9);
        for (w, chunk) in windows.iter().zip([2, 2, 1].iter().cycle()) {
            assert_eq!(w.entity_ids.len(), *chunk);
        }
        let starts: Vec<i64> = windows
            .iter()
            .step_by(3)
            .map(|w| w.start.as_nanos())
            .collect();
        let ends: Vec<Option<i64>> = windows
            .iter()
            .step_by(3)
            .map(|w| w.end.map(Timestamp::as_nanos))
            .collect();
        let h = 3_600_000_000_000;
        let f = from.as_nanos();
        assert_eq!(starts, vec![f, f + h, f + 2 * h]);
        // Each window ends where the next starts; the last runs to "now" (no end).
        assert_eq!(ends, vec![Some(f + h), Some(f + 2 * h), None]);
        // A short gap is one window per chunk, without an end.
        let short = history_windows(&ids, 50, from, from, hour);
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].end, None);
        assert_eq!(short[0].start, from);
    }

    #[test]
    fn tls_setup_errors_are_tls_errors() {
        let mut cfg = HomeAssistantConfig::new("https://ha.example:8123", "t");
        assert!(matches!(build_connector(&cfg), Ok(Connector::Rustls(_))));
        cfg.tls.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(build_connector(&cfg), Err(ClientError::Tls(_))));
        cfg.tls.insecure_skip_verify = true;
        cfg.tls.ca_file = None;
        assert!(matches!(build_connector(&cfg), Ok(Connector::Rustls(_))));
        let plain = HomeAssistantConfig::new("http://ha.local:8123", "t");
        assert!(matches!(build_connector(&plain), Ok(Connector::Plain)));
    }

    #[test]
    fn oversized_messages_below_the_hard_cap_survive() {
        let mut cfg = HomeAssistantConfig::new("ws://x", "t");
        cfg.max_message_bytes = 1000;
        assert_eq!(hard_message_cap(&cfg), 16 << 20);
        cfg.max_message_bytes = 64 << 20;
        assert_eq!(hard_message_cap(&cfg), 256 << 20);
    }
}
