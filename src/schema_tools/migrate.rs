//! `schema migrate`: copies points of the `homeassistant` layout into another
//! layout (usually `optimized`), in the same or another database.
//!
//! Per time chunk: read every row of the chunk (`SELECT * … GROUP BY *`),
//! rebuild the Home Assistant state each row was written from (entity id from
//! the `domain`/`entity_id` tags, the state from `state` or `value`, attributes
//! from the other fields — `<attr>_str` text wins over HA's numeric twin — and
//! the unit from a unit-named measurement), encode it with the target
//! [`Encoder`], write the lines, then read the chunk back from the target and
//! check that every encoded point is there with equal field values. Only then is
//! the chunk recorded as done in the state file, so an interrupted run resumes at
//! the first unverified chunk; rewriting a chunk is harmless because every point
//! carries its own timestamp. The source is only ever read.
//!
//! Rows that carry the optimized layout's `schema` tag are skipped (counted as
//! `already_optimized`), so migrating in place never migrates its own output.
//! Rows of the events measurement are the same in every mode: they are copied
//! as they are when the target is another database or policy, and left alone
//! otherwise. InfluxDB 2.x is read through its v1 compatibility `/query` API
//! (a DBRP mapping must exist) and written through the same `/write` endpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::analyze::{MeasurementKind, measurement_kind};
use super::influxql::{InfluxQl, QueryError, Series, ident};
use crate::config::SchemaConfig;
use crate::encode::line_protocol::LineBuilder;
use crate::encode::{Encoded, Encoder, SchemaError};
use crate::event::{Attributes, EntityId, Event, State, Timestamp};

/// What to migrate and where.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The target layout (`mode = "optimized"` …).
    pub schema: SchemaConfig,
    /// Database written to.
    pub to_database: String,
    /// Retention policy written to (default: the database's default).
    pub to_retention_policy: Option<String>,
    /// Progress file.
    pub state_file: PathBuf,
    /// Width of one chunk.
    pub chunk: Duration,
    /// Start (ns); default the oldest point.
    pub from: Option<i64>,
    /// End, exclusive (ns); default just after the newest point.
    pub until: Option<i64>,
    /// Stop after this many chunks in this run.
    pub max_chunks: Option<usize>,
    /// Read and encode only.
    pub dry_run: bool,
    /// Show a progress bar with ETA on stderr.
    pub progress: bool,
}

/// Progress saved after each verified chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MigrateState {
    /// Source database.
    pub source: String,
    /// Target database.
    pub target: String,
    /// Range start (ns).
    pub from: i64,
    /// Range end, exclusive (ns).
    pub until: i64,
    /// Chunk width (ns).
    pub chunk_ns: i64,
    /// Start of the first chunk not yet done.
    pub next: i64,
    /// Chunks done.
    pub chunks_done: u64,
    /// Source rows read so far.
    pub rows: u64,
    /// Points written and verified so far.
    pub points: u64,
}

/// The outcome of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    /// Chunks handled in this run.
    pub chunks: u64,
    /// Chunks left after this run.
    pub chunks_left: u64,
    /// Source rows read in this run.
    pub rows: u64,
    /// Points written (or, dry run, encoded) in this run.
    pub points: u64,
    /// Events-measurement rows copied as they are.
    pub copied_events: u64,
    /// Rows that gave no point, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Chunks whose read-back did not match (the run stops at the first).
    pub mismatches: u64,
    /// The first difference found, if any.
    pub first_mismatch: Option<String>,
    /// Whether anything was written.
    pub dry_run: bool,
    /// Whether the run continued a saved state.
    pub resumed: bool,
}

impl MigrateReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "migrate{}: {} chunks ({} left), {} rows read, {} points {}, {} event rows copied{}\n",
            if self.dry_run { " (dry run)" } else { "" },
            self.chunks,
            self.chunks_left,
            self.rows,
            self.points,
            if self.dry_run {
                "encoded"
            } else {
                "written and verified"
            },
            self.copied_events,
            if self.resumed { ", resumed" } else { "" }
        );
        for (reason, n) in &self.skipped {
            t += &format!("  skipped ({reason}): {n}\n");
        }
        if let Some(m) = &self.first_mismatch {
            t += &format!("  MISMATCH: {m}\n");
        }
        t
    }
}

/// Why a migration stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading or writing InfluxDB failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The target schema cannot be built.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The state file cannot be read or written, or belongs to another migration.
    #[error("state file {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Nothing to migrate or a bad range.
    #[error("{0}")]
    Range(String),
    /// The audit hook could not record a chunk, so the migration stops.
    #[error("{0}")]
    Audit(String),
}

/// One chunk written (or not) by [`migrate_audited`], as its audit hook sees it.
#[derive(Debug)]
pub struct ChunkWrite<'a> {
    /// Start of the chunk (ns).
    pub start: i64,
    /// End of the chunk, exclusive (ns).
    pub end: i64,
    /// Points written in it.
    pub points: u64,
    /// Database written to.
    pub database: &'a str,
    /// Retention policy written to, if not the default.
    pub retention_policy: Option<&'a str>,
    /// How the write and its read-back ended (`Err` holds the reason).
    pub result: Result<(), String>,
}

/// A point as line protocol describes it, for comparing with what is read back.
#[derive(Debug, Clone, PartialEq)]
struct ParsedLine {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: BTreeMap<String, Value>,
    time: i64,
}

/// Splits `s` at the first unescaped `sep` (outside double quotes when `quotes`).
fn split_unescaped(s: &str, sep: char, quotes: bool) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
            continue;
        }
        if quotes && c == '"' {
            in_quotes = !in_quotes;
        }
        if c == sep && !in_quotes {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(n) = chars.next()
        {
            out.push(n);
            continue;
        }
        out.push(c);
    }
    out
}

/// Parses one line our encoders write (escaped names, typed fields, a timestamp).
fn parse_line(line: &str) -> Option<ParsedLine> {
    let parts = split_unescaped(line, ' ', true);
    if parts.len() != 3 {
        return None;
    }
    let mut key = split_unescaped(&parts[0], ',', false).into_iter();
    let measurement = unescape(&key.next()?);
    let mut tags = BTreeMap::new();
    for t in key {
        let kv = split_unescaped(&t, '=', false);
        if kv.len() != 2 {
            return None;
        }
        tags.insert(unescape(&kv[0]), unescape(&kv[1]));
    }
    let mut fields = BTreeMap::new();
    for f in split_unescaped(&parts[1], ',', true) {
        let (k, v) = f.split_once('=')?;
        let value = if let Some(s) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Value::String(unescape(s))
        } else if let Some(i) = v.strip_suffix('i') {
            Value::from(i.parse::<i64>().ok()?)
        } else if v == "true" || v == "false" {
            Value::Bool(v == "true")
        } else {
            Value::from(v.parse::<f64>().ok()?)
        };
        fields.insert(unescape(k), value);
    }
    Some(ParsedLine {
        measurement,
        tags,
        fields,
        time: parts[2].parse().ok()?,
    })
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Python's `str()` of a float state as HA's `float()` read it back: `21.5`, `20.0` → `20`.
fn state_text(v: f64) -> String {
    format!("{v}")
}

/// Rebuilds the `state_changed` event a homeassistant-layout row was written from.
fn rebuild(
    measurement: &str,
    tags: &BTreeMap<String, String>,
    columns: &[String],
    row: &[Value],
) -> Option<Event> {
    let domain = tags.get("domain")?;
    let object = tags.get("entity_id")?;
    let entity_id = EntityId::new(&format!("{domain}.{object}")).ok()?;
    let time = row.first()?.as_i64()?;
    let mut fields: BTreeMap<&str, &Value> = BTreeMap::new();
    for (c, v) in columns.iter().zip(row).skip(1) {
        if !v.is_null() {
            fields.insert(c.as_str(), v);
        }
    }
    let state = match (fields.get("state"), fields.get("value")) {
        (Some(Value::String(s)), _) => s.clone(),
        (_, Some(v)) => state_text(v.as_f64()?),
        _ => return None,
    };
    let mut attributes = Attributes::new();
    if measurement_kind(measurement) == MeasurementKind::Unit {
        attributes.insert(
            "unit_of_measurement".into(),
            Value::String(measurement.to_string()),
        );
    }
    for (k, v) in tags {
        // GROUP BY * gives an empty value for a tag key this series lacks.
        if k != "domain" && k != "entity_id" && !v.is_empty() {
            attributes.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for (k, v) in &fields {
        if matches!(*k, "state" | "value") {
            continue;
        }
        let (name, value) = match k.strip_suffix("_str") {
            // Python's str(None): the attribute was null.
            Some(base) if v.as_str() == Some("None") => (base, Value::Null),
            Some(base) => (base, (*v).clone()),
            // HA's numeric twin of a text attribute: the text is the attribute.
            None if fields.contains_key(format!("{k}_str").as_str()) => continue,
            None => (*k, (*v).clone()),
        };
        // HA renamed an attribute called `state` or `value` with a trailing `_`.
        let name = match name {
            "state_" => "state",
            "value_" => "value",
            n => n,
        };
        attributes.insert(name.to_string(), value);
    }
    let ts = Timestamp(time);
    Some(Event::from_state(
        Arc::from("migrate"),
        State::at(entity_id, state, attributes, ts),
    ))
}

/// A row of the events measurement as its line, unchanged.
fn copy_line(
    measurement: &str,
    tags: &BTreeMap<String, String>,
    columns: &[String],
    row: &[Value],
    out: &mut String,
) -> bool {
    let Some(time) = row.first().and_then(Value::as_i64) else {
        return false;
    };
    let mut b = LineBuilder::new(out, measurement);
    for (k, v) in tags {
        b.tag(k, v);
    }
    let mut f = b.fields();
    for (c, v) in columns.iter().zip(row).skip(1) {
        match v {
            Value::String(s) => {
                f.string(c, s);
            }
            Value::Bool(x) => {
                f.boolean(c, *x);
            }
            Value::Number(n) => {
                if let Some(x) = n.as_f64() {
                    f.float(c, x);
                }
            }
            _ => {}
        }
    }
    f.finish(time)
}

/// Oldest and newest point time over every measurement.
async fn time_range(db: &InfluxQl) -> Result<Option<(i64, i64)>, QueryError> {
    let mut min: Option<i64> = None;
    let mut max: Option<i64> = None;
    for (order, slot) in [("ASC", &mut min), ("DESC", &mut max)] {
        for s in db
            .query(&format!("SELECT * FROM /.*/ ORDER BY time {order} LIMIT 1"))
            .await?
        {
            if let Some(t) = s
                .values
                .first()
                .and_then(|r| r.first())
                .and_then(Value::as_i64)
            {
                *slot = Some(match *slot {
                    None => t,
                    Some(x) if order == "ASC" => x.min(t),
                    Some(x) => x.max(t),
                });
            }
        }
    }
    Ok(min.zip(max))
}

fn load_state(path: &PathBuf) -> Result<Option<MigrateState>, MigrateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| MigrateError::State {
                path: path.clone(),
                message: format!("not a migration state ({e})"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MigrateError::State {
            path: path.clone(),
            message: e.to_string(),
        }),
    }
}

fn save_state(path: &PathBuf, state: &MigrateState) -> Result<(), MigrateError> {
    let err = |e: std::io::Error| MigrateError::State {
        path: path.clone(),
        message: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(state).map_err(|e| MigrateError::State {
        path: path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&tmp, text + "\n").map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Runs (or resumes) a migration from `db`'s database.
pub async fn migrate(db: &InfluxQl, opts: &MigrateOptions) -> Result<MigrateReport, MigrateError> {
    migrate_audited(db, opts, &mut |_| Ok(())).await
}

/// [`migrate`], calling `on_write` after every chunk it writes (never in a dry run);
/// an `Err` from the hook stops the migration before the next chunk.
pub async fn migrate_audited(
    db: &InfluxQl,
    opts: &MigrateOptions,
    on_write: &mut (dyn FnMut(&ChunkWrite<'_>) -> Result<(), String> + Send),
) -> Result<MigrateReport, MigrateError> {
    let mut encoder = Encoder::new(&opts.schema)?;
    let events_measurement = opts.schema.events_measurement.clone();
    let chunk_ns = i64::try_from(opts.chunk.as_nanos())
        .ok()
        .filter(|c| *c > 0)
        .ok_or_else(|| MigrateError::Range("--chunk must be above zero".into()))?;
    let same_place = opts.to_database == db.database() && opts.to_retention_policy.is_none();
    let target = db.with_database(&opts.to_database);
    let saved = load_state(&opts.state_file)?;
    let mut report = MigrateReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut state = match saved {
        Some(s) if !opts.dry_run => {
            let matches = s.source == db.database()
                && s.target == opts.to_database
                && s.chunk_ns == chunk_ns
                && opts.from.is_none_or(|f| f == s.from)
                && opts.until.is_none_or(|u| u == s.until);
            if !matches {
                return Err(MigrateError::State {
                    path: opts.state_file.clone(),
                    message: "belongs to a migration with other databases, range or chunk; \
                              remove it to start over"
                        .into(),
                });
            }
            report.resumed = true;
            s
        }
        _ => {
            let range = time_range(db).await?;
            let from = opts.from.or(range.map(|r| r.0));
            let until = opts.until.or(range.map(|r| r.1 + 1));
            let (Some(from), Some(until)) = (from, until) else {
                return Err(MigrateError::Range(format!(
                    "database {:?} has no points",
                    db.database()
                )));
            };
            if until <= from {
                return Err(MigrateError::Range("--until must be after --from".into()));
            }
            MigrateState {
                source: db.database().to_string(),
                target: opts.to_database.clone(),
                from,
                until,
                chunk_ns,
                next: from,
                chunks_done: 0,
                rows: 0,
                points: 0,
            }
        }
    };
    let total_chunks = ((state.until - state.from) + chunk_ns - 1) / chunk_ns;
    let bar = super::chunk_progress(opts.progress, total_chunks, state.chunks_done);
    let mut lines = String::new();
    while state.next < state.until {
        if opts.max_chunks.is_some_and(|m| report.chunks as usize >= m) {
            break;
        }
        let (start, end) = (state.next, (state.next + chunk_ns).min(state.until));
        let series = db
            .query(&format!(
                "SELECT * FROM /.*/ WHERE time >= {start} AND time < {end} GROUP BY *"
            ))
            .await?;
        lines.clear();
        let mut rows = 0u64;
        for s in &series {
            let measurement = s.name.as_deref().unwrap_or_default();
            for row in &s.values {
                rows += 1;
                if measurement == events_measurement {
                    if !same_place && copy_line(measurement, &s.tags, &s.columns, row, &mut lines) {
                        report.copied_events += 1;
                    }
                    continue;
                }
                // Points of the optimized layout carry its version tag: already migrated or live.
                if s.tags.get("schema").is_some_and(|v| !v.is_empty()) {
                    *report
                        .skipped
                        .entry("already_optimized".into())
                        .or_default() += 1;
                    continue;
                }
                match rebuild(measurement, &s.tags, &s.columns, row) {
                    Some(event) => {
                        if let Encoded::Skipped(reason) = encoder.encode(&event, &mut lines) {
                            *report.skipped.entry(reason.as_str().into()).or_default() += 1;
                        }
                    }
                    None => {
                        *report
                            .skipped
                            .entry("not_a_homeassistant_row".into())
                            .or_default() += 1;
                    }
                }
            }
        }
        let points = lines.lines().count() as u64;
        if !opts.dry_run && !lines.is_empty() {
            let written = async {
                target
                    .write(
                        &opts.to_database,
                        opts.to_retention_policy.as_deref(),
                        lines.clone(),
                    )
                    .await?;
                verify(
                    &target,
                    opts.to_retention_policy.as_deref(),
                    &lines,
                    start,
                    end,
                )
                .await
            }
            .await;
            let audited = ChunkWrite {
                start,
                end,
                points,
                database: &opts.to_database,
                retention_policy: opts.to_retention_policy.as_deref(),
                result: match &written {
                    Ok(None) => Ok(()),
                    Ok(Some(problem)) => Err(format!("read-back differs: {problem}")),
                    Err(e) => Err(e.to_string()),
                },
            };
            on_write(&audited).map_err(MigrateError::Audit)?;
            if let Some(problem) = written? {
                report.mismatches += 1;
                report.first_mismatch = Some(problem);
                break;
            }
        }
        report.chunks += 1;
        report.rows += rows;
        report.points += points;
        state.next = end;
        state.chunks_done += 1;
        state.rows += rows;
        state.points += points;
        if !opts.dry_run {
            save_state(&opts.state_file, &state)?;
        }
        bar.set_position(state.chunks_done);
        bar.set_message(format!("{} points", state.points));
    }
    bar.finish_and_clear();
    report.chunks_left =
        ((state.until - state.next).max(0) + chunk_ns - 1) as u64 / chunk_ns as u64;
    Ok(report)
}

/// Points read back: (measurement, tags, time) → fields.
type Stored = HashMap<(String, BTreeMap<String, String>, i64), BTreeMap<String, Value>>;

/// Reads the chunk back from the target; `Some(difference)` when a written point is missing or differs.
async fn verify(
    target: &InfluxQl,
    rp: Option<&str>,
    lines: &str,
    start: i64,
    end: i64,
) -> Result<Option<String>, QueryError> {
    let mut wanted: Vec<ParsedLine> = Vec::new();
    for line in lines.lines() {
        match parse_line(line) {
            Some(p) => wanted.push(p),
            None => return Ok(Some(format!("cannot parse our own line {line:?}"))),
        }
    }
    let measurements: std::collections::BTreeSet<&str> =
        wanted.iter().map(|p| p.measurement.as_str()).collect();
    let mut stored: Stored = HashMap::new();
    for m in measurements {
        let from = match rp {
            Some(rp) => format!("{}.{}", ident(rp), ident(m)),
            None => ident(m),
        };
        let q = format!("SELECT * FROM {from} WHERE time >= {start} AND time < {end} GROUP BY *");
        for s in target.query(&q).await? {
            collect_rows(&s, &mut stored);
        }
    }
    for p in &wanted {
        let key = (p.measurement.clone(), p.tags.clone(), p.time);
        let Some(got) = stored.get(&key) else {
            return Ok(Some(format!(
                "point {} {:?} at {} not found in the target",
                p.measurement, p.tags, p.time
            )));
        };
        for (k, v) in &p.fields {
            if !got.get(k).is_some_and(|g| same_value(g, v)) {
                return Ok(Some(format!(
                    "{} {:?} at {}: field {k} is {:?} in the target, {v} was written",
                    p.measurement,
                    p.tags,
                    p.time,
                    got.get(k)
                )));
            }
        }
    }
    Ok(None)
}

fn collect_rows(s: &Series, out: &mut Stored) {
    let name = s.name.clone().unwrap_or_default();
    // GROUP BY * gives empty tag values for tags a series lacks: line protocol has none.
    let tags: BTreeMap<String, String> = s
        .tags
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for row in &s.values {
        let Some(time) = row.first().and_then(Value::as_i64) else {
            continue;
        };
        let fields = s
            .columns
            .iter()
            .zip(row)
            .skip(1)
            .filter(|(_, v)| !v.is_null())
            .map(|(c, v)| (c.clone(), v.clone()))
            .collect();
        out.insert((name.clone(), tags.clone(), time), fields);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn our_lines_parse_back() {
        let p = parse_line(
            "°C,domain=sensor,entity_id=a\\ b value=21.5,state=\"x, \\\"y\\\"\",n=3i,b=true 17\n"
                .trim_end(),
        )
        .unwrap();
        assert_eq!(p.measurement, "°C");
        assert_eq!(p.tags["entity_id"], "a b");
        assert_eq!(p.fields["value"], Value::from(21.5));
        assert_eq!(p.fields["state"], Value::from("x, \"y\""));
        assert_eq!(p.fields["n"], Value::from(3));
        assert_eq!(p.fields["b"], Value::Bool(true));
        assert_eq!(p.time, 17);
        assert!(parse_line("m value=1").is_none());
    }

    #[test]
    fn rows_rebuild_the_state_they_came_from() {
        let tags: BTreeMap<String, String> = [("domain", "sensor"), ("entity_id", "t")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let columns: Vec<String> = [
            "time",
            "value",
            "friendly_name_str",
            "rgb_str",
            "rgb",
            "battery",
            "brightness_str",
        ]
        .iter()
        .map(|c| c.to_string())
        .collect();
        let row = vec![
            Value::from(5),
            Value::from(-5.5),
            Value::from("T"),
            Value::from("[1, 2]"),
            Value::from(12.0),
            Value::from(80.0),
            Value::from("None"),
        ];
        let e = rebuild("°C", &tags, &columns, &row).unwrap();
        let EventKind::StateChanged(sc) = &e.kind else {
            panic!("not a state change")
        };
        let s = sc.new_state.as_ref().unwrap();
        assert_eq!(s.entity_id.as_str(), "sensor.t");
        assert_eq!(s.state, "-5.5");
        assert_eq!(
            s.attributes.get("unit_of_measurement"),
            Some(&Value::from("°C"))
        );
        assert_eq!(
            s.attributes.get("rgb"),
            Some(&Value::from("[1, 2]")),
            "text wins over the twin"
        );
        assert_eq!(s.attributes.get("battery"), Some(&Value::from(80.0)));
        assert_eq!(s.attributes.get("friendly_name"), Some(&Value::from("T")));
        assert_eq!(
            s.attributes.get("brightness"),
            Some(&Value::Null),
            "str(None) was null"
        );
        assert_eq!(e.time_fired, Timestamp(5));
        assert!(rebuild("x", &BTreeMap::new(), &columns, &row).is_none());
    }
}
