//! `[[mqtt.subscriptions]]`: what to subscribe to and how its messages become events.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One MQTT subscription: what to subscribe to and how to turn its messages into events.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Names the subscription in metrics, logs, dead letters, and in events' `source` (`mqtt:<name>`).
    pub name: String,
    /// MQTT topic filter (`+`, `#`), optionally `$share/<group>/<filter>`.
    pub topic: String,
    /// 0, 1 or 2 (default 1): 1 or 2 with a persistent session is what makes delivery lossless.
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Retained messages: `ingest` (default) | `ignore` | `ingest_once`.
    #[serde(default)]
    pub retained: RetainedPolicy,
    /// The decoder: `statestream` | `eventstream` | `json` | `value`.
    pub decoder: DecoderKind,
    /// Pattern with named captures mapping topic levels (template `zigbee2mqtt/{device+}` or `regex:^…$`).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Domain of entity ids built from a `device` or `object_id` capture (default `sensor`).
    #[serde(default = "default_domain")]
    pub domain: String,
    /// `json`/`value`: emit bus events of this type instead of state changes.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Largest payload decoded, in bytes (default 1 MiB); larger ones are refused as `oversize`.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// `statestream`: how long the topics of one entity update are collected into one event.
    #[serde(default = "default_group_window", with = "humantime_serde")]
    pub group_window: Duration,
    /// `json`: joins the keys of nested objects when flattening (`color` `x` → `color_x`).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// `json`: one event per key (`per_key`, default) or one event per message (`per_device`).
    #[serde(default)]
    pub split: JsonSplit,
    /// `json` with `split = "per_device"`: the key whose value is the event's state (default `state`).
    #[serde(default = "default_state_key")]
    pub state_key: String,
    /// `json`: dotted path to the payload's own timestamp (`last_seen`, `time`); arrival time otherwise.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// `json`: how the timestamp is written (default `auto`).
    #[serde(default)]
    pub timestamp_format: TimestampFormat,
    /// `value`: `ON`/`OFF` style payloads become `on`/`off` (`bool`, default) or stay as sent (`text`).
    #[serde(default)]
    pub bools: BoolMode,
}

fn default_qos() -> u8 {
    1
}
fn default_domain() -> String {
    "sensor".to_string()
}
fn default_max_payload() -> usize {
    1 << 20
}
/// HA publishes an update's topics back to back (the recording in
/// `tests/data/fixtures/statestream.jsonl` shows different entities' updates 0.6 ms
/// apart, and the same entity's at least 395 ms apart); 100 ms leaves room for a
/// busy HA or broker while staying well below the next update of the entity,
/// whose `state` topic would close the group anyway.
fn default_group_window() -> Duration {
    Duration::from_millis(100)
}
fn default_separator() -> String {
    "_".to_string()
}
fn default_state_key() -> String {
    "state".to_string()
}

/// What to do with a retained message (a broker's stored last value, replayed on every subscribe).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetainedPolicy {
    /// Decode it like any other message.
    #[default]
    Ingest,
    /// Drop it: only live messages count.
    Ignore,
    /// Decode a retained topic's payload once; the same payload replayed on a resubscribe is dropped.
    IngestOnce,
}

/// Which payload format a subscription carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// HA's `mqtt_statestream`: one topic per state, timestamp and attribute.
    Statestream,
    /// HA's `mqtt_eventstream`: `{"event_type", "event_data"}`.
    Eventstream,
    /// A JSON object per message (Zigbee2MQTT, Tasmota `SENSOR` …).
    Json,
    /// A plain scalar payload (`21.5`, `ON`, `open`).
    Value,
}

impl DecoderKind {
    /// The config spelling, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DecoderKind::Statestream => "statestream",
            DecoderKind::Eventstream => "eventstream",
            DecoderKind::Json => "json",
            DecoderKind::Value => "value",
        }
    }
}

/// How a `json` message maps to events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonSplit {
    /// One state event per flattened key, entity `<domain>.<device>_<key>`: HA's own entity model.
    #[default]
    PerKey,
    /// One state event per message, entity `<domain>.<device>`, every key an attribute.
    PerDevice,
}

/// How a payload's timestamp is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// RFC 3339 text, or an epoch number whose size says its unit (s, ms, µs, ns).
    #[default]
    Auto,
    /// RFC 3339 text (`2026-01-01T10:00:00.123+00:00`).
    Rfc3339,
    /// Epoch seconds (integer or fraction).
    EpochSeconds,
    /// Epoch milliseconds (Zigbee2MQTT's `last_seen: epoch`).
    EpochMillis,
    /// Epoch microseconds.
    EpochMicros,
    /// Epoch nanoseconds.
    EpochNanos,
}

/// How `value` payloads such as `ON`/`OFF` are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BoolMode {
    /// `ON`/`OFF`/`true`/`false` become HA's `on`/`off` (so the state also counts as 1/0).
    #[default]
    Bool,
    /// Kept exactly as sent.
    Text,
}
