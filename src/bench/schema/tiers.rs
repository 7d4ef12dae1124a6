//! The downsampling tiers the bench sets up in the optimized layout, and which
//! of them a dashboard's query reads.

use std::time::Duration;

use crate::config::{DownsampleConfig, RetentionConfig, TierAggregate, TierConfig, parse_keep};
use crate::schema_tools::retention::tier_policy_name;

/// The `[retention]` the bench sets up in the optimized layout: 5-minute
/// mean/count/sum and hourly ones for every numeric `value`, hourly
/// min/max/first/last of the energy meters, hourly change counts of text states.
pub fn tier_config() -> RetentionConfig {
    use TierAggregate::*;
    let tier = |secs: u64, keep: &str| TierConfig {
        every: Duration::from_secs(secs),
        keep: keep.to_string(),
    };
    RetentionConfig {
        downsample: vec![
            DownsampleConfig {
                name: "numeric".into(),
                measurements: vec![],
                domains: vec![],
                fields: vec!["value".into()],
                aggregates: vec![Mean, Count, Sum],
                tiers: vec![tier(300, "365d"), tier(3_600, "inf")],
            },
            DownsampleConfig {
                name: "counters".into(),
                measurements: vec!["sensor__energy".into()],
                domains: vec![],
                fields: vec!["value".into()],
                aggregates: vec![Min, Max, First, Last],
                tiers: vec![tier(3_600, "inf")],
            },
            DownsampleConfig {
                name: "changes".into(),
                measurements: vec![],
                domains: vec![],
                fields: vec!["state".into()],
                aggregates: vec![Count],
                tiers: vec![tier(3_600, "inf")],
            },
        ],
        ..RetentionConfig::default()
    }
}

/// The tier a dashboard reads for an aggregate over `range` in buckets of
/// `interval` (`None`: one bucket over the whole range, e.g. a count per
/// entity): for ranges of 24 h and more, the coarsest tier whose bucket
/// divides the interval (5-minute means over 24 h or 7 d: the 5-minute tier;
/// daily figures or whole-range counts: the hourly tier). `None` means raw
/// points: ranges under 24 h, or no tier whose bucket fits. Queries that are
/// not aggregates (a last value, a timeline of states) always read raw points.
/// The range's ends must fall on bucket boundaries, as dashboard ranges
/// rounded to their interval do.
pub fn route(range: Duration, interval: Option<Duration>, tiers: &[Duration]) -> Option<Duration> {
    if range < Duration::from_secs(86_400) {
        return None;
    }
    let interval = interval.unwrap_or(range).as_nanos();
    tiers
        .iter()
        .copied()
        .filter(|t| !t.is_zero() && interval.is_multiple_of(t.as_nanos()))
        .max()
}

/// Tier bucket widths of [`tier_config`], with the policy each lives in.
pub(super) fn tier_policies() -> Vec<(Duration, String)> {
    let mut out: Vec<(Duration, String)> = Vec::new();
    for rule in tier_config().downsample {
        for t in rule.tiers {
            let name = tier_policy_name(t.every, parse_keep(&t.keep).unwrap_or_default());
            if !out.iter().any(|(e, _)| *e == t.every) {
                out.push((t.every, name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::schema::queries::tier_of;

    #[test]
    fn dashboards_read_the_coarsest_tier_that_divides_their_interval() {
        let m = |n: u64| Duration::from_secs(60 * n);
        let tiers = [m(5), m(60)];
        // Under 24 h: raw points.
        assert_eq!(route(m(60 * 6), Some(m(5)), &tiers), None);
        // 5-minute means over 24 h or 7 d: the 5-minute tier.
        assert_eq!(route(m(60 * 24), Some(m(5)), &tiers), Some(m(5)));
        assert_eq!(route(m(60 * 24 * 7), Some(m(5)), &tiers), Some(m(5)));
        // Daily figures and whole-range counts: the hourly tier.
        assert_eq!(
            route(m(60 * 24 * 30), Some(m(60 * 24)), &tiers),
            Some(m(60))
        );
        assert_eq!(route(m(60 * 24 * 30), None, &tiers), Some(m(60)));
        // An interval no tier divides: raw points.
        assert_eq!(
            route(m(60 * 24), Some(Duration::from_secs(90)), &tiers),
            None
        );
        // The bench's queries.
        assert_eq!(tier_of(0, 30), None);
        assert_eq!(tier_of(1, 30).as_deref(), Some("ds_5m_365d"));
        assert_eq!(tier_of(3, 30), None);
        assert_eq!(tier_of(4, 30).as_deref(), Some("ds_1h_inf"));
        assert_eq!(tier_of(5, 30).as_deref(), Some("ds_1h_inf"));
    }

    #[test]
    fn the_bench_sets_up_the_tiers_the_example_recommends() {
        let example: crate::config::Config =
            toml::from_str(include_str!("../../../examples/retention-tiers.toml"))
                .expect("example");
        assert_eq!(example.retention.downsample, tier_config().downsample);
    }
}
