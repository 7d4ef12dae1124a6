//! MQTT decoders against recorded and Zigbee2MQTT-shaped input, through the `homeassistant` schema.
//!
//! - `statestream`: `tests/data/fixtures/statestream.jsonl` was recorded from a real
//!   HA in the same run as `tests/data/fixtures/ha-ws-frames.jsonl`, so every state
//!   reassembled from the MQTT topics must equal the `new_state` HA sent over
//!   the WebSocket API for the same entity and `last_updated`, and give the same
//!   line protocol. The lines are also kept in `tests/data/mqtt/statestream/expected.lp`.
//! - `json`: `tests/data/mqtt/zigbee2mqtt/` holds subscriptions, input messages and
//!   the expected line protocol (`UPDATE_GOLDEN=1` rewrites the `.lp` files; review the diff).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ha_ingestor::config::SchemaConfig;
use ha_ingestor::config::SubscriptionConfig;
use ha_ingestor::encode::{Encoded, Encoder};
use ha_ingestor::event::{Event, EventKind, StateChanged, Timestamp};
use ha_ingestor::source::mqtt::decode::{Decoders, Message};
use serde_json::Value;

fn path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read_jsonl(rel: &str) -> Vec<Value> {
    std::fs::read_to_string(path(rel))
        .expect("fixture exists")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
        .collect()
}

fn event_label(e: &Event) -> String {
    match e.entity_id() {
        Some(id) => id.to_string(),
        None => e.event_type().to_string(),
    }
}

fn encode(encoder: &mut Encoder, events: &[Event]) -> String {
    let mut lp = String::new();
    for e in events {
        let before = lp.len();
        match encoder.encode(e, &mut lp) {
            Encoded::Points(_) => {}
            Encoded::Skipped(reason) => {
                assert_eq!(lp.len(), before);
                lp.push_str(&format!(
                    "# skipped {}: {}\n",
                    event_label(e),
                    reason.as_str()
                ));
            }
        }
    }
    lp
}

/// Compares with the golden file, or rewrites it when `UPDATE_GOLDEN` is set.
fn golden(rel: &str, actual: &str) {
    let file = path(rel);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(file.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&file, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&file).expect("golden file exists");
    if expected != actual {
        for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
            assert_eq!(e, a, "{rel} line {}", i + 1);
        }
        assert_eq!(
            expected.lines().count(),
            actual.lines().count(),
            "{rel}: line count"
        );
        panic!("{rel}: differs (line endings?)");
    }
}

#[test]
fn statestream_fixture_matches_the_websocket_events_of_the_same_run() {
    let sub: SubscriptionConfig = toml::from_str(
        "name = \"statestream\"\ntopic = \"homeassistant_statestream/#\"\ndecoder = \"statestream\"",
    )
    .expect("subscription");
    let mut decoders = Decoders::new(&[sub]).expect("builds");
    let t0 = Instant::now();
    let mut events = Vec::new();
    let messages = read_jsonl("tests/data/fixtures/statestream.jsonl");
    assert_eq!(messages.len(), 600);
    for (i, m) in messages.iter().enumerate() {
        // The recording has no arrival times: messages 0.1 ms apart, as HA publishes an update's topics.
        let now = t0 + Duration::from_micros(100 * i as u64);
        decoders.flush_due(now, &mut events);
        let topic = m["topic"].as_str().expect("topic");
        let payload = m["payload"].as_str().expect("payload");
        let msg = Message {
            topic,
            payload: payload.as_bytes(),
            retained: m["retain"].as_bool().expect("retain"),
            received: Timestamp::from_nanos(i as i64),
            seq: i as u64 + 1,
        };
        decoders
            .decode_at(&msg, now, &mut events)
            .unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
    }
    decoders.flush_all(&mut events);
    assert!(decoders.take_errors().is_empty());
    assert_eq!(decoders.oldest_held(), None);
    // One event per update, each with its `last_updated` topic (`publish_timestamps`
    // was on). There are more `state` topics: `accept_attrs_4` has an attribute
    // named `state`, which HA publishes on the same topic.
    let count = |leaf: &str| {
        messages
            .iter()
            .filter(|m| m["topic"].as_str().is_some_and(|t| t.ends_with(leaf)))
            .count()
    };
    assert_eq!(events.len(), count("/last_updated"));
    assert!(count("/state") > events.len());

    // The WebSocket events of the same run, by (entity, last_updated).
    let mut ws: HashMap<(String, i64), Event> = HashMap::new();
    for frame in read_jsonl("tests/data/fixtures/ha-ws-frames.jsonl") {
        if frame["type"] != "event" || frame["event"]["event_type"] != "state_changed" {
            continue;
        }
        let ev = &frame["event"];
        let sc: StateChanged = serde_json::from_value(ev["data"].clone()).expect("state_changed");
        let Some(new) = &sc.new_state else { continue };
        let key = (new.entity_id.to_string(), new.last_updated.as_nanos());
        let time_fired: Timestamp = serde_json::from_value(ev["time_fired"].clone()).expect("time");
        ws.insert(
            key,
            Event {
                source: "homeassistant".into(),
                time_fired,
                origin: Default::default(),
                context: Default::default(),
                kind: EventKind::StateChanged(Box::new(sc)),
                meta: Default::default(),
            },
        );
    }

    // The recording stops in the middle of its last update: that event has only
    // the attributes published before the cut, in HA's order.
    let last_topic = messages[messages.len() - 1]["topic"]
        .as_str()
        .expect("topic");
    let cut_entity = {
        let mut it = last_topic.rsplitn(4, '/');
        let (_, object, domain) = (it.next(), it.next(), it.next());
        format!("{}.{}", domain.expect("domain"), object.expect("object id"))
    };
    let cut_index = events
        .iter()
        .rposition(|e| e.entity_id().is_some_and(|id| id.as_str() == cut_entity))
        .expect("the cut entity has events");

    let mut encoder = Encoder::new(&SchemaConfig::default()).expect("encoder");
    let (mut compared, mut unmatched) = (0, Vec::new());
    for (i, e) in events.iter().enumerate() {
        let new = e
            .state_changed()
            .and_then(|sc| sc.new_state.as_ref())
            .expect("a state change");
        assert_eq!(&*e.source, "mqtt:statestream");
        assert_eq!(e.time_fired, new.last_updated);
        let key = (new.entity_id.to_string(), new.last_updated.as_nanos());
        let Some(reference) = ws.get(&key) else {
            unmatched.push(key);
            continue;
        };
        let ref_state = reference
            .state_changed()
            .and_then(|sc| sc.new_state.as_ref())
            .expect("reference state");
        assert_eq!(new.state, ref_state.state, "{key:?}");
        if i == cut_index {
            let got: Vec<_> = new.attributes.iter().collect();
            let want: Vec<_> = ref_state.attributes.iter().take(got.len()).collect();
            assert!(got.len() < ref_state.attributes.len(), "{key:?} is not cut");
            assert_eq!(got, want, "{key:?}: the attributes before the cut");
            continue;
        }
        assert_eq!(new.attributes, ref_state.attributes, "{key:?}");
        assert_eq!(new.last_changed, ref_state.last_changed, "{key:?}");
        assert_eq!(
            encode(&mut encoder, std::slice::from_ref(e)),
            encode(&mut encoder, std::slice::from_ref(reference)),
            "{key:?}"
        );
        compared += 1;
    }
    eprintln!(
        "compared {compared} of {} events; unmatched {unmatched:?}",
        events.len()
    );
    assert!(
        compared >= 60,
        "compared {compared}, unmatched {unmatched:?}"
    );
    golden(
        "tests/data/mqtt/statestream/expected.lp",
        &encode(&mut encoder, &events),
    );
}

#[derive(serde::Deserialize)]
struct GoldenConfig {
    subscriptions: Vec<SubscriptionConfig>,
}

#[test]
fn zigbee2mqtt_payloads_give_the_expected_line_protocol() {
    let text =
        std::fs::read_to_string(path("tests/data/mqtt/zigbee2mqtt/config.toml")).expect("config");
    let cfg: GoldenConfig = toml::from_str(&text).expect("config parses");
    let mut decoders = Decoders::new(&cfg.subscriptions).expect("builds");
    let mut events = Vec::new();
    for (i, m) in read_jsonl("tests/data/mqtt/zigbee2mqtt/input.jsonl")
        .iter()
        .enumerate()
    {
        let payload = serde_json::to_vec(&m["payload"]).expect("payload");
        let msg = Message {
            topic: m["topic"].as_str().expect("topic"),
            payload: &payload,
            retained: m["retain"].as_bool().unwrap_or(false),
            // 2026-11-26T20:45:00Z plus one second per message.
            received: Timestamp::from_nanos(1_795_725_900_000_000_000 + i as i64 * 1_000_000_000),
            seq: i as u64 + 1,
        };
        let n = decoders
            .decode(&msg, &mut events)
            .unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        assert!(n > 0, "line {} gave no event", i + 1);
    }
    assert_eq!(decoders.oldest_held(), None, "json holds nothing back");
    let mut encoder = Encoder::new(&SchemaConfig::default()).expect("encoder");
    let mut lp = String::new();
    for e in &events {
        lp.push_str(&format!(
            "# {} {} {}\n",
            e.source,
            event_label(e),
            if e.meta.retained { "retained" } else { "live" }
        ));
        lp.push_str(&encode(&mut encoder, std::slice::from_ref(e)));
    }
    golden("tests/data/mqtt/zigbee2mqtt/expected.lp", &lp);

    // Bad input: the documented reason, no event.
    for m in read_jsonl("tests/data/mqtt/zigbee2mqtt/bad.jsonl") {
        let msg = Message {
            topic: m["topic"].as_str().expect("topic"),
            payload: m["payload_text"].as_str().expect("payload").as_bytes(),
            retained: false,
            received: Timestamp::from_nanos(0),
            seq: 100,
        };
        let before = events.len();
        let err = decoders
            .decode(&msg, &mut events)
            .expect_err("bad input is refused");
        assert_eq!(err.reason, m["reason"].as_str().expect("reason"), "{m}");
        assert_eq!(events.len(), before);
    }
}
