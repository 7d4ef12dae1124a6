//! One typed tree that mirrors the config file, its loading and its validation.
//!
//! Loading order: the TOML file (errors carry file, line and key), then
//! `HA_INGESTOR_<SECTION>__<KEY>` environment overrides (errors name the
//! variable), then `*_file` secrets, then [`Config::validate`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod alerts;
mod mqtt;

pub use mqtt::{
    BoolMode, DecoderKind, JsonSplit, RetainedPolicy, SubscriptionConfig, TimestampFormat,
};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "HA_INGESTOR_";

/// Why a configuration could not be used; every message names where to look.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key or wrong type in the file.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// An environment override is malformed or names an unknown key.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A `*_file` secret could not be read.
    #[error("{key}: cannot read secret file {path}: {source}")]
    Secret {
        /// The config key that named the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The values parse but do not make sense together.
    #[error("invalid configuration: {key}: {message}")]
    Invalid {
        /// The dotted key at fault.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the buffer, cursors, dead letters and the file sink (`./data`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The Home Assistant WebSocket sources: `[homeassistant]` for one, `[[homeassistant]]` for several; empty means no HA connection.
    #[serde(default, deserialize_with = "one_or_many")]
    pub homeassistant: Vec<HomeAssistantConfig>,
    /// Which events are kept.
    #[serde(default)]
    pub filter: FilterConfig,
    /// How events become points.
    #[serde(default)]
    pub schema: SchemaConfig,
    /// The InfluxDB sink; absent means points go to the file sink. `[[influxdb]]` tables: the first, with the others in its `more`.
    #[serde(default, deserialize_with = "influx_one_or_many")]
    pub influxdb: Option<InfluxConfig>,
    /// The embedded file sink used when no InfluxDB is configured.
    #[serde(default)]
    pub file_sink: FileSinkConfig,
    /// The durable disk buffer between the encoder and the sink.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// The monitor HTTP listener (`/health`, `/ready`, `/metrics`).
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Retention and downsampling, applied by `ha-ingestor retention apply`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Alert rules and notifiers.
    #[serde(default)]
    pub alerts: alerts::AlertsConfig,
    /// MQTT brokers (`[[mqtt]]`), each with its subscriptions; empty means no MQTT source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mqtt: Vec<MqttConfig>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

/// TLS settings shared by the WebSocket and HTTP clients.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Extra CA certificate (PEM) to trust, e.g. for a self-signed HA or InfluxDB.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification entirely; only for testing, logged as a warning.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Connection to Home Assistant's WebSocket API (`Debug` hides the token).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Names the instance: source id, cursor file, metrics label and (with several) the instance tag; `homeassistant` by default.
    #[serde(default = "default_ha_name")]
    pub name: String,
    /// `ws://host:8123/api/websocket` or `wss://…`; `http(s)://host:8123` is accepted and completed.
    pub url: String,
    /// Long-lived access token (prefer `token_file` or `HA_INGESTOR_HOMEASSISTANT__TOKEN`).
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    /// File holding the token (trailing whitespace is trimmed).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Event types to subscribe to; empty subscribes to all events.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// What to subscribe to: `events` (every bus event, or `event_types`) or `entities` (HA's compressed state stream: state changes only, less bandwidth).
    #[serde(default)]
    pub subscription: HaSubscription,
    /// With `subscription = "entities"`: only these entities (HA filters them); empty means all.
    #[serde(default)]
    pub entity_ids: Vec<String>,
    /// First reconnect delay.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay (also used after a refused token).
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Time allowed for connect, upgrade and authentication.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Largest WebSocket message accepted (`get_states` on big installs is tens of MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How often an application-level `ping` is sent to detect a dead connection.
    #[serde(default = "default_ping_interval", with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A `ping` unanswered this long declares the connection dead; it is re-established.
    #[serde(default = "default_pong_timeout", with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// On the first connection of the process, write every entity's current state (`get_states`) as a point.
    #[serde(default = "default_true")]
    pub initial_snapshot: bool,
    /// After a reconnect or restart, fill the gap since the last event from HA's history.
    #[serde(default = "default_true")]
    pub backfill: bool,
    /// Entities per `history/history_during_period` request, so no single reply is huge.
    #[serde(default = "default_backfill_chunk")]
    pub backfill_chunk: usize,
    /// Longest time span per history request: a long gap is asked for window by window, so no single reply is huge.
    #[serde(default = "default_backfill_window", with = "humantime_serde")]
    pub backfill_window: Duration,
    /// TLS for `wss://`.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// Which Home Assistant subscription a source uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaSubscription {
    /// `subscribe_events`: every bus event (or the configured `event_types`), full states.
    #[default]
    Events,
    /// `subscribe_entities`: compressed states and diffs, turned back into state changes by a client-side cache; no other events.
    Entities,
}

fn default_backfill_chunk() -> usize {
    50
}
fn default_backfill_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_ha_name() -> String {
    "homeassistant".to_string()
}

/// A table or an array of tables: `[homeassistant]` and `[[homeassistant]]` both work.
fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    // Decoded as a value first, then as `T`, so an unknown or bad key is still named.
    match toml::Value::deserialize(deserializer)? {
        toml::Value::Array(items) => items
            .into_iter()
            .map(|v| T::deserialize(v).map_err(serde::de::Error::custom))
            .collect(),
        other => T::deserialize(other)
            .map(|one| vec![one])
            .map_err(serde::de::Error::custom),
    }
}

fn default_ping_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_pong_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_message_bytes() -> usize {
    64 << 20
}

impl HomeAssistantConfig {
    /// A config for `url` with every other key at its default.
    pub fn new(url: impl Into<String>, token: impl Into<String>) -> Self {
        HomeAssistantConfig {
            name: default_ha_name(),
            url: url.into(),
            token: Some(token.into()),
            token_file: None,
            event_types: Vec::new(),
            subscription: HaSubscription::Events,
            entity_ids: Vec::new(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            connect_timeout: default_connect_timeout(),
            max_message_bytes: default_max_message_bytes(),
            ping_interval: default_ping_interval(),
            pong_timeout: default_pong_timeout(),
            initial_snapshot: true,
            backfill: true,
            backfill_chunk: default_backfill_chunk(),
            backfill_window: default_backfill_window(),
            tls: TlsConfig::default(),
        }
    }

    /// The WebSocket URL, completed from `http(s)://host:port` forms.
    pub fn websocket_url(&self) -> String {
        let url = self.url.trim_end_matches('/');
        let url = if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = url.strip_prefix("https://") {
            format!("wss://{rest}")
        } else {
            url.to_string()
        };
        if url.ends_with("/api/websocket") {
            url
        } else {
            format!("{url}/api/websocket")
        }
    }
}

/// One side (include or exclude) of HA's entity filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityFilterConfig {
    /// Domains (`sensor`, `light`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Exact entity ids.
    #[serde(default)]
    pub entities: Vec<String>,
    /// `fnmatch`-style globs over the entity id (`sensor.*_power`).
    #[serde(default)]
    pub entity_globs: Vec<String>,
    /// Event types (exact) for events other than `state_changed`.
    #[serde(default)]
    pub event_types: Vec<String>,
}

/// Which events are kept: HA's include/exclude lists as a gate, then an ordered rule chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// What to keep (HA semantics; evaluated before the rules).
    #[serde(default)]
    pub include: EntityFilterConfig,
    /// What to drop (HA semantics; evaluated before the rules).
    #[serde(default)]
    pub exclude: EntityFilterConfig,
    /// The decision when no rule matches.
    #[serde(default)]
    pub default: FilterAction,
    /// Ordered rules; the first whose match holds decides.
    #[serde(default)]
    pub rules: Vec<FilterRuleConfig>,
    /// IANA zone of `time` matches (`Europe/Berlin`); unset: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// What a rule (or the default) does with an event.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Keep the event.
    #[default]
    Include,
    /// Drop the event.
    Exclude,
    /// Apply the rule's `transform` steps, then go on down the chain (rules only, not the default).
    Transform,
}

/// What a rule does when its expression fails at run time for one event.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The rule does not match; the event goes on down the chain (kept unless something later drops it).
    #[default]
    Skip,
    /// Keep the event now.
    Keep,
    /// Drop the event now.
    Drop,
}

/// One named rule of the chain: `{ name, action, match, on_error }`.
///
/// Deserialised through a table so that an unknown or mistyped key is
/// reported with the rule's name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "toml::Table")]
pub struct FilterRuleConfig {
    /// Unique name: used in messages and as the `rule` metric label.
    pub name: String,
    /// `include` or `exclude`.
    pub action: FilterAction,
    /// Conditions, all of which must hold (an empty match holds for every event).
    #[serde(rename = "match", default)]
    pub matches: RuleMatchConfig,
    /// What a failing expression does.
    #[serde(default)]
    pub on_error: OnError,
    /// Steps applied in order when the rule matches (`action` `transform`, or `include`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<TransformStepConfig>,
    /// Per-entity rate shaping of the events this rule keeps or transforms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateConfig>,
}

/// Per-entity rate shaping: dedup, deadband, throttle and heartbeat; each optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Drop an event whose state and attributes equal the entity's last written ones within this window.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedup: Option<Duration>,
    /// Drop a numeric state closer than this to the last written one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// Drop a numeric state within this percentage of the last written one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband_percent: Option<f64>,
    /// At most one point per entity per interval.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub throttle: Option<Duration>,
    /// What a throttled interval writes: its last event, or the min, max or mean of its states.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Re-write the last value after this long without a new point, tagged `heartbeat=true`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat: Option<Duration>,
}

/// What one throttled interval writes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The last event of the interval.
    #[default]
    Last,
    /// The smallest numeric state (on the last event).
    Min,
    /// The largest numeric state (on the last event).
    Max,
    /// The mean of the numeric states (on the last event).
    Mean,
}

impl FilterRuleConfig {
    /// Whether the rule's events may be written (`include` or `transform`), so shaping them means something.
    pub fn keep_or_transform(&self) -> bool {
        self.action != FilterAction::Exclude
    }
}

/// The typed fields of a rule, read after its name is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    name: String,
    action: FilterAction,
    #[serde(rename = "match", default)]
    matches: RuleMatchConfig,
    #[serde(default)]
    on_error: OnError,
    #[serde(default)]
    transform: Vec<TransformStepConfig>,
    #[serde(default)]
    rate: Option<RateConfig>,
}

/// One transform step: exactly one operation key (`rename`, `drop_attributes`, `keep_attributes`,
/// `measurement`, `tags`, `computed_tags`, `convert`, `compute`, `map`) and its options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransformStepConfig {
    /// Renames attributes: `{ old = "new" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<BTreeMap<String, String>>,
    /// Removes the attributes matching these globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_attributes: Option<Vec<String>>,
    /// Keeps only the attributes matching these globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_attributes: Option<Vec<String>>,
    /// Sets the point's measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    /// Adds static tags (they win over every other tag of the same key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Adds tags computed by Jinja expressions: `{ room = "attributes.area | default('none')" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_tags: Option<BTreeMap<String, String>>,
    /// Converts a value's type: the target, `state` or `attributes.<name>`; with `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convert: Option<String>,
    /// The type `convert` converts to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ConvertTo>,
    /// Sets a value from a Jinja expression: the target, `state` or `attributes.<name>`; with `expression`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    /// The expression `compute` evaluates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Maps values one to one: the target, `state` or `attributes.<name>`; with `values`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// The table `map` looks the current value (as text) up in; values not listed stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeMap<String, serde_json::Value>>,
    /// When `convert`, `compute` or `computed_tags` fails for an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<StepOnError>,
    /// Renames members of an event's `data` (events other than `state_changed`): `{ old = "new" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_data: Option<BTreeMap<String, String>>,
    /// Removes the members of an event's `data` matching these globs (events other than `state_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_data: Option<Vec<String>>,
    /// Keeps only the members of an event's `data` matching these globs (events other than `state_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_data: Option<Vec<String>>,
}

/// The types `convert` knows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConvertTo {
    /// A float (`"21.5"` → 21.5).
    Float,
    /// A whole number (`"12"` → 12; `"12.5"` fails).
    Int,
    /// `true`/`false` (`on`, `yes`, `1`, `open`, `home` …; state: `1`/`0`).
    Bool,
    /// Seconds, from `HH:MM:SS[.f]`, `"5m 30s"` or a number of seconds.
    Duration,
    /// Seconds since the epoch, from RFC 3339 text or a number.
    Timestamp,
    /// Text (numbers and booleans as their JSON text).
    String,
}

/// What a failing `convert`, `compute` or `computed_tags` step does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepOnError {
    /// Leave the value (or tag) as it was; the event goes on.
    #[default]
    Keep,
    /// Remove the attribute (or leave the tag out); not for the state.
    Remove,
    /// Drop the event.
    Drop,
}

impl TryFrom<toml::Table> for FilterRuleConfig {
    type Error = String;

    fn try_from(table: toml::Table) -> Result<Self, String> {
        let name = match table.get("name") {
            Some(toml::Value::String(name)) => name.clone(),
            _ => return Err("filter.rules: every rule needs a name (a string)".to_string()),
        };
        let fields = RuleFields::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("filter rule {name:?}: {}", e.to_string().trim()))?;
        Ok(FilterRuleConfig {
            name: fields.name,
            action: fields.action,
            matches: fields.matches,
            on_error: fields.on_error,
            transform: fields.transform,
            rate: fields.rate,
        })
    }
}

/// The conditions of a rule; every one given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleMatchConfig {
    /// Event types, exact or glob (`call_*`); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_type: Vec<String>,
    /// Entity domains; any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain: Vec<String>,
    /// Globs and regexes over the entity id; any may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityMatchConfig>,
    /// Source ids (`homeassistant`, `simulator`, `mqtt:<name>`); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<String>,
    /// Attribute tests; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attribute: Vec<AttributeMatchConfig>,
    /// A test of the state value and of how it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateMatchConfig>,
    /// A Jinja expression (minijinja) that must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// A time-of-day window and weekdays on the wall clock of a time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeMatchConfig>,
}

/// A time-of-day window and/or weekdays, tested on the event's `time_fired` in a zone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeMatchConfig {
    /// From this local time on (`HH:MM[:SS]`, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Until this local time (exclusive); earlier than `after`: the window crosses midnight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Local weekdays (`mon` … `sun`); empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<String>,
    /// IANA zone for this rule; unset: `filter.time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// Entity ids by glob or regex: one compiled set each.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityMatchConfig {
    /// Globs over the entity id (`sensor.*_linkquality`); an id without wildcards matches exactly.
    #[serde(default)]
    pub glob: Vec<String>,
    /// Regexes searched in the entity id (anchor with `^…$` for a whole match).
    #[serde(default)]
    pub regex: Vec<String>,
}

/// Which state of a change an attribute test reads.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StateSide {
    /// The new state.
    #[default]
    New,
    /// The state before the change.
    Old,
}

/// Tests on one attribute; all given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatchConfig {
    /// The attribute's key.
    pub name: String,
    /// Present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// Equal to this value (numbers compare numerically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// Equal to one of these values.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Numeric value above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Numeric value at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// Numeric value below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Numeric value at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// A regex searched in the value (strings, or the JSON text of numbers and booleans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Read the new state (default) or the old one.
    #[serde(default)]
    pub on: StateSide,
}

/// Tests on the state value; all given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateMatchConfig {
    /// The state string equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The state string is one of these.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    /// The state as a number is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// The state as a number is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// The state as a number is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// The state as a number is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// `true`: the state string differs from the old state's (or there is no old state); `false`: it is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// `true`: same state string as before, different attributes; `false`: anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes_only_changed: Option<bool>,
}

/// The schema modes (`docs/schema.md`): HA-compatible or optimized for queries and cardinality.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// Byte-for-byte what HA's `influxdb` integration writes.
    #[default]
    Homeassistant,
    /// A schema built for query speed and bounded cardinality (see `docs/schema.md`).
    Optimized,
}

/// The type an allow-listed attribute is always written with in the `optimized` schema.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    /// A float field; numbers, booleans (1/0) and numeric text such as `-5.5 °C`.
    Float,
    /// A string field; other scalars as their JSON text, lists and objects as compact JSON.
    String,
    /// A boolean field; `true`/`false`, 1/0 and the texts `on`/`off`/`true`/`false`.
    Boolean,
}

/// `[schema.optimized]`: the keys only the `optimized` mode reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizedSchemaConfig {
    /// Domains whose measurement is `<domain>__<device_class>` when the entity has a device class.
    #[serde(default = "default_split_by_device_class")]
    pub split_by_device_class: Vec<String>,
    /// Attributes written as fields, each always with this type; every other attribute is left out.
    #[serde(default = "default_optimized_attributes")]
    pub attributes: BTreeMap<String, AttributeType>,
}

fn default_split_by_device_class() -> Vec<String> {
    vec!["sensor".to_string()]
}

fn default_optimized_attributes() -> BTreeMap<String, AttributeType> {
    [
        ("brightness", AttributeType::Float),
        ("color_temp_kelvin", AttributeType::Float),
        ("current_humidity", AttributeType::Float),
        ("current_position", AttributeType::Float),
        ("current_temperature", AttributeType::Float),
        ("humidity", AttributeType::Float),
        ("hvac_action", AttributeType::String),
        ("preset_mode", AttributeType::String),
        ("target_temp_high", AttributeType::Float),
        ("target_temp_low", AttributeType::Float),
        ("temperature", AttributeType::Float),
    ]
    .into_iter()
    .map(|(k, t)| (k.to_string(), t))
    .collect()
}

impl Default for OptimizedSchemaConfig {
    fn default() -> Self {
        OptimizedSchemaConfig {
            split_by_device_class: default_split_by_device_class(),
            attributes: default_optimized_attributes(),
        }
    }
}

/// HA's `measurement_attr` choices.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementAttr {
    /// Measurement named by the unit (`°C`), HA's default.
    #[default]
    UnitOfMeasurement,
    /// `<domain>__<device_class>`, or the domain without a device class.
    DomainDeviceClass,
    /// The full entity id.
    EntityId,
}

/// Per-entity, per-domain or per-glob overrides, as HA's `component_config*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComponentOverride {
    /// Measurement for the matching entities.
    #[serde(default)]
    pub override_measurement: Option<String>,
    /// Attributes not written for the matching entities (merged with the global list).
    #[serde(default)]
    pub ignore_attributes: Vec<String>,
}

/// How events become points: HA's `influxdb` options under the same names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// `homeassistant` (drop-in compatible).
    #[serde(default)]
    pub mode: SchemaMode,
    /// Attribute that names the measurement.
    #[serde(default)]
    pub measurement_attr: MeasurementAttr,
    /// Measurement when `measurement_attr` gives none (HA: the entity id).
    #[serde(default)]
    pub default_measurement: Option<String>,
    /// One measurement for every state point.
    #[serde(default)]
    pub override_measurement: Option<String>,
    /// Static tags on every point; applied last, as in HA.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Attributes written as tags instead of fields.
    #[serde(default)]
    pub tags_attributes: Vec<String>,
    /// Attributes never written (raw key, `icon` not `icon_str`).
    #[serde(default)]
    pub ignore_attributes: Vec<String>,
    /// Overrides by exact entity id.
    #[serde(default)]
    pub component_config: BTreeMap<String, ComponentOverride>,
    /// Overrides by domain.
    #[serde(default)]
    pub component_config_domain: BTreeMap<String, ComponentOverride>,
    /// Overrides by entity-id glob, applied in key order.
    #[serde(default)]
    pub component_config_glob: BTreeMap<String, ComponentOverride>,
    /// Measurement for events other than `state_changed`.
    #[serde(default = "default_events_measurement")]
    pub events_measurement: String,
    /// Write events other than `state_changed` at all.
    #[serde(default = "default_true")]
    pub write_other_events: bool,
    /// Tag every point with the name of the source instance under this key (`instance` when several `[[homeassistant]]` are configured and this is unset).
    #[serde(default)]
    pub instance_tag: Option<String>,
    /// Keys of the `optimized` mode.
    #[serde(default)]
    pub optimized: OptimizedSchemaConfig,
}

fn default_events_measurement() -> String {
    "ha_events".to_string()
}
fn default_true() -> bool {
    true
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            mode: SchemaMode::default(),
            measurement_attr: MeasurementAttr::default(),
            default_measurement: None,
            override_measurement: None,
            tags: BTreeMap::new(),
            tags_attributes: Vec::new(),
            ignore_attributes: Vec::new(),
            component_config: BTreeMap::new(),
            component_config_domain: BTreeMap::new(),
            component_config_glob: BTreeMap::new(),
            events_measurement: default_events_measurement(),
            write_other_events: true,
            instance_tag: None,
            optimized: OptimizedSchemaConfig::default(),
        }
    }
}

/// InfluxDB write API generation.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    /// `/write?db=&rp=` with user/password (InfluxDB 1.x, and 3.x compat).
    #[default]
    V1,
    /// `/api/v2/write?org=&bucket=` with a token (InfluxDB 2.x, and 3.x compat).
    V2,
}

/// Whether write bodies are gzipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gzip {
    /// Always (`true`).
    On,
    /// Never (`false`).
    Off,
    /// Except to a loopback address, where compressing costs both processes CPU and saves
    /// no network (`"auto"`, the default).
    #[default]
    Auto,
}

impl Gzip {
    /// Whether to gzip the bodies sent to `url`.
    pub fn for_url(self, url: &str) -> bool {
        match self {
            Gzip::On => true,
            Gzip::Off => false,
            Gzip::Auto => !is_loopback_url(url),
        }
    }
}

/// Whether `url` names this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Serialize for Gzip {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Gzip::On => s.serialize_bool(true),
            Gzip::Off => s.serialize_bool(false),
            Gzip::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for Gzip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Gzip;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Gzip, E> {
                Ok(if v { Gzip::On } else { Gzip::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Gzip, E> {
                match v {
                    "auto" => Ok(Gzip::Auto),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The InfluxDB sink (`Debug` hides the password and token).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, `http://localhost:8086`.
    pub url: String,
    /// `v1` or `v2`.
    #[serde(default)]
    pub api: InfluxApi,
    /// v1 database (`home_assistant`, as HA's default).
    #[serde(default)]
    pub database: Option<String>,
    /// v1 retention policy; empty uses the database default.
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// v1 user.
    #[serde(default)]
    pub username: Option<String>,
    /// v1 password (prefer `password_file` or the env override).
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    /// File holding the v1 password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// v2 organisation.
    #[serde(default)]
    pub org: Option<String>,
    /// v2 bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// v2 token (prefer `token_file` or the env override).
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    /// File holding the v2 token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Lines per write request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a point waits for its batch to fill.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Gzip request bodies: `true`, `false`, or `"auto"` (default: all but a loopback InfluxDB).
    #[serde(default)]
    pub gzip: Gzip,
    /// Timeout of one write request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First retry delay after a transient failure.
    #[serde(default = "default_retry_min", with = "humantime_serde")]
    pub retry_min: Duration,
    /// Longest retry delay.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max: Duration,
    /// TLS for `https://`.
    #[serde(default)]
    pub tls: TlsConfig,
    /// What to do with a field value whose type differs from the field's type in InfluxDB.
    #[serde(default)]
    pub type_conflict: TypeConflict,
    /// This target's name in metrics, logs and dead letters (`influxdb`); distinct names are required with several targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Measurement globs this target receives; empty: every point (a mirror).
    #[serde(default)]
    pub measurements: Vec<String>,
    /// Write requests in flight at once; points are split by series so each series stays in order.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Which failures of this target make `/ready` answer 503 (a mirror far away may be allowed to be down).
    #[serde(default)]
    pub readiness: TargetReadiness,
    /// The further `[[influxdb]]` targets after this first one (filled by the config reader only).
    #[serde(skip)]
    pub more: Vec<InfluxConfig>,
}

/// Reads `[influxdb]` (one target) or `[[influxdb]]` (several: the first carries the others in `more`).
fn influx_one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<InfluxConfig>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Option<InfluxConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an [influxdb] table or [[influxdb]] tables")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            InfluxConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            let mut all = Vec::<InfluxConfig>::deserialize(
                serde::de::value::SeqAccessDeserializer::new(seq),
            )?;
            if all.is_empty() {
                return Ok(None);
            }
            let mut first = all.remove(0);
            first.more = all;
            Ok(Some(first))
        }
    }
    d.deserialize_any(OneOrMany)
}

/// When a failing InfluxDB target makes the process not ready (`/ready` answers 503).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TargetReadiness {
    /// Any failed last write: an outage, a server error, refused credentials.
    #[default]
    AnyFailure,
    /// Only a refusal that does not heal by itself (401, 403, 404, other 4xx: credentials,
    /// a missing database); outages and server errors are absorbed by the durable buffer.
    Refused,
    /// Never; the target is still listed in `/ready`.
    Ignore,
}

/// How the writer resolves a field value whose type differs from what InfluxDB already stores for that field.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TypeConflict {
    /// Convert the value when no information is lost (3i → 3.0, 20.0 → 20i, 21.5 → "21.5"), else write it to `<field>_str` as a string.
    #[default]
    Convert,
    /// Always write the value to `<field>_str` as a string.
    StrField,
    /// Set the whole point aside as a dead letter (`type_conflict`).
    DeadLetter,
}

fn default_batch_size() -> usize {
    5000
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_min() -> Duration {
    Duration::from_millis(500)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_max_concurrent_requests() -> usize {
    2
}

impl InfluxConfig {
    /// This target's name: `name`, else `influxdb`.
    pub fn target_name(&self) -> &str {
        self.name.as_deref().unwrap_or("influxdb")
    }

    /// Every target: this one, then the further `[[influxdb]]` tables.
    pub fn targets(&self) -> impl Iterator<Item = &InfluxConfig> {
        std::iter::once(self).chain(self.more.iter())
    }

    /// A v1 config for `url`/`database` with every other key at its default.
    pub fn v1(url: impl Into<String>, database: impl Into<String>) -> Self {
        InfluxConfig {
            url: url.into(),
            api: InfluxApi::V1,
            database: Some(database.into()),
            retention_policy: None,
            username: None,
            password: None,
            password_file: None,
            org: None,
            bucket: None,
            token: None,
            token_file: None,
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            gzip: Gzip::Auto,
            timeout: default_request_timeout(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            tls: TlsConfig::default(),
            type_conflict: TypeConflict::default(),
            name: None,
            measurements: Vec::new(),
            max_concurrent_requests: default_max_concurrent_requests(),
            readiness: TargetReadiness::default(),
            more: Vec::new(),
        }
    }
}

/// The embedded line-protocol file sink.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Directory of the hourly files; default `<data_dir>/points`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// What an append does when the disk buffer holds `max_bytes`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait until the sink's acknowledgements free space (the pipeline slows down).
    #[default]
    Block,
    /// Remove the oldest undelivered records to make room (their points are counted as dropped).
    DropOldest,
}

/// The durable disk buffer: chunks wait here, on disk, until the sink delivered them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Keep points on disk until delivered; off means points in memory are lost on a crash.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Largest total size of the buffered records (encoded line protocol plus a 20-byte header each).
    #[serde(default = "default_buffer_max_bytes")]
    pub max_bytes: u64,
    /// `block` or `drop_oldest`, when `max_bytes` is reached.
    #[serde(default)]
    pub when_full: WhenFull,
    /// How often appended records are made durable (fsync); `0s` makes every append durable.
    #[serde(default = "default_buffer_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
}

fn default_buffer_max_bytes() -> u64 {
    1 << 30
}
fn default_buffer_fsync_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            enabled: true,
            max_bytes: default_buffer_max_bytes(),
            when_full: WhenFull::Block,
            fsync_interval: default_buffer_fsync_interval(),
        }
    }
}

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

/// TLS for one MQTT broker: the shared settings plus a client certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// Extra CA certificate (PEM) to trust, e.g. a private broker CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one; goes with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Skip certificate verification entirely; only for testing, logged as a warning.
    #[serde(default)]
    pub insecure_skip_verify: bool,
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
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

/// Checks the `[[mqtt]]` brokers: unique names, usable URLs, complete credentials, sane limits.
fn validate_mqtt(brokers: &[MqttConfig]) -> Result<(), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        key: key.to_string(),
        message,
    };
    let mut names = std::collections::HashSet::new();
    for m in brokers {
        if m.name.trim().is_empty() || m.name.contains(char::is_whitespace) {
            return Err(invalid(
                "mqtt.name",
                format!("{:?}: must be a non-empty word", m.name),
            ));
        }
        if !names.insert(m.name.as_str()) {
            return Err(invalid(
                "mqtt.name",
                format!(
                    "two brokers are named {:?}; give each a unique name",
                    m.name
                ),
            ));
        }
        let key = |k: &str| format!("mqtt[{}].{k}", m.name);
        m.endpoint().map_err(|e| invalid(&key("url"), e))?;
        if m.password.is_some() && m.username.is_none() {
            return Err(invalid(
                &key("username"),
                "a password needs a username".into(),
            ));
        }
        if m.tls.cert_file.is_some() != m.tls.key_file.is_some() {
            return Err(invalid(
                &key("tls.cert_file"),
                "cert_file and key_file go together".into(),
            ));
        }
        if m.max_packet_size < 1 << 16 || m.max_packet_size > 256 << 20 {
            return Err(invalid(
                &key("max_packet_size"),
                "must be 65536 to 268435456 (MQTT's limit)".into(),
            ));
        }
        if m.keep_alive < Duration::from_secs(5) || m.keep_alive > Duration::from_secs(65535) {
            return Err(invalid(&key("keep_alive"), "must be 5s to 65535s".into()));
        }
        if m.reconnect_min.is_zero() || m.reconnect_min > m.reconnect_max {
            return Err(invalid(
                &key("reconnect_min"),
                "must be above zero and at most reconnect_max".into(),
            ));
        }
        if m.connect_timeout < Duration::from_secs(1) {
            return Err(invalid(
                &key("connect_timeout"),
                "must be at least 1s".into(),
            ));
        }
        if m.receive_maximum == 0 {
            return Err(invalid(
                &key("receive_maximum"),
                "must be 1 to 65535".into(),
            ));
        }
        if m.subscriptions.is_empty() {
            return Err(invalid(
                &key("subscriptions"),
                "a broker needs at least one [[mqtt.subscriptions]]".into(),
            ));
        }
        crate::source::mqtt::decode::Decoders::new(&m.subscriptions)
            .map_err(|e| invalid(&key("subscriptions"), e.to_string()))?;
    }
    Ok(())
}

/// The monitor HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Serve `/health`, `/ready` and `/metrics`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Listen address; keep it on loopback unless a scraper needs it.
    #[serde(default = "default_monitor_listen")]
    pub listen: SocketAddr,
}

fn default_monitor_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            listen: default_monitor_listen(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json` (the `--log-format` flag wins).
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `ha_ingestor=debug` (`RUST_LOG` wins).
    #[serde(default = "default_log_level")]
    pub level: String,
}

fn default_log_level() -> String {
    "info".to_string()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: default_log_level(),
        }
    }
}

impl Config {
    /// Loads a file, applies the process environment and secrets, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::from_toml_with_env(&text, path, &env)
    }

    /// Parses `text`, applies the given `HA_INGESTOR_…` variables, reads secrets and validates.
    pub fn from_toml_with_env(
        text: &str,
        path: &Path,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        // First pass on the text itself: its errors carry line, column and key.
        let parsed: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let overrides: Vec<&(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        let mut config = if overrides.is_empty() {
            parsed
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            for (var, value) in &overrides {
                apply_env_override(&mut table, var, value)?;
                // Re-check after each variable so an error names the one at fault.
                Config::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
                    ConfigError::Env {
                        var: var.clone(),
                        message: e.to_string().trim().to_string(),
                    }
                })?;
            }
            Config::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Env {
                var: "HA_INGESTOR_*".to_string(),
                message: e.to_string(),
            })?
        };
        config.read_secrets(path.parent().unwrap_or(Path::new(".")))?;
        config.validate()?;
        Ok(config)
    }

    /// The schema as the encoder uses it: with several Home Assistant instances the instance tag is on by default.
    pub fn effective_schema(&self) -> SchemaConfig {
        let mut schema = self.schema.clone();
        if self.homeassistant.len() > 1 && schema.instance_tag.is_none() {
            schema.instance_tag = Some("instance".to_string());
        }
        schema.instance_tag = schema.instance_tag.filter(|k| !k.is_empty());
        schema
    }

    /// Replaces `*_file` secrets by their contents (relative paths are taken from the config's folder).
    fn read_secrets(&mut self, base: &Path) -> Result<(), ConfigError> {
        for ha in &mut self.homeassistant {
            if let Some(file) = &ha.token_file {
                ha.token = Some(read_secret("homeassistant.token_file", base, file)?);
            }
        }
        for mqtt in &mut self.mqtt {
            if let Some(file) = &mqtt.password_file {
                mqtt.password = Some(read_secret("mqtt.password_file", base, file)?);
            }
        }
        if let Some(influx) = &mut self.influxdb {
            if let Some(file) = &influx.password_file {
                influx.password = Some(read_secret("influxdb.password_file", base, file)?);
            }
            if let Some(file) = &influx.token_file {
                influx.token = Some(read_secret("influxdb.token_file", base, file)?);
            }
            // The further [[influxdb]] targets read their own files.
            for more in &mut influx.more {
                if let Some(file) = &more.password_file {
                    more.password = Some(read_secret("influxdb.password_file", base, file)?);
                }
                if let Some(file) = &more.token_file {
                    more.token = Some(read_secret("influxdb.token_file", base, file)?);
                }
            }
        }
        Ok(())
    }

    /// Several `[[influxdb]]` targets: distinct names, valid measurement globs, and each one valid on its own.
    fn validate_influx_targets(&self, influx: &InfluxConfig) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for target in influx.targets() {
            let name = target.target_name();
            if !names.insert(name) {
                return Err(ConfigError::Invalid {
                    key: "influxdb.name".into(),
                    message: format!(
                        "{name:?} is used by two targets; give each [[influxdb]] a distinct name"
                    ),
                });
            }
            for glob in &target.measurements {
                globset::Glob::new(glob).map_err(|e| ConfigError::Invalid {
                    key: "influxdb.measurements".into(),
                    message: format!("target {name:?}: {glob:?}: {e}"),
                })?;
            }
        }
        for more in &influx.more {
            let alone = Config {
                influxdb: Some(more.clone()),
                ..self.clone()
            };
            alone.validate().map_err(|e| match e {
                ConfigError::Invalid { key, message } => ConfigError::Invalid {
                    key,
                    message: format!("target {:?}: {message}", more.target_name()),
                },
                other => other,
            })?;
        }
        Ok(())
    }

    /// Checks what types alone cannot: complete credentials, sane sizes, valid URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        self.alerts
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        let mut names = std::collections::BTreeSet::new();
        for ha in &self.homeassistant {
            if ha.name.is_empty()
                || !ha
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    "homeassistant.name",
                    format!("{:?}: use letters, digits, '_' and '-' only", ha.name),
                ));
            }
            if !names.insert(ha.name.as_str()) {
                return Err(invalid(
                    "homeassistant.name",
                    format!(
                        "{:?} is used twice: give each [[homeassistant]] its own name (it names the cursor file and the instance tag)",
                        ha.name
                    ),
                ));
            }
            let ws = ha.websocket_url();
            let parsed = url::Url::parse(&ws)
                .map_err(|e| invalid("homeassistant.url", format!("{ws:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "ws" | "wss") {
                return Err(invalid(
                    "homeassistant.url",
                    format!(
                        "scheme must be ws, wss, http or https, not {}",
                        parsed.scheme()
                    ),
                ));
            }
            match ha.token.as_deref() {
                None => {
                    return Err(invalid(
                        "homeassistant.token",
                        "a long-lived access token is required (token, token_file or HA_INGESTOR_HOMEASSISTANT__TOKEN)".into(),
                    ));
                }
                Some(t) if t.trim().is_empty() => {
                    return Err(invalid("homeassistant.token", "the token is empty".into()));
                }
                Some(_) => {}
            }
            if ha.reconnect_min.is_zero() || ha.reconnect_min > ha.reconnect_max {
                return Err(invalid(
                    "homeassistant.reconnect_min",
                    "must be above zero and at most reconnect_max".into(),
                ));
            }
            if ha.max_message_bytes < 1 << 16 {
                return Err(invalid(
                    "homeassistant.max_message_bytes",
                    "must be at least 65536".into(),
                ));
            }
            if ha.backfill_chunk == 0 {
                return Err(invalid(
                    "homeassistant.backfill_chunk",
                    "must be at least 1".into(),
                ));
            }
            if ha.backfill_window.is_zero() {
                return Err(invalid(
                    "homeassistant.backfill_window",
                    "must be above zero".into(),
                ));
            }
            if ha.ping_interval.is_zero() {
                return Err(invalid(
                    "homeassistant.ping_interval",
                    "must be above zero".into(),
                ));
            }
            if ha.pong_timeout.is_zero() {
                return Err(invalid(
                    "homeassistant.pong_timeout",
                    "must be above zero".into(),
                ));
            }
            match ha.subscription {
                HaSubscription::Entities if !ha.event_types.is_empty() => {
                    return Err(invalid(
                        "homeassistant.event_types",
                        "subscription = \"entities\" receives state changes only; remove event_types or use subscription = \"events\"".into(),
                    ));
                }
                HaSubscription::Events if !ha.entity_ids.is_empty() => {
                    return Err(invalid(
                        "homeassistant.entity_ids",
                        "only used with subscription = \"entities\" (with events, filter in the pipeline)".into(),
                    ));
                }
                _ => {}
            }
            for id in &ha.entity_ids {
                if crate::event::EntityId::new(id).is_err() {
                    return Err(invalid(
                        "homeassistant.entity_ids",
                        format!("{id:?} is not an entity id (domain.object_id)"),
                    ));
                }
            }
        }
        // A Home Assistant notifier's `instance` must name a configured home.
        for (i, notifier) in self.alerts.notifiers.iter().enumerate() {
            if let alerts::NotifierConfig::Homeassistant {
                instance: Some(home),
                ..
            } = notifier
                && !names.contains(home.as_str())
            {
                return Err(invalid(
                    &format!("alerts.notifiers[{i}].instance"),
                    format!("{home:?} names no [[homeassistant]] (configured: {names:?})"),
                ));
            }
        }
        if let Some(influx) = &self.influxdb {
            self.validate_influx_targets(influx)?;
        }
        if let Some(influx) = &self.influxdb {
            let parsed = url::Url::parse(&influx.url).map_err(|e| {
                invalid(
                    "influxdb.url",
                    format!("{:?} is not a URL: {e}", influx.url),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(
                    "influxdb.url",
                    "scheme must be http or https".into(),
                ));
            }
            match influx.api {
                InfluxApi::V1 => {
                    if influx.database.as_deref().unwrap_or("").is_empty() {
                        return Err(invalid(
                            "influxdb.database",
                            "required with api = \"v1\"".into(),
                        ));
                    }
                    if influx.username.is_some() != influx.password.is_some() {
                        return Err(invalid(
                            "influxdb.username",
                            "username and password go together".into(),
                        ));
                    }
                    if influx.token.is_some() || influx.org.is_some() || influx.bucket.is_some() {
                        return Err(invalid(
                            "influxdb.api",
                            "token, org and bucket are for api = \"v2\"".into(),
                        ));
                    }
                }
                InfluxApi::V2 => {
                    for (key, value) in [
                        ("influxdb.org", &influx.org),
                        ("influxdb.bucket", &influx.bucket),
                        ("influxdb.token", &influx.token),
                    ] {
                        if value.as_deref().unwrap_or("").is_empty() {
                            return Err(invalid(key, "required with api = \"v2\"".into()));
                        }
                    }
                    if influx.database.is_some() || influx.username.is_some() {
                        return Err(invalid(
                            "influxdb.api",
                            "database, username and password are for api = \"v1\"".into(),
                        ));
                    }
                }
            }
            if influx.batch_size == 0 || influx.batch_size > 100_000 {
                return Err(invalid("influxdb.batch_size", "must be 1 to 100000".into()));
            }
            if influx.flush_interval.is_zero() {
                return Err(invalid(
                    "influxdb.flush_interval",
                    "must be above zero".into(),
                ));
            }
            if influx.retry_min.is_zero() || influx.retry_min > influx.retry_max {
                return Err(invalid(
                    "influxdb.retry_min",
                    "must be above zero and at most retry_max".into(),
                ));
            }
        }
        for (name, list) in [
            (
                "filter.include.entity_globs",
                &self.filter.include.entity_globs,
            ),
            (
                "filter.exclude.entity_globs",
                &self.filter.exclude.entity_globs,
            ),
        ] {
            for glob in list {
                globset::Glob::new(glob)
                    .map_err(|e| invalid(name, format!("bad glob {glob:?}: {e}")))?;
            }
        }
        let mut names = std::collections::HashSet::new();
        for rule in &self.filter.rules {
            if rule.name.trim().is_empty() {
                return Err(invalid("filter.rules.name", "must not be empty".into()));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(invalid(
                    "filter.rules.name",
                    format!("two rules are named {:?}", rule.name),
                ));
            }
        }
        for glob in self.schema.component_config_glob.keys() {
            globset::Glob::new(glob).map_err(|e| {
                invalid(
                    "schema.component_config_glob",
                    format!("bad glob {glob:?}: {e}"),
                )
            })?;
        }
        if self.buffer.max_bytes < 1 << 20 {
            return Err(invalid(
                "buffer.max_bytes",
                "must be at least 1048576 (1 MiB)".into(),
            ));
        }
        if self.schema.events_measurement.is_empty() {
            return Err(invalid(
                "schema.events_measurement",
                "must not be empty".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        self.retention.validate()?;
        validate_mqtt(&self.mqtt)?;
        Ok(())
    }

    /// Where the file sink writes: `file_sink.dir` or `<data_dir>/points`.
    pub fn points_dir(&self) -> PathBuf {
        self.file_sink
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("points"))
    }

    /// Where the durable buffer keeps its file: `<data_dir>/buffer`.
    pub fn buffer_dir(&self) -> PathBuf {
        self.data_dir.join("buffer")
    }

    /// Where rejected input is set aside.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.data_dir.join("dead-letter")
    }
}

/// Retention and downsampling for InfluxDB 1.x: how long raw points live, and which
/// measurements are averaged into coarser tiers kept longer (retention policies and
/// continuous queries created by `ha-ingestor retention apply`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Database to manage (default: `influxdb.database`).
    #[serde(default)]
    pub database: Option<String>,
    /// Retention policy the raw points are written to (default: `influxdb.retention_policy`, else `autogen`).
    #[serde(default)]
    pub raw_policy: Option<String>,
    /// How long raw points are kept (`30d`, `inf`); absent leaves the raw policy's duration alone.
    #[serde(default)]
    pub raw_keep: Option<String>,
    /// Downsampling rules, each for a set of measurements or domains.
    #[serde(default)]
    pub downsample: Vec<DownsampleConfig>,
}

/// One downsampling rule: which points, which fields, into which tiers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DownsampleConfig {
    /// Names the rule's continuous queries (`<name>_<every>`); letters, digits and `_`.
    pub name: String,
    /// Measurements to downsample, exact names; empty means all.
    #[serde(default)]
    pub measurements: Vec<String>,
    /// Only points whose `domain` tag is one of these; empty means every domain.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Fields aggregated per bucket (`value`; `state` for counting text states).
    #[serde(default = "default_downsample_fields")]
    pub fields: Vec<String>,
    /// Aggregates kept per field and bucket: `mean` keeps the field's name, every
    /// other one is stored as `<field>_<aggregate>` (`value_count`, `value_max`).
    /// Default `["mean"]`.
    #[serde(default = "default_downsample_aggregates")]
    pub aggregates: Vec<TierAggregate>,
    /// Tiers, finest first: each a bucket width and how long its means are kept.
    pub tiers: Vec<TierConfig>,
}

/// An aggregate a downsampling tier keeps per bucket, chosen so dashboard
/// answers can be computed exactly from the buckets (means of means are exact
/// through `sum`/`count`; daily spread through hourly `min`/`max`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TierAggregate {
    /// Mean of the bucket's values, stored under the field's own name.
    Mean,
    /// Number of points (changes) in the bucket.
    Count,
    /// Sum of the bucket's values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// The bucket's first value.
    First,
    /// The bucket's last value.
    Last,
}

impl TierAggregate {
    /// The InfluxQL function name.
    pub fn as_str(self) -> &'static str {
        match self {
            TierAggregate::Mean => "mean",
            TierAggregate::Count => "count",
            TierAggregate::Sum => "sum",
            TierAggregate::Min => "min",
            TierAggregate::Max => "max",
            TierAggregate::First => "first",
            TierAggregate::Last => "last",
        }
    }

    /// The field a tier stores this aggregate of `field` under.
    pub fn output_field(self, field: &str) -> String {
        match self {
            TierAggregate::Mean => field.to_string(),
            other => format!("{field}_{}", other.as_str()),
        }
    }
}

fn default_downsample_aggregates() -> Vec<TierAggregate> {
    vec![TierAggregate::Mean]
}

/// One downsampling tier: means per `every`, kept for `keep`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Bucket width of the means (`5m`, `1h`).
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// How long the means are kept (`365d`, `inf`).
    pub keep: String,
}

fn default_downsample_fields() -> Vec<String> {
    vec!["value".to_string()]
}

/// Parses a retention duration: `inf` (kept forever, returned as zero) or a duration such as `30d`.
pub fn parse_keep(text: &str) -> Option<Duration> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("forever") {
        return Some(Duration::ZERO);
    }
    humantime::parse_duration(t).ok().filter(|d| !d.is_zero())
}

impl RetentionConfig {
    /// Checks durations and names, so `retention apply` never fails half-way on a typo.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid { key, message };
        let name_ok =
            |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if let Some(keep) = &self.raw_keep
            && parse_keep(keep).is_none()
        {
            return Err(invalid(
                "retention.raw_keep".into(),
                format!("{keep:?} is not a duration (e.g. 30d) or inf"),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, d) in self.downsample.iter().enumerate() {
            let key = format!("retention.downsample[{i}]");
            if !name_ok(&d.name) || !names.insert(d.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} must be unique, made of letters, digits and _", d.name),
                ));
            }
            if d.fields.is_empty() || d.tiers.is_empty() || d.aggregates.is_empty() {
                return Err(invalid(
                    key,
                    "needs at least one field, one aggregate and one tier".into(),
                ));
            }
            for (j, t) in d.tiers.iter().enumerate() {
                if t.every.as_secs() == 0 || t.every.subsec_nanos() != 0 {
                    return Err(invalid(
                        format!("{key}.tiers[{j}].every"),
                        "must be whole seconds, at least 1s".into(),
                    ));
                }
                if parse_keep(&t.keep).is_none() {
                    return Err(invalid(
                        format!("{key}.tiers[{j}].keep"),
                        format!("{:?} is not a duration (e.g. 365d) or inf", t.keep),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A URL fit for logs and errors: no `user:password@`, no query string (v1 may carry `p=`).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            // Both setters only fail for URLs that cannot have credentials at all.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".to_string(),
    }
}

/// How a secret appears in `Debug` output: whether it is set, never its value.
fn secret(value: &Option<String>) -> &'static str {
    if value.is_some() {
        "<redacted>"
    } else {
        "<unset>"
    }
}

impl std::fmt::Debug for HomeAssistantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeAssistantConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("token", &secret(&self.token))
            .field("token_file", &self.token_file)
            .field("event_types", &self.event_types)
            .field("subscription", &self.subscription)
            .field("entity_ids", &self.entity_ids)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("ping_interval", &self.ping_interval)
            .field("pong_timeout", &self.pong_timeout)
            .field("initial_snapshot", &self.initial_snapshot)
            .field("backfill", &self.backfill)
            .field("backfill_chunk", &self.backfill_chunk)
            .field("backfill_window", &self.backfill_window)
            .field("tls", &self.tls)
            .finish()
    }
}

impl std::fmt::Debug for InfluxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxConfig")
            .field("url", &redact_url(&self.url))
            .field("api", &self.api)
            .field("database", &self.database)
            .field("retention_policy", &self.retention_policy)
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .field("password_file", &self.password_file)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("token", &secret(&self.token))
            .field("token_file", &self.token_file)
            .field("batch_size", &self.batch_size)
            .field("flush_interval", &self.flush_interval)
            .field("gzip", &self.gzip)
            .field("timeout", &self.timeout)
            .field("retry_min", &self.retry_min)
            .field("retry_max", &self.retry_max)
            .field("tls", &self.tls)
            .field("type_conflict", &self.type_conflict)
            .field("name", &self.name)
            .field("measurements", &self.measurements)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("readiness", &self.readiness)
            .field("more", &self.more)
            .finish()
    }
}

fn read_secret(key: &'static str, base: &Path, file: &Path) -> Result<String, ConfigError> {
    let path = if file.is_absolute() {
        file.to_path_buf()
    } else {
        base.join(file)
    };
    std::fs::read_to_string(&path)
        .map(|s| s.trim_end().to_string())
        .map_err(|source| ConfigError::Secret { key, path, source })
}

/// Sets `HA_INGESTOR_A__B__C=value` at `a.b.c`; the value is read as TOML when it parses, else as a string.
fn apply_env_override(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path = &var[ENV_PREFIX.len()..];
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "expected HA_INGESTOR_<SECTION>__<KEY> with double underscores between levels"
                .into(),
        });
    }
    let parsed = parse_env_value(value);
    let Some((last, parents)) = keys.split_last() else {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "names no key".into(),
        });
    };
    let mut cursor = table;
    for key in parents {
        let entry = cursor
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_string(),
                    message: format!("{key} is not a section"),
                });
            }
        };
    }
    cursor.insert(last.clone(), parsed);
    Ok(())
}

fn parse_env_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml_with_env(text, Path::new("test.toml"), &env)
    }

    #[test]
    fn gzip_is_true_false_or_auto_and_auto_spares_a_loopback_influxdb() {
        let with = |value: &str, url: &str| {
            load(
                &format!("[influxdb]\nurl = \"{url}\"\ndatabase = \"d\"\n{value}"),
                &[],
            )
        };
        let gzip = |value: &str, url: &str| {
            let c = with(value, url).unwrap();
            let i = c.influxdb.unwrap();
            (i.gzip, i.gzip.for_url(&i.url))
        };
        assert_eq!(gzip("", "http://127.0.0.1:8086"), (Gzip::Auto, false));
        assert_eq!(gzip("", "http://localhost:8086"), (Gzip::Auto, false));
        assert_eq!(gzip("", "http://[::1]:8086"), (Gzip::Auto, false));
        assert_eq!(gzip("", "http://127.1.2.3:8086"), (Gzip::Auto, false));
        assert_eq!(gzip("", "http://nas.lan:8086"), (Gzip::Auto, true));
        assert_eq!(gzip("", "https://192.168.1.5:8086"), (Gzip::Auto, true));
        assert_eq!(
            gzip("gzip = \"auto\"", "http://nas.lan:8086"),
            (Gzip::Auto, true)
        );
        assert_eq!(
            gzip("gzip = true", "http://127.0.0.1:8086"),
            (Gzip::On, true)
        );
        assert_eq!(
            gzip("gzip = false", "http://nas.lan:8086"),
            (Gzip::Off, false)
        );
        // An environment override is read as TOML, so `false` is the boolean.
        let env = load(
            "[influxdb]\nurl = \"http://nas.lan:8086\"\ndatabase = \"d\"\n",
            &[("HA_INGESTOR_INFLUXDB__GZIP", "false")],
        )
        .unwrap();
        assert_eq!(env.influxdb.map(|i| i.gzip), Some(Gzip::Off));
        let err = with("gzip = \"yes\"", "http://a:8086")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gzip") || err.contains("auto"), "{err}");
        let written: Vec<serde_json::Value> = [Gzip::On, Gzip::Off, Gzip::Auto]
            .iter()
            .map(|g| serde_json::to_value(g).unwrap())
            .collect();
        assert_eq!(
            written,
            [
                serde_json::json!(true),
                serde_json::json!(false),
                serde_json::json!("auto")
            ]
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.influxdb.is_none());
        assert_eq!(c.monitor.listen.port(), 9464);
    }

    #[test]
    fn the_entities_subscription_and_a_notifier_instance_are_checked() {
        let two = "[[homeassistant]]\nname = \"home\"\nurl = \"ws://a:8123\"\ntoken = \"t\"\n\
                   [[homeassistant]]\nname = \"cabin\"\nurl = \"ws://b:8123\"\ntoken = \"u\"\n\
                   subscription = \"entities\"\nentity_ids = [\"sensor.a\"]\n";
        let c = load(two, &[]).unwrap();
        assert_eq!(c.homeassistant[1].subscription, HaSubscription::Entities);
        assert_eq!(c.homeassistant[0].subscription, HaSubscription::Events);
        let notifier = |home: &str| {
            format!(
                "{two}[[alerts.notifiers]]\ntype = \"homeassistant\"\nname = \"n\"\ninstance = \"{home}\"\n"
            )
        };
        assert!(load(&notifier("cabin"), &[]).is_ok());
        let err = load(&notifier("boat"), &[]).unwrap_err().to_string();
        assert!(err.contains("instance") && err.contains("boat"), "{err}");
        let both = two.replace(
            "subscription = \"entities\"",
            "subscription = \"entities\"\nevent_types = [\"call_service\"]",
        );
        let err = load(&both, &[]).unwrap_err().to_string();
        assert!(err.contains("event_types"), "{err}");
        let ids_without = two.replace("subscription = \"entities\"\n", "");
        let err = load(&ids_without, &[]).unwrap_err().to_string();
        assert!(err.contains("entity_ids"), "{err}");
        let bad_id = two.replace("sensor.a", "not an id");
        let err = load(&bad_id, &[]).unwrap_err().to_string();
        assert!(err.contains("entity_ids"), "{err}");
    }

    #[test]
    fn one_or_several_home_assistants() {
        let one = load(
            "[homeassistant]\nurl = \"ws://a:8123\"\ntoken = \"t\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(one.homeassistant.len(), 1);
        assert_eq!(one.homeassistant[0].name, "homeassistant");
        assert_eq!(
            one.effective_schema().instance_tag,
            None,
            "HA's own schema has no such tag"
        );

        let two = "[[homeassistant]]\nname = \"home\"\nurl = \"ws://a:8123\"\ntoken = \"t\"\n\
                   [[homeassistant]]\nname = \"cabin\"\nurl = \"ws://b:8123\"\ntoken = \"u\"\n";
        let c = load(two, &[]).unwrap();
        let names: Vec<&str> = c.homeassistant.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["home", "cabin"]);
        assert_eq!(
            c.effective_schema().instance_tag.as_deref(),
            Some("instance")
        );
        let custom = format!("{two}[schema]\ninstance_tag = \"home\"\n");
        assert_eq!(
            load(&custom, &[])
                .unwrap()
                .effective_schema()
                .instance_tag
                .as_deref(),
            Some("home")
        );

        // Two instances left with the default name would share a cursor file.
        let same = "[[homeassistant]]\nurl = \"ws://a:8123\"\ntoken = \"t\"\n\
                    [[homeassistant]]\nurl = \"ws://b:8123\"\ntoken = \"u\"\n";
        let err = load(same, &[]).unwrap_err().to_string();
        assert!(
            err.contains("homeassistant.name") && err.contains("twice"),
            "{err}"
        );
        // A bad key inside one of the tables is still named.
        let bad = "[[homeassistant]]\nname = \"home\"\nurl = \"ws://a:8123\"\ntokn = \"t\"\n";
        let err = load(bad, &[]).unwrap_err().to_string();
        assert!(err.contains("tokn"), "{err}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = load(
            "data_dir = \"x\"\n[influxdb]\nurl = \"http://h:8086\"\ndatabse = \"ha\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("test.toml"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("databse"), "{err}");
    }

    #[test]
    fn env_overrides_typed_values_and_nested_keys() {
        let text = "[influxdb]\nurl = \"http://h:8086\"\ndatabase = \"ha\"\n";
        let c = load(
            text,
            &[
                ("HA_INGESTOR_INFLUXDB__BATCH_SIZE", "250"),
                ("HA_INGESTOR_INFLUXDB__DATABASE", "other"),
                ("HA_INGESTOR_FILTER__EXCLUDE__DOMAINS", "[\"automation\"]"),
                ("HA_INGESTOR_HOMEASSISTANT__URL", "http://ha.local:8123"),
                ("HA_INGESTOR_HOMEASSISTANT__TOKEN", "abc"),
            ],
        )
        .unwrap();
        let influx = c.influxdb.unwrap();
        assert_eq!(influx.batch_size, 250);
        assert_eq!(influx.database.as_deref(), Some("other"));
        assert_eq!(c.filter.exclude.domains, vec!["automation".to_string()]);
        let ha = &c.homeassistant[0];
        assert_eq!(ha.websocket_url(), "ws://ha.local:8123/api/websocket");
    }

    #[test]
    fn env_unknown_key_names_the_variable() {
        let err = load("", &[("HA_INGESTOR_MONITOR__LISTN", "1.2.3.4:1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("HA_INGESTOR_MONITOR__LISTN"), "{err}");
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn incomplete_credentials_are_refused() {
        let err = load(
            "[influxdb]\nurl = \"http://h:8086\"\napi = \"v2\"\norg = \"o\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("influxdb.bucket"), "{err}");
        let err = load("[homeassistant]\nurl = \"ws://h:8123\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("homeassistant.token"), "{err}");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_urls() {
        let c = load(
            "[homeassistant]\nurl = \"ws://h:8123\"\ntoken = \"tok-123\"\n[influxdb]\nurl = \"http://me:pw-456@h:8086/?p=pw-456\"\ndatabase = \"ha\"\nusername = \"me\"\npassword = \"pw-456\"\n",
            &[],
        )
        .unwrap();
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("tok-123") && !debug.contains("pw-456"),
            "{debug}"
        );
        assert!(debug.contains("<redacted>"), "{debug}");
        assert_eq!(redact_url("http://me:pw@h:8086/x?p=pw"), "http://h:8086/x");
    }

    #[test]
    fn token_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "secret-token\n").unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "[homeassistant]\nurl = \"ws://h:8123\"\ntoken_file = \"tok\"\n",
        )
        .unwrap();
        let c =
            Config::from_toml_with_env(&std::fs::read_to_string(&cfg).unwrap(), &cfg, &[]).unwrap();
        assert_eq!(c.homeassistant[0].token.as_deref(), Some("secret-token"));
    }

    #[test]
    fn several_influxdb_targets_parse_and_validate() {
        let two = "[[influxdb]]\nname = \"a\"\nurl = \"http://a:8086\"\ndatabase = \"d\"\n\
                   [[influxdb]]\nname = \"b\"\nurl = \"http://b:8086\"\ndatabase = \"d\"\nmeasurements = [\"°C\"]\n";
        let c = load(two, &[]).unwrap();
        let influx = c.influxdb.unwrap();
        let targets: Vec<(&str, &str, Vec<String>)> = influx
            .targets()
            .map(|t| (t.target_name(), t.url.as_str(), t.measurements.clone()))
            .collect();
        assert_eq!(
            targets,
            [
                ("a", "http://a:8086", vec![]),
                ("b", "http://b:8086", vec!["°C".to_string()])
            ]
        );
        // One table still works, named "influxdb".
        let one = load(
            "[influxdb]\nurl = \"http://a:8086\"\ndatabase = \"d\"\n",
            &[],
        )
        .unwrap();
        let one = one.influxdb.unwrap();
        assert_eq!((one.target_name(), one.more.len()), ("influxdb", 0));
        let err = load(&two.replace("name = \"b\"", "name = \"a\""), &[]).unwrap_err();
        assert!(err.to_string().contains("distinct name"), "{err}");
        let err = load(&two.replace("[\"°C\"]", "[\"[\"]"), &[]).unwrap_err();
        assert!(err.to_string().contains("measurements"), "{err}");
        let err = load(
            &two.replace("url = \"http://b:8086\"", "url = \"ftp://b\""),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("target \"b\""), "{err}");
        let err = load(two, &[("HA_INGESTOR_INFLUXDB__DATABASE", "x")]).unwrap_err();
        assert!(err.to_string().contains("not a section"), "{err}");
        let err = load(
            "[[influxdb]]\nurl = \"http://a\"\ndatabase = \"d\"\nbogus = 1\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
