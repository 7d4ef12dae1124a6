//! `[buffer]` and `[file_sink]`: the durable disk buffer between the encoder and the
//! sink, and the line-protocol files written when no InfluxDB is configured.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::default_true;

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
