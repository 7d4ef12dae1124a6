//! `[influxdb]` / `[[influxdb]]`: the InfluxDB targets (the first carries the others).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::{redact_url, secret};
use super::tls::TlsConfig;

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

/// Which server answers at `url`: writes are the same line protocol, but what else it understands differs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum Flavor {
    /// InfluxDB (1.x; 2.x and 3.x through their v1/v2 write APIs): InfluxQL reads the stored
    /// field types, retention policies, and serves the schema tools.
    #[default]
    #[serde(rename = "influxdb")]
    InfluxDb,
    /// VictoriaMetrics: it accepts the writes but has no InfluxQL (its `/query` answers every
    /// statement with a database list) and no field types (every value is a float), so the
    /// type-conflict guard, the retention watcher and the schema tools are off (docs/stores.md).
    #[serde(rename = "victoriametrics")]
    VictoriaMetrics,
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
    /// The server behind `url`: `influxdb` or `victoriametrics` (what works there: docs/stores.md).
    #[serde(default)]
    pub flavor: Flavor,
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
    /// Let credentials go in clear text (no TLS) to a host that is not loopback; refused otherwise (see docs/security.md).
    #[serde(default)]
    pub allow_insecure_transport: bool,
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
pub(super) fn influx_one_or_many<'de, D: serde::Deserializer<'de>>(
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
            flavor: Flavor::InfluxDb,
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
            allow_insecure_transport: false,
            type_conflict: TypeConflict::default(),
            name: None,
            measurements: Vec::new(),
            max_concurrent_requests: default_max_concurrent_requests(),
            readiness: TargetReadiness::default(),
            more: Vec::new(),
        }
    }
}

impl std::fmt::Debug for InfluxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxConfig")
            .field("url", &redact_url(&self.url))
            .field("api", &self.api)
            .field("flavor", &self.flavor)
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
            .field("allow_insecure_transport", &self.allow_insecure_transport)
            .field("type_conflict", &self.type_conflict)
            .field("name", &self.name)
            .field("measurements", &self.measurements)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("readiness", &self.readiness)
            .field("more", &self.more)
            .finish()
    }
}
