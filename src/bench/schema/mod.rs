//! `ha-ingestor schema bench`: the same generated history in each schema mode, loaded into a real `influxd`, queried as HA dashboards query it.
//!
//! 1. A deterministic history (seeded) of a typical home — temperature,
//!    humidity, power, energy, battery and signal sensors every 30–300 s,
//!    motion/door sensors, lights and switches a few to a few dozen times a
//!    day, thermostats — is generated as [`Event`]s in time order (by the
//!    simulator's home generator, `crate::simulator::home_history`).
//! 2. For each mode, a fresh `influxd` (free loopback port, data in a temp
//!    dir; the launcher of [`crate::bench::influxd`]) is started; every event
//!    goes through the real [`crate::pipeline::Pipeline::process`] and the
//!    lines are written in batches of 5 000; the cache is flushed and the data
//!    dir measured.
//! 3. Each query ([`QUERIES`]), written the idiomatic way for that layout, is
//!    run once to warm up and then `runs` times; the median time and the
//!    number of result rows are reported, plus series, measurements, field
//!    keys, points and disk bytes per mode.
//!
//! Here: the options, the report's types and [`run`], which drives the rest;
//! `load` loads each mode and sets up the tiers (whose layout is in `tiers`),
//! `queries` writes each query for each layout and compares the answers,
//! `report` renders the text table.

mod load;
mod queries;
mod report;
mod tiers;

pub use queries::QUERIES;
pub use report::render_text;
pub use tiers::{route, tier_config};

use std::path::PathBuf;

use anyhow::bail;
use serde::Serialize;
use serde_json::Value;

use crate::bench::influxd::influxd_binary;
use crate::config::SchemaMode;
use crate::event::Event;
use load::{ANSWERS_DB, add_tiers, load_mode, query, store_answer, timed};
use queries::{
    LAYOUTS, Layout, canonical, difference, median, query_text, rows_of, sum_of_counts, tier_of,
    values_in, values_read_text,
};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

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
}
