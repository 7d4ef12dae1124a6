//! `retention apply --backfill`: fills the downsampling tiers from raw points
//! already stored, because a continuous query only ever aggregates the buckets
//! that end after it was created.
//!
//! Per time chunk (a whole number of every tier's buckets, aligned to the
//! epoch as InfluxDB aligns `GROUP BY time`), every continuous query of
//! `[retention]` is run once as a plain `SELECT … INTO` restricted to the
//! chunk, with the same select list, sources, condition and grouping — so a
//! backfilled bucket holds exactly what the continuous query would have
//! written. After each chunk the progress is saved to the state file, so an
//! interrupted run resumes at the first chunk not done; redoing a chunk is
//! harmless because it rewrites the same points (same series, same bucket
//! time) with the same values. Buckets that end after `until` (default: now)
//! are left to the continuous queries.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::influxql::{InfluxQl, ident};
use super::retention::{RetentionError, WantedQuery, wanted};
use crate::config::RetentionConfig;
use crate::event::Timestamp;

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Progress file; `None` runs without saving progress (nothing to resume).
    pub state_file: Option<PathBuf>,
    /// Width of one chunk; a whole number of every tier's buckets.
    pub chunk: Duration,
    /// Start (ns); default the start of the raw policy's oldest shard.
    pub from: Option<i64>,
    /// End, exclusive (ns); default now. Buckets ending after it are left out.
    pub until: Option<i64>,
    /// Stop after this many chunks in this run.
    pub max_chunks: Option<usize>,
    /// Show a progress bar with ETA on stderr.
    pub progress: bool,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            state_file: None,
            chunk: Duration::from_secs(86_400),
            from: None,
            until: None,
            max_chunks: None,
            progress: false,
        }
    }
}

/// Progress saved after each chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackfillState {
    /// Database.
    pub database: String,
    /// Policy of the raw points.
    pub raw_policy: String,
    /// The continuous queries being backfilled (their statements): another
    /// configuration is another backfill.
    pub statements: Vec<String>,
    /// Range start (ns), a chunk boundary.
    pub from: i64,
    /// Range end, exclusive (ns).
    pub until: i64,
    /// Chunk width (ns).
    pub chunk_ns: i64,
    /// Start of the first chunk not yet done.
    pub next: i64,
    /// Chunks done.
    pub chunks_done: u64,
    /// Points written into the tiers so far.
    pub points_written: u64,
}

/// The outcome of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackfillReport {
    /// Continuous queries backfilled.
    pub queries: usize,
    /// Chunks done in this run.
    pub chunks: u64,
    /// Chunks left after this run.
    pub chunks_left: u64,
    /// Tier points written in this run (as InfluxDB counts them).
    pub points_written: u64,
    /// Whether the run continued a saved state.
    pub resumed: bool,
    /// Range start (ns).
    pub from: i64,
    /// Range end (ns).
    pub until: i64,
}

impl BackfillReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        format!(
            "backfill: {} continuous queries, {} chunks ({} left), {} tier points written{}\n",
            self.queries,
            self.chunks,
            self.chunks_left,
            self.points_written,
            if self.resumed { ", resumed" } else { "" }
        )
    }
}

fn state_error(path: &std::path::Path, message: impl Into<String>) -> RetentionError {
    RetentionError::State {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn load_state(path: &std::path::Path) -> Result<Option<BackfillState>, RetentionError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| state_error(path, format!("not a backfill state ({e})"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(state_error(path, e.to_string())),
    }
}

fn save_state(path: &std::path::Path, state: &BackfillState) -> Result<(), RetentionError> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(state).map_err(|e| state_error(path, e.to_string()))?;
    std::fs::write(&tmp, text + "\n").map_err(|e| state_error(path, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| state_error(path, e.to_string()))
}

/// The start (ns) of the raw policy's oldest shard: no raw point is older.
async fn oldest_shard(db: &InfluxQl, raw_policy: &str) -> Result<Option<i64>, RetentionError> {
    let mut oldest: Option<i64> = None;
    for s in db.query("SHOW SHARDS").await? {
        if s.name.as_deref() != Some(db.database()) {
            continue;
        }
        let (Some(rp), Some(start)) = (s.column("retention_policy"), s.column("start_time")) else {
            continue;
        };
        for row in &s.values {
            if row.get(rp).and_then(Value::as_str) != Some(raw_policy) {
                continue;
            }
            let t = match row.get(start) {
                Some(Value::String(text)) => Timestamp::parse_rfc3339(text).ok().map(|t| t.0),
                Some(v) => v.as_i64(),
                None => None,
            };
            if let Some(t) = t {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
    }
    Ok(oldest)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Runs one continuous query's aggregation over `[start, end)`, returning the points written.
async fn run_chunk(
    db: &InfluxQl,
    q: &WantedQuery,
    start: i64,
    end: i64,
) -> Result<u64, RetentionError> {
    let every = nanos(q.every);
    // Only whole buckets: the one holding `end` is the continuous query's.
    let end = end - end.rem_euclid(every);
    if end <= start {
        return Ok(0);
    }
    let written = db
        .query(&q.backfill_statement(start, end))
        .await?
        .iter()
        .filter_map(|s| s.first_u64("written"))
        .sum();
    Ok(written)
}

/// Fills the tiers of `cfg` in `db`'s database from raw points in `raw_policy`, by chunks.
pub async fn backfill(
    db: &InfluxQl,
    cfg: &RetentionConfig,
    raw_policy: &str,
    opts: &BackfillOptions,
) -> Result<BackfillReport, RetentionError> {
    backfill_audited(db, cfg, raw_policy, opts, &mut |_, _| Ok(())).await
}

/// [`backfill`], calling `on_statement` after each chunk's `SELECT … INTO` with how it
/// ended (points written, or the reason); an `Err` from the hook stops the backfill.
pub async fn backfill_audited(
    db: &InfluxQl,
    cfg: &RetentionConfig,
    raw_policy: &str,
    opts: &BackfillOptions,
    on_statement: &mut super::retention::StatementHook<'_, u64>,
) -> Result<BackfillReport, RetentionError> {
    let (_, queries) = wanted(cfg, db.database(), raw_policy)?;
    let chunk_ns = nanos(opts.chunk);
    if chunk_ns <= 0 {
        return Err(RetentionError::Config(
            "backfill chunk must be above zero".into(),
        ));
    }
    if let Some(q) = queries.iter().find(|q| chunk_ns % nanos(q.every) != 0) {
        return Err(RetentionError::Config(format!(
            "backfill chunk must be a whole number of {}'s buckets",
            q.name
        )));
    }
    let statements: Vec<String> = queries.iter().map(|q| q.statement.clone()).collect();
    let saved = match &opts.state_file {
        Some(path) => load_state(path)?,
        None => None,
    };
    let mut report = BackfillReport {
        queries: queries.len(),
        ..Default::default()
    };
    let mut state = match (saved, &opts.state_file) {
        (Some(s), Some(path)) => {
            let matches = s.database == db.database()
                && s.raw_policy == raw_policy
                && s.statements == statements
                && s.chunk_ns == chunk_ns
                && opts
                    .from
                    .is_none_or(|f| f - f.rem_euclid(chunk_ns) == s.from)
                && opts.until.is_none_or(|u| u == s.until);
            if !matches {
                return Err(state_error(
                    path,
                    "belongs to a backfill of another database, configuration, range or chunk; \
                     remove it to start over",
                ));
            }
            report.resumed = true;
            s
        }
        _ => {
            let from = match opts.from {
                Some(f) => Some(f),
                None => oldest_shard(db, raw_policy).await?,
            };
            let until = opts.until.unwrap_or_else(now_ns);
            let from = from.map_or(until, |f| f - f.rem_euclid(chunk_ns));
            BackfillState {
                database: db.database().to_string(),
                raw_policy: raw_policy.to_string(),
                statements,
                from,
                until,
                chunk_ns,
                next: from,
                chunks_done: 0,
                points_written: 0,
            }
        }
    };
    report.from = state.from;
    report.until = state.until;
    let total_chunks = if state.until > state.from {
        (state.until - state.from + chunk_ns - 1) / chunk_ns
    } else {
        0
    };
    let bar = super::chunk_progress(opts.progress, total_chunks, state.chunks_done);
    while state.next < state.until {
        if opts.max_chunks.is_some_and(|m| report.chunks as usize >= m) {
            break;
        }
        let (start, end) = (state.next, (state.next + chunk_ns).min(state.until));
        let mut written = 0;
        for q in &queries {
            let ran = run_chunk(db, q, start, end).await;
            let outcome = ran.as_ref().map(|n| *n).map_err(|e| e.to_string());
            on_statement(&q.backfill_statement(start, end), outcome)
                .map_err(RetentionError::Audit)?;
            written += ran?;
        }
        state.next = start + chunk_ns;
        state.chunks_done += 1;
        state.points_written += written;
        report.chunks += 1;
        report.points_written += written;
        if let Some(path) = &opts.state_file {
            save_state(path, &state)?;
        }
        bar.set_position(state.chunks_done);
        bar.set_message(format!("{} tier points", state.points_written));
    }
    bar.finish_and_clear();
    report.chunks_left = if state.next < state.until {
        ((state.until - state.next + chunk_ns - 1) / chunk_ns) as u64
    } else {
        0
    };
    Ok(report)
}

/// Points of `field` stored in `policy` of `db`'s database, over every measurement.
pub async fn count_points(db: &InfluxQl, policy: &str, field: &str) -> Result<u64, RetentionError> {
    let series = db
        .query(&format!(
            "SELECT count({}) FROM {}.{}./.*/",
            ident(field),
            ident(db.database()),
            ident(policy)
        ))
        .await?;
    Ok(series.iter().filter_map(|s| s.first_u64("count")).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DownsampleConfig, TierAggregate, TierConfig};
    use crate::schema_tools::influxql::literal;

    #[test]
    fn backfill_statement_is_the_continuous_query_over_a_range() {
        let cfg = RetentionConfig {
            downsample: vec![DownsampleConfig {
                name: "numeric".into(),
                measurements: vec![],
                domains: vec!["sensor".into()],
                fields: vec!["value".into()],
                aggregates: vec![TierAggregate::Mean, TierAggregate::Count],
                tiers: vec![TierConfig {
                    every: Duration::from_secs(300),
                    keep: "365d".into(),
                }],
            }],
            ..Default::default()
        };
        let (_, q) = wanted(&cfg, "ha", "autogen").expect("valid");
        assert_eq!(
            q[0].backfill_statement(0, 600_000_000_000),
            format!(
                "SELECT mean(\"value\") AS \"value\", count(\"value\") AS \"value_count\" INTO \"ha\".\"ds_5m_365d\".:MEASUREMENT FROM \"ha\".\"autogen\"./.*/ WHERE domain = {} AND time >= 0 AND time < 600000000000 GROUP BY time(5m), * fill(none)",
                literal("sensor")
            )
        );
        assert!(q[0].statement.contains(
            "FROM \"ha\".\"autogen\"./.*/ WHERE domain = 'sensor' GROUP BY time(5m), * fill(none) END"
        ));
    }
}
