//! The one value that flows from sources to the encoder.
//!
//! An [`Event`] owns everything a stage may need: where it came from, the time
//! Home Assistant gave it, and either a decoded `state_changed` payload or the
//! raw data of any other bus event. Field names and JSON shapes follow Home
//! Assistant's own serialisation (`Event._as_dict`, `State._as_dict`) so the
//! same types decode recorded frames and let the simulator produce them.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Names the source an event came from (`homeassistant`, `simulator`, `mqtt:<name>`); cheap to clone per event.
pub type SourceId = Arc<str>;

/// Attributes keep HA's insertion order, which decides renames on key collisions.
pub type Attributes = serde_json::Map<String, serde_json::Value>;

/// Nanoseconds since the Unix epoch (UTC): the exact resolution InfluxDB stores.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// Why a timestamp from outside could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {value:?}: expected RFC 3339 like 2026-01-01T10:00:00.123456+00:00")]
pub struct TimestampError {
    /// The text that failed, cut to a readable length.
    pub value: String,
}

impl Timestamp {
    /// Wraps nanoseconds since the epoch.
    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch, as line protocol wants them.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// The wall clock, for the few places a source gives no time of its own.
    pub fn now() -> Self {
        let now = chrono::Utc::now();
        Timestamp(now.timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// Reads HA's `2026-01-01T10:00:00.123456+00:00` (any RFC 3339 offset accepted).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        let parsed = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| TimestampError {
            value: text.chars().take(64).collect(),
        })?;
        parsed
            .timestamp_nanos_opt()
            .map(Timestamp)
            .ok_or_else(|| TimestampError {
                value: text.chars().take(64).collect(),
            })
    }

    /// Reads the epoch-seconds floats of `subscribe_entities` and the history API, rounded to the microsecond HA keeps.
    pub fn from_epoch_seconds(seconds: f64) -> Option<Self> {
        if !seconds.is_finite() {
            return None;
        }
        let micros = (seconds * 1e6).round();
        if micros.abs() > (i64::MAX / 1000) as f64 {
            return None;
        }
        Some(Timestamp(micros as i64 * 1000))
    }

    /// Writes the time the way HA does: UTC, microseconds, `+00:00`.
    pub fn to_rfc3339(self) -> String {
        let dt = chrono::DateTime::from_timestamp_nanos(self.0);
        dt.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or epoch seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                Timestamp::from_epoch_seconds(v)
                    .ok_or_else(|| E::custom(format!("epoch seconds out of range: {v}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                self.visit_f64(v as f64)
            }
        }
        deserializer.deserialize_any(TsVisitor)
    }
}

/// A validated `domain.object_id`; the split is kept so tags need no re-parsing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityId {
    full: Box<str>,
    dot: usize,
}

/// Why an entity id from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entity_id {0:?}: expected domain.object_id")]
pub struct EntityIdError(pub String);

impl EntityId {
    /// Accepts `domain.object_id` with both parts non-empty.
    pub fn new(full: &str) -> Result<Self, EntityIdError> {
        match full.find('.') {
            Some(dot) if dot > 0 && dot + 1 < full.len() => Ok(EntityId {
                full: full.into(),
                dot,
            }),
            _ => Err(EntityIdError(full.chars().take(128).collect())),
        }
    }

    /// The whole id, `sensor.kitchen_temperature`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The part before the first dot, `sensor`.
    pub fn domain(&self) -> &str {
        &self.full[..self.dot]
    }

    /// The part after the first dot, `kitchen_temperature`: HA's `entity_id` tag.
    pub fn object_id(&self) -> &str {
        &self.full[self.dot + 1..]
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.full, f)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl Serialize for EntityId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for EntityId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = EntityId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an entity id string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EntityId, E> {
                EntityId::new(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(IdVisitor)
    }
}

/// HA's context: who or what caused a change; ids are unbounded, so never tags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// ULID of this context.
    #[serde(default)]
    pub id: Option<String>,
    /// The context that caused this one, if any.
    #[serde(default)]
    pub parent_id: Option<String>,
    /// The HA user behind the change, if any.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// One entity's state as HA serialises it in events, `get_states` and history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The entity this state belongs to.
    pub entity_id: EntityId,
    /// The raw state string (`"21.5"`, `"on"`, `"unavailable"` …).
    pub state: String,
    /// Attributes in HA's order.
    #[serde(default)]
    pub attributes: Attributes,
    /// When `state` last changed.
    pub last_changed: Timestamp,
    /// Sent by HA since 2024.x; absent in older frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reported: Option<Timestamp>,
    /// When state or attributes last changed: the point's time in history backfill.
    pub last_updated: Timestamp,
    /// The context of the change that produced this state.
    #[serde(default)]
    pub context: Option<Context>,
}

/// Where HA says an event was fired: this instance or a remote one (eventstream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Origin {
    /// Fired by this HA instance.
    #[default]
    #[serde(rename = "LOCAL")]
    Local,
    /// Re-fired from another instance.
    #[serde(rename = "REMOTE")]
    Remote,
}

impl Origin {
    /// HA's spelling, used as a tag value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Local => "LOCAL",
            Origin::Remote => "REMOTE",
        }
    }
}

/// The payload of a `state_changed` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateChanged {
    /// The entity that changed.
    pub entity_id: EntityId,
    /// `None` when the entity was just added.
    pub old_state: Option<State>,
    /// `None` when the entity was removed.
    pub new_state: Option<State>,
}

/// Any bus event other than `state_changed`, kept whole so nothing is lost.
#[derive(Clone, Debug, PartialEq)]
pub struct BusEvent {
    /// `call_service`, `automation_triggered`, `homeassistant_start` …
    pub event_type: String,
    /// The event's `data` object as HA sent it.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// What happened: a decoded state change or another bus event.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A `state_changed` event.
    StateChanged(Box<StateChanged>),
    /// Every other event type.
    Bus(BusEvent),
}

/// One HA bus event, owned, with its source and HA's own time.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The source that produced it.
    pub source: SourceId,
    /// HA's `time_fired`: the point's timestamp, so replays overwrite themselves.
    pub time_fired: Timestamp,
    /// `LOCAL` or `REMOTE`.
    pub origin: Origin,
    /// The event's context.
    pub context: Context,
    /// The payload.
    pub kind: EventKind,
}

/// The type string of a state change, shared to avoid re-spelling it.
pub const STATE_CHANGED: &str = "state_changed";

impl Event {
    /// HA's `event_type`.
    pub fn event_type(&self) -> &str {
        match &self.kind {
            EventKind::StateChanged(_) => STATE_CHANGED,
            EventKind::Bus(bus) => &bus.event_type,
        }
    }

    /// The entity a state change is about, if this is one.
    pub fn entity_id(&self) -> Option<&EntityId> {
        match &self.kind {
            EventKind::StateChanged(sc) => Some(&sc.entity_id),
            EventKind::Bus(_) => None,
        }
    }

    /// The state change payload, if this is one.
    pub fn state_changed(&self) -> Option<&StateChanged> {
        match &self.kind {
            EventKind::StateChanged(sc) => Some(sc),
            EventKind::Bus(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_ha_format() {
        let t = Timestamp::parse_rfc3339("2026-11-26T20:44:47.219127+00:00").unwrap();
        assert_eq!(t.as_nanos(), 1_795_725_887_219_127_000);
        assert_eq!(t.to_rfc3339(), "2026-11-26T20:44:47.219127+00:00");
    }

    #[test]
    fn timestamp_accepts_offsets_and_epoch_floats() {
        let a = Timestamp::parse_rfc3339("2026-01-01T11:00:00.5+01:00").unwrap();
        let b = Timestamp::parse_rfc3339("2026-01-01T10:00:00.500000+00:00").unwrap();
        assert_eq!(a, b);
        let e = Timestamp::from_epoch_seconds(1_795_725_884.332_595).unwrap();
        assert_eq!(e.as_nanos(), 1_795_725_884_332_595_000);
        assert!(Timestamp::from_epoch_seconds(f64::NAN).is_none());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn entity_id_splits_and_rejects_garbage() {
        let id = EntityId::new("sensor.kitchen.temp").unwrap();
        assert_eq!(id.domain(), "sensor");
        assert_eq!(id.object_id(), "kitchen.temp");
        for bad in ["", "sensor", ".x", "sensor."] {
            assert!(EntityId::new(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
