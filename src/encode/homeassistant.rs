//! The `homeassistant` schema: a `state_changed` event becomes the exact point HA's own `influxdb` integration writes.
//!
//! The rules, in HA's order (`_generate_event_to_json` plus influxdb-python's `make_lines`):
//!
//! 1. Skip when `new_state` is null (entity removed) or the state is `unknown`,
//!    `unavailable` or empty.
//! 2. `value` = Python `float(state)`. Failing that, `state_as_number`
//!    (`on`/`locked`/`above_horizon`/`open`/`home` → 1, `off`/`unlocked`/
//!    `unknown`/`below_horizon`/`closed`/`not_home` → 0) gives `value` and the
//!    `state` string field; failing both, only `state` is written.
//! 3. Measurement: the entity's `component_config*` `override_measurement`
//!    (domain, then matching globs in key order, then the exact entity; later
//!    wins), else the global `override_measurement`, else by
//!    `measurement_attr` (unit → `unit_of_measurement`, which is then not a
//!    field; `domain__device_class` → `<domain>__<device_class>` or the domain,
//!    `device_class` then not a field; `entity_id`), else `default_measurement`,
//!    else the full entity id.
//! 4. Tags `domain` and `entity_id` (the object id), then `tags_attributes`
//!    (stringified), then the static `tags` (they override); sorted; empty
//!    values left out.
//! 5. Each other attribute, in HA's order, unless ignored (global list ∪ the
//!    entity's list): renamed `key_` if the field exists; `float(value)` if
//!    Python can (bools and ints too), else `key_str` = Python `str(value)` plus
//!    the `RE_DIGIT_TAIL` number twin `key`; a non-finite `key` is deleted.
//! 6. Fields sorted by key, floats as Python `repr`, time = `time_fired` in ns.
//!
//! One deliberate difference: a state whose `float()` is NaN or ±infinity
//! (`"nan"`, `"inf"`) makes HA write `value=nan`, which InfluxDB rejects with
//! the whole line. We write the same point without `value` and with the state
//! text as the `state` string field (in HA's schema `state` is always a
//! string, so this never conflicts). For key collisions the point still counts
//! a `value` field, so an attribute named `value` is still written as `value_`;
//! one named `state` becomes `state_` on such a point (HA had no `state` field there).
//!
//! Attribute values reach us as JSON, not as HA's Python objects: datetimes and
//! enums arrive as strings and are written as such (see the `pyrepr` module).

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use super::pyrepr::{digit_tail, py_float, value_as_float, write_py_str};
use super::{Encoded, PointOverrides, SchemaError, Scratch, SkipReason};
use crate::config::{ComponentOverride, MeasurementAttr, SchemaConfig};
use crate::encode::line_protocol::LineBuilder;
use crate::event::{EntityId, State, Timestamp};

/// A slice of the scratch text.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of(text: &str, start: usize) -> Span {
        Span {
            start,
            end: text.len(),
        }
    }
    fn get(self, text: &str) -> &str {
        text.get(self.start..self.end).unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy)]
enum Val {
    Float(f64),
    Str(Span),
}

#[derive(Debug, Clone, Copy)]
struct Field {
    key: Span,
    /// [`prefix`] of the key: most comparisons end here.
    pre: u64,
    val: Val,
}

#[derive(Debug, Clone, Copy)]
struct Tag {
    key: Span,
    pre: u64,
    val: Span,
}

/// The first eight bytes of a key, zero-padded, as a big-endian number.
///
/// `prefix(a) < prefix(b)` implies `a < b` byte-wise, and equal prefixes fall
/// back to comparing the keys, so sorting and lookups stay exact.
fn prefix(key: &str) -> u64 {
    let mut word = [0u8; 8];
    let n = key.len().min(8);
    word[..n].copy_from_slice(&key.as_bytes()[..n]);
    u64::from_be_bytes(word)
}

/// The measurement chosen for a point.
enum Measurement<'a> {
    Borrowed(&'a str),
    Text(Span),
}

/// `component_config`, `component_config_domain` and `component_config_glob`, ready to match.
#[derive(Debug)]
struct Overrides {
    entity: BTreeMap<String, ComponentOverride>,
    domain: BTreeMap<String, ComponentOverride>,
    globs: Vec<(Regex, ComponentOverride)>,
}

impl Overrides {
    fn is_empty(&self) -> bool {
        self.entity.is_empty() && self.domain.is_empty() && self.globs.is_empty()
    }

    /// HA's `EntityValues.get`: domain, then matching globs in order, then the entity; later keys win.
    fn resolve(&self, id: &EntityId) -> (Option<&str>, &[String]) {
        if self.is_empty() {
            return (None, &[]);
        }
        let domain = self.domain.get(id.domain());
        let globs = self
            .globs
            .iter()
            .filter(|(re, _)| re.is_match(id.as_str()))
            .map(|(_, o)| o);
        let entity = self.entity.get(id.as_str());
        let mut measurement: Option<&str> = None;
        let mut ignore: &[String] = &[];
        for o in domain.into_iter().chain(globs).chain(entity) {
            if let Some(m) = &o.override_measurement {
                measurement = Some(m.as_str());
            }
            if !o.ignore_attributes.is_empty() {
                ignore = &o.ignore_attributes;
            }
        }
        (measurement, ignore)
    }
}

/// Translates a shell glob as Python's `fnmatch.translate` does (case-sensitive, `*` crosses dots).
fn fnmatch_regex(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let n = chars.len();
    let mut re = String::from(r"\A(?s:");
    let mut i = 0;
    while i < n {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while i < n && chars[i] == '*' {
                    i += 1;
                }
                re.push_str(".*");
            }
            '?' => re.push('.'),
            '[' => {
                let mut j = i;
                if j < n && chars[j] == '!' {
                    j += 1;
                }
                if j < n && chars[j] == ']' {
                    j += 1;
                }
                while j < n && chars[j] != ']' {
                    j += 1;
                }
                if j >= n {
                    re.push_str(r"\[");
                    continue;
                }
                let stuff = &chars[i..j];
                i = j + 1;
                match stuff {
                    [] => re.push_str("[^\\s\\S]"),
                    ['!'] => re.push('.'),
                    _ => {
                        re.push('[');
                        let rest = if stuff[0] == '!' {
                            re.push('^');
                            &stuff[1..]
                        } else {
                            stuff
                        };
                        for &ch in rest {
                            if ch == '-' {
                                re.push('-');
                            } else if ch.is_ascii_punctuation() {
                                re.push('\\');
                                re.push(ch);
                            } else {
                                re.push(ch);
                            }
                        }
                        re.push(']');
                    }
                }
            }
            other => {
                let mut buf = [0u8; 4];
                re.push_str(&regex::escape(other.encode_utf8(&mut buf)));
            }
        }
    }
    re.push_str(r")\z");
    re
}

/// Encodes `state_changed` events as HA's `influxdb` integration does.
#[derive(Debug)]
pub struct StateEncoder {
    measurement_attr: MeasurementAttr,
    default_measurement: Option<String>,
    override_measurement: Option<String>,
    static_tags: Vec<(String, String)>,
    tags_attributes: Vec<String>,
    ignore_attributes: Vec<String>,
    overrides: Overrides,
    fields: Vec<Field>,
    tags: Vec<Tag>,
}

const STATE_ONE: [&str; 5] = ["on", "locked", "above_horizon", "open", "home"];
const STATE_ZERO: [&str; 6] = [
    "off",
    "unlocked",
    "unknown",
    "below_horizon",
    "closed",
    "not_home",
];

impl StateEncoder {
    /// Prepares the config: globs compiled, empty options treated as unset like HA does.
    pub fn new(cfg: &SchemaConfig) -> Result<Self, SchemaError> {
        let mut globs = Vec::with_capacity(cfg.component_config_glob.len());
        for (glob, o) in &cfg.component_config_glob {
            let re = Regex::new(&fnmatch_regex(glob)).map_err(|source| SchemaError::Glob {
                glob: glob.clone(),
                source,
            })?;
            globs.push((re, o.clone()));
        }
        Ok(StateEncoder {
            measurement_attr: cfg.measurement_attr,
            default_measurement: cfg.default_measurement.clone().filter(|m| !m.is_empty()),
            override_measurement: cfg.override_measurement.clone().filter(|m| !m.is_empty()),
            static_tags: cfg
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            tags_attributes: cfg.tags_attributes.clone(),
            ignore_attributes: cfg.ignore_attributes.clone(),
            overrides: Overrides {
                entity: cfg.component_config.clone(),
                domain: cfg.component_config_domain.clone(),
                globs,
            },
            fields: Vec::with_capacity(32),
            tags: Vec::with_capacity(8),
        })
    }

    /// Appends the point for a state change's new state (one [`super::writable_state`] let through).
    pub(crate) fn encode(
        &mut self,
        state: &State,
        time_fired: Timestamp,
        overrides: Option<&PointOverrides>,
        scratch: &mut Scratch,
        out: &mut String,
    ) -> Encoded {
        let Scratch { text, num, .. } = scratch;
        text.clear();
        self.fields.clear();
        self.tags.clear();
        let fields = &mut self.fields;
        let tags = &mut self.tags;
        let attrs = &state.attributes;
        let id = &state.entity_id;

        // Step 1: value and state.
        let (mut include_state, value) = match py_float(&state.state, num) {
            Some(v) => (false, Some(v)),
            None => {
                let s = state.state.as_str();
                if STATE_ONE.contains(&s) {
                    (true, Some(1.0))
                } else if STATE_ZERO.contains(&s) {
                    (true, Some(0.0))
                } else {
                    (true, None)
                }
            }
        };
        if value.is_some_and(|v| !v.is_finite()) {
            include_state = true;
        }
        if include_state {
            let key = push_span(text, "state");
            let val = push_span(text, &state.state);
            fields.push(Field {
                key,
                pre: prefix("state"),
                val: Val::Str(val),
            });
        }
        if let Some(v) = value {
            let key = push_span(text, "value");
            fields.push(Field {
                key,
                pre: prefix("value"),
                val: Val::Float(v),
            });
        }

        // Step 2: measurement.
        let (entity_measurement, entity_ignore) = self.overrides.resolve(id);
        let mut include_uom = true;
        let mut include_dc = true;
        let measurement = if let Some(m) = overrides.and_then(|o| o.measurement.as_deref()) {
            // A transform's measurement wins over every configured one.
            Measurement::Borrowed(m)
        } else if let Some(m) = entity_measurement.filter(|m| !m.is_empty()) {
            Measurement::Borrowed(m)
        } else if let Some(m) = &self.override_measurement {
            Measurement::Borrowed(m)
        } else {
            let from_attr = match self.measurement_attr {
                MeasurementAttr::EntityId => Some(Measurement::Borrowed(id.as_str())),
                MeasurementAttr::DomainDeviceClass => match attrs.get("device_class") {
                    None | Some(Value::Null) => Some(Measurement::Borrowed(id.domain())),
                    Some(dc) => {
                        include_dc = false;
                        let start = text.len();
                        text.push_str(id.domain());
                        text.push_str("__");
                        write_py_str(text, dc);
                        Some(Measurement::Text(Span::of(text, start)))
                    }
                },
                MeasurementAttr::UnitOfMeasurement => match attrs.get("unit_of_measurement") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) if s.is_empty() => None,
                    Some(Value::String(s)) => Some(Measurement::Borrowed(s.as_str())),
                    Some(other) => {
                        let start = text.len();
                        write_py_str(text, other);
                        Some(Measurement::Text(Span::of(text, start)))
                    }
                },
            };
            match from_attr {
                Some(m) => {
                    include_uom = self.measurement_attr != MeasurementAttr::UnitOfMeasurement;
                    m
                }
                None => match &self.default_measurement {
                    Some(d) => Measurement::Borrowed(d),
                    None => Measurement::Borrowed(id.as_str()),
                },
            }
        };

        // Step 3: tags.
        let key = push_span(text, "domain");
        let val = push_span(text, id.domain());
        tags.push(Tag {
            key,
            pre: prefix("domain"),
            val,
        });
        let key = push_span(text, "entity_id");
        let val = push_span(text, id.object_id());
        tags.push(Tag {
            key,
            pre: prefix("entity_id"),
            val,
        });

        // Step 4: attributes.
        for (key, value) in attrs {
            if self.tags_attributes.iter().any(|t| t == key) {
                let k = push_span(text, key);
                let start = text.len();
                if !value.is_null() {
                    write_py_str(text, value);
                }
                let v = Span::of(text, start);
                set_tag(tags, text, k, v);
                continue;
            }
            if (key == "unit_of_measurement" && !include_uom)
                || (key == "device_class" && !include_dc)
                || self.ignore_attributes.iter().any(|i| i == key)
                || entity_ignore.iter().any(|i| i == key)
            {
                continue;
            }
            let start = text.len();
            text.push_str(key);
            let renamed = find_field(fields, text, key).is_some();
            if renamed {
                text.push('_');
            }
            let end = text.len();
            text.push_str("_str");
            let k = Span { start, end };
            let k_str = Span {
                start,
                end: end + 4,
            };
            // Python sets `fields[key]` and then deletes it when it is not finite;
            // a value already there is either finite or a string, so only the new one needs the check.
            let number = match value_as_float(value, num) {
                Some(f) => Some(f),
                None => {
                    let vs = text.len();
                    write_py_str(text, value);
                    let v = Span::of(text, vs);
                    set_field(fields, text, k_str, Val::Str(v));
                    digit_tail(v.get(text), num)
                }
            };
            match number {
                Some(f) if f.is_finite() => {
                    if renamed {
                        set_field(fields, text, k, Val::Float(f));
                    } else {
                        // `key` was not a field and `key_str` is a different name: no scan needed.
                        fields.push(Field {
                            key: k,
                            pre: prefix(k.get(text)),
                            val: Val::Float(f),
                        });
                    }
                }
                Some(_) => {
                    if let Some(i) = find_field(fields, text, k.get(text)) {
                        fields.swap_remove(i);
                    }
                }
                None => {}
            }
        }
        for (k, v) in &self.static_tags {
            let k = push_span(text, k);
            let v = push_span(text, v);
            set_tag(tags, text, k, v);
        }
        // A transform's tags, last: they win.
        if let Some(o) = overrides {
            for (k, v) in &o.tags {
                let k = push_span(text, k);
                let v = push_span(text, v);
                set_tag(tags, text, k, v);
            }
        }

        // Step 5: write, sorted.
        let text: &str = text;
        tags.sort_unstable_by(|a, b| {
            (a.pre.cmp(&b.pre)).then_with(|| a.key.get(text).cmp(b.key.get(text)))
        });
        fields.sort_unstable_by(|a, b| {
            (a.pre.cmp(&b.pre)).then_with(|| a.key.get(text).cmp(b.key.get(text)))
        });
        let measurement = match measurement {
            Measurement::Borrowed(m) => m,
            Measurement::Text(span) => span.get(text),
        };
        let mut line = LineBuilder::new(out, measurement);
        for t in tags.iter() {
            line.tag(t.key.get(text), t.val.get(text));
        }
        let mut f = line.fields();
        for field in fields.iter() {
            let key = field.key.get(text);
            match field.val {
                Val::Float(v) => f.float(key, v),
                Val::Str(s) => f.string(key, s.get(text)),
            };
        }
        if f.finish(time_fired.as_nanos()) {
            Encoded::Points(1)
        } else {
            Encoded::Skipped(SkipReason::NoFields)
        }
    }
}

fn push_span(text: &mut String, s: &str) -> Span {
    let start = text.len();
    text.push_str(s);
    Span::of(text, start)
}

fn find_field(fields: &[Field], text: &str, key: &str) -> Option<usize> {
    let pre = prefix(key);
    fields
        .iter()
        .position(|f| f.pre == pre && f.key.get(text) == key)
}

/// Python `fields[key] = val`: replaces in place or adds.
fn set_field(fields: &mut Vec<Field>, text: &str, key: Span, val: Val) {
    let k = key.get(text);
    match find_field(fields, text, k) {
        Some(i) => fields[i].val = val,
        None => fields.push(Field {
            key,
            pre: prefix(k),
            val,
        }),
    }
}

/// Python `tags[key] = val`: replaces in place or adds.
fn set_tag(tags: &mut Vec<Tag>, text: &str, key: Span, val: Span) {
    let k = key.get(text);
    let pre = prefix(k);
    match tags
        .iter()
        .position(|t| t.pre == pre && t.key.get(text) == k)
    {
        Some(i) => tags[i].val = val,
        None => tags.push(Tag { key, pre, val }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_translate_like_fnmatch() {
        let cases: &[(&str, &str, bool)] = &[
            ("sensor.*", "sensor.a.b", true),
            ("sensor.*", "binary_sensor.a", false),
            ("*.kitchen_*", "light.kitchen_main", true),
            ("sensor.?", "sensor.a", true),
            ("sensor.?", "sensor.ab", false),
            ("sensor.[ab]*", "sensor.b1", true),
            ("sensor.[!ab]*", "sensor.b1", false),
            ("sensor.[!ab]*", "sensor.c1", true),
            ("sensor.[a-c]x", "sensor.bx", true),
            ("sensor.[", "sensor.[", true),
            ("Sensor.*", "sensor.x", false),
            ("sensor.{a,b}", "sensor.{a,b}", true),
            ("sensor.a\\b", "sensor.a\\b", true),
            ("sensor.x+", "sensor.xx", false),
        ];
        for (glob, id, want) in cases {
            let re = Regex::new(&fnmatch_regex(glob)).unwrap();
            assert_eq!(re.is_match(id), *want, "{glob} vs {id}");
        }
    }
}
