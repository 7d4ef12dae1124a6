//! The end-to-end latency of stored points: from the point's own timestamp
//! (HA's `time_fired`, or `last_updated` for state changes) to the moment
//! InfluxDB accepted the request that carried it.
//!
//! The timestamp is read back from the line protocol the writer sends (the last
//! field of each line, nanoseconds), so it survives the durable buffer without
//! widening its records. One observation per accepted request: the age of its
//! newest point. That is the delay the path added to the freshest data; points
//! that were old when they arrived (the initial snapshot, a backfilled gap) do
//! not swamp it, while a backlog waiting for InfluxDB shows as it should.

use super::metrics as names;

/// The largest timestamp (ns since the epoch) among `lines`; lines without a numeric last field are skipped.
pub fn newest_timestamp<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<i64> {
    lines
        .into_iter()
        .filter_map(|line| {
            let line = line.trim_end_matches('\n');
            let (_, last) = line.rsplit_once(' ')?;
            last.parse::<i64>().ok()
        })
        .max()
}

/// Records the age of the newest point among `lines` (nanosecond timestamps) in the end-to-end histogram of `sink`.
pub fn observe_accepted<'a>(sink: &'static str, lines: impl IntoIterator<Item = &'a str>) {
    let Some(newest) = newest_timestamp(lines) else {
        return;
    };
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    // A clock behind HA's gives a negative age; it is recorded as 0.
    let age = (now.saturating_sub(newest)).max(0) as f64 / 1e9;
    metrics::histogram!(names::SINK_END_TO_END_LATENCY, "sink" => sink).record(age);
}

/// Points older than the newest of their record by more than this did not arrive live with
/// it (a snapshot, a backfilled gap): they are left out of the durable latency.
const LIVE_SPAN_NS: i64 = 2_000_000_000;

/// Records, for a record just committed to the durable buffer, the age of its oldest
/// live point: the longest any event of the record waited to be safe from a crash of
/// the process. "Live" is within [`LIVE_SPAN_NS`] of the record's newest point.
pub fn observe_durable(lines: &str) {
    let Some(oldest) = oldest_live_timestamp(lines) else {
        return;
    };
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let age = (now.saturating_sub(oldest)).max(0) as f64 / 1e9;
    metrics::histogram!(names::BUFFER_DURABLE_LATENCY).record(age);
}

/// The smallest timestamp (ns) among `lines` within [`LIVE_SPAN_NS`] of their largest.
fn oldest_live_timestamp(lines: &str) -> Option<i64> {
    let stamp = |line: &str| {
        line.rsplit_once(' ')
            .and_then(|(_, t)| t.parse::<i64>().ok())
    };
    let newest = lines.lines().filter_map(stamp).max()?;
    lines
        .lines()
        .filter_map(stamp)
        .filter(|t| *t >= newest.saturating_sub(LIVE_SPAN_NS))
        .min()
}

/// Histogram buckets of the durable latency, seconds: fine around the 250 ms budget of a
/// home's stream (docs/BENCHMARKS.md), then up to an hour.
pub const DURABLE_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.5, 10.0, 60.0, 3600.0,
];

/// Histogram buckets of the end-to-end latency, seconds: from a fast path (tens of ms) to an outage (an hour).
pub const END_TO_END_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_live_point_leaves_out_what_came_from_a_backfill() {
        let lines = "m,e=a value=1 1700000010000000000\n\
                     m,e=b value=2 1700000000000000000\n\
                     m,e=c value=3 1700000009500000000\n\
                     m,e=d value=4 1700000010200000000\n\
                     broken\n";
        // 1700000000 is 10 s older than the newest: a backfilled row, not a live wait.
        assert_eq!(
            oldest_live_timestamp(lines),
            Some(1_700_000_009_500_000_000)
        );
        assert_eq!(oldest_live_timestamp("no_timestamp value=1\n"), None);
    }

    #[test]
    fn the_newest_timestamp_is_found() {
        let lines = [
            "m,t=a value=1 1700000000000000000",
            "m,t=b value=2 1700000001000000000\n",
            "m value=\"x y\" 1699999999000000000",
            "broken",
        ];
        assert_eq!(newest_timestamp(lines), Some(1_700_000_001_000_000_000));
        assert_eq!(newest_timestamp(["no_timestamp value=1"]), None);
    }
}
