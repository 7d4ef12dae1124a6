//! Events for unit tests of this module and of the other pipeline modules
//! (expressions, transforms, rates).

use std::sync::Arc;

use crate::event::{
    Attributes, BusEvent, Context, EntityId, Event, EventKind, LazyState, Origin, State,
    StateChanged, Timestamp,
};

fn state(entity: &str, value: &str, attributes: serde_json::Value) -> State {
    let attributes: Attributes = match attributes {
        serde_json::Value::Object(map) => map.into(),
        _ => Attributes::new(),
    };
    State::at(
        EntityId::new(entity).unwrap(),
        value.to_string(),
        attributes,
        Timestamp::from_nanos(1_790_000_000_000_000_000),
    )
}

/// A `state_changed` for `entity`; `old` gives the old state's value (same attributes).
pub fn state_event(
    entity: &str,
    value: &str,
    attributes: serde_json::Value,
    old: Option<&str>,
) -> Event {
    let old_state = old.map(|o| LazyState::from(state(entity, o, attributes.clone())));
    Event {
        meta: Default::default(),
        source: Arc::from("homeassistant"),
        time_fired: Timestamp::from_nanos(1_795_725_887_219_127_000),
        origin: Origin::Local,
        context: Context::default(),
        kind: EventKind::StateChanged(Box::new(StateChanged {
            entity_id: EntityId::new(entity).unwrap(),
            old_state,
            new_state: Some(state(entity, value, attributes)),
        })),
    }
}

/// A bus event of `event_type` with empty data.
pub fn bus_event(event_type: &str) -> Event {
    Event {
        meta: Default::default(),
        source: Arc::from("homeassistant"),
        time_fired: Timestamp::from_nanos(1_795_725_887_219_127_000),
        origin: Origin::Local,
        context: Context::default(),
        kind: EventKind::Bus(BusEvent {
            event_type: event_type.to_string(),
            data: serde_json::Map::new(),
        }),
    }
}
