//! The `optimized` schema: a `state_changed` event becomes one compact point built for query speed and bounded cardinality.
//!
//! - **Measurement**: the entity's domain (`light`, `switch`, `climate` …);
//!   for the domains in `schema.optimized.split_by_device_class` (default
//!   `sensor`) `<domain>__<device_class>` when the entity has a device class
//!   (`sensor__temperature`, `sensor__energy`), else the domain.
//! - **Tags** (identity only, each bounded by the entity count): `entity_id`
//!   (the full id, `sensor.kitchen_temperature`), `domain`, `device_class` and
//!   `unit` (from `unit_of_measurement`) when present, `schema` =
//!   [`SCHEMA_VERSION`], then `schema.tags_attributes` and the static
//!   `schema.tags` (which override). Sorted; empty values left out.
//! - **Fields**: the state as exactly one of `value` (float, when the state is
//!   a finite number, `-5.5 °C` included) or `state` (string otherwise); then
//!   each attribute of `schema.optimized.attributes` that the state has,
//!   converted to its pinned type. An attribute that cannot be converted is
//!   left out, counted in `ha_ingestor_encoder_dropped_attributes_total` and
//!   logged once per attribute name. No other attribute is written: no `_str`
//!   twins, no digit-scraped numbers.
//! - Skipped as in HA: removed entities, `unknown`/`unavailable`/empty states.
//! - Time: HA's `time_fired`.
//!
//! A field key therefore always has one type: `value` float, `state` string,
//! each attribute its pinned type. The keys that would break that (an
//! attribute named `value`/`state`, or one that is also a tag) are refused when
//! the encoder is built.

use serde_json::Value;

use super::{Encoded, PointOverrides, SchemaError, Scratch, SkipReason};
use crate::config::{AttributeType, SchemaConfig};
use crate::encode::line_protocol::LineBuilder;
use crate::event::{State, Timestamp};
use crate::monitor::metrics as names;

/// The value of the `schema` tag on every state point: which layout (and revision) wrote it.
pub const SCHEMA_VERSION: &str = "optimized-1";

/// The tag keys this mode writes itself; no attribute field may use them.
const OWN_TAGS: [&str; 5] = ["device_class", "domain", "entity_id", "schema", "unit"];

/// The largest string field value InfluxDB accepts.
const MAX_STRING_FIELD: usize = 64 * 1024 - 1;

/// A `start..end` range of the scratch text.
#[derive(Debug, Clone, Copy)]
struct Span(usize, usize);

impl Span {
    fn get(self, text: &str) -> &str {
        text.get(self.0..self.1).unwrap_or("")
    }
}

fn push_span(text: &mut String, s: &str) -> Span {
    let start = text.len();
    text.push_str(s);
    Span(start, text.len())
}

/// Where a tag key lives: a fixed name or the scratch text.
#[derive(Debug, Clone, Copy)]
enum Key {
    Fixed(&'static str),
    Config(usize),
    Static(usize),
    /// A transform's tag: index into the event's [`PointOverrides::tags`].
    Override(usize),
}

/// One allow-listed attribute's converted value.
#[derive(Debug, Clone, Copy)]
enum AttrVal {
    Float(f64),
    Bool(bool),
    Str(Span),
}

/// One allow-listed attribute, with its pinned type and whether a bad value was logged yet.
#[derive(Debug)]
struct Allowed {
    name: String,
    ty: AttributeType,
    logged: bool,
}

/// The configured tag names a [`Key`] points into.
#[derive(Debug)]
struct TagNames {
    tags_attributes: Vec<String>,
    static_tags: Vec<(String, String)>,
}

impl TagNames {
    fn key<'a>(&'a self, key: Key, overrides: Option<&'a PointOverrides>) -> &'a str {
        match key {
            Key::Fixed(k) => k,
            Key::Config(i) => self.tags_attributes.get(i).map_or("", String::as_str),
            Key::Static(i) => self.static_tags.get(i).map_or("", |(k, _)| k.as_str()),
            Key::Override(i) => overrides
                .and_then(|o| o.tags.get(i))
                .map_or("", |(k, _)| k.as_str()),
        }
    }
}

/// Encodes `state_changed` events into the `optimized` layout.
#[derive(Debug)]
pub struct OptimizedEncoder {
    split_domains: Vec<String>,
    names: TagNames,
    /// Sorted by name (a `BTreeMap` in the config), so fields come out sorted.
    allowed: Vec<Allowed>,
    tags: Vec<(Key, Span)>,
    attrs: Vec<(usize, AttrVal)>,
}

impl OptimizedEncoder {
    /// Checks the allow-list against the tags, so no key can be both a tag and a field or hold two types.
    pub fn new(cfg: &SchemaConfig) -> Result<Self, SchemaError> {
        let opt = &cfg.optimized;
        for name in opt.attributes.keys() {
            let clash = if name.is_empty() {
                Some("an empty name")
            } else if name == "value" || name == "state" {
                Some("the name of the state field")
            } else if OWN_TAGS.contains(&name.as_str())
                || cfg.tags_attributes.iter().any(|t| t == name)
                || cfg.tags.contains_key(name)
            {
                Some("also a tag")
            } else {
                None
            };
            if let Some(why) = clash {
                return Err(SchemaError::OptimizedAttribute {
                    name: name.clone(),
                    why,
                });
            }
        }
        Ok(OptimizedEncoder {
            split_domains: opt.split_by_device_class.clone(),
            names: TagNames {
                tags_attributes: cfg
                    .tags_attributes
                    .iter()
                    .filter(|t| !OWN_TAGS.contains(&t.as_str()))
                    .cloned()
                    .collect(),
                static_tags: cfg
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            },
            allowed: opt
                .attributes
                .iter()
                .map(|(name, ty)| Allowed {
                    name: name.clone(),
                    ty: *ty,
                    logged: false,
                })
                .collect(),
            tags: Vec::with_capacity(8),
            attrs: Vec::with_capacity(8),
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
        let text = &mut scratch.text;
        text.clear();
        self.tags.clear();
        self.attrs.clear();
        let id = &state.entity_id;
        let attrs = &state.attributes;
        let domain = id.domain();

        // Measurement.
        let dc_raw = attrs.get("device_class");
        let device_class = dc_raw.and_then(|v| push_scalar(text, v));
        let measurement = match (device_class, dc_raw) {
            (Some(_), Some(raw)) if self.split_domains.iter().any(|d| d == domain) => {
                let start = text.len();
                text.push_str(domain);
                text.push_str("__");
                push_scalar(text, raw).map(|_| Span(start, text.len()))
            }
            _ => None,
        };

        // Tags: ours, then the attributes chosen as tags, then the static ones (which win).
        let entity = push_span(text, id.as_str());
        self.tags.push((Key::Fixed("entity_id"), entity));
        let dom = push_span(text, domain);
        self.tags.push((Key::Fixed("domain"), dom));
        if let Some(dc) = device_class {
            self.tags.push((Key::Fixed("device_class"), dc));
        }
        if let Some(unit) = attrs
            .get("unit_of_measurement")
            .and_then(|v| push_scalar(text, v))
        {
            self.tags.push((Key::Fixed("unit"), unit));
        }
        let version = push_span(text, SCHEMA_VERSION);
        self.tags.push((Key::Fixed("schema"), version));
        for (i, name) in self.names.tags_attributes.iter().enumerate() {
            if let Some(v) = attrs.get(name).and_then(|v| push_scalar(text, v)) {
                set_tag(&mut self.tags, &self.names, overrides, Key::Config(i), v);
            }
        }
        for (i, (_, value)) in self.names.static_tags.iter().enumerate() {
            let v = push_span(text, value);
            set_tag(&mut self.tags, &self.names, overrides, Key::Static(i), v);
        }
        // A transform's tags, last: they win, as in the other layouts.
        if let Some(o) = overrides {
            for (i, (_, value)) in o.tags.iter().enumerate() {
                let v = push_span(text, value);
                set_tag(&mut self.tags, &self.names, overrides, Key::Override(i), v);
            }
        }

        // Fields: the state, then the allow-listed attributes.
        let value = parse_number(&state.state);
        for (i, allowed) in self.allowed.iter_mut().enumerate() {
            let Some(raw) = attrs.get(&allowed.name) else {
                continue;
            };
            if raw.is_null() {
                continue;
            }
            match convert(raw, allowed.ty, text) {
                Some(v) => self.attrs.push((i, v)),
                None => {
                    metrics::counter!(names::ENCODER_DROPPED_ATTRIBUTES).increment(1);
                    if !allowed.logged {
                        allowed.logged = true;
                        tracing::warn!(
                            attribute = %allowed.name,
                            entity_id = %id,
                            expected = ?allowed.ty,
                            "attribute value does not convert to its pinned type; left out (logged once per attribute)"
                        );
                    }
                }
            }
        }

        // Write, tags sorted by key.
        let text: &str = text;
        let names = &self.names;
        self.tags
            .sort_by(|a, b| names.key(a.0, overrides).cmp(names.key(b.0, overrides)));
        let measurement = match (
            overrides.and_then(|o| o.measurement.as_deref()),
            measurement,
        ) {
            (Some(m), _) => m,
            (None, Some(m)) => m.get(text),
            (None, None) => domain,
        };
        let mut line = LineBuilder::new(out, measurement);
        for (k, v) in &self.tags {
            line.tag(names.key(*k, overrides), v.get(text));
        }
        let mut f = line.fields();
        let main = if value.is_some() { "value" } else { "state" };
        let mut main_written = false;
        for (i, v) in &self.attrs {
            let name = self.allowed[*i].name.as_str();
            if !main_written && main < name {
                write_main(&mut f, value, &state.state);
                main_written = true;
            }
            match v {
                AttrVal::Float(x) => f.float(name, *x),
                AttrVal::Bool(b) => f.boolean(name, *b),
                AttrVal::Str(s) => f.string(name, s.get(text)),
            };
        }
        if !main_written {
            write_main(&mut f, value, &state.state);
        }
        if f.finish(time_fired.as_nanos()) {
            Encoded::Points(1)
        } else {
            Encoded::Skipped(SkipReason::NoFields)
        }
    }
}

/// Replaces the value of a tag with the same key, or adds it.
fn set_tag(
    tags: &mut Vec<(Key, Span)>,
    names: &TagNames,
    overrides: Option<&PointOverrides>,
    key: Key,
    val: Span,
) {
    let name = names.key(key, overrides);
    match tags
        .iter()
        .position(|(k, _)| names.key(*k, overrides) == name)
    {
        Some(i) => tags[i] = (key, val),
        None => tags.push((key, val)),
    }
}

fn write_main(
    f: &mut crate::encode::line_protocol::FieldsBuilder<'_>,
    value: Option<f64>,
    state: &str,
) {
    match value {
        Some(v) => f.float("value", v),
        None => f.string("state", truncate_at_char(state, MAX_STRING_FIELD)),
    };
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A scalar attribute as tag text in the scratch (strings as is, numbers and booleans as JSON); `None` for null, empty, lists and objects.
fn push_scalar(text: &mut String, v: &Value) -> Option<Span> {
    let start = text.len();
    match v {
        Value::String(s) if !s.is_empty() => text.push_str(s),
        Value::Number(n) => {
            use std::fmt::Write as _;
            let _ = write!(text, "{n}");
        }
        Value::Bool(b) => text.push_str(if *b { "true" } else { "false" }),
        _ => return None,
    }
    Some(Span(start, text.len()))
}

/// Converts an attribute to its pinned type; `None` when it does not fit.
fn convert(v: &Value, ty: AttributeType, text: &mut String) -> Option<AttrVal> {
    match ty {
        AttributeType::Float => match v {
            Value::Number(n) => n.as_f64().filter(|x| x.is_finite()).map(AttrVal::Float),
            Value::Bool(b) => Some(AttrVal::Float(if *b { 1.0 } else { 0.0 })),
            Value::String(s) => parse_number(s).map(AttrVal::Float),
            _ => None,
        },
        AttributeType::Boolean => match v {
            Value::Bool(b) => Some(AttrVal::Bool(*b)),
            Value::Number(n) => match n.as_f64() {
                Some(0.0) => Some(AttrVal::Bool(false)),
                Some(1.0) => Some(AttrVal::Bool(true)),
                _ => None,
            },
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "on" => Some(AttrVal::Bool(true)),
                "false" | "off" => Some(AttrVal::Bool(false)),
                _ => None,
            },
            _ => None,
        },
        AttributeType::String => {
            let start = text.len();
            match v {
                Value::String(s) => text.push_str(s),
                other => text.push_str(&other.to_string()),
            }
            let span = Span(start, text.len());
            if span.1 - span.0 > MAX_STRING_FIELD {
                text.truncate(start);
                return None;
            }
            Some(AttrVal::Str(span))
        }
    }
}

/// Reads a state or attribute text as a number: a decimal with optional sign
/// and exponent, optionally followed by a unit (`-5.5 °C`, `12 kWh`, `80%`).
///
/// The unit must contain no digit and must be set apart by a space or start
/// with `%` or `°`, so dates, times, versions, lists and ids (`2024-01-01`,
/// `10:30`, `1.2.3`, `1,234`, `5min2`) are text, not numbers. Non-finite
/// results (`nan`, `inf`, overflow) are not numbers either.
pub fn parse_number(text: &str) -> Option<f64> {
    let t = text.trim();
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    let (number, rest) = t.split_at(i);
    if !rest.is_empty() {
        let first = rest.chars().next()?;
        let set_apart = first.is_whitespace() || first == '%' || first == '°';
        if !set_apart || rest.bytes().any(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    number.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_sign_and_lose_their_unit() {
        let cases: &[(&str, Option<f64>)] = &[
            ("20.00", Some(20.0)),
            ("-5.5 °C", Some(-5.5)),
            ("-5.5°C", Some(-5.5)),
            ("+3", Some(3.0)),
            ("  7 ", Some(7.0)),
            ("12.5 °C", Some(12.5)),
            ("80%", Some(80.0)),
            ("1e3", Some(1000.0)),
            ("-.5", Some(-0.5)),
            ("3.", Some(3.0)),
            ("12 kWh", Some(12.0)),
            ("1e", None),
            ("2024-01-01", None),
            ("10:30", None),
            ("1.2.3", None),
            ("1,234", None),
            ("5min", None),
            ("5 min2", None),
            ("0x1F", None),
            ("nan", None),
            ("inf", None),
            ("-inf", None),
            ("1e999", None),
            ("", None),
            ("-", None),
            (".", None),
            ("on", None),
            ("v1.2", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_number(text), *want, "{text:?}");
        }
    }

    #[test]
    fn conversions_follow_the_pinned_type() {
        let mut text = String::new();
        let f = |v: Value, ty| match convert(&v, ty, &mut String::new()) {
            Some(AttrVal::Float(x)) => format!("f{x}"),
            Some(AttrVal::Bool(b)) => format!("b{b}"),
            Some(AttrVal::Str(_)) => "s".to_string(),
            None => "none".to_string(),
        };
        assert_eq!(f(serde_json::json!(254), AttributeType::Float), "f254");
        assert_eq!(
            f(serde_json::json!("-5.5 °C"), AttributeType::Float),
            "f-5.5"
        );
        assert_eq!(f(serde_json::json!(true), AttributeType::Float), "f1");
        assert_eq!(f(serde_json::json!("heat"), AttributeType::Float), "none");
        assert_eq!(f(serde_json::json!([1, 2]), AttributeType::Float), "none");
        assert_eq!(f(serde_json::json!("on"), AttributeType::Boolean), "btrue");
        assert_eq!(f(serde_json::json!(0), AttributeType::Boolean), "bfalse");
        assert_eq!(f(serde_json::json!(2), AttributeType::Boolean), "none");
        match convert(
            &serde_json::json!([254, 0]),
            AttributeType::String,
            &mut text,
        ) {
            Some(AttrVal::Str(s)) => assert_eq!(s.get(&text), "[254,0]"),
            other => panic!("{other:?}"),
        }
        let long = Value::String("x".repeat(MAX_STRING_FIELD + 1));
        assert!(convert(&long, AttributeType::String, &mut text).is_none());
    }
}
