//! The `ha-ingestor` command line: parses arguments, sets up logging, calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ha_ingestor::alloc_counter::CountingAllocator;
use ha_ingestor::bench::pipeline as bench;
use ha_ingestor::config::{Config, LogFormat};
use ha_ingestor::{app, check, demo};

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Captures every Home Assistant event and stores it in InfluxDB without gaps.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        /// The TOML configuration file.
        #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
        config: PathBuf,
    },
    /// Run the whole path against the built-in simulator; no servers needed.
    Demo {
        /// How long the simulator emits (e.g. 30s, 2m).
        #[arg(long = "for", default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Simulated entities.
        #[arg(long, default_value_t = 200)]
        entities: usize,
        /// State changes per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Data directory (the file sink writes to <DIR>/points).
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Write to this InfluxDB 1.x instead of files (e.g. http://127.0.0.1:8086).
        #[arg(long)]
        influx_url: Option<String>,
        /// Database for --influx-url (created if missing).
        #[arg(long, default_value = "home_assistant")]
        influx_db: String,
        /// Write {"received","written","dropped","dead_lettered",…} to this file at exit.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Monitor listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        monitor: SocketAddr,
        /// No status lines, only the summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Validate a config and test every connection (exit 0 ok, 2 invalid, 3 peer failed).
    Check {
        /// The TOML configuration file.
        #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
        config: PathBuf,
    },
    /// Show which filter rules match an event, what they decide and transform, and the line protocol written.
    Explain {
        /// The TOML configuration file.
        #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
        config: PathBuf,
        /// An HA event as JSON (bare, or a WebSocket event frame); JSON lines for several, taken in order.
        #[arg(long)]
        event: PathBuf,
        /// The source id the event is taken to come from (`homeassistant`, `mqtt:<name>`).
        #[arg(long, default_value = "homeassistant")]
        source: String,
    },
    /// Send line-protocol files (the file sink's output) to the InfluxDB of a config.
    Replay {
        /// The config whose [influxdb] section receives the points.
        #[arg(long)]
        to_config: PathBuf,
        /// Folder of point files (default: the config's <data_dir>/points).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Specific files instead of a folder.
        files: Vec<PathBuf>,
    },
    /// Show or empty the durable buffer (run them while the service is stopped).
    Buffer {
        #[command(subcommand)]
        what: BufferCommand,
    },
    /// Measure the hot path.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Measure the stored schema, plan a better one, migrate data into it, compare the schema modes.
    Schema {
        #[command(subcommand)]
        what: SchemaCommand,
    },
    /// Retention policies and downsampling of `[retention]` (InfluxDB 1.x).
    Retention {
        #[command(subcommand)]
        what: RetentionCommand,
    },
}

/// Which InfluxDB the schema tools read: a config's `[influxdb]`, or a URL and database.
#[derive(clap::Args, Clone)]
struct InfluxTarget {
    /// A config whose `[influxdb]` section (and `[retention]`) is used.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// InfluxDB URL (instead of, or overriding, the config's).
    #[arg(long)]
    influx_url: Option<String>,
    /// Database (v1) or bucket (v2 compatibility API), overriding the config's.
    #[arg(long)]
    database: Option<String>,
}

#[derive(Subcommand)]
enum SchemaCommand {
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

#[derive(Subcommand)]
enum RetentionCommand {
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

#[derive(Subcommand)]
enum BufferCommand {
    /// Records, points, bytes and the oldest record's age.
    Inspect {
        /// The TOML configuration file.
        #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
        config: PathBuf,
    },
    /// Deliver everything in the buffer to the configured sink, then exit (Ctrl-C stops early).
    Drain {
        /// The TOML configuration file.
        #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Decode, filter and encode frames on one core; prints events/s.
    Pipeline {
        /// Recorded frames, one JSON frame per line (default: a built-in realistic corpus).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Minimum measuring time in seconds.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Group events into HA's coalesced array frames of this many messages (1 = one per frame).
        #[arg(long, default_value_t = 1)]
        coalesce: usize,
        /// Use this config file's `[filter]` and `[schema]` (default: keep everything, HA schema).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Record metrics as the service does (Prometheus recorder installed); without it no metric is touched.
        #[arg(long)]
        metrics: bool,
    },
    /// Measure the filter chain alone (cached and uncached) and its share of decode + chain + encode.
    Rules {
        /// The config whose `[filter]` and `[schema]` are measured.
        #[arg(long)]
        config: PathBuf,
        /// Recorded frames, one JSON frame per line (default: a built-in realistic corpus).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Which of the config's rules to keep: all, no-expressions, static.
        #[arg(long, value_enum, default_value_t = bench::RuleSelection::All)]
        rules: bench::RuleSelection,
        /// Minimum measuring time per stage in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Publish Zigbee2MQTT-style JSON to a broker, the load of `scripts/bench-mqtt-e2e`; prints JSON.
    MqttPublish {
        /// Broker host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Broker port.
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// Messages per second; 0 = flat out.
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        /// Seconds to publish.
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
        /// Number of topics (devices).
        #[arg(long, default_value_t = 500)]
        topics: usize,
        /// QoS 0 or 1.
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// Topic prefix.
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// Read and acknowledge MQTT as the source does, with nothing after it: the floor of the MQTT path; prints JSON.
    MqttConsume {
        /// Broker host.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Broker port.
        #[arg(long, default_value_t = 1883)]
        port: u16,
        /// Subscription filter.
        #[arg(long, default_value = "bench/+")]
        topic: String,
        /// QoS 0, 1 or 2.
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// `v5` or `v3.1.1`.
        #[arg(long, default_value = "v5")]
        protocol: String,
        /// Stop after this many seconds without a message (once one came).
        #[arg(long, default_value_t = 3.0)]
        idle: f64,
        /// Acknowledge at most every this many milliseconds (0: after every read batch); the source's rhythm is its group commit, 20–100 ms.
        #[arg(long, default_value_t = 0)]
        ack_every_ms: u64,
    },
    /// Append to and read from the durable buffer; prints points/s and MB/s.
    Buffer {
        /// Folder for the temporary buffer file (removed afterwards).
        #[arg(long, default_value = "./bench-buffer")]
        dir: PathBuf,
        /// Points per appended chunk (the pipeline appends up to 1024).
        #[arg(long, default_value_t = 1000)]
        points_per_chunk: usize,
        /// The fsync interval (default as in [buffer]; 0s = every append durable).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        fsync_interval: Duration,
        /// Measuring time per phase in seconds.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// MQTT topic matching + decoding on one core, per decoder; prints messages/s.
    Mqtt {
        /// Minimum measuring time per case in seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Print one JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The status page's "recent errors" come from this layer.
    let recent = ha_ingestor::monitor::page::RecentErrorsLayer;
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(recent)
            .init(),
        LogFormat::Human => builder.finish().with(recent).init(),
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("ha-ingestor: {error}");
        ExitCode::from(check::INVALID_CONFIG as u8)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ha_ingestor::ensure_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("ha-ingestor: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let flag_format = cli.log_format;
    match cli.command {
        Command::Run { config } => {
            let cfg = match load_config(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            init_logging(flag_format.unwrap_or(cfg.log.format), &cfg.log.level);
            let result = runtime.block_on(async {
                let mut running = app::start(&cfg).await?;
                tracing::info!(message = "Started.", version = env!("CARGO_PKG_VERSION"), config = %config.display());
                // SIGHUP re-reads the config (MQTT subscriptions change live) until SIGINT/SIGTERM.
                running.serve_until_shutdown(&config).await;
                tracing::info!(message = "Stopping: sources first, then flushing the sink.");
                running.stop().await;
                anyhow::Ok(())
            });
            report(result)
        }
        Command::Demo {
            duration,
            entities,
            rate,
            data_dir,
            influx_url,
            influx_db,
            summary_json,
            monitor,
            quiet,
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            if entities == 0 || !(rate > 0.0 && rate.is_finite()) {
                eprintln!("ha-ingestor demo: --entities and --rate must be above zero");
                return ExitCode::from(2);
            }
            let opts = demo::DemoOptions {
                duration,
                entities,
                rate,
                data_dir,
                influx_url,
                influx_db,
                monitor,
                status_lines: !quiet,
            };
            let result = runtime.block_on(async {
                let summary = demo::run(&opts).await?;
                println!(
                    "demo summary: emitted={} received={} written={} dropped={} dead_lettered={} skipped={} (unknown/unavailable, as HA) filtered={}",
                    summary.emitted,
                    summary.received,
                    summary.written,
                    summary.dropped,
                    summary.dead_lettered,
                    summary.skipped,
                    summary.filtered
                );
                if let Some(path) = &summary_json {
                    let json = serde_json::to_string_pretty(&summary)?;
                    std::fs::write(path, json + "\n")
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                anyhow::ensure!(summary.dropped == 0, "{} events or points were lost", summary.dropped);
                anyhow::Ok(())
            });
            report(result)
        }
        Command::Check { config } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let code = runtime.block_on(check::run(&config));
            ExitCode::from(code as u8)
        }
        Command::Explain {
            config,
            event,
            source,
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let cfg = match load_config(&config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            let result = (|| {
                let text = std::fs::read_to_string(&event)
                    .with_context(|| format!("reading {}", event.display()))?;
                let events = ha_ingestor::pipeline::explain::events_from_file_text(&text, &source)?;
                print!(
                    "{}",
                    ha_ingestor::pipeline::explain::explain_events(&cfg, &events)?
                );
                anyhow::Ok(())
            })();
            report(result)
        }
        Command::Replay {
            to_config,
            from,
            files,
        } => {
            let cfg = match load_config(&to_config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            init_logging(flag_format.unwrap_or(cfg.log.format), &cfg.log.level);
            let result = runtime.block_on(replay(cfg, from, files));
            report(result)
        }
        Command::Buffer { what } => {
            let (BufferCommand::Inspect { config } | BufferCommand::Drain { config }) = &what;
            let cfg = match load_config(config) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            init_logging(flag_format.unwrap_or(cfg.log.format), &cfg.log.level);
            let dir = cfg.buffer_dir();
            let result = runtime.block_on(async {
                match what {
                    BufferCommand::Inspect { .. } => {
                        let s = app::inspect_buffer(&cfg).await?;
                        println!(
                            "buffer {}: {} records, {} points, {} bytes",
                            dir.display(),
                            s.records,
                            s.points,
                            s.bytes
                        );
                        if let (Some(seq), Some(age)) = (s.oldest_seq, s.oldest_age) {
                            println!(
                                "oldest: sequence {seq}, appended {} ago",
                                humantime::format_duration(Duration::from_secs(age.as_secs()))
                            );
                        }
                        if s.corrupt_skipped > 0 {
                            println!("corrupt records skipped and removed: {}", s.corrupt_skipped);
                        }
                    }
                    BufferCommand::Drain { .. } => {
                        let r = app::drain_buffer(&cfg, app::shutdown_signal()).await?;
                        println!(
                            "drained: {} points written, {} set aside (see {}); {} records ({} points) left",
                            r.written,
                            r.dead_lettered,
                            cfg.dead_letter_dir().display(),
                            r.records_left,
                            r.points_left
                        );
                        anyhow::ensure!(r.records_left == 0, "the buffer is not empty");
                    }
                }
                anyhow::Ok(())
            });
            report(result)
        }
        Command::Schema { what } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            report(runtime.block_on(schema_command(what)))
        }
        Command::Retention { what } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            report(runtime.block_on(retention_command(what)))
        }
        Command::Bench {
            what:
                BenchCommand::MqttConsume {
                    host,
                    port,
                    topic,
                    qos,
                    protocol,
                    idle,
                    ack_every_ms,
                },
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let cfg = ha_ingestor::bench::mqtt_floor::FloorConfig {
                host,
                port,
                topic,
                qos,
                protocol,
                idle: std::time::Duration::from_secs_f64(idle.max(0.1)),
                ack_every: std::time::Duration::from_millis(ack_every_ms),
            };
            let result = runtime.block_on(async {
                // The benchmark script starts publishing when it reads this line.
                let r = ha_ingestor::bench::mqtt_floor::consume(&cfg, || eprintln!("subscribed"))
                    .await?;
                println!("{}", serde_json::to_string(&r)?);
                anyhow::Ok(())
            });
            report(result)
        }
        Command::Bench {
            what:
                BenchCommand::MqttPublish {
                    host,
                    port,
                    rate,
                    seconds,
                    topics,
                    qos,
                    prefix,
                },
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let cfg = ha_ingestor::bench::mqtt_loadgen::LoadConfig {
                host,
                port,
                rate,
                seconds,
                topics,
                qos,
                prefix,
                base_ms: ha_ingestor::event::Timestamp::now().as_nanos() / 1_000_000,
            };
            let result = runtime.block_on(async {
                let r = ha_ingestor::bench::mqtt_loadgen::publish(&cfg).await?;
                println!("{}", serde_json::to_string(&r)?);
                anyhow::Ok(())
            });
            report(result)
        }
        Command::Bench {
            what:
                BenchCommand::Buffer {
                    dir,
                    points_per_chunk,
                    fsync_interval,
                    seconds,
                    json,
                },
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let cfg = ha_ingestor::config::BufferConfig {
                fsync_interval,
                ..Default::default()
            };
            let result = (|| {
                let r = ha_ingestor::bench::buffer::run(&dir, &cfg, points_per_chunk, seconds)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "bench buffer: {} points per chunk, {:.0} bytes per point, fsync every {}",
                        r.points_per_chunk, r.bytes_per_point, r.fsync_interval
                    );
                    println!(
                        "  append (1 thread)        {:>12.0} points/s {:>8.1} MB/s",
                        r.append_points_per_sec, r.append_mb_per_sec
                    );
                    println!(
                        "  file size                {:>12.0} MB after appends, {:.0} MB after acks",
                        r.file_bytes_after_append as f64 / 1e6,
                        r.file_bytes_after_ack as f64 / 1e6
                    );
                    println!(
                        "  open (verify {:>5.0} MB)  {:>21.1} MB/s",
                        r.open_verify_bytes as f64 / 1e6,
                        r.open_verify_mb_per_sec
                    );
                    println!(
                        "  read + acknowledge       {:>12.0} points/s {:>8.1} MB/s",
                        r.read_ack_points_per_sec, r.read_ack_mb_per_sec
                    );
                    println!(
                        "  async → appender thread  {:>12.0} chunks/s",
                        r.async_thread_chunks_per_sec
                    );
                    println!(
                        "  async → spawn_blocking   {:>12.0} chunks/s",
                        r.async_spawn_blocking_chunks_per_sec
                    );
                }
                anyhow::Ok(())
            })();
            report(result)
        }
        Command::Bench {
            what:
                BenchCommand::Pipeline {
                    input,
                    seconds,
                    coalesce,
                    config,
                    json,
                    metrics,
                },
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            if metrics && ha_ingestor::monitor::http::prometheus().is_none() {
                eprintln!("bench pipeline: the metrics recorder could not be installed");
            }
            let result = (|| {
                let (frames, name) = bench_frames(input.as_deref())?;
                let (filter, schema, name) = match &config {
                    Some(path) => {
                        let cfg = Config::load(path)?;
                        (
                            cfg.filter,
                            cfg.schema,
                            format!("{name}, config {}", path.display()),
                        )
                    }
                    None => (Default::default(), Default::default(), name),
                };
                let (frames, name) = if coalesce > 1 {
                    (
                        bench::coalesce(&frames, coalesce),
                        format!("{name}, arrays of {coalesce}"),
                    )
                } else {
                    (frames, name)
                };
                let r = bench::run_monitored(&frames, &name, seconds, &filter, &schema, metrics)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "bench pipeline: {}{}",
                        r.input,
                        if r.metrics { ", metrics recorded" } else { "" }
                    );
                    println!(
                        "  events            {} ({} state_changed) in {:.2} s",
                        r.events, r.state_changed, r.seconds
                    );
                    println!("  events/s (1 core) {:.0}", r.events_per_sec);
                    println!("  state_changed/s   {:.0}", r.state_changed_per_sec);
                    println!(
                        "  points            {} ({:.0} bytes of line protocol per event)",
                        r.points, r.output_bytes_per_event
                    );
                    match (r.allocs_per_event, r.bytes_allocated_per_event) {
                        (Some(a), Some(b)) => println!("  allocations/event {a:.1} ({b:.0} bytes)"),
                        _ => println!(
                            "  allocations/event unknown (counting allocator not installed)"
                        ),
                    }
                    if r.decode_errors > 0 {
                        println!("  decode errors     {}", r.decode_errors);
                    }
                }
                anyhow::Ok(())
            })();
            report(result)
        }
        Command::Bench {
            what:
                BenchCommand::Rules {
                    config,
                    input,
                    rules,
                    seconds,
                    json,
                },
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let result = (|| {
                let (frames, name) = bench_frames(input.as_deref())?;
                let cfg = Config::load(&config)?;
                let filter = rules.apply(&cfg.filter);
                let r = bench::rules(&frames, &name, seconds, &filter, &cfg.schema)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("bench rules: {} ({} rules)", r.input, r.rules);
                    println!("  events             {} ({} kept)", r.events, r.kept);
                    println!(
                        "  decisions/s        {:.0} (decision cache)",
                        r.decisions_per_sec
                    );
                    println!(
                        "  decisions/s        {:.0} (every rule in full, no cache)",
                        r.uncached_decisions_per_sec
                    );
                    println!(
                        "  ns/event           decode {:.0}, chain {:.0}, encode {:.0}",
                        r.decode_ns_per_event, r.chain_ns_per_event, r.encode_ns_per_event
                    );
                    println!("  chain share        {:.1} %", r.chain_share * 100.0);
                    if let (Some(share), Some(rate), Some(uncached), Some(ns)) = (
                        r.cpu_share,
                        r.decisions_per_cpu_sec,
                        r.uncached_decisions_per_cpu_sec,
                        r.chain_cpu_ns_per_event,
                    ) {
                        println!(
                            "  per CPU-second     {rate:.0} decisions (cache), {uncached:.0} (no cache); chain {ns:.0} CPU ns/event; thread on a CPU {:.0} % of the wall time",
                            share * 100.0
                        );
                    }
                    println!(
                        "  rule timing        {:.3} timed rule runs/event x {:.1} ns = {:.2} ns/event (sampled per-rule evaluation time, included above)",
                        r.rule_time_samples_per_event, r.clock_pair_ns, r.rule_timing_ns_per_event
                    );
                }
                anyhow::Ok(())
            })();
            report(result)
        }
        Command::Bench {
            what: BenchCommand::Mqtt { seconds, json },
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let result = (|| {
                let cases = ha_ingestor::bench::mqtt_decode::run(seconds)?;
                if json {
                    println!("{}", serde_json::to_string(&cases)?);
                } else {
                    println!("bench mqtt: topic matching + decoding, one core");
                    for c in &cases {
                        println!(
                            "  {:<26} {:>10.0} msg/s ({} msg per CPU-second) {:>10.0} events/s  {} B payload, {} subscriptions, allocs/msg {}",
                            c.case,
                            c.messages_per_sec,
                            c.messages_per_cpu_sec
                                .map_or("n/a".to_string(), |m| format!("{m:.0}")),
                            c.events_per_sec,
                            c.payload_bytes,
                            c.subscriptions,
                            c.allocs_per_message
                                .map_or("n/a".to_string(), |a| format!("{a:.1}")),
                        );
                    }
                }
                anyhow::Ok(())
            })();
            report(result)
        }
    }
}

/// The config (if any) and the InfluxDB connection of a schema tool.
fn influx_target(
    target: &InfluxTarget,
) -> anyhow::Result<(Option<Config>, ha_ingestor::config::InfluxConfig)> {
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
        (None, Some(url)) => ha_ingestor::config::InfluxConfig::v1(url.clone(), ""),
        (None, None) => anyhow::bail!("give --config with an [influxdb] section, or --influx-url"),
    };
    if let Some(db) = &target.database {
        match influx.api {
            ha_ingestor::config::InfluxApi::V1 => influx.database = Some(db.clone()),
            ha_ingestor::config::InfluxApi::V2 => influx.bucket = Some(db.clone()),
        }
    }
    Ok((cfg, influx))
}

async fn schema_command(what: SchemaCommand) -> anyhow::Result<()> {
    use ha_ingestor::schema::{analyze, influxql::InfluxQl, migrate, plan};
    match what {
        SchemaCommand::Bench {
            entities,
            days,
            runs,
            seed,
            influxd,
            json,
        } => {
            let opts = ha_ingestor::bench::schema::BenchOptions {
                entities,
                days,
                runs,
                seed,
                influxd,
            };
            let r = ha_ingestor::bench::schema::run(&opts).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", ha_ingestor::bench::schema::render_text(&r));
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
            let parse = |t: &Option<String>| -> anyhow::Result<Option<i64>> {
                t.as_deref()
                    .map(|t| ha_ingestor::event::Timestamp::parse_rfc3339(t).map(|ts| ts.0))
                    .transpose()
                    .context("--from/--until")
            };
            let opts = migrate::MigrateOptions {
                schema: to.schema,
                to_database: to_database.unwrap_or_else(|| db.database().to_string()),
                to_retention_policy,
                state_file: state,
                chunk,
                from: parse(&from)?,
                until: parse(&until)?,
                max_chunks,
                dry_run,
                progress: !quiet,
            };
            let r = migrate::migrate(&db, &opts).await?;
            print!("{}", r.to_text());
            anyhow::ensure!(r.mismatches == 0, "{} chunks did not verify", r.mismatches);
        }
    }
    Ok(())
}

async fn retention_command(what: RetentionCommand) -> anyhow::Result<()> {
    use ha_ingestor::schema::backfill;
    use ha_ingestor::schema::{influxql::InfluxQl, retention};
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
        influx.api == ha_ingestor::config::InfluxApi::V1,
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
        retention::apply(&db, &diff).await?;
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
        let parse = |t: &Option<String>| -> anyhow::Result<Option<i64>> {
            t.as_deref()
                .map(|t| ha_ingestor::event::Timestamp::parse_rfc3339(t).map(|ts| ts.0))
                .transpose()
                .context("--from/--until")
        };
        let opts = backfill::BackfillOptions {
            state_file: Some(state),
            chunk,
            from: parse(&from)?,
            until: parse(&until)?,
            max_chunks,
            progress: !quiet && !json,
        };
        let r = backfill::backfill(&db, &cfg.retention, &raw_policy, &opts).await?;
        if json {
            let both = serde_json::json!({ "diff": diff, "backfill": r });
            println!("{}", serde_json::to_string_pretty(&both)?);
        } else {
            print!("{}", r.to_text());
        }
    }
    Ok(())
}

/// The frames to measure: a recording, or the built-in corpus.
fn bench_frames(input: Option<&std::path::Path>) -> anyhow::Result<(Vec<String>, String)> {
    Ok(match input {
        Some(path) => (
            bench::load_frames(path).with_context(|| format!("reading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (bench::builtin_frames(), "built-in corpus".to_string()),
    })
}

async fn replay(cfg: Config, from: Option<PathBuf>, files: Vec<PathBuf>) -> anyhow::Result<()> {
    use ha_ingestor::dead_letter::DeadLetters;
    use ha_ingestor::sink::{file, influxdb::InfluxWriter, replay};
    let influx = cfg
        .influxdb
        .as_ref()
        .context("the config has no [influxdb] section to replay into")?;
    let files = if files.is_empty() {
        let dir = from.unwrap_or_else(|| cfg.points_dir());
        file::point_files(&dir).with_context(|| format!("listing {}", dir.display()))?
    } else {
        files
    };
    anyhow::ensure!(!files.is_empty(), "no point files to replay");
    let writer = InfluxWriter::new(influx)?;
    let dead_letters = DeadLetters::new(cfg.dead_letter_dir());
    let report = replay::replay(&files, &writer, influx.batch_size, &dead_letters).await?;
    println!(
        "replay: {} files, {} points sent to {}, {} set aside (see {})",
        report.files,
        report.points,
        ha_ingestor::config::redact_url(&influx.url),
        report.dead_lettered,
        cfg.dead_letter_dir().display()
    );
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ha-ingestor: {error:#}");
            ExitCode::FAILURE
        }
    }
}
