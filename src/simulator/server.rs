//! The WebSocket side of the simulator: authentication, the commands the
//! ingestor sends, events paced to the configured rate and queued to every
//! matching subscription, and HA's two rules for dropping a client that falls
//! behind.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::history::history_during_period;
use super::{Shared, UNBOUNDED_RETAIN, lock};
use crate::event::{EntityId, Event, EventKind, LazyState, StateChanged, Timestamp};
use crate::source::homeassistant::entities;
use crate::source::homeassistant::protocol::{
    ClientMessage, ERR_HOME_ASSISTANT, ERR_ID_REUSE, ERR_INVALID_FORMAT, ERR_NOT_FOUND,
    ERR_UNKNOWN_COMMAND, MSG_ID_REUSE, MSG_INVALID_AUTH, MSG_INVALID_FORMAT, MSG_UNKNOWN_COMMAND,
    ServerReply,
};

/// HA's limit on how many queued messages are joined into one array frame.
const MAX_COALESCED: usize = 256;
/// How long a client has to send `auth`, as in HA.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// HA's `MAX_PENDING_MSG`: a client this far behind is disconnected.
const MAX_PENDING: usize = 4096;
/// HA's `PENDING_MSG_PEAK`: a client still this far behind [`PENDING_PEAK_TIME`] after passing it is disconnected.
const PENDING_PEAK: usize = 1024;
/// HA's `PENDING_MSG_PEAK_TIME` (tests shorten it with [`super::SimulatorHandle::set_pending_peak_time`]).
pub(super) const PENDING_PEAK_TIME: Duration = Duration::from_secs(10);
/// Most events generated in one tick, so a stalled timer cannot cause a huge burst.
const MAX_BURST: u64 = 10_000;

/// One authenticated connection as the generator sees it.
pub(super) struct ClientSlot {
    conn: u64,
    pub(super) tx: mpsc::UnboundedSender<Outgoing>,
    /// (subscription id, event type or all).
    pub(super) subs: Vec<(u64, Option<String>)>,
    /// `subscribe_entities` subscriptions: (id, only these entities or all).
    entity_subs: Vec<(u64, Option<Vec<EntityId>>)>,
    /// Events queued for this client and not yet written to its socket.
    pub(super) pending: Arc<AtomicUsize>,
    /// Ends the connection at once, dropping what is queued (a client that fell behind).
    kill: CancellationToken,
    /// A peak check is scheduled (HA's `_peak_checker_unsub`): at most one at a time.
    peak_armed: Arc<AtomicBool>,
}

pub(super) enum Outgoing {
    /// (subscription id, event JSON) pairs, in order.
    Events(Vec<(u64, Arc<str>)>),
    Raw(Message),
    Drop,
}

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if shared.refusing.load(Ordering::Acquire) {
                        drop(stream);
                        continue;
                    }
                    let shared = shared.clone();
                    tracker.spawn(async move {
                        if let Err(error) = serve(stream, &shared).await {
                            tracing::debug!(message = "Simulator connection ended.", %error);
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(message = "Simulator accept failed.", %error);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Per-connection command state.
struct Conn {
    id: u64,
    last_id: u64,
    coalesce: bool,
}

async fn serve(
    stream: TcpStream,
    shared: &Shared,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().max_message_size(Some(4 << 20));
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let (mut sink, mut stream) = ws.split();
    let required = ServerReply::AuthRequired {
        ha_version: shared.cfg.ha_version.clone(),
    };
    sink.send(Message::text(required.to_json())).await?;

    let first = tokio::select! {
        _ = shared.shutdown.cancelled() => return Ok(()),
        first = tokio::time::timeout(AUTH_TIMEOUT, stream.next()) => first,
    };
    let text = match first {
        Ok(Some(Ok(Message::Text(text)))) => text,
        // Timeout, close or a non-text frame: HA closes without a reply.
        _ => return Ok(()),
    };
    shared.auth_attempts.fetch_add(1, Ordering::AcqRel);
    let refusal = match serde_json::from_str::<ClientMessage>(&text) {
        Ok(ClientMessage::Auth { access_token }) if access_token == shared.cfg.token => None,
        Ok(ClientMessage::Auth { .. }) => Some(MSG_INVALID_AUTH.to_string()),
        Ok(_) => Some("Auth message incorrectly formatted: expected type auth".to_string()),
        Err(error) => Some(format!("Auth message incorrectly formatted: {error}")),
    };
    if let Some(message) = refusal {
        shared.auth_failures.fetch_add(1, Ordering::AcqRel);
        sink.send(Message::text(
            ServerReply::AuthInvalid { message }.to_json(),
        ))
        .await?;
        let _ = sink.close().await;
        return Ok(());
    }
    sink.send(Message::text(
        ServerReply::AuthOk {
            ha_version: shared.cfg.ha_version.clone(),
        }
        .to_json(),
    ))
    .await?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    let kill = CancellationToken::new();
    let mut conn = Conn {
        id: shared.next_conn.fetch_add(1, Ordering::AcqRel),
        last_id: 0,
        coalesce: false,
    };
    lock(&shared.clients).push(ClientSlot {
        conn: conn.id,
        tx,
        subs: Vec::new(),
        entity_subs: Vec::new(),
        pending: pending.clone(),
        kill: kill.clone(),
        peak_armed: Arc::new(AtomicBool::new(false)),
    });

    let traffic = async {
        loop {
            // Biased: queued events are written before the next command is read,
            // so a reply never overtakes events that were queued before it (as
            // with HA's single writer queue).
            tokio::select! {
                biased;
                out = rx.recv() => match out {
                    Some(out) => {
                        if !write_outgoing(&mut sink, out, conn.coalesce, &pending).await? {
                            return Ok(());
                        }
                    }
                    None => return Ok(()),
                },
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let replies = handle_commands(&text, &mut conn, shared);
                        // Events queued while the replies were computed go out first, so a
                        // history answer never overtakes a live event it contains.
                        while let Ok(out) = rx.try_recv() {
                            if !write_outgoing(&mut sink, out, conn.coalesce, &pending).await? {
                                return Ok(());
                            }
                        }
                        for reply in replies.into_iter().flatten() {
                            sink.feed(Message::text(reply)).await?;
                        }
                        sink.flush().await?;
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                },
            }
        }
    };
    // Shutdown and a kill end the connection even while a write is blocked on a
    // client that does not read.
    let result = tokio::select! {
        _ = shared.shutdown.cancelled() => Ok(()),
        _ = kill.cancelled() => Ok(()),
        r = traffic => r,
    };
    lock(&shared.clients).retain(|c| c.conn != conn.id);
    result
}

/// Writes one queued item; `false` for [`Outgoing::Drop`], which ends the connection.
///
/// `Drop` is queued by `disconnect_all` after what was queued before it: no
/// close handshake, like a crashed server.
async fn write_outgoing<S>(
    sink: &mut S,
    out: Outgoing,
    coalesce: bool,
    pending: &AtomicUsize,
) -> Result<bool, S::Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    match out {
        Outgoing::Events(events) => {
            write_events(sink, &events, coalesce).await?;
            pending.fetch_sub(events.len(), Ordering::AcqRel);
        }
        Outgoing::Raw(msg) => sink.send(msg).await?,
        Outgoing::Drop => return Ok(false),
    }
    Ok(true)
}

async fn write_events<S>(
    sink: &mut S,
    events: &[(u64, Arc<str>)],
    coalesce: bool,
) -> Result<(), S::Error>
where
    S: futures_util::Sink<Message> + Unpin,
{
    if coalesce {
        for chunk in events.chunks(MAX_COALESCED) {
            let mut frame = String::with_capacity(chunk.iter().map(|(_, b)| b.len() + 40).sum());
            frame.push('[');
            for (i, (id, body)) in chunk.iter().enumerate() {
                if i > 0 {
                    frame.push(',');
                }
                frame.push_str(&event_frame(body, *id));
            }
            frame.push(']');
            sink.feed(Message::text(frame)).await?;
        }
    } else {
        for (id, body) in events {
            sink.feed(Message::text(event_frame(body, *id))).await?;
        }
    }
    sink.flush().await
}

/// Answers one client frame (an object, or an array of commands as HA accepts).
fn handle_commands(text: &str, conn: &mut Conn, shared: &Shared) -> Vec<Option<String>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            return vec![Some(
                ServerReply::failure(0, ERR_INVALID_FORMAT, MSG_INVALID_FORMAT).to_json(),
            )];
        }
    };
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| handle_command(item, conn, shared))
            .collect(),
        item => vec![handle_command(&item, conn, shared)],
    }
}

/// The reply to one command; `None` when none is sent (an unanswered `ping`).
fn handle_command(msg: &Value, conn: &mut Conn, shared: &Shared) -> Option<String> {
    let id = msg.get("id").and_then(Value::as_u64).filter(|id| *id > 0);
    let kind = msg.get("type").and_then(Value::as_str);
    let (Some(id), Some(kind)) = (id, kind) else {
        let id = id.unwrap_or(0);
        return Some(ServerReply::failure(id, ERR_INVALID_FORMAT, MSG_INVALID_FORMAT).to_json());
    };
    if id <= conn.last_id {
        return Some(ServerReply::failure(id, ERR_ID_REUSE, MSG_ID_REUSE).to_json());
    }
    conn.last_id = id;
    *lock(&shared.commands).entry(kind.to_string()).or_insert(0) += 1;
    let reply = match kind {
        "supported_features" => {
            conn.coalesce = msg
                .get("features")
                .and_then(|f| f.get("coalesce_messages"))
                .is_some();
            ServerReply::success(id, Value::Null)
        }
        "subscribe_events" => {
            let event_type = msg.get("event_type").and_then(Value::as_str);
            if event_type == Some("state_reported") {
                ServerReply::failure(
                    id,
                    ERR_HOME_ASSISTANT,
                    "Event filter is required for event state_reported",
                )
            } else {
                let mut clients = lock(&shared.clients);
                if let Some(slot) = clients.iter_mut().find(|c| c.conn == conn.id) {
                    slot.subs.push((id, event_type.map(str::to_string)));
                }
                drop(clients);
                shared.subscribed.notify_one();
                ServerReply::success(id, Value::Null)
            }
        }
        "subscribe_entities" => return subscribe_entities(id, msg, conn, shared),
        "unsubscribe_events" => {
            let target = msg.get("subscription").and_then(Value::as_u64);
            let mut clients = lock(&shared.clients);
            let removed = clients
                .iter_mut()
                .find(|c| c.conn == conn.id)
                .and_then(|slot| {
                    if let Some(at) = slot
                        .entity_subs
                        .iter()
                        .position(|(s, _)| Some(*s) == target)
                    {
                        slot.entity_subs.remove(at);
                        return Some(());
                    }
                    let at = slot.subs.iter().position(|(s, _)| Some(*s) == target)?;
                    slot.subs.remove(at);
                    Some(())
                });
            match removed {
                Some(()) => ServerReply::success(id, Value::Null),
                None => ServerReply::failure(id, ERR_NOT_FOUND, "Subscription not found."),
            }
        }
        "get_states" => {
            let states = lock(&shared.world).current_states();
            ServerReply::success(id, serde_json::to_value(states).unwrap_or(Value::Null))
        }
        "get_config" => ServerReply::success(id, config_result(&shared.cfg.ha_version)),
        "history/history_during_period" if shared.history.load(Ordering::Acquire) => {
            history_during_period(id, msg, shared)
        }
        "call_service" | "fire_event" => {
            // Recorded for tests; answered as HA does (a context), without acting on them.
            let wanted = if kind == "call_service" {
                &["domain", "service"][..]
            } else {
                &["event_type"][..]
            };
            if wanted
                .iter()
                .all(|k| msg.get(*k).and_then(Value::as_str).is_some())
            {
                lock(&shared.service_commands).push(msg.clone());
                let context =
                    json!({"id": format!("sim{id:020}"), "parent_id": null, "user_id": null});
                if kind == "call_service" {
                    ServerReply::success(id, json!({"context": context, "response": null}))
                } else {
                    ServerReply::success(id, json!({"context": context}))
                }
            } else {
                ServerReply::failure(id, ERR_INVALID_FORMAT, MSG_INVALID_FORMAT)
            }
        }
        "ping" => {
            shared.pings.fetch_add(1, Ordering::AcqRel);
            if !shared.answer_pings.load(Ordering::Acquire) {
                return None;
            }
            ServerReply::Pong { id }
        }
        _ => ServerReply::failure(id, ERR_UNKNOWN_COMMAND, MSG_UNKNOWN_COMMAND),
    };
    Some(reply.to_json())
}

/// `subscribe_entities`: the result, then one event with every current state
/// (`{"a": …}`, compressed, `lu` only when it differs from `lc`), then diffs.
///
/// Both go through the connection's queue while the world is locked, so no
/// diff can be queued before them and no change falls between the snapshot
/// and the subscription (as in HA, where no `await` separates the two).
/// Returns `None`: nothing is left to reply.
fn subscribe_entities(id: u64, msg: &Value, conn: &Conn, shared: &Shared) -> Option<String> {
    let only = match msg.get("entity_ids") {
        None => None,
        Some(Value::Array(ids)) => {
            let mut wanted = Vec::with_capacity(ids.len());
            for entity in ids {
                match entity.as_str().map(EntityId::new) {
                    Some(Ok(entity)) => wanted.push(entity),
                    _ => {
                        return Some(
                            ServerReply::failure(id, ERR_INVALID_FORMAT, MSG_INVALID_FORMAT)
                                .to_json(),
                        );
                    }
                }
            }
            Some(wanted)
        }
        Some(_) => {
            return Some(
                ServerReply::failure(id, ERR_INVALID_FORMAT, MSG_INVALID_FORMAT).to_json(),
            );
        }
    };
    let world = lock(&shared.world);
    let mut clients = lock(&shared.clients);
    let slot = clients.iter_mut().find(|c| c.conn == conn.id)?;
    let mut added = serde_json::Map::new();
    for state in world.current_states() {
        if only
            .as_ref()
            .is_none_or(|ids| ids.contains(&state.entity_id))
        {
            added.insert(
                state.entity_id.to_string(),
                entities::compressed_state(&state),
            );
        }
    }
    let result = ServerReply::success(id, Value::Null).to_json();
    // HA writes this first event by hand with the id first.
    let initial = format!(
        r#"{{"id":{id},"type":"event","event":{}}}"#,
        json!({ "a": added })
    );
    let _ = slot.tx.send(Outgoing::Raw(Message::text(result)));
    let _ = slot.tx.send(Outgoing::Raw(Message::text(initial)));
    slot.entity_subs.push((id, only));
    drop(clients);
    drop(world);
    shared.subscribed.notify_one();
    None
}

/// A plausible subset of HA's `Config.as_dict()`.
fn config_result(version: &str) -> Value {
    json!({
        "allowlist_external_dirs": ["/config/www", "/media"],
        "allowlist_external_urls": [],
        "components": ["api", "automation", "climate", "http", "light", "person", "recorder", "sensor", "websocket_api"],
        "config_dir": "/config",
        "config_source": "storage",
        "country": "NL",
        "currency": "EUR",
        "debug": false,
        "elevation": 2,
        "external_url": null,
        "internal_url": null,
        "language": "en",
        "latitude": 52.3731,
        "location_name": "Simulated Home",
        "longitude": 4.8922,
        "radius": 100,
        "recovery_mode": false,
        "safe_mode": false,
        "state": "RUNNING",
        "time_zone": "Europe/Amsterdam",
        "unit_system": {
            "length": "km", "accumulated_precipitation": "mm", "area": "m²", "mass": "g",
            "pressure": "Pa", "temperature": "°C", "volume": "L", "wind_speed": "m/s"
        },
        "version": version,
        "whitelist_external_dirs": ["/config/www", "/media"]
    })
}

/// Emits events at the configured rate while at least one client is subscribed.
pub(super) async fn generate(shared: Arc<Shared>) {
    let rate = if shared.cfg.rate.is_finite() && shared.cfg.rate > 0.0 {
        shared.cfg.rate
    } else {
        return;
    };
    let tick = Duration::from_secs_f64((1.0 / rate).clamp(0.001, 0.05));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut generated: u64 = 0;
    // (when the current active period began, events generated before it)
    let mut base: Option<(tokio::time::Instant, u64)> = None;
    let burst_every = shared
        .cfg
        .burst_every
        .filter(|d| !d.is_zero() && shared.cfg.burst_size > 0);
    // The first burst after a seed-chosen share of the period (golden-ratio spread).
    let mut next_burst = burst_every.map(|every| {
        let share = (shared.cfg.seed as f64 * 0.618_033_988_75).fract();
        tokio::time::Instant::now() + every.mul_f64(share)
    });
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if shared.finished.load(Ordering::Acquire) {
            return;
        }
        let any_subscribed = lock(&shared.clients)
            .iter()
            .any(|c| !c.subs.is_empty() || !c.entity_subs.is_empty());
        if !any_subscribed && !shared.unattended.load(Ordering::Acquire) {
            base = None;
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                _ = shared.subscribed.notified() => {}
            }
            continue;
        }
        let (t0, g0) = *base.get_or_insert((tokio::time::Instant::now(), generated));
        let target = g0 + (t0.elapsed().as_secs_f64() * rate) as u64;
        let due = target.saturating_sub(generated).min(MAX_BURST);
        if due > 0 {
            generated += due;
            emit_batch(&shared, due);
        }
        if let (Some(every), Some(at)) = (burst_every, next_burst.as_mut())
            && tokio::time::Instant::now() >= *at
        {
            *at += every;
            // On top of the rate: `generated` (the paced count) is not moved.
            emit_batch(&shared, shared.cfg.burst_size.min(MAX_BURST));
        }
    }
}

/// Generates `due` events and queues each to every matching subscription.
fn emit_batch(shared: &Shared, due: u64) {
    let mut world = lock(&shared.world);
    // Checked again under the world lock, which `stop_generating` takes after
    // setting the flag: no change is made once it has returned.
    if shared.finished.load(Ordering::Acquire) {
        return;
    }
    let mut clients = lock(&shared.clients);
    let mut per_client: Vec<Vec<(u64, Arc<str>)>> = vec![Vec::new(); clients.len()];
    let mut sent = Vec::new();
    for _ in 0..due {
        if let Some(max) = shared.cfg.max_events
            && shared.emitted_count.load(Ordering::Acquire) + sent.len() as u64 >= max
        {
            break;
        }
        let event = world.next_event(Timestamp::now());
        if let Some(new) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) {
            // Recorded while the world is locked, so a history answer never has a
            // change that is not yet queued to the connected clients.
            lock(&shared.recorder).record(new.clone());
        }
        let mut bodies = Bodies::default();
        for (slot, queue) in clients.iter().zip(per_client.iter_mut()) {
            queue_for(slot, &event, &mut bodies, queue);
        }
        if bodies.any() {
            sent.push(event);
        }
    }
    let mut keep = Vec::with_capacity(clients.len());
    for (slot, queue) in clients.iter().zip(per_client) {
        let behind = slot.pending.load(Ordering::Acquire) + queue.len();
        if behind > MAX_PENDING {
            // As HA: "Client unable to keep up with pending messages", then disconnect.
            tracing::warn!(
                message =
                    "Simulator client unable to keep up with pending messages; disconnecting it.",
                pending = behind
            );
            slot.kill.cancel();
            shared.dropped_over_max.fetch_add(1, Ordering::AcqRel);
            keep.push(false);
            continue;
        }
        if !queue.is_empty() {
            slot.pending.fetch_add(queue.len(), Ordering::AcqRel);
            let _ = slot.tx.send(Outgoing::Events(queue));
            if behind >= PENDING_PEAK {
                arm_peak_check(shared, slot);
            }
        }
        keep.push(!slot.tx.is_closed());
    }
    let mut keep = keep.into_iter();
    clients.retain(|_| keep.next().unwrap_or(false));
    drop(clients);
    drop(world);
    let n = sent.len() as u64;
    let retain = shared.cfg.max_events.map_or(UNBOUNDED_RETAIN, |m| {
        usize::try_from(m).unwrap_or(usize::MAX)
    });
    let mut emitted = lock(&shared.emitted);
    emitted.extend(sent);
    while emitted.len() > retain {
        emitted.pop_front();
    }
    drop(emitted);
    let total = shared.emitted_count.fetch_add(n, Ordering::AcqRel) + n;
    if shared.cfg.max_events.is_some_and(|max| total >= max) {
        shared.finished.store(true, Ordering::Release);
    }
}

/// The frames of one event, made once and shared by every subscription that gets it.
#[derive(Default)]
pub(super) struct Bodies {
    /// The `event` object for `subscribe_events`.
    event: Option<Arc<str>>,
    /// The `a`/`c`/`r` object for `subscribe_entities`.
    entities: Option<Arc<str>>,
}

impl Bodies {
    pub(super) fn any(&self) -> bool {
        self.event.is_some() || self.entities.is_some()
    }
}

/// Queues `event` to every subscription of `slot` that wants it.
pub(super) fn queue_for(
    slot: &ClientSlot,
    event: &Event,
    bodies: &mut Bodies,
    queue: &mut Vec<(u64, Arc<str>)>,
) {
    let event_type = event.event_type();
    for (sub, wanted) in &slot.subs {
        if wanted.as_deref().is_none_or(|w| w == event_type) {
            let body = bodies
                .event
                .get_or_insert_with(|| Arc::from(event_body(event)));
            queue.push((*sub, body.clone()));
        }
    }
    let Some(sc) = event.state_changed() else {
        return;
    };
    for (sub, only) in &slot.entity_subs {
        if only.as_ref().is_none_or(|ids| ids.contains(&sc.entity_id)) {
            let body = bodies
                .entities
                .get_or_insert_with(|| Arc::from(entities_body(sc)));
            queue.push((*sub, body.clone()));
        }
    }
}

/// A state change as `subscribe_entities` sends it: `a` for a new entity, `r` for a removed one, else the `c` diff.
fn entities_body(sc: &StateChanged) -> String {
    let id = sc.entity_id.as_str();
    let old = sc.old_state.as_ref().and_then(LazyState::state);
    let body = match (old, &sc.new_state) {
        (_, None) => json!({ "r": [id] }),
        (None, Some(new)) => json!({ "a": { id: entities::compressed_state(new) } }),
        (Some(old), Some(new)) => json!({ "c": { id: entities::state_diff(old, new) } }),
    };
    body.to_string()
}

/// HA's second slow-client rule: once a client has [`PENDING_PEAK`] messages
/// pending, it is checked again after the peak time and dropped if it is still
/// at or above it. One check at a time per client, as in HA's `_check_write_peak`.
fn arm_peak_check(shared: &Shared, slot: &ClientSlot) {
    if slot.peak_armed.swap(true, Ordering::AcqRel) {
        return;
    }
    let wait = Duration::from_millis(shared.peak_time_ms.load(Ordering::Acquire));
    let armed = slot.peak_armed.clone();
    let pending = slot.pending.clone();
    let kill = slot.kill.clone();
    let shutdown = shared.shutdown.clone();
    let dropped = shared.dropped_over_peak.clone();
    let task = async move {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = kill.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        armed.store(false, Ordering::Release);
        let behind = pending.load(Ordering::Acquire);
        if behind >= PENDING_PEAK {
            tracing::warn!(
                message = "Simulator client stayed over the pending-message peak; disconnecting it.",
                pending = behind,
                peak = PENDING_PEAK,
                waited = ?wait
            );
            dropped.fetch_add(1, Ordering::AcqRel);
            kill.cancel();
        }
    };
    tokio::spawn(task);
}

/// The `event` object of a frame, in HA's key order.
pub(super) fn event_body(event: &Event) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("{\"event_type\":");
    out.push_str(&json_string(event.event_type()));
    out.push_str(",\"data\":");
    let data = match &event.kind {
        EventKind::StateChanged(sc) => serde_json::to_string(sc),
        EventKind::Bus(bus) => serde_json::to_string(&bus.data),
    };
    out.push_str(&data.unwrap_or_else(|_| "{}".to_string()));
    out.push_str(",\"origin\":\"");
    out.push_str(event.origin.as_str());
    out.push_str("\",\"time_fired\":\"");
    out.push_str(&event.time_fired.to_rfc3339());
    out.push_str("\",\"context\":");
    out.push_str(&serde_json::to_string(&event.context).unwrap_or_else(|_| "null".to_string()));
    out.push('}');
    out
}

/// A whole event message, `id` last as current HA writes it.
pub(super) fn event_frame(body: &str, id: u64) -> String {
    format!("{{\"type\":\"event\",\"event\":{body},\"id\":{id}}}")
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}
