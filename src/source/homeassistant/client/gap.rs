//! A gap being filled from Home Assistant's history on one connection.
//!
//! The gap runs from the resume cursor to the newest state `get_states`
//! returned: everything after that arrives live (the subscription came
//! first). Once `get_states` names the entities, [`Gap::prepare`] keeps the
//! current states of those that changed since the cursor — the only ones
//! history can have rows for — and the gap's end. Then, in order:
//!
//! 1. **The commit check.** HA's recorder commits every `commit_interval`
//!    (5 s by default), so history lags the live stream by up to that much.
//!    The recorder commits in the order states changed, so one row in history
//!    at or after the gap's end proves every change up to the end committed.
//!    The check asks history, from the gap's end on, for the entity whose
//!    change is the end and for the entities of the live events since (an
//!    entity the recorder excludes never shows; another one will). Until a row
//!    shows, it is asked again, backing off to once a second, up to
//!    `backfill_commit_wait`.
//! 2. **The windows**, newest first: `backfill_chunk` entities ×
//!    `backfill_window` of time, each request ending at the gap's end at the
//!    latest. Newest first, so the first reply with rows of an entity holds its
//!    newest row — the state `get_states` returned — which tells which
//!    attributes the recorder dropped (see [`UnrecordedAttributes`]).
//! 3. **The end**: an entity that changed but has no history at all is not
//!    recorded (HA's recorder excludes it): its current state is handed on,
//!    its earlier changes in the gap are reported lost.
//!
//! The session owns the `Gap` and its socket; this file sends nothing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Meters;
use crate::config::{HaSubscription, HomeAssistantConfig};
use crate::event::{EntityId, Event, SourceId, State, Timestamp};
use crate::monitor::metrics::SOURCE_ERRORS;
use crate::source::homeassistant::protocol::{ClientMessage, ErrorInfo};

/// The first wait before the commit check is asked again; it doubles up to [`PROBE_MAX_DELAY`].
const PROBE_FIRST_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two commit checks.
const PROBE_MAX_DELAY: Duration = Duration::from_secs(1);
/// Most entities one commit check asks about.
const PROBE_ENTITIES: usize = 20;
/// Entity ids named in one "not recorded" warning; the rest are counted.
const NAMED_IN_WARNING: usize = 10;

/// A gap being filled from HA's history on this connection.
pub(super) struct Gap {
    /// The cursor: rows at or before it were handed on already.
    pub(super) from: Timestamp,
    /// History requests still to make (a chunk of entities × a time window); `None` until `get_states` answered.
    chunks: Option<VecDeque<HistoryWindow>>,
    /// The reply being waited for keeps rows after this time (the request's start) …
    pub(super) in_flight_after: Timestamp,
    /// … and up to this one (its window's end; `None`: no end).
    pub(super) in_flight_until: Option<Timestamp>,
    /// The `time_fired` of the first live event on this connection: the gap's end.
    pub(super) first_live: Option<Timestamp>,
    /// Rows handed on so far.
    pub(super) backfilled: u64,
    /// HA refused a history request: the gap was reported lost as a whole.
    failed: bool,
    /// The gap is a restart of HA: what cannot be recovered is logged at INFO, not WARN.
    expected: bool,
    /// The newest `last_updated` in `get_states`: the gap's end (HA's clock).
    pub(super) end: Option<Timestamp>,
    /// The current states (from `get_states`) of the entities that changed since the cursor.
    reference: HashMap<EntityId, State>,
    /// Entities with at least one history row in a reply of this gap.
    seen: HashSet<EntityId>,
    /// The commit check, until it has passed or given up.
    probe: Option<CommitProbe>,
    /// Entities of live state changes not yet named to the commit check.
    live_entities: Vec<EntityId>,
    /// Attributes put back into backfilled states (see [`UnrecordedAttributes`]).
    pub(super) restored: u64,
    /// Times the commit check was asked again because the recorder had not committed yet.
    pub(super) commit_waits: u64,
    /// Entities that changed in the gap but have no history (not recorded by HA).
    pub(super) unrecorded_entities: u64,
    /// The gap was read without the recorder confirming it had committed its end.
    pub(super) unconfirmed: bool,
}

/// What the gap asks for next.
pub(super) enum Step {
    /// Send the commit check ([`Gap::probe_request`]).
    Probe,
    /// Send this history window.
    Window(HistoryWindow),
    /// Wait: for `get_states`, a reply in flight, or the next commit check.
    Wait,
    /// Every request was answered (or the gap was given up).
    Done,
}

/// The commit check: is the gap's end in the recorder's history yet?
struct CommitProbe {
    /// The gap's end.
    end: Timestamp,
    /// The entities asked about: the one whose change is the end, then those of live events.
    entities: Vec<EntityId>,
    /// A check is in flight.
    in_flight: bool,
    /// When the next check may be sent.
    due: Instant,
    /// The wait before the check after next.
    delay: Duration,
    /// When to stop waiting and read the gap anyway.
    deadline: Instant,
}

impl Gap {
    /// A gap from the cursor `from`; `expected` when it is a restart of HA.
    pub(super) fn new(from: Timestamp, expected: bool) -> Self {
        Gap {
            expected,
            from,
            chunks: None,
            in_flight_after: from,
            in_flight_until: None,
            first_live: None,
            backfilled: 0,
            failed: false,
            end: None,
            reference: HashMap::new(),
            seen: HashSet::new(),
            probe: None,
            live_entities: Vec::new(),
            restored: 0,
            commit_waits: 0,
            unrecorded_entities: 0,
            unconfirmed: false,
        }
    }

    /// Takes `get_states`' answer (only the states `wanted` says the gap covers):
    /// keeps the states that changed since the cursor, sets the gap's end, arms the
    /// commit check and plans the history windows, newest first.
    pub(super) fn prepare(
        &mut self,
        states: &[State],
        wanted: impl Fn(&State) -> bool,
        cfg: &HomeAssistantConfig,
    ) {
        self.reference = states
            .iter()
            .filter(|s| s.last_updated > self.from && wanted(s))
            .map(|s| (s.entity_id.clone(), s.clone()))
            .collect();
        let end = self.reference.values().map(|s| s.last_updated).max();
        self.end = end;
        let Some(end) = end else {
            // Nothing changed since the cursor: there is nothing to ask.
            self.chunks = Some(VecDeque::new());
            return;
        };
        let mut ids: Vec<String> = self.reference.keys().map(|e| e.to_string()).collect();
        ids.sort();
        let mut newest: Vec<&State> = self
            .reference
            .values()
            .filter(|s| s.last_updated == end)
            .collect();
        newest.sort_by(|a, b| a.entity_id.cmp(&b.entity_id));
        let mut entities: Vec<EntityId> = newest.iter().map(|s| s.entity_id.clone()).collect();
        for live in std::mem::take(&mut self.live_entities) {
            if !entities.contains(&live) {
                entities.push(live);
            }
        }
        let now = Instant::now();
        self.probe = Some(CommitProbe {
            end,
            entities,
            in_flight: false,
            due: now,
            delay: PROBE_FIRST_DELAY,
            deadline: now + cfg.backfill_commit_wait,
        });
        self.chunks = Some(history_windows(
            &ids,
            cfg.backfill_chunk,
            self.from,
            end,
            cfg.backfill_window,
        ));
    }

    /// What to ask next at `now`.
    pub(super) fn next_step(&mut self, now: Instant) -> Step {
        let Some(chunks) = self.chunks.as_mut() else {
            return Step::Wait;
        };
        if let Some(probe) = self.probe.as_mut() {
            if probe.in_flight || now < probe.due {
                return Step::Wait;
            }
            probe.in_flight = true;
            return Step::Probe;
        }
        match chunks.pop_front() {
            Some(window) => Step::Window(window),
            None => Step::Done,
        }
    }

    /// The commit check to send now, with command id `id` (`None` when none is armed).
    pub(super) fn probe_request(&self, id: u64) -> Option<ClientMessage> {
        self.probe.as_ref().map(|probe| probe.request(id))
    }

    /// Notes a live event: its entity can show the recorder's progress to the commit check.
    pub(super) fn note_live(&mut self, event: &Event) {
        let waiting = self.chunks.is_none() || self.probe.is_some();
        if !waiting || self.live_entities.len() >= PROBE_ENTITIES {
            return;
        }
        if let Some(sc) = event.state_changed()
            && !self.live_entities.contains(&sc.entity_id)
        {
            self.live_entities.push(sc.entity_id.clone());
        }
    }

    /// When the session should wake for the next commit check, if one is waiting.
    pub(super) fn probe_due(&self) -> Option<Instant> {
        self.probe.as_ref().filter(|p| !p.in_flight).map(|p| p.due)
    }

    /// The commit check's reply: passed (the windows follow), or asked again later,
    /// or — past `backfill_commit_wait` — given up with a warning and the gap read anyway.
    pub(super) fn on_probe_reply(
        &mut self,
        result: Option<&Value>,
        now: Instant,
        cfg: &HomeAssistantConfig,
        source: &SourceId,
    ) {
        let Some(probe) = self.probe.as_mut() else {
            return;
        };
        probe.in_flight = false;
        // Live events since the last check name more entities to ask about.
        for live in std::mem::take(&mut self.live_entities) {
            if probe.entities.len() < PROBE_ENTITIES && !probe.entities.contains(&live) {
                probe.entities.push(live);
            }
        }
        match probe.verdict(result) {
            Verdict::Committed => self.probe = None,
            Verdict::NotYet if now >= probe.deadline => {
                tracing::warn!(message = "Home Assistant's recorder did not show the gap's last changes in time; reading the gap anyway, its last seconds may be incomplete.", source = %source, waited = ?cfg.backfill_commit_wait, end = %self.end.unwrap_or_default());
                self.unconfirmed = true;
                self.probe = None;
            }
            Verdict::NotYet => {
                self.commit_waits += 1;
                probe.due = now + probe.delay;
                probe.delay = (probe.delay * 2).min(PROBE_MAX_DELAY);
            }
        }
    }

    /// Notes the entities a history reply has rows for (before its rows are read).
    pub(super) fn note_reply(&mut self, result: &Value) {
        if let Value::Object(entities) = result {
            for (key, rows) in entities {
                let has_rows = rows.as_array().is_some_and(|r| !r.is_empty());
                if has_rows && let Ok(id) = EntityId::new(key) {
                    self.seen.insert(id);
                }
            }
        }
    }

    /// Puts back the attributes the recorder dropped into the states of one reply
    /// (see [`UnrecordedAttributes`]); counts them in `restored`.
    pub(super) fn restore_attributes(
        &mut self,
        events: &mut [Event],
        memory: &mut UnrecordedAttributes,
    ) {
        for event in events.iter() {
            let Some(new) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) else {
                continue;
            };
            if let Some(current) = self.reference.get(&new.entity_id)
                && current.last_updated == new.last_updated
            {
                memory.learn(current, new);
            }
        }
        for event in events.iter_mut() {
            if let Some(new) = event
                .state_changed_mut()
                .and_then(|sc| sc.new_state.as_mut())
            {
                self.restored += memory.restore(new, self.reference.get(&new.entity_id));
            }
        }
    }

    /// The entities that changed in the gap but have no history: their current
    /// states (handed on by the session), counted and reported once.
    pub(super) fn unrecorded(&mut self, source: &SourceId) -> Vec<State> {
        if self.failed {
            return Vec::new();
        }
        let mut states: Vec<State> = self
            .reference
            .values()
            .filter(|s| !self.seen.contains(&s.entity_id))
            .cloned()
            .collect();
        if states.is_empty() {
            return states;
        }
        states.sort_by(|a, b| a.entity_id.cmp(&b.entity_id));
        self.unrecorded_entities = states.len() as u64;
        let named: Vec<&str> = states
            .iter()
            .take(NAMED_IN_WARNING)
            .map(|s| s.entity_id.as_str())
            .collect();
        tracing::warn!(message = "Entities changed during the gap but Home Assistant's recorder keeps no history of them (excluded from the recorder?): only their current state is written, their earlier changes in the gap are lost.", source = %source, entities = states.len(), named = ?named, from = %self.from, to = %self.end.unwrap_or_default());
        states
    }

    /// The history request for `window` with command id `id`; its reply is the one now in flight.
    pub(super) fn request(&mut self, window: HistoryWindow, id: u64) -> ClientMessage {
        // Windows after the oldest: changes after `start` only (the window before ended
        // one microsecond — HA's resolution — after it, so a change exactly at `start` is
        // in that one), and no state clamped to the window's start.
        let first = window.start == self.from;
        self.in_flight_after = window.start;
        self.in_flight_until = window.end;
        // The lossless form: every change, every attribute (HA's defaults drop some).
        ClientMessage::HistoryDuringPeriod {
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
        }
    }

    /// HA refused a history request (or the commit check): the gap is given up as a whole, counted and logged.
    pub(super) fn give_up(&mut self, error: ErrorInfo, meters: &Meters, source: &SourceId) {
        metrics::counter!(SOURCE_ERRORS, "source" => source.to_string(), "error_type" => "backfill")
            .increment(1);
        tracing::warn!(message = "Home Assistant refused the history request; the gap cannot be backfilled.", source = %source, code = %error.code, reason = %error.message);
        self.chunks = Some(Default::default());
        self.probe = None;
        self.failed = true;
        let to = self.gap_end();
        self.report_lost(meters, source, to, "state changes and other events");
    }

    /// Reports a filled gap; events other than state changes in it are lost and said so.
    pub(super) fn finish(&self, cfg: &HomeAssistantConfig, meters: &Meters, source: &SourceId) {
        if self.failed {
            return;
        }
        let to = self.gap_end();
        let seconds = seconds_between(self.from, to);
        meters.gap_seconds.record(seconds);
        tracing::info!(message = "Gap backfilled from Home Assistant's history.", source = %source, from = %self.from, to = %to, gap_s = seconds, states = self.backfilled, attributes_restored = self.restored, commit_waits = self.commit_waits, unrecorded_entities = self.unrecorded_entities);
        // The entities subscription never asked for other events: none were lost.
        let other_events = cfg.subscription == HaSubscription::Events
            && (cfg.event_types.is_empty()
                || cfg
                    .event_types
                    .iter()
                    .any(|t| t != crate::event::STATE_CHANGED));
        if other_events {
            self.report_lost(meters, source, to, "events other than state changes");
        }
    }

    /// Where the gap ends: the newest state `get_states` returned or, before it
    /// answered, the first live event (or now).
    pub(super) fn gap_end(&self) -> Timestamp {
        self.end.or(self.first_live).unwrap_or_else(Timestamp::now)
    }

    /// Counts and logs a span of time whose events (of the kind named) cannot be recovered.
    ///
    /// At INFO after a restart of HA (expected), else at WARN.
    fn report_lost(&self, meters: &Meters, source: &SourceId, to: Timestamp, what: &str) {
        let from = self.from;
        let seconds = seconds_between(from, to);
        meters.lost_gap_seconds.record(seconds);
        if self.expected {
            tracing::info!(message = "Events in a gap cannot be recovered from Home Assistant's history.", source = %source, lost = what, from = %from, to = %to, gap_s = seconds, cause = "Home Assistant restarted");
        } else {
            tracing::warn!(message = "Events in a gap cannot be recovered from Home Assistant's history.", source = %source, lost = what, from = %from, to = %to, gap_s = seconds);
        }
    }
}

/// One history request of a gap: these entities, after `start` up to `end`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HistoryWindow {
    entity_ids: Vec<String>,
    start: Timestamp,
    end: Option<Timestamp>,
}

/// Splits a gap from `from` to `end` into requests: every chunk of entities,
/// window by window, the newest window first.
fn history_windows(
    ids: &[String],
    chunk: usize,
    from: Timestamp,
    end: Timestamp,
    window: Duration,
) -> VecDeque<HistoryWindow> {
    let step = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX).max(1);
    let mut spans = Vec::new();
    let mut start = from;
    loop {
        let stop = start.as_nanos().saturating_add(step).min(end.as_nanos());
        spans.push((start, Timestamp::from_nanos(stop)));
        if stop >= end.as_nanos() {
            break;
        }
        start = Timestamp::from_nanos(stop);
    }
    let mut out = VecDeque::new();
    for (start, stop) in spans.into_iter().rev() {
        for entity_ids in ids.chunks(chunk.max(1)) {
            out.push_back(HistoryWindow {
                entity_ids: entity_ids.to_vec(),
                start,
                end: Some(stop),
            });
        }
    }
    out
}

/// What a commit check's reply says.
enum Verdict {
    /// A row at or after the gap's end is history: every change up to the end is committed.
    Committed,
    /// No such row yet.
    NotYet,
}

impl CommitProbe {
    /// The check: history of the entities asked about from just before the gap's
    /// end, without attributes and without the state in force there (only rows
    /// that changed at or after the end count).
    fn request(&self, id: u64) -> ClientMessage {
        ClientMessage::HistoryDuringPeriod {
            id,
            start_time: Timestamp::from_nanos(self.end.as_nanos() - 1_000).to_rfc3339(),
            end_time: None,
            entity_ids: self.entities.iter().map(|e| e.to_string()).collect(),
            include_start_time_state: false,
            significant_changes_only: false,
            minimal_response: false,
            no_attributes: true,
        }
    }

    /// Reads a reply: any row at or after the gap's end means the recorder has
    /// committed every change up to the end (it commits in order).
    fn verdict(&self, result: Option<&Value>) -> Verdict {
        let committed = result
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|entities| entities.values())
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|row| row.get("lu").and_then(Value::as_f64))
            .filter_map(Timestamp::from_epoch_seconds)
            .any(|lu| lu >= self.end);
        if committed {
            Verdict::Committed
        } else {
            Verdict::NotYet
        }
    }
}

/// The attributes HA's recorder does not keep, learned per entity, and their
/// values in the last live state: what makes a backfilled state equal the one
/// HA sent live.
///
/// Entities declare attributes the recorder drops (`_unrecorded_attributes`:
/// `input_number`'s `min`/`max`/`step`/`mode`, `editable`, a light's
/// `supported_color_modes`, a select's `options`, …), so history rows lack
/// them. Which ones is learned exactly, per entity, when a history row has the
/// same `last_updated` as the entity's state from `get_states` — the same state,
/// once whole and once as recorded: the keys only the whole one has. The
/// values put back are those of the last live state handed on before the gap
/// (kept only for entities whose dropped keys are known, so the live path
/// pays one map lookup), else those of the `get_states` state. An unrecorded
/// attribute that itself changed inside the gap cannot be known: the values
/// from before (or after) the gap are used for every row.
#[derive(Debug, Default)]
pub(crate) struct UnrecordedAttributes {
    /// Per entity: the attribute keys its history rows lack.
    keys: HashMap<EntityId, Vec<String>>,
    /// Per entity with known keys: their values in the last live state.
    last_live: HashMap<EntityId, Vec<(String, Value)>>,
}

impl UnrecordedAttributes {
    /// Notes a live state: keeps the values of its unrecorded attributes, if it has known ones.
    pub(super) fn note_live(&mut self, event: &Event) {
        if self.keys.is_empty() {
            return;
        }
        let Some(new) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) else {
            return;
        };
        let Some(keys) = self.keys.get(&new.entity_id) else {
            return;
        };
        let values = keys
            .iter()
            .filter_map(|k| new.attributes.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        self.last_live.insert(new.entity_id.clone(), values);
    }

    /// Learns which attributes the recorder dropped from `recorded`, the same state as `whole`.
    fn learn(&mut self, whole: &State, recorded: &State) {
        let dropped: Vec<String> = whole
            .attributes
            .iter()
            .filter(|(k, _)| !recorded.attributes.contains_key(k))
            .map(|(k, _)| k.clone())
            .collect();
        if dropped.is_empty() {
            self.keys.remove(&whole.entity_id);
            self.last_live.remove(&whole.entity_id);
        } else {
            self.keys.insert(whole.entity_id.clone(), dropped);
        }
    }

    /// Puts the dropped attributes back into `state`; returns how many.
    fn restore(&self, state: &mut State, current: Option<&State>) -> u64 {
        let Some(keys) = self.keys.get(&state.entity_id) else {
            return 0;
        };
        let live = self.last_live.get(&state.entity_id);
        let mut restored = 0;
        for key in keys {
            if state.attributes.contains_key(key) {
                continue;
            }
            let value = live
                .and_then(|l| l.iter().find(|(k, _)| k == key).map(|(_, v)| v))
                .or_else(|| current.and_then(|c| c.attributes.get(key)));
            if let Some(value) = value {
                state.attributes.insert(key.clone(), value.clone());
                restored += 1;
            }
        }
        restored
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_nanos().saturating_sub(from.as_nanos())).max(0) as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Attributes;
    use serde_json::json;

    #[test]
    fn a_gap_is_split_into_windows_newest_first_for_every_entity_chunk() {
        let ids: Vec<String> = (0..5).map(|i| format!("sensor.s{i}")).collect();
        let hour = Duration::from_secs(3600);
        let from = Timestamp::from_nanos(1_000_000_000_000);
        let end = Timestamp::from_nanos(from.as_nanos() + 2 * 3_600_000_000_000 + 5);
        let windows: Vec<HistoryWindow> = history_windows(&ids, 2, from, end, hour).into();
        // Three windows (two full hours and the rest up to the end) × three chunks (2 + 2 + 1).
        assert_eq!(windows.len(), 9);
        for (w, chunk) in windows.iter().zip([2, 2, 1].iter().cycle()) {
            assert_eq!(w.entity_ids.len(), *chunk);
        }
        let spans: Vec<(i64, Option<i64>)> = windows
            .iter()
            .step_by(3)
            .map(|w| (w.start.as_nanos(), w.end.map(Timestamp::as_nanos)))
            .collect();
        let h = 3_600_000_000_000;
        let f = from.as_nanos();
        // Newest first; each window ends where the next newer one starts; the newest ends at the gap's end.
        assert_eq!(
            spans,
            vec![
                (f + 2 * h, Some(end.as_nanos())),
                (f + h, Some(f + 2 * h)),
                (f, Some(f + h)),
            ]
        );
        // A short gap is one window per chunk, from the cursor to the end.
        let short = history_windows(&ids, 50, from, end, Duration::from_secs(3 * 3600));
        assert_eq!(short.len(), 1);
        assert_eq!((short[0].start, short[0].end), (from, Some(end)));
    }

    fn state(id: &str, lu: i64, attributes: Value) -> State {
        let Value::Object(map) = attributes else {
            panic!("attributes are an object")
        };
        State {
            entity_id: EntityId::new(id).unwrap(),
            state: "1".into(),
            attributes: Attributes::from(map),
            last_changed: Timestamp::from_nanos(lu),
            last_reported: None,
            last_updated: Timestamp::from_nanos(lu),
            context: None,
        }
    }

    #[test]
    fn the_commit_check_passes_once_a_row_at_or_after_the_end_is_history() {
        let t = |s: f64| (s * 1e9) as i64;
        let now = Instant::now();
        let p = CommitProbe {
            end: Timestamp::from_nanos(t(100.5)),
            entities: vec![
                EntityId::new("sensor.a").unwrap(),
                EntityId::new("sensor.live").unwrap(),
            ],
            in_flight: false,
            due: now,
            delay: PROBE_FIRST_DELAY,
            deadline: now,
        };
        let before = json!({"sensor.a": [{"s": "1", "lu": 99.25}]});
        assert!(matches!(p.verdict(Some(&before)), Verdict::NotYet));
        assert!(matches!(p.verdict(Some(&json!({}))), Verdict::NotYet));
        assert!(matches!(p.verdict(None), Verdict::NotYet));
        // The end itself, or a later change of another entity (sensor.a may be excluded).
        let at_end = json!({"sensor.a": [{"s": "2", "lu": 100.5}]});
        assert!(matches!(p.verdict(Some(&at_end)), Verdict::Committed));
        let later = json!({"sensor.live": [{"s": "on", "lu": 101.0}]});
        assert!(matches!(p.verdict(Some(&later)), Verdict::Committed));
        // Asked from just before the end, without the state in force there, without attributes.
        let ClientMessage::HistoryDuringPeriod {
            start_time,
            entity_ids,
            include_start_time_state,
            no_attributes,
            end_time,
            ..
        } = p.request(7)
        else {
            panic!("a history request")
        };
        assert_eq!(
            start_time,
            Timestamp::from_nanos(t(100.5) - 1_000).to_rfc3339()
        );
        assert_eq!(entity_ids, vec!["sensor.a", "sensor.live"]);
        assert!(!include_start_time_state && no_attributes && end_time.is_none());
    }

    #[test]
    fn dropped_attributes_are_learned_from_the_same_state_and_put_back() {
        let mut memory = UnrecordedAttributes::default();
        let whole = state(
            "input_number.level",
            50,
            json!({"min": 0, "max": 10, "step": 1, "friendly_name": "Level"}),
        );
        let recorded = state("input_number.level", 50, json!({"friendly_name": "Level"}));
        memory.learn(&whole, &recorded);
        // An earlier row of the gap gets the values of get_states' state …
        let mut earlier = state("input_number.level", 40, json!({"friendly_name": "Level"}));
        assert_eq!(memory.restore(&mut earlier, Some(&whole)), 3);
        assert_eq!(earlier.attributes.get("max"), Some(&json!(10)));
        // … or, once a live state was seen, those of the last live state.
        let live = state(
            "input_number.level",
            60,
            json!({"min": 0, "max": 20, "step": 1, "friendly_name": "Level"}),
        );
        memory.note_live(&Event::from_state(SourceId::from("t"), live));
        let mut later = state("input_number.level", 70, json!({"friendly_name": "Level"}));
        assert_eq!(memory.restore(&mut later, Some(&whole)), 3);
        assert_eq!(later.attributes.get("max"), Some(&json!(20)));
        // A row that has the attribute keeps its own value; other entities are untouched.
        let mut own = state("input_number.level", 80, json!({"max": 5}));
        assert_eq!(memory.restore(&mut own, Some(&whole)), 2);
        assert_eq!(own.attributes.get("max"), Some(&json!(5)));
        let mut other = state("sensor.other", 80, json!({}));
        assert_eq!(memory.restore(&mut other, Some(&whole)), 0);
        // A state recorded whole forgets what was learned.
        memory.learn(&whole, &whole);
        let mut again = state("input_number.level", 90, json!({}));
        assert_eq!(memory.restore(&mut again, Some(&whole)), 0);
    }
}
