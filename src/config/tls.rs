//! The TLS settings of the outgoing connections: `tls` of `[homeassistant]`,
//! `[influxdb]` and `[[mqtt]]` (which adds a client certificate). A leaf: it imports
//! nothing else of the crate, so the runtime builders in `crate::tls` depend on it alone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

/// `base.join(path)` for a relative path (an absolute one stays as it is).
fn resolve(base: &Path, path: &mut Option<PathBuf>) {
    if let Some(p) = path
        && p.is_relative()
    {
        *p = base.join(&*p);
    }
}

impl TlsConfig {
    /// Makes a relative `ca_file` relative to `base` (the config file's folder), as secret files are.
    pub fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.ca_file);
    }
}

impl MqttTlsConfig {
    /// Makes relative `ca_file`, `cert_file` and `key_file` relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        resolve(base, &mut self.ca_file);
        resolve(base, &mut self.cert_file);
        resolve(base, &mut self.key_file);
    }
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
