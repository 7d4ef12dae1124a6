//! `[retention]`: how long raw points live and which are downsampled into coarser
//! tiers (InfluxDB 1.x, applied by `ha-ingestor retention apply`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Retention and downsampling for InfluxDB 1.x: how long raw points live, and which
/// measurements are averaged into coarser tiers kept longer (retention policies and
/// continuous queries created by `ha-ingestor retention apply`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Database to manage (default: `influxdb.database`).
    #[serde(default)]
    pub database: Option<String>,
    /// Retention policy the raw points are written to (default: `influxdb.retention_policy`, else `autogen`).
    #[serde(default)]
    pub raw_policy: Option<String>,
    /// How long raw points are kept (`30d`, `inf`); absent leaves the raw policy's duration alone.
    #[serde(default)]
    pub raw_keep: Option<String>,
    /// Downsampling rules, each for a set of measurements or domains.
    #[serde(default)]
    pub downsample: Vec<DownsampleConfig>,
}

/// One downsampling rule: which points, which fields, into which tiers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DownsampleConfig {
    /// Names the rule's continuous queries (`<name>_<every>`); letters, digits and `_`.
    pub name: String,
    /// Measurements to downsample, exact names; empty means all.
    #[serde(default)]
    pub measurements: Vec<String>,
    /// Only points whose `domain` tag is one of these; empty means every domain.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Fields aggregated per bucket (`value`; `state` for counting text states).
    #[serde(default = "default_downsample_fields")]
    pub fields: Vec<String>,
    /// Aggregates kept per field and bucket: `mean` keeps the field's name, every
    /// other one is stored as `<field>_<aggregate>` (`value_count`, `value_max`).
    /// Default `["mean"]`.
    #[serde(default = "default_downsample_aggregates")]
    pub aggregates: Vec<TierAggregate>,
    /// Tiers, finest first: each a bucket width and how long its means are kept.
    pub tiers: Vec<TierConfig>,
}

/// An aggregate a downsampling tier keeps per bucket, chosen so dashboard
/// answers can be computed exactly from the buckets (means of means are exact
/// through `sum`/`count`; daily spread through hourly `min`/`max`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TierAggregate {
    /// Mean of the bucket's values, stored under the field's own name.
    Mean,
    /// Number of points (changes) in the bucket.
    Count,
    /// Sum of the bucket's values.
    Sum,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// The bucket's first value.
    First,
    /// The bucket's last value.
    Last,
}

impl TierAggregate {
    /// The InfluxQL function name.
    pub fn as_str(self) -> &'static str {
        match self {
            TierAggregate::Mean => "mean",
            TierAggregate::Count => "count",
            TierAggregate::Sum => "sum",
            TierAggregate::Min => "min",
            TierAggregate::Max => "max",
            TierAggregate::First => "first",
            TierAggregate::Last => "last",
        }
    }

    /// The field a tier stores this aggregate of `field` under.
    pub fn output_field(self, field: &str) -> String {
        match self {
            TierAggregate::Mean => field.to_string(),
            other => format!("{field}_{}", other.as_str()),
        }
    }
}

fn default_downsample_aggregates() -> Vec<TierAggregate> {
    vec![TierAggregate::Mean]
}

/// One downsampling tier: means per `every`, kept for `keep`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// Bucket width of the means (`5m`, `1h`).
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// How long the means are kept (`365d`, `inf`).
    pub keep: String,
}

fn default_downsample_fields() -> Vec<String> {
    vec!["value".to_string()]
}

/// Parses a retention duration: `inf` (kept forever, returned as zero) or a duration such as `30d`.
pub fn parse_keep(text: &str) -> Option<Duration> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("inf") || t.eq_ignore_ascii_case("forever") {
        return Some(Duration::ZERO);
    }
    humantime::parse_duration(t).ok().filter(|d| !d.is_zero())
}

impl RetentionConfig {
    /// Checks durations and names, so `retention apply` never fails half-way on a typo.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid { key, message };
        let name_ok =
            |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if let Some(keep) = &self.raw_keep
            && parse_keep(keep).is_none()
        {
            return Err(invalid(
                "retention.raw_keep".into(),
                format!("{keep:?} is not a duration (e.g. 30d) or inf"),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, d) in self.downsample.iter().enumerate() {
            let key = format!("retention.downsample[{i}]");
            if !name_ok(&d.name) || !names.insert(d.name.as_str()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("{:?} must be unique, made of letters, digits and _", d.name),
                ));
            }
            if d.fields.is_empty() || d.tiers.is_empty() || d.aggregates.is_empty() {
                return Err(invalid(
                    key,
                    "needs at least one field, one aggregate and one tier".into(),
                ));
            }
            for (j, t) in d.tiers.iter().enumerate() {
                if t.every.as_secs() == 0 || t.every.subsec_nanos() != 0 {
                    return Err(invalid(
                        format!("{key}.tiers[{j}].every"),
                        "must be whole seconds, at least 1s".into(),
                    ));
                }
                if parse_keep(&t.keep).is_none() {
                    return Err(invalid(
                        format!("{key}.tiers[{j}].keep"),
                        format!("{:?} is not a duration (e.g. 365d) or inf", t.keep),
                    ));
                }
            }
        }
        Ok(())
    }
}
