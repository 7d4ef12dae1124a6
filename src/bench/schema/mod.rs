//! `ha-ingestor schema bench`: the same generated history in each schema mode, loaded into a real `influxd`, queried as HA dashboards query it.
//!
//! 1. A deterministic history (seeded) of a typical home — temperature,
//!    humidity, power, energy, battery and signal sensors every 30–300 s,
//!    motion/door sensors, lights and switches a few to a few dozen times a
//!    day, thermostats — is generated as [`Event`]s in time order.
//! 2. For each mode, a fresh `influxd` (free loopback port, data in a temp
//!    dir; the launcher of [`crate::bench::influxd`]) is started; every event goes through the real [`Pipeline::process`]
//!    and the lines are written in batches of 5 000; the cache is flushed and
//!    the data dir measured.
//! 3. Each query ([`QUERIES`]), written the idiomatic way for that layout, is
//!    run once to warm up and then `runs` times; the median time and the
//!    number of result rows are reported, plus series, measurements, field
//!    keys, points and disk bytes per mode.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::bench::influxd::{Influxd, InfluxdOptions, dir_bytes, influxd_binary};
use crate::config::{
    DownsampleConfig, FilterConfig, InfluxConfig, RetentionConfig, SchemaConfig, SchemaMode,
    TierAggregate, TierConfig, parse_keep,
};
use crate::event::Event;
use crate::pipeline::{Outcome, Pipeline};
use crate::schema::backfill::{self, BackfillOptions};
use crate::schema::influxql::{InfluxQl, ident};
use crate::schema::retention::{self, tier_policy_name};

/// Lines per write request: InfluxDB's recommended batch size.
const BATCH_LINES: usize = 5_000;
/// The history ends here (2026-11-01T00:00:00Z), so every run writes the same points.
const END_NS: i64 = 1_793_491_200_000_000_000;
/// One day in nanoseconds.
const DAY_NS: i64 = 86_400_000_000_000;
/// The database the bench writes into.
const DB: &str = "bench";
/// Times in replies in milliseconds, as Grafana asks for them (`epoch=ms`).
const EPOCH: &str = "ms";
/// Nanoseconds in one [`EPOCH`] unit.
const EPOCH_NS: i64 = 1_000_000;

/// What to generate and how often to run each query.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Entities in the generated home.
    pub entities: usize,
    /// Days of history, ending at a fixed date.
    pub days: u32,
    /// Timed runs per query (after one warm-up run); the median is reported.
    pub runs: usize,
    /// Seed of the generator: the same seed gives the same history.
    pub seed: u64,
    /// The `influxd` binary (default: from `PATH`, else `/usr/bin/influxd`).
    pub influxd: Option<PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            entities: 200,
            days: 30,
            runs: 5,
            seed: 7,
            influxd: None,
        }
    }
}

/// The figures of one mode's database.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// `homeassistant` or `optimized`.
    pub mode: String,
    /// Points written (lines produced by the pipeline).
    pub points: u64,
    /// Bytes of line protocol written.
    pub line_bytes: u64,
    /// Seconds to encode and write everything.
    pub load_seconds: f64,
    /// Distinct series keys in the database (`SHOW SERIES`).
    pub series: u64,
    /// Series × fields actually stored: the keys of InfluxDB's TSM files, what storage and index memory scale with.
    pub field_series: u64,
    /// Measurements in the database.
    pub measurements: u64,
    /// Field keys, summed over measurements.
    pub field_keys: u64,
    /// Bytes of the data and WAL directories after the cache was flushed to TSM files.
    pub disk_bytes: u64,
}

/// One query in one mode.
#[derive(Debug, Clone, Serialize)]
pub struct QueryRun {
    /// The InfluxQL text.
    pub query: String,
    /// Median of the timed runs, milliseconds.
    pub median_ms: f64,
    /// Every timed run, milliseconds.
    pub runs_ms: Vec<f64>,
    /// Result rows (values over every returned series; for the top-10, entities ranked).
    pub rows: usize,
    /// Stored field values the query has to read (a `count()` over its fields, sources
    /// and range); `None` for the last value, which reads one block whatever is stored.
    pub values_read: Option<u64>,
}

/// One dashboard query in every layout.
#[derive(Debug, Clone, Serialize)]
pub struct QueryRow {
    /// Short name of the query.
    pub name: String,
    /// The downsampling tier the optimized layout with tiers reads (`raw` for raw points), by [`route`].
    pub tier: String,
    /// The `homeassistant` layout.
    pub homeassistant: QueryRun,
    /// The `optimized` layout, raw points only.
    pub optimized: QueryRun,
    /// The `optimized` layout reading the tier a dashboard would use for this range.
    pub optimized_tiers: QueryRun,
    /// `homeassistant` median / `optimized` median.
    pub speedup: f64,
    /// `homeassistant` median / `optimized_tiers` median.
    pub speedup_tiers: f64,
    /// HA's answer stored as plain points and read back: the least any layout can cost.
    pub stored_answer: QueryRun,
    /// `homeassistant` median / `stored_answer` median: the most any layout can gain.
    pub bound: f64,
    /// Whether the optimized raw answer equals HA's (rows and values, floats within 1e-9 relative).
    pub equal: bool,
    /// Whether the answer from the tiers equals HA's.
    pub equal_tiers: bool,
    /// The first difference found, if any.
    pub difference: Option<String>,
}

/// The one-off backfill of the tiers from the loaded raw points.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillFigures {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// CPU seconds `influxd` spent on it (user + system, from `/proc`).
    pub influxd_cpu_seconds: Option<f64>,
    /// Chunks (one day each).
    pub chunks: u64,
    /// Points written into the tiers.
    pub points: u64,
    /// Bytes on disk per tier policy after compaction.
    pub tier_disk_bytes: Vec<(String, u64)>,
}

/// The whole comparison, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Entities generated.
    pub entities: usize,
    /// Days of history.
    pub days: u32,
    /// Seed used.
    pub seed: u64,
    /// Timed runs per query.
    pub runs: usize,
    /// `state_changed` events generated.
    pub events: u64,
    /// Figures per layout: homeassistant, optimized (raw), optimized + tiers.
    pub modes: Vec<ModeReport>,
    /// The tiers' backfill.
    pub backfill: BackfillFigures,
    /// Per query, every layout side by side.
    pub queries: Vec<QueryRow>,
    /// Median over the queries of the per-query speedups (optimized raw).
    pub median_speedup: f64,
    /// Sum of `homeassistant` medians / sum of `optimized` medians.
    pub total_speedup: f64,
    /// Median over the queries of the per-query speedups (optimized with tiers).
    pub median_speedup_tiers: f64,
    /// Sum of `homeassistant` medians / sum of `optimized_tiers` medians.
    pub total_speedup_tiers: f64,
    /// Median over the queries of [`QueryRow::bound`]: the most any layout could reach.
    pub median_bound: f64,
}

impl BenchReport {
    /// Whether every layout gave the same answer to every query.
    pub fn all_equal(&self) -> bool {
        self.queries.iter().all(|q| q.equal && q.equal_tiers)
    }
}

// ---------------------------------------------------------------------------
// The generated home.

/// The history of [`BenchOptions`]: [`crate::simulator::home_history`]'s home of
/// `entities` entities over the `days` before [`END_NS`], each event handed to `each`.
fn generate(
    opts: &BenchOptions,
    each: impl FnMut(&Event) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let start = END_NS - i64::from(opts.days) * DAY_NS;
    crate::simulator::home_history(opts.entities, opts.seed, start, END_NS, each)
}

// ---------------------------------------------------------------------------
// Asking the servers.

/// A query against [`DB`] with times in [`EPOCH`] units; an error inside the reply fails it.
async fn query(server: &Influxd, q: &str) -> anyhow::Result<Value> {
    Ok(query_timed(server, q).await?.0)
}

/// As [`query`], with the milliseconds until the reply's last byte arrived: what
/// influxd and the round trip cost, not the parsing of the reply here.
async fn query_timed(server: &Influxd, q: &str) -> anyhow::Result<(Value, f64)> {
    let (json, ms) = server.query_timed(q, EPOCH).await?;
    if json.pointer("/results/0/error").is_some() {
        bail!("query {q} failed: {json}");
    }
    Ok((json, ms))
}

// ---------------------------------------------------------------------------
// The downsampling tiers.

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
fn tier_policies() -> Vec<(Duration, String)> {
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

// ---------------------------------------------------------------------------
// The queries.

/// The dashboard queries, by name.
pub const QUERIES: [&str; 6] = [
    "last value of one sensor",
    "5-min mean of one sensor, 24 h",
    "5-min mean of one sensor, 7 d",
    "all lights' states, 24 h",
    "energy per day (all meters), 30 d",
    "top 10 entities by changes, 30 d",
];

/// What the data is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// HA's layout, raw points.
    Homeassistant,
    /// The optimized layout, raw points.
    Optimized,
    /// The optimized layout, reading the tier [`route`] picks.
    Tiers,
}

const LAYOUTS: [Layout; 3] = [Layout::Homeassistant, Layout::Optimized, Layout::Tiers];

/// Query `i`'s range and bucket (`None`: whole range); `None` for queries that are not aggregates.
fn shape(i: usize, days: u32) -> Option<(Duration, Option<Duration>)> {
    let day = Duration::from_secs(86_400);
    let five = Duration::from_secs(300);
    match i {
        1 => Some((day, Some(five))),
        2 => Some((day * 7, Some(five))),
        4 => Some((day * days, Some(day))),
        5 => Some((day * days, None)),
        _ => None,
    }
}

/// The policy query `i` reads in the tiered layout (`None`: raw points).
fn tier_of(i: usize, days: u32) -> Option<String> {
    let tiers = tier_policies();
    let widths: Vec<Duration> = tiers.iter().map(|(e, _)| *e).collect();
    let (range, interval) = shape(i, days)?;
    let every = route(range, interval, &widths)?;
    tiers.into_iter().find(|(e, _)| *e == every).map(|(_, n)| n)
}

/// The InfluxQL of query `i` for `layout`, over the history ending at [`END_NS`].
fn query_text(i: usize, layout: Layout, days: u32) -> String {
    let since = |d: i64| format!("time >= {} AND time < {END_NS}", END_NS - d * DAY_NS);
    let all = i64::from(days);
    if layout == Layout::Tiers
        && let Some(rp) = tier_of(i, days)
    {
        let from = |m: &str| format!("\"{DB}\".\"{rp}\".{m}");
        match i {
            // Buckets as wide as the tier's: each stored point is the bucket's
            // mean, stamped at the bucket's start like `GROUP BY time(5m)`, so
            // the panel reads them as they are. (Wider buckets would need the
            // exact mean of means, `sum("value_sum") / sum("value_count")`.)
            1 | 2 => {
                return format!(
                    "SELECT \"value\" AS \"mean\" FROM {} WHERE \"entity_id\" = 'sensor.temperature_0' AND {}",
                    from("\"sensor__temperature\""),
                    since(if i == 1 { 1 } else { 7 })
                );
            }
            // A day's spread is the largest hourly max minus the smallest hourly min.
            4 => {
                return format!(
                    "SELECT sum(\"used\") FROM (SELECT max(\"value_max\") - min(\"value_min\") AS \"used\" FROM {} WHERE {} GROUP BY time(1d), \"entity_id\") WHERE {} GROUP BY time(1d) fill(none)",
                    from("\"sensor__energy\""),
                    since(all),
                    since(all)
                );
            }
            5 => {
                return format!(
                    "SELECT sum(\"value_count\"), sum(\"state_count\") FROM {} WHERE {} GROUP BY \"entity_id\"",
                    from("/.*/"),
                    since(all)
                );
            }
            _ => {}
        }
    }
    let ha = layout == Layout::Homeassistant;
    let (temp_m, temp_id) = if ha {
        ("\"°C\"", "'temperature_0'")
    } else {
        ("\"sensor__temperature\"", "'sensor.temperature_0'")
    };
    match i {
        0 => format!("SELECT last(\"value\") FROM {temp_m} WHERE \"entity_id\" = {temp_id}"),
        1 | 2 => format!(
            "SELECT mean(\"value\") FROM {temp_m} WHERE \"entity_id\" = {temp_id} AND {} GROUP BY time(5m) fill(none)",
            since(if i == 1 { 1 } else { 7 })
        ),
        3 if ha => format!("SELECT \"state\" FROM /^light\\./ WHERE {}", since(1)),
        3 => format!(
            "SELECT \"state\" FROM \"light\" WHERE {} GROUP BY \"entity_id\"",
            since(1)
        ),
        4 => format!(
            "SELECT sum(\"used\") FROM (SELECT spread(\"value\") AS \"used\" FROM {} WHERE {} GROUP BY time(1d), \"entity_id\") WHERE {} GROUP BY time(1d) fill(none)",
            if ha { "\"kWh\"" } else { "\"sensor__energy\"" },
            since(all),
            since(all)
        ),
        _ => format!(
            "SELECT count(\"value\"), count(\"state\") FROM /.*/ WHERE {} GROUP BY \"entity_id\"",
            since(all)
        ),
    }
}

/// A `count()` over the fields, sources and range query `i` reads in `layout`:
/// how many stored values it has to decode.
fn values_read_text(i: usize, layout: Layout, days: u32) -> Option<String> {
    let since = |d: i64| format!("time >= {} AND time < {END_NS}", END_NS - d * DAY_NS);
    let all = i64::from(days);
    let ha = layout == Layout::Homeassistant;
    let tier = match layout {
        Layout::Tiers => tier_of(i, days),
        _ => None,
    };
    let from = |m: &str| match &tier {
        Some(rp) => format!("\"{DB}\".\"{rp}\".{m}"),
        None => m.to_string(),
    };
    Some(match i {
        1 | 2 => {
            let (m, id) = if ha {
                ("\"°C\"", "'temperature_0'")
            } else {
                ("\"sensor__temperature\"", "'sensor.temperature_0'")
            };
            format!(
                "SELECT count(\"value\") FROM {} WHERE \"entity_id\" = {id} AND {}",
                from(m),
                since(if i == 1 { 1 } else { 7 })
            )
        }
        3 if ha => format!(
            "SELECT count(\"state\") FROM /^light\\./ WHERE {}",
            since(1)
        ),
        3 => format!("SELECT count(\"state\") FROM \"light\" WHERE {}", since(1)),
        4 if tier.is_some() => format!(
            "SELECT count(\"value_max\"), count(\"value_min\") FROM {} WHERE {}",
            from("\"sensor__energy\""),
            since(all)
        ),
        4 => format!(
            "SELECT count(\"value\") FROM {} WHERE {}",
            if ha { "\"kWh\"" } else { "\"sensor__energy\"" },
            since(all)
        ),
        5 if tier.is_some() => format!(
            "SELECT count(\"value_count\"), count(\"state_count\") FROM {} WHERE {}",
            from("/.*/"),
            since(all)
        ),
        5 => format!(
            "SELECT count(\"value\"), count(\"state\") FROM /.*/ WHERE {}",
            since(all)
        ),
        _ => return None,
    })
}

/// The sum of every count in a reply.
fn sum_of_counts(reply: &Value) -> u64 {
    series_of(reply)
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .flat_map(|row| {
            row.as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .skip(1)
        })
        .filter_map(|v| v.as_u64())
        .sum()
}

fn series_of(reply: &Value) -> &[Value] {
    reply
        .pointer("/results/0/series")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Rows of a reply: values over every series; for the top-10 query, the number of entities ranked.
fn rows_of(i: usize, layout: Layout, reply: &Value) -> usize {
    if i != 5 {
        return values_in(reply);
    }
    top_entities(layout, series_of(reply)).len()
}

/// An entity's name without its domain: HA's layout tags `light_0`, names
/// measurements `light.light_0`; the optimized layout tags `light.light_0`.
fn object_id(name: &str) -> &str {
    name.split_once('.').map_or(name, |(_, o)| o)
}

/// The ten entities with the most points. In HA's layout a point has `value`,
/// `state` or both (on/off), so an entity's count is the larger of the two; in
/// the optimized layout exactly one, so it is their sum.
fn top_entities(layout: Layout, series: &[Value]) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for s in series {
        let name = object_id(
            s.pointer("/tags/entity_id")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
        .to_string();
        for row in s["values"].as_array().into_iter().flatten() {
            let v = row.get(1).and_then(Value::as_u64).unwrap_or(0);
            let st = row.get(2).and_then(Value::as_u64).unwrap_or(0);
            let n = if layout == Layout::Homeassistant {
                v.max(st)
            } else {
                v + st
            };
            counts.push((name.clone(), n));
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(10);
    counts
}

/// One row of an answer in a form comparable across layouts: entity (empty
/// for single-series answers), time, then the values.
type Row = (String, i64, Vec<Value>);

/// The answer of query `i` in a form comparable across layouts.
fn canonical(i: usize, layout: Layout, reply: &Value) -> Vec<Row> {
    let series = series_of(reply);
    if i == 5 {
        return top_entities(layout, series)
            .into_iter()
            .map(|(name, n)| (name, 0, vec![Value::from(n)]))
            .collect();
    }
    let mut rows = Vec::new();
    for s in series {
        // All lights: HA's layout has one measurement per light, the optimized one a tag.
        let entity = if i == 3 {
            let name = if layout == Layout::Homeassistant {
                s["name"].as_str()
            } else {
                s.pointer("/tags/entity_id").and_then(Value::as_str)
            };
            object_id(name.unwrap_or("")).to_string()
        } else {
            String::new()
        };
        for row in s["values"].as_array().into_iter().flatten() {
            let Some(cells) = row.as_array() else {
                continue;
            };
            let time = cells.first().and_then(Value::as_i64).unwrap_or(0);
            rows.push((
                entity.clone(),
                time,
                cells.iter().skip(1).cloned().collect(),
            ));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    rows
}

/// Whether two values are the same answer: numbers within 1e-9 (relative), anything else exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// The first difference between two answers, if any.
fn difference(a: &[Row], b: &[Row]) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} rows vs {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(b) {
        let equal = x.0 == y.0
            && x.1 == y.1
            && x.2.len() == y.2.len()
            && x.2.iter().zip(&y.2).all(|(p, q)| same_value(p, q));
        if !equal {
            return Some(format!("{x:?} vs {y:?}"));
        }
    }
    None
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Series, series × fields and field keys with data in `from` (`/.*/` or `"db"."rp"./.*/`).
async fn keys_in(server: &Influxd, from: &str) -> anyhow::Result<(u64, u64, u64)> {
    let counts = query(server, &format!("SELECT count(*) FROM {from} GROUP BY *")).await?;
    let mut series = 0;
    let mut field_series = 0;
    let mut fields = std::collections::HashSet::new();
    for s in series_of(&counts) {
        let name = s["name"].as_str().unwrap_or("").to_string();
        let columns: Vec<String> = s["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c.as_str().unwrap_or("").to_string())
            .collect();
        let mut any = false;
        for row in s["values"].as_array().into_iter().flatten() {
            for (col, v) in columns
                .iter()
                .zip(row.as_array().into_iter().flatten())
                .skip(1)
            {
                if v.as_u64().is_some_and(|n| n > 0) {
                    any = true;
                    field_series += 1;
                    let field = col.strip_prefix("count_").unwrap_or(col);
                    fields.insert((name.clone(), field.to_string()));
                }
            }
        }
        if any {
            series += 1;
        }
    }
    Ok((series, field_series, fields.len() as u64))
}

/// Loads the history in one mode into a fresh server and measures the database.
async fn load_mode(
    opts: &BenchOptions,
    binary: &Path,
    mode: SchemaMode,
) -> anyhow::Result<(Influxd, ModeReport, u64)> {
    let label = match mode {
        SchemaMode::Homeassistant => "homeassistant",
        SchemaMode::Optimized => "optimized",
    };
    let server = Influxd::start(
        DB,
        &InfluxdOptions {
            binary: Some(binary.to_path_buf()),
            settle_quickly: true,
            timeout: Duration::from_secs(300),
            label: format!("schema-bench-{label}"),
            ..InfluxdOptions::default()
        },
    )
    .await?;
    let schema = SchemaConfig {
        mode,
        ..SchemaConfig::default()
    };
    let started = Instant::now();
    // Events are generated and encoded on a blocking thread while batches are written here.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(2);
    let gen_opts = opts.clone();
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64, u64)> {
        let mut pipeline = Pipeline::new(&FilterConfig::default(), &schema)?;
        let mut body = String::with_capacity(BATCH_LINES * 300);
        let mut lines = 0usize;
        let mut points = 0u64;
        let mut bytes = 0u64;
        let events = generate(&gen_opts, |event| {
            if let Outcome::Points(n) = pipeline.process(event, &mut body) {
                lines += n;
                points += n as u64;
            }
            if lines >= BATCH_LINES {
                bytes += body.len() as u64;
                let batch = std::mem::replace(&mut body, String::with_capacity(BATCH_LINES * 300));
                tx.blocking_send(batch)
                    .map_err(|_| anyhow::anyhow!("the writer stopped"))?;
                lines = 0;
            }
            Ok(())
        })?;
        if !body.is_empty() {
            bytes += body.len() as u64;
            tx.blocking_send(body)
                .map_err(|_| anyhow::anyhow!("the writer stopped"))?;
        }
        Ok((events, points, bytes))
    });
    while let Some(batch) = rx.recv().await {
        server.write(DB, batch).await?;
    }
    let (events, points, bytes) = producer.await.context("the generator thread")??;
    let load_seconds = started.elapsed().as_secs_f64();
    let disk_bytes = server.settled_disk_bytes().await;

    // Distinct series keys (the cardinality commands count per shard).
    let sk = query(&server, "SHOW SERIES").await?;
    let series = sk
        .pointer("/results/0/series/0/values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|row| row.get(0).and_then(Value::as_str))
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    // (series, field) pairs with data: one count column per field of each series.
    let (_, field_series, _) = keys_in(&server, "/.*/").await?;
    let ms = query(&server, "SHOW MEASUREMENTS").await?;
    let measurements = ms
        .pointer("/results/0/series/0/values")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as u64;
    let fk = query(&server, "SHOW FIELD KEYS").await?;
    let field_keys: u64 = fk
        .pointer("/results/0/series")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| s["values"].as_array().map_or(0, Vec::len) as u64)
        .sum();
    Ok((
        server,
        ModeReport {
            mode: label.to_string(),
            points,
            line_bytes: bytes,
            load_seconds,
            series,
            field_series,
            measurements,
            field_keys,
            disk_bytes,
        },
        events,
    ))
}

/// Sets up the tiers in the optimized server (`retention apply`) and backfills
/// them from its raw points; returns the figures and the layout's report.
async fn add_tiers(
    opts: &BenchOptions,
    server: &Influxd,
    raw: &ModeReport,
) -> anyhow::Result<(BackfillFigures, ModeReport)> {
    let influx: InfluxConfig =
        toml::from_str(&format!("url = {:?}\ndatabase = {DB:?}\n", server.url()))
            .context("bench InfluxDB config")?;
    let db = InfluxQl::new(&influx)?;
    let cfg = tier_config();
    let diff = retention::diff(&db, &cfg, "autogen").await?;
    retention::apply(&db, &diff).await?;
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let r = backfill::backfill(
        &db,
        &cfg,
        "autogen",
        &BackfillOptions {
            from: Some(END_NS - i64::from(opts.days) * DAY_NS),
            until: Some(END_NS),
            ..BackfillOptions::default()
        },
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let influxd_cpu_seconds = cpu_before.zip(server.cpu_seconds()).map(|(a, b)| b - a);
    let disk_bytes = server.settled_disk_bytes().await;
    let mut tiers = ModeReport {
        mode: "optimized + tiers".into(),
        points: raw.points + r.points_written,
        line_bytes: raw.line_bytes,
        load_seconds: raw.load_seconds + seconds,
        disk_bytes,
        ..raw.clone()
    };
    let mut tier_disk_bytes = Vec::new();
    for (_, rp) in tier_policies() {
        let (series, field_series, field_keys) =
            keys_in(server, &format!("\"{DB}\".\"{rp}\"./.*/")).await?;
        tiers.series += series;
        tiers.field_series += field_series;
        tiers.field_keys += field_keys;
        tier_disk_bytes.push((
            rp.clone(),
            dir_bytes(&server.dir().join("data").join(DB).join(&rp)),
        ));
    }
    Ok((
        BackfillFigures {
            seconds,
            influxd_cpu_seconds,
            chunks: r.chunks,
            points: r.points_written,
            tier_disk_bytes,
        },
        tiers,
    ))
}

/// Times one query once; checks it still gives `rows` rows (`count` counts them).
async fn timed(
    server: &Influxd,
    q: &str,
    rows: usize,
    count: impl Fn(&Value) -> usize,
) -> anyhow::Result<f64> {
    let (reply, ms) = query_timed(server, q).await?;
    if count(&reply) != rows {
        bail!("query {q} gave a different result on a repeat");
    }
    Ok(ms)
}

/// Values over every series of a reply.
fn values_in(reply: &Value) -> usize {
    series_of(reply)
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum()
}

/// The database holding each query's answer as plain points: the floor.
const ANSWERS_DB: &str = "answers";

/// Stores HA's reply to query `i` as points (one per row, the series' name or
/// `entity_id` tag as an `answer` tag, the columns as fields) in [`ANSWERS_DB`],
/// and returns the query that reads it back: the least work influxd can do to
/// hand out that answer — what a layout holding the answer ready-made would
/// cost. No layout can be faster than this, so HA's time over it bounds the
/// speedup any schema can give on that query.
async fn store_answer(
    server: &Influxd,
    i: usize,
    reply: &Value,
) -> anyhow::Result<(String, usize)> {
    use crate::sink::line_protocol::LineBuilder;
    let measurement = format!("q{i}");
    let mut body = String::new();
    let mut rows = 0;
    let mut columns: Vec<&str> = Vec::new();
    let series = series_of(reply);
    for s in series {
        let tag = s
            .pointer("/tags/entity_id")
            .and_then(Value::as_str)
            .or_else(|| s["name"].as_str())
            .unwrap_or("");
        let names: Vec<&str> = s["columns"]
            .as_array()
            .map(|c| c.iter().skip(1).filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for name in &names {
            if !columns.contains(name) {
                columns.push(name);
            }
        }
        for row in s["values"].as_array().into_iter().flatten() {
            let Some(cells) = row.as_array() else {
                continue;
            };
            let time = cells.first().and_then(Value::as_i64).unwrap_or(0);
            let mut line = LineBuilder::new(&mut body, &measurement);
            line.tag("answer", tag);
            let mut fields = line.fields();
            for (name, v) in names.iter().zip(cells.iter().skip(1)) {
                match v {
                    Value::Number(n) => {
                        fields.float(name, n.as_f64().unwrap_or(f64::NAN));
                    }
                    Value::String(t) => {
                        fields.string(name, t);
                    }
                    Value::Bool(b) => {
                        fields.boolean(name, *b);
                    }
                    _ => {}
                }
            }
            // Reply times are in `EPOCH` units; lines take nanoseconds.
            if fields.finish(time.saturating_mul(EPOCH_NS)) {
                rows += 1;
            }
        }
    }
    if !body.is_empty() {
        server.write(ANSWERS_DB, body).await?;
    }
    let fields = if columns.is_empty() {
        "*".to_string()
    } else {
        columns
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let q = format!(
        "SELECT {fields} FROM {}.\"autogen\".{} GROUP BY \"answer\"",
        ident(ANSWERS_DB),
        ident(&measurement)
    );
    Ok((q, rows))
}

/// Runs the whole comparison: both modes loaded, one after the other, into
/// their own servers, and the optimized one's tiers backfilled; then each
/// query's timed runs rotate between the layouts (and which goes first), so
/// load from elsewhere on the machine hits all alike. Every layout's answer is
/// compared with HA's, values included.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    if opts.entities == 0 || opts.days == 0 {
        bail!("--entities and --days must be above zero");
    }
    let binary = influxd_binary(opts.influxd.as_deref()).map_err(|_| {
        anyhow::anyhow!(
            "influxd not found on PATH (schema bench needs InfluxDB 1.x's influxd; or pass --influxd)"
        )
    })?;
    let (ha_server, ha, events) = load_mode(opts, &binary, SchemaMode::Homeassistant).await?;
    let (opt_server, opt, _) = load_mode(opts, &binary, SchemaMode::Optimized).await?;
    let (backfill, tiers) = add_tiers(opts, &opt_server, &opt).await?;
    let servers = [&ha_server, &opt_server, &opt_server];
    opt_server.create_database(ANSWERS_DB).await?;
    let mut queries = Vec::with_capacity(QUERIES.len());
    for (i, name) in QUERIES.iter().enumerate() {
        let mut texts = Vec::with_capacity(3);
        let mut rows = Vec::with_capacity(3);
        let mut answers = Vec::with_capacity(3);
        let mut ha_reply = Value::Null;
        for (layout, server) in LAYOUTS.into_iter().zip(servers) {
            let q = query_text(i, layout, opts.days);
            let warm = query(server, &q).await?;
            rows.push(rows_of(i, layout, &warm));
            answers.push(canonical(i, layout, &warm));
            texts.push(q);
            if layout == Layout::Homeassistant {
                ha_reply = warm;
            }
        }
        let (floor_text, floor_rows) = store_answer(&opt_server, i, &ha_reply).await?;
        // Warm the stored answer like the layouts' queries.
        query(&opt_server, &floor_text).await?;
        let mut values_read = Vec::with_capacity(3);
        for (layout, server) in LAYOUTS.into_iter().zip(servers) {
            values_read.push(match values_read_text(i, layout, opts.days) {
                Some(q) => Some(sum_of_counts(&query(server, &q).await?)),
                None => None,
            });
        }
        let diff_raw = difference(&answers[0], &answers[1]);
        let diff_tiers = difference(&answers[0], &answers[2]);
        let mut times: [Vec<f64>; 3] = Default::default();
        let mut floor = Vec::with_capacity(opts.runs);
        for run in 0..opts.runs.max(1) {
            for k in 0..4 {
                let m = (run + k) % 4;
                if m == 3 {
                    floor.push(timed(&opt_server, &floor_text, floor_rows, values_in).await?);
                    continue;
                }
                let layout = LAYOUTS[m];
                let count = |r: &Value| rows_of(i, layout, r);
                times[m].push(timed(servers[m], &texts[m], rows[m], count).await?);
            }
        }
        let stored_answer = QueryRun {
            query: floor_text,
            median_ms: median(&floor),
            runs_ms: floor,
            rows: floor_rows,
            values_read: Some(floor_rows as u64),
        };
        let mut out = times.into_iter().zip(texts).zip(rows).zip(values_read).map(
            |(((t, q), rows), values_read)| QueryRun {
                query: q,
                median_ms: median(&t),
                runs_ms: t,
                rows,
                values_read,
            },
        );
        let (Some(h), Some(o), Some(t)) = (out.next(), out.next(), out.next()) else {
            bail!("three layouts expected");
        };
        queries.push(QueryRow {
            name: name.to_string(),
            tier: tier_of(i, opts.days).unwrap_or_else(|| "raw".into()),
            speedup: h.median_ms / o.median_ms.max(1e-6),
            speedup_tiers: h.median_ms / t.median_ms.max(1e-6),
            bound: h.median_ms / stored_answer.median_ms.max(1e-6),
            stored_answer,
            equal: diff_raw.is_none(),
            equal_tiers: diff_tiers.is_none(),
            difference: diff_raw
                .map(|d| format!("optimized: {d}"))
                .or(diff_tiers.map(|d| format!("tiers: {d}"))),
            homeassistant: h,
            optimized: o,
            optimized_tiers: t,
        });
    }
    drop(ha_server);
    drop(opt_server);
    let ratio = |f: &dyn Fn(&QueryRow) -> f64| -> f64 {
        let v: Vec<f64> = queries.iter().map(f).collect();
        median(&v)
    };
    let total = |f: &dyn Fn(&QueryRow) -> f64| -> f64 { queries.iter().map(f).sum() };
    let total_ha = total(&|q| q.homeassistant.median_ms);
    Ok(BenchReport {
        entities: opts.entities,
        days: opts.days,
        seed: opts.seed,
        runs: opts.runs,
        events,
        modes: vec![ha, opt, tiers],
        backfill,
        median_speedup: ratio(&|q| q.speedup),
        total_speedup: total_ha / total(&|q| q.optimized.median_ms).max(1e-6),
        median_speedup_tiers: ratio(&|q| q.speedup_tiers),
        total_speedup_tiers: total_ha / total(&|q| q.optimized_tiers.median_ms).max(1e-6),
        median_bound: ratio(&|q| q.bound),
        queries,
    })
}

/// The report as a Markdown-friendly text table.
pub fn render_text(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "schema bench: {} entities x {} days, seed {}, {} state changes, median of {} runs after a warm-up\n",
        r.entities, r.days, r.seed, r.events, r.runs
    );
    let _ = writeln!(
        s,
        "| query | tier read | homeassistant ms | optimized raw ms | optimized + tiers ms | stored answer ms | speedup raw | speedup tiers | bound | rows (ha / raw / tiers) | values read (ha / raw / tiers) | same answer |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
    );
    for q in &r.queries {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2}x | {:.2}x | {} / {} / {} | {} | {} |",
            q.name,
            q.tier,
            q.homeassistant.median_ms,
            q.optimized.median_ms,
            q.optimized_tiers.median_ms,
            q.stored_answer.median_ms,
            q.speedup,
            q.speedup_tiers,
            q.bound,
            q.homeassistant.rows,
            q.optimized.rows,
            q.optimized_tiers.rows,
            [&q.homeassistant, &q.optimized, &q.optimized_tiers]
                .map(|r| r.values_read.map_or("–".to_string(), |n| n.to_string()))
                .join(" / "),
            match (q.equal, q.equal_tiers) {
                (true, true) => "yes".to_string(),
                _ => format!("NO: {}", q.difference.as_deref().unwrap_or("")),
            }
        );
    }
    let _ = writeln!(
        s,
        "\nmedian speedup: optimized raw {:.2}x, optimized + tiers {:.2}x; total time speedup: {:.2}x, {:.2}x\n\
         bound (HA's time over reading its answer stored ready-made): median {:.2}x\n",
        r.median_speedup,
        r.median_speedup_tiers,
        r.total_speedup,
        r.total_speedup_tiers,
        r.median_bound
    );
    let _ = writeln!(
        s,
        "| mode | points | line bytes | load s | series | series x fields | measurements | field keys | disk bytes |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &r.modes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
            m.mode,
            m.points,
            m.line_bytes,
            m.load_seconds,
            m.series,
            m.field_series,
            m.measurements,
            m.field_keys,
            m.disk_bytes
        );
    }
    let b = &r.backfill;
    let _ = writeln!(
        s,
        "\ntiers backfill: {:.1} s wall, {} influxd CPU s, {} chunks, {} tier points; tier disk: {}",
        b.seconds,
        b.influxd_cpu_seconds
            .map_or("?".to_string(), |c| format!("{c:.1}")),
        b.chunks,
        b.points,
        b.tier_disk_bytes
            .iter()
            .map(|(rp, n)| format!("{rp} {n} bytes"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use serde_json::json;

    fn history(seed: u64) -> Vec<(String, String, i64)> {
        let opts = BenchOptions {
            entities: 30,
            days: 1,
            seed,
            ..BenchOptions::default()
        };
        let mut out = Vec::new();
        generate(&opts, |e| {
            if let EventKind::StateChanged(sc) = &e.kind
                && let Some(s) = &sc.new_state
            {
                out.push((
                    s.entity_id.to_string(),
                    s.state.clone(),
                    e.time_fired.as_nanos(),
                ));
            }
            Ok(())
        })
        .expect("generate");
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_history_in_time_order() {
        let a = history(3);
        assert_eq!(a, history(3));
        assert_ne!(a, history(4));
        assert!(a.windows(2).all(|w| w[0].2 <= w[1].2), "time order");
        assert!(
            a.iter()
                .all(|(_, _, t)| (END_NS - DAY_NS..END_NS).contains(t))
        );
        // Every kind of entity shows up and changes.
        for prefix in [
            "sensor.temperature_",
            "sensor.energy_",
            "light.",
            "switch.",
            "climate.",
            "binary_sensor.motion_",
        ] {
            assert!(
                a.iter().any(|(id, _, _)| id.starts_with(prefix)),
                "{prefix}"
            );
        }
    }

    #[test]
    fn top_entities_count_points_by_layout() {
        let series = vec![json!({
            "name": "light.a", "tags": {"entity_id": "a"},
            "columns": ["time", "count", "count_1"], "values": [[0, 5, 5]]
        })];
        assert_eq!(
            top_entities(Layout::Homeassistant, &series)[0],
            ("a".into(), 5)
        );
        let series = vec![json!({
            "name": "climate", "tags": {"entity_id": "climate.c"},
            "columns": ["time", "count", "count_1"], "values": [[0, 2, 3]]
        })];
        assert_eq!(top_entities(Layout::Optimized, &series)[0], ("c".into(), 5));
        assert_eq!(top_entities(Layout::Tiers, &series)[0].1, 5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

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
            toml::from_str(include_str!("../../../examples/retention-tiers.toml")).expect("example");
        assert_eq!(example.retention.downsample, tier_config().downsample);
    }

    #[test]
    fn answers_compare_by_value_within_float_tolerance() {
        let a: Vec<Row> = vec![(String::new(), 1, vec![json!(0.1 + 0.2)])];
        let b: Vec<Row> = vec![(String::new(), 1, vec![json!(0.3)])];
        assert_eq!(difference(&a, &b), None);
        let c: Vec<Row> = vec![(String::new(), 1, vec![json!(0.31)])];
        assert!(difference(&a, &c).is_some());
        let d: Vec<Row> = vec![(String::new(), 2, vec![json!(0.3)])];
        assert!(difference(&b, &d).is_some(), "times differ");
        assert!(difference(&a, &[]).is_some(), "row counts differ");
        // The lights' timelines compare per entity whatever the layout names it by.
        let ha = json!({"results": [{"series": [
            {"name": "light.light_0", "columns": ["time", "state"], "values": [[5, "on"]]}
        ]}]});
        let opt = json!({"results": [{"series": [
            {"name": "light", "tags": {"entity_id": "light.light_0"}, "columns": ["time", "state"], "values": [[5, "on"]]}
        ]}]});
        assert_eq!(
            difference(
                &canonical(3, Layout::Homeassistant, &ha),
                &canonical(3, Layout::Optimized, &opt)
            ),
            None
        );
    }
}
