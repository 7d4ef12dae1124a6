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
//! as HA's recorder would — committed every `recorder_commit_interval`, without
//! the entities it excludes and the attributes HA declares unrecorded — and
//! `history/history_during_period` is answered from what was committed, in HA's
//! compressed shape.
//!
//! The parts: this module holds the configuration and the [`Simulator`] /
//! [`SimulatorHandle`] API; `server` serves the WebSocket API (authentication,
//! commands, paced emission, HA's slow-client rules); `generator` is the
//! catalogue of a home's entities and how their states change (shared with
//! `schema bench`'s month of history); `history` is the record of every change
//! and the `history/history_during_period` answer made from it.

mod generator;
mod history;
mod server;

pub(crate) use generator::home_history;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::event::{BusEvent, Event, EventKind, LazyState, Origin, State, StateChanged, Timestamp};
use crate::source::homeassistant::protocol;
use generator::Generator;
use history::Recorder;
use server::{
    Bodies, ClientSlot, Outgoing, PENDING_PEAK_TIME, accept_loop, event_body, event_frame,
    generate, queue_for,
};

/// Events kept for [`SimulatorHandle::emitted`] when `max_events` does not bound them, and state changes kept by the recorder.
const UNBOUNDED_RETAIN: usize = 100_000;

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
    /// How often the recorder commits (HA's `commit_interval`, 5 s by default): history
    /// answers only hold changes committed by then; zero commits every change at once.
    pub recorder_commit_interval: Duration,
    /// Entities the recorder excludes (HA's `recorder: exclude:`): they change and are
    /// sent live, but history has nothing of them.
    pub recorder_exclude: Vec<String>,
    /// Whether the recorder drops the attributes HA's entity classes declare unrecorded
    /// (`_unrecorded_attributes`), as HA does; see `generator::unrecorded_attributes`.
    pub unrecorded_attributes: bool,
    /// Bursts on top of `rate`: every this long, `burst_size` changes at once (a scene,
    /// a power cut's sensors); the first after a share of the period set by the seed, so
    /// homes with different seeds do not burst together. `None`: a steady rate.
    pub burst_every: Option<Duration>,
    /// Changes per burst (with `burst_every`).
    pub burst_size: u64,
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
            recorder_commit_interval: Duration::from_secs(5),
            recorder_exclude: Vec::new(),
            unrecorded_attributes: true,
            burst_every: None,
            burst_size: 0,
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
            recorder: Mutex::new(Recorder::new(&cfg)),
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

    /// Drops only the newest connection (the others stay): one client goes away while another keeps streaming.
    /// False when nobody is connected.
    pub fn disconnect_latest(&self) -> bool {
        match lock(&self.shared.clients).pop() {
            Some(client) => {
                let _ = client.tx.send(Outgoing::Drop);
                true
            }
            None => false,
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
    ///
    /// Returns once no batch is being made: a batch checks the flag with the
    /// world locked, so after this call no further change is recorded or sent
    /// and [`SimulatorHandle::state_changes`] is the final record.
    pub fn stop_generating(&self) {
        self.shared.finished.store(true, Ordering::Release);
        drop(lock(&self.shared.world));
    }

    /// Every new state the generator made, sent to a client or not, oldest first (the latest 100 000),
    /// whole: with the attributes and entities the recorder does not keep.
    pub fn state_changes(&self) -> Vec<State> {
        lock(&self.shared.recorder).made().cloned().collect()
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
    recorder: Mutex<Recorder>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SourceId;
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
}
