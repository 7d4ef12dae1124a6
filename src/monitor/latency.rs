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

/// Histogram buckets of the end-to-end latency, seconds: from a fast path (tens of ms) to an outage (an hour).
pub const END_TO_END_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

#[cfg(test)]
mod tests {
    use super::*;

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
