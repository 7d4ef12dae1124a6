//! The `ha-ingestor` command line: parses arguments, sets up logging, calls the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ha_ingestor::alloc_counter::CountingAllocator;
use ha_ingestor::config::{Config, LogFormat};
use ha_ingestor::{app, bench, check, demo};

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
                let running = app::start(&cfg).await?;
                tracing::info!(message = "Started.", version = env!("CARGO_PKG_VERSION"), config = %config.display());
                app::shutdown_signal().await;
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
                let r =
                    ha_ingestor::sink::buffer::bench::run(&dir, &cfg, points_per_chunk, seconds)?;
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
                },
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
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
                let r = bench::run_with(&frames, &name, seconds, &filter, &schema)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!("bench pipeline: {}", r.input);
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
                }
                anyhow::Ok(())
            })();
            report(result)
        }
    }
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
