//! The simulator's recorder: every state change it made, sent to a client or
//! not, as HA's recorder keeps them, and the `history/history_during_period`
//! answer computed from that record.

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::{Shared, UNBOUNDED_RETAIN, lock};
use crate::event::{EntityId, State, Timestamp};
use crate::source::homeassistant::protocol::{ERR_INVALID_FORMAT, MSG_INVALID_FORMAT, ServerReply};

/// Every new state the generator made, oldest first (the latest [`UNBOUNDED_RETAIN`]).
#[derive(Default)]
pub(super) struct Recorder {
    changes: VecDeque<State>,
}

impl Recorder {
    /// Keeps `state`, forgetting the oldest change past [`UNBOUNDED_RETAIN`].
    pub(super) fn record(&mut self, state: State) {
        self.changes.push_back(state);
        if self.changes.len() > UNBOUNDED_RETAIN {
            self.changes.pop_front();
        }
    }

    /// The recorded changes, oldest first.
    pub(super) fn changes(&self) -> impl Iterator<Item = &State> {
        self.changes.iter()
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
/// the lossless one.
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
    let mut result = serde_json::Map::new();
    for entity in wanted {
        let mut rows = Vec::new();
        let mut at_start: Option<&State> = None;
        for state in recorder.changes().filter(|s| s.entity_id == entity) {
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
