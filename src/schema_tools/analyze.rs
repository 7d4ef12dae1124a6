//! `schema analyze`: reads a database's own statistics and reports what makes its
//! schema slow or unbounded.
//!
//! Everything comes from InfluxQL statements InfluxDB 1.6 and later support:
//! `SHOW MEASUREMENTS`, `SHOW SERIES EXACT CARDINALITY` (falling back to
//! counting `SHOW SERIES`), `SHOW TAG KEYS`, `SHOW TAG VALUES EXACT CARDINALITY`
//! (falling back to counting `SHOW TAG VALUES`), `SHOW FIELD KEYS` (which lists a
//! field once per type when shards disagree), `SHOW SHARDS` with per-shard
//! `count("field"::type)` to place each type of a conflicting field, and samples
//! of `<attr>_str`/`<attr>` pairs to find HA's garbage numeric twins.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::influxql::{InfluxQl, QueryError, Series, ident};

/// Knobs of the analysis; the defaults suit a Home Assistant database.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// A tag with at least this many values in one measurement is high-cardinality, whatever its name.
    pub high_cardinality: u64,
    /// Rows read per `<attr>_str`/`<attr>` pair when looking for garbage twins (0: skip).
    pub twin_sample: usize,
    /// Unit- or entity-named measurements from which on the layout counts as sprawl.
    pub sprawl_min: usize,
    /// Fields per measurement from which on it is reported as costly.
    pub wide_fields: usize,
    /// Count points per measurement (`SELECT count(*)`: slow on big databases).
    pub count_points: bool,
    /// The measurement of events other than state changes: its tags (`event_type`,
    /// `service` …) are not per entity, so only the absolute threshold applies to them.
    pub events_measurement: String,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            high_cardinality: 10_000,
            twin_sample: 1000,
            sprawl_min: 3,
            wide_fields: 30,
            count_points: true,
            events_measurement: "ha_events".to_string(),
        }
    }
}

/// What a measurement's name says about the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementKind {
    /// Named by a unit (`°C`, `kWh`): HA's default `measurement_attr`.
    Unit,
    /// Named by an entity id (`light.kitchen`): HA's fallback for entities without a unit.
    Entity,
    /// Anything else (`ha_events`, a domain, an override).
    Other,
}

/// One measurement's size.
#[derive(Debug, Clone, Serialize)]
pub struct MeasurementReport {
    /// Its name.
    pub name: String,
    /// What the name says.
    pub kind: MeasurementKind,
    /// Series (exact count).
    pub series: u64,
    /// Distinct `entity_id` tag values.
    pub entities: u64,
    /// Distinct `domain` tag values.
    pub domains: Vec<String>,
    /// Points, when counted.
    pub points: Option<u64>,
    /// Field keys (a key with two types counts once).
    pub fields: usize,
    /// Tag keys.
    pub tags: Vec<String>,
}

/// A tag whose values grow beyond the entities they describe.
#[derive(Debug, Clone, Serialize)]
pub struct TagReport {
    /// The measurement.
    pub measurement: String,
    /// The tag key.
    pub key: String,
    /// Distinct values.
    pub values: u64,
    /// Distinct entities in the measurement.
    pub entities: u64,
    /// Series of the measurement.
    pub series: u64,
    /// More values than entities: the value changes over time, so series keep being created.
    pub churning: bool,
}

/// Where one type of a conflicting field is stored.
#[derive(Debug, Clone, Serialize)]
pub struct ShardTypeCount {
    /// Shard id.
    pub shard: u64,
    /// Its retention policy.
    pub retention_policy: String,
    /// Start of its time range (RFC 3339).
    pub start: String,
    /// End of its time range (RFC 3339).
    pub end: String,
    /// The field type.
    pub field_type: String,
    /// Points of this type in the shard.
    pub points: u64,
}

/// A field key stored with more than one type.
#[derive(Debug, Clone, Serialize)]
pub struct TypeConflict {
    /// The measurement.
    pub measurement: String,
    /// The field key.
    pub field: String,
    /// Every type seen.
    pub types: Vec<String>,
    /// Per shard and type, the points (shards without the field left out).
    pub shards: Vec<ShardTypeCount>,
}

/// HA's `<attr>_str` string field next to its numeric twin `<attr>`.
#[derive(Debug, Clone, Serialize)]
pub struct StrTwin {
    /// The measurement.
    pub measurement: String,
    /// The attribute (`<attr>`; the string is `<attr>_str`).
    pub attribute: String,
    /// Rows sampled that had both fields.
    pub sampled: u64,
    /// Of those, rows whose number is not what the text says (sign lost, digits of a list or a date).
    pub garbage: u64,
    /// One garbage example: the text and the number stored for it.
    pub example: Option<(String, f64)>,
}

/// Fields that cost storage on every point and are rarely queried.
#[derive(Debug, Clone, Serialize)]
pub struct CostlyFields {
    /// The measurement.
    pub measurement: String,
    /// Field keys in total.
    pub fields: usize,
    /// `*_str` fields (text attributes).
    pub str_fields: Vec<String>,
    /// Display-only attributes (`friendly_name`, `icon`, `entity_picture` …) stored as fields.
    pub display_only: Vec<String>,
}

/// Measurements named by unit or entity: their number grows with the installation.
#[derive(Debug, Clone, Serialize)]
pub struct Sprawl {
    /// Unit-named measurements.
    pub unit_named: Vec<String>,
    /// Entity-named measurements.
    pub entity_named: Vec<String>,
    /// Whether the counts reach `sprawl_min`.
    pub is_sprawl: bool,
    /// Distinct domains over every measurement (what a per-domain layout would have).
    pub domains: Vec<String>,
    /// Per domain the optimized mode splits by device class (`sensor`), the device
    /// classes stored (`device_class_str`), sorted.
    pub device_classes: BTreeMap<String, Vec<String>>,
}

/// The whole report of `schema analyze`.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// The database analysed.
    pub database: String,
    /// Series over all measurements.
    pub total_series: u64,
    /// Distinct entities over all measurements (an entity in two measurements counts twice).
    pub total_entities: u64,
    /// Per measurement, largest series count first.
    pub measurements: Vec<MeasurementReport>,
    /// Tags with high or churning cardinality.
    pub high_cardinality_tags: Vec<TagReport>,
    /// Fields with more than one type.
    pub type_conflicts: Vec<TypeConflict>,
    /// `_str` twins, with garbage counts from a sample.
    pub str_twins: Vec<StrTwin>,
    /// Wide measurements and display-only attributes.
    pub costly_fields: Vec<CostlyFields>,
    /// Measurement sprawl.
    pub sprawl: Sprawl,
    /// Every field key outside `value`/`state`, `_str` suffix removed (the attributes stored).
    pub attributes: Vec<String>,
    /// Statements that were not supported and what was done instead.
    pub notes: Vec<String>,
}

/// Attributes HA writes that only serve the UI: never useful in a query.
pub const DISPLAY_ONLY_ATTRIBUTES: &[&str] = &[
    "friendly_name",
    "icon",
    "entity_picture",
    "attribution",
    "supported_features",
    "supported_color_modes",
    "effect_list",
    "editable",
    "restored",
    "options",
    "source_list",
    "sound_mode_list",
    "preset_modes",
    "hvac_modes",
    "fan_modes",
    "swing_modes",
];

/// Units HA sensors commonly report; a measurement so named comes from `measurement_attr = unit_of_measurement`.
const KNOWN_UNITS: &[&str] = &[
    "W", "kW", "MW", "Wh", "kWh", "MWh", "V", "mV", "A", "mA", "VA", "var", "Hz", "lx", "lm",
    "ppm", "ppb", "dB", "dBm", "Pa", "hPa", "kPa", "mbar", "bar", "psi", "inHg", "mmHg", "mm",
    "cm", "m", "km", "in", "ft", "mi", "s", "ms", "min", "h", "d", "g", "kg", "lb", "L", "mL",
    "gal", "m³", "ft³", "€", "$", "£", "B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "bit/s",
    "kbit/s", "Mbit/s", "B/s", "kB/s", "MB/s", "°C", "°F", "K", "%", "µg/m³", "mg/m³", "UV index",
    "mm/h", "in/h", "km/h", "m/s", "mph", "kn", "°", "W/m²", "L/min", "m³/h",
];

/// What a measurement name says about how it was chosen.
pub fn measurement_kind(name: &str) -> MeasurementKind {
    if KNOWN_UNITS.contains(&name) {
        return MeasurementKind::Unit;
    }
    if let Some((domain, object)) = name.split_once('.')
        && !domain.is_empty()
        && !object.is_empty()
        && domain.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && object
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return MeasurementKind::Entity;
    }
    // Unit-like: short and made of symbols a name would not use (`°C`, `m³/h`, `µS/cm`).
    if name.chars().count() <= 8 && name.chars().any(|c| "°%/³²µ€$£".contains(c)) {
        return MeasurementKind::Unit;
    }
    MeasurementKind::Other
}

/// The number a Home Assistant text attribute honestly means, if it means one:
/// an optional sign, digits with at most one dot, an optional unit after it.
pub fn honest_number(text: &str) -> Option<f64> {
    let t = text.trim();
    let end = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+'))))
        .map_or(t.len(), |(i, _)| i);
    let (number, unit) = t.split_at(end);
    let unit = unit.trim();
    // A unit is letters and symbols, not more digits or separators (lists, dates, versions).
    if unit
        .chars()
        .any(|c| c.is_ascii_digit() || matches!(c, ',' | '[' | ']' | '{' | '}' | ':' | '-' | '.'))
    {
        return None;
    }
    let v: f64 = number.parse().ok()?;
    v.is_finite().then_some(v)
}

fn one_series(series: &[Series]) -> impl Iterator<Item = (&str, &Series)> {
    series
        .iter()
        .map(|s| (s.name.as_deref().unwrap_or_default(), s))
}

/// Per-measurement counts of `SHOW … EXACT CARDINALITY`, or `None` when the server refuses it.
async fn exact_counts(
    db: &InfluxQl,
    statement: &str,
) -> Result<Option<BTreeMap<String, u64>>, QueryError> {
    match db.query(statement).await {
        Ok(series) => Ok(Some(
            one_series(&series)
                .map(|(name, s)| (name.to_string(), s.first_u64("count").unwrap_or(0)))
                .collect(),
        )),
        Err(QueryError::Statement { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs the analysis against `db` (its database).
pub async fn analyze(db: &InfluxQl, opts: &AnalyzeOptions) -> Result<Analysis, QueryError> {
    let mut notes = Vec::new();
    let names: Vec<String> = db
        .query("SHOW MEASUREMENTS")
        .await?
        .iter()
        .flat_map(|s| s.strings("name"))
        .collect();

    // Series per measurement.
    let series = match exact_counts(db, "SHOW SERIES EXACT CARDINALITY").await? {
        Some(c) => c,
        None => {
            notes.push("SHOW SERIES EXACT CARDINALITY unsupported: counted SHOW SERIES".into());
            let mut counts = BTreeMap::new();
            for key in db
                .query("SHOW SERIES")
                .await?
                .iter()
                .flat_map(|s| s.strings("key"))
            {
                let m = series_key_measurement(&key);
                *counts.entry(m).or_insert(0) += 1;
            }
            counts
        }
    };

    // Tag keys per measurement, then the cardinality of each key.
    let mut tag_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in db.query("SHOW TAG KEYS").await? {
        tag_keys.insert(s.name.clone().unwrap_or_default(), s.strings("tagKey"));
    }
    let optimized: Vec<&str> = tag_keys
        .iter()
        .filter(|(_, keys)| keys.iter().any(|k| k == "schema"))
        .map(|(m, _)| m.as_str())
        .collect();
    if !optimized.is_empty() {
        notes.push(format!(
            "written by the optimized mode (they carry its `schema` tag): {}",
            optimized.join(", ")
        ));
    }
    let all_keys: BTreeSet<&String> = tag_keys.values().flatten().collect();
    let mut cardinality: BTreeMap<(String, String), u64> = BTreeMap::new();
    for key in all_keys {
        let statement = format!(
            "SHOW TAG VALUES EXACT CARDINALITY WITH KEY = {}",
            ident(key)
        );
        let counts = match exact_counts(db, &statement).await? {
            Some(c) => c,
            None => {
                if notes.iter().all(|n: &String| !n.contains("TAG VALUES")) {
                    notes.push(
                        "SHOW TAG VALUES EXACT CARDINALITY unsupported: counted SHOW TAG VALUES"
                            .into(),
                    );
                }
                let q = format!("SHOW TAG VALUES WITH KEY = {}", ident(key));
                db.query(&q)
                    .await?
                    .iter()
                    .map(|s| (s.name.clone().unwrap_or_default(), s.values.len() as u64))
                    .collect()
            }
        };
        for (m, n) in counts {
            cardinality.insert((m, key.clone()), n);
        }
    }
    let mut domains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if tag_keys.values().flatten().any(|k| k == "domain") {
        for s in db.query("SHOW TAG VALUES WITH KEY = \"domain\"").await? {
            domains.insert(s.name.clone().unwrap_or_default(), s.strings("value"));
        }
    }

    // Field keys and their types.
    let mut fields: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for s in db.query("SHOW FIELD KEYS").await? {
        let per = fields
            .entry(s.name.clone().unwrap_or_default())
            .or_default();
        let (Some(k), Some(t)) = (s.column("fieldKey"), s.column("fieldType")) else {
            continue;
        };
        for row in &s.values {
            if let (Some(key), Some(ty)) = (
                row.get(k).and_then(Value::as_str),
                row.get(t).and_then(Value::as_str),
            ) {
                per.entry(key.to_string()).or_default().push(ty.to_string());
            }
        }
    }

    let points = if opts.count_points {
        Some(count_points(db).await?)
    } else {
        None
    };

    let mut measurements = Vec::new();
    let mut high = Vec::new();
    let mut costly = Vec::new();
    for name in &names {
        let entities = cardinality
            .get(&(name.clone(), "entity_id".to_string()))
            .copied()
            .unwrap_or(0);
        let n_series = series.get(name).copied().unwrap_or(0);
        let keys = tag_keys.get(name).cloned().unwrap_or_default();
        for key in &keys {
            let values = cardinality
                .get(&(name.clone(), key.clone()))
                .copied()
                .unwrap_or(0);
            let identity = matches!(
                key.as_str(),
                "entity_id" | "domain" | "device_class" | "unit" | "friendly_name"
            );
            let churning =
                !identity && *name != opts.events_measurement && entities > 0 && values > entities;
            if values >= opts.high_cardinality || churning {
                high.push(TagReport {
                    measurement: name.clone(),
                    key: key.clone(),
                    values,
                    entities,
                    series: n_series,
                    churning,
                });
            }
        }
        let field_map = fields.get(name).cloned().unwrap_or_default();
        let str_fields: Vec<String> = field_map
            .keys()
            .filter(|k| k.ends_with("_str"))
            .cloned()
            .collect();
        let display_only: Vec<String> = field_map
            .keys()
            .filter(|k| {
                let base = k.strip_suffix("_str").unwrap_or(k);
                DISPLAY_ONLY_ATTRIBUTES.contains(&base)
            })
            .cloned()
            .collect();
        if field_map.len() >= opts.wide_fields || !display_only.is_empty() {
            costly.push(CostlyFields {
                measurement: name.clone(),
                fields: field_map.len(),
                str_fields,
                display_only,
            });
        }
        measurements.push(MeasurementReport {
            name: name.clone(),
            kind: measurement_kind(name),
            series: n_series,
            entities,
            domains: domains.get(name).cloned().unwrap_or_default(),
            points: points.as_ref().map(|p| p.get(name).copied().unwrap_or(0)),
            fields: field_map.len(),
            tags: keys,
        });
    }
    measurements.sort_by(|a, b| b.series.cmp(&a.series).then(a.name.cmp(&b.name)));
    high.sort_by_key(|h| std::cmp::Reverse(h.values));

    let type_conflicts = type_conflicts(db, &fields).await?;
    let str_twins = str_twins(db, &fields, opts.twin_sample).await?;

    let unit_named: Vec<String> = names
        .iter()
        .filter(|n| measurement_kind(n) == MeasurementKind::Unit)
        .cloned()
        .collect();
    let entity_named: Vec<String> = names
        .iter()
        .filter(|n| measurement_kind(n) == MeasurementKind::Entity)
        .cloned()
        .collect();
    let all_domains: BTreeSet<String> = domains.values().flatten().cloned().collect();
    let mut device_classes = BTreeMap::new();
    let has_device_class = fields.values().any(|f| f.contains_key("device_class_str"));
    for d in crate::config::OptimizedSchemaConfig::default().split_by_device_class {
        if !has_device_class || !all_domains.contains(&d) {
            continue;
        }
        let q = format!(
            "SELECT DISTINCT(\"device_class_str\") FROM /.*/ WHERE \"domain\" = {}",
            super::influxql::literal(&d)
        );
        let classes: BTreeSet<String> = db
            .query(&q)
            .await?
            .iter()
            .flat_map(|s| s.strings("distinct"))
            .collect();
        device_classes.insert(d, classes.into_iter().collect());
    }
    let sprawl = Sprawl {
        device_classes,
        is_sprawl: unit_named.len() >= opts.sprawl_min || entity_named.len() >= opts.sprawl_min,
        unit_named,
        entity_named,
        domains: all_domains.into_iter().collect(),
    };
    let attributes: BTreeSet<String> = fields
        .values()
        .flat_map(|f| f.keys())
        .filter(|k| !matches!(k.as_str(), "value" | "state"))
        .map(|k| k.strip_suffix("_str").unwrap_or(k).to_string())
        .collect();
    Ok(Analysis {
        attributes: attributes.into_iter().collect(),
        database: db.database().to_string(),
        total_series: series.values().sum(),
        total_entities: measurements.iter().map(|m| m.entities).sum(),
        measurements,
        high_cardinality_tags: high,
        type_conflicts,
        str_twins,
        costly_fields: costly,
        sprawl,
        notes,
    })
}

/// The measurement of a series key (`m,tag=v` with `\,` and `\ ` escapes).
fn series_key_measurement(key: &str) -> String {
    let mut out = String::new();
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            ',' => break,
            _ => out.push(c),
        }
    }
    out
}

/// Points per measurement: the largest per-field count of `SELECT count(*)`.
async fn count_points(db: &InfluxQl) -> Result<BTreeMap<String, u64>, QueryError> {
    let mut out = BTreeMap::new();
    for s in db.query("SELECT count(*) FROM /.*/").await? {
        let n = s
            .values
            .first()
            .map(|row| {
                row.iter()
                    .skip(1)
                    .filter_map(Value::as_u64)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        out.insert(s.name.clone().unwrap_or_default(), n);
    }
    Ok(out)
}

async fn type_conflicts(
    db: &InfluxQl,
    fields: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
) -> Result<Vec<TypeConflict>, QueryError> {
    let conflicted: Vec<(&String, &String, &Vec<String>)> = fields
        .iter()
        .flat_map(|(m, f)| f.iter().map(move |(k, t)| (m, k, t)))
        .filter(|(_, _, t)| t.len() > 1)
        .collect();
    if conflicted.is_empty() {
        return Ok(Vec::new());
    }
    let shards = shards(db).await?;
    let mut out = Vec::new();
    for (m, field, types) in conflicted {
        let mut per_shard = Vec::new();
        for shard in &shards {
            for ty in types {
                let q = format!(
                    "SELECT count({}::{ty}) FROM {}.{} WHERE time >= '{}' AND time < '{}'",
                    ident(field),
                    ident(&shard.retention_policy),
                    ident(m),
                    shard.start,
                    shard.end
                );
                let n = db
                    .query(&q)
                    .await?
                    .first()
                    .and_then(|s| s.first_u64("count"))
                    .unwrap_or(0);
                if n > 0 {
                    per_shard.push(ShardTypeCount {
                        shard: shard.id,
                        retention_policy: shard.retention_policy.clone(),
                        start: shard.start.clone(),
                        end: shard.end.clone(),
                        field_type: ty.clone(),
                        points: n,
                    });
                }
            }
        }
        per_shard.sort_by(|a, b| a.start.cmp(&b.start).then(a.field_type.cmp(&b.field_type)));
        out.push(TypeConflict {
            measurement: m.clone(),
            field: field.clone(),
            types: types.clone(),
            shards: per_shard,
        });
    }
    Ok(out)
}

struct Shard {
    id: u64,
    retention_policy: String,
    start: String,
    end: String,
}

/// The shards of the client's database, from `SHOW SHARDS`.
async fn shards(db: &InfluxQl) -> Result<Vec<Shard>, QueryError> {
    let mut out = Vec::new();
    for s in db.query("SHOW SHARDS").await? {
        if s.name.as_deref() != Some(db.database()) {
            continue;
        }
        let (Some(id), Some(rp), Some(start), Some(end)) = (
            s.column("id"),
            s.column("retention_policy"),
            s.column("start_time"),
            s.column("end_time"),
        ) else {
            continue;
        };
        for row in &s.values {
            let text = |i: usize| row.get(i).and_then(Value::as_str).map(str::to_string);
            if let (Some(idv), Some(rp), Some(start), Some(end)) = (
                row.get(id).and_then(Value::as_u64),
                text(rp),
                text(start),
                text(end),
            ) {
                out.push(Shard {
                    id: idv,
                    retention_policy: rp,
                    start,
                    end,
                });
            }
        }
    }
    Ok(out)
}

async fn str_twins(
    db: &InfluxQl,
    fields: &BTreeMap<String, BTreeMap<String, Vec<String>>>,
    sample: usize,
) -> Result<Vec<StrTwin>, QueryError> {
    let mut out = Vec::new();
    for (m, f) in fields {
        for key in f.keys() {
            let Some(attr) = key.strip_suffix("_str") else {
                continue;
            };
            if !f.get(attr).is_some_and(|t| t.iter().any(|t| t == "float")) {
                continue;
            }
            let mut twin = StrTwin {
                measurement: m.clone(),
                attribute: attr.to_string(),
                sampled: 0,
                garbage: 0,
                example: None,
            };
            if sample > 0 {
                let q = format!(
                    "SELECT {}::string AS s, {}::float AS n FROM {} LIMIT {sample}",
                    ident(key),
                    ident(attr),
                    ident(m)
                );
                for s in db.query(&q).await? {
                    let (Some(si), Some(ni)) = (s.column("s"), s.column("n")) else {
                        continue;
                    };
                    for row in &s.values {
                        let (Some(text), Some(number)) = (
                            row.get(si).and_then(Value::as_str),
                            row.get(ni).and_then(Value::as_f64),
                        ) else {
                            continue;
                        };
                        twin.sampled += 1;
                        let honest = honest_number(text);
                        if honest.is_none_or(|h| (h - number).abs() > 1e-9 * h.abs().max(1.0)) {
                            twin.garbage += 1;
                            if twin.example.is_none() {
                                twin.example = Some((text.to_string(), number));
                            }
                        }
                    }
                }
            }
            out.push(twin);
        }
    }
    Ok(out)
}

impl Analysis {
    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "database {:?}: {} measurements, {} series, {} entities",
            self.database,
            self.measurements.len(),
            self.total_series,
            self.total_entities
        );
        let _ = writeln!(t, "\nseries per measurement (largest first):");
        for m in self.measurements.iter().take(30) {
            let points = m
                .points
                .map(|p| format!(", {p} points"))
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "  {:<32} {:>8} series, {:>5} entities, {:>3} fields{points} ({:?})",
                m.name, m.series, m.entities, m.fields, m.kind
            );
        }
        if self.measurements.len() > 30 {
            let _ = writeln!(t, "  … {} more", self.measurements.len() - 30);
        }
        let _ = writeln!(t, "\nhigh or churning cardinality tags:");
        if self.high_cardinality_tags.is_empty() {
            let _ = writeln!(t, "  none");
        }
        for h in &self.high_cardinality_tags {
            let _ = writeln!(
                t,
                "  {}.{}: {} values for {} entities ({} series){}",
                h.measurement,
                h.key,
                h.values,
                h.entities,
                h.series,
                if h.churning {
                    " — churning: values change over time, each new one is a new series"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(t, "\nfields with type conflicts:");
        if self.type_conflicts.is_empty() {
            let _ = writeln!(t, "  none");
        }
        for c in &self.type_conflicts {
            let _ = writeln!(
                t,
                "  {}.{}: types {}",
                c.measurement,
                c.field,
                c.types.join(", ")
            );
            for s in &c.shards {
                let _ = writeln!(
                    t,
                    "    shard {} ({} {} … {}): {} {} points",
                    s.shard, s.retention_policy, s.start, s.end, s.points, s.field_type
                );
            }
        }
        let garbage: Vec<&StrTwin> = self.str_twins.iter().filter(|s| s.garbage > 0).collect();
        let _ = writeln!(
            t,
            "\n_str twins: {} attributes stored as text and number; {} with garbage numbers:",
            self.str_twins.len(),
            garbage.len()
        );
        for g in garbage {
            let example = g
                .example
                .as_ref()
                .map(|(s, n)| format!(", e.g. {s:?} stored as {n}"))
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "  {}.{}: {} of {} sampled rows{example}",
                g.measurement, g.attribute, g.garbage, g.sampled
            );
        }
        let _ = writeln!(t, "\ncostly fields:");
        if self.costly_fields.is_empty() {
            let _ = writeln!(t, "  none");
        }
        for c in &self.costly_fields {
            let _ = writeln!(
                t,
                "  {}: {} fields, {} text; display-only: {}",
                c.measurement,
                c.fields,
                c.str_fields.len(),
                if c.display_only.is_empty() {
                    "-".to_string()
                } else {
                    c.display_only.join(", ")
                }
            );
        }
        let _ = writeln!(
            t,
            "\nmeasurement sprawl: {} unit-named, {} entity-named{} (domains: {})",
            self.sprawl.unit_named.len(),
            self.sprawl.entity_named.len(),
            if self.sprawl.is_sprawl {
                " — sprawl"
            } else {
                ""
            },
            self.sprawl.domains.join(", ")
        );
        for n in &self.notes {
            let _ = writeln!(t, "note: {n}");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurement_names_are_classified() {
        assert_eq!(measurement_kind("°C"), MeasurementKind::Unit);
        assert_eq!(measurement_kind("kWh"), MeasurementKind::Unit);
        assert_eq!(measurement_kind("µS/cm"), MeasurementKind::Unit);
        assert_eq!(measurement_kind("light.bed_light"), MeasurementKind::Entity);
        assert_eq!(measurement_kind("ha_events"), MeasurementKind::Other);
        assert_eq!(measurement_kind("sensor"), MeasurementKind::Other);
        assert_eq!(measurement_kind("a.B"), MeasurementKind::Other);
    }

    #[test]
    fn honest_numbers_keep_signs_and_refuse_lists_and_dates() {
        assert_eq!(honest_number("-5.5 °C"), Some(-5.5));
        assert_eq!(honest_number("12 km"), Some(12.0));
        assert_eq!(honest_number("10%"), Some(10.0));
        assert_eq!(honest_number("[254, 208, 0]"), None);
        assert_eq!(honest_number("2026-01-01 10:00:00+00:00"), None);
        assert_eq!(honest_number("192.168.1.10"), None);
        assert_eq!(honest_number("v1.2.3"), None);
        assert_eq!(honest_number(""), None);
    }

    #[test]
    fn series_keys_name_their_measurement() {
        assert_eq!(series_key_measurement("°C,domain=sensor"), "°C");
        assert_eq!(series_key_measurement("a\\,b,x=1"), "a,b");
        assert_eq!(series_key_measurement("m"), "m");
    }
}
