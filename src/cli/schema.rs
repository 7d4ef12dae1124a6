//! `ha-ingestor schema …`: measure the stored schema, plan a better one, migrate data into it, and compare the schema modes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

use crate::config::Config;

/// Which InfluxDB the schema tools read: a config's `[influxdb]`, or a URL and database.
#[derive(clap::Args, Clone)]
pub struct InfluxTarget {
    /// A config whose `[influxdb]` section (and `[retention]`) is used.
    #[arg(long, short)]
    pub(crate) config: Option<PathBuf>,
    /// InfluxDB URL (instead of, or overriding, the config's).
    #[arg(long)]
    pub(crate) influx_url: Option<String>,
    /// Database (v1) or bucket (v2 compatibility API), overriding the config's.
    #[arg(long)]
    pub(crate) database: Option<String>,
}

/// The schema tools.
#[derive(Subcommand)]
pub enum SchemaCommand {
    /// Report series per measurement, high-cardinality tags, type conflicts, `_str` twins, garbage twins, sprawl.
    Analyze {
        #[command(flatten)]
        target: InfluxTarget,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Do not count points per measurement (faster on big databases).
        #[arg(long)]
        no_point_counts: bool,
    },
    /// Propose an `optimized` schema configuration (a TOML snippet) from the analysis.
    Plan {
        #[command(flatten)]
        target: InfluxTarget,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Load the same generated history in each schema mode into a private influxd and time dashboard queries.
    Bench {
        /// Entities in the generated home.
        #[arg(long, default_value_t = 200)]
        entities: usize,
        /// Days of history.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Timed runs per query (after one warm-up); the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Generator seed (the same seed gives the same history).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// The influxd 1.x binary (default: from PATH).
        #[arg(long)]
        influxd: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy points of the `homeassistant` layout into the layout of `--to-config`'s `[schema]`.
    Migrate {
        #[command(flatten)]
        target: InfluxTarget,
        /// Config whose `[schema]` (usually `mode = "optimized"`) encodes the copies.
        #[arg(long)]
        to_config: PathBuf,
        /// Database to write into (default: the source database).
        #[arg(long)]
        to_database: Option<String>,
        /// Retention policy to write into (default: the database's default).
        #[arg(long)]
        to_retention_policy: Option<String>,
        /// Where progress is saved, so an interrupted run resumes.
        #[arg(long, default_value = "migrate-state.json")]
        state: PathBuf,
        /// Width of one time chunk.
        #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
        chunk: Duration,
        /// Start of the range (RFC 3339; default: the oldest point).
        #[arg(long)]
        from: Option<String>,
        /// End of the range, exclusive (RFC 3339; default: just after the newest point).
        #[arg(long)]
        until: Option<String>,
        /// Stop after this many chunks (resume later with the same state file).
        #[arg(long)]
        max_chunks: Option<usize>,
        /// Read, rebuild and encode, but write nothing and save no progress.
        #[arg(long)]
        dry_run: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
}

/// The config (if any) and the InfluxDB connection of a schema tool.
pub(crate) fn influx_target(
    target: &InfluxTarget,
) -> anyhow::Result<(Option<Config>, crate::config::InfluxConfig)> {
    let cfg = match &target.config {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let mut influx = match (
        cfg.as_ref().and_then(|c| c.influxdb.clone()),
        &target.influx_url,
    ) {
        (Some(mut i), url) => {
            if let Some(url) = url {
                i.url = url.clone();
            }
            i
        }
        (None, Some(url)) => crate::config::InfluxConfig::v1(url.clone(), ""),
        (None, None) => anyhow::bail!("give --config with an [influxdb] section, or --influx-url"),
    };
    if let Some(db) = &target.database {
        match influx.api {
            crate::config::InfluxApi::V1 => influx.database = Some(db.clone()),
            crate::config::InfluxApi::V2 => influx.bucket = Some(db.clone()),
        }
    }
    Ok((cfg, influx))
}

/// Runs one schema tool and prints its report.
pub async fn main(what: SchemaCommand) -> anyhow::Result<()> {
    use crate::schema_tools::{analyze, influxql::InfluxQl, migrate, plan};
    match what {
        SchemaCommand::Bench {
            entities,
            days,
            runs,
            seed,
            influxd,
            json,
        } => {
            let opts = crate::bench::schema::BenchOptions {
                entities,
                days,
                runs,
                seed,
                influxd,
            };
            let r = crate::bench::schema::run(&opts).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", crate::bench::schema::render_text(&r));
            }
            anyhow::ensure!(
                r.all_equal(),
                "the layouts gave different answers (see the table)"
            );
        }
        SchemaCommand::Analyze {
            target,
            json,
            no_point_counts,
        } => {
            let (cfg, influx) = influx_target(&target)?;
            let db = InfluxQl::new(&influx)?;
            let mut opts = analyze::AnalyzeOptions {
                count_points: !no_point_counts,
                ..Default::default()
            };
            if let Some(cfg) = cfg {
                opts.events_measurement = cfg.schema.events_measurement;
            }
            let a = analyze::analyze(&db, &opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                print!("{}", a.to_text());
            }
        }
        SchemaCommand::Plan { target, json } => {
            let (cfg, influx) = influx_target(&target)?;
            let db = InfluxQl::new(&influx)?;
            let mut opts = analyze::AnalyzeOptions::default();
            if let Some(cfg) = cfg {
                opts.events_measurement = cfg.schema.events_measurement;
            }
            let a = analyze::analyze(&db, &opts).await?;
            let p = plan::plan(&a, &opts.events_measurement);
            if json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                print!("{}", p.to_text());
            }
        }
        SchemaCommand::Migrate {
            target,
            to_config,
            to_database,
            to_retention_policy,
            state,
            chunk,
            from,
            until,
            max_chunks,
            dry_run,
            quiet,
        } => {
            let (_, influx) = influx_target(&target)?;
            let db = InfluxQl::new(&influx)?;
            let to = Config::load(&to_config)?;
            // Opened before anything is written: no audit log, no migration.
            let audit = if dry_run {
                None
            } else {
                Some(crate::audit::AuditLog::open(&to.data_dir)?)
            };
            let server = crate::config::redact_url(&influx.url);
            let opts = migrate::MigrateOptions {
                schema: to.schema,
                to_database: to_database.unwrap_or_else(|| db.database().to_string()),
                to_retention_policy,
                state_file: state,
                chunk,
                from: super::parse_time(&from)?,
                until: super::parse_time(&until)?,
                max_chunks,
                dry_run,
                progress: !quiet,
            };
            let mut on_write = |chunk: &migrate::ChunkWrite<'_>| match &audit {
                Some(audit) => audit
                    .record(
                        "schema migrate",
                        &format!("{server} {}", chunk.database),
                        serde_json::json!({
                            "from": crate::event::Timestamp(chunk.start).to_rfc3339(),
                            "until": crate::event::Timestamp(chunk.end).to_rfc3339(),
                            "retention_policy": chunk.retention_policy,
                            "points": chunk.points,
                        }),
                        &(&chunk.result).into(),
                    )
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            };
            let r = migrate::migrate_audited(&db, &opts, &mut on_write).await?;
            print!("{}", r.to_text());
            anyhow::ensure!(r.mismatches == 0, "{} chunks did not verify", r.mismatches);
        }
    }
    Ok(())
}
