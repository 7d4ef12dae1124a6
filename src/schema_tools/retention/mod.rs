//! `retention apply`: makes an InfluxDB 1.x database's retention policies and
//! continuous queries match `[retention]`, showing the difference first.
//!
//! - Raw points stay in `raw_policy` (where the writer writes); `raw_keep` sets its duration.
//! - Each downsampling tier is a retention policy `ds_<every>_<keep>` (shared by
//!   rules with the same tier) and, per rule, a continuous query `<rule>_<every>`
//!   that writes `mean(<field>) AS <field>` per `every` into it, grouped by every
//!   tag, keeping each measurement's name.
//!
//! Idempotent: what already matches is left alone, so a second run changes
//! nothing. A continuous query cannot be altered in InfluxDB, so one that differs
//! is dropped and created again. Nothing is ever dropped that the configuration
//! does not name: policies and queries of other origin are listed, not touched.
//! The service itself only watches: [`watcher`] compares the database with
//! `[retention]` every few minutes for the metrics and the status page, and
//! never changes anything.
//!
//! InfluxDB 2.x has no continuous queries (tasks instead) and manages retention
//! per bucket: `retention apply` refuses a v2 target; `docs/schema-tools.md`
//! gives the equivalent steps.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::config::{RetentionConfig, parse_keep};
use crate::schema_tools::influxql::{
    InfluxQl, QueryError, ident, influx_duration, literal, parse_go_duration,
};

pub mod watcher;

pub use watcher::{WATCH_INTERVAL, Watcher, last_status, publish, watcher};

/// A retention policy the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WantedPolicy {
    /// Its name.
    pub name: String,
    /// How long data is kept; zero is forever.
    pub keep: Duration,
}

/// A continuous query the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WantedQuery {
    /// Its name.
    pub name: String,
    /// The full `CREATE CONTINUOUS QUERY …` statement.
    pub statement: String,
    /// Bucket width of its tier.
    #[serde(skip)]
    pub every: Duration,
    /// `SELECT … INTO … FROM …` without `WHERE` and `GROUP BY`: the body shared by the
    /// continuous query and the backfill of past data.
    #[serde(skip)]
    pub select_into: String,
    /// The rule's own condition (domains), without the time range.
    #[serde(skip)]
    pub condition: Option<String>,
}

impl WantedQuery {
    /// The one-off `SELECT … INTO` that fills the tier for `[start, end)` (ns) from raw
    /// points, exactly as the continuous query would have; rerunning it rewrites
    /// the same points with the same values.
    pub fn backfill_statement(&self, start: i64, end: i64) -> String {
        let time = format!("time >= {start} AND time < {end}");
        let condition = match &self.condition {
            Some(c) => format!("{c} AND {time}"),
            None => time,
        };
        format!(
            "{} WHERE {condition} GROUP BY time({}), * fill(none)",
            self.select_into,
            influx_duration(self.every)
        )
    }
}

/// One change `apply` would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// A policy that does not exist yet.
    CreatePolicy {
        /// Name.
        name: String,
        /// Duration (zero: forever).
        keep: Duration,
    },
    /// A policy whose duration differs.
    AlterPolicy {
        /// Name.
        name: String,
        /// Now.
        from: Duration,
        /// Wanted.
        to: Duration,
    },
    /// A continuous query that does not exist yet.
    CreateQuery {
        /// Name.
        name: String,
        /// Statement.
        statement: String,
    },
    /// A continuous query whose text differs: dropped and created again.
    ReplaceQuery {
        /// Name.
        name: String,
        /// Its text now (as InfluxDB prints it).
        from: String,
        /// Wanted statement.
        statement: String,
    },
}

fn keep_text(d: Duration) -> String {
    if d.is_zero() {
        "forever".into()
    } else {
        influx_duration(d)
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreatePolicy { name, keep } => {
                write!(f, "+ retention policy {name}: keep {}", keep_text(*keep))
            }
            Change::AlterPolicy { name, from, to } => write!(
                f,
                "~ retention policy {name}: keep {} → {}",
                keep_text(*from),
                keep_text(*to)
            ),
            Change::CreateQuery { name, statement } => {
                write!(f, "+ continuous query {name}:\n    {statement}")
            }
            Change::ReplaceQuery {
                name,
                from,
                statement,
            } => write!(f, "~ continuous query {name}:\n  - {from}\n  + {statement}"),
        }
    }
}

/// The difference between the database and the configuration.
#[derive(Debug, Clone, Serialize)]
pub struct RetentionDiff {
    /// The database.
    pub database: String,
    /// Changes to make, policies first.
    pub changes: Vec<Change>,
    /// Wanted policies and queries that already match.
    pub unchanged: Vec<String>,
    /// Policies and queries present in the database that the configuration does not name (left alone).
    pub unmanaged: Vec<String>,
}

impl RetentionDiff {
    /// The diff as text: one line (or block) per change.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "retention for database {:?}: {} changes, {} unchanged\n",
            self.database,
            self.changes.len(),
            self.unchanged.len()
        );
        for c in &self.changes {
            t += &format!("{c}\n");
        }
        for u in &self.unchanged {
            t += &format!("= {u}\n");
        }
        for u in &self.unmanaged {
            t += &format!("  (not managed here: {u})\n");
        }
        t
    }
}

/// Status for the metric and the status page: does the database match the configuration?
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RetentionStatus {
    /// Policies and queries the configuration asks for.
    pub wanted: usize,
    /// Changes `retention apply` would make (0: in sync).
    pub pending: usize,
}

/// Why retention cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// Talking to InfluxDB failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The configuration names something unusable.
    #[error("retention: {0}")]
    Config(String),
    /// The audit hook could not record a statement, so applying stops.
    #[error("{0}")]
    Audit(String),
    /// The backfill's progress file cannot be read, written or does not fit this backfill.
    #[error("backfill state {path}: {message}")]
    State {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The name of a tier's retention policy: `ds_<every>_<keep>` (`ds_5m_365d`, `ds_1h_inf`).
pub fn tier_policy_name(every: Duration, keep: Duration) -> String {
    let keep = if keep.is_zero() {
        "inf".to_string()
    } else {
        influx_duration(keep)
    };
    format!("ds_{}_{keep}", influx_duration(every))
}

/// Policies and queries `cfg` asks for in `database`, raw points being in `raw_policy`.
pub fn wanted(
    cfg: &RetentionConfig,
    database: &str,
    raw_policy: &str,
) -> Result<(Vec<WantedPolicy>, Vec<WantedQuery>), RetentionError> {
    let mut policies: BTreeMap<String, Duration> = BTreeMap::new();
    if let Some(keep) = &cfg.raw_keep {
        let keep =
            parse_keep(keep).ok_or_else(|| RetentionError::Config(format!("raw_keep {keep:?}")))?;
        policies.insert(raw_policy.to_string(), keep);
    }
    let mut queries = Vec::new();
    for rule in &cfg.downsample {
        for tier in &rule.tiers {
            let keep = parse_keep(&tier.keep).ok_or_else(|| {
                RetentionError::Config(format!("{}: keep {:?}", rule.name, tier.keep))
            })?;
            let rp = tier_policy_name(tier.every, keep);
            if rp == raw_policy {
                return Err(RetentionError::Config(format!(
                    "{}: tier policy {rp} is the raw policy",
                    rule.name
                )));
            }
            policies.insert(rp.clone(), keep);
            let every = influx_duration(tier.every);
            let select = rule
                .fields
                .iter()
                .flat_map(|f| {
                    rule.aggregates.iter().map(move |a| {
                        format!(
                            "{}({}) AS {}",
                            a.as_str(),
                            ident(f),
                            ident(&a.output_field(f))
                        )
                    })
                })
                .collect::<Vec<_>>()
                .join(", ");
            let from = if rule.measurements.is_empty() {
                format!("{}.{}./.*/", ident(database), ident(raw_policy))
            } else {
                rule.measurements
                    .iter()
                    .map(|m| format!("{}.{}.{}", ident(database), ident(raw_policy), ident(m)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let condition = match rule.domains.as_slice() {
                [] => None,
                [one] => Some(format!("domain = {}", literal(one))),
                many => Some(format!(
                    "({})",
                    many.iter()
                        .map(|d| format!("domain = {}", literal(d)))
                        .collect::<Vec<_>>()
                        .join(" OR ")
                )),
            };
            let filter = condition
                .as_ref()
                .map(|c| format!(" WHERE {c}"))
                .unwrap_or_default();
            let name = format!("{}_{every}", rule.name);
            let select_into = format!(
                "SELECT {select} INTO {}.{}.:MEASUREMENT FROM {from}",
                ident(database),
                ident(&rp),
            );
            // fill(none): count() reports 0 for empty buckets, which would otherwise be stored.
            let statement = format!(
                "CREATE CONTINUOUS QUERY {} ON {} BEGIN {select_into}{filter} GROUP BY time({every}), * fill(none) END",
                ident(&name),
                ident(database),
            );
            queries.push(WantedQuery {
                name,
                statement,
                every: tier.every,
                select_into,
                condition,
            });
        }
    }
    let policies = policies
        .into_iter()
        .map(|(name, keep)| WantedPolicy { name, keep })
        .collect();
    Ok((policies, queries))
}

/// Text of a continuous query as InfluxDB prints it back, made comparable: quotes
/// dropped (InfluxDB drops those it does not need) and spaces collapsed.
fn normalized(statement: &str) -> String {
    statement
        .replace('"', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Compares the database with the configuration; changes nothing.
pub async fn diff(
    db: &InfluxQl,
    cfg: &RetentionConfig,
    raw_policy: &str,
) -> Result<RetentionDiff, RetentionError> {
    let database = db.database().to_string();
    let (policies, queries) = wanted(cfg, &database, raw_policy)?;
    let mut existing_rp: BTreeMap<String, Duration> = BTreeMap::new();
    for s in db
        .query(&format!("SHOW RETENTION POLICIES ON {}", ident(&database)))
        .await?
    {
        let (Some(n), Some(d)) = (s.column("name"), s.column("duration")) else {
            continue;
        };
        for row in &s.values {
            if let (Some(name), Some(dur)) = (
                row.get(n).and_then(Value::as_str),
                row.get(d)
                    .and_then(Value::as_str)
                    .and_then(parse_go_duration),
            ) {
                existing_rp.insert(name.to_string(), dur);
            }
        }
    }
    let mut existing_cq: BTreeMap<String, String> = BTreeMap::new();
    for s in db.query("SHOW CONTINUOUS QUERIES").await? {
        if s.name.as_deref() != Some(database.as_str()) {
            continue;
        }
        let (Some(n), Some(q)) = (s.column("name"), s.column("query")) else {
            continue;
        };
        for row in &s.values {
            if let (Some(name), Some(query)) = (
                row.get(n).and_then(Value::as_str),
                row.get(q).and_then(Value::as_str),
            ) {
                existing_cq.insert(name.to_string(), query.to_string());
            }
        }
    }
    let mut out = RetentionDiff {
        database,
        changes: Vec::new(),
        unchanged: Vec::new(),
        unmanaged: Vec::new(),
    };
    for p in &policies {
        match existing_rp.remove(&p.name) {
            None => out.changes.push(Change::CreatePolicy {
                name: p.name.clone(),
                keep: p.keep,
            }),
            Some(d) if d != p.keep => out.changes.push(Change::AlterPolicy {
                name: p.name.clone(),
                from: d,
                to: p.keep,
            }),
            Some(_) => out.unchanged.push(format!(
                "retention policy {} (keep {})",
                p.name,
                keep_text(p.keep)
            )),
        }
    }
    for q in &queries {
        match existing_cq.remove(&q.name) {
            None => out.changes.push(Change::CreateQuery {
                name: q.name.clone(),
                statement: q.statement.clone(),
            }),
            Some(text) if normalized(&text) != normalized(&q.statement) => {
                out.changes.push(Change::ReplaceQuery {
                    name: q.name.clone(),
                    from: text,
                    statement: q.statement.clone(),
                })
            }
            Some(_) => out.unchanged.push(format!("continuous query {}", q.name)),
        }
    }
    existing_rp.remove(raw_policy);
    out.unmanaged
        .extend(existing_rp.keys().map(|k| format!("retention policy {k}")));
    out.unmanaged
        .extend(existing_cq.keys().map(|k| format!("continuous query {k}")));
    Ok(out)
}

/// Makes the changes of `diff`, in order; stops at the first refusal.
pub async fn apply(db: &InfluxQl, diff: &RetentionDiff) -> Result<(), RetentionError> {
    apply_audited(db, diff, &mut |_, _| Ok(())).await
}

/// An audit hook: called with each statement sent and how it ended (`T` on success, the
/// reason on failure); its `Err` stops the work before the next statement.
pub type StatementHook<'a, T> =
    dyn FnMut(&str, Result<T, String>) -> Result<(), String> + Send + 'a;

/// [`apply`], calling `on_statement` after each statement it sends with how it ended;
/// an `Err` from the hook stops before the next statement.
pub async fn apply_audited(
    db: &InfluxQl,
    diff: &RetentionDiff,
    on_statement: &mut StatementHook<'_, ()>,
) -> Result<(), RetentionError> {
    let on = ident(&diff.database);
    for change in &diff.changes {
        let statements = match change {
            Change::CreatePolicy { name, keep } => vec![format!(
                "CREATE RETENTION POLICY {} ON {on} DURATION {} REPLICATION 1",
                ident(name),
                influx_duration(*keep)
            )],
            Change::AlterPolicy { name, to, .. } => vec![format!(
                "ALTER RETENTION POLICY {} ON {on} DURATION {}",
                ident(name),
                influx_duration(*to)
            )],
            Change::CreateQuery { statement, .. } => vec![statement.clone()],
            Change::ReplaceQuery {
                name, statement, ..
            } => vec![
                format!("DROP CONTINUOUS QUERY {} ON {on}", ident(name)),
                statement.clone(),
            ],
        };
        for s in statements {
            let sent = db.query(&s).await;
            let outcome = sent.as_ref().map(|_| ()).map_err(|e| e.to_string());
            on_statement(&s, outcome).map_err(RetentionError::Audit)?;
            sent?;
        }
    }
    Ok(())
}

/// How many changes are pending, for the status page.
pub async fn status(
    db: &InfluxQl,
    cfg: &RetentionConfig,
    raw_policy: &str,
) -> Result<RetentionStatus, RetentionError> {
    let d = diff(db, cfg, raw_policy).await?;
    Ok(RetentionStatus {
        wanted: d.changes.len() + d.unchanged.len(),
        pending: d.changes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DownsampleConfig, TierAggregate, TierConfig};

    fn cfg() -> RetentionConfig {
        RetentionConfig {
            database: None,
            raw_policy: None,
            raw_keep: Some("30d".into()),
            downsample: vec![DownsampleConfig {
                name: "sensors".into(),
                measurements: vec!["°C".into(), "W".into()],
                domains: vec!["sensor".into()],
                fields: vec!["value".into()],
                aggregates: vec![TierAggregate::Mean],
                tiers: vec![
                    TierConfig {
                        every: Duration::from_secs(300),
                        keep: "365d".into(),
                    },
                    TierConfig {
                        every: Duration::from_secs(3600),
                        keep: "inf".into(),
                    },
                ],
            }],
        }
    }

    #[test]
    fn wanted_policies_and_queries() {
        let (p, q) = wanted(&cfg(), "ha", "autogen").unwrap();
        let names: Vec<_> = p
            .iter()
            .map(|p| (p.name.as_str(), p.keep.as_secs()))
            .collect();
        assert_eq!(
            names,
            [
                ("autogen", 30 * 86_400),
                ("ds_1h_inf", 0),
                ("ds_5m_365d", 365 * 86_400)
            ]
        );
        assert_eq!(q[0].name, "sensors_5m");
        assert_eq!(
            q[0].statement,
            "CREATE CONTINUOUS QUERY \"sensors_5m\" ON \"ha\" BEGIN SELECT mean(\"value\") AS \"value\" INTO \"ha\".\"ds_5m_365d\".:MEASUREMENT FROM \"ha\".\"autogen\".\"°C\", \"ha\".\"autogen\".\"W\" WHERE domain = 'sensor' GROUP BY time(5m), * fill(none) END"
        );
        assert_eq!(q[1].name, "sensors_1h");
    }

    #[test]
    fn published_status_is_kept_for_the_status_page() {
        let s = RetentionStatus {
            wanted: 3,
            pending: 1,
        };
        publish(&s);
        assert_eq!(last_status(), Some(s));
    }

    #[test]
    fn a_tier_cannot_be_the_raw_policy() {
        assert!(wanted(&cfg(), "ha", "ds_5m_365d").is_err());
    }

    #[test]
    fn normalized_ignores_quotes_and_spacing() {
        assert_eq!(
            normalized("SELECT  mean(\"value\") AS \"value\""),
            normalized("SELECT mean(value) AS value")
        );
    }
}
