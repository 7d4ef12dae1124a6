//! `[[mqtt]]`: the MQTT brokers, each with its `[[mqtt.subscriptions]]`: what to
//! subscribe to and how its messages become events. The decoders that read these
//! settings are in `source::mqtt::decode`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::{redact_url, secret};
use super::tls::MqttTlsConfig;
use super::{default_connect_timeout, default_reconnect_max, default_reconnect_min};

/// MQTT protocol version spoken to a broker.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MqttProtocol {
    /// MQTT 5: announces a Receive Maximum and a session expiry, needed for a large in-flight window.
    #[default]
    V5,
    /// MQTT 3.1.1, for brokers without MQTT 5 (in-flight window set by the broker: see docs/mqtt.md).
    #[serde(rename = "v3.1.1", alias = "v311", alias = "v4")]
    V311,
}

/// One MQTT broker (`[[mqtt]]`) and what to read from it (`Debug` hides the password).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Names the broker in metrics, logs and the default client id (`mqtt` by default; unique).
    #[serde(default = "default_mqtt_name")]
    pub name: String,
    /// `mqtt://host:1883` or `mqtts://host:8883` (TLS).
    pub url: String,
    /// `v5` (default) or `v3.1.1`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Client id; default `ha-ingestor-<hash of host, data_dir and name>`, stable across restarts so the session survives.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, if the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (prefer `password_file`).
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// File holding the password (trailing whitespace is trimmed).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive: a ping at least this often; a silent broker is declared dead after 1.5×.
    #[serde(default = "default_mqtt_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Time allowed for TCP, TLS and CONNACK.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First reconnect delay (doubles per failure, with jitter).
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Largest MQTT packet accepted (HA attributes can be large); bigger ones end the connection at the broker's side.
    #[serde(default = "default_mqtt_max_packet_size")]
    pub max_packet_size: usize,
    /// Start a new session on every connect; `false` (default) keeps unacknowledged QoS 1/2 messages across restarts.
    #[serde(default)]
    pub clean_session: bool,
    /// MQTT 5: how long the broker keeps the session (and queues messages) while disconnected.
    #[serde(default = "default_mqtt_session_expiry", with = "humantime_serde")]
    pub session_expiry: Duration,
    /// MQTT 5: most QoS 1/2 messages the broker may send before our acknowledgements (acks wait for the buffer's fsync).
    #[serde(default = "default_mqtt_receive_maximum")]
    pub receive_maximum: u16,
    /// TLS for `mqtts://`.
    #[serde(default)]
    pub tls: MqttTlsConfig,
    /// Let credentials go in clear text (no TLS) to a host that is not loopback; refused otherwise (see docs/security.md).
    #[serde(default)]
    pub allow_insecure_transport: bool,
    /// What to subscribe to and how to decode it (`[[mqtt.subscriptions]]`; documented in docs/mqtt.md, not serialised).
    #[serde(default, skip_serializing)]
    pub subscriptions: Vec<SubscriptionConfig>,
}

fn default_mqtt_name() -> String {
    "mqtt".to_string()
}
fn default_mqtt_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_mqtt_max_packet_size() -> usize {
    1 << 20
}
fn default_mqtt_session_expiry() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_mqtt_receive_maximum() -> u16 {
    u16::MAX
}

impl MqttConfig {
    /// A config for broker `url` with every other key at its default and no subscriptions.
    pub fn new(url: impl Into<String>) -> Self {
        MqttConfig {
            name: default_mqtt_name(),
            url: url.into(),
            protocol: MqttProtocol::default(),
            client_id: None,
            username: None,
            password: None,
            password_file: None,
            keep_alive: default_mqtt_keep_alive(),
            connect_timeout: default_connect_timeout(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            max_packet_size: default_mqtt_max_packet_size(),
            clean_session: false,
            session_expiry: default_mqtt_session_expiry(),
            receive_maximum: default_mqtt_receive_maximum(),
            tls: MqttTlsConfig::default(),
            allow_insecure_transport: false,
            subscriptions: Vec::new(),
        }
    }

    /// Host, port and whether TLS is on, from `url` (`mqtt://` 1883, `mqtts://` 8883 by default).
    pub fn endpoint(&self) -> Result<(String, u16, bool), String> {
        let parsed =
            url::Url::parse(&self.url).map_err(|e| format!("{:?} is not a URL: {e}", self.url))?;
        let tls = match parsed.scheme() {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" => true,
            other => return Err(format!("scheme must be mqtt or mqtts, not {other}")),
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{:?} names no host", self.url))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
        Ok((host, port, tls))
    }
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("protocol", &self.protocol)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .field("password_file", &self.password_file)
            .field("keep_alive", &self.keep_alive)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("max_packet_size", &self.max_packet_size)
            .field("clean_session", &self.clean_session)
            .field("session_expiry", &self.session_expiry)
            .field("receive_maximum", &self.receive_maximum)
            .field("tls", &self.tls)
            .field("allow_insecure_transport", &self.allow_insecure_transport)
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

// `[[mqtt.subscriptions]]`.

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
