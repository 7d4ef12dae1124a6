//! `ha-ingestor bench mqtt`: topic matching + decoding on one core, per decoder.
//!
//! Every case routes each message through 20 subscriptions (19 for other topic
//! trees: Tasmota, Shelly, ESPHome, Frigate, statestream …, then the measured
//! one, last, so the one-pass match sees them all) and decodes it. Messages
//! cycle over 500 topics. The report gives messages and events per second and,
//! when the counting allocator is installed (the binary), allocations per message.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::thread_cpu_nanos;
use crate::config::SubscriptionConfig;
use crate::event::{Event, Timestamp};
use crate::source::mqtt::decode::{DecodeConfigError, DecodeError, Decoders, Message};

/// A typical Zigbee2MQTT climate sensor payload (Aqara-style, with the `update` object), ~300 bytes.
pub const Z2M_PAYLOAD: &str = r#"{"battery":97,"humidity":44.72,"linkquality":120,"power_outage_count":3,"pressure":1013.2,"temperature":21.53,"device_temperature":27,"voltage":2985,"update":{"installed_version":16777241,"latest_version":16777241,"state":"idle"},"update_available":false,"last_seen":"2026-11-26T20:44:47.219Z"}"#;

/// Topics the messages cycle over.
pub const TOPICS: usize = 500;

/// One measured case.
#[derive(Debug, Clone, Serialize)]
pub struct MqttBenchCase {
    /// What was measured (`json per_key`, `json per_device`, `value`, `statestream`, `route only`).
    pub case: String,
    /// Subscriptions (patterns) every message was matched against.
    pub subscriptions: usize,
    /// Average payload size.
    pub payload_bytes: usize,
    /// Messages processed.
    pub messages: u64,
    /// Events produced.
    pub events: u64,
    /// Measured wall time.
    pub seconds: f64,
    /// Messages per second on one core.
    pub messages_per_sec: f64,
    /// Events per second on one core.
    pub events_per_sec: f64,
    /// Messages per second of this thread's CPU time (`null` where Linux's schedstat is missing):
    /// the per-core figure even on a loaded machine.
    pub messages_per_cpu_sec: Option<f64>,
    /// Heap allocations per message (`null` without the counting allocator).
    pub allocs_per_message: Option<f64>,
    /// Heap bytes allocated per message (`null` without the counting allocator).
    pub bytes_allocated_per_message: Option<f64>,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum MqttBenchError {
    /// The built-in subscriptions did not compile (a bug).
    #[error("bench subscriptions: {0}")]
    Config(#[from] DecodeConfigError),
    /// A built-in message did not decode (a bug).
    #[error("bench message: {0}")]
    Decode(#[from] DecodeError),
}

fn sub(name: &str, topic: &str, decoder: &str, extra: &str) -> SubscriptionConfig {
    let text = format!("name = {name:?}\ntopic = {topic:?}\ndecoder = {decoder:?}\n{extra}");
    // Built from constants below: a failure is a bug in this file.
    toml::from_str(&text).unwrap_or_else(|e| panic!("bench subscription {name}: {e}"))
}

/// The 19 subscriptions for other topic trees, as a busy installation has them.
fn decoys() -> Vec<SubscriptionConfig> {
    vec![
        sub("ss", "homeassistant_statestream/#", "statestream", ""),
        sub("es", "homeassistant/events", "eventstream", ""),
        sub(
            "tas_sensor",
            "tele/+/SENSOR",
            "json",
            "pattern = \"tele/{device}/SENSOR\"",
        ),
        sub(
            "tas_state",
            "tele/+/STATE",
            "json",
            "pattern = \"tele/{device}/STATE\"\nsplit = \"per_device\"",
        ),
        sub(
            "tas_lwt",
            "tele/+/LWT",
            "value",
            "pattern = \"tele/{device}/LWT\"",
        ),
        sub(
            "tas_stat",
            "stat/+/+",
            "value",
            "pattern = \"stat/{device}/{attribute}\"",
        ),
        sub(
            "shelly",
            "shellies/+/relay/+/power",
            "value",
            "pattern = \"shellies/{device}/relay/{channel}/power\"",
        ),
        sub(
            "shelly_temp",
            "shellies/+/temperature",
            "value",
            "pattern = \"shellies/{device}/temperature\"",
        ),
        sub(
            "shelly_gen2",
            "+/events/rpc",
            "json",
            "pattern = \"{device}/events/rpc\"\nevent_type = \"shelly_rpc\"",
        ),
        sub(
            "esphome",
            "esphome/+/sensor/+/state",
            "value",
            "pattern = \"esphome/{device}/sensor/{object_id}/state\"",
        ),
        sub(
            "esphome_bin",
            "esphome/+/binary_sensor/+/state",
            "value",
            "pattern = \"esphome/{device}/binary_sensor/{object_id}/state\"\ndomain = \"binary_sensor\"",
        ),
        sub(
            "frigate",
            "frigate/events",
            "json",
            "event_type = \"frigate_event\"",
        ),
        sub(
            "frigate_stats",
            "frigate/stats",
            "json",
            "split = \"per_device\"",
        ),
        sub(
            "ring",
            "ring/+/alarm/+/+/state",
            "value",
            "pattern = \"regex:ring/[^/]+/alarm/(?P<device>[^/]+)/(?P<attribute>[^/]+)/state\"",
        ),
        sub(
            "owntracks",
            "owntracks/+/+",
            "json",
            "pattern = \"owntracks/{user}/{device}\"\nsplit = \"per_device\"",
        ),
        sub(
            "rtl433",
            "rtl_433/+/events",
            "json",
            "pattern = \"rtl_433/{host}/events\"\nevent_type = \"rtl_433\"",
        ),
        sub(
            "z2m_bridge",
            "zigbee2mqtt/bridge/#",
            "json",
            "event_type = \"z2m_bridge\"",
        ),
        sub(
            "z2m_avail",
            "zigbee2mqtt/#",
            "json",
            "pattern = \"zigbee2mqtt/{device+}/availability\"",
        ),
        sub(
            "z2m_set",
            "zigbee2mqtt/#",
            "json",
            "pattern = \"zigbee2mqtt/{device+}/set\"\nevent_type = \"z2m_set\"",
        ),
    ]
}

fn topics(prefix: &str, suffix: &str) -> Vec<String> {
    (0..TOPICS)
        .map(|i| format!("{prefix}room_{}/sensor_{}{suffix}", i / 10, i % 10))
        .collect()
}

/// Runs one case for at least `min_seconds`.
fn measure(
    case: &str,
    subs: Vec<SubscriptionConfig>,
    messages: &[(String, Vec<u8>)],
    min_seconds: f64,
    route_only: bool,
) -> Result<MqttBenchCase, MqttBenchError> {
    let subscriptions = subs.len();
    let mut decoders = Decoders::new(&subs)?;
    let mut out: Vec<Event> = Vec::with_capacity(64);
    let mut seq = 0u64;
    let received = Timestamp::from_nanos(1_795_725_887_219_000_000);
    let one_pass = |decoders: &mut Decoders, out: &mut Vec<Event>, seq: &mut u64| {
        let mut events = 0u64;
        let now = Instant::now();
        for (topic, payload) in messages {
            *seq += 1;
            if route_only {
                events += u64::from(decoders.route(topic).is_some());
                continue;
            }
            let msg = Message {
                topic,
                payload,
                retained: false,
                received,
                seq: *seq,
            };
            decoders.decode_at(&msg, now, out)?;
            decoders.flush_due(now, out);
            events += out.len() as u64;
            out.clear();
        }
        decoders.flush_all(out);
        events += out.len() as u64;
        out.clear();
        Ok::<u64, MqttBenchError>(events)
    };
    // Warm up: caches, the regex set's lazy DFA, the allocator.
    one_pass(&mut decoders, &mut out, &mut seq)?;
    let counting = crate::alloc_counter::is_active();
    let (allocs_before, bytes_before) = crate::alloc_counter::snapshot();
    let cpu_start = thread_cpu_nanos();
    let start = Instant::now();
    let (mut n, mut events) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs_f64(min_seconds) || n == 0 {
        events += one_pass(&mut decoders, &mut out, &mut seq)?;
        n += messages.len() as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = match (cpu_start, thread_cpu_nanos()) {
        (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
        _ => None,
    };
    let (allocs_after, bytes_after) = crate::alloc_counter::snapshot();
    let per_message = |x: u64| x as f64 / n as f64;
    Ok(MqttBenchCase {
        case: case.to_string(),
        subscriptions,
        payload_bytes: messages.iter().map(|(_, p)| p.len()).sum::<usize>() / messages.len().max(1),
        messages: n,
        events,
        seconds,
        messages_per_sec: n as f64 / seconds,
        events_per_sec: events as f64 / seconds,
        messages_per_cpu_sec: cpu_seconds.map(|c| n as f64 / c),
        allocs_per_message: counting.then(|| per_message(allocs_after - allocs_before)),
        bytes_allocated_per_message: counting.then(|| per_message(bytes_after - bytes_before)),
    })
}

/// Runs every case, each for at least `min_seconds`.
pub fn run(min_seconds: f64) -> Result<Vec<MqttBenchCase>, MqttBenchError> {
    let z2m: Vec<(String, Vec<u8>)> = topics("zigbee2mqtt/", "")
        .into_iter()
        .map(|t| (t, Z2M_PAYLOAD.as_bytes().to_vec()))
        .collect();
    let with = |last: SubscriptionConfig| {
        let mut subs = decoys();
        subs.push(last);
        subs
    };
    let mut cases = Vec::new();
    let z2m_sub = |split: &str| {
        sub(
            "z2m",
            "zigbee2mqtt/#",
            "json",
            &format!(
                "pattern = \"zigbee2mqtt/{{device+}}\"\nsplit = {split:?}\ntimestamp = \"last_seen\""
            ),
        )
    };
    cases.push(measure(
        "route only (20 patterns)",
        with(z2m_sub("per_device")),
        &z2m,
        min_seconds,
        true,
    )?);
    cases.push(measure(
        "json per_device",
        with(z2m_sub("per_device")),
        &z2m,
        min_seconds,
        false,
    )?);
    cases.push(measure(
        "json per_key",
        with(z2m_sub("per_key")),
        &z2m,
        min_seconds,
        false,
    )?);
    let values: Vec<(String, Vec<u8>)> = topics("sensors/", "/temperature")
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, format!("{}.{}", 15 + i % 10, i % 100).into_bytes()))
        .collect();
    cases.push(measure(
        "value",
        with(sub(
            "values",
            "sensors/#",
            "value",
            "pattern = \"sensors/{room}/{device}/{attribute}\"",
        )),
        &values,
        min_seconds,
        false,
    )?);
    // The recorded statestream (600 messages, 17 entities).
    let recorded = include_str!("../../tests/data/fixtures/statestream.jsonl");
    let mut ss = Vec::new();
    for line in recorded.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(topic), Some(payload)) = (v["topic"].as_str(), v["payload"].as_str()) else {
            continue;
        };
        ss.push((topic.to_string(), payload.as_bytes().to_vec()));
    }
    let mut ss_subs = decoys();
    ss_subs.remove(0);
    ss_subs.push(sub(
        "statestream",
        "homeassistant_statestream/#",
        "statestream",
        "",
    ));
    cases.push(measure("statestream", ss_subs, &ss, min_seconds, false)?);
    Ok(cases)
}
