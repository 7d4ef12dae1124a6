//! MQTT messages through every decoder kind the config allows (`statestream`,
//! `eventstream`, `json` per key and per device, with and without `event_type`,
//! `value` with both `bools` modes), routed by topic as the client does.
//!
//! Input: one byte choosing between two option sets (A: the defaults; B:
//! `ingest_once`/`ignore` retained policies, other timestamp formats, text bools,
//! a statestream pattern), then messages separated by a 0 byte, each
//! `<flags byte><topic>\x01<payload>` (flags bit 0: retained).
//!
//! Checked besides "never panics": an `Ok(n)` is exactly the events added, every
//! error's reason is one of `REASONS` and its detail is bounded, and after
//! `flush_all` nothing is held.
#![no_main]

use std::time::{Duration, Instant};

use ha_ingestor::config::SubscriptionConfig;
use ha_ingestor::event::Timestamp;
use ha_ingestor::source::mqtt::decode::{Decoders, Message, REASONS};
use libfuzzer_sys::fuzz_target;

const SET_A: &str = r#"
[[s]]
name = "statestream"
topic = "homeassistant_statestream/#"
decoder = "statestream"

[[s]]
name = "eventstream"
topic = "homeassistant_eventstream/#"
decoder = "eventstream"

[[s]]
name = "z2m_bridge"
topic = "zigbee2mqtt/bridge/#"
decoder = "json"
event_type = "zigbee2mqtt_bridge"

[[s]]
name = "z2m"
topic = "zigbee2mqtt/#"
decoder = "json"
pattern = "zigbee2mqtt/{device+}"
timestamp = "last_seen"

[[s]]
name = "value"
topic = "value/#"
decoder = "value"
pattern = "value/{device}/{extra+}"

[[s]]
name = "value_event"
topic = "value_event/#"
decoder = "value"
event_type = "value_seen"
"#;

const SET_B: &str = r#"
[[s]]
name = "statestream"
topic = "homeassistant_statestream/#"
decoder = "statestream"
pattern = "homeassistant_statestream/{domain}/{object_id}/{attribute}"
retained = "ingest_once"

[[s]]
name = "eventstream"
topic = "homeassistant_eventstream/#"
decoder = "eventstream"
retained = "ignore"

[[s]]
name = "z2m_bridge"
topic = "zigbee2mqtt/bridge/#"
decoder = "json"
event_type = "zigbee2mqtt_bridge"
separator = "."

[[s]]
name = "z2m"
topic = "zigbee2mqtt/#"
decoder = "json"
pattern = "zigbee2mqtt/{room}/{device+}"
domain = "light"
split = "per_device"
timestamp = "last_seen"
timestamp_format = "epoch_millis"
retained = "ingest_once"

[[s]]
name = "value"
topic = "value/#"
decoder = "value"
pattern = "regex:^value/(?P<device>[^/]+)/(?P<attribute>.+)$"
bools = "text"

[[s]]
name = "value_event"
topic = "value_event/#"
decoder = "value"
event_type = "value_seen"
max_payload = 64
"#;

#[derive(serde::Deserialize)]
struct Subs {
    s: Vec<SubscriptionConfig>,
}

fn decoders(text: &str) -> Decoders {
    let subs: Subs = toml::from_str(text).expect("the fuzz target's own config parses");
    Decoders::new(&subs.s).expect("the fuzz target's own subscriptions compile")
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let mut decoders = decoders(if choice & 1 == 0 { SET_A } else { SET_B });
    let start = Instant::now();
    let mut out = Vec::new();
    for (seq, record) in rest.split(|b| *b == 0).enumerate() {
        let Some((&flags, record)) = record.split_first() else {
            continue;
        };
        let (topic, payload) = match record.iter().position(|b| *b == 1) {
            Some(i) => (&record[..i], &record[i + 1..]),
            None => (record, &[][..]),
        };
        let Ok(topic) = std::str::from_utf8(topic) else {
            continue;
        };
        let msg = Message {
            topic,
            payload,
            retained: flags & 1 == 1,
            received: Timestamp::from_nanos(1_795_725_887_000_000_000 + seq as i64),
            seq: seq as u64,
        };
        // 30 ms between messages: some statestream groups close by their window.
        let now = start + Duration::from_millis(30 * seq as u64);
        decoders.flush_due(now, &mut out);
        let before = out.len();
        match decoders.decode_at(&msg, now, &mut out) {
            Ok(n) => assert_eq!(n, out.len() - before, "Ok(n) is not the events added"),
            Err(error) => {
                assert_eq!(out.len(), before, "a failed message added events");
                assert!(
                    REASONS.contains(&error.reason),
                    "unknown reason {}",
                    error.reason
                );
                assert!(error.detail.len() <= 203, "detail not bounded");
                let _ = error.to_string();
            }
        }
        if let Some(held) = decoders.oldest_held() {
            assert!(held <= seq as u64, "holds a message not yet seen");
        }
    }
    decoders.flush_all(&mut out);
    assert_eq!(decoders.oldest_held(), None, "flush_all left a group held");
    for error in decoders.take_errors() {
        assert!(
            REASONS.contains(&error.reason),
            "unknown reason {}",
            error.reason
        );
    }
});
