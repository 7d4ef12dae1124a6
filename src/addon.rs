//! The Home Assistant add-on: its options (`/data/options.json`, written by the
//! Supervisor on every start from the option schema of
//! `deploy/homeassistant-addon/ha_ingestor/config.yaml`) become the TOML config the
//! service reads, and the MQTT broker comes from the Supervisor's service discovery.
//!
//! Home Assistant itself needs nothing here: with `SUPERVISOR_TOKEN` set and no
//! `[homeassistant]` section, the config loader connects through the Supervisor's
//! WebSocket proxy (`config::supervisor_api`). The data directory is the add-on's
//! persistent `/data`, so the buffer and the cursors survive restarts and updates.
//! A full TOML file in the add-on's config folder replaces the options altogether
//! (the escape hatch for keys the options do not cover).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

/// Where the Supervisor writes the add-on's options.
pub const OPTIONS_PATH: &str = "/data/options.json";

/// The full TOML config a user may put in the add-on's config folder (`/config` inside the add-on) instead of options.
pub const OVERRIDE_PATH: &str = "/config/ha-ingestor.toml";

/// Where the config made from the options is written (inside `/data`, private to the add-on).
pub const GENERATED_PATH: &str = "/data/ha-ingestor.toml";

/// The add-on's data directory: the Supervisor's persistent, backed-up mount.
pub const DATA_DIR: &str = "/data";

/// The Supervisor's Ingress proxy: the one peer the status page answers in an add-on.
const INGRESS_PROXY: &str = "172.30.32.2";

/// The monitor inside the add-on container: on every interface, since Ingress and the
/// watchdog come from the Supervisor's address, not from loopback.
pub const MONITOR_LISTEN: &str = "0.0.0.0:9464";

/// Why the add-on could not make its config.
#[derive(Debug, thiserror::Error)]
pub enum AddonError {
    /// `options.json` could not be read.
    #[error("cannot read the add-on options {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `options.json` does not have the shape of the add-on's option schema.
    #[error("the add-on options {path} do not match this version's option schema: {message}")]
    Options {
        /// The file.
        path: PathBuf,
        /// The JSON error (with the option at fault).
        message: String,
    },
    /// The options do not make sense together (or cannot be written as TOML).
    #[error("add-on option {option}: {message}")]
    Invalid {
        /// The option at fault.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// MQTT is on but the Supervisor names no broker, or could not be asked.
    #[error("MQTT is enabled but no broker was found through the Supervisor ({url}): {message}")]
    Discovery {
        /// The service-discovery URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The generated config could not be written.
    #[error("cannot write the generated config {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The add-on's options, as the Supervisor writes them (unset optional options are absent).
///
/// Mirrors `schema:` in the add-on's `config.yaml` key for key (a test holds the two together).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddonOptions {
    /// InfluxDB base URL; absent or empty: points go to line-protocol files under `/data/points`.
    #[serde(default)]
    pub influxdb_url: Option<String>,
    /// `v1` (database, username, password) or `v2` (org, bucket, token).
    #[serde(default)]
    pub influxdb_api: Option<String>,
    /// InfluxDB 1.x database.
    #[serde(default)]
    pub influxdb_database: Option<String>,
    /// InfluxDB 1.x user.
    #[serde(default)]
    pub influxdb_username: Option<String>,
    /// InfluxDB 1.x password.
    #[serde(default)]
    pub influxdb_password: Option<String>,
    /// InfluxDB 2.x organisation.
    #[serde(default)]
    pub influxdb_org: Option<String>,
    /// InfluxDB 2.x bucket.
    #[serde(default)]
    pub influxdb_bucket: Option<String>,
    /// InfluxDB 2.x token.
    #[serde(default)]
    pub influxdb_token: Option<String>,
    /// `homeassistant` (what HA's own integration writes) or `optimized`.
    #[serde(default)]
    pub schema_mode: Option<String>,
    /// HA's include list: domains.
    #[serde(default)]
    pub include_domains: Vec<String>,
    /// HA's include list: entity ids.
    #[serde(default)]
    pub include_entities: Vec<String>,
    /// HA's include list: entity-id globs.
    #[serde(default)]
    pub include_entity_globs: Vec<String>,
    /// HA's exclude list: domains.
    #[serde(default)]
    pub exclude_domains: Vec<String>,
    /// HA's exclude list: entity ids.
    #[serde(default)]
    pub exclude_entities: Vec<String>,
    /// HA's exclude list: entity-id globs.
    #[serde(default)]
    pub exclude_entity_globs: Vec<String>,
    /// Read MQTT too, from the broker the Supervisor names (the Mosquitto add-on).
    #[serde(default)]
    pub mqtt_enabled: bool,
    /// The MQTT subscriptions, when `mqtt_enabled`.
    #[serde(default)]
    pub mqtt_subscriptions: Vec<AddonSubscription>,
    /// A `tracing` filter: `trace`, `debug`, `info`, `warn` or `error`.
    #[serde(default)]
    pub log_level: Option<String>,
}

/// One MQTT subscription of the options (the common keys of `[[mqtt.subscriptions]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddonSubscription {
    /// Its name in metrics and logs; default `subscription_<n>`.
    #[serde(default)]
    pub name: Option<String>,
    /// The topic filter.
    pub topic: String,
    /// `json`, `value`, `statestream` or `eventstream`.
    pub decoder: String,
    /// Topic pattern with captures (`zigbee2mqtt/{device}`).
    #[serde(default)]
    pub pattern: Option<String>,
}

/// The MQTT broker the Supervisor announces (`GET /services/mqtt`, `data`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MqttService {
    /// Host name (`core-mosquitto` for the Mosquitto add-on).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether the broker speaks TLS.
    #[serde(default)]
    pub ssl: bool,
    /// `3.1` or `3.1.1` (what HA's own MQTT integration is told to use).
    #[serde(default)]
    pub protocol: Option<String>,
    /// User name, when the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, when the broker wants one.
    #[serde(default)]
    pub password: Option<String>,
}

impl AddonOptions {
    /// Reads the Supervisor's `options.json`.
    pub fn read(path: &Path) -> Result<AddonOptions, AddonError> {
        let text = std::fs::read_to_string(path).map_err(|source| AddonError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        AddonOptions::parse(&text).map_err(|message| AddonError::Options {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the text of `options.json`; the error names the option at fault, never a value.
    pub fn parse(text: &str) -> Result<AddonOptions, String> {
        serde_json::from_str(text).map_err(|e| {
            // serde_json's messages name the key and the expected type, not the value.
            e.to_string()
        })
    }

    /// The TOML config for these options, keeping its data in `data_dir` ([`DATA_DIR`] in
    /// the add-on); `mqtt` is the discovered broker (needed when `mqtt_enabled`).
    pub fn to_toml(
        &self,
        data_dir: &Path,
        mqtt: Option<&MqttService>,
    ) -> Result<String, AddonError> {
        let mut root = Table::new();
        root.insert("data_dir".into(), data_dir.display().to_string().into());

        let mut monitor = Table::new();
        monitor.insert("listen".into(), MONITOR_LISTEN.into());
        // The status page answers only the Supervisor's Ingress proxy.
        monitor.insert(
            "ingress_only_from".into(),
            toml::Value::Array(vec![INGRESS_PROXY.into()]),
        );
        root.insert("monitor".into(), monitor.into());

        if let Some(level) = non_empty(&self.log_level) {
            let mut log = Table::new();
            log.insert("level".into(), level.into());
            root.insert("log".into(), log.into());
        }
        if let Some(mode) = non_empty(&self.schema_mode) {
            let mut schema = Table::new();
            schema.insert("mode".into(), mode.into());
            root.insert("schema".into(), schema.into());
        }
        let include = entity_filter(
            &self.include_domains,
            &self.include_entities,
            &self.include_entity_globs,
        );
        let exclude = entity_filter(
            &self.exclude_domains,
            &self.exclude_entities,
            &self.exclude_entity_globs,
        );
        if include.is_some() || exclude.is_some() {
            let mut filter = Table::new();
            if let Some(include) = include {
                filter.insert("include".into(), include.into());
            }
            if let Some(exclude) = exclude {
                filter.insert("exclude".into(), exclude.into());
            }
            root.insert("filter".into(), filter.into());
        }
        if let Some(influxdb) = self.influxdb()? {
            root.insert("influxdb".into(), influxdb.into());
        }
        if self.mqtt_enabled {
            let Some(service) = mqtt else {
                return Err(AddonError::Invalid {
                    option: "mqtt_enabled",
                    message: "no MQTT broker was discovered".into(),
                });
            };
            root.insert(
                "mqtt".into(),
                Value::Array(vec![self.mqtt(service)?.into()]),
            );
        }
        toml::to_string(&root).map_err(|e| AddonError::Invalid {
            option: "(all)",
            message: format!("cannot write the options as TOML: {e}"),
        })
    }

    /// `[influxdb]` from the options, or `None` for the file sink.
    fn influxdb(&self) -> Result<Option<Table>, AddonError> {
        let Some(url) = non_empty(&self.influxdb_url) else {
            return Ok(None);
        };
        let mut t = Table::new();
        t.insert("url".into(), url.into());
        let api = non_empty(&self.influxdb_api).unwrap_or("v1");
        t.insert("api".into(), api.into());
        let keys: [(&str, &Option<String>); 6] = [
            ("database", &self.influxdb_database),
            ("username", &self.influxdb_username),
            ("password", &self.influxdb_password),
            ("org", &self.influxdb_org),
            ("bucket", &self.influxdb_bucket),
            ("token", &self.influxdb_token),
        ];
        for (key, value) in keys {
            if let Some(value) = non_empty(value) {
                t.insert(key.into(), value.into());
            }
        }
        if api == "v1" && !t.contains_key("database") {
            return Err(AddonError::Invalid {
                option: "influxdb_database",
                message: "InfluxDB 1.x (influxdb_api v1) needs a database".into(),
            });
        }
        Ok(Some(t))
    }

    /// One `[[mqtt]]` table for the discovered broker, with the options' subscriptions.
    fn mqtt(&self, service: &MqttService) -> Result<Table, AddonError> {
        if self.mqtt_subscriptions.is_empty() {
            return Err(AddonError::Invalid {
                option: "mqtt_subscriptions",
                message: "MQTT is enabled but no subscription is given".into(),
            });
        }
        let mut t = Table::new();
        t.insert("name".into(), "mqtt".into());
        let scheme = if service.ssl { "mqtts" } else { "mqtt" };
        // An IPv6 literal needs brackets in a URL.
        let host = if service.host.contains(':') && !service.host.starts_with('[') {
            format!("[{}]", service.host)
        } else {
            service.host.clone()
        };
        t.insert(
            "url".into(),
            format!("{scheme}://{host}:{}", service.port).into(),
        );
        // The broker announces the protocol HA's own integration speaks to it.
        if matches!(service.protocol.as_deref(), Some("3.1" | "3.1.1")) {
            t.insert("protocol".into(), "v3.1.1".into());
        }
        if let Some(user) = non_empty(&service.username) {
            t.insert("username".into(), user.into());
        }
        if let Some(password) = non_empty(&service.password) {
            t.insert("password".into(), password.into());
            if !service.ssl {
                // The broker the Supervisor discovered is reached over its internal
                // network (as `supervisor` is): the password stays on the HA host.
                t.insert("allow_insecure_transport".into(), true.into());
            }
        }
        let mut subs = Vec::new();
        for (i, sub) in self.mqtt_subscriptions.iter().enumerate() {
            let mut s = Table::new();
            let name = non_empty(&sub.name)
                .map(str::to_string)
                .unwrap_or_else(|| format!("subscription_{}", i + 1));
            s.insert("name".into(), name.into());
            s.insert("topic".into(), sub.topic.clone().into());
            s.insert("decoder".into(), sub.decoder.clone().into());
            if let Some(pattern) = non_empty(&sub.pattern) {
                s.insert("pattern".into(), pattern.into());
            }
            subs.push(Value::Table(s));
        }
        t.insert("subscriptions".into(), Value::Array(subs));
        Ok(t)
    }
}

/// An include or exclude table, or `None` when all three lists are empty.
fn entity_filter(domains: &[String], entities: &[String], globs: &[String]) -> Option<Table> {
    let mut t = Table::new();
    for (key, list) in [
        ("domains", domains),
        ("entities", entities),
        ("entity_globs", globs),
    ] {
        let list: Vec<Value> = list
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(Value::from)
            .collect();
        if !list.is_empty() {
            t.insert(key.into(), Value::Array(list));
        }
    }
    (!t.is_empty()).then_some(t)
}

/// The option's text unless it is absent or blank (the options UI saves an emptied field as `""`).
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The Supervisor's service-discovery answer for MQTT: `{"result":"ok","data":{…}}`.
#[derive(Deserialize)]
struct DiscoveryReply {
    result: String,
    #[serde(default)]
    data: Option<MqttService>,
    #[serde(default)]
    message: Option<String>,
}

/// Asks the Supervisor at `api` (`http://supervisor`) which MQTT broker it knows, with its `token`.
pub async fn discover_mqtt(api: &str, token: &str) -> Result<MqttService, AddonError> {
    let url = format!("{}/services/mqtt", api.trim_end_matches('/'));
    let fail = |message: String| AddonError::Discovery {
        url: url.clone(),
        message,
    };
    // reqwest is built without a bundled TLS provider: the process's one (ring) first.
    crate::ensure_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let reply = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let status = reply.status();
    let body = reply.bytes().await.map_err(|e| fail(e.to_string()))?;
    let parsed: Result<DiscoveryReply, _> = serde_json::from_slice(&body);
    match parsed {
        Ok(DiscoveryReply {
            result,
            data: Some(service),
            ..
        }) if status.is_success() && result == "ok" => Ok(service),
        Ok(reply) => Err(fail(format!(
            "HTTP {}: {} (is the Mosquitto add-on installed and started? does config.yaml list services: mqtt:want?)",
            status.as_u16(),
            reply.message.unwrap_or(reply.result)
        ))),
        Err(_) => Err(fail(format!(
            "HTTP {}: the answer is not the Supervisor's JSON",
            status.as_u16()
        ))),
    }
}

/// Writes `text` to `path` readable by the service's user alone (it holds passwords).
pub fn write_private(path: &Path, text: &str) -> Result<(), AddonError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("toml.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|source| AddonError::Write {
        path: path.to_path_buf(),
        source,
    })
}
