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
    /// Left out inside a Home Assistant add-on (`SUPERVISOR_TOKEN` set): the Supervisor's proxy.
    #[serde(default)]
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
    /// How long a gap waits for HA's recorder to commit its last changes (its
    /// `commit_interval`, 5 s by default) before reading it anyway.
    #[serde(default = "default_backfill_commit_wait", with = "humantime_serde")]
    pub backfill_commit_wait: Duration,
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
fn default_backfill_commit_wait() -> Duration {
    Duration::from_secs(30)
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
            backfill_commit_wait: default_backfill_commit_wait(),
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
        // `/core/websocket` is the Supervisor's proxy of the same API (inside an add-on).
        if url.ends_with("/api/websocket") || url.ends_with("/core/websocket") {
            url
        } else {
            format!("{url}/api/websocket")
        }
    }
}

/// The variable the Supervisor sets inside a Home Assistant add-on: its API token, new on every start.
pub const SUPERVISOR_TOKEN_VAR: &str = "SUPERVISOR_TOKEN";

/// The variable that moves the Supervisor's API from [`SUPERVISOR_API_DEFAULT`] (the
/// add-on helper library reads the same name; tests point it at a stand-in).
pub const SUPERVISOR_API_VAR: &str = "SUPERVISOR_API";

/// Where an add-on reaches the Supervisor's API.
pub const SUPERVISOR_API_DEFAULT: &str = "http://supervisor";

/// The Supervisor's API base URL from `env`: [`SUPERVISOR_API_VAR`] or the default, without a trailing `/`.
pub fn supervisor_api(env: &[(String, String)]) -> String {
    env.iter()
        .find(|(k, v)| k == SUPERVISOR_API_VAR && !v.trim().is_empty())
        .map_or(SUPERVISOR_API_DEFAULT, |(_, v)| v.trim())
        .trim_end_matches('/')
        .to_string()
}

/// The Supervisor's token from `env`, when running as an add-on.
pub fn supervisor_token(env: &[(String, String)]) -> Option<&str> {
    env.iter()
        .find(|(k, v)| k == SUPERVISOR_TOKEN_VAR && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// Inside a Home Assistant add-on (`SUPERVISOR_TOKEN` in `env`), Home Assistant is
/// reached through the Supervisor's WebSocket proxy with that token: no `[homeassistant]`
/// section means one such source, and a source without `url` gets the proxy's (and the
/// Supervisor's token when it names none). Outside an add-on a source needs its `url`.
pub(super) fn apply_supervisor(
    homes: &mut Vec<HomeAssistantConfig>,
    env: &[(String, String)],
) -> Result<(), super::ConfigError> {
    let Some(token) = supervisor_token(env) else {
        return match homes.iter().find(|h| h.url.trim().is_empty()) {
            Some(ha) => Err(super::ConfigError::Invalid {
                key: "homeassistant.url".into(),
                message: format!(
                    "{:?} has no url: give ws://host:8123/api/websocket (only a Home Assistant add-on, with {SUPERVISOR_TOKEN_VAR} set, may leave it out)",
                    ha.name
                ),
            }),
            None => Ok(()),
        };
    };
    let url = format!("{}/core/websocket", supervisor_api(env));
    if homes.is_empty() {
        homes.push(HomeAssistantConfig::new(url, token));
        return Ok(());
    }
    for ha in homes.iter_mut().filter(|h| h.url.trim().is_empty()) {
        ha.url = url.clone();
        if ha.token.is_none() && ha.token_file.is_none() {
            ha.token = Some(token.to_string());
        }
    }
    Ok(())
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
            .field("backfill_commit_wait", &self.backfill_commit_wait)
            .field("tls", &self.tls)
            .field("allow_insecure_transport", &self.allow_insecure_transport)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml_with_env(text, Path::new("t.toml"), &env)
    }

    #[test]
    fn inside_an_addon_no_section_means_the_supervisors_proxy_with_its_token() {
        let cfg = load("", &[("SUPERVISOR_TOKEN", "sv-token")]).unwrap();
        assert_eq!(cfg.homeassistant.len(), 1);
        let ha = &cfg.homeassistant[0];
        assert_eq!(ha.websocket_url(), "ws://supervisor/core/websocket");
        assert_eq!(ha.token.as_deref(), Some("sv-token"));
        // Without the token nothing is added: no source at all is for `run` to refuse.
        assert!(load("", &[]).unwrap().homeassistant.is_empty());
    }

    #[test]
    fn a_section_without_url_takes_the_proxy_and_keeps_its_other_keys() {
        let text = "[homeassistant]\nsubscription = \"entities\"\n";
        let cfg = load(
            text,
            &[
                ("SUPERVISOR_TOKEN", "sv-token"),
                ("SUPERVISOR_API", "http://127.0.0.1:8080/"),
            ],
        )
        .unwrap();
        let ha = &cfg.homeassistant[0];
        assert_eq!(ha.websocket_url(), "ws://127.0.0.1:8080/core/websocket");
        assert_eq!(ha.token.as_deref(), Some("sv-token"));
        assert_eq!(ha.subscription, super::HaSubscription::Entities);
        // A URL of its own wins, with its own token.
        let own = "[homeassistant]\nurl = \"http://ha:8123\"\ntoken = \"own\"\nallow_insecure_transport = true\n";
        let cfg = load(own, &[("SUPERVISOR_TOKEN", "sv-token")]).unwrap();
        assert_eq!(
            cfg.homeassistant[0].websocket_url(),
            "ws://ha:8123/api/websocket"
        );
        assert_eq!(cfg.homeassistant[0].token.as_deref(), Some("own"));
        // Outside an add-on the URL is required, and the error says so.
        let err = load("[homeassistant]\ntoken = \"t\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("homeassistant.url"), "{err}");
    }
}
