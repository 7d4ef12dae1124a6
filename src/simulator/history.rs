//! The simulator's recorder: every state change it made, sent to a client or
//! not, as HA's recorder keeps them, and the `history/history_during_period`
//! answer computed from that record.
//!
//! Like HA's, this recorder is not instant and not complete: a change becomes
//! history at the recorder's next commit (every `recorder_commit_interval`,
//! HA's `commit_interval`), entities it excludes are never history, and the
//! attributes HA's entity classes declare unrecorded (`_unrecorded_attributes`,
//! `_entity_component_unrecorded_attributes`) are dropped from what it keeps.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Shared, SimulatorConfig, UNBOUNDED_RETAIN, lock};
use crate::event::{Attributes, EntityId, State, Timestamp};
use crate::source::homeassistant::protocol::{ERR_INVALID_FORMAT, MSG_INVALID_FORMAT, ServerReply};

/// The attributes HA's recorder does not keep for an entity of `domain`: what the
/// entity classes of HA's core declare (`light`: `LightEntity`; `climate`:
/// `ClimateEntity`; `select`/`input_select`: `SelectEntity` and `InputSelect`;
/// `input_number`, `input_boolean`, `input_text`, `input_datetime`, `person`,
/// `schedule`: their `editable` flag and, for `input_number`, its limits).
pub(crate) fn unrecorded_attributes(domain: &str) -> &'static [&'static str] {
    match domain {
        "light" => &[
            "supported_color_modes",
            "effect_list",
            "min_mireds",
            "max_mireds",
            "min_color_temp_kelvin",
            "max_color_temp_kelvin",
        ],
        "climate" => &[
            "hvac_modes",
            "fan_modes",
            "swing_modes",
            "preset_modes",
            "min_temp",
            "max_temp",
            "target_temp_step",
            "min_humidity",
            "max_humidity",
        ],
        "select" => &["options"],
        "input_select" => &["options", "editable"],
        "input_number" => &["min", "max", "step", "mode", "editable"],
        "input_boolean" | "input_text" | "input_datetime" | "input_button" | "person"
        | "schedule" => &["editable"],
        _ => &[],
    }
}

/// One change the generator made: whole (what was sent live) and as the recorder keeps it.
struct Change {
    /// The state as it was sent.
    made: State,
    /// The state as the recorder keeps it; `None` for an excluded entity.
    kept: Option<State>,
    /// When it was recorded: it is history from the first commit after this.
    at: Instant,
}

/// Every new state the generator made, oldest first (the latest [`UNBOUNDED_RETAIN`]).
pub(super) struct Recorder {
    changes: VecDeque<Change>,
    commit_interval: Duration,
    exclude: HashSet<String>,
    drop_unrecorded: bool,
    /// Commits happen at `started + k × commit_interval`.
    started: Instant,
}

impl Recorder {
    /// A recorder with `cfg`'s commit interval, exclusions and attribute rules.
    pub(super) fn new(cfg: &SimulatorConfig) -> Self {
        Recorder {
            changes: VecDeque::new(),
            commit_interval: cfg.recorder_commit_interval,
            exclude: cfg.recorder_exclude.iter().cloned().collect(),
            drop_unrecorded: cfg.unrecorded_attributes,
            started: Instant::now(),
        }
    }

    /// Keeps `state`, forgetting the oldest change past [`UNBOUNDED_RETAIN`].
    pub(super) fn record(&mut self, state: State) {
        let kept = (!self.exclude.contains(state.entity_id.as_str())).then(|| {
            let mut kept = state.clone();
            if self.drop_unrecorded {
                let unrecorded = unrecorded_attributes(state.entity_id.domain());
                if !unrecorded.is_empty() {
                    kept.attributes = Attributes::from_iter(
                        state
                            .attributes
                            .iter()
                            .filter(|(k, _)| !unrecorded.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone())),
                    );
                }
            }
            kept
        });
        self.changes.push_back(Change {
            made: state,
            kept,
            at: Instant::now(),
        });
        if self.changes.len() > UNBOUNDED_RETAIN {
            self.changes.pop_front();
        }
    }

    /// Every change made, whole, oldest first.
    pub(super) fn made(&self) -> impl Iterator<Item = &State> {
        self.changes.iter().map(|c| &c.made)
    }

    /// The changes committed by `now`, as the recorder keeps them, oldest first.
    pub(super) fn committed(&self, now: Instant) -> impl Iterator<Item = &State> {
        let last_commit = self.last_commit(now);
        self.changes
            .iter()
            .take_while(move |c| last_commit.is_none_or(|commit| c.at <= commit))
            .filter_map(|c| c.kept.as_ref())
    }

    /// The time of the last commit at or before `now`; `None` when every change is committed at once.
    fn last_commit(&self, now: Instant) -> Option<Instant> {
        if self.commit_interval.is_zero() {
            return None;
        }
        let since = now.saturating_duration_since(self.started);
        let ticks = since.as_nanos() / self.commit_interval.as_nanos();
        let offset = self
            .commit_interval
            .saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX));
        Some(self.started + offset)
    }
}

/// Answers `history/history_during_period` from the recorder, in HA's compressed shape.
///
/// Per entity asked for (in the order asked) that has rows: the state in force
/// at `start_time` with its time clamped to `start_time` (when
/// `include_start_time_state`, HA's default), then every change after
/// `start_time` up to `end_time` (default now) as `{"s","a","lu"[,"lc"]}`, `lc`
/// only when it differs from `lu`. The lossy options (`significant_changes_only`,
/// `minimal_response`, `no_attributes`) are not simulated: the answer is always
/// the lossless one — of what the recorder committed and keeps.
pub(super) fn history_during_period(id: u64, msg: &Value, shared: &Shared) -> ServerReply {
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
    let now = Instant::now();
    let mut result = serde_json::Map::new();
    for entity in wanted {
        let mut rows = Vec::new();
        let mut at_start: Option<&State> = None;
        for state in recorder.committed(now).filter(|s| s.entity_id == entity) {
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
