//! `[homeassistant]` / `[[homeassistant]]`: the Home Assistant WebSocket sources.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::{redact_url, secret};
use super::tls::TlsConfig;
use super::{default_connect_timeout, default_reconnect_max, default_reconnect_min, default_true};

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
    /// Let credentials go in clear text (no TLS) to a host that is not loopback; refused otherwise (see docs/security.md).
    #[serde(default)]
    pub allow_insecure_transport: bool,
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
pub(super) fn one_or_many<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
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
            allow_insecure_transport: false,
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
            .field("allow_insecure_transport", &self.allow_insecure_transport)
            .finish()
    }
}
