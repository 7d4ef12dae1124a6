//! Decoding of server frames: the hot path of the WebSocket source.
//!
//! One pass of typed serde visitors turns a frame straight into [`ServerMessage`]
//! values: no `serde_json::Value` for `state_changed`, keys matched as borrowed
//! identifiers. HA writes `type` before `event` and `event_type` before `data`,
//! so the payload is decoded in place; when a peer orders keys differently the
//! part is captured as a borrowed raw slice and decoded once the type is known.
//!
//! Control messages (`auth_*`, `result`, `pong`) come out as [`ServerReply`],
//! the wire type in `protocol.rs` that the simulator writes, built by the same
//! visitor (no second pass, no `Value` but a result's payload). Events, bus and
//! `subscribe_entities` ones (`entities.rs` reads their compressed states), are
//! decoded only here.
//!
//! A coalesced array frame is first decoded in the same single pass; only if
//! some element fails is the array split into raw elements and each decoded
//! alone, so one bad element never costs the good ones.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::entities::{self, EntitiesMessage};
use super::protocol::{ErrorInfo, ServerReply};
use crate::event::{
    BusEvent, Context, Event, EventKind, Origin, SourceId, StateChanged, Timestamp,
};

/// One server message, decoded.
///
/// Control messages are [`ServerReply`], the type the simulator writes: one
/// wire type for both sides. Events are decoded here only (they are the hot path).
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `auth_required`, `auth_ok`, `auth_invalid`, `result` or `pong`.
    Reply(ServerReply),
    /// A bus event of subscription `id`.
    Event {
        /// The subscription's id.
        id: u64,
        /// The decoded event.
        event: Event,
    },
    /// An event of a `subscribe_entities` subscription `id` (compressed states and diffs).
    Entities {
        /// The subscription's id.
        id: u64,
        /// The decoded additions, changes and removals.
        message: EntitiesMessage,
    },
    /// A message type this client does not use.
    Other {
        /// Its `type`.
        kind: String,
    },
}

/// Why a frame (or one element of an array frame) could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all, or cut short.
    #[error("malformed JSON: {message}")]
    MalformedJson {
        /// The parser's message, with line and column.
        message: String,
    },
    /// Bytes that are not UTF-8, or a JSON escape of a lone surrogate.
    #[error("invalid UTF-8: {message}")]
    InvalidUtf8 {
        /// What was wrong.
        message: String,
    },
    /// Valid JSON with a missing field, a wrong type or an invalid value (entity id, timestamp).
    #[error("invalid field: {message}")]
    InvalidField {
        /// The parser's message, naming the field.
        message: String,
    },
    /// Larger than the configured limit; not decoded.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// One element of a coalesced array frame failed; the others were decoded.
    #[error("element {index} of an array frame: {error}")]
    InArray {
        /// Position in the array.
        index: usize,
        /// The element's own text, for the dead letter.
        element: Box<str>,
        /// Why it failed.
        #[source]
        error: Box<DecodeError>,
    },
}

impl DecodeError {
    /// A bounded label for metrics and dead letters.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::MalformedJson { .. } => "malformed_json",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::InArray { error, .. } => error.kind(),
        }
    }

    /// The exact input that failed when it is smaller than the frame (one array element).
    pub fn element(&self) -> Option<&str> {
        match self {
            DecodeError::InArray { element, .. } => Some(element),
            _ => None,
        }
    }

    /// Sorts a serde_json error into a kind.
    ///
    /// serde_json has no public error code; a lone-surrogate escape is a syntax
    /// error whose message names the surrogate, which is how it is told apart.
    fn from_json(error: serde_json::Error) -> Self {
        let message = error.to_string();
        match error.classify() {
            serde_json::error::Category::Data => DecodeError::InvalidField { message },
            serde_json::error::Category::Syntax if message.contains("surrogate") => {
                DecodeError::InvalidUtf8 { message }
            }
            _ => DecodeError::MalformedJson { message },
        }
    }
}

/// Decodes one text frame (an object, or an array of objects when coalescing); each element succeeds or fails alone.
pub fn decode_frame(
    frame: &str,
    source: &SourceId,
    out: &mut Vec<Result<ServerMessage, DecodeError>>,
) {
    let first = frame.bytes().find(|b| !b.is_ascii_whitespace());
    if first == Some(b'[') {
        decode_array(frame, source, out);
    } else {
        out.push(decode_one(frame, source));
    }
}

/// Decodes a binary frame: HA never sends one, but if its bytes are UTF-8 JSON they are read like text.
pub fn decode_binary_frame(
    frame: &[u8],
    source: &SourceId,
    out: &mut Vec<Result<ServerMessage, DecodeError>>,
) {
    match std::str::from_utf8(frame) {
        Ok(text) => decode_frame(text, source, out),
        Err(error) => out.push(Err(DecodeError::InvalidUtf8 {
            message: error.to_string(),
        })),
    }
}

fn decode_one(text: &str, source: &SourceId) -> Result<ServerMessage, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let message = MessageSeed { source }
        .deserialize(&mut de)
        .map_err(DecodeError::from_json)?;
    de.end().map_err(DecodeError::from_json)?;
    Ok(message)
}

fn decode_array(frame: &str, source: &SourceId, out: &mut Vec<Result<ServerMessage, DecodeError>>) {
    let start = out.len();
    let mut de = serde_json::Deserializer::from_str(frame);
    let whole = ArraySeed {
        source,
        out: &mut *out,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if whole.is_ok() {
        return;
    }
    out.truncate(start);
    let elements: Vec<&RawValue> = match serde_json::from_str(frame) {
        Ok(elements) => elements,
        Err(error) => {
            out.push(Err(DecodeError::from_json(error)));
            return;
        }
    };
    for (index, raw) in elements.into_iter().enumerate() {
        out.push(
            decode_one(raw.get(), source).map_err(|error| DecodeError::InArray {
                index,
                element: raw.get().into(),
                error: Box::new(error),
            }),
        );
    }
}

struct ArraySeed<'a, 's> {
    source: &'s SourceId,
    out: &'a mut Vec<Result<ServerMessage, DecodeError>>,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of Home Assistant messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(message) = seq.next_element_seed(MessageSeed {
            source: self.source,
        })? {
            self.out.push(Ok(message));
        }
        Ok(())
    }
}

/// Top-level keys of a server message.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum MessageField {
    Type,
    Id,
    HaVersion,
    Message,
    Success,
    Result,
    Error,
    Event,
    #[serde(other)]
    Other,
}

/// The `type` of a server message; unknown types keep their name.
enum MessageType {
    AuthRequired,
    AuthOk,
    AuthInvalid,
    Result,
    Event,
    Pong,
    Other(String),
}

impl<'de> Deserialize<'de> for MessageType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TypeVisitor;
        impl Visitor<'_> for TypeVisitor {
            type Value = MessageType;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message type string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageType, E> {
                Ok(match v {
                    "event" => MessageType::Event,
                    "result" => MessageType::Result,
                    "auth_required" => MessageType::AuthRequired,
                    "auth_ok" => MessageType::AuthOk,
                    "auth_invalid" => MessageType::AuthInvalid,
                    "pong" => MessageType::Pong,
                    other => MessageType::Other(other.to_string()),
                })
            }
        }
        deserializer.deserialize_str(TypeVisitor)
    }
}

struct MessageSeed<'s> {
    source: &'s SourceId,
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = ServerMessage;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ServerMessage, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_> {
    type Value = ServerMessage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Home Assistant message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServerMessage, A::Error> {
        let mut kind: Option<MessageType> = None;
        let mut id: Option<u64> = None;
        let mut ha_version: Option<String> = None;
        let mut message: Option<String> = None;
        let mut success: Option<bool> = None;
        let mut result: Option<serde_json::Value> = None;
        let mut error: Option<ErrorInfo> = None;
        let mut event: Option<Decoded> = None;
        let mut raw_event: Option<&'de RawValue> = None;
        while let Some(key) = map.next_key::<MessageField>()? {
            match key {
                MessageField::Type => kind = Some(map.next_value()?),
                MessageField::Id => id = Some(map.next_value()?),
                MessageField::HaVersion => ha_version = Some(map.next_value()?),
                MessageField::Message => message = Some(map.next_value()?),
                MessageField::Success => success = Some(map.next_value()?),
                MessageField::Result => result = map.next_value()?,
                MessageField::Error => error = map.next_value()?,
                MessageField::Event => {
                    if matches!(kind, Some(MessageType::Event)) {
                        event = Some(map.next_value_seed(EventSeed {
                            source: self.source,
                        })?);
                    } else {
                        raw_event = Some(map.next_value()?);
                    }
                }
                MessageField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(kind) = kind else {
            return Err(de::Error::missing_field("type"));
        };
        let id_required = |id: Option<u64>| id.ok_or_else(|| de::Error::missing_field("id"));
        Ok(match kind {
            MessageType::AuthRequired => ServerMessage::Reply(ServerReply::AuthRequired {
                ha_version: ha_version.ok_or_else(|| de::Error::missing_field("ha_version"))?,
            }),
            MessageType::AuthOk => ServerMessage::Reply(ServerReply::AuthOk {
                ha_version: ha_version.ok_or_else(|| de::Error::missing_field("ha_version"))?,
            }),
            MessageType::AuthInvalid => ServerMessage::Reply(ServerReply::AuthInvalid {
                message: message.unwrap_or_default(),
            }),
            MessageType::Result => ServerMessage::Reply(ServerReply::Result {
                id: id_required(id)?,
                success: success.ok_or_else(|| de::Error::missing_field("success"))?,
                result,
                error,
            }),
            MessageType::Event => {
                let event = match (event, raw_event) {
                    (Some(event), _) => event,
                    (None, Some(raw)) => {
                        let mut de = serde_json::Deserializer::from_str(raw.get());
                        EventSeed {
                            source: self.source,
                        }
                        .deserialize(&mut de)
                        .map_err(de::Error::custom)?
                    }
                    (None, None) => return Err(de::Error::missing_field("event")),
                };
                match event {
                    Decoded::Bus(event) => ServerMessage::Event {
                        id: id_required(id)?,
                        event,
                    },
                    Decoded::Entities(message) => ServerMessage::Entities {
                        id: id_required(id)?,
                        message,
                    },
                }
            }
            MessageType::Pong => ServerMessage::Reply(ServerReply::Pong {
                id: id_required(id)?,
            }),
            MessageType::Other(kind) => ServerMessage::Other { kind },
        })
    }
}

/// Keys of an event object.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum EventField {
    EventType,
    Data,
    Origin,
    TimeFired,
    Context,
    /// `subscribe_entities`: added states.
    #[serde(rename = "a")]
    Added,
    /// `subscribe_entities`: changed states.
    #[serde(rename = "c")]
    Changed,
    /// `subscribe_entities`: removed entities.
    #[serde(rename = "r")]
    Removed,
    #[serde(other)]
    Other,
}

/// What an `event` object holds: a bus event, or a `subscribe_entities` update (no `event_type`, keys `a`/`c`/`r`).
enum Decoded {
    Bus(Event),
    Entities(EntitiesMessage),
}

/// An `event_type`, without allocating for the common one.
enum EventTypeName {
    StateChanged,
    Other(String),
}

impl<'de> Deserialize<'de> for EventTypeName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = EventTypeName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event type string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventTypeName, E> {
                Ok(if v == crate::event::STATE_CHANGED {
                    EventTypeName::StateChanged
                } else {
                    EventTypeName::Other(v.to_string())
                })
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// `time_fired` is always an RFC 3339 string in events; a number there is a wrong type.
struct IsoTime(Timestamp);

impl<'de> Deserialize<'de> for IsoTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IsoVisitor;
        impl Visitor<'_> for IsoVisitor {
            type Value = IsoTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IsoTime, E> {
                Timestamp::parse_rfc3339(v).map(IsoTime).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(IsoVisitor)
    }
}

/// An event's `data`, read as the shape its `event_type` calls for.
struct DataSeed<'a>(&'a EventTypeName);

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = EventKind;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<EventKind, D::Error> {
        Ok(match self.0 {
            EventTypeName::StateChanged => {
                EventKind::StateChanged(Box::new(StateChanged::deserialize(deserializer)?))
            }
            EventTypeName::Other(name) => EventKind::Bus(BusEvent {
                event_type: name.clone(),
                data: serde_json::Map::deserialize(deserializer)?,
            }),
        })
    }
}

struct EventSeed<'s> {
    source: &'s SourceId,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Decoded;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Decoded, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = Decoded;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Home Assistant event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decoded, A::Error> {
        let mut entities: Option<EntitiesMessage> = None;
        let mut event_type: Option<EventTypeName> = None;
        let mut kind: Option<EventKind> = None;
        let mut raw_data: Option<&'de RawValue> = None;
        let mut origin: Option<Origin> = None;
        let mut time_fired: Option<Timestamp> = None;
        let mut context: Option<Context> = None;
        while let Some(key) = map.next_key::<EventField>()? {
            match key {
                EventField::EventType => event_type = Some(map.next_value()?),
                EventField::Data => match &event_type {
                    Some(name) => kind = Some(map.next_value_seed(DataSeed(name))?),
                    None => raw_data = Some(map.next_value()?),
                },
                EventField::Origin => origin = Some(map.next_value()?),
                EventField::TimeFired => time_fired = Some(map.next_value::<IsoTime>()?.0),
                EventField::Context => context = map.next_value()?,
                EventField::Added => {
                    entities.get_or_insert_default().added = entities::read_added(&mut map)?;
                }
                EventField::Changed => {
                    entities.get_or_insert_default().changed = entities::read_changed(&mut map)?;
                }
                EventField::Removed => {
                    entities.get_or_insert_default().removed = map.next_value()?;
                }
                EventField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let Some(event_type) = event_type else {
            return match entities {
                Some(message) => Ok(Decoded::Entities(message)),
                None => Err(de::Error::missing_field("event_type")),
            };
        };
        let kind = match (kind, raw_data) {
            (Some(kind), _) => kind,
            (None, raw) => {
                let mut de = serde_json::Deserializer::from_str(raw.map_or("{}", RawValue::get));
                DataSeed(&event_type)
                    .deserialize(&mut de)
                    .map_err(de::Error::custom)?
            }
        };
        Ok(Decoded::Bus(Event {
            meta: Default::default(),
            source: self.source.clone(),
            time_fired: time_fired.ok_or_else(|| de::Error::missing_field("time_fired"))?,
            origin: origin.unwrap_or_default(),
            context: context.unwrap_or_default(),
            kind,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SourceId {
        SourceId::from("homeassistant")
    }

    fn decode(frame: &str) -> Vec<Result<ServerMessage, DecodeError>> {
        let mut out = Vec::new();
        decode_frame(frame, &src(), &mut out);
        out
    }

    const SC: &str = r#"{"type":"event","event":{"event_type":"state_changed","data":{"entity_id":"sensor.t","old_state":null,"new_state":{"entity_id":"sensor.t","state":"21.5","attributes":{"unit_of_measurement":"°C"},"last_changed":"2026-01-01T10:00:00.123456+00:00","last_reported":"2026-01-01T10:00:00.123456+00:00","last_updated":"2026-01-01T10:00:00.123456+00:00","context":{"id":"01JGH2K7Q3N8V5T1R9X4C6B2MZ","parent_id":null,"user_id":null}}},"origin":"LOCAL","time_fired":"2026-01-01T10:00:00.123456+00:00","context":{"id":"01JGH2K7Q3N8V5T1R9X4C6B2MZ","parent_id":null,"user_id":null}},"id":2}"#;

    #[test]
    fn decodes_a_state_changed_event() {
        let out = decode(SC);
        let Ok(ServerMessage::Event { id, event }) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(*id, 2);
        let sc = event.state_changed().unwrap();
        assert_eq!(sc.entity_id.as_str(), "sensor.t");
        assert!(sc.old_state.is_none());
        assert_eq!(sc.new_state.as_ref().unwrap().state, "21.5");
        assert_eq!(
            event.time_fired,
            Timestamp::parse_rfc3339("2026-01-01T10:00:00.123456+00:00").unwrap()
        );
    }

    #[test]
    fn key_order_does_not_matter() {
        let reordered = r#"{"id":7,"event":{"data":{"domain":"light","service":"turn_on"},"time_fired":"2026-01-01T10:00:00+00:00","event_type":"call_service"},"type":"event"}"#;
        let out = decode(reordered);
        let Ok(ServerMessage::Event { id: 7, event }) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(event.event_type(), "call_service");
        let EventKind::Bus(bus) = &event.kind else {
            panic!()
        };
        assert_eq!(bus.data["service"], "turn_on");
        let data_first = SC
            .replace(r#"{"event_type":"state_changed","data":"#, r#"{"data":"#)
            .replace(r#""origin":"#, r#""event_type":"state_changed","origin":"#);
        assert!(data_first.starts_with(r#"{"type":"event","event":{"data":"#));
        let out = decode(&data_first);
        let Ok(ServerMessage::Event { event, .. }) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            event.state_changed().unwrap().entity_id.as_str(),
            "sensor.t"
        );
    }

    #[test]
    fn control_messages_decode() {
        assert!(matches!(
            &decode(r#"{"type":"auth_required","ha_version":"2026.1.0"}"#)[0],
            Ok(ServerMessage::Reply(ServerReply::AuthRequired { ha_version })) if ha_version == "2026.1.0"
        ));
        assert!(matches!(
            &decode(r#"{"type":"result","id":3,"success":false,"error":{"code":"id_reuse","message":"x"}}"#)[0],
            Ok(ServerMessage::Reply(ServerReply::Result { id: 3, success: false, error: Some(e), .. })) if e.code == "id_reuse"
        ));
        assert!(matches!(
            &decode(r#"{"id":4,"type":"pong"}"#)[0],
            Ok(ServerMessage::Reply(ServerReply::Pong { id: 4 }))
        ));
        assert!(matches!(
            &decode(r#"{"type":"something_new","x":1}"#)[0],
            Ok(ServerMessage::Other { kind }) if kind == "something_new"
        ));
    }

    #[test]
    fn what_the_simulator_writes_decodes_to_the_same_reply() {
        let replies = [
            ServerReply::AuthRequired {
                ha_version: "2026.1.0".into(),
            },
            ServerReply::AuthOk {
                ha_version: "2026.1.0".into(),
            },
            ServerReply::AuthInvalid {
                message: crate::source::homeassistant::protocol::MSG_INVALID_AUTH.into(),
            },
            ServerReply::success(5, serde_json::json!([{"entity_id": "sensor.t"}])),
            ServerReply::failure(6, "id_reuse", "Identifier values have to increase."),
            ServerReply::Pong { id: 7 },
        ];
        for reply in replies {
            let json = reply.to_json();
            let out = decode(&json);
            assert_eq!(out.len(), 1);
            assert_eq!(
                out[0].as_ref().ok(),
                Some(&ServerMessage::Reply(reply.clone()))
            );
            // serde's own reading of the type agrees with the hot-path decoder.
            let serde_read: ServerReply = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_read, reply, "{json}");
        }
        // A `null` result is no payload, on both readings.
        let ack = ServerReply::success(8, serde_json::Value::Null).to_json();
        let none = ServerReply::Result {
            id: 8,
            success: true,
            result: None,
            error: None,
        };
        assert_eq!(
            decode(&ack)[0].as_ref().ok(),
            Some(&ServerMessage::Reply(none.clone()))
        );
        assert_eq!(serde_json::from_str::<ServerReply>(&ack).unwrap(), none);
        // HA may leave out the reason of a refusal; both readings default it.
        let bare = r#"{"type":"auth_invalid"}"#;
        let refused = ServerReply::AuthInvalid {
            message: String::new(),
        };
        assert_eq!(
            decode(bare)[0].as_ref().ok(),
            Some(&ServerMessage::Reply(refused.clone()))
        );
        assert_eq!(serde_json::from_str::<ServerReply>(bare).unwrap(), refused);
    }

    #[test]
    fn errors_have_bounded_kinds() {
        let cases = [
            ("{not json", "malformed_json"),
            (
                r#"{"type":"event","event":{"event_type":"x","data":{},"time_fired":5},"id":1}"#,
                "invalid_field",
            ),
            (
                &SC.replace(r#""state":"21.5""#, r#""state":12"#),
                "invalid_field",
            ),
            (
                &SC.replace(r#""sensor.t""#, r#""sensor_t""#),
                "invalid_field",
            ),
            (
                &SC.replace(r#""state":"21.5""#, r#""state":"\udc80""#),
                "invalid_utf8",
            ),
            ("42", "invalid_field"),
            (r#"{"id":1}"#, "invalid_field"),
        ];
        for (frame, kind) in cases {
            let out = decode(frame);
            assert_eq!(out.len(), 1);
            match &out[0] {
                Err(e) => assert_eq!(e.kind(), kind, "{frame}: {e}"),
                Ok(m) => panic!("{frame} decoded as {m:?}"),
            }
        }
        let mut out = Vec::new();
        decode_binary_frame(&[b'{', 0xff, b'}'], &src(), &mut out);
        assert_eq!(out[0].as_ref().unwrap_err().kind(), "invalid_utf8");
    }

    #[test]
    fn a_bad_element_does_not_lose_the_good_ones() {
        let bad = SC.replace(r#""state":"21.5""#, r#""state":12"#);
        let frame = format!("[{SC},{bad},{SC}]");
        let out = decode(&frame);
        assert_eq!(out.len(), 3);
        assert!(matches!(out[0], Ok(ServerMessage::Event { .. })));
        let err = out[1].as_ref().unwrap_err();
        assert_eq!(err.kind(), "invalid_field");
        assert_eq!(err.element(), Some(bad.as_str()));
        assert!(matches!(out[2], Ok(ServerMessage::Event { .. })));
        let surrogate = SC.replace(r#""state":"21.5""#, r#""state":"\udc80""#);
        let out = decode(&format!("[{SC},{surrogate},{SC}]"));
        let kinds: Vec<_> = out
            .iter()
            .map(|r| r.as_ref().err().map(DecodeError::kind))
            .collect();
        assert_eq!(kinds, [None, Some("invalid_utf8"), None]);
        let good = decode(&format!(" [{SC},{SC}]"));
        assert_eq!(good.iter().filter(|r| r.is_ok()).count(), 2);
        let broken = decode(&format!("[{SC},{{"));
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].as_ref().unwrap_err().kind(), "malformed_json");
    }
}
