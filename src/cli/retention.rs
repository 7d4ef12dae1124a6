//! `ha-ingestor retention apply`: make an InfluxDB 1.x database's retention policies and continuous queries match `[retention]`, then optionally backfill the tiers.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use super::schema::{InfluxTarget, influx_target};

/// The retention commands.
#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Show the difference between the database and `[retention]`; change it with `--yes`.
    Apply {
        #[command(flatten)]
        target: InfluxTarget,
        /// Make the changes (without it, only the difference is shown).
        #[arg(long)]
        yes: bool,
        /// Print the difference as JSON.
        #[arg(long)]
        json: bool,
        /// With `--yes`: then fill the downsampling tiers from the raw points already stored, by chunks (resumable).
        #[arg(long)]
        backfill: bool,
        /// Backfill progress file: an interrupted backfill resumes from it.
        #[arg(long, default_value = "ha-ingestor-backfill.state.json")]
        state: PathBuf,
        /// Backfill chunk width: a whole number of every tier's buckets.
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        chunk: std::time::Duration,
        /// Backfill from this time (RFC 3339; default: the oldest raw shard).
        #[arg(long)]
        from: Option<String>,
        /// Backfill until this time, exclusive (RFC 3339; default: now).
        #[arg(long)]
        until: Option<String>,
        /// Stop the backfill after this many chunks (resume later).
        #[arg(long)]
        max_chunks: Option<usize>,
        /// No backfill progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

/// Shows (and with `--yes` applies) the difference, then backfills when asked.
pub async fn main(what: RetentionCommand) -> anyhow::Result<()> {
    use crate::schema_tools::backfill;
    use crate::schema_tools::{influxql::InfluxQl, retention};
    let RetentionCommand::Apply {
        target,
        yes,
        json,
        backfill: fill,
        state,
        chunk,
        from,
        until,
        max_chunks,
        quiet,
    } = what;
    let (cfg, influx) = influx_target(&target)?;
    anyhow::ensure!(
        influx.api == crate::config::InfluxApi::V1,
        "retention apply manages InfluxDB 1.x retention policies and continuous queries; for v2 see docs/schema-tools.md"
    );
    let cfg = cfg.context("retention apply needs --config with a [retention] section")?;
    let database = cfg
        .retention
        .database
        .clone()
        .or(target.database.clone())
        .or(influx.database.clone())
        .context("no database: set retention.database or influxdb.database")?;
    let raw_policy = cfg
        .retention
        .raw_policy
        .clone()
        .or(influx.retention_policy.clone())
        .unwrap_or_else(|| "autogen".into());
    let db = InfluxQl::new(&influx)?.with_database(&database);
    // Opened before anything changes: no audit log, no changes.
    let audit = if yes {
        Some(crate::audit::AuditLog::open(&cfg.data_dir)?)
    } else {
        None
    };
    let target = format!("{} {database}", crate::config::redact_url(&influx.url));
    let record = |statement: &str, outcome: crate::audit::Outcome, extra: serde_json::Value| {
        let Some(audit) = &audit else { return Ok(()) };
        let mut what = serde_json::json!({ "statement": statement });
        if let (Some(what), serde_json::Value::Object(extra)) = (what.as_object_mut(), extra) {
            what.extend(extra);
        }
        audit
            .record("retention apply", &target, what, &outcome)
            .map_err(|e| e.to_string())
    };
    let diff = retention::diff(&db, &cfg.retention, &raw_policy).await?;
    // With a backfill that runs, the JSON is one document printed at the end.
    let one_document = json && fill && yes;
    if json {
        if !one_document {
            println!("{}", serde_json::to_string_pretty(&diff)?);
        }
    } else {
        print!("{}", diff.to_text());
    }
    if diff.changes.is_empty() {
        if !json {
            println!("nothing to change");
        }
    } else if yes {
        retention::apply_audited(&db, &diff, &mut |statement, outcome| {
            record(statement, (&outcome).into(), serde_json::Value::Null)
        })
        .await?;
        let after = retention::diff(&db, &cfg.retention, &raw_policy).await?;
        anyhow::ensure!(
            after.changes.is_empty(),
            "after applying, {} changes remain:\n{}",
            after.changes.len(),
            after.to_text()
        );
        if !json {
            println!("applied {} changes", diff.changes.len());
        }
    } else if !json {
        println!("dry run: run again with --yes to apply");
    }
    if fill {
        if !yes {
            if !json {
                println!("backfill: not run without --yes");
            }
            return Ok(());
        }
        let opts = backfill::BackfillOptions {
            state_file: Some(state),
            chunk,
            from: super::parse_time(&from)?,
            until: super::parse_time(&until)?,
            max_chunks,
            progress: !quiet && !json,
        };
        let r = backfill::backfill_audited(
            &db,
            &cfg.retention,
            &raw_policy,
            &opts,
            &mut |statement, outcome| {
                let extra = match &outcome {
                    Ok(points) => serde_json::json!({ "points_written": points }),
                    Err(_) => serde_json::Value::Null,
                };
                record(statement, (&outcome).into(), extra)
            },
        )
        .await?;
        if json {
            let both = serde_json::json!({ "diff": diff, "backfill": r });
            println!("{}", serde_json::to_string_pretty(&both)?);
        } else {
            print!("{}", r.to_text());
        }
    }
    Ok(())
}
