//! A protocol-faithful fake Home Assistant, for `demo`, tests and benchmarks.
//!
//! It serves HA's WebSocket API on `/api/websocket` (any path is accepted):
//! `auth_required` → `auth` → `auth_ok`/`auth_invalid`, then the commands the
//! ingestor uses (`supported_features`, `subscribe_events`, `subscribe_entities`
//! with its compressed `a`/`c`/`r` stream, `unsubscribe_events`,
//! `get_states`, `get_config`, `ping`, `history/history_during_period`) with
//! HA's error codes (`id_reuse`, `unknown_command`, `not_found`,
//! `invalid_format`, `invalid_start_time`, …). A generator changes the
//! states of N entities at R events/s with deterministic content for a seed;
//! the values include everything that breaks naive encoders.
//!
//! Frames look like current HA's: `{"type":"event","event":{…},"id":N}` with the
//! id last, `last_reported` in states, and JSON arrays of up to 256 messages
//! once a connection has asked for `coalesce_messages`.
//!
//! A client that falls behind is dropped by both of HA's rules: more than
//! 4096 pending messages, or still 1024 or more after 10 s (settable with
//! [`SimulatorHandle::set_pending_peak_time`]).
//!
//! Test controls on [`SimulatorHandle`]: drop every connection, inject raw
//! frames, stop answering `ping` ([`SimulatorHandle::set_answer_pings`]) and
//! restart as HA does ([`SimulatorHandle::restart`]: `homeassistant_stop`, then close),
//! refuse connections for a while, keep changing states while nobody is
//! connected, and stop generating. Every change made is kept (the latest 100 000)
//! as HA's recorder would, and `history/history_during_period` is answered from
//! that record in HA's compressed shape.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::event::{
    Attributes, BusEvent, Context, EntityId, Event, EventKind, LazyState, Origin, SourceId, State,
    StateChanged, Timestamp,
};
use crate::source::homeassistant::entities;
use crate::source::homeassistant::protocol::{
    self, ClientMessage, ERR_HOME_ASSISTANT, ERR_ID_REUSE, ERR_INVALID_FORMAT, ERR_NOT_FOUND,
    ERR_UNKNOWN_COMMAND, MSG_ID_REUSE, MSG_INVALID_AUTH, MSG_INVALID_FORMAT, MSG_UNKNOWN_COMMAND,
    ServerReply,
};

/// HA's limit on how many queued messages are joined into one array frame.
const MAX_COALESCED: usize = 256;
/// How long a client has to send `auth`, as in HA.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Events kept for [`SimulatorHandle::emitted`] when `max_events` does not bound them.
const UNBOUNDED_RETAIN: usize = 100_000;
/// HA's `MAX_PENDING_MSG`: a client this far behind is disconnected.
const MAX_PENDING: usize = 4096;
/// HA's `PENDING_MSG_PEAK`: a client still this far behind [`PENDING_PEAK_TIME`] after passing it is disconnected.
const PENDING_PEAK: usize = 1024;
/// HA's `PENDING_MSG_PEAK_TIME` (tests shorten it with [`SimulatorHandle::set_pending_peak_time`]).
const PENDING_PEAK_TIME: Duration = Duration::from_secs(10);
/// Most events generated in one tick, so a stalled timer cannot cause a huge burst.
const MAX_BURST: u64 = 10_000;

/// What the simulator serves and how fast it changes states.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorConfig {
    /// Number of entities whose states change.
    pub entities: usize,
    /// Events per second, all entities together.
    pub rate: f64,
    /// The access token clients must present.
    pub token: String,
    /// Seed of the content (entity picks, values, context ids).
    pub seed: u64,
    /// Stop after this many events were sent; `None` runs forever.
    pub max_events: Option<u64>,
    /// The version announced in `auth_required`/`auth_ok`.
    pub ha_version: String,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            entities: 50,
            rate: 20.0,
            token: "simulator-token".to_string(),
            seed: 1,
            max_events: None,
            ha_version: "2026.11.0".to_string(),
        }
    }
}

/// Starts simulators; see [`Simulator::start`].
pub struct Simulator;

impl Simulator {
    /// Binds `bind` (use port 0 for a free one) and starts serving and generating.
    pub async fn start(cfg: SimulatorConfig, bind: SocketAddr) -> std::io::Result<SimulatorHandle> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            world: Mutex::new(Generator::new(cfg.entities, cfg.seed)),
            clients: Mutex::new(Vec::new()),
            emitted: Mutex::new(VecDeque::new()),
            emitted_count: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            auth_failures: AtomicU64::new(0),
            auth_attempts: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            subscribed: Notify::new(),
            answer_pings: AtomicBool::new(true),
            pings: AtomicU64::new(0),
            commands: Mutex::new(HashMap::new()),
            unattended: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            history: AtomicBool::new(true),
            recorder: Mutex::new(VecDeque::new()),
            service_commands: Mutex::new(Vec::new()),
            peak_time_ms: AtomicU64::new(PENDING_PEAK_TIME.as_millis() as u64),
            dropped_over_max: AtomicU64::new(0),
            dropped_over_peak: Arc::new(AtomicU64::new(0)),
            shutdown: CancellationToken::new(),
            cfg,
        });
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(listener, shared.clone(), tracker.clone()));
        tracker.spawn(generate(shared.clone()));
        Ok(SimulatorHandle {
            addr,
            shared,
            tracker,
        })
    }
}

/// A running simulator; dropping it stops it too, [`SimulatorHandle::shutdown`] also waits for its tasks.
pub struct SimulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tracker: TaskTracker,
}

impl SimulatorHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://addr/api/websocket`, ready for `HomeAssistantConfig::new`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, protocol::WEBSOCKET_PATH)
    }

    /// Every event sent to at least one subscribed client, in order (source `simulator`).
    ///
    /// "Sent" means queued to the connection's writer: a client disconnected for
    /// falling 4096 messages behind (as HA does) loses what was still queued.
    ///
    /// With `max_events` unset only the latest 100 000 are kept, so a long demo
    /// does not grow without bound; [`SimulatorHandle::emitted_count`] stays exact.
    pub fn emitted(&self) -> Vec<Event> {
        lock(&self.shared.emitted).iter().cloned().collect()
    }

    /// How many events were sent to at least one subscribed client.
    pub fn emitted_count(&self) -> u64 {
        self.shared.emitted_count.load(Ordering::Acquire)
    }

    /// True once `max_events` events were sent.
    pub fn finished(&self) -> bool {
        self.shared.finished.load(Ordering::Acquire)
    }

    /// How many `auth` messages were received (good and bad), to check a client's back-off.
    pub fn auth_attempts(&self) -> u64 {
        self.shared.auth_attempts.load(Ordering::Acquire)
    }

    /// How many authentications were refused.
    pub fn auth_failures(&self) -> u64 {
        self.shared.auth_failures.load(Ordering::Acquire)
    }

    /// How many clients are authenticated right now.
    pub fn clients(&self) -> usize {
        lock(&self.shared.clients).len()
    }

    /// Sends a raw frame to every authenticated client (bad-input tests).
    pub fn inject_raw(&self, msg: Message) {
        for client in lock(&self.shared.clients).iter() {
            let _ = client.tx.send(Outgoing::Raw(msg.clone()));
        }
    }

    /// Drops every connection without a close handshake, after writing what was already queued (reconnect tests).
    pub fn disconnect_all(&self) {
        for client in lock(&self.shared.clients).drain(..) {
            let _ = client.tx.send(Outgoing::Drop);
        }
    }

    /// Whether `ping` is answered with `pong` (default true); false simulates a hung server whose socket stays open.
    pub fn set_answer_pings(&self, answer: bool) {
        self.shared.answer_pings.store(answer, Ordering::Release);
    }

    /// How many `ping` commands were received (answered or not), to see a client's heartbeat.
    pub fn pings(&self) -> u64 {
        self.shared.pings.load(Ordering::Acquire)
    }

    /// How many well-formed commands of type `kind` (`get_states`, `subscribe_events`, …) were received over all connections.
    pub fn commands_received(&self, kind: &str) -> u64 {
        lock(&self.shared.commands).get(kind).copied().unwrap_or(0)
    }

    /// The `call_service` / `fire_event` commands (whole messages) received so far, of type `kind`, in order.
    pub fn service_commands(&self, kind: &str) -> Vec<Value> {
        lock(&self.shared.service_commands)
            .iter()
            .filter(|m| m.get("type").and_then(Value::as_str) == Some(kind))
            .cloned()
            .collect()
    }

    /// Whether states keep changing while no client is subscribed (default false: nothing is generated then).
    ///
    /// Changes made with nobody connected are not in [`SimulatorHandle::emitted`]
    /// (nobody received them) but are in [`SimulatorHandle::state_changes`] and
    /// in the answers to `history/history_during_period`, as in HA.
    pub fn keep_running_while_disconnected(&self, keep: bool) {
        self.shared.unattended.store(keep, Ordering::Release);
        self.shared.subscribed.notify_one();
    }

    /// While true, every new connection is closed before the WebSocket upgrade, as if HA were down.
    pub fn refuse_connections(&self, refuse: bool) {
        self.shared.refusing.store(refuse, Ordering::Release);
    }

    /// Whether `history/history_during_period` is known (default true); false answers `unknown_command`, as an HA without the `history` integration.
    pub fn set_history_available(&self, available: bool) {
        self.shared.history.store(available, Ordering::Release);
    }

    /// How long a client may stay at or above 1024 pending messages before it is dropped (HA: 10 s); shortened by tests.
    pub fn set_pending_peak_time(&self, time: Duration) {
        let ms = u64::try_from(time.as_millis()).unwrap_or(u64::MAX);
        self.shared.peak_time_ms.store(ms, Ordering::Release);
    }

    /// Clients dropped for falling behind, by HA's rule that dropped them.
    pub fn slow_client_drops(&self) -> SlowClientDrops {
        SlowClientDrops {
            over_max: self.shared.dropped_over_max.load(Ordering::Acquire),
            over_peak: self.shared.dropped_over_peak.load(Ordering::Acquire),
        }
    }

    /// Removes an entity as HA does when an integration drops it: `state_changed`
    /// with no new state to event subscribers, `{"r": [id]}` to entity subscribers.
    /// False when no such entity has a state. The generator may add it again later.
    pub fn remove_entity(&self, entity_id: &str) -> bool {
        let mut world = lock(&self.shared.world);
        let Some(index) = world
            .entities
            .iter()
            .position(|e| e.id.as_str() == entity_id && e.current.is_some())
        else {
            return false;
        };
        let ts = world.next_time(Timestamp::now());
        let context = world.context(ts, false);
        let entity = &mut world.entities[index];
        let old = entity.current.take();
        let event = Event {
            meta: Default::default(),
            source: world.source.clone(),
            time_fired: ts,
            origin: Origin::Local,
            context,
            kind: EventKind::StateChanged(Box::new(StateChanged {
                entity_id: world.entities[index].id.clone(),
                old_state: old.map(LazyState::from),
                new_state: None,
            })),
        };
        let clients = lock(&self.shared.clients);
        let mut bodies = Bodies::default();
        for slot in clients.iter() {
            let mut queue = Vec::new();
            queue_for(slot, &event, &mut bodies, &mut queue);
            if !queue.is_empty() {
                slot.pending.fetch_add(queue.len(), Ordering::AcqRel);
                let _ = slot.tx.send(Outgoing::Events(queue));
            }
        }
        drop(clients);
        drop(world);
        if bodies.any() {
            lock(&self.shared.emitted).push_back(event);
            self.shared.emitted_count.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// Stops changing states for good ([`SimulatorHandle::finished`] becomes true).
    pub fn stop_generating(&self) {
        self.shared.finished.store(true, Ordering::Release);
    }

    /// Every new state the generator made, sent to a client or not, oldest first (the latest 100 000).
    pub fn state_changes(&self) -> Vec<State> {
        lock(&self.shared.recorder).iter().cloned().collect()
    }

    /// Does what HA does when it restarts: fires `homeassistant_stop` to every subscription that matches, then closes every connection.
    ///
    /// The event goes out after what was already queued, and is recorded in
    /// [`SimulatorHandle::emitted`] when at least one subscription received it.
    pub fn restart(&self) {
        let event = {
            let mut world = lock(&self.shared.world);
            let ts = world.next_time(Timestamp::now());
            let context = world.context(ts, false);
            Event {
                meta: Default::default(),
                source: world.source.clone(),
                time_fired: ts,
                origin: Origin::Local,
                context,
                kind: EventKind::Bus(BusEvent {
                    event_type: "homeassistant_stop".to_string(),
                    data: serde_json::Map::new(),
                }),
            }
        };
        let body: Arc<str> = Arc::from(event_body(&event));
        let mut sent = false;
        for client in lock(&self.shared.clients).drain(..) {
            let queue: Vec<(u64, Arc<str>)> = client
                .subs
                .iter()
                .filter(|(_, wanted)| wanted.as_deref().is_none_or(|w| w == "homeassistant_stop"))
                .map(|(sub, _)| (*sub, body.clone()))
                .collect();
            if !queue.is_empty() {
                sent = true;
                client.pending.fetch_add(queue.len(), Ordering::AcqRel);
                let _ = client.tx.send(Outgoing::Events(queue));
            }
            let close = CloseFrame {
                code: CloseCode::Away,
                reason: "".into(),
            };
            let _ = client.tx.send(Outgoing::Raw(Message::Close(Some(close))));
            let _ = client.tx.send(Outgoing::Drop);
        }
        if sent {
            lock(&self.shared.emitted).push_back(event);
            self.shared.emitted_count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Stops accepting, generating and serving, and waits for every task.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// How many clients HA's two slow-client rules dropped, so a test can tell which one fired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowClientDrops {
    /// More than 4096 messages pending at once (`MAX_PENDING_MSG`).
    pub over_max: u64,
    /// Still 1024 or more pending when the peak time ran out (`PENDING_MSG_PEAK` / `PENDING_MSG_PEAK_TIME`).
    pub over_peak: u64,
}

/// A realistic recorded-style corpus of event frames (state_changed mostly, some call_service), deterministic for a seed: the built-in input of `ha-ingestor bench pipeline`.
pub fn corpus(entities: usize, events: usize, seed: u64) -> Vec<String> {
    let mut generator = Generator::new(entities, seed);
    // A fixed start (2026-01-01T00:00:00Z) and seeded steps keep the corpus identical across runs.
    let mut now = 1_767_225_600_000_000_000_i64;
    let mut step_rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    (0..events)
        .map(|_| {
            now += step_rng.random_range(1_000..500_000) * 1_000;
            let event = generator.next_event(Timestamp::from_nanos(now));
            event_frame(&event_body(&event), 1)
        })
        .collect()
}

/// A std Mutex: every critical section is a few field updates, never held across an `.await`.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

struct Shared {
    cfg: SimulatorConfig,
    world: Mutex<Generator>,
    clients: Mutex<Vec<ClientSlot>>,
    emitted: Mutex<VecDeque<Event>>,
    emitted_count: AtomicU64,
    finished: AtomicBool,
    auth_failures: AtomicU64,
    auth_attempts: AtomicU64,
    next_conn: AtomicU64,
    subscribed: Notify,
    /// When false, `ping` gets no `pong` (a hung server behind an open socket).
    answer_pings: AtomicBool,
    /// `ping` commands received, answered or not.
    pings: AtomicU64,
    /// Well-formed commands received, by type.
    commands: Mutex<HashMap<String, u64>>,
    /// Keep changing states while no client is subscribed (HA does not wait for us).
    unattended: AtomicBool,
    /// Close every new connection at once (HA down).
    refusing: AtomicBool,
    /// Whether the `history` integration is loaded (else its commands are unknown).
    history: AtomicBool,
    /// Every state change made, sent or not, oldest first: HA's recorder, for the history API.
    recorder: Mutex<VecDeque<State>>,
    /// `call_service` and `fire_event` commands received, whole, in order.
    service_commands: Mutex<Vec<Value>>,
    /// [`PENDING_PEAK_TIME`] in milliseconds, settable so tests stay fast.
    peak_time_ms: AtomicU64,
    /// Clients dropped by the 4096 rule.
    dropped_over_max: AtomicU64,
    /// Clients dropped by the 1024-for-10-s rule.
    dropped_over_peak: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

/// One authenticated connection as the generator sees it.
struct ClientSlot {
    conn: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
    /// (subscription id, event type or all).
    subs: Vec<(u64, Option<String>)>,
    /// `subscribe_entities` subscriptions: (id, only these entities or all).
    entity_subs: Vec<(u64, Option<Vec<EntityId>>)>,
    /// Events queued for this client and not yet written to its socket.
    pending: Arc<AtomicUsize>,
    /// Ends the connection at once, dropping what is queued (a client that fell behind).
    kill: CancellationToken,
    /// A peak check is scheduled (HA's `_peak_checker_unsub`): at most one at a time.
    peak_armed: Arc<AtomicBool>,
}

enum Outgoing {
    /// (subscription id, event JSON) pairs, in order.
    Events(Vec<(u64, Arc<str>)>),
    Raw(Message),
    Drop,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
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

/// Answers `history/history_during_period` from the recorder, in HA's compressed shape.
///
/// Per entity asked for (in the order asked) that has rows: the state in force
/// at `start_time` with its time clamped to `start_time` (when
/// `include_start_time_state`, HA's default), then every change after
/// `start_time` up to `end_time` (default now) as `{"s","a","lu"[,"lc"]}`, `lc`
/// only when it differs from `lu`. The lossy options (`significant_changes_only`,
/// `minimal_response`, `no_attributes`) are not simulated: the answer is always
/// the lossless one.
fn history_during_period(id: u64, msg: &Value, shared: &Shared) -> ServerReply {
    let time = |key: &str| {
        msg.get(key)
            .and_then(Value::as_str)
            .map(Timestamp::parse_rfc3339)
    };
    let start = match time("start_time") {
        Some(Ok(t)) => t,
        _ => return ServerReply::failure(id, "invalid_start_time", "Invalid start_time"),
    };
    let end = match time("end_time") {
        None => Timestamp::from_nanos(i64::MAX),
        Some(Ok(t)) => t,
        Some(Err(_)) => return ServerReply::failure(id, "invalid_end_time", "Invalid end_time"),
    };
    let Some(ids) = msg.get("entity_ids").and_then(Value::as_array) else {
        return ServerReply::failure(id, ERR_INVALID_FORMAT, MSG_INVALID_FORMAT);
    };
    let mut wanted = Vec::with_capacity(ids.len());
    for entity in ids {
        match entity.as_str().map(EntityId::new) {
            Some(Ok(entity)) => wanted.push(entity),
            _ => return ServerReply::failure(id, "invalid_entity_ids", "Invalid entity_ids"),
        }
    }
    let include_start = msg
        .get("include_start_time_state")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let seconds = |t: Timestamp| (t.as_nanos() / 1_000) as f64 / 1e6;
    let row = |s: &State, lu: Timestamp, lc: Timestamp| {
        let mut row = serde_json::Map::new();
        row.insert("s".into(), json!(s.state));
        row.insert(
            "a".into(),
            serde_json::to_value(&s.attributes).unwrap_or(Value::Null),
        );
        row.insert("lu".into(), json!(seconds(lu)));
        if lc != lu {
            row.insert("lc".into(), json!(seconds(lc)));
        }
        Value::Object(row)
    };
    // The world lock first (as `emit_batch` takes it): every recorded change is then already queued to the clients.
    let _world = lock(&shared.world);
    let recorder = lock(&shared.recorder);
    let mut result = serde_json::Map::new();
    for entity in wanted {
        let mut rows = Vec::new();
        let mut at_start: Option<&State> = None;
        for state in recorder.iter().filter(|s| s.entity_id == entity) {
            if state.last_updated <= start {
                at_start = Some(state);
            } else if state.last_updated <= end {
                rows.push(row(state, state.last_updated, state.last_changed));
            }
        }
        if include_start && let Some(state) = at_start {
            rows.insert(0, row(state, start, start));
        }
        if !rows.is_empty() {
            result.insert(entity.to_string(), Value::Array(rows));
        }
    }
    ServerReply::success(id, Value::Object(result))
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
async fn generate(shared: Arc<Shared>) {
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
    }
}

/// Generates `due` events and queues each to every matching subscription.
fn emit_batch(shared: &Shared, due: u64) {
    let mut world = lock(&shared.world);
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
            let mut recorder = lock(&shared.recorder);
            recorder.push_back(new.clone());
            if recorder.len() > UNBOUNDED_RETAIN {
                recorder.pop_front();
            }
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
struct Bodies {
    /// The `event` object for `subscribe_events`.
    event: Option<Arc<str>>,
    /// The `a`/`c`/`r` object for `subscribe_entities`.
    entities: Option<Arc<str>>,
}

impl Bodies {
    fn any(&self) -> bool {
        self.event.is_some() || self.entities.is_some()
    }
}

/// Queues `event` to every subscription of `slot` that wants it.
fn queue_for(
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
fn event_body(event: &Event) -> String {
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
fn event_frame(body: &str, id: u64) -> String {
    format!("{{\"type\":\"event\",\"event\":{body},\"id\":{id}}}")
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The kinds of entity the generator knows, each with HA's attributes.
#[derive(Clone, Copy)]
enum Kind {
    Temperature,
    Humidity,
    Power,
    Energy,
    Motion,
    Light,
    Climate,
    Switch,
    Person,
    Tracker,
    InputSelect,
    MediaPlayer,
    Hard,
    Voltage,
}

const KINDS: [Kind; 14] = [
    Kind::Temperature,
    Kind::Humidity,
    Kind::Power,
    Kind::Energy,
    Kind::Motion,
    Kind::Light,
    Kind::Climate,
    Kind::Switch,
    Kind::Person,
    Kind::Tracker,
    Kind::InputSelect,
    Kind::MediaPlayer,
    Kind::Hard,
    Kind::Voltage,
];

const ROOMS: [&str; 8] = [
    "kitchen",
    "living_room",
    "bedroom",
    "bathroom",
    "office",
    "garage",
    "hallway",
    "garden",
];

const SELECT_OPTIONS: [&str; 6] = [
    "Morning, early",
    "away=true",
    "Quote \"q\"",
    "Ünïcödé ☀ 日本",
    "back\\slash",
    "two words",
];

const HARD_STATES: [&str; 9] = [
    "12.5 °C",
    "-5.5 °C",
    "unknown",
    "unavailable",
    "",
    "a,b=c d",
    "with space",
    "line1\nline2",
    "42",
];

struct Entity {
    id: EntityId,
    kind: Kind,
    name: String,
    level: f64,
    current: Option<State>,
}

/// Deterministic state changes for a set of entities.
struct Generator {
    rng: StdRng,
    entities: Vec<Entity>,
    last_ts: i64,
    source: SourceId,
}

impl Generator {
    fn new(count: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let entities = (0..count.max(1))
            .map(|i| {
                let kind = KINDS[i % KINDS.len()];
                let room = ROOMS[(i / KINDS.len()) % ROOMS.len()];
                let (domain, suffix) = match kind {
                    Kind::Temperature => ("sensor", "temperature"),
                    Kind::Humidity => ("sensor", "humidity"),
                    Kind::Power => ("sensor", "power"),
                    Kind::Energy => ("sensor", "energy"),
                    Kind::Motion => ("binary_sensor", "motion"),
                    Kind::Light => ("light", "ceiling"),
                    Kind::Climate => ("climate", "thermostat"),
                    Kind::Switch => ("switch", "plug"),
                    Kind::Person => ("person", "resident"),
                    Kind::Tracker => ("device_tracker", "phone"),
                    Kind::InputSelect => ("input_select", "mode"),
                    Kind::MediaPlayer => ("media_player", "speaker"),
                    Kind::Hard => ("sensor", "odd_values"),
                    Kind::Voltage => ("sensor", "voltage"),
                };
                let object_id = format!("{room}_{suffix}_{i}");
                let name = title(&object_id);
                let id = EntityId::new(&format!("{domain}.{object_id}"))
                    .unwrap_or_else(|_| unreachable_entity());
                let level = match kind {
                    Kind::Temperature => rng.random_range(17.0..24.0),
                    Kind::Humidity => rng.random_range(35.0..65.0),
                    Kind::Power => rng.random_range(5.0..500.0),
                    Kind::Energy => rng.random_range(100.0..5000.0),
                    Kind::Voltage => rng.random_range(225.0..235.0),
                    _ => 0.0,
                };
                Entity {
                    id,
                    kind,
                    name,
                    level,
                    current: None,
                }
            })
            .collect();
        Generator {
            rng,
            entities,
            last_ts: 0,
            source: SourceId::from("simulator"),
        }
    }

    /// Current states of every entity that has one (`get_states`).
    fn current_states(&self) -> Vec<State> {
        self.entities
            .iter()
            .filter_map(|e| e.current.clone())
            .collect()
    }

    /// `now` in whole microseconds, moved forward a microsecond if needed, so times strictly increase.
    fn next_time(&mut self, now: Timestamp) -> Timestamp {
        let micros = now.as_nanos() / 1_000;
        let micros = micros.max(self.last_ts + 1);
        self.last_ts = micros;
        Timestamp::from_nanos(micros * 1_000)
    }

    /// The next event at `now` (see [`Generator::next_time`]).
    fn next_event(&mut self, now: Timestamp) -> Event {
        let ts = self.next_time(now);
        if self.rng.random_range(0..20) == 0 {
            self.call_service(ts)
        } else {
            let index = self.rng.random_range(0..self.entities.len());
            self.change_state(index, ts)
        }
    }

    fn context(&mut self, ts: Timestamp, user: bool) -> Context {
        Context {
            id: Some(ulid(ts, &mut self.rng).into()),
            parent_id: None,
            user_id: user.then(|| "2863ffcc95c5495785bb107450175b9a".into()),
        }
    }

    fn call_service(&mut self, ts: Timestamp) -> Event {
        let lights: Vec<usize> = (0..self.entities.len())
            .filter(|i| matches!(self.entities[*i].kind, Kind::Light | Kind::Switch))
            .collect();
        let target = if lights.is_empty() {
            0
        } else {
            lights[self.rng.random_range(0..lights.len())]
        };
        let entity = &self.entities[target];
        let domain = entity.id.domain().to_string();
        let entity_id = entity.id.as_str().to_string();
        let on = self.rng.random_bool(0.5);
        let mut service_data = serde_json::Map::new();
        service_data.insert("entity_id".into(), json!([entity_id]));
        if on && domain == "light" {
            service_data.insert("brightness".into(), json!(self.rng.random_range(1..=255)));
        }
        let mut data = serde_json::Map::new();
        data.insert("domain".into(), json!(domain));
        data.insert(
            "service".into(),
            json!(if on { "turn_on" } else { "turn_off" }),
        );
        data.insert("service_data".into(), Value::Object(service_data));
        let context = self.context(ts, true);
        Event {
            meta: Default::default(),
            source: self.source.clone(),
            time_fired: ts,
            origin: Origin::Local,
            context,
            kind: EventKind::Bus(BusEvent {
                event_type: "call_service".to_string(),
                data,
            }),
        }
    }

    fn change_state(&mut self, index: usize, ts: Timestamp) -> Event {
        let mut tries = 0;
        let (state, attributes) = loop {
            let candidate = self.values(index);
            let same = self.entities[index]
                .current
                .as_ref()
                .is_some_and(|c| c.state == candidate.0 && c.attributes == candidate.1);
            tries += 1;
            if !same || tries >= 4 {
                break candidate;
            }
        };
        let user = matches!(
            self.entities[index].kind,
            Kind::Light | Kind::Switch | Kind::Climate
        ) && self.rng.random_bool(0.3);
        let context = self.context(ts, user);
        let entity = &mut self.entities[index];
        let old = entity.current.take();
        let last_changed = match &old {
            Some(o) if o.state == state => o.last_changed,
            _ => ts,
        };
        let new = State {
            entity_id: entity.id.clone(),
            state,
            attributes,
            last_changed,
            last_reported: Some(ts),
            last_updated: ts,
            context: Some(context.clone()),
        };
        entity.current = Some(new.clone());
        Event {
            meta: Default::default(),
            source: self.source.clone(),
            time_fired: ts,
            origin: Origin::Local,
            context,
            kind: EventKind::StateChanged(Box::new(StateChanged {
                entity_id: entity.id.clone(),
                old_state: old.map(LazyState::from),
                new_state: Some(new),
            })),
        }
    }

    /// A new (state, attributes) for entity `index`.
    fn values(&mut self, index: usize) -> (String, Attributes) {
        let rng = &mut self.rng;
        let entity = &mut self.entities[index];
        let name = entity.name.clone();
        let mut a = Attributes::new();
        let previous_on = entity.current.as_ref().map(|c| c.state == "on");
        let state = match entity.kind {
            Kind::Temperature | Kind::Humidity | Kind::Power | Kind::Voltage => {
                let (unit, class, step, digits) = match entity.kind {
                    Kind::Temperature => ("°C", "temperature", 0.3, 1),
                    Kind::Humidity => ("%", "humidity", 2.0, 0),
                    Kind::Power => ("W", "power", 40.0, 2),
                    _ => ("V", "voltage", 1.5, 1),
                };
                entity.level += rng.random_range(-step..step);
                a.insert("state_class".into(), json!("measurement"));
                a.insert("unit_of_measurement".into(), json!(unit));
                a.insert("device_class".into(), json!(class));
                a.insert("friendly_name".into(), json!(name));
                if matches!(entity.kind, Kind::Voltage) && rng.random_range(0..20) == 0 {
                    "unavailable".to_string()
                } else {
                    format!("{:.*}", digits, entity.level.max(0.0))
                }
            }
            Kind::Energy => {
                entity.level += rng.random_range(0.001..0.5);
                a.insert("state_class".into(), json!("total_increasing"));
                a.insert("unit_of_measurement".into(), json!("kWh"));
                a.insert("device_class".into(), json!("energy"));
                a.insert("friendly_name".into(), json!(name));
                format!("{:.3}", entity.level)
            }
            Kind::Motion => {
                a.insert("device_class".into(), json!("motion"));
                a.insert("friendly_name".into(), json!(name));
                on_off(previous_on)
            }
            Kind::Switch => {
                a.insert("friendly_name".into(), json!(name));
                on_off(previous_on)
            }
            Kind::Light => {
                let state = on_off(previous_on);
                let on = state == "on";
                a.insert("supported_color_modes".into(), json!(["hs", "xy"]));
                if on {
                    let (r, g, b) = (
                        rng.random_range(0..=255),
                        rng.random_range(0..=255),
                        rng.random_range(0..=255),
                    );
                    a.insert("color_mode".into(), json!("xy"));
                    a.insert("brightness".into(), json!(rng.random_range(1..=255)));
                    a.insert(
                        "hs_color".into(),
                        json!([
                            round2(rng.random_range(0.0..360.0)),
                            round2(rng.random_range(0.0..100.0))
                        ]),
                    );
                    a.insert("rgb_color".into(), json!([r, g, b]));
                    a.insert(
                        "xy_color".into(),
                        json!([
                            round3(rng.random_range(0.0..0.8)),
                            round3(rng.random_range(0.0..0.8))
                        ]),
                    );
                } else {
                    a.insert("color_mode".into(), Value::Null);
                    a.insert("brightness".into(), Value::Null);
                }
                a.insert("friendly_name".into(), json!(name));
                a.insert("supported_features".into(), json!(40));
                state
            }
            Kind::Climate => {
                let modes = ["heat", "cool", "off"];
                let state = modes[rng.random_range(0..modes.len())].to_string();
                a.insert("hvac_modes".into(), json!(["off", "heat", "cool", "auto"]));
                a.insert("min_temp".into(), json!(7.0));
                a.insert("max_temp".into(), json!(35.0));
                a.insert(
                    "current_temperature".into(),
                    json!(round1(rng.random_range(16.0..26.0))),
                );
                a.insert(
                    "temperature".into(),
                    if state == "off" {
                        Value::Null
                    } else {
                        json!(round1(rng.random_range(18.0..23.0)))
                    },
                );
                a.insert("friendly_name".into(), json!(name));
                a.insert("supported_features".into(), json!(385));
                state
            }
            Kind::Person | Kind::Tracker => {
                let home = rng.random_bool(0.6);
                let (lat, lon) = if home {
                    (52.3731, 4.8922)
                } else {
                    (
                        round6(rng.random_range(51.0..53.5)),
                        round6(rng.random_range(3.5..7.0)),
                    )
                };
                if matches!(entity.kind, Kind::Person) {
                    a.insert("editable".into(), json!(true));
                    a.insert("id".into(), json!(entity.id.object_id()));
                    a.insert("latitude".into(), json!(lat));
                    a.insert("longitude".into(), json!(lon));
                    a.insert("gps_accuracy".into(), json!(rng.random_range(3..60)));
                    a.insert(
                        "source".into(),
                        json!(format!("device_tracker.{}_phone", entity.id.object_id())),
                    );
                    a.insert("user_id".into(), json!("2863ffcc95c5495785bb107450175b9a"));
                } else {
                    a.insert("source_type".into(), json!("gps"));
                    a.insert("battery_level".into(), json!(rng.random_range(5..=100)));
                    a.insert("latitude".into(), json!(lat));
                    a.insert("longitude".into(), json!(lon));
                    a.insert("gps_accuracy".into(), json!(rng.random_range(3..60)));
                    a.insert(
                        "altitude".into(),
                        json!(round1(rng.random_range(-5.0..40.0))),
                    );
                }
                a.insert("friendly_name".into(), json!(name));
                if home { "home" } else { "not_home" }.to_string()
            }
            Kind::InputSelect => {
                a.insert("options".into(), json!(SELECT_OPTIONS));
                a.insert("editable".into(), json!(true));
                a.insert(
                    "friendly_name".into(),
                    json!(format!("{name}, \"mode\" = a\\b")),
                );
                SELECT_OPTIONS[rng.random_range(0..SELECT_OPTIONS.len())].to_string()
            }
            Kind::MediaPlayer => {
                let states = ["playing", "paused", "idle", "off"];
                let state = states[rng.random_range(0..states.len())].to_string();
                a.insert(
                    "volume_level".into(),
                    json!(round2(rng.random_range(0.0..1.0))),
                );
                a.insert("is_volume_muted".into(), json!(false));
                a.insert(
                    "media_title".into(),
                    json!(format!("Träck {} — «live» 🎵", rng.random_range(1..100))),
                );
                a.insert(
                    "media_artist".into(),
                    json!("Artist, with commas = and \"quotes\""),
                );
                if rng.random_range(0..4) == 0 {
                    let line = "A long description with spaces, commas, = signs and ünïcödé. ";
                    a.insert("media_description".into(), json!(line.repeat(20)));
                }
                a.insert(
                    "extra".into(),
                    json!({"queue": [{"title": "One", "len": 180}, {"title": "Two\nlines", "len": 200.5}], "source": {"name": "radio", "tags": ["a", "b"]}}),
                );
                a.insert("friendly_name".into(), json!(name));
                a.insert("supported_features".into(), json!(152_463));
                state
            }
            Kind::Hard => {
                a.insert("unit_of_measurement".into(), json!("a,b=c d"));
                a.insert(
                    "friendly_name".into(),
                    json!(format!("Odd \"values\", with commas=equals \\ {name}")),
                );
                a.insert("note".into(), json!("multi\nline\ttext with ünïcödé ☃"));
                a.insert(
                    "nested".into(),
                    json!({"list": [1, 2.5, "three", null, {"k": "v"}], "flag": true}),
                );
                HARD_STATES[rng.random_range(0..HARD_STATES.len())].to_string()
            }
        };
        (state, a)
    }
}

fn on_off(previous_on: Option<bool>) -> String {
    if previous_on == Some(true) {
        "off"
    } else {
        "on"
    }
    .to_string()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// `kitchen_temperature_3` → `Kitchen Temperature 3`.
fn title(object_id: &str) -> String {
    object_id
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => first.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Entity ids built above always contain a dot with text on both sides.
fn unreachable_entity() -> EntityId {
    match EntityId::new("sensor.simulated") {
        Ok(id) => id,
        Err(_) => unreachable!("a literal valid entity id"),
    }
}

/// A 26-character ULID-like id: 48 bits of milliseconds, 80 random bits, Crockford base32.
fn ulid(ts: Timestamp, rng: &mut StdRng) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = (ts.as_nanos() / 1_000_000).max(0) as u128 & ((1 << 48) - 1);
    let random: u128 = rng.random::<u128>() & ((1 << 80) - 1);
    let value = (millis << 80) | random;
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::homeassistant::decode::{ServerMessage, decode_frame};

    #[test]
    fn corpus_is_deterministic_and_decodes() {
        let a = corpus(30, 400, 7);
        assert_eq!(a, corpus(30, 400, 7));
        assert_ne!(a, corpus(30, 400, 8));
        let source = SourceId::from("t");
        let mut out = Vec::new();
        for frame in &a {
            decode_frame(frame, &source, &mut out);
        }
        let events: Vec<Event> = out
            .into_iter()
            .map(|r| match r {
                Ok(ServerMessage::Event { event, .. }) => event,
                other => panic!("{other:?}"),
            })
            .collect();
        let calls = events
            .iter()
            .filter(|e| e.event_type() == "call_service")
            .count();
        assert!(calls > 5 && calls < 60, "{calls} call_service events");
        let mut last = Timestamp::default();
        let mut seen_first = std::collections::HashSet::new();
        for e in &events {
            assert!(e.time_fired > last, "times strictly increase");
            last = e.time_fired;
            if let Some(sc) = e.state_changed() {
                let new = sc.new_state.as_ref().unwrap();
                assert_eq!(new.last_updated, e.time_fired);
                assert_eq!(new.last_reported, Some(e.time_fired));
                assert_eq!(new.context.as_ref().unwrap().id.as_ref().unwrap().len(), 26);
                match &sc.old_state {
                    None => assert!(
                        seen_first.insert(sc.entity_id.clone()),
                        "old_state null only first"
                    ),
                    Some(old) => {
                        let old = old.get().unwrap();
                        assert!(seen_first.contains(&sc.entity_id));
                        if old.state == new.state {
                            assert_eq!(old.last_changed, new.last_changed);
                        } else {
                            assert_eq!(new.last_changed, new.last_updated);
                        }
                    }
                }
            }
        }
        assert_eq!(seen_first.len(), 30, "every entity changed at least once");
    }

    #[test]
    fn frames_put_the_id_last() {
        let frame = &corpus(3, 1, 1)[0];
        assert!(
            frame.starts_with("{\"type\":\"event\",\"event\":{\"event_type\":"),
            "{frame}"
        );
        assert!(frame.ends_with(",\"id\":1}"), "{frame}");
    }

    #[test]
    fn ulids_are_26_crockford_chars() {
        let mut rng = StdRng::seed_from_u64(1);
        let id = ulid(Timestamp::from_nanos(1_795_725_887_219_127_000), &mut rng);
        assert_eq!(id.len(), 26);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert!(!id.contains(['I', 'L', 'O', 'U']));
    }
}
