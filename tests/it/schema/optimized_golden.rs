//! The `optimized` schema mode over the recorded fixtures, plus its typing rules.
//!
//! - Golden: every event of `tests/data/fixtures/ha-native-pairs.jsonl` (real
//!   `state_changed` events, hard values included) encodes to exactly the lines
//!   in `tests/data/schema_optimized/golden.lp` (reviewed by hand; regenerate
//!   with `UPDATE_GOLDEN=1` after a deliberate change and review the diff).
//! - Rules spelled out on single events (signs, units, on/off, tags, version).
//! - A property: over random states and attributes, one (measurement, field
//!   key) never carries two types, and no field is named `*_str`.
//! - The same lines are accepted whole by a real `influxd`.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use support::event_from_json;

use ha_ingestor::config::{AttributeType, SchemaConfig, SchemaMode};
use ha_ingestor::encode::optimized::SCHEMA_VERSION;
use ha_ingestor::encode::{Encoded, Encoder, SchemaError, SkipReason};
use ha_ingestor::event::{EntityId, Event, State, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

const GOLDEN: &str = "tests/data/schema_optimized/golden.lp";
const T: i64 = 1_767_261_600_123_456_000;

fn optimized() -> SchemaConfig {
    SchemaConfig {
        mode: SchemaMode::Optimized,
        ..SchemaConfig::default()
    }
}

fn state_event(entity: &str, state: &str, attributes: Value) -> Event {
    let id = EntityId::new(entity).expect("entity id");
    let attrs = match attributes {
        Value::Object(m) => m.into(),
        _ => Default::default(),
    };
    Event::from_state(
        Arc::from("test"),
        State::at(id, state.to_string(), attrs, Timestamp::from_nanos(T)),
    )
}

fn encode_one(cfg: &SchemaConfig, event: &Event) -> String {
    let mut enc = Encoder::new(cfg).expect("encoder");
    let mut out = String::new();
    enc.encode(event, &mut out);
    out
}

fn fixture_events() -> Vec<Event> {
    let text =
        std::fs::read_to_string("tests/data/fixtures/ha-native-pairs.jsonl").expect("fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("fixture line is JSON");
            event_from_json(&v["event"])
        })
        .collect()
}

fn encode_fixtures() -> String {
    let mut enc = Encoder::new(&optimized()).expect("encoder");
    let mut out = String::new();
    for e in fixture_events() {
        enc.encode(&e, &mut out);
    }
    out
}

#[test]
fn recorded_events_give_the_golden_lines() {
    let got = encode_fixtures();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all("tests/data/schema_optimized").expect("mkdir");
        std::fs::write(GOLDEN, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(GOLDEN).expect("golden file");
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {} differs", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count(), "line count");
    assert!(
        want.lines().count() > 200,
        "the golden file covers the recording"
    );
}

// ---------------------------------------------------------------------------
// A small line-protocol reader: enough to tell tags, field keys and field types.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ty {
    Float,
    Str,
    Bool,
    Int,
}

#[derive(Debug)]
struct Line {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, Ty, String)>,
}

/// Reads a name up to a stop byte with InfluxDB 1.x's scanning rules: `\\`, `\ `,
/// `\,`, `\=` give the character, any other backslash stays, and a stop byte right
/// after a backslash byte is not a stop.
fn take(b: &[u8], mut i: usize, stops: &[u8]) -> (String, usize) {
    let mut raw = Vec::new();
    while i < b.len() {
        let c = b[i];
        if c == b'\\' && i + 1 < b.len() {
            let next = b[i + 1];
            if matches!(next, b'\\' | b' ' | b',' | b'=') {
                raw.push(next);
            } else {
                raw.push(b'\\');
                raw.push(next);
            }
            i += 2;
            continue;
        }
        if stops.contains(&c) && !(i > 0 && b[i - 1] == b'\\') {
            break;
        }
        raw.push(c);
        i += 1;
    }
    (String::from_utf8_lossy(&raw).into_owned(), i)
}

fn parse(line: &str) -> Line {
    let b = line.as_bytes();
    let (measurement, mut i) = take(b, 0, b", ");
    let mut tags = Vec::new();
    while b[i] == b',' {
        let (k, j) = take(b, i + 1, b"=");
        let (v, j) = take(b, j + 1, b", ");
        tags.push((k, v));
        i = j;
    }
    assert_eq!(b[i], b' ', "space before fields in {line:?}");
    let mut fields = Vec::new();
    loop {
        let (k, j) = take(b, i + 1, b"=");
        i = j + 1;
        let (ty, val, j) = if b[i] == b'"' {
            let mut j = i + 1;
            let mut v = Vec::new();
            while b[j] != b'"' {
                if b[j] == b'\\' && (b[j + 1] == b'"' || b[j + 1] == b'\\') {
                    j += 1;
                }
                v.push(b[j]);
                j += 1;
            }
            (Ty::Str, String::from_utf8_lossy(&v).into_owned(), j + 1)
        } else {
            let (v, j) = take(b, i, b", ");
            let ty = match v.as_str() {
                "true" | "false" => Ty::Bool,
                v if v.ends_with('i') => Ty::Int,
                v => {
                    assert!(v.parse::<f64>().is_ok(), "float field {v:?} in {line:?}");
                    Ty::Float
                }
            };
            (ty, v, j)
        };
        fields.push((k, ty, val));
        i = j;
        if b[i] != b',' {
            break;
        }
    }
    assert_eq!(b[i], b' ', "space before the time in {line:?}");
    assert!(
        line[i + 1..].parse::<i64>().is_ok(),
        "timestamp in {line:?}"
    );
    Line {
        measurement,
        tags,
        fields,
    }
}

/// Field types seen per (measurement, key), across every line.
fn types_of(lines: &str) -> BTreeMap<(String, String), std::collections::BTreeSet<Ty>> {
    let mut seen: BTreeMap<(String, String), std::collections::BTreeSet<Ty>> = BTreeMap::new();
    for l in lines.lines() {
        let p = parse(l);
        for (k, ty, _) in p.fields {
            seen.entry((p.measurement.clone(), k))
                .or_default()
                .insert(ty);
        }
    }
    seen
}

#[test]
fn golden_lines_have_one_type_per_field_and_no_twins() {
    let out = encode_fixtures();
    for ((m, k), tys) in types_of(&out) {
        assert_eq!(tys.len(), 1, "{m}.{k} has types {tys:?}");
        if m != "ha_events" {
            assert!(!k.ends_with("_str"), "{m}.{k} is a _str twin");
        }
    }
    // Every state point says which schema wrote it; events keep their own layout.
    for l in out.lines() {
        let p = parse(l);
        if p.measurement == "ha_events" {
            continue;
        }
        assert!(
            p.tags
                .iter()
                .any(|(k, v)| k == "schema" && v == SCHEMA_VERSION),
            "no schema tag in {l:?}"
        );
        let main: Vec<_> = p
            .fields
            .iter()
            .filter(|(k, _, _)| k == "value" || k == "state")
            .collect();
        assert_eq!(main.len(), 1, "exactly one of value/state in {l:?}");
    }
}

#[test]
fn numeric_states_keep_sign_and_lose_the_unit() {
    let cfg = optimized();
    let line = encode_one(
        &cfg,
        &state_event(
            "sensor.outdoor",
            "-5.5 °C",
            json!({"unit_of_measurement": "°C", "device_class": "temperature", "friendly_name": "Out"}),
        ),
    );
    assert_eq!(
        line,
        format!(
            "sensor__temperature,device_class=temperature,domain=sensor,entity_id=sensor.outdoor,schema={SCHEMA_VERSION},unit=°C value=-5.5 {T}\n"
        )
    );
}

#[test]
fn text_states_are_the_state_field_and_on_off_stays_text() {
    let cfg = optimized();
    let line = encode_one(
        &cfg,
        &state_event(
            "light.kitchen",
            "on",
            json!({"brightness": 254, "rgb_color": [255, 0, 0], "friendly_name": "K", "icon": "mdi:x"}),
        ),
    );
    assert_eq!(
        line,
        format!(
            "light,domain=light,entity_id=light.kitchen,schema={SCHEMA_VERSION} brightness=254.0,state=\"on\" {T}\n"
        )
    );
    // A version-like text is text, never a scraped number.
    let line = encode_one(&cfg, &state_event("update.core", "2024.3.3", json!({})));
    assert!(line.contains("state=\"2024.3.3\""), "{line}");
    assert!(!line.contains("value="), "{line}");
    // Non-finite numbers are text too.
    let line = encode_one(&cfg, &state_event("sensor.x", "nan", json!({})));
    assert!(line.contains("state=\"nan\""), "{line}");
}

#[test]
fn sensors_without_device_class_and_unsplit_domains_use_the_domain() {
    let mut cfg = optimized();
    let line = encode_one(&cfg, &state_event("sensor.count", "3", json!({})));
    assert!(line.starts_with("sensor,"), "{line}");
    let line = encode_one(
        &cfg,
        &state_event("binary_sensor.door", "off", json!({"device_class": "door"})),
    );
    assert!(
        line.starts_with("binary_sensor,device_class=door,"),
        "{line}"
    );
    cfg.optimized.split_by_device_class = vec![];
    let line = encode_one(
        &cfg,
        &state_event("sensor.t", "1", json!({"device_class": "temperature"})),
    );
    assert!(
        line.starts_with("sensor,device_class=temperature,"),
        "{line}"
    );
}

#[test]
fn pinned_types_convert_or_leave_the_attribute_out() {
    let mut cfg = optimized();
    cfg.optimized.attributes = [
        ("battery".to_string(), AttributeType::Float),
        ("charging".to_string(), AttributeType::Boolean),
        ("mode".to_string(), AttributeType::String),
    ]
    .into_iter()
    .collect();
    let line = encode_one(
        &cfg,
        &state_event(
            "sensor.phone",
            "x",
            json!({"battery": "-12 %", "charging": "on", "mode": 3}),
        ),
    );
    assert!(
        line.contains(" battery=-12.0,charging=true,mode=\"3\",state=\"x\" "),
        "{line}"
    );
    let line = encode_one(
        &cfg,
        &state_event(
            "sensor.phone",
            "x",
            json!({"battery": "low", "charging": "maybe", "mode": null}),
        ),
    );
    assert!(line.contains(" state=\"x\" "), "{line}");
    assert!(!line.contains("battery"), "{line}");
}

#[test]
fn user_tags_apply_and_clashing_attributes_are_refused() {
    let mut cfg = optimized();
    cfg.tags_attributes = vec!["friendly_name".to_string()];
    cfg.tags = [("instance".to_string(), "home".to_string())]
        .into_iter()
        .collect();
    let line = encode_one(
        &cfg,
        &state_event("switch.fan", "off", json!({"friendly_name": "Fan"})),
    );
    assert_eq!(
        line,
        format!(
            "switch,domain=switch,entity_id=switch.fan,friendly_name=Fan,instance=home,schema={SCHEMA_VERSION} state=\"off\" {T}\n"
        )
    );
    for bad in ["value", "state", "friendly_name", "unit", "entity_id"] {
        let mut c = cfg.clone();
        c.optimized
            .attributes
            .insert(bad.to_string(), AttributeType::Float);
        assert!(
            matches!(
                Encoder::new(&c),
                Err(SchemaError::OptimizedAttribute { .. })
            ),
            "{bad} accepted"
        );
    }
}

#[test]
fn skips_as_home_assistant_does() {
    let mut enc = Encoder::new(&optimized()).expect("encoder");
    let mut out = String::new();
    for s in ["unknown", "unavailable", ""] {
        assert_eq!(
            enc.encode(&state_event("sensor.a", s, json!({})), &mut out),
            Encoded::Skipped(SkipReason::UnknownState)
        );
    }
    assert!(out.is_empty());
}

fn attr_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>().prop_map(|f| json!(f)),
        any::<i32>().prop_map(|i| json!(i)),
        any::<bool>().prop_map(|b| json!(b)),
        "[-+]?[0-9]{0,3}(\\.[0-9]{0,2})?( ?(°C|%|kWh|a,b=c))?".prop_map(Value::String),
        "[a-z =,\"\\\\]{0,8}".prop_map(Value::String),
        Just(json!([1, "a"])),
        Just(json!({"k": 1})),
        Just(Value::Null),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn one_field_key_never_gets_two_types(
        events in proptest::collection::vec(
            (
                prop_oneof![Just("sensor.a"), Just("sensor.b"), Just("light.l"), Just("climate.c")],
                prop_oneof![
                    "[-+]?[0-9]{1,3}(\\.[0-9]{1,2})?( °C)?",
                    "[a-z_ ]{1,6}",
                    Just("on".to_string()),
                    Just("nan".to_string()),
                ],
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("brightness"), Just("temperature"), Just("hvac_action"),
                        Just("device_class"), Just("unit_of_measurement"), Just("other"),
                    ],
                    attr_value(),
                    0..5,
                ),
            ),
            1..40,
        )
    ) {
        let mut enc = Encoder::new(&optimized()).expect("encoder");
        let mut out = String::new();
        for (entity, state, attrs) in &events {
            let attrs: serde_json::Map<String, Value> =
                attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            enc.encode(&state_event(entity, state, Value::Object(attrs)), &mut out);
        }
        for ((m, k), tys) in types_of(&out) {
            prop_assert_eq!(tys.len(), 1, "{}.{} has {:?}", m, k, tys);
            prop_assert!(!k.ends_with("_str"));
            let want = match k.as_str() {
                "state" | "hvac_action" | "preset_mode" => Ty::Str,
                _ => Ty::Float,
            };
            prop_assert_eq!(tys.into_iter().next(), Some(want), "{}.{}", m, k);
        }
    }
}

#[tokio::test]
async fn influxd_accepts_every_line() {
    let lines = encode_fixtures();
    let db = support::Influxd::start("opt").await;
    let reply = support::influxd::http_client()
        .post(format!("{}/write?db=opt", db.url()))
        .body(lines.clone())
        .send()
        .await
        .expect("write");
    let status = reply.status();
    let body = reply.text().await.unwrap_or_default();
    assert_eq!(status.as_u16(), 204, "influxd refused: {body}");
    // Distinct (series, time) pairs are what influxd keeps.
    let mut keys = std::collections::BTreeSet::new();
    for l in lines.lines() {
        let p = parse(l);
        let time = l.rsplit(' ').next().expect("time");
        keys.insert((p.measurement, p.tags, time.to_string()));
    }
    // Rows of SELECT * (one per stored point, whichever fields it has).
    let all = db.query("SELECT * FROM /.*/").await;
    let stored: usize = all["results"][0]["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(stored, keys.len());
}
