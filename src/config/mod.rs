//! One typed tree that mirrors the config file, its loading and its validation.
//!
//! Loading order: the TOML file (errors carry file, line and key), then
//! `HA_INGESTOR_<SECTION>__<KEY>` environment overrides (each read as its key's
//! type asks; errors name the variable; `env.rs`), then `*_file` secrets
//! (`secret.rs`), then [`Config::validate`] (`validate.rs`, one function per
//! section). No error carries the value of a secret key: the file's errors
//! redact it on the line they show and in the message, the environment's
//! leave it out (`secret.rs`).
//!
//! One file per section: `homeassistant`, `filters` (`[filter]`: the HA gate, the
//! rule chain, transforms, rate shaping), `schema`, `influxdb`, `buffer` (with
//! `[file_sink]`), `monitor` (with `[log]`), `retention`, `alerts`, `mqtt` (brokers
//! and their `[[mqtt.subscriptions]]`). Their types are re-exported here, so each is
//! `crate::config::X`; only the `[alerts]` types keep their own namespace,
//! [`alerts`], since their names (`Aggregate`, `Condition`) would clash. `secret`
//! and `tls` are leaves that import nothing else of the crate, so the runtime TLS
//! builders (`crate::tls`) depend on the config leaf alone.
//!
//! Config is data: nothing here imports a stage (`source`, `pipeline`, `sink`,
//! `monitor`) or `crate::tls`. The two checks only a stage can make (that MQTT
//! subscriptions compile, which counter an anomaly rule's `domain` reads) go through
//! the `StageCheck` trait of `validate.rs`, which those stages implement for the
//! config types beside their own code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod alerts;
mod buffer;
mod dead_letter;
mod env;
mod filters;
mod fleet;
mod homeassistant;
mod influxdb;
mod monitor;
mod mqtt;
mod retention;
mod schema;
mod secret;
#[cfg(test)]
mod tests;
pub(crate) mod tls;
pub(crate) mod validate;

pub use buffer::{BufferConfig, FileSinkConfig, WhenFull};
pub use dead_letter::DeadLetterConfig;
pub use env::{CONFIG_VAR, ENV_PREFIX, WORKER_THREADS_VAR};
pub use filters::{
    Aggregate, AttributeMatchConfig, ConvertTo, EntityFilterConfig, EntityMatchConfig,
    FilterAction, FilterConfig, FilterRuleConfig, OnError, RateConfig, RuleMatchConfig,
    StateMatchConfig, StateSide, StepOnError, TimeMatchConfig, TransformStepConfig,
};
pub use fleet::{HOSTNAME_VAR, ShardConfig, fnv1a64, jump_hash, shard_of};
pub use homeassistant::{
    HaSubscription, HomeAssistantConfig, SUPERVISOR_API_DEFAULT, SUPERVISOR_API_VAR,
    SUPERVISOR_TOKEN_VAR, supervisor_api, supervisor_token,
};
pub use influxdb::{Flavor, Gzip, InfluxApi, InfluxConfig, TargetReadiness, TypeConflict};
pub use monitor::{LogConfig, LogFormat, MonitorConfig, PeerRange};
pub use mqtt::{
    BoolMode, DecoderKind, JsonSplit, MqttConfig, MqttProtocol, RetainedPolicy, SubscriptionConfig,
    TimestampFormat,
};
pub use retention::{DownsampleConfig, RetentionConfig, TierAggregate, TierConfig, parse_keep};
pub use schema::{
    AttributeType, ComponentOverride, MeasurementAttr, OptimizedSchemaConfig, SchemaConfig,
    SchemaMode,
};
pub use secret::redact_url;
pub use tls::{MqttTlsConfig, TlsConfig};

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
    /// An environment override is malformed, names an unknown key or has the wrong type.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable (or, for an error on a section several set, those variables, comma-separated).
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
    #[serde(default, deserialize_with = "homeassistant::one_or_many")]
    pub homeassistant: Vec<HomeAssistantConfig>,
    /// A folder of home files (`*.toml`, one `[homeassistant]`'s keys each, `name` defaulting to the file stem), added to `homeassistant` at load: adding a home is adding a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homes_dir: Option<PathBuf>,
    /// Which of the homes this replica runs, by a stable hash of each home's name; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardConfig>,
    /// Which events are kept.
    #[serde(default)]
    pub filter: FilterConfig,
    /// How events become points.
    #[serde(default)]
    pub schema: SchemaConfig,
    /// The InfluxDB sink; absent means points go to the file sink. `[[influxdb]]` tables: the first, with the others in its `more`.
    #[serde(default, deserialize_with = "influxdb::influx_one_or_many")]
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
    /// Bounds of the dead-letter folder: bytes kept per input, total size.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// MQTT brokers (`[[mqtt]]`), each with its subscriptions; empty means no MQTT source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mqtt: Vec<MqttConfig>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

// Defaults more than one section uses.

fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_true() -> bool {
    true
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
        // No error shows a secret: the file's errors redact secret values on the line
        // shown and in the message (`secret::describe_toml_error`).
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: secret::describe_toml_error(text, &e),
        };
        // First pass on the text itself: its errors carry line, column and key.
        let parsed: Config = toml::from_str(text).map_err(parse_error)?;
        for (var, _) in env.iter().filter(|(k, _)| env::is_ignored(k)) {
            tracing::debug!(
                var = %var,
                "environment variable ignored: not a HA_INGESTOR_<SECTION>__<KEY> override"
            );
        }
        let mut overrides: Vec<&(String, String)> =
            env.iter().filter(|(k, _)| env::is_override(k)).collect();
        // The environment's order is arbitrary; the outcome must not be.
        overrides.sort();
        let mut config = if overrides.is_empty() {
            parsed
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
            for (var, value) in &overrides {
                env::apply_env_override(&mut table, var, value)?;
            }
            // Read once with every override applied, so variables that complete a
            // section together (`…__URL` and `…__TOKEN`) work in any order.
            Config::deserialize(toml::Value::Table(table)).map_err(|e| env_error(&overrides, &e))?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(dir) = &config.homes_dir {
            let homes = fleet::read_homes_dir(dir, base)?;
            config.homeassistant.extend(homes);
        }
        if let Some(shard) = &mut config.shard {
            fleet::resolve_index(shard, env)?;
        }
        // Inside a Home Assistant add-on the Supervisor is the way to Home Assistant.
        homeassistant::apply_supervisor(&mut config.homeassistant, env)?;
        config.read_secrets(path.parent().unwrap_or(Path::new(".")))?;
        config.resolve_tls_paths(path.parent().unwrap_or(Path::new(".")));
        config.validate()?;
        Ok(config)
    }

    /// The homes this process runs: every listed home, or with `[shard]` those whose hash lands on its index.
    pub fn owned_homes(&self) -> impl Iterator<Item = &HomeAssistantConfig> {
        self.homeassistant
            .iter()
            .filter(|ha| self.shard.as_ref().is_none_or(|s| s.owns(&ha.name)))
    }

    /// The schema as the encoder uses it: with several Home Assistant instances (or a
    /// sharded fleet) the instance tag is on by default, the same on every replica.
    pub fn effective_schema(&self) -> SchemaConfig {
        let mut schema = self.schema.clone();
        if (self.homeassistant.len() > 1 || self.shard.is_some()) && schema.instance_tag.is_none() {
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
        self.monitor.read_secrets(base)?;
        Ok(())
    }

    /// Makes every relative TLS file path (CA, client certificate and key) relative to the config's folder, like `*_file` secrets.
    fn resolve_tls_paths(&mut self, base: &Path) {
        for ha in &mut self.homeassistant {
            ha.tls.resolve_paths(base);
        }
        if let Some(influx) = &mut self.influxdb {
            influx.tls.resolve_paths(base);
            for more in &mut influx.more {
                more.tls.resolve_paths(base);
            }
        }
        for mqtt in &mut self.mqtt {
            mqtt.tls.resolve_paths(base);
        }
        for notifier in &mut self.alerts.notifiers {
            match notifier {
                alerts::NotifierConfig::Webhook { tls, .. } => tls.resolve_paths(base),
                alerts::NotifierConfig::Mqtt { tls: Some(tls), .. } => tls.resolve_paths(base),
                _ => {}
            }
        }
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

/// Reads one `*_file` secret; `key` names the setting in the error.
fn read_secret(key: &'static str, base: &Path, file: &Path) -> Result<String, ConfigError> {
    secret::read_secret_file(base, file).map_err(|(path, source)| ConfigError::Secret {
        key,
        path,
        source,
    })
}

/// An error of the config with overrides applied, naming the variables that set keys
/// under the key at fault (all of them when it names none), never a secret's value.
fn env_error(overrides: &[&(String, String)], error: &toml::de::Error) -> ConfigError {
    // Read from a table, the error names its key path in lines "in `a.b`", the
    // innermost first (a section read through a `toml::Value` adds its own line).
    let shown = error.to_string();
    let mut at: Vec<String> = Vec::new();
    for keys in shown
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("in `")?.strip_suffix('`'))
    {
        at.extend(keys.split('.').map(str::to_string));
    }
    let concerned: Vec<&str> = overrides
        .iter()
        .filter(|(var, _)| {
            let keys = env::key_path(var);
            !at.is_empty() && (keys.starts_with(&at) || at.starts_with(&keys))
        })
        .map(|(var, _)| var.as_str())
        .collect();
    let vars = if concerned.is_empty() {
        overrides.iter().map(|(var, _)| var.as_str()).collect()
    } else {
        concerned
    };
    let secrets = overrides
        .iter()
        .filter(|(var, _)| {
            env::key_path(var)
                .last()
                .is_some_and(|k| secret::is_secret_key(k))
        })
        .map(|(_, value)| value.as_str());
    let message: Vec<&str> = error
        .message()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("in `"))
        .collect();
    let mut message = secret::scrub(&message.join(" "), secrets);
    if !at.is_empty() {
        message = format!("{message} (at {})", at.join("."));
    }
    ConfigError::Env {
        var: vars.join(", "),
        message,
    }
}
