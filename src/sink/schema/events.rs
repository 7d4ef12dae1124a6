//! Every bus event other than `state_changed` → one point in `schema.events_measurement` (default `ha_events`).
//!
//! - Tags: `event_type`, `origin`; for `call_service` the `domain` and
//!   `service` of its data (when strings); `entity_id` when `data.entity_id` is
//!   a string (as written, domain included); then the static `schema.tags`,
//!   which override, as for state points.
//! - Fields: `data` = the event's data as compact JSON; `context_id`,
//!   `context_parent_id`, `context_user_id` as strings when present (never
//!   tags: they are unbounded).
//! - Each scalar member of `data` is flattened too, under a name that carries
//!   its type, so one field name can never hold two types across events:
//!   - a string → string field `data_<key>_str`;
//!   - a number → float field `data_<key>`;
//!   - a bool → boolean field `data_<key>_bool`;
//!   - a number or bool whose key itself ends in `_str` or `_bool` is written
//!     as a string `data_<key>_str` (its JSON text), because `data_<key>`
//!     would then look like another member's `_str`/`_bool` name.
//!
//!   Float names never end in `_str`/`_bool`, string names always end in
//!   `_str`, bool names always end in `_bool`: the three sets are disjoint.
//!   Nulls, arrays and objects are only in `data`.
//! - InfluxDB refuses string values over 64 KiB: a longer `data` JSON is left
//!   out and `oversize_data=true` written instead; a longer flattened string is
//!   left out (it is still in `data` when that fits).
//! - Time: HA's `time_fired`.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Encoded, SchemaError, Scratch, SkipReason};
use crate::config::SchemaConfig;
use crate::event::{BusEvent, Event};
use crate::sink::line_protocol::LineBuilder;

/// The largest string field value InfluxDB accepts.
const MAX_STRING_FIELD: usize = 64 * 1024 - 1;

/// One flattened member: its field name in the scratch text and its value.
#[derive(Debug, Clone, Copy)]
enum Flat {
    Float(f64),
    Bool(bool),
    Str(usize, usize),
}

/// Encodes non-`state_changed` events into the events measurement.
#[derive(Debug)]
pub struct EventEncoder {
    measurement: String,
    static_tags: Vec<(String, String)>,
    /// Field names and values, names as ranges of the scratch text.
    flat: Vec<((usize, usize), Flat)>,
}

impl EventEncoder {
    /// Checks the measurement name and keeps the static tags.
    pub fn new(cfg: &SchemaConfig) -> Result<Self, SchemaError> {
        if cfg.events_measurement.is_empty() {
            return Err(SchemaError::EmptyEventsMeasurement);
        }
        Ok(EventEncoder {
            measurement: cfg.events_measurement.clone(),
            static_tags: cfg
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            flat: Vec::with_capacity(16),
        })
    }

    /// Appends the point for one bus event.
    pub(crate) fn encode(
        &mut self,
        event: &Event,
        bus: &BusEvent,
        scratch: &mut Scratch,
        out: &mut String,
    ) -> Encoded {
        let Scratch { text, json, .. } = scratch;
        text.clear();
        json.clear();
        let data = &bus.data;

        // Tags: (key, value) pairs, fixed ones first, static ones override; sorted below.
        let str_member = |k: &str| match data.get(k) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let mut tags: [(&str, &str); 5] = [("", ""); 5];
        tags[0] = ("event_type", bus.event_type.as_str());
        tags[1] = ("origin", event.origin.as_str());
        if bus.event_type == "call_service" {
            if let Some(d) = str_member("domain") {
                tags[2] = ("domain", d);
            }
            if let Some(s) = str_member("service") {
                tags[3] = ("service", s);
            }
        }
        if let Some(e) = str_member("entity_id") {
            tags[4] = ("entity_id", e);
        }
        for slot in tags.iter_mut() {
            if let Some((_, v)) = self.static_tags.iter().find(|(k, _)| k == slot.0) {
                slot.1 = v.as_str();
            }
        }
        tags.sort_unstable_by(|a, b| a.0.cmp(b.0));

        // Static tags that are not one of ours, merged in key order.
        let mut line = LineBuilder::new(out, &self.measurement);
        let mut extra = self
            .static_tags
            .iter()
            .filter(|(k, _)| !tags.iter().any(|(t, _)| t == k))
            .peekable();
        for (k, v) in tags.iter() {
            while let Some((ek, ev)) = extra.next_if(|(ek, _)| ek.as_str() < *k) {
                line.tag(ek, ev);
            }
            line.tag(k, v);
        }
        for (ek, ev) in extra {
            line.tag(ek, ev);
        }

        // Flattened members.
        let flat = &mut self.flat;
        flat.clear();
        for (key, value) in data {
            let typed_suffix = key.ends_with("_str") || key.ends_with("_bool");
            let start = text.len();
            text.push_str("data_");
            text.push_str(key);
            let item = match value {
                Value::String(s) if s.len() <= MAX_STRING_FIELD => {
                    text.push_str("_str");
                    let name = (start, text.len());
                    let vs = text.len();
                    text.push_str(s);
                    Some((name, Flat::Str(vs, text.len())))
                }
                Value::Number(n) if typed_suffix => {
                    text.push_str("_str");
                    let name = (start, text.len());
                    let vs = text.len();
                    let _ = write!(text, "{n}");
                    Some((name, Flat::Str(vs, text.len())))
                }
                Value::Number(n) => n
                    .as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| ((start, text.len()), Flat::Float(f))),
                Value::Bool(b) if typed_suffix => {
                    text.push_str("_str");
                    let name = (start, text.len());
                    let vs = text.len();
                    text.push_str(if *b { "true" } else { "false" });
                    Some((name, Flat::Str(vs, text.len())))
                }
                Value::Bool(b) => {
                    text.push_str("_bool");
                    Some(((start, text.len()), Flat::Bool(*b)))
                }
                _ => None,
            };
            match item {
                Some(item) => flat.push(item),
                None => text.truncate(start),
            }
        }
        let text: &str = text;
        let name = |r: (usize, usize)| text.get(r.0..r.1).unwrap_or("");
        flat.sort_unstable_by(|a, b| name(a.0).cmp(name(b.0)));

        // Fields in key order: context_*, data, data_*, oversize_data.
        let mut f = line.fields();
        let ctx = &event.context;
        if let Some(id) = &ctx.id {
            f.string("context_id", id);
        }
        if let Some(id) = &ctx.parent_id {
            f.string("context_parent_id", id);
        }
        if let Some(id) = &ctx.user_id {
            f.string("context_user_id", id);
        }
        let data_json = match serde_json::to_writer(&mut *json, data) {
            Ok(()) => std::str::from_utf8(json).ok(),
            Err(_) => None,
        };
        let oversize = match data_json {
            Some(j) if j.len() <= MAX_STRING_FIELD => {
                f.string("data", j);
                false
            }
            _ => true,
        };
        for (key, val) in flat.iter() {
            let key = name(*key);
            match *val {
                Flat::Float(v) => f.float(key, v),
                Flat::Bool(b) => f.boolean(key, b),
                Flat::Str(s, e) => f.string(key, text.get(s..e).unwrap_or("")),
            };
        }
        if oversize {
            f.boolean("oversize_data", true);
        }
        if f.finish(event.time_fired.as_nanos()) {
            Encoded::Points(1)
        } else {
            Encoded::Skipped(SkipReason::NoFields)
        }
    }
}
