//! `[monitor]` and `[log]`: the HTTP listener (`/health`, `/ready`, `/metrics`, the
//! status page) with who may read it, and the log output.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::default_true;
use super::secret::secret;

/// The monitor HTTP listener and its access rules (`Debug` hides the tokens).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Serve `/health`, `/ready`, `/metrics`, the status page and its API.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Listen address; keep it on loopback unless a scraper needs it.
    #[serde(default = "default_monitor_listen")]
    pub listen: SocketAddr,
    /// Host names the listener answers to besides IP addresses and (on loopback or all
    /// interfaces) `localhost`; exact names, case-insensitive, the port not compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Token of the `metrics` role: `/metrics` and `/ready` (prefer `metrics_token_file`).
    #[serde(default, skip_serializing)]
    pub metrics_token: Option<String>,
    /// File holding the `metrics` token (trailing whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token_file: Option<PathBuf>,
    /// Token of the `viewer` role: every route (prefer `viewer_token_file`).
    #[serde(default, skip_serializing)]
    pub viewer_token: Option<String>,
    /// File holding the `viewer` token (trailing whitespace is trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_token_file: Option<PathBuf>,
    /// Peers (IPs or CIDRs) that alone may open the page and its API: an Ingress proxy,
    /// trusted as a viewer without token or Host check; empty means no such rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_only_from: Vec<PeerRange>,
    /// Longest wait for a request's headers (also the keep-alive idle limit).
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections served at once; a further one gets a 503 and is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_monitor_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_connections() -> usize {
    64
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: true,
            listen: default_monitor_listen(),
            allowed_hosts: Vec::new(),
            metrics_token: None,
            metrics_token_file: None,
            viewer_token: None,
            viewer_token_file: None,
            ingress_only_from: Vec::new(),
            header_timeout: default_header_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl std::fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("metrics_token", &secret(&self.metrics_token))
            .field("metrics_token_file", &self.metrics_token_file)
            .field("viewer_token", &secret(&self.viewer_token))
            .field("viewer_token_file", &self.viewer_token_file)
            .field("ingress_only_from", &self.ingress_only_from)
            .field("header_timeout", &self.header_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl MonitorConfig {
    /// Replaces the `*_token_file` settings by their contents (relative to the config's folder).
    pub(super) fn read_secrets(&mut self, base: &Path) -> Result<(), ConfigError> {
        if let Some(file) = &self.metrics_token_file {
            self.metrics_token = Some(super::read_secret(
                "monitor.metrics_token_file",
                base,
                file,
            )?);
        }
        if let Some(file) = &self.viewer_token_file {
            self.viewer_token = Some(super::read_secret("monitor.viewer_token_file", base, file)?);
        }
        Ok(())
    }

    /// Checks the tokens, names and limits, so start-up never fails on them later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        for (key, token) in [
            ("monitor.metrics_token", &self.metrics_token),
            ("monitor.viewer_token", &self.viewer_token),
        ] {
            if let Some(token) = token {
                // Never the value: only what is wrong with it.
                if token.is_empty() {
                    return Err(invalid(key, "the token is empty".into()));
                }
                if token.len() < 16 {
                    return Err(invalid(
                        key,
                        "the token is shorter than 16 characters; make a long random one \
                         (e.g. `openssl rand -hex 32`)"
                            .into(),
                    ));
                }
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid(
                        key,
                        "the token must be printable ASCII without spaces (it travels in an HTTP header)"
                            .into(),
                    ));
                }
            }
        }
        if let (Some(m), Some(v)) = (&self.metrics_token, &self.viewer_token)
            && m == v
        {
            return Err(invalid(
                "monitor.metrics_token",
                "the metrics and viewer tokens are the same; give each role its own".into(),
            ));
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            let key = format!("monitor.allowed_hosts[{i}]");
            let name = host.trim_end_matches('.');
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if !valid {
                return Err(invalid(
                    &key,
                    format!(
                        "{host:?} is not a host name: give the bare name (no scheme, port or path; \
                         ports are not compared)"
                    ),
                ));
            }
        }
        if self.header_timeout.is_zero() {
            return Err(invalid(
                "monitor.header_timeout",
                "must be longer than zero".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid(
                "monitor.max_connections",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Whether any token is set: then every route but `/health` asks for one.
    pub fn has_tokens(&self) -> bool {
        self.metrics_token.is_some() || self.viewer_token.is_some()
    }

    /// What `check` and start-up warn about: a listener others can reach with routes open to them.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        let exposed = !self.listen.ip().is_loopback();
        if exposed && !self.has_tokens() {
            if self.ingress_only_from.is_empty() {
                out.push(format!(
                    "listening on {} (not loopback) without a token: anyone who can reach it reads \
                     /metrics, /ready, the status page and /api/stats; set [monitor] \
                     viewer_token_file and metrics_token_file (see docs/security.md)",
                    self.listen
                ));
            } else {
                out.push(format!(
                    "listening on {} (not loopback) without a token: /metrics and /ready are open \
                     to anyone who can reach it (the page only to ingress_only_from); set [monitor] \
                     metrics_token_file (see docs/security.md)",
                    self.listen
                ));
            }
        }
        if self.metrics_token.is_some() && self.viewer_token.is_none() {
            out.push(
                "a metrics token is set but no viewer token: the status page, /api/stats and \
                 /alerts refuse everyone (set [monitor] viewer_token_file to open them)"
                    .to_string(),
            );
        }
        out
    }
}

/// An IP address or CIDR range (`172.30.32.2`, `10.0.0.0/8`, `fd00::/8`) a peer may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerRange {
    /// The network address (host bits cleared).
    net: IpAddr,
    /// Leading bits that must match.
    prefix: u8,
}

impl PeerRange {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for PeerRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("{text:?} is not an IP address or CIDR range (e.g. 172.30.32.2 or 10.0.0.0/8)")
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((addr, bits)) => (addr, Some(bits.parse::<u8>().map_err(|_| bad())?)),
            None => (text.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        let net = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(PeerRange { net, prefix })
    }
}

impl TryFrom<String> for PeerRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PeerRange> for String {
    fn from(range: PeerRange) -> String {
        range.to_string()
    }
}

impl std::fmt::Display for PeerRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let max = if self.net.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.net)
        } else {
            write!(f, "{}/{}", self.net, self.prefix)
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
