//! Turning a `history/history_during_period` reply into state changes (gap backfill).
//!
//! HA answers with compressed rows per entity: `{"s": state, "a": attributes,
//! "lu": last_updated[, "lc": last_changed]}` with epoch-second floats, `lc`
//! only when it differs from `lu`. The first row of an entity is its state in
//! force at the period's start (its time clamped to the start by current
//! cores); rows at or before the cursor were handed on already and are skipped.
//! Every other row becomes a `state_changed` event at `lu`, HA's own time, so
//! writing it again is idempotent.

use serde_json::{Map, Value};

use crate::event::{
    Attributes, Context, EntityId, Event, EventKind, LazyState, Origin, SourceId, State,
    StateChanged, Timestamp,
};

/// Why a row of a history reply was not turned into an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistoryError {
    /// The reply's `result` is not an object of entity ids to row arrays.
    #[error("history result is not an object of entity ids to row arrays")]
    NotAnObject,
    /// A key is not a valid entity id.
    #[error("history result names an invalid entity id {0:?}")]
    EntityId(String),
    /// A row lacks `s` or `lu`, or has a wrong type.
    #[error("history row {index} of {entity_id}: {reason}")]
    Row {
        /// The entity.
        entity_id: String,
        /// Position of the row.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The state changes of one reply after `after`, in HA's order per entity, and the rows that could not be read.
#[derive(Debug, Default)]
pub struct Backfill {
    /// One `state_changed` event per row after `after`; the row before it is its old state.
    pub events: Vec<Event>,
    /// Rows (or whole entities) that could not be read.
    pub errors: Vec<HistoryError>,
}

/// Reads `result` (the `result` of a history reply) into events strictly after `after`, carrying `source`.
pub fn rows_after(result: Value, after: Timestamp, source: &SourceId) -> Backfill {
    let mut out = Backfill::default();
    let Value::Object(entities) = result else {
        out.errors.push(HistoryError::NotAnObject);
        return out;
    };
    for (key, rows) in entities {
        let Ok(entity_id) = EntityId::new(&key) else {
            out.errors.push(HistoryError::EntityId(key));
            continue;
        };
        let Value::Array(rows) = rows else {
            out.errors.push(HistoryError::Row {
                entity_id: key,
                index: 0,
                reason: "rows are not an array",
            });
            continue;
        };
        let mut previous: Option<State> = None;
        for (index, row) in rows.into_iter().enumerate() {
            let state = match row_state(&entity_id, row) {
                Ok(state) => state,
                Err(reason) => {
                    out.errors.push(HistoryError::Row {
                        entity_id: key.clone(),
                        index,
                        reason,
                    });
                    continue;
                }
            };
            if state.last_updated > after {
                out.events.push(Event {
                    meta: Default::default(),
                    source: source.clone(),
                    time_fired: state.last_updated,
                    origin: Origin::Local,
                    context: Context::default(),
                    kind: EventKind::StateChanged(Box::new(StateChanged {
                        entity_id: entity_id.clone(),
                        old_state: previous.take().map(LazyState::from),
                        new_state: Some(state.clone()),
                    })),
                });
            }
            previous = Some(state);
        }
    }
    out
}

/// One compressed row as a [`State`] (no context: the recorder's history API does not return it).
fn row_state(entity_id: &EntityId, row: Value) -> Result<State, &'static str> {
    let Value::Object(mut row) = row else {
        return Err("row is not an object");
    };
    let state = match row.remove("s") {
        Some(Value::String(s)) => s,
        _ => return Err("no state string \"s\""),
    };
    let last_updated = epoch(&row, "lu")?.ok_or("no \"lu\"")?;
    let last_changed = epoch(&row, "lc")?.unwrap_or(last_updated);
    let attributes = match row.remove("a") {
        Some(Value::Object(map)) => Attributes::from(map),
        None | Some(Value::Null) => Attributes::new(),
        Some(_) => return Err("attributes \"a\" are not an object"),
    };
    Ok(State {
        entity_id: entity_id.clone(),
        state,
        attributes,
        last_changed,
        last_reported: None,
        last_updated,
        context: None,
    })
}

fn epoch(row: &Map<String, Value>, key: &str) -> Result<Option<Timestamp>, &'static str> {
    match row.get(key) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .and_then(Timestamp::from_epoch_seconds)
            .map(Some)
            .ok_or("a time is not epoch seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/fixtures/ha-history-response.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_real_reply_gives_every_row_after_the_cursor() {
        let recorded = fixture();
        let result = recorded["response"]["result"].clone();
        let total: usize = result
            .as_object()
            .unwrap()
            .values()
            .map(|rows| rows.as_array().unwrap().len())
            .sum();
        let source = SourceId::from("homeassistant/backfill");
        let all = rows_after(result.clone(), Timestamp::from_nanos(0), &source);
        assert!(all.errors.is_empty(), "{:?}", all.errors);
        assert_eq!(all.events.len(), total);

        let first = &all.events[0];
        let sc = first.state_changed().unwrap();
        assert_eq!(sc.entity_id.as_str(), "binary_sensor.accept_bool_7");
        assert!(sc.old_state.is_none(), "the first row has no predecessor");
        let new = sc.new_state.as_ref().unwrap();
        assert_eq!(new.state, "on");
        assert_eq!(
            new.attributes["friendly_name"],
            "Accept bool 7\nsecond line"
        );
        assert_eq!(new.attributes["is_open"], true);
        assert_eq!(
            first.time_fired,
            Timestamp::from_nanos(1_795_730_751_165_281_000),
            "lu to the microsecond"
        );
        assert_eq!(new.last_changed, new.last_updated, "no lc: it equals lu");
        let second = all.events[1].state_changed().unwrap();
        assert_eq!(
            second.old_state.as_ref().unwrap().get().unwrap().state,
            "on"
        );

        // A cursor in the middle keeps exactly the later rows.
        let cursor = Timestamp::from_nanos(1_795_730_752_215_205_000);
        let later = rows_after(result, cursor, &source);
        let expected = all.events.iter().filter(|e| e.time_fired > cursor).count();
        assert!(expected > 0 && expected < total);
        assert_eq!(later.events.len(), expected);
        assert!(later.events.iter().all(|e| e.time_fired > cursor));
    }

    #[test]
    fn last_changed_is_read_when_present_and_bad_rows_are_reported() {
        let result = serde_json::json!({
            "sensor.a": [
                {"s": "1", "a": {"unit_of_measurement": "W"}, "lu": 100.0},
                {"s": "1", "a": {"unit_of_measurement": "kW"}, "lu": 101.5, "lc": 100.0},
                {"s": 2, "lu": 102.0},
                {"s": "3", "a": {}}
            ],
            "not an id": [],
            "sensor.b": {"s": "x"}
        });
        let out = rows_after(result, Timestamp::from_nanos(0), &SourceId::from("t"));
        assert_eq!(out.events.len(), 2);
        let new = out.events[1]
            .state_changed()
            .unwrap()
            .new_state
            .clone()
            .unwrap();
        assert_eq!(new.last_changed, Timestamp::from_nanos(100_000_000_000));
        assert_eq!(new.last_updated, Timestamp::from_nanos(101_500_000_000));
        assert_eq!(out.errors.len(), 4, "{:?}", out.errors);
        assert!(matches!(
            rows_after(Value::Null, Timestamp::from_nanos(0), &SourceId::from("t")).errors[..],
            [HistoryError::NotAnObject]
        ));
    }
}
