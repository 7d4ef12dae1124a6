//! Where a home resumes in a sharded fleet: a home new to this replica (its old
//! owner's cursor is on another volume) resumes from the store's last point of
//! that home, less `shard.resume_margin`; a local cursor older than that (the
//! home moved away and back) gives way to it. The gap from there to the first
//! live event is filled by the usual gap backfill from HA's history, so points
//! the old owner already wrote are written again with the same series and time:
//! idempotent rewrites, never a gap. See docs/fleet.md for the guarantee.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{Config, Flavor, InfluxConfig};
use crate::event::Timestamp;
use crate::sink::influxdb::{InfluxWriter, WriteError, last_point, victoria};

/// First and longest wait between attempts to read the store's last point of a home without a local cursor.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How this replica asks the store where each of its homes ended.
#[derive(Debug, Clone)]
pub struct StoreResume {
    influx: InfluxConfig,
    /// One HTTP client (TLS, credentials) for every home's question.
    writer: InfluxWriter,
    tag: String,
    margin: Duration,
}

/// How far back a VictoriaMetrics target is searched for a home's last point: longer
/// than Home Assistant's recorder keeps history by default (10 days), so a home whose last
/// point is older could not be backfilled from it anyway.
const VICTORIA_LOOKBACK: Duration = Duration::from_secs(31 * 24 * 3600);

impl StoreResume {
    /// Set up when the config is sharded, writes to InfluxDB and tags points with their
    /// instance; `Err` when the target's URL or TLS files cannot be used.
    pub fn from_config(cfg: &Config) -> Result<Option<StoreResume>, WriteError> {
        let (Some(shard), Some(influx), Some(tag)) = (
            cfg.shard.as_ref(),
            cfg.influxdb.clone(),
            cfg.effective_schema().instance_tag,
        ) else {
            return Ok(None);
        };
        Ok(Some(StoreResume {
            writer: InfluxWriter::new(&influx)?,
            influx,
            tag,
            margin: shard.resume_margin,
        }))
    }

    /// The time `home` resumes from at the latest: the store's last point of it less the
    /// margin; `None` when the store has none. Without a local cursor the store is the
    /// only record of where the home ended, so it is asked until it answers (or shutdown);
    /// with one, a failure falls back to the cursor.
    pub async fn floor(
        &self,
        home: &str,
        has_cursor: bool,
        shutdown: &CancellationToken,
    ) -> Option<Timestamp> {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        let mut failures = 0u64;
        loop {
            match self.last_point_ns(home).await {
                Ok(last) => {
                    let margin = i64::try_from(self.margin.as_nanos()).unwrap_or(i64::MAX);
                    return last.map(|t| Timestamp::from_nanos(t.saturating_sub(margin)));
                }
                Err(error) if has_cursor => {
                    tracing::warn!(message = "Cannot read the store's last point of a home; resuming from the local cursor.", home, %error);
                    return None;
                }
                Err(error) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(message = "Cannot read the store's last point of a home new to this replica; retrying until it answers.", home, %error);
                    } else {
                        tracing::debug!(message = "Store's last point still unreadable.", home, %error, failures);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// The store's last point (ns) of `home`, asked in the target's own query language:
    /// InfluxQL, or VictoriaMetrics' query API.
    async fn last_point_ns(&self, home: &str) -> Result<Option<i64>, WriteError> {
        let (writer, influx, tag) = (&self.writer, &self.influx, self.tag.as_str());
        match influx.flavor {
            Flavor::InfluxDb => last_point::last_point_ns(writer, influx, tag, home).await,
            Flavor::VictoriaMetrics => {
                victoria::last_point_ns(writer, influx, tag, home, VICTORIA_LOOKBACK).await
            }
        }
    }
}
