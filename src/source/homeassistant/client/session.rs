//! One connection to Home Assistant, from subscribing to its end: the [`Session`].
//!
//! A `Session` owns what lives as long as one connection: the socket, the
//! command ids and the results still awaited, the outstanding ping, the
//! subscriptions (the `subscribe_entities` cache, the private
//! `homeassistant_stop` watch), the gap being backfilled and the states already
//! delivered. [`Session::run`] subscribes, then waits on the socket (first:
//! frames already received are read before a deadline is judged), the setup
//! and pong deadlines, the ping interval and the command queue, and hands each
//! wake-up to the method named for it: `on_frame` (measure, decode, then per
//! message `on_event`, `on_entities`, `on_result`, `on_pong`), `on_tick` (a
//! ping) and `send_command`. The `hand_on_*` methods send events to the
//! pipeline: live, snapshot, the first entities state, backfill.
//!
//! What outlives a connection stays with the supervisor in `client.rs` (the
//! back-off, the metric handles, the resume cursor); a session tells it how it
//! went through its [`SessionReport`], which survives the session being cancelled.

use std::collections::HashSet;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::{self, Message};

use super::connect::{self, Ws, close_reason, describe};
use super::gap::{Gap, Step, UnrecordedAttributes};
use super::rhythm::{READ_LOW_WATER, ReadRhythm, set_low_water};
use super::{ClientError, HOMEASSISTANT_STOP, Meters};
use crate::config::{HaSubscription, HomeAssistantConfig};
use crate::dead_letter::DeadLetter;
use crate::event::{EntityId, Event, SourceId, State, StateChanged, Timestamp};
use crate::feedback::commands::Command;
use crate::monitor::Stats;
use crate::monitor::metrics::SOURCE_ERRORS;
use crate::source::SourceContext;
use crate::source::homeassistant::cursor::Cursor;
use crate::source::homeassistant::decode::{
    DecodeError, ServerMessage, decode_binary_frame, decode_frame,
};
use crate::source::homeassistant::entities::{EntitiesMessage, StateCache};
use crate::source::homeassistant::history;
use crate::source::homeassistant::protocol::{ClientMessage, ErrorInfo, Features, ServerReply};

/// Most frames read in one wake-up before the other wake-ups get their turn (once
/// streaming, the socket is read by a [`ReadRhythm`]: its tick or a burst).
const READ_DRAIN_MAX: usize = 1024;

/// Largest input kept in one dead letter.
const DEAD_LETTER_INPUT_MAX: usize = 1 << 20;
/// The command that reads a gap from HA's recorder.
const HISTORY: &str = "history/history_during_period";
/// The same command asked as the gap's commit check (see `gap.rs`): its reply is routed apart.
const HISTORY_PROBE: &str = "history/history_during_period (commit check)";

/// Everything a session needs that outlives it.
pub(super) struct Link<'a> {
    pub(super) cfg: &'a HomeAssistantConfig,
    pub(super) url: &'a str,
    pub(super) token: &'a str,
    pub(super) connector: &'a Connector,
    pub(super) source: &'a SourceId,
    pub(super) ctx: &'a SourceContext,
    pub(super) cursor: &'a Cursor,
}

/// What a session does besides streaming, decided by the supervisor across sessions.
pub(super) struct Plan {
    /// Read `get_states` once subscribed and hand every state on.
    pub(super) snapshot: bool,
    /// Fill the gap since this time from HA's history once subscribed.
    pub(super) backfill_from: Option<Timestamp>,
    /// The previous connection ended with a restart of HA: its gap is expected, not a warning.
    pub(super) after_restart: bool,
}

/// What a session leaves behind for the reconnect logic, even when it was cancelled.
#[derive(Default)]
pub(super) struct SessionReport {
    /// When every subscription result had arrived.
    pub(super) subscribed_at: Option<Instant>,
    /// `homeassistant_stop` was received: HA is shutting down or restarting.
    pub(super) ha_stopping: bool,
    /// Every state of the initial snapshot was handed on.
    pub(super) snapshot_done: bool,
}

/// One connection: returns `Ok(())` only when the pipeline channel closed.
pub(super) async fn run(
    link: &Link<'_>,
    plan: &Plan,
    meters: &mut Meters,
    memory: &mut UnrecordedAttributes,
    report: &mut SessionReport,
) -> Result<(), ClientError> {
    let mut session = Session::open(link, plan, meters, memory, report).await?;
    session.run().await
}

/// Why a session stops: its connection failed, or the pipeline is gone.
enum End {
    /// The connection failed or was lost; the supervisor reconnects.
    Lost(ClientError),
    /// The pipeline closed its channel: nothing is left to deliver to.
    PipelineClosed,
}

impl From<ClientError> for End {
    fn from(error: ClientError) -> Self {
        End::Lost(error)
    }
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
    /// A command from [`crate::feedback::commands::Commands`] to send.
    Command(Command),
    /// Time to ask the gap's commit check again.
    Probe,
    /// Time to read what the socket holds (see [`ReadRhythm`]).
    ReadTick,
}

/// The running state of one connection.
struct Session<'a> {
    link: &'a Link<'a>,
    plan: &'a Plan,
    meters: &'a mut Meters,
    /// The attributes HA's recorder drops, learned across connections (see `gap.rs`).
    memory: &'a mut UnrecordedAttributes,
    report: &'a mut SessionReport,
    ws: Ws,
    /// The version HA announced in `auth_ok`.
    ha_version: String,
    /// The next command id: ids strictly increase per connection.
    next_id: u64,
    /// Commands whose result is awaited and checked: `(id, command)`.
    pending: Vec<(u64, &'static str)>,
    /// `subscription = "entities"`: `subscribe_entities` instead of `subscribe_events`.
    entities_mode: bool,
    /// The `subscribe_entities` subscription and its cache (a new one per connection:
    /// HA starts every subscription with every current state).
    entities: Option<(u64, StateCache)>,
    /// The first event of the entities stream, every current state, is still to come.
    initial_pending: bool,
    /// The cursor when the connection was made: the first entities event hands on
    /// what is newer, and a removal with no earlier state moves the cursor to it.
    resume_at_start: Option<Timestamp>,
    /// The private `homeassistant_stop` subscription, whose events are noted, never forwarded.
    stop_watch: Option<u64>,
    /// `(ping id, when its pong is overdue)`.
    awaiting_pong: Option<(u64, Instant)>,
    /// The gap being filled from HA's history, until it is.
    gap: Option<Gap>,
    /// The states handed on, while a snapshot or a backfill may repeat one.
    delivered: Option<Delivered>,
    /// The messages of the frame being handled (the buffer is reused).
    decoded: Vec<Result<ServerMessage, DecodeError>>,
    /// Streaming: the socket wakes the session at [`READ_LOW_WATER`] bytes or at a tick.
    coalescing: bool,
    /// The low-water mark is raised (else a tick lowered it to one byte).
    low_water: bool,
    /// Messages decoded since the read rhythm was last told.
    messages_read: u64,
}

impl<'a> Session<'a> {
    /// Connects and authenticates; nothing is subscribed yet.
    async fn open(
        link: &'a Link<'a>,
        plan: &'a Plan,
        meters: &'a mut Meters,
        memory: &'a mut UnrecordedAttributes,
        report: &'a mut SessionReport,
    ) -> Result<Session<'a>, ClientError> {
        let Link {
            cfg,
            url,
            token,
            connector,
            cursor,
            ..
        } = *link;
        let gap = plan
            .backfill_from
            .map(|from| Gap::new(from, plan.after_restart));
        let delivered = (plan.snapshot || gap.is_some()).then(Delivered::default);
        let (ws, ha_version) = connect::open(cfg, url, connector, token).await?;
        let entities_mode = cfg.subscription == HaSubscription::Entities;
        Ok(Session {
            link,
            plan,
            meters,
            memory,
            report,
            ws,
            ha_version,
            next_id: 1,
            pending: Vec::new(),
            entities_mode,
            entities: None,
            // The first `a` of the entities stream holds every current state: handed on
            // as the snapshot (first connection) and, with a cursor, where it is newer
            // than the cursor (changed while disconnected).
            initial_pending: entities_mode,
            resume_at_start: cursor.resume_from(),
            stop_watch: None,
            awaiting_pong: None,
            gap,
            delivered,
            decoded: Vec::new(),
            coalescing: false,
            low_water: false,
            messages_read: 0,
        })
    }

    /// Subscribes, then reads and dispatches until the connection ends (`Err`) or the pipeline closes (`Ok`).
    async fn run(&mut self) -> Result<(), ClientError> {
        let cfg = self.link.cfg;
        self.subscribe().await?;
        let results_deadline = tokio::time::sleep(cfg.connect_timeout);
        tokio::pin!(results_deadline);
        let mut ping_tick =
            tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
        ping_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rhythm = ReadRhythm::new();
        loop {
            // Streaming (subscribed, no gap waiting on replies): read by tick and burst.
            if !self.coalescing && self.report.subscribed_at.is_some() && self.gap.is_none() {
                self.coalescing = set_low_water(&self.ws, READ_LOW_WATER);
                self.low_water = self.coalescing;
            }
            let pong_due = self.awaiting_pong.map(|(_, due)| due);
            let probe_due = self.gap.as_ref().and_then(Gap::probe_due);

            // Biased toward the socket: frames already received (a late pong among
            // them) are read before a deadline is judged.
            let wake = tokio::select! {
                biased;
                frame = self.ws.next() => Wake::Frame(frame),
                _ = rhythm.tick(), if self.coalescing => Wake::ReadTick,
                _ = &mut results_deadline, if self.report.subscribed_at.is_none() => Wake::SetupOverdue,
                _ = tokio::time::sleep_until(pong_due.unwrap_or_else(Instant::now)), if pong_due.is_some() => Wake::PongOverdue,
                _ = ping_tick.tick(), if self.awaiting_pong.is_none() => Wake::Ping,
                command = self.link.ctx.commands.next(self.link.source), if self.report.subscribed_at.is_some() => Wake::Command(command),
                _ = tokio::time::sleep_until(probe_due.unwrap_or_else(Instant::now)), if probe_due.is_some() => Wake::Probe,
            };
            let handled = match wake {
                Wake::Frame(frame) => {
                    let read = self.on_frames(frame).await;
                    rhythm.read(std::mem::take(&mut self.messages_read));
                    if self.coalescing && !self.low_water {
                        self.low_water = set_low_water(&self.ws, READ_LOW_WATER);
                    }
                    read
                }
                Wake::SetupOverdue => Err(End::Lost(ClientError::Timeout(
                    "waiting for subscription results".into(),
                ))),
                Wake::PongOverdue => Err(End::Lost(ClientError::PingTimeout {
                    waited: cfg.pong_timeout,
                })),
                Wake::Ping => self.on_tick().await.map_err(End::from),
                Wake::Command(command) => self.send_command(command).await.map_err(End::from),
                Wake::Probe => self.continue_gap().await,
                Wake::ReadTick => {
                    // tokio reads a socket only once epoll said it is readable, which
                    // the raised mark withholds; lowering it to one byte makes the
                    // kernel signal whatever waits (Linux re-checks on the change).
                    if self.low_water {
                        self.low_water = !set_low_water(&self.ws, 1);
                    }
                    Ok(())
                }
            };
            match handled {
                Ok(()) => {}
                Err(End::PipelineClosed) => return Ok(()),
                Err(End::Lost(error)) => return Err(error),
            }
        }
    }

    /// Announces coalescing and subscribes (to events or to entities, and the private
    /// `homeassistant_stop` watch), all in one write; every result is awaited.
    async fn subscribe(&mut self) -> Result<(), ClientError> {
        let cfg = self.link.cfg;
        let mut commands = vec![ClientMessage::SupportedFeatures {
            id: self.expect_result("supported_features"),
            features: Features {
                coalesce_messages: Some(1),
            },
        }];
        if self.entities_mode {
            let id = self.expect_result("subscribe_entities");
            commands.push(ClientMessage::SubscribeEntities {
                id,
                entity_ids: (!cfg.entity_ids.is_empty()).then(|| cfg.entity_ids.clone()),
            });
            self.entities = Some((id, StateCache::new()));
        } else {
            let types: Vec<Option<String>> = if cfg.event_types.is_empty() {
                vec![None]
            } else {
                cfg.event_types.iter().cloned().map(Some).collect()
            };
            for event_type in types {
                commands.push(ClientMessage::SubscribeEvents {
                    id: self.expect_result("subscribe_events"),
                    event_type,
                });
            }
        }
        // A restart must be told apart from a failure even when the user did not
        // subscribe to `homeassistant_stop`: a private subscription whose events are
        // only noted, never forwarded.
        if self.entities_mode
            || (!cfg.event_types.is_empty()
                && !cfg.event_types.iter().any(|t| t == HOMEASSISTANT_STOP))
        {
            let id = self.expect_result("subscribe_events");
            commands.push(ClientMessage::SubscribeEvents {
                id,
                event_type: Some(HOMEASSISTANT_STOP.to_string()),
            });
            self.stop_watch = Some(id);
        }
        for command in &commands {
            self.ws
                .feed(Message::text(command.to_json()))
                .await
                .map_err(|e| ClientError::Closed(e.to_string()))?;
        }
        self.ws
            .flush()
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))
    }

    /// A wake-up of the socket: this frame, then every frame already waiting.
    async fn on_frames(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), End> {
        self.on_frame(frame).await?;
        self.drain().await
    }

    /// Reads every frame the socket already holds (up to [`READ_DRAIN_MAX`]).
    async fn drain(&mut self) -> Result<(), End> {
        for _ in 0..READ_DRAIN_MAX {
            match self.ws.next().now_or_never() {
                Some(frame) => self.on_frame(frame).await?,
                None => break,
            }
        }
        Ok(())
    }

    /// A frame, an error or the end of the socket: a frame is counted, checked
    /// against `max_message_bytes`, decoded, and each of its messages dispatched.
    async fn on_frame(
        &mut self,
        frame: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), End> {
        let Link { cfg, source, .. } = *self.link;
        let message = match frame {
            Some(Ok(message)) => message,
            Some(Err(tungstenite::Error::Capacity(error))) => {
                self.link
                    .record_bad_input("too_large", &error.to_string(), b"");
                return Err(End::Lost(ClientError::Closed(format!(
                    "message over the hard cap: {error}"
                ))));
            }
            Some(Err(error)) => return Err(End::Lost(ClientError::Closed(error.to_string()))),
            None => return Err(End::Lost(ClientError::Closed("end of stream".into()))),
        };
        let bytes: &[u8] = match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => {
                return Err(End::Lost(ClientError::Closed(close_reason(frame.as_ref()))));
            }
            _ => return Ok(()),
        };
        self.meters.bytes.increment(bytes.len() as u64);
        if bytes.len() > cfg.max_message_bytes {
            let error = DecodeError::TooLarge {
                size: bytes.len(),
                limit: cfg.max_message_bytes,
            };
            self.link
                .record_bad_input(error.kind(), &error.to_string(), bytes);
            return Ok(());
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        match &message {
            Message::Text(text) => decode_frame(text, source, &mut decoded),
            _ => decode_binary_frame(bytes, source, &mut decoded),
        }
        self.messages_read += decoded.len() as u64;
        // One clock read per frame: a coalesced frame's events arrived together.
        let arrived = Timestamp::now();
        for item in decoded.drain(..) {
            self.on_message(item, bytes, arrived).await?;
        }
        self.decoded = decoded;
        Ok(())
    }

    /// One message of a frame, or why it did not decode (set aside: the stream goes on).
    async fn on_message(
        &mut self,
        item: Result<ServerMessage, DecodeError>,
        frame: &[u8],
        arrived: Timestamp,
    ) -> Result<(), End> {
        match item {
            Ok(ServerMessage::Event { event, id }) => self.on_event(id, event, arrived).await,
            Ok(ServerMessage::Entities { id, message }) => {
                self.on_entities(id, message, arrived).await
            }
            Ok(ServerMessage::Reply(ServerReply::Pong { id })) => {
                self.on_pong(id);
                Ok(())
            }
            Ok(ServerMessage::Reply(ServerReply::Result {
                id,
                success,
                error,
                result,
            })) => self.on_result(id, success, result, error).await,
            Ok(ServerMessage::Reply(ServerReply::AuthInvalid { message })) => {
                Err(End::Lost(ClientError::AuthInvalid { message }))
            }
            Ok(other) => {
                tracing::debug!(message = "Ignored a Home Assistant message.", source = %self.link.source, kind = %describe(&other));
                Ok(())
            }
            Err(error) => {
                let input = error.element().map_or(frame, str::as_bytes);
                self.link
                    .record_bad_input(error.kind(), &error.to_string(), input);
                Ok(())
            }
        }
    }

    /// A bus event: `homeassistant_stop` is noted; the stop watch's events go no
    /// further, every other one is handed on live.
    async fn on_event(&mut self, id: u64, event: Event, arrived: Timestamp) -> Result<(), End> {
        if event.event_type() == HOMEASSISTANT_STOP && !self.report.ha_stopping {
            self.report.ha_stopping = true;
            tracing::info!(message = "Home Assistant is stopping.", source = %self.link.source);
        }
        if Some(id) == self.stop_watch {
            return Ok(());
        }
        let time = event.time_fired;
        self.hand_on_live(event, time, arrived).await
    }

    /// An event of the `subscribe_entities` stream: the cache turns it into state
    /// changes. The first one holds every current state (see [`Self::hand_on_initial`]);
    /// later ones are handed on live.
    async fn on_entities(
        &mut self,
        id: u64,
        message: EntitiesMessage,
        arrived: Timestamp,
    ) -> Result<(), End> {
        let source = self.link.source;
        let Some((_, cache)) = self.entities.as_mut().filter(|(sub, _)| *sub == id) else {
            return Ok(());
        };
        let initial = std::mem::take(&mut self.initial_pending);
        let mut changes = Vec::new();
        let tagged = if initial {
            &self.meters.snapshot_source
        } else {
            source
        };
        cache.apply(message, tagged, arrived, &mut changes);
        let cached = cache.len();
        for change in changes {
            let event = match change {
                Ok(event) => event,
                Err(error) => {
                    self.link
                        .record_bad_input("unknown_entity", &error.to_string(), b"");
                    continue;
                }
            };
            if initial {
                self.hand_on_initial(event).await?;
            } else {
                self.hand_on_change(event, arrived).await?;
            }
        }
        if initial {
            if self.plan.snapshot {
                self.report.snapshot_done = true;
            }
            // Without a gap to fill, nothing else needs what was delivered.
            if self.gap.is_none() {
                self.delivered = None;
            }
            tracing::info!(message = "Entity states received.", source = %source, entities = cached);
        }
        Ok(())
    }

    /// A pong: the outstanding ping is answered (a pong for another id changes nothing).
    fn on_pong(&mut self, id: u64) {
        if self.awaiting_pong.is_some_and(|(ping, _)| ping == id) {
            self.awaiting_pong = None;
        }
    }

    /// The result of a command: results nobody awaits (fire-and-forget commands)
    /// are ignored; a refusal ends the connection, except for `supported_features`;
    /// history and `get_states` go to their handlers; the last subscription
    /// result makes the connection ready.
    async fn on_result(
        &mut self,
        id: u64,
        success: bool,
        result: Option<serde_json::Value>,
        error: Option<ErrorInfo>,
    ) -> Result<(), End> {
        let Some(at) = self.pending.iter().position(|(p, _)| *p == id) else {
            return Ok(());
        };
        let (_, command) = self.pending.remove(at);
        if command == HISTORY || command == HISTORY_PROBE {
            return self.on_gap_reply(command, success, result, error).await;
        }
        if !success && command == "supported_features" {
            // Cores older than 2022.x do not know the command: go on without arrays.
            let error = error.unwrap_or_default();
            tracing::info!(message = "Home Assistant does not support message coalescing; continuing without it.", source = %self.link.source, code = %error.code);
        } else if !success {
            let error = error.unwrap_or_default();
            return Err(End::Lost(ClientError::Command {
                command,
                code: error.code,
                message: error.message,
            }));
        }
        if command == "get_states" {
            return self.on_states(result).await;
        }
        if self.pending.is_empty() && self.report.subscribed_at.is_none() {
            self.on_subscribed().await?;
        }
        Ok(())
    }

    /// Every subscription result arrived: the connection is ready (gauge, counter,
    /// `/ready`, log). `get_states` is asked before, so "ready" implies "asked".
    async fn on_subscribed(&mut self) -> Result<(), ClientError> {
        let Link {
            cfg,
            url,
            source,
            ctx,
            ..
        } = *self.link;
        self.report.subscribed_at = Some(Instant::now());
        // The entities stream brings its own snapshot; get_states then only names the gap's entities.
        if (self.plan.snapshot && !self.entities_mode) || self.gap.is_some() {
            let id = self.take_id();
            self.send(ClientMessage::GetStates { id }.to_json()).await?;
            self.pending.push((id, "get_states"));
        }
        self.meters.connected.set(1.0);
        self.meters.connects.increment(1);
        ctx.stats.source_state(source, true, None);
        tracing::info!(message = "Connected to Home Assistant and subscribed.", source = %source, url = %url, ha_version = %self.ha_version, event_types = ?cfg.event_types);
        Ok(())
    }

    /// `get_states` answered: its entity ids plan the gap's history requests, and
    /// its states are the snapshot (events subscription); then the gap goes on.
    async fn on_states(&mut self, result: Option<serde_json::Value>) -> Result<(), End> {
        let cfg = self.link.cfg;
        let states = states_from_result(result, self.link);
        if let Some(gap) = self.gap.as_mut() {
            // With `entity_ids`, the gap is filled for those entities only.
            let entities_mode = self.entities_mode;
            gap.prepare(
                &states,
                |s| {
                    !entities_mode
                        || cfg.entity_ids.is_empty()
                        || cfg.entity_ids.iter().any(|id| id == s.entity_id.as_str())
                },
                cfg,
            );
        }
        if self.plan.snapshot && !self.entities_mode {
            let after = self.gap.as_ref().map(|g| g.from);
            self.hand_on_snapshot(states, after).await?;
            self.report.snapshot_done = true;
        }
        self.continue_gap().await
    }

    /// A reply to one of the gap's requests (a window or the commit check): it is
    /// read, or — refused — the gap is given up; then the gap goes on.
    async fn on_gap_reply(
        &mut self,
        command: &'static str,
        success: bool,
        result: Option<serde_json::Value>,
        error: Option<ErrorInfo>,
    ) -> Result<(), End> {
        let Some(gap) = self.gap.as_mut() else {
            return Ok(());
        };
        if !success {
            gap.give_up(error.unwrap_or_default(), self.meters, self.link.source);
        } else if command == HISTORY {
            self.on_history(result.unwrap_or_default()).await?;
        } else {
            self.on_probe(result.as_ref());
        }
        self.continue_gap().await
    }

    /// A window's rows go on, with the attributes the recorder dropped put back.
    async fn on_history(&mut self, result: serde_json::Value) -> Result<(), End> {
        let Some(gap) = self.gap.as_mut() else {
            return Ok(());
        };
        gap.note_reply(&result);
        let mut rows =
            history::rows_after(result, gap.in_flight_after, &self.meters.backfill_source);
        // The request ran a microsecond past the window (whatever HA's end bound):
        // a row there belongs to the next window.
        if let Some(until) = gap.in_flight_until {
            rows.events.retain(|e| e.time_fired <= until);
        }
        gap.restore_attributes(&mut rows.events, self.memory);
        self.hand_on_backfill(rows).await
    }

    /// The commit check's reply: the windows follow, or the check is asked again later.
    fn on_probe(&mut self, result: Option<&serde_json::Value>) {
        let Some(gap) = self.gap.as_mut() else {
            return;
        };
        gap.on_probe_reply(result, Instant::now(), self.link.cfg, self.link.source);
        if gap.probe_due().is_none() {
            // Passed or given up: `commit_waits` is final for this check.
            self.meters.commit_waits.increment(gap.commit_waits);
        }
    }

    /// Asks for the gap's next request (the commit check, then the windows) or,
    /// when none is left, hands on what history lacks, reports the gap filled and
    /// releases the cursor. Without a gap, nothing needs what was delivered any more.
    async fn continue_gap(&mut self) -> Result<(), End> {
        let step = self.gap.as_mut().map(|g| g.next_step(Instant::now()));
        match step {
            None | Some(Step::Wait) => {}
            Some(Step::Probe) => {
                let id = self.take_id();
                if let Some(request) = self.gap.as_ref().and_then(|g| g.probe_request(id)) {
                    self.send(request.to_json()).await?;
                    self.pending.push((id, HISTORY_PROBE));
                }
            }
            Some(Step::Window(window)) => {
                let id = self.take_id();
                if let Some(request) = self.gap.as_mut().map(|g| g.request(window, id)) {
                    self.send(request.to_json()).await?;
                    self.pending.push((id, HISTORY));
                }
            }
            Some(Step::Done) => self.finish_gap().await?,
        }
        if self.gap.is_none() {
            self.delivered = None;
        }
        Ok(())
    }

    /// Every request of the gap was answered: the current states of entities the
    /// recorder does not keep go on, the gap is reported and the cursor released.
    async fn finish_gap(&mut self) -> Result<(), End> {
        let Some(mut gap) = self.gap.take() else {
            return Ok(());
        };
        let unrecorded = gap.unrecorded(self.link.source);
        let delivered = self.delivered.get_or_insert_default();
        for state in unrecorded {
            if delivered.contains(&state) {
                continue;
            }
            let event = Event::from_state(self.meters.backfill_source.clone(), state);
            let time = event.time_fired;
            delivered.note(&event);
            self.link.deliver(event, time).await?;
            gap.backfilled += 1;
            self.meters.backfilled.increment(1);
        }
        self.meters.restored.increment(gap.restored);
        self.meters.unrecorded.increment(gap.unrecorded_entities);
        if gap.unconfirmed {
            self.meters.unconfirmed.increment(1);
        }
        gap.finish(self.link.cfg, self.meters, self.link.source);
        self.link.ctx.stats.gap_filled(crate::monitor::GapReport {
            source: self.link.source.to_string(),
            from: gap.from.to_rfc3339(),
            to: gap.gap_end().to_rfc3339(),
            states: gap.backfilled,
            attributes_restored: gap.restored,
            commit_waits: gap.commit_waits,
            unrecorded_entities: gap.unrecorded_entities,
            confirmed: !gap.unconfirmed,
        });
        self.link.cursor.release();
        Ok(())
    }

    /// Time for a ping; its pong is due within `pong_timeout`.
    async fn on_tick(&mut self) -> Result<(), ClientError> {
        let id = self.take_id();
        self.send(ClientMessage::Ping { id }.to_json()).await?;
        self.awaiting_pong = Some((id, Instant::now() + self.link.cfg.pong_timeout));
        Ok(())
    }

    /// Sends a command from the queue (see `commands.rs`): fire-and-forget, its result is not awaited.
    async fn send_command(&mut self, command: Command) -> Result<(), ClientError> {
        let id = self.take_id();
        self.send(command.to_json(id)).await
    }

    /// Hands one live event on and moves the cursor to `cursor_time`.
    async fn hand_on_live(
        &mut self,
        event: Event,
        cursor_time: Timestamp,
        arrived: Timestamp,
    ) -> Result<(), End> {
        self.meters.event(event.event_type());
        Stats::add(&self.link.ctx.stats.received, 1);
        let time = event.time_fired;
        self.meters.lag(time, arrived);
        self.meters.last_event.set(time.as_nanos() as f64 / 1e9);
        if let Some(gap) = self.gap.as_mut() {
            gap.first_live.get_or_insert(time);
            gap.note_live(&event);
        }
        self.memory.note_live(&event);
        if let Some(delivered) = self.delivered.as_mut() {
            delivered.note(&event);
        }
        self.link.deliver(event, cursor_time).await
    }

    /// Hands on a later change of the entities stream, live. A removal has no time
    /// from HA: the cursor keeps the last state's time.
    async fn hand_on_change(&mut self, event: Event, arrived: Timestamp) -> Result<(), End> {
        let cursor_time = match event.state_changed() {
            Some(StateChanged {
                new_state: None,
                old_state: Some(old),
                ..
            }) => old
                .state()
                .map_or(self.resume_at_start.unwrap_or_default(), |o| o.last_updated),
            _ => event.time_fired,
        };
        self.hand_on_live(event, cursor_time, arrived).await
    }

    /// Hands on one state of the first `subscribe_entities` event, as the snapshot
    /// does: on the first connection, or (with a cursor) where newer than the cursor.
    async fn hand_on_initial(&mut self, event: Event) -> Result<(), End> {
        let wanted = self.plan.snapshot || self.resume_at_start.is_some();
        let newer = self.resume_at_start.is_none_or(|c| event.time_fired > c);
        if !(wanted && newer) {
            return Ok(());
        }
        let delivered = self.delivered.get_or_insert_default();
        let Some(new) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) else {
            return Ok(());
        };
        if delivered.contains(new) {
            return Ok(());
        }
        delivered.note(&event);
        let time = event.time_fired;
        self.link.deliver(event, time).await?;
        self.meters.snapshot.increment(1);
        Ok(())
    }

    /// Hands every current state on as a snapshot event.
    ///
    /// States the live stream of this connection already delivered are skipped,
    /// and so, with a cursor (a restart that resumes), are states last updated at
    /// or before it: the earlier run handed them on.
    async fn hand_on_snapshot(
        &mut self,
        states: Vec<State>,
        after: Option<Timestamp>,
    ) -> Result<(), End> {
        let delivered = self.delivered.get_or_insert_default();
        let mut count = 0;
        for state in states {
            if after.is_some_and(|from| state.last_updated <= from) || delivered.contains(&state) {
                continue;
            }
            count += 1;
            let event = snapshot_event(state, &self.meters.snapshot_source);
            let time = event.time_fired;
            delivered.note(&event);
            self.link.deliver(event, time).await?;
            self.meters.snapshot.increment(1);
        }
        tracing::info!(message = "Initial snapshot handed on.", source = %self.link.source, states = count);
        Ok(())
    }

    /// Hands on the rows of one history reply that this connection has not delivered.
    async fn hand_on_backfill(&mut self, rows: history::Backfill) -> Result<(), End> {
        let delivered = self.delivered.get_or_insert_default();
        for error in rows.errors {
            self.link
                .record_bad_input("invalid_field", &error.to_string(), b"");
        }
        // Only called for the reply of a gap's request.
        let Some(gap) = self.gap.as_mut() else {
            return Ok(());
        };
        for event in rows.events {
            let Some(new) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) else {
                continue;
            };
            if delivered.contains(new) {
                continue;
            }
            let time = event.time_fired;
            self.link.deliver(event, time).await?;
            gap.backfilled += 1;
            self.meters.backfilled.increment(1);
        }
        Ok(())
    }

    /// The next command id.
    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The next command id, for a command whose result is awaited and checked.
    fn expect_result(&mut self, command: &'static str) -> u64 {
        let id = self.take_id();
        self.pending.push((id, command));
        id
    }

    /// Writes one command to the socket; a failed write is a lost connection.
    async fn send(&mut self, text: String) -> Result<(), ClientError> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Closed(e.to_string()))
    }
}

impl Link<'_> {
    /// Stamps the event's handoff mark, sends it to the pipeline and, once sent, moves the cursor to `cursor_time`.
    async fn deliver(&self, mut event: Event, cursor_time: Timestamp) -> Result<(), End> {
        let mark = self.cursor.stamp(&mut event);
        if self.ctx.tx.send(event).await.is_err() {
            return Err(End::PipelineClosed);
        }
        self.cursor.advance(cursor_time, mark);
        Ok(())
    }

    /// Counts undecodable input and sets it aside; the stream goes on.
    fn record_bad_input(&self, kind: &'static str, reason: &str, input: &[u8]) {
        // Every decode error is also a dead letter: `decode_errors` is the source side of that count.
        Stats::add(&self.ctx.stats.decode_errors, 1);
        metrics::counter!(SOURCE_ERRORS, "source" => self.source.to_string(), "error_type" => kind)
            .increment(1);
        self.ctx.dead_letters.record(DeadLetter {
            stage: "source",
            kind,
            reason,
            source: self.source,
            input: &input[..input.len().min(DEAD_LETTER_INPUT_MAX)],
        });
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

/// Reads the states of a `get_states` result one by one; a state that does not decode is set aside, the others are kept.
fn states_from_result(result: Option<serde_json::Value>, link: &Link<'_>) -> Vec<State> {
    let items = match result {
        Some(serde_json::Value::Array(items)) => items,
        other => {
            let input = other.map(|v| v.to_string()).unwrap_or_default();
            link.record_bad_input(
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
            Err(error) => link.record_bad_input(
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
