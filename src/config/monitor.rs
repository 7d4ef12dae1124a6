//! `[monitor]` and `[log]`: the HTTP listener (`/health`, `/ready`, `/metrics`) and
//! the log output.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::default_true;

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
