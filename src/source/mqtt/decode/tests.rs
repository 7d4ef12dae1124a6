use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn sub(name: &str, topic: &str, decoder: &str, extra: &str) -> SubscriptionConfig {
    toml::from_str(&format!(
        "name = {name:?}\ntopic = {topic:?}\ndecoder = {decoder:?}\n{extra}"
    ))
    .expect("subscription parses")
}

fn msg<'a>(topic: &'a str, payload: &'a [u8], seq: u64) -> Message<'a> {
    Message {
        topic,
        payload,
        retained: false,
        received: Timestamp::from_nanos(1_000_000_000 * seq as i64),
        seq,
    }
}

fn state(e: &Event) -> (&str, &str, &Attributes, i64) {
    let s = e
        .state_changed()
        .and_then(|sc| sc.new_state.as_ref())
        .expect("a state change with a new state");
    (
        s.entity_id.as_str(),
        s.state.as_str(),
        &s.attributes,
        e.time_fired.as_nanos(),
    )
}

#[test]
fn value_payloads_become_states_with_entity_from_captures() {
    let mut d = Decoders::new(&[sub(
        "z2m_attr",
        "zigbee2mqtt/#",
        "value",
        "pattern = \"zigbee2mqtt/{device+}/{attribute}\"",
    )])
    .expect("builds");
    let mut out = Vec::new();
    for (payload, want) in [
        ("21.5", "21.5"),
        ("ON", "on"),
        ("false", "off"),
        (" open ", "open"),
    ] {
        out.clear();
        let n = d
            .decode(
                &msg(
                    "zigbee2mqtt/Kitchen/Floor Light/temperature",
                    payload.as_bytes(),
                    1,
                ),
                &mut out,
            )
            .expect("decodes");
        assert_eq!(n, 1);
        let (id, st, _, t) = state(&out[0]);
        assert_eq!(id, "sensor.kitchen_floor_light_temperature");
        assert_eq!(st, want, "{payload}");
        assert_eq!(t, 1_000_000_000);
        assert_eq!(&*out[0].source, "mqtt:z2m_attr");
    }
    let mut text = Decoders::new(&[sub(
        "v",
        "v/+",
        "value",
        "bools = \"text\"\ndomain = \"binary_sensor\"",
    )])
    .expect("builds");
    out.clear();
    text.decode(&msg("v/door", b"ON", 1), &mut out)
        .expect("decodes");
    assert_eq!(state(&out[0]).0, "binary_sensor.door");
    assert_eq!(state(&out[0]).1, "ON");
    let err = text
        .decode(&msg("v/door", b"\xff\xfe", 2), &mut out)
        .expect_err("invalid utf-8 is refused");
    assert_eq!(err.reason, "invalid_utf8");
    assert_eq!(err.subscription, "v");
}

#[test]
fn value_with_event_type_gives_bus_events_with_typed_value() {
    let mut d = Decoders::new(&[sub(
        "t",
        "tasmota/+/+",
        "value",
        "pattern = \"tasmota/{device}/{metric}\"\nevent_type = \"tasmota_value\"",
    )])
    .expect("builds");
    let mut out = Vec::new();
    d.decode(&msg("tasmota/plug/POWER", b"12.5", 3), &mut out)
        .expect("decodes");
    d.decode(&msg("tasmota/plug/STATE", b"OFF", 4), &mut out)
        .expect("decodes");
    let EventKind::Bus(bus) = &out[0].kind else {
        panic!("bus event expected")
    };
    assert_eq!(bus.event_type, "tasmota_value");
    assert_eq!(bus.data["value"], json!(12.5));
    assert_eq!(bus.data["metric"], json!("POWER"));
    assert_eq!(bus.data["device"], json!("plug"));
    assert_eq!(bus.data["topic"], json!("tasmota/plug/POWER"));
    let EventKind::Bus(bus) = &out[1].kind else {
        panic!("bus event expected")
    };
    assert_eq!(bus.data["value"], json!(false));
}

#[test]
fn json_per_key_flattens_and_keeps_types() {
    let mut d = Decoders::new(&[sub(
        "z2m",
        "zigbee2mqtt/#",
        "json",
        "pattern = \"zigbee2mqtt/{device+}\"",
    )])
    .expect("builds");
    let mut out = Vec::new();
    let payload = br#"{"temperature":21,"humidity":44.72,"occupancy":true,"action":"single","color":{"x":0.3,"y":0.4},"update":null,"list":[1,2]}"#;
    let n = d
        .decode(&msg("zigbee2mqtt/hall/sensor", payload, 7), &mut out)
        .expect("decodes");
    let got: Vec<(&str, &str)> = out.iter().map(|e| (state(e).0, state(e).1)).collect();
    assert_eq!(n, 7);
    assert_eq!(
        got,
        [
            ("sensor.hall_sensor_temperature", "21"),
            ("sensor.hall_sensor_humidity", "44.72"),
            ("sensor.hall_sensor_occupancy", "on"),
            ("sensor.hall_sensor_action", "single"),
            ("sensor.hall_sensor_color_x", "0.3"),
            ("sensor.hall_sensor_color_y", "0.4"),
            ("sensor.hall_sensor_list", "[1,2]"),
        ]
    );
}

#[test]
fn json_keys_with_escapes_are_unescaped_into_the_key_path() {
    // Escaped keys reach the key seed as transient text, not borrowed from the payload.
    let mut d = Decoders::new(&[sub(
        "z2m",
        "zigbee2mqtt/+",
        "json",
        "split = \"per_device\"\nseparator = \".\"",
    )])
    .expect("builds");
    let mut out = Vec::new();
    let payload = br#"{"temp\u00e9rature":21.5,"m\"eta":{"r\/ssi":-60,"plain":1}}"#;
    d.decode(&msg("zigbee2mqtt/probe", payload, 1), &mut out)
        .expect("decodes");
    let (_, _, attrs, _) = state(&out[0]);
    assert_eq!(attrs.get("temp\u{e9}rature"), Some(&json!(21.5)));
    assert_eq!(attrs.get("m\"eta.r/ssi"), Some(&json!(-60)));
    assert_eq!(attrs.get("m\"eta.plain"), Some(&json!(1)));
}

#[test]
fn json_per_device_keeps_one_event_with_attributes_and_payload_time() {
    let mut d = Decoders::new(&[sub(
        "z2m",
        "zigbee2mqtt/+",
        "json",
        "split = \"per_device\"\nseparator = \".\"\ntimestamp = \"meta.last_seen\"\ntimestamp_format = \"epoch_millis\"",
    )])
    .expect("builds");
    let mut out = Vec::new();
    let payload =
        br#"{"state":"ON","brightness":215,"meta":{"last_seen":1795725887219,"rssi":-60}}"#;
    d.decode(&msg("zigbee2mqtt/lamp", payload, 1), &mut out)
        .expect("decodes");
    assert_eq!(out.len(), 1);
    let (id, st, attrs, t) = state(&out[0]);
    assert_eq!(id, "sensor.lamp");
    assert_eq!(st, "ON");
    assert_eq!(attrs.get("brightness"), Some(&json!(215)));
    assert_eq!(attrs.get("meta.rssi"), Some(&json!(-60)));
    assert!(!attrs.contains_key("meta.last_seen") && !attrs.contains_key("state"));
    assert_eq!(t, 1_795_725_887_219_000_000);
    // Without the state key the state is a fixed non-empty text.
    out.clear();
    d.decode(
        &msg(
            "zigbee2mqtt/lamp",
            br#"{"brightness":1,"meta":{"last_seen":1}}"#,
            2,
        ),
        &mut out,
    )
    .expect("decodes");
    assert_eq!(state(&out[0]).1, json::NO_STATE_KEY);
    // A timestamp of the wrong kind is refused, not replaced.
    let err = d
        .decode(
            &msg("zigbee2mqtt/lamp", br#"{"meta":{"last_seen":"soon"}}"#, 3),
            &mut out,
        )
        .expect_err("bad timestamp");
    assert_eq!(err.reason, "bad_timestamp");
}

#[test]
fn timestamps_read_every_format() {
    use json::parse_time;
    let want = Some(Timestamp::from_nanos(1_795_725_887_219_000_000));
    assert_eq!(
        parse_time(&json!(1_795_725_887.219), TimestampFormat::Auto).map(|t| t.as_nanos() / 1000),
        want.map(|t| t.as_nanos() / 1000)
    );
    assert_eq!(
        parse_time(&json!(1_795_725_887_219u64), TimestampFormat::Auto),
        want
    );
    assert_eq!(
        parse_time(&json!(1_795_725_887_219_000u64), TimestampFormat::Auto),
        want
    );
    assert_eq!(
        parse_time(&json!(1_795_725_887_219_000_000u64), TimestampFormat::Auto),
        want
    );
    assert_eq!(
        parse_time(
            &json!("2026-11-26T20:44:47.219+00:00"),
            TimestampFormat::Rfc3339
        ),
        want
    );
    assert_eq!(
        parse_time(&json!("2026-11-26T20:44:47.219"), TimestampFormat::Auto),
        want
    );
    assert_eq!(
        parse_time(&json!("1795725887219"), TimestampFormat::EpochMillis),
        want
    );
    assert_eq!(
        parse_time(&json!(1e300), TimestampFormat::EpochSeconds),
        None
    );
    assert_eq!(parse_time(&json!(true), TimestampFormat::Auto), None);
    assert_eq!(parse_time(&json!(5), TimestampFormat::Rfc3339), None);
}

#[test]
fn json_bad_input_has_bounded_reasons() {
    let mut d = Decoders::new(&[sub("j", "j/+", "json", "max_payload = 64")]).expect("builds");
    let mut out = Vec::new();
    let deep = format!("{}1{}", "{\"a\":".repeat(40), "}".repeat(40));
    let big = vec![b' '; 65];
    let cases: [(&[u8], &str); 8] = [
        (b"{\"a\":", "bad_json"),
        (b"[1,2]", "wrong_type"),
        (b"42", "wrong_type"),
        (b"nope", "bad_json"),
        (b"", "empty_payload"),
        (b"{\"a\":\"\xff\"}", "invalid_utf8"),
        (b"{\"a\":1} x", "bad_json"),
        (&big, "oversize"),
    ];
    for (payload, reason) in cases {
        let err = d
            .decode(&msg("j/x", payload, 1), &mut out)
            .expect_err("refused");
        assert_eq!(err.reason, reason, "{:?}", String::from_utf8_lossy(payload));
        assert!(REASONS.contains(&err.reason));
    }
    let mut d = Decoders::new(&[sub("j", "j/+", "json", "")]).expect("builds");
    let err = d
        .decode(&msg("j/x", deep.as_bytes(), 1), &mut out)
        .expect_err("too deep");
    assert_eq!(err.reason, "bad_json");
    assert!(out.is_empty());
    // A key that gives no entity id fails the whole message, not just its own event.
    let mut k = Decoders::new(&[sub("k", "k/+", "json", "")]).expect("builds");
    let err = k
        .decode(&msg("k/%%", br#"{"a":1,"%":2}"#, 1), &mut out)
        .expect_err("no entity for the second key");
    assert_eq!(err.reason, "bad_entity_id");
    assert!(out.is_empty(), "{out:?}");
    let err = d
        .decode(&msg("other", b"{}", 1), &mut out)
        .expect_err("no route");
    assert_eq!(err.reason, "no_subscription");
}

#[test]
fn eventstream_gives_state_changes_and_bus_events() {
    let mut d = Decoders::new(&[sub("es", "ha/events", "eventstream", "")]).expect("builds");
    let mut out = Vec::new();
    let sc = br#"{"event_type":"state_changed","event_data":{"entity_id":"light.a","old_state":null,"new_state":{"entity_id":"light.a","state":"on","attributes":{"brightness":3},"last_changed":"2026-01-01T10:00:00.000001+00:00","last_updated":"2026-01-01T10:00:00.000002+00:00","context":{"id":"01ABC","parent_id":null,"user_id":null}}}}"#;
    d.decode(&msg("ha/events", sc, 1), &mut out)
        .expect("decodes");
    let (id, st, attrs, t) = state(&out[0]);
    assert_eq!((id, st), ("light.a", "on"));
    assert_eq!(attrs.get("brightness"), Some(&json!(3)));
    assert_eq!(
        t,
        Timestamp::parse_rfc3339("2026-01-01T10:00:00.000002+00:00")
            .expect("ts")
            .as_nanos()
    );
    assert_eq!(out[0].context.id.as_deref(), Some("01ABC"));
    let call =
        br#"{"event_type":"call_service","event_data":{"domain":"light","service":"turn_on"}}"#;
    d.decode(&msg("ha/events", call, 2), &mut out)
        .expect("decodes");
    assert_eq!(out[1].event_type(), "call_service");
    assert_eq!(out[1].time_fired.as_nanos(), 2_000_000_000);
    let EventKind::Bus(bus) = &out[1].kind else {
        panic!("bus")
    };
    assert_eq!(bus.data["service"], json!("turn_on"));
    for (bad, reason) in [
        (&b"{\"event_type\":5}"[..], "wrong_type"),
        (b"{\"event_data\":{}}", "wrong_type"),
        (b"{\"event_type\":\"x\",\"event_data\":[1]}", "wrong_type"),
        (
            b"{\"event_type\":\"state_changed\",\"event_data\":{\"entity_id\":\"bad\"}}",
            "wrong_type",
        ),
        (b"{", "bad_json"),
        (b"", "empty_payload"),
    ] {
        let err = d
            .decode(&msg("ha/events", bad, 3), &mut out)
            .expect_err("refused");
        assert_eq!(err.reason, reason, "{}", String::from_utf8_lossy(bad));
    }
}

fn ss(
    d: &mut Decoders,
    topic: &str,
    payload: &str,
    seq: u64,
    now: Instant,
    out: &mut Vec<Event>,
) -> usize {
    d.decode_at(&msg(topic, payload.as_bytes(), seq), now, out)
        .expect("decodes")
}

#[test]
fn statestream_groups_an_update_within_the_window() {
    let mut d = Decoders::new(&[sub(
        "ss",
        "homeassistant_statestream/#",
        "statestream",
        "group_window = \"50ms\"",
    )])
    .expect("builds");
    let t0 = Instant::now();
    let mut out = Vec::new();
    let base = "homeassistant_statestream/sensor/temp";
    assert_eq!(
        ss(&mut d, &format!("{base}/state"), "20.00", 10, t0, &mut out),
        0
    );
    assert_eq!(d.oldest_held(), Some(10));
    assert_eq!(d.next_deadline(), Some(t0 + Duration::from_millis(50)));
    ss(
        &mut d,
        &format!("{base}/last_updated"),
        "2026-11-26T20:44:47.219127+00:00",
        11,
        t0,
        &mut out,
    );
    ss(
        &mut d,
        &format!("{base}/last_changed"),
        "2026-11-26T20:44:40.000000+00:00",
        12,
        t0,
        &mut out,
    );
    ss(
        &mut d,
        &format!("{base}/friendly_name"),
        "\"Temp \\\"x\\\"\"",
        13,
        t0,
        &mut out,
    );
    ss(
        &mut d,
        &format!("{base}/unit_of_measurement"),
        "\"\\u00b0C\"",
        14,
        t0,
        &mut out,
    );
    // Another entity interleaves, as in the recording.
    ss(
        &mut d,
        "homeassistant_statestream/light/l/state",
        "on",
        15,
        t0 + Duration::from_millis(5),
        &mut out,
    );
    d.flush_due(t0 + Duration::from_millis(49), &mut out);
    assert!(out.is_empty(), "nothing is due before the window ends");
    d.flush_due(t0 + Duration::from_millis(50), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(d.oldest_held(), Some(15));
    let (id, st, attrs, t) = state(&out[0]);
    assert_eq!((id, st), ("sensor.temp", "20.00"));
    assert_eq!(attrs.get("friendly_name"), Some(&json!("Temp \"x\"")));
    assert_eq!(attrs.get("unit_of_measurement"), Some(&json!("°C")));
    assert_eq!(
        t,
        Timestamp::parse_rfc3339("2026-11-26T20:44:47.219127+00:00")
            .expect("ts")
            .as_nanos()
    );
    let new = out[0]
        .state_changed()
        .and_then(|s| s.new_state.as_ref())
        .expect("state");
    assert_eq!(
        new.last_changed,
        Timestamp::parse_rfc3339("2026-11-26T20:44:40+00:00").expect("ts")
    );
    d.flush_all(&mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(d.oldest_held(), None);
    assert_eq!(d.next_deadline(), None);
}

#[test]
fn statestream_a_new_state_closes_the_previous_update_and_late_attributes_reuse_its_time() {
    let mut d = Decoders::new(&[sub("ss", "ss/#", "statestream", "")]).expect("builds");
    let t0 = Instant::now();
    let mut out = Vec::new();
    ss(&mut d, "ss/sensor/a/state", "1", 1, t0, &mut out);
    ss(
        &mut d,
        "ss/sensor/a/last_updated",
        "2026-01-01T00:00:01.000000+00:00",
        2,
        t0,
        &mut out,
    );
    assert_eq!(
        ss(&mut d, "ss/sensor/a/state", "2", 3, t0, &mut out),
        1,
        "the first update is emitted"
    );
    assert_eq!(state(&out[0]).1, "1");
    assert_eq!(d.oldest_held(), Some(3));
    d.flush_all(&mut out);
    assert_eq!(state(&out[1]).1, "2");
    assert_eq!(
        state(&out[1]).3,
        3_000_000_000,
        "no last_updated: arrival time"
    );
    // An attribute after the window: same state and time as the update it belongs to.
    ss(&mut d, "ss/sensor/a/battery", "88", 4, t0, &mut out);
    d.flush_all(&mut out);
    let (_, st, attrs, t) = state(&out[2]);
    assert_eq!((st, t), ("2", 3_000_000_000));
    assert_eq!(attrs.get("battery"), Some(&json!(88)));
    // An entity never seen with a state: reported, nothing emitted.
    ss(&mut d, "ss/sensor/b/battery", "1", 5, t0, &mut out);
    d.flush_all(&mut out);
    assert_eq!(out.len(), 3);
    let errors = d.take_errors();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].reason, "no_state");
    // Bad leaves are refused without disturbing the group.
    let err = d
        .decode_at(
            &msg("ss/sensor/a/last_updated", b"yesterday", 6),
            t0,
            &mut out,
        )
        .expect_err("bad time");
    assert_eq!(err.reason, "bad_timestamp");
    let err = d
        .decode_at(
            &msg("ss/sensor/a/friendly_name", b"{not json", 7),
            t0,
            &mut out,
        )
        .expect_err("bad json");
    assert_eq!(err.reason, "bad_json");
    let err = d
        .decode_at(&msg("ss/x", b"1", 8), t0, &mut out)
        .expect_err("short topic");
    assert_eq!(err.reason, "bad_entity_id");
    assert_eq!(d.oldest_held(), None);
}

#[test]
fn statestream_tells_an_attribute_named_state_from_the_next_update() {
    let mut d = Decoders::new(&[sub("ss", "ss/#", "statestream", "")]).expect("builds");
    let t0 = Instant::now();
    let mut out = Vec::new();
    let update = |d: &mut Decoders, out: &mut Vec<Event>, seq: u64, state: &str, lu: &str| {
        ss(d, "ss/sensor/a/state", state, seq, t0, out);
        ss(d, "ss/sensor/a/last_updated", lu, seq + 1, t0, out);
        ss(d, "ss/sensor/a/friendly_name", "\"A\"", seq + 2, t0, out);
    };
    update(&mut d, &mut out, 1, "5", "2026-01-01T00:00:01.000000+00:00");
    // The attribute named `state`, then another attribute: held, then added.
    assert_eq!(
        ss(&mut d, "ss/sensor/a/state", "\"attr\"", 4, t0, &mut out),
        0
    );
    assert_eq!(d.oldest_held(), Some(1));
    ss(
        &mut d,
        "ss/sensor/a/unit_of_measurement",
        "\"W\"",
        5,
        t0,
        &mut out,
    );
    // The next update: its `state` is held, its `last_updated` closes the first.
    update(&mut d, &mut out, 6, "6", "2026-01-01T00:00:02.000000+00:00");
    assert_eq!(out.len(), 1);
    let (_, st, attrs, _) = state(&out[0]);
    assert_eq!(st, "5");
    assert_eq!(attrs.get("state"), Some(&json!("attr")));
    assert_eq!(attrs.get("unit_of_measurement"), Some(&json!("W")));
    assert_eq!(
        d.oldest_held(),
        Some(6),
        "the second update starts at its state message"
    );
    // A held `state` when the window ends is the attribute.
    ss(&mut d, "ss/sensor/a/state", "7", 9, t0, &mut out);
    d.flush_due(t0 + Duration::from_secs(1), &mut out);
    assert_eq!(out.len(), 2);
    let (_, st, attrs, t) = state(&out[1]);
    assert_eq!(st, "6");
    assert_eq!(attrs.get("state"), Some(&json!(7)));
    assert_eq!(t, 1_767_225_602_000_000_000);
    assert_eq!(d.oldest_held(), None);
}

#[test]
fn statestream_with_a_pattern_and_quoted_states() {
    let mut d = Decoders::new(&[sub(
        "ss",
        "base/#",
        "statestream",
        "pattern = \"base/{domain}/{object_id}/{attribute}\"",
    )])
    .expect("builds");
    let mut out = Vec::new();
    let t0 = Instant::now();
    ss(&mut d, "base/switch/s1/state", "\"on\"", 1, t0, &mut out);
    d.flush_all(&mut out);
    assert_eq!(state(&out[0]).0, "switch.s1");
    assert_eq!(state(&out[0]).1, "on");
    let bad = sub("ss", "base/#", "statestream", "pattern = \"base/{device}\"");
    assert!(Decoders::new(&[bad]).is_err());
}

#[test]
fn retained_policies() {
    let mut d = Decoders::new(&[
        sub("ign", "a/+", "value", "retained = \"ignore\""),
        sub("once", "b/+", "value", "retained = \"ingest_once\""),
    ])
    .expect("builds");
    let mut out = Vec::new();
    let retained = |topic, payload: &'static [u8]| Message {
        retained: true,
        ..msg(topic, payload, 1)
    };
    assert_eq!(d.decode(&retained("a/x", b"1"), &mut out).expect("ok"), 0);
    assert_eq!(d.decode(&msg("a/x", b"1", 2), &mut out).expect("ok"), 1);
    assert_eq!(d.decode(&retained("b/x", b"1"), &mut out).expect("ok"), 1);
    assert!(out[1].meta.retained);
    assert_eq!(
        d.decode(&retained("b/x", b"1"), &mut out).expect("ok"),
        0,
        "replayed"
    );
    assert_eq!(
        d.decode(&retained("b/x", b"2"), &mut out).expect("ok"),
        1,
        "changed"
    );
    assert_eq!(d.decode(&msg("b/x", b"3", 3), &mut out).expect("ok"), 1);
    assert_eq!(
        d.decode(&retained("b/x", b"3"), &mut out).expect("ok"),
        0,
        "seen live"
    );
}

#[test]
fn config_errors_name_the_subscription_and_key() {
    let cases = [
        (
            vec![sub("a", "x", "value", ""), sub("a", "y", "value", "")],
            "duplicate",
        ),
        (vec![sub("a", "x/#/y", "value", "")], "invalid topic filter"),
        (vec![sub("a", "x", "value", "qos = 3")], "qos"),
        (
            vec![sub("a", "x", "value", "domain = \"Sensor\"")],
            "domain",
        ),
        (
            vec![sub("a", "x", "value", "pattern = \"x/{a\"")],
            "invalid pattern",
        ),
        (
            vec![sub("a", "x", "eventstream", "event_type = \"e\"")],
            "event_type",
        ),
        (vec![sub("a", "x", "json", "separator = \"\"")], "separator"),
    ];
    for (subs, want) in cases {
        let err = Decoders::new(&subs).expect_err("refused").to_string();
        assert!(err.contains(want), "{err}");
    }
    assert!(
        toml::from_str::<SubscriptionConfig>("name='a'\ntopic='x'\ndecoder='value'\nbogus=1")
            .is_err()
    );
}

#[test]
fn entity_ids_follow_the_documented_rules() {
    let cases = [
        (
            "zigbee2mqtt/+",
            None,
            "zigbee2mqtt/Living Room",
            "sensor.living_room",
        ),
        (
            "tele/+/SENSOR",
            None,
            "tele/plug1/SENSOR",
            "sensor.plug1_sensor",
        ),
        ("exact/topic", None, "exact/topic", "sensor.exact_topic"),
        ("x/#", Some("x/{entity_id}"), "x/light.desk", "light.desk"),
        ("x/#", Some("x/{entity_id}"), "x/desk", "sensor.desk"),
        (
            "x/#",
            Some("x/{domain}/{object_id}"),
            "x/switch/pump",
            "switch.pump",
        ),
    ];
    for (filter, pattern, topic, want) in cases {
        let extra = pattern
            .map(|p| format!("pattern = {p:?}"))
            .unwrap_or_default();
        let mut d = Decoders::new(&[sub("s", filter, "value", &extra)]).expect("builds");
        let mut out = Vec::new();
        d.decode(&msg(topic, b"1", 1), &mut out).expect("decodes");
        assert_eq!(state(&out[0]).0, want, "{topic}");
    }
    let mut d = Decoders::new(&[sub("s", "x/+", "value", "")]).expect("builds");
    let err = d
        .decode(&msg("x/%%", b"1", 1), &mut Vec::new())
        .expect_err("no slug");
    assert_eq!(err.reason, "bad_entity_id");
}

proptest::proptest! {
    #[test]
    fn no_input_panics(topic_tail in "[a-z/+#$]{0,12}", payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300), retained: bool) {
        let mut d = Decoders::new(&[
            sub("ss", "ss/#", "statestream", ""),
            sub("es", "es/#", "eventstream", ""),
            sub("j", "j/#", "json", "split = \"per_device\"\ntimestamp = \"t\""),
            sub("jk", "k/#", "json", "pattern = \"k/{device+}\""),
            sub("v", "#", "value", ""),
        ]).expect("builds");
        let mut out = Vec::new();
        for prefix in ["ss/", "es/", "j/", "k/", "v/", ""] {
            let topic = format!("{prefix}{topic_tail}");
            let m = Message { retained, ..msg(&topic, &payload, 1) };
            if let Err(e) = d.decode_at(&m, Instant::now(), &mut out) {
                proptest::prop_assert!(REASONS.contains(&e.reason), "{}", e.reason);
                proptest::prop_assert!(e.detail.len() <= DETAIL_MAX + 3);
            }
        }
        d.flush_all(&mut out);
        // JSON-looking payloads too.
        let text = String::from_utf8_lossy(&payload);
        let wrapped = format!("{{\"event_type\":\"x\",\"event_data\":{{\"a\":{text}}},\"t\":{text}}}");
        for topic in ["es/x", "j/x", "k/x"] {
            let _ = d.decode(&msg(topic, wrapped.as_bytes(), 2), &mut out);
        }
    }
}

proptest::proptest! {
    #[test]
    fn any_timestamp_number_is_read_or_refused_without_panic(i: i64, f: f64, s in ".{0,40}") {
        for format in [
            TimestampFormat::Auto,
            TimestampFormat::Rfc3339,
            TimestampFormat::EpochSeconds,
            TimestampFormat::EpochMillis,
            TimestampFormat::EpochMicros,
            TimestampFormat::EpochNanos,
        ] {
            let _ = json::parse_time(&json!(i), format);
            let _ = json::parse_time(&json!(f), format);
            let _ = json::parse_time(&json!(s), format);
            let _ = json::parse_time(&json!(i.to_string()), format);
        }
    }
}
