//! The `homeassistant` schema mode against what HA's own `influxdb` integration wrote.
//!
//! `tests/data/fixtures/ha-native-pairs.jsonl` holds real `state_changed` events with
//! the exact lines HA (api_version 1, default options) wrote for them. Every
//! pair must come out byte for byte, except where HA wrote `value=nan`,
//! `value=inf` or `value=-inf` (lines InfluxDB refused): there we write the same
//! point without `value` and with the state text as the `state` string field.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use support::event_from_json;

use ha_ingestor::config::{ComponentOverride, MeasurementAttr, SchemaConfig};
use ha_ingestor::encode::line_protocol::LineBuilder;
use ha_ingestor::encode::{Encoded, Encoder, SkipReason};
use ha_ingestor::event::{
    Context, EntityId, Event, EventKind, Origin, State, StateChanged, Timestamp,
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// `2026-01-01T10:00:00.123456+00:00`, the time of the reference's worked examples.
const T: i64 = 1_767_261_600_123_456_000;

// ---------------------------------------------------------------------------
// A strict line-protocol parser with InfluxDB 1.x scanning rules: a backslash
// escapes the next byte, and a separator right after a backslash byte is not a
// separator. Unescaping turns `\\`, `\ `, `\,`, `\=` (names) and `\\`, `\"`
// (strings) into the character; any other backslash stays.

#[derive(Debug, Clone, PartialEq)]
enum FieldValue {
    Float(String),
    Str(String),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, FieldValue)>,
    timestamp: i64,
}

fn scan_name(b: &[u8], mut i: usize, stops: &[u8]) -> Result<(String, usize), String> {
    let mut raw = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            let next = *b.get(i + 1).ok_or("dangling backslash")?;
            if matches!(next, b'\\' | b' ' | b',' | b'=') {
                raw.push(next);
            } else {
                raw.push(b'\\');
                raw.push(next);
            }
            i += 2;
            continue;
        }
        if c == b'\n' {
            return Err("raw newline in a name".into());
        }
        if stops.contains(&c) && !(i > 0 && b[i - 1] == b'\\') {
            break;
        }
        raw.push(c);
        i += 1;
    }
    Ok((String::from_utf8(raw).map_err(|e| e.to_string())?, i))
}

fn parse_line(line: &str) -> Result<Parsed, String> {
    let b = line.as_bytes();
    let (measurement, mut i) = scan_name(b, 0, b", ")?;
    if measurement.is_empty() {
        return Err("empty measurement".into());
    }
    let mut tags = Vec::new();
    while b.get(i) == Some(&b',') {
        let (k, j) = scan_name(b, i + 1, b"=, ")?;
        if b.get(j) != Some(&b'=') {
            return Err(format!("tag without '=' at {j}"));
        }
        let (v, j) = scan_name(b, j + 1, b", ")?;
        if k.is_empty() || v.is_empty() {
            return Err("empty tag key or value".into());
        }
        tags.push((k, v));
        i = j;
    }
    if b.get(i) != Some(&b' ') {
        return Err(format!("expected space after series at {i}"));
    }
    i += 1;
    let mut fields = Vec::new();
    loop {
        let (k, j) = scan_name(b, i, b"=, ")?;
        if b.get(j) != Some(&b'=') || k.is_empty() {
            return Err(format!("bad field key at {i}"));
        }
        i = j + 1;
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut raw = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err("unterminated string".into()),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if matches!(b.get(i + 1), Some(b'\\' | b'"')) => {
                        raw.push(b[i + 1]);
                        i += 2;
                    }
                    Some(b'\n') => return Err("raw newline in a string".into()),
                    Some(&c) => {
                        raw.push(c);
                        i += 1;
                    }
                }
            }
            FieldValue::Str(String::from_utf8(raw).map_err(|e| e.to_string())?)
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' && b[i] != b' ' {
                i += 1;
            }
            let text = &line[start..i];
            match text {
                "t" | "T" | "true" | "True" | "TRUE" => FieldValue::Bool(true),
                "f" | "F" | "false" | "False" | "FALSE" => FieldValue::Bool(false),
                _ => {
                    text.parse::<f64>()
                        .map_err(|_| format!("bad number {text:?}"))?;
                    FieldValue::Float(text.to_string())
                }
            }
        };
        fields.push((k, value));
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b' ') => break,
            _ => return Err(format!("expected ',' or ' ' after a field at {i}")),
        }
    }
    let timestamp = line[i + 1..]
        .parse::<i64>()
        .map_err(|e| format!("bad timestamp: {e}"))?;
    Ok(Parsed {
        measurement,
        tags,
        fields,
        timestamp,
    })
}

// ---------------------------------------------------------------------------
// The fixture pairs.

#[test]
fn every_recorded_pair_matches_what_ha_wrote() {
    let text = include_str!("../../data/fixtures/ha-native-pairs.jsonl");
    let mut encoder = Encoder::new(&SchemaConfig::default()).expect("default config builds");
    let (mut exact, mut non_finite, mut skipped, mut total) = (0, 0, 0, 0);
    for (n, row) in text.lines().enumerate() {
        total += 1;
        let pair: Value = serde_json::from_str(row).expect("fixture row is JSON");
        let event = event_from_json(&pair["event"]);
        let ha_lines: Vec<&str> = pair["lines"]
            .as_array()
            .expect("fixture lines")
            .iter()
            .map(|l| l.as_str().expect("fixture line"))
            .collect();
        let mut out = String::from("previous\n");
        let result = encoder.encode(&event, &mut out);
        let ours = &out["previous\n".len()..];
        assert!(
            ha_lines.len() <= 1,
            "pair {n}: one event gives at most one line"
        );
        let Some(ha_line) = ha_lines.first() else {
            assert_eq!(ours, "", "pair {n}: HA wrote nothing");
            assert!(
                matches!(result, Encoded::Skipped(_)),
                "pair {n}: {result:?}"
            );
            skipped += 1;
            continue;
        };
        assert_eq!(result, Encoded::Points(1), "pair {n}");
        let ha = parse_line(ha_line).unwrap_or_else(|e| panic!("pair {n}: HA line: {e}"));
        let bad_value = ha.fields.iter().any(|(k, v)| {
            k == "value"
                && matches!(v, FieldValue::Float(t) if !t.parse::<f64>().is_ok_and(f64::is_finite))
        });
        if !bad_value {
            assert_eq!(ours, format!("{ha_line}\n"), "pair {n}");
            exact += 1;
            continue;
        }
        // HA's line was refused by InfluxDB; ours keeps the point with the state text instead of value.
        let state = event
            .state_changed()
            .and_then(|sc| sc.new_state.as_ref())
            .map(|s| s.state.clone())
            .expect("a written pair has a new state");
        let mut want = ha.clone();
        want.fields.retain(|(k, _)| k != "value");
        want.fields.push(("state".into(), FieldValue::Str(state)));
        want.fields.sort_by(|a, b| a.0.cmp(&b.0));
        let line = ours.strip_suffix('\n').expect("line ends in a newline");
        assert!(!line.contains('\n'), "pair {n}: one line");
        assert_eq!(parse_line(line), Ok(want), "pair {n}: {line}");
        non_finite += 1;
    }
    assert_eq!(total, 327);
    assert_eq!(exact + non_finite + skipped, total);
    assert_eq!(exact, 312, "lines equal to HA's byte for byte");
    assert_eq!(non_finite, 5, "non-finite states written our way");
    assert_eq!(skipped, 10, "events HA wrote nothing for");
}

// ---------------------------------------------------------------------------
// Single rules.

fn state_event(entity_id: &str, state: &str, attributes: Value) -> Event {
    let ts = Timestamp::from_nanos(T);
    let new_state = State {
        entity_id: EntityId::new(entity_id).expect("test entity id"),
        state: state.to_string(),
        attributes: attributes
            .as_object()
            .cloned()
            .map(Into::into)
            .unwrap_or_default(),
        last_changed: ts,
        last_reported: None,
        // Deliberately not time_fired: the point must carry time_fired.
        last_updated: Timestamp::from_nanos(T - 1_000),
        context: None,
    };
    Event {
        meta: Default::default(),
        source: Arc::from("test"),
        time_fired: ts,
        origin: Origin::Local,
        context: Context::default(),
        kind: EventKind::StateChanged(Box::new(StateChanged {
            entity_id: new_state.entity_id.clone(),
            old_state: None,
            new_state: Some(new_state),
        })),
    }
}

fn encode_with(cfg: &SchemaConfig, event: &Event) -> String {
    let mut encoder = Encoder::new(cfg).expect("config builds");
    let mut out = String::new();
    let result = encoder.encode(event, &mut out);
    if out.is_empty() {
        assert!(matches!(result, Encoded::Skipped(_)), "{result:?}");
    } else {
        assert_eq!(result, Encoded::Points(1));
    }
    out
}

fn encode(event: &Event) -> String {
    encode_with(&SchemaConfig::default(), event)
}

/// The field section of a single encoded line.
fn fields_of(line: &str) -> String {
    let parsed = parse_line(line.trim_end_matches('\n')).expect("our line parses");
    parsed
        .fields
        .iter()
        .map(|(k, v)| match v {
            FieldValue::Float(t) => format!("{k}={t}"),
            FieldValue::Str(s) => format!("{k}={s:?}"),
            FieldValue::Bool(b) => format!("{k}={b}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn example_a() -> Event {
    state_event(
        "sensor.living_room_temperature",
        "21.5",
        json!({"state_class": "measurement", "unit_of_measurement": "°C",
               "device_class": "temperature", "friendly_name": "Living Room Temperature"}),
    )
}

#[test]
fn example_a_sensor() {
    assert_eq!(
        encode(&example_a()),
        "°C,domain=sensor,entity_id=living_room_temperature device_class_str=\"temperature\",\
         friendly_name_str=\"Living Room Temperature\",state_class_str=\"measurement\",\
         value=21.5 1767261600123456000\n"
    );
}

#[test]
fn example_a_with_friendly_name_as_tag() {
    let cfg = SchemaConfig {
        tags_attributes: vec!["friendly_name".into()],
        ..SchemaConfig::default()
    };
    assert_eq!(
        encode_with(&cfg, &example_a()),
        "°C,domain=sensor,entity_id=living_room_temperature,friendly_name=Living\\ Room\\ Temperature \
         device_class_str=\"temperature\",state_class_str=\"measurement\",value=21.5 1767261600123456000\n"
    );
}

#[test]
fn example_b_light() {
    let event = state_event(
        "light.bed_light",
        "on",
        json!({"brightness": 180, "rgb_color": [254, 208, 0], "xy_color": [0.5, 0.5],
               "color_mode": "xy", "supported_color_modes": ["xy", "color_temp"],
               "friendly_name": "Bed Light", "supported_features": 44}),
    );
    assert_eq!(
        encode(&event),
        "light.bed_light,domain=light,entity_id=bed_light brightness=180.0,color_mode_str=\"xy\",\
         friendly_name_str=\"Bed Light\",rgb_color=2542080.0,rgb_color_str=\"[254, 208, 0]\",\
         state=\"on\",supported_color_modes_str=\"['xy', 'color_temp']\",supported_features=44.0,\
         value=1.0,xy_color_str=\"[0.5, 0.5]\" 1767261600123456000\n"
    );
}

#[test]
fn example_c_climate() {
    // Over the WebSocket HA's HVACMode enums arrive as plain strings, so the list
    // is written as `['off', 'heat']` where HA itself may leak `<HVACMode.OFF: 'off'>`.
    let event = state_event(
        "climate.kitchen",
        "heat",
        json!({"hvac_modes": ["off", "heat"], "current_temperature": 21.0, "temperature": 22.0}),
    );
    assert_eq!(
        encode(&event),
        "climate.kitchen,domain=climate,entity_id=kitchen current_temperature=21.0,\
         hvac_modes_str=\"['off', 'heat']\",state=\"heat\",temperature=22.0 1767261600123456000\n"
    );
}

#[test]
fn numeric_coercion_table() {
    let rows: &[(Value, &str)] = &[
        (json!(180), "x=180.0"),
        (json!(true), "x=1.0"),
        (json!(false), "x=0.0"),
        (json!("12 km"), r#"x=12.0,x_str="12 km""#),
        (json!("5 km"), r#"x_str="5 km""#),
        (json!("12.5 kWh"), r#"x=12.5,x_str="12.5 kWh""#),
        (json!("-5.5 °C"), r#"x=5.5,x_str="-5.5 °C""#),
        (json!("10%"), r#"x=10.0,x_str="10%""#),
        (json!([254, 208, 0]), r#"x=2542080.0,x_str="[254, 208, 0]""#),
        (json!([0.5, 0.5]), r#"x_str="[0.5, 0.5]""#),
        (json!({"a": 1.5}), r#"x=1.5,x_str="{'a': 1.5}""#),
        (
            json!("2026-01-01T10:00:00+00:00"),
            r#"x=2.02601011e+17,x_str="2026-01-01T10:00:00+00:00""#,
        ),
        (json!("192.168.1.10"), r#"x_str="192.168.1.10""#),
        (json!("v1.2.3"), r#"x_str="v1.2.3""#),
        (json!("mdi:thermometer"), r#"x_str="mdi:thermometer""#),
        (json!(null), r#"x_str="None""#),
        (json!(" 1_000 "), "x=1000.0"),
        (json!("1e3"), "x=1000.0"),
        // Non-finite attribute values are deleted, as HA does.
        (json!("nan"), ""),
        (json!("-Infinity"), ""),
        // float() of a long digit string is inf: deleted, and no `_str` either.
        (json!("1".repeat(400)), ""),
        // Its digit-tail twin is inf too: deleted, the `_str` stays.
        (
            json!(format!("a{}", "1".repeat(400))),
            &format!("x_str=\"a{}\"", "1".repeat(400)),
        ),
    ];
    for (value, want) in rows {
        let event = state_event("sensor.t", "heat", json!({ "x": value }));
        let fields = fields_of(&encode(&event));
        let want = if want.is_empty() {
            r#"state="heat""#.to_string()
        } else {
            format!(r#"state="heat",{want}"#)
        };
        // `fields_of` prints strings with Rust's `{:?}`, which matches here (no escapes needed).
        let mut got: Vec<&str> = fields.split(",x").collect();
        got.sort_unstable();
        let mut exp: Vec<&str> = want.split(",x").collect();
        exp.sort_unstable();
        assert_eq!(got, exp, "attribute {value}");
    }
}

#[test]
fn state_rules() {
    let rows: &[(&str, &str)] = &[
        ("on", r#"state="on",value=1.0"#),
        ("locked", r#"state="locked",value=1.0"#),
        ("above_horizon", r#"state="above_horizon",value=1.0"#),
        ("open", r#"state="open",value=1.0"#),
        ("home", r#"state="home",value=1.0"#),
        ("off", r#"state="off",value=0.0"#),
        ("unlocked", r#"state="unlocked",value=0.0"#),
        ("below_horizon", r#"state="below_horizon",value=0.0"#),
        ("closed", r#"state="closed",value=0.0"#),
        ("not_home", r#"state="not_home",value=0.0"#),
        ("ON", r#"state="ON""#),
        ("heat", r#"state="heat""#),
        ("12.5 °C", r#"state="12.5 °C""#),
        ("21.5", "value=21.5"),
        (" 3 ", "value=3.0"),
        ("1_000", "value=1000.0"),
        ("1e3", "value=1000.0"),
        ("+1.5", "value=1.5"),
        ("1e16", "value=1e+16"),
        ("0.000015", "value=1.5e-05"),
        ("-0", "value=-0.0"),
        // Non-finite: HA writes value=nan (refused by InfluxDB); we write the state text.
        ("nan", r#"state="nan""#),
        ("INF", r#"state="INF""#),
        ("-Infinity", r#"state="-Infinity""#),
    ];
    for (state, want) in rows {
        let event = state_event("sensor.t", state, json!({}));
        assert_eq!(fields_of(&encode(&event)), *want, "state {state:?}");
    }
}

#[test]
fn skipped_states_write_nothing() {
    let mut encoder = Encoder::new(&SchemaConfig::default()).expect("builds");
    for state in ["unknown", "unavailable", ""] {
        let mut out = String::from("kept\n");
        let r = encoder.encode(&state_event("sensor.t", state, json!({})), &mut out);
        assert_eq!(r, Encoded::Skipped(SkipReason::UnknownState), "{state:?}");
        assert_eq!(out, "kept\n");
    }
    let mut removed = state_event("sensor.t", "1", json!({}));
    if let EventKind::StateChanged(sc) = &mut removed.kind {
        sc.new_state = None;
    }
    let mut out = String::new();
    assert_eq!(
        encoder.encode(&removed, &mut out),
        Encoded::Skipped(SkipReason::EntityRemoved)
    );
    assert_eq!(out, "");
    assert_eq!(SkipReason::UnknownState.as_str(), "unknown_state");
}

#[test]
fn measurement_attr_variants() {
    let attrs = json!({"unit_of_measurement": "°C", "device_class": "temperature"});
    let ev = state_event("sensor.t", "1", attrs.clone());
    let with = |attr: MeasurementAttr| SchemaConfig {
        measurement_attr: attr,
        ..SchemaConfig::default()
    };
    assert_eq!(
        encode_with(&with(MeasurementAttr::UnitOfMeasurement), &ev),
        "°C,domain=sensor,entity_id=t device_class_str=\"temperature\",value=1.0 1767261600123456000\n"
    );
    assert_eq!(
        encode_with(&with(MeasurementAttr::DomainDeviceClass), &ev),
        "sensor__temperature,domain=sensor,entity_id=t unit_of_measurement_str=\"°C\",value=1.0 1767261600123456000\n"
    );
    assert_eq!(
        encode_with(&with(MeasurementAttr::EntityId), &ev),
        "sensor.t,domain=sensor,entity_id=t device_class_str=\"temperature\",\
         unit_of_measurement_str=\"°C\",value=1.0 1767261600123456000\n"
    );
    // domain__device_class without a device class: the domain.
    let no_dc = state_event("sensor.t", "1", json!({"device_class": null}));
    assert!(
        encode_with(&with(MeasurementAttr::DomainDeviceClass), &no_dc)
            .starts_with("sensor,domain=sensor,entity_id=t device_class_str=\"None\",")
    );
    // An empty unit falls back to the entity id and stays a field.
    let empty = state_event("sensor.t", "1", json!({"unit_of_measurement": ""}));
    assert_eq!(
        encode(&empty),
        "sensor.t,domain=sensor,entity_id=t unit_of_measurement_str=\"\",value=1.0 1767261600123456000\n"
    );
    // default_measurement replaces the entity id fallback, not a unit.
    let cfg = SchemaConfig {
        default_measurement: Some("state".into()),
        ..SchemaConfig::default()
    };
    assert!(encode_with(&cfg, &empty).starts_with("state,domain=sensor,"));
    assert!(encode_with(&cfg, &ev).starts_with("°C,domain=sensor,"));
    // The global override beats measurement_attr; the unit then stays a field.
    let cfg = SchemaConfig {
        override_measurement: Some("all".into()),
        ..SchemaConfig::default()
    };
    assert_eq!(
        encode_with(&cfg, &ev),
        "all,domain=sensor,entity_id=t device_class_str=\"temperature\",\
         unit_of_measurement_str=\"°C\",value=1.0 1767261600123456000\n"
    );
    // A non-string unit is stringified like Python.
    let odd = state_event("sensor.t", "1", json!({"unit_of_measurement": 5}));
    assert!(encode(&odd).starts_with("5,domain=sensor,entity_id=t value=1.0 "));
}

fn over(m: Option<&str>, ignore: &[&str]) -> ComponentOverride {
    ComponentOverride {
        override_measurement: m.map(str::to_string),
        ignore_attributes: ignore.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn component_config_precedence() {
    let cfg = SchemaConfig {
        override_measurement: Some("global".into()),
        ignore_attributes: vec!["g".into()],
        component_config_domain: BTreeMap::from([(
            "sensor".to_string(),
            over(Some("dom"), &["d"]),
        )]),
        component_config_glob: BTreeMap::from([
            ("sensor.kitchen_*".to_string(), over(Some("glob1"), &[])),
            ("sensor.kitchen_t*".to_string(), over(Some("glob2"), &["k"])),
        ]),
        component_config: BTreeMap::from([
            ("sensor.kitchen_temp".to_string(), over(Some("ent"), &[])),
            ("sensor.other".to_string(), over(None, &["o"])),
        ]),
        ..SchemaConfig::default()
    };
    let attrs = json!({"g": "1", "d": "1", "k": "1", "o": "1"});
    let m = |id: &str| {
        let line = encode_with(&cfg, &state_event(id, "1", attrs.clone()));
        let parsed = parse_line(line.trim_end()).expect("parses");
        let fields: Vec<String> = parsed.fields.into_iter().map(|(k, _)| k).collect();
        (parsed.measurement, fields.join(","))
    };
    // Exact entity beats the globs; its ignore list is unset, so the glob's applies.
    assert_eq!(m("sensor.kitchen_temp"), ("ent".into(), "d,o,value".into()));
    // Later glob wins over earlier glob and over the domain.
    assert_eq!(m("sensor.kitchen_tv"), ("glob2".into(), "d,o,value".into()));
    assert_eq!(
        m("sensor.kitchen_light"),
        ("glob1".into(), "k,o,value".into())
    );
    // Domain only; global ignore always applies.
    assert_eq!(m("sensor.hall"), ("dom".into(), "k,o,value".into()));
    // Entity with only ignore_attributes keeps the domain's measurement; its list replaces the domain's.
    assert_eq!(m("sensor.other"), ("dom".into(), "d,k,value".into()));
    // No component entry: the global override.
    assert_eq!(m("light.x"), ("global".into(), "d,k,o,value".into()));
}

#[test]
fn static_tags_override_and_sort() {
    let cfg = SchemaConfig {
        tags: BTreeMap::from([
            ("entity_id".to_string(), "forced".to_string()),
            ("a_zone".to_string(), "home".to_string()),
            ("z".to_string(), String::new()),
        ]),
        tags_attributes: vec!["room".into(), "none".into(), "num".into(), "domain".into()],
        ..SchemaConfig::default()
    };
    let ev = state_event(
        "sensor.t",
        "1",
        json!({"room": "Living Room", "none": null, "num": 2.50, "domain": "attr"}),
    );
    assert_eq!(
        encode_with(&cfg, &ev),
        "sensor.t,a_zone=home,domain=attr,entity_id=forced,num=2.5,room=Living\\ Room value=1.0 1767261600123456000\n"
    );
}

#[test]
fn attribute_renames_and_ignores() {
    let cfg = SchemaConfig {
        ignore_attributes: vec!["icon".into()],
        ..SchemaConfig::default()
    };
    let ev = state_event(
        "sensor.t",
        "5",
        json!({"value": "abc", "state": 2, "icon": "mdi:x", "icon_str": "kept"}),
    );
    assert_eq!(
        fields_of(&encode_with(&cfg, &ev)),
        r#"icon_str_str="kept",state=2.0,value=5.0,value__str="abc""#
    );
    let ev = state_event("sensor.t", "heat", json!({"state": "x"}));
    assert_eq!(fields_of(&encode(&ev)), r#"state="heat",state__str="x""#);
}

#[test]
fn hard_characters_are_escaped() {
    let ev = state_event(
        "sensor.t",
        "a \"b\", c=d\\e\nf",
        json!({"unit_of_measurement": "a,b=c d\\", "key with space,=": "v\\", "q\"k": 1}),
    );
    let cfg = SchemaConfig {
        tags_attributes: vec!["key with space,=".into()],
        ..SchemaConfig::default()
    };
    assert_eq!(
        encode_with(&cfg, &ev),
        "a\\,b\\=c\\ d\\\\ ,domain=sensor,entity_id=t,key\\ with\\ space\\,\\==v\\\\  \
         q\"k=1.0,state=\"a \\\"b\\\", c=d\\\\e\\nf\" 1767261600123456000\n"
    );
}

#[test]
fn other_events_go_to_the_events_measurement() {
    let event = event_from_json(&json!({
        "event_type": "call_service",
        "data": {"domain": "light", "service": "turn_on", "service_data": {"entity_id": "light.x"}},
        "origin": "LOCAL",
        "time_fired": "2026-01-01T10:00:00.123456+00:00",
        "context": {"id": "C1", "parent_id": null, "user_id": "U1"}
    }));
    assert_eq!(
        encode(&event),
        "ha_events,domain=light,event_type=call_service,origin=LOCAL,service=turn_on \
         context_id=\"C1\",context_user_id=\"U1\",\
         data=\"{\\\"domain\\\":\\\"light\\\",\\\"service\\\":\\\"turn_on\\\",\\\"service_data\\\":{\\\"entity_id\\\":\\\"light.x\\\"}}\",\
         data_domain_str=\"light\",data_service_str=\"turn_on\" 1767261600123456000\n"
    );
    let cfg = SchemaConfig {
        write_other_events: false,
        ..SchemaConfig::default()
    };
    let mut encoder = Encoder::new(&cfg).expect("builds");
    let mut out = String::new();
    assert_eq!(
        encoder.encode(&event, &mut out),
        Encoded::Skipped(SkipReason::OtherEventsDisabled)
    );
    assert_eq!(out, "");
}

// ---------------------------------------------------------------------------
// Any text in any position survives a strict parser.

/// What HA's escaping keeps of a name: a newline becomes the two characters `\n`,
/// a trailing backslash gains a space.
fn name_as_read(s: &str) -> String {
    let mut t = s.replace('\n', "\\n");
    if t.ends_with('\\') {
        t.push(' ');
    }
    t
}

proptest! {
    #[test]
    fn any_text_round_trips(
        m in "\\PC{1,12}|[ ,=\\\\\"\n]{1,6}",
        tk in "\\PC{1,12}|[ ,=\\\\\"\n]{1,6}",
        tv in "\\PC{1,12}|[ ,=\\\\\"\n]{1,6}",
        fk in "\\PC{1,12}|[ ,=\\\\\"\n]{1,6}",
        sv in "\\PC{0,12}|[ ,=\\\\\"\n]{0,6}",
        ts in any::<i64>(),
    ) {
        let mut out = String::new();
        let mut line = LineBuilder::new(&mut out, &m);
        line.tag(&tk, &tv).tag("zz", "last");
        let mut f = line.fields();
        f.string(&fk, &sv).float("zz_f", -1.5e-7).boolean("zz_b", false);
        prop_assert!(f.finish(ts));
        let text = out.strip_suffix('\n').expect("newline");
        prop_assert!(!text.contains('\n'));
        let parsed = parse_line(text);
        prop_assert_eq!(parsed, Ok(Parsed {
            measurement: name_as_read(&m),
            tags: vec![(name_as_read(&tk), name_as_read(&tv)), ("zz".into(), "last".into())],
            fields: vec![
                (name_as_read(&fk), FieldValue::Str(sv.replace('\n', "\\n"))),
                ("zz_f".into(), FieldValue::Float("-1.5e-07".into())),
                ("zz_b".into(), FieldValue::Bool(false)),
            ],
            timestamp: ts,
        }));
    }

    #[test]
    fn encode_never_panics(
        state in "\\PC{0,10}|[0-9._eE+-]{1,8}",
        key in "\\PC{0,8}",
        text in "\\PC{0,16}",
        num in any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ) {
        let ev = state_event("sensor.p", &state, json!({
            key.clone(): text.clone(), "n": num, "list": [text.clone(), num], "obj": {key.clone(): null}
        }));
        let out = encode(&ev);
        if !out.is_empty() {
            let parsed = parse_line(out.trim_end_matches('\n'));
            prop_assert!(parsed.is_ok(), "{:?}: {}", parsed, out);
        }
    }
}
