//! Loading: each schema mode's history into its own `influxd`, the tiers set
//! up and backfilled in the optimized one, the figures of each database, and
//! HA's answers stored ready-made (the floor a layout cannot beat).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::queries::series_of;
use super::tiers::{tier_config, tier_policies};
use super::{
    BATCH_LINES, BackfillFigures, BenchOptions, DAY_NS, DB, END_NS, EPOCH, EPOCH_NS, ModeReport,
    generate,
};
use crate::bench::influxd::{Influxd, InfluxdOptions, dir_bytes};
use crate::config::{FilterConfig, InfluxConfig, SchemaConfig, SchemaMode};
use crate::pipeline::{Outcome, Pipeline};
use crate::schema_tools::backfill::{self, BackfillOptions};
use crate::schema_tools::influxql::{InfluxQl, ident};
use crate::schema_tools::retention;

/// A query against [`DB`] with times in [`EPOCH`] units; an error inside the reply fails it.
pub(super) async fn query(server: &Influxd, q: &str) -> anyhow::Result<Value> {
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
pub(super) async fn load_mode(
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
pub(super) async fn add_tiers(
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
pub(super) async fn timed(
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

/// The database holding each query's answer as plain points: the floor.
pub(super) const ANSWERS_DB: &str = "answers";

/// Stores HA's reply to query `i` as points (one per row, the series' name or
/// `entity_id` tag as an `answer` tag, the columns as fields) in [`ANSWERS_DB`],
/// and returns the query that reads it back: the least work influxd can do to
/// hand out that answer — what a layout holding the answer ready-made would
/// cost. No layout can be faster than this, so HA's time over it bounds the
/// speedup any schema can give on that query.
pub(super) async fn store_answer(
    server: &Influxd,
    i: usize,
    reply: &Value,
) -> anyhow::Result<(String, usize)> {
    use crate::encode::line_protocol::LineBuilder;
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
