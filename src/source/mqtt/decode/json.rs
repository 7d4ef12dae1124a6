//! `json`: one JSON object per message (Zigbee2MQTT, Tasmota `SENSOR` …), flattened.
//!
//! Nested objects are flattened with the subscription's separator
//! (`{"color":{"x":1}}` → `color_x`); arrays stay JSON arrays; `null` keys are
//! left out. With `split = "per_key"` every key becomes a state event
//! `<domain>.<device>_<key>` whose state is the value's text (numbers as sent,
//! bools `on`/`off`); with `per_device` one event `<domain>.<device>` carries
//! every key as an attribute and the `state_key` value as its state.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{
    BoolMode, Ctx, DecodeError, JsonSplit, TimestampFormat, bus_event, entity, state_event,
};
use crate::event::{Attributes, Event, Timestamp};

/// Buffers reused across messages.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// Flattened (key, value) pairs of the message in hand.
    pairs: Vec<(String, Value)>,
    /// The key path being built.
    prefix: String,
    /// Entity id text being built.
    id: String,
}

/// Deepest nesting flattened; deeper input is refused (no stack exhaustion on hostile payloads).
const MAX_DEPTH: usize = 32;

struct Flatten<'s> {
    sep: &'s str,
    prefix: &'s mut String,
    out: &'s mut Vec<(String, Value)>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Flatten<'_> {
    fn leaf(self, v: Value) {
        self.out.push((self.prefix.clone(), v));
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Value::Bool(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Value::from(v));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Value::from(v));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(Value::from(v));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(Value::String(v.to_string()));
        Ok(())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.leaf(Value::String(v));
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.leaf(v);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested deeper than 32 levels"));
        }
        let base = self.prefix.len();
        loop {
            self.prefix.truncate(base);
            if base > 0 {
                self.prefix.push_str(self.sep);
            }
            if map.next_key_seed(AppendKey(self.prefix))?.is_none() {
                break;
            }
            map.next_value_seed(Flatten {
                sep: self.sep,
                prefix: self.prefix,
                out: self.out,
                depth: self.depth + 1,
            })?;
        }
        self.prefix.truncate(base);
        Ok(())
    }
}

/// Appends a map key to the key path as it is read, without a `String` per key
/// (a `Cow<str>` key is always deserialized owned).
struct AppendKey<'s>(&'s mut String);

impl<'de> DeserializeSeed<'de> for AppendKey<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for AppendKey<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push_str(v);
        Ok(())
    }
}

use serde::Deserialize;

/// Flattens one JSON object into `pairs`; `Err` says why it is not one.
pub(super) fn flatten(
    payload: &[u8],
    sep: &str,
    scratch_prefix: &mut String,
    pairs: &mut Vec<(String, Value)>,
) -> Result<(), (&'static str, String)> {
    pairs.clear();
    scratch_prefix.clear();
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(("empty_payload", "no JSON value".to_string())),
        Some(b'{') => {}
        Some(_) => {
            // Valid JSON of the wrong shape, or not JSON at all.
            return Err(match serde_json::from_slice::<de::IgnoredAny>(payload) {
                Ok(_) => ("wrong_type", "expected a JSON object".to_string()),
                Err(e) => ("bad_json", e.to_string()),
            });
        }
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let seed = Flatten {
        sep,
        prefix: scratch_prefix,
        out: pairs,
        depth: 0,
    };
    seed.deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| ("bad_json", e.to_string()))
}

/// A number read from a timestamp field: integers stay exact.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

/// Reads a timestamp value by `format`.
pub(super) fn parse_time(v: &Value, format: TimestampFormat) -> Option<Timestamp> {
    let number = match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64()?),
        },
        Value::String(s) => match format {
            TimestampFormat::Auto | TimestampFormat::Rfc3339 => {
                if let Ok(t) = Timestamp::parse_rfc3339(s) {
                    return Some(t);
                }
                // Tasmota's `Time` has no offset: read it as UTC.
                let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                    .ok()?;
                return naive.and_utc().timestamp_nanos_opt().map(Timestamp);
            }
            _ => match s.trim().parse::<i64>() {
                Ok(i) => Num::Int(i),
                Err(_) => Num::Float(s.trim().parse::<f64>().ok()?),
            },
        },
        _ => None?,
    };
    // Nanoseconds per unit.
    let per_unit: i64 = match format {
        TimestampFormat::Rfc3339 => return None,
        TimestampFormat::EpochSeconds => 1_000_000_000,
        TimestampFormat::EpochMillis => 1_000_000,
        TimestampFormat::EpochMicros => 1_000,
        TimestampFormat::EpochNanos => 1,
        // By size: seconds until the year ~5000, then ms, µs, ns.
        TimestampFormat::Auto => {
            let a = match number {
                Num::Int(i) => i.unsigned_abs() as f64,
                Num::Float(f) => f.abs(),
            };
            if a < 1e11 {
                1_000_000_000
            } else if a < 1e14 {
                1_000_000
            } else if a < 1e17 {
                1_000
            } else {
                1
            }
        }
    };
    match number {
        Num::Int(i) => i.checked_mul(per_unit).map(Timestamp),
        Num::Float(f) => {
            // Fractions are kept to the microsecond (what HA and most firmwares send).
            let micros = (f * (per_unit as f64 / 1_000.0)).round();
            if micros.is_finite() && micros.abs() < (i64::MAX / 1_000) as f64 {
                Some(Timestamp(micros as i64 * 1_000))
            } else {
                None
            }
        }
    }
}

/// A value as a state string: numbers as sent, bools `on`/`off` (or `true`/`false` in `text` mode).
fn state_text(v: Value, bools: BoolMode) -> String {
    match v {
        Value::String(s) => s,
        Value::Bool(b) => match (b, bools) {
            (true, BoolMode::Bool) => "on".to_string(),
            (false, BoolMode::Bool) => "off".to_string(),
            (true, BoolMode::Text) => "true".to_string(),
            (false, BoolMode::Text) => "false".to_string(),
        },
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Decodes one JSON object message.
pub(super) fn decode(
    ctx: &Ctx<'_>,
    scratch: &mut Scratch,
    out: &mut Vec<Event>,
) -> Result<(), DecodeError> {
    let cfg = &ctx.sub.cfg;
    // serde_json checks the UTF-8 of strings as it reads them, and a byte outside a string
    // that is not JSON is an error anyway: the payload is read once, and only a refused one
    // is checked on its own to give the right reason.
    if let Err((reason, detail)) = flatten(
        ctx.msg.payload,
        &cfg.separator,
        &mut scratch.prefix,
        &mut scratch.pairs,
    ) {
        ctx.text()?;
        return Err(ctx.err(reason, format_args!("{detail} on {:?}", ctx.msg.topic)));
    }
    let mut time = ctx.msg.received;
    if let Some(key) = &ctx.sub.ts_key
        && let Some(pos) = scratch.pairs.iter().position(|(k, _)| k == key)
    {
        let (_, v) = scratch.pairs.remove(pos);
        time = parse_time(&v, cfg.timestamp_format).ok_or_else(|| {
            ctx.err(
                "bad_timestamp",
                format_args!("{key} = {v} is not a {:?} timestamp", cfg.timestamp_format),
            )
        })?;
    }
    let retained = ctx.msg.retained;
    if let Some(event_type) = &cfg.event_type {
        let mut data = serde_json::Map::with_capacity(scratch.pairs.len() + 1);
        data.insert(
            "topic".to_string(),
            Value::String(ctx.msg.topic.to_string()),
        );
        for (name, value) in ctx.extras() {
            data.insert(name.to_string(), Value::String(value.to_string()));
        }
        data.extend(scratch.pairs.drain(..));
        out.push(bus_event(ctx.sub, event_type, data, time, retained));
        return Ok(());
    }
    match cfg.split {
        JsonSplit::PerKey => {
            out.reserve(scratch.pairs.len());
            let extras: Vec<(&str, &str)> = ctx.extras().collect();
            // The device part is the same for every key: build it once.
            entity::base(ctx, &mut scratch.id);
            let base_len = scratch.id.len();
            for (key, value) in scratch.pairs.drain(..) {
                let id = entity::with_key(ctx, base_len, Some(&key), &mut scratch.id)?;
                let attributes: Attributes = extras
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                    .collect();
                out.push(state_event(
                    ctx.sub,
                    id,
                    state_text(value, cfg.bools),
                    attributes,
                    time,
                    time,
                    retained,
                ));
            }
        }
        JsonSplit::PerDevice => {
            let id = entity::entity_id(ctx, None, &mut scratch.id)?;
            let state = match scratch.pairs.iter().position(|(k, _)| *k == cfg.state_key) {
                Some(pos) => state_text(scratch.pairs.remove(pos).1, cfg.bools),
                None => NO_STATE_KEY.to_string(),
            };
            // Sized once: collecting a chain of a filtered iterator grows the vector step by step.
            let mut entries = Vec::with_capacity(ctx.caps.len() + scratch.pairs.len());
            entries.extend(
                ctx.extras()
                    .map(|(k, v)| (k.to_string(), Value::String(v.to_string()))),
            );
            entries.append(&mut scratch.pairs);
            let attributes = Attributes::from(entries);
            out.push(state_event(
                ctx.sub, id, state, attributes, time, time, retained,
            ));
        }
    }
    Ok(())
}

/// The state of a `per_device` event whose payload has no `state_key`: non-empty, so the point is written.
pub const NO_STATE_KEY: &str = "ok";
