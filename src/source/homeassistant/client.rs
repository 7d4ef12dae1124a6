//! The Home Assistant WebSocket client task: connect, authenticate, subscribe, forward, reconnect.
//!
//! One task per home owns the connection. It reads the socket continuously;
//! every decoded event goes to the pipeline channel; undecodable input is
//! counted and set aside as a dead letter, and the stream goes on.
//!
//! Where each concern lives:
//! - **This file** is the supervisor: [`run`] sets up (TLS connector, resume
//!   cursor and its writer), then `supervise` runs one session at a time and
//!   reconnects with back-off, keeping what outlives a connection (the back-off
//!   and failure streaks, the metric handles in `Meters`, whether the snapshot
//!   is still wanted). [`probe`] is `ha-ingestor check`'s one-off connection.
//! - **`client/connect.rs`**: the TLS connector, the WebSocket upgrade (message
//!   size caps) and the auth phase.
//! - **`client/session.rs`**: one connection as a `Session` struct that owns its
//!   state (command ids, awaited results, the ping, the subscriptions, the
//!   entities cache, the gap and the states already delivered). Its `run` loop
//!   waits on the socket, the deadlines, the ping interval and the command
//!   queue, and hands each wake-up to the method named for it (`on_frame`,
//!   `on_event`, `on_entities`, `on_result`, `on_pong`, `on_tick`,
//!   `send_command`).
//! - **`client/gap.rs`**: a gap being backfilled from HA's history: the
//!   requests still to make, the one in flight, and how the gap is reported.
//! - Beside `client`: the wire types (`protocol.rs`), frame decoding
//!   (`decode.rs`), the `subscribe_entities` cache (`entities.rs`), history rows
//!   (`history.rs`) and the resume cursor (`cursor.rs`).
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
//!   `get_states`: the entities changed since the cursor, and the gap's end (the
//!   newest of their states). It waits until HA's recorder shows a change at or
//!   after that end (the commit check), then asks
//!   `history/history_during_period` from the cursor to the end, newest window
//!   first, `backfill_chunk` entities per request, one request at a time, in
//!   the lossless form, and puts back the attributes the recorder drops
//!   (`client/gap.rs`). Rows at or before the cursor and rows this connection
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

mod connect;
mod gap;
mod rhythm;
mod session;

// The connection and the read rhythm alone, for the floor of this source (`bench ha-consume`).
pub use connect::{Ws as Socket, build_connector, open as open_socket};
pub use rhythm::{READ_LOW_WATER, ReadRhythm, set_low_water};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use self::session::{Link, Plan, SessionReport};
use super::cursor::{self, Cursor};
use crate::backoff::Backoff;
use crate::config::HomeAssistantConfig;
use crate::event::{STATE_CHANGED, SourceId, Timestamp};
use crate::monitor::metrics::{
    BACKFILL_ATTRIBUTES_RESTORED, BACKFILL_COMMIT_WAITS, BACKFILL_UNCONFIRMED,
    BACKFILL_UNRECORDED_ENTITIES, SOURCE_BACKFILLED_POINTS, SOURCE_CONNECTED, SOURCE_CONNECTS,
    SOURCE_ERRORS, SOURCE_GAP_SECONDS, SOURCE_LAG_SECONDS, SOURCE_LAST_EVENT_TIMESTAMP,
    SOURCE_RECEIVED_BYTES, SOURCE_RECEIVED_EVENTS, SOURCE_RECONNECTS, SOURCE_SNAPSHOT_STATES,
    SOURCE_UNRECOVERABLE_GAP_SECONDS,
};
use crate::source::SourceContext;

/// A connection that stayed subscribed this long resets the back-off streak.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Distinct `event_type` label values per source; further types count as `other`.
const MAX_EVENT_TYPE_LABELS: usize = 256;
/// The event HA fires as it shuts down (a restart too); the socket closing after it is no failure.
pub const HOMEASSISTANT_STOP: &str = "homeassistant_stop";
/// The `reason` label of a connection lost to a Home Assistant restart.
const REASON_HA_RESTART: &str = "ha_restart";

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
    run_from(cfg, source, ctx, None).await;
}

/// As [`run`], resuming no earlier than `store_floor` (a sharded fleet's store's last point
/// of this home, less a margin): the later of it and the local cursor is where the gap starts.
pub async fn run_from(
    cfg: HomeAssistantConfig,
    source: SourceId,
    ctx: SourceContext,
    store_floor: Option<Timestamp>,
) {
    ctx.stats.register_source(&source);
    let setup = connect::build_connector(&cfg).and_then(|c| match &cfg.token {
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
    let (start, resumed_from) = resume_start(start, store_floor);
    if let (Some(from), "store") = (start, resumed_from) {
        tracing::info!(message = "Resuming from the store's last point of this home.", source = %source, %from);
    }
    ctx.stats.home_resumed(&source, resumed_from);
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

/// Where a home resumes: the later of its local cursor and the store's floor (a home that
/// moved here has no cursor; one that moved away and back has a stale one), and which
/// of them it was (`cursor`, `store` or `none`).
pub fn resume_start(
    local: Option<Timestamp>,
    store_floor: Option<Timestamp>,
) -> (Option<Timestamp>, &'static str) {
    match (local, store_floor) {
        (Some(local), Some(store)) if store > local => (Some(store), "store"),
        (Some(local), _) => (Some(local), "cursor"),
        (None, Some(store)) => (Some(store), "store"),
        (None, None) => (None, "none"),
    }
}

/// Connects, streams and reconnects until shutdown or until the pipeline closes its channel.
async fn supervise(link: &Link<'_>) {
    let Link {
        cfg,
        source,
        ctx,
        cursor,
        ..
    } = *link;
    let mut meters = Meters::new(source);
    let mut memory = gap::UnrecordedAttributes::default();
    let mut retry = Retry::new(cfg);
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
            after_restart: retry.restarting,
        };
        let outcome = tokio::select! {
            _ = ctx.shutdown.cancelled() => None,
            r = session::run(link, &plan, &mut meters, &mut memory, &mut report) => Some(r),
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
        let delay = retry.after_lost(&error, &report, link);
        tokio::select! {
            _ = ctx.shutdown.cancelled() => {
                ctx.stats.source_state(source, false, None);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// What the reconnect logic remembers across connections.
struct Retry {
    backoff: Backoff,
    failures_in_streak: u64,
    auth_refusals_in_streak: u64,
    /// Set by a restart of HA; connection failures until it is back are expected, not noise.
    restarting: bool,
}

impl Retry {
    fn new(cfg: &HomeAssistantConfig) -> Self {
        Retry {
            backoff: Backoff::new(cfg.reconnect_min, cfg.reconnect_max),
            failures_in_streak: 0,
            auth_refusals_in_streak: 0,
            restarting: false,
        }
    }

    /// Counts, reports and logs a connection that failed or was lost; returns how long to wait before the next.
    ///
    /// A restart of HA is no error (INFO, `reason="ha_restart"`); a refused token
    /// always waits `reconnect_max`; anything else takes the back-off.
    fn after_lost(
        &mut self,
        error: &ClientError,
        report: &SessionReport,
        link: &Link<'_>,
    ) -> Duration {
        let Link {
            cfg,
            url,
            source,
            ctx,
            ..
        } = *link;
        if let Some(at) = report.subscribed_at {
            self.failures_in_streak = 0;
            self.auth_refusals_in_streak = 0;
            self.restarting = false;
            if at.elapsed() >= STABLE_AFTER {
                self.backoff.reset();
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
        if ha_restart {
            self.restarting = true;
            ctx.stats.source_state(
                source,
                false,
                Some("Home Assistant is restarting".to_string()),
            );
            let delay = self.backoff.next_delay();
            tracing::info!(message = "Home Assistant is restarting; reconnecting.", source = %source, url = %url, retry_in = ?delay);
            delay
        } else if error.is_auth() {
            self.auth_refusals_in_streak += 1;
            if self.auth_refusals_in_streak == 1 {
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
            self.failures_in_streak += 1;
            let delay = self.backoff.next_delay();
            if self.restarting {
                // HA is still coming back up: refused connections are expected.
                tracing::debug!(message = "Home Assistant not back yet; reconnecting.", source = %source, %error, attempt = self.failures_in_streak, retry_in = ?delay);
            } else if self.failures_in_streak == 1 || self.failures_in_streak.is_multiple_of(10) {
                tracing::warn!(message = "Home Assistant connection failed; reconnecting.", source = %source, url = %url, %error, attempt = self.failures_in_streak, retry_in = ?delay);
            } else {
                tracing::debug!(message = "Home Assistant connection failed; reconnecting.", source = %source, %error, attempt = self.failures_in_streak, retry_in = ?delay);
            }
            delay
        }
    }
}

/// Connects and authenticates once, for `ha-ingestor check`; distinguishes a refused token from an unreachable peer.
pub async fn probe(cfg: &HomeAssistantConfig) -> Result<ProbeInfo, ClientError> {
    let token = cfg.token.as_deref().ok_or(ClientError::NoToken)?;
    let connector = connect::build_connector(cfg)?;
    let url = cfg.websocket_url();
    let (mut ws, ha_version) = connect::open(cfg, &url, &connector, token).await?;
    let _ = ws.close(None).await;
    Ok(ProbeInfo { ha_version, url })
}

/// Metric handles, resolved once so the hot path does no label allocation; they outlive every session.
struct Meters {
    source: String,
    /// The source id backfilled events carry: `<source>/backfill`.
    backfill_source: SourceId,
    backfilled: metrics::Counter,
    restored: metrics::Counter,
    commit_waits: metrics::Counter,
    unconfirmed: metrics::Counter,
    unrecorded: metrics::Counter,
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
            restored: metrics::counter!(BACKFILL_ATTRIBUTES_RESTORED, "source" => source.to_string()),
            commit_waits: metrics::counter!(BACKFILL_COMMIT_WAITS, "source" => source.to_string()),
            unconfirmed: metrics::counter!(BACKFILL_UNCONFIRMED, "source" => source.to_string()),
            unrecorded: metrics::counter!(BACKFILL_UNRECORDED_ENTITIES, "source" => source.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_resumes_from_the_later_of_its_cursor_and_the_stores_floor() {
        let t = Timestamp::from_nanos;
        // Moved here: no cursor, the store knows where it ended.
        assert_eq!(resume_start(None, Some(t(5))), (Some(t(5)), "store"));
        // Moved away and back: the stale cursor gives way to the newer store floor.
        assert_eq!(resume_start(Some(t(3)), Some(t(5))), (Some(t(5)), "store"));
        // Stayed: its own cursor is at or after the floor (the margin puts the floor earlier).
        assert_eq!(resume_start(Some(t(7)), Some(t(5))), (Some(t(7)), "cursor"));
        assert_eq!(resume_start(Some(t(7)), None), (Some(t(7)), "cursor"));
        // Nothing anywhere: a fresh start.
        assert_eq!(resume_start(None, None), (None, "none"));
    }
}
