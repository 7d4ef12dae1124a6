//! Every bus event other than `state_changed` → one point in `schema.events_measurement` (default `ha_events`).
//!
//! - Tags: `event_type`, `origin`; for `call_service` the `domain` and
//!   `service` of its data (when strings); `entity_id` when `data.entity_id` is
//!   a string (as written, domain included); then the static `schema.tags`,
//!   which override, as for state points; then a filter rule's transform
//!   tags, which override all of these (and its measurement replaces
//!   `schema.events_measurement`).
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

use super::{Encoded, PointOverrides, SchemaError, Scratch, SkipReason};
use crate::config::SchemaConfig;
use crate::encode::line_protocol::LineBuilder;
use crate::event::{BusEvent, Event};

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
        overrides: Option<&PointOverrides>,
        scratch: &mut Scratch,
        out: &mut String,
    ) -> Encoded {
        let Scratch { text, json, .. } = scratch;
        text.clear();
        json.clear();
        let data = &bus.data;
        let measurement = overrides
            .and_then(|o| o.measurement.as_deref())
            .unwrap_or(&self.measurement);
        // A transform's tags win over the static ones: merged into a copy, in key order
        // (only for events a transform rule matched; the default path borrows).
        let merged: Vec<(String, String)>;
        let static_tags: &[(String, String)] = match overrides {
            Some(o) if !o.tags.is_empty() => {
                let mut all = self.static_tags.clone();
                for (k, v) in &o.tags {
                    match all.iter_mut().find(|(key, _)| key == k) {
                        Some(slot) => slot.1 = v.clone(),
                        None => all.push((k.clone(), v.clone())),
                    }
                }
                all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                merged = all;
                &merged
            }
            _ => &self.static_tags,
        };

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
            if let Some((_, v)) = static_tags.iter().find(|(k, _)| k == slot.0) {
                slot.1 = v.as_str();
            }
        }
        tags.sort_unstable_by(|a, b| a.0.cmp(b.0));

        // Static tags that are not one of ours, merged in key order.
        let mut line = LineBuilder::new(out, measurement);
        let mut extra = static_tags
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use serde_json::json;

    use super::super::Encoder;
    use super::*;
    use crate::event::{Context, EventKind, Origin, Timestamp};

    fn bus(event_type: &str, data: Value) -> Event {
        Event {
            meta: Default::default(),
            source: Arc::from("test"),
            time_fired: Timestamp::from_nanos(7),
            origin: Origin::Remote,
            context: Context {
                id: Some("C".into()),
                parent_id: Some("P".into()),
                user_id: None,
            },
            kind: EventKind::Bus(BusEvent {
                event_type: event_type.into(),
                data: data.as_object().cloned().unwrap_or_default(),
            }),
        }
    }

    fn encode_with(cfg: &SchemaConfig, event: &Event) -> String {
        let mut enc = Encoder::new(cfg).unwrap();
        let mut out = String::new();
        assert_eq!(enc.encode(event, &mut out), Encoded::Points(1));
        out
    }

    #[test]
    fn members_are_flattened_under_type_carrying_names() {
        let ev = bus(
            "automation_triggered",
            json!({"name": "Hall light", "entity_id": "automation.hall", "n": 3,
                   "on": true, "x_str": 5, "y_bool": false, "nested": {"a": 1}, "none": null}),
        );
        assert_eq!(
            encode_with(&SchemaConfig::default(), &ev),
            "ha_events,entity_id=automation.hall,event_type=automation_triggered,origin=REMOTE \
             context_id=\"C\",context_parent_id=\"P\",\
             data=\"{\\\"name\\\":\\\"Hall light\\\",\\\"entity_id\\\":\\\"automation.hall\\\",\\\"n\\\":3,\
             \\\"on\\\":true,\\\"x_str\\\":5,\\\"y_bool\\\":false,\\\"nested\\\":{\\\"a\\\":1},\\\"none\\\":null}\",\
             data_entity_id_str=\"automation.hall\",data_n=3.0,data_name_str=\"Hall light\",\
             data_on_bool=true,data_x_str_str=\"5\",data_y_bool_str=\"false\" 7\n"
        );
    }

    #[test]
    fn a_key_never_changes_type_across_events() {
        // The same key as number, string and bool lands in three different fields.
        let mut names = Vec::new();
        for v in [json!(1.5), json!("1.5"), json!(true)] {
            let line = encode_with(&SchemaConfig::default(), &bus("e", json!({ "k": v })));
            let field = line
                .split([' ', ','])
                .find(|p| p.starts_with("data_k"))
                .unwrap()
                .split('=')
                .next()
                .unwrap()
                .to_string();
            names.push(field);
        }
        assert_eq!(names, ["data_k", "data_k_str", "data_k_bool"]);
    }

    #[test]
    fn static_tags_merge_in_order_and_override() {
        let cfg = SchemaConfig {
            tags: BTreeMap::from([
                ("a".to_string(), "1".to_string()),
                ("origin".to_string(), "site".to_string()),
                ("service".to_string(), "forced".to_string()),
                ("zz".to_string(), "2".to_string()),
            ]),
            ..SchemaConfig::default()
        };
        let ev = bus(
            "call_service",
            json!({"domain": "light", "service": "turn_on"}),
        );
        let line = encode_with(&cfg, &ev);
        assert!(
            line.starts_with(
                "ha_events,a=1,domain=light,event_type=call_service,origin=site,service=forced,zz=2 "
            ),
            "{line}"
        );
        // No service in the data: the static tag still appears, in order.
        let line = encode_with(&cfg, &bus("call_service", json!({"domain": "light"})));
        assert!(
            line.starts_with(
                "ha_events,a=1,domain=light,event_type=call_service,origin=site,service=forced,zz=2 "
            ),
            "{line}"
        );
    }

    #[test]
    fn transform_measurement_and_tags_win_over_everything() {
        let cfg = SchemaConfig {
            tags: BTreeMap::from([
                ("a".to_string(), "1".to_string()),
                ("site".to_string(), "static".to_string()),
            ]),
            ..SchemaConfig::default()
        };
        let ev = bus(
            "call_service",
            json!({"domain": "light", "service": "turn_on"}),
        );
        let overrides = PointOverrides {
            measurement: Some("calls".into()),
            tags: vec![
                ("site".into(), "rule".into()),
                ("service".into(), "any".into()),
                ("b".into(), "2".into()),
            ],
        };
        let mut enc = Encoder::new(&cfg).unwrap();
        let mut out = String::new();
        assert_eq!(
            enc.encode_with(&ev, &overrides, &mut out),
            Encoded::Points(1)
        );
        assert!(
            out.starts_with(
                "calls,a=1,b=2,domain=light,event_type=call_service,origin=REMOTE,service=any,site=rule "
            ),
            "{out}"
        );
        // Without overrides the same encoder writes the configured point.
        out.clear();
        enc.encode(&ev, &mut out);
        assert!(
            out.starts_with(
                "ha_events,a=1,domain=light,event_type=call_service,origin=REMOTE,service=turn_on,site=static "
            ),
            "{out}"
        );
    }

    #[test]
    fn oversize_data_is_left_out_with_a_marker() {
        let big = "x".repeat(MAX_STRING_FIELD + 10);
        let line = encode_with(
            &SchemaConfig::default(),
            &bus("e", json!({"big": big, "small": 1})),
        );
        assert!(!line.contains("data=\""), "{}", &line[..200]);
        assert!(!line.contains("data_big"));
        assert!(line.contains("data_small=1.0"));
        assert!(line.contains(",oversize_data=true 7\n"));
    }

    #[test]
    fn empty_data_still_gives_a_point() {
        let mut ev = bus("homeassistant_start", json!({}));
        ev.context = Context::default();
        assert_eq!(
            encode_with(&SchemaConfig::default(), &ev),
            "ha_events,event_type=homeassistant_start,origin=REMOTE data=\"{}\" 7\n"
        );
    }
}
