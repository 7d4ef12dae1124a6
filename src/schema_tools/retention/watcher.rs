//! The service's retention watch: the one part of the schema tools that `run` starts.
//!
//! Every [`WATCH_INTERVAL`] it compares the database with `[retention]` (the same
//! [`diff`](super::diff) `retention apply` shows) and publishes how many changes
//! are pending as metrics and for the status page. It never changes the database.

use std::time::Duration;

use super::{RetentionStatus, status};
use crate::config::RetentionConfig;
use crate::monitor::metrics::{RETENTION_IN_SYNC, RETENTION_PENDING_CHANGES};
use crate::schema_tools::influxql::InfluxQl;

/// The last status the service's check found (a std `Mutex`: held for a copy, never across `.await`).
static LAST_STATUS: std::sync::Mutex<Option<RetentionStatus>> = std::sync::Mutex::new(None);

/// The last status the running service's retention check published, for a status page
/// (`None` before the first check, or when `[retention]` is not used).
pub fn last_status() -> Option<RetentionStatus> {
    LAST_STATUS.lock().map(|s| *s).unwrap_or(None)
}

/// Sets the retention gauges and [`last_status`] from a status.
pub fn publish(status: &RetentionStatus) {
    if let Ok(mut last) = LAST_STATUS.lock() {
        *last = Some(*status);
    }
    metrics::gauge!(RETENTION_PENDING_CHANGES).set(status.pending as f64);
    metrics::gauge!(RETENTION_IN_SYNC).set(if status.pending == 0 { 1.0 } else { 0.0 });
}

/// How often the running service compares the database with `[retention]`.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(600);

/// The service's retention check: keeps the retention gauges current while it runs.
#[derive(Debug)]
pub struct Watcher {
    db: InfluxQl,
    cfg: RetentionConfig,
    raw_policy: String,
}

/// A watcher when `[retention]` asks for something and the sink is an InfluxDB 1.x.
pub fn watcher(cfg: &crate::config::Config) -> Option<Watcher> {
    let influx = cfg.influxdb.as_ref()?;
    let r = &cfg.retention;
    if influx.api != crate::config::InfluxApi::V1
        || (r.raw_keep.is_none() && r.downsample.is_empty())
    {
        return None;
    }
    let database = r.database.clone().or(influx.database.clone())?;
    let db = InfluxQl::new(influx).ok()?.with_database(&database);
    let raw_policy = r
        .raw_policy
        .clone()
        .or(influx.retention_policy.clone())
        .unwrap_or_else(|| "autogen".into());
    Some(Watcher {
        db,
        cfg: r.clone(),
        raw_policy,
    })
}

impl Watcher {
    /// Checks now and every [`WATCH_INTERVAL`] until `stop`; a failed check is logged once per failure streak.
    pub async fn run(self, stop: tokio_util::sync::CancellationToken) {
        let mut failing = false;
        loop {
            match status(&self.db, &self.cfg, &self.raw_policy).await {
                Ok(s) => {
                    failing = false;
                    publish(&s);
                    if s.pending > 0 {
                        tracing::info!(
                            message = "Retention differs from [retention]; run `ha-ingestor retention apply`.",
                            pending = s.pending
                        );
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(message = "Cannot check retention policies.", %error);
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            }
        }
    }
}
