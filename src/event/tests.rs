//! Tests of the event model: timestamps, entity ids, attributes and the lazily
//! decoded old state.

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

fn chrono_nanos(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
}

#[test]
fn ha_fast_path_agrees_with_chrono() {
    for text in [
        "1970-01-01T00:00:00.000000+00:00",
        "1969-12-31T23:59:59.999999+00:00",
        "2024-02-29T12:00:00.000001+00:00",
        "2000-02-29T00:00:00.500000+00:00",
        "2262-04-11T23:47:16.854775+00:00",
        "1677-09-21T00:12:43.145225+00:00",
    ] {
        let fast = parse_ha_utc(text.as_bytes());
        assert!(fast.is_none() || fast == chrono_nanos(text), "{text}");
        let full = Timestamp::parse_rfc3339(text).ok().map(Timestamp::as_nanos);
        assert_eq!(full, chrono_nanos(text), "{text}");
    }
    assert!(parse_ha_utc(b"2026-11-26T20:44:47.219127+00:00").is_some());
    for bad in [
        "2023-02-29T12:00:00.000000+00:00",
        "1900-02-29T12:00:00.000000+00:00",
        "2026-13-01T12:00:00.000000+00:00",
        "2026-01-01T24:00:00.000000+00:00",
        "2026-01-01T23:59:60.000000+00:00",
        "2026-01-01T23:59:59.00000a+00:00",
        "2026-01-01T23:59:59.000000+01:00",
        "2263-01-01T00:00:00.000000+00:00",
    ] {
        assert_eq!(parse_ha_utc(bad.as_bytes()), None, "{bad}");
    }
    assert!(Timestamp::parse_rfc3339("2023-02-29T12:00:00.000000+00:00").is_err());
    assert!(Timestamp::parse_rfc3339("2263-01-01T00:00:00.000000+00:00").is_err());
}

proptest::proptest! {
    #[test]
    fn ha_fast_path_matches_chrono_everywhere(nanos in -9_000_000_000_000_000_000i64..9_000_000_000_000_000_000i64) {
        let micros_only = nanos - nanos.rem_euclid(1_000);
        let text = Timestamp(micros_only).to_rfc3339();
        proptest::prop_assert_eq!(text.len(), 32);
        proptest::prop_assert_eq!(parse_ha_utc(text.as_bytes()), Some(micros_only));
        proptest::prop_assert_eq!(chrono_nanos(&text), Some(micros_only));
    }
}

#[test]
fn attributes_keep_order_and_last_duplicate() {
    let a: Attributes = serde_json::from_str(r#"{"b":1,"a":2,"b":3}"#).unwrap();
    let keys: Vec<_> = a.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["b", "a"]);
    assert_eq!(a.get("b"), Some(&serde_json::json!(3)));
    let many = (0..100)
        .map(|i| format!("\"k{}\":{i}", i % 50))
        .collect::<Vec<_>>()
        .join(",");
    let a: Attributes = serde_json::from_str(&format!("{{{many}}}")).unwrap();
    assert_eq!(a.len(), 50);
    assert_eq!(a.get("k7"), Some(&serde_json::json!(57)));
    let back: Attributes = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(back, a);
    let null: Attributes = serde_json::from_str("null").unwrap();
    assert!(null.is_empty());
}

#[test]
fn old_state_is_decoded_on_demand_and_bad_json_is_reported() {
    let good = r#"{"entity_id":"light.a","old_state":{"entity_id":"light.a","state":"on","attributes":{"brightness":3},"last_changed":"2026-01-01T10:00:00.000001+00:00","last_updated":"2026-01-01T10:00:00.000001+00:00"},"new_state":null}"#;
    let sc: StateChanged = serde_json::from_str(good).unwrap();
    let old = sc.old_state.as_ref().unwrap();
    assert_eq!(old.get().unwrap().state, "on");
    assert_eq!(old.get().unwrap().attributes["brightness"], 3);
    // Serialising gives HA's JSON back unchanged.
    assert_eq!(serde_json::to_string(&sc).unwrap(), good);
    // A wrong type inside the old state surfaces when a stage asks, not as a panic.
    let bad = good.replace(r#""state":"on""#, r#""state":5"#);
    let sc: StateChanged = serde_json::from_str(&bad).unwrap();
    let err = sc.old_state.as_ref().unwrap().get().unwrap_err();
    assert!(err.contains("invalid type"), "{err}");
    assert!(sc.old_state.as_ref().unwrap().state().is_none());
    // Not an object at all is refused while decoding the frame.
    let scalar = good.replace(
        &good[good.find(r#"{"entity_id":"light.a","state""#).unwrap()
            ..good.find(r#","new_state""#).unwrap()],
        "7",
    );
    assert!(serde_json::from_str::<StateChanged>(&scalar).is_err());
}

#[test]
fn ids_inline_and_on_the_heap_compare_by_text() {
    let long = "sensor.a_very_long_entity_identifier_beyond_forty_bytes";
    let a = EntityId::new(long).unwrap();
    assert_eq!(a.as_str(), long);
    assert_eq!(a.object_id(), &long[7..]);
    let short = EntityId::new("light.x").unwrap();
    assert!(short < a);
    assert_eq!(short, EntityId::new("light.x").unwrap());
    let c: ContextId = "01M8CSN1QKYHSK65MWAB50M2V6".into();
    let d: ContextId = serde_json::from_str("\"01M8CSN1QKYHSK65MWAB50M2V6\"").unwrap();
    assert_eq!(c, d);
    let big: ContextId = "x".repeat(100).into();
    assert_eq!(big.len(), 100);
    assert_eq!(serde_json::to_string(&big).unwrap().len(), 102);
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

#[test]
fn peek_state_reads_the_value_without_decoding() {
    let lazy = |json: &str| -> LazyState { serde_json::from_str(json).unwrap() };
    let cases = [
        (
            r#"{"entity_id":"a.b","state":"on","attributes":{"x":1}}"#,
            Some("on"),
        ),
        (
            r#"{"attributes":{"state":"no"},"state":"21.5"}"#,
            Some("21.5"),
        ),
        (
            r#"{"entity_id":"a.b","state":"say \"hi\""}"#,
            Some("say \"hi\""),
        ),
        (r#"{"entity_id":"a.b","state":null}"#, None),
        (r#"{"entity_id":"a.b","state":3}"#, None),
        (r#"{"entity_id":"a.b"}"#, None),
    ];
    for (json, want) in cases {
        let l = lazy(json);
        assert_eq!(l.peek_state().as_deref(), want, "{json}");
        assert!(l.decoded.get().is_none(), "{json}: peeking decodes nothing");
    }
    let state = State::at(
        EntityId::new("a.b").unwrap(),
        "off".into(),
        Attributes::new(),
        Timestamp::from_nanos(0),
    );
    assert_eq!(LazyState::from(state).peek_state().as_deref(), Some("off"));
}

proptest::proptest! {
    /// For any state HA could send (any text, escapes and non-ASCII included, any
    /// attributes before or after it), the peeked value is the decoded state's.
    #[test]
    fn peek_state_equals_the_decoded_value(
        value in ".{0,24}",
        attributes in proptest::collection::btree_map("[a-z_\"\\\\]{1,8}", ".{0,12}", 0..4),
        attributes_first in proptest::bool::ANY,
    ) {
        let attrs = serde_json::to_string(&attributes).unwrap();
        let state = serde_json::to_string(&value).unwrap();
        let json = if attributes_first {
            format!(r#"{{"entity_id":"a.b","attributes":{attrs},"state":{state},"last_changed":"2026-01-01T00:00:00+00:00","last_updated":"2026-01-01T00:00:00+00:00"}}"#)
        } else {
            format!(r#"{{"entity_id":"a.b","state":{state},"attributes":{attrs},"last_changed":"2026-01-01T00:00:00+00:00","last_updated":"2026-01-01T00:00:00+00:00"}}"#)
        };
        let lazy: LazyState = serde_json::from_str(&json).unwrap();
        let peeked = lazy.peek_state().map(|v| v.into_owned());
        proptest::prop_assert_eq!(peeked.as_deref(), Some(value.as_str()));
        proptest::prop_assert_eq!(lazy.state().map(|s| s.state.as_str()), Some(value.as_str()));
    }
}
