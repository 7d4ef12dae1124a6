//! `ha-ingestor demo`: the whole path in one process, with the built-in simulator as Home Assistant.
//!
//! The simulator emits `rate × duration` state changes; the demo runs the real
//! topology against it (file sink by default, InfluxDB with `--influx-url`),
//! prints a status line per second, waits until everything emitted has been
//! received and flushed, and accounts for every event in the summary.

use std::process::ExitCode;

use tokio::runtime::Runtime;

use crate::config::LogFormat;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::app;
use crate::config::{Config, HomeAssistantConfig, InfluxConfig, MonitorConfig};
use crate::signals::Signals;
use crate::simulator::{Simulator, SimulatorConfig};

/// What the demo is asked to do.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How long the simulator emits.
    pub duration: Duration,
    /// Simulated entities.
    pub entities: usize,
    /// Events per second.
    pub rate: f64,
    /// Data directory (points, dead letters).
    pub data_dir: PathBuf,
    /// Write to this InfluxDB (v1) instead of files.
    pub influx_url: Option<String>,
    /// The database for `influx_url` (created if missing).
    pub influx_db: String,
    /// Monitor listen address (port 0 picks a free one).
    pub monitor: SocketAddr,
    /// Print status lines.
    pub status_lines: bool,
}

/// The demo's accounting; `dropped` must be 0.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct DemoSummary {
    /// Events the simulator sent.
    pub emitted: u64,
    /// Events ha-ingestor decoded.
    pub received: u64,
    /// Points stored by the sink.
    pub written: u64,
    /// Events or points lost, from every cause.
    pub dropped: u64,
    /// Points or input set aside with a reason.
    pub dead_lettered: u64,
    /// Events removed by the filter.
    pub filtered: u64,
    /// Events that give no point (unknown/unavailable, as HA).
    pub skipped: u64,
    /// Points encoded.
    pub encoded: u64,
}

/// Runs the demo to the end and returns its accounting.
pub async fn run(opts: &DemoOptions) -> anyhow::Result<DemoSummary> {
    // First: a Ctrl-C while the demo starts stops it once started, as `run` does.
    let mut signals = Signals::listen();
    let token: String = {
        use rand::Rng as _;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect()
    };
    let max_events = ((opts.rate * opts.duration.as_secs_f64()).round() as u64).max(1);
    let sim = Simulator::start(
        SimulatorConfig {
            entities: opts.entities,
            rate: opts.rate,
            token: token.clone(),
            seed: rand::random(),
            max_events: Some(max_events),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .context("starting the simulator")?;

    let influxdb = match &opts.influx_url {
        Some(url) => {
            // Nothing but the simulator runs yet: a stop while InfluxDB is asked ends here.
            tokio::select! {
                created = create_database(url, &opts.influx_db) => created?,
                _ = signals.shutdown() => {
                    sim.shutdown().await;
                    anyhow::bail!("interrupted before the pipeline started");
                }
            }
            Some(InfluxConfig::v1(url.clone(), opts.influx_db.clone()))
        }
        None => None,
    };
    let cfg = Config {
        data_dir: opts.data_dir.clone(),
        homeassistant: vec![HomeAssistantConfig::new(sim.url(), token)],
        influxdb,
        monitor: MonitorConfig {
            enabled: true,
            listen: opts.monitor,
            ..MonitorConfig::default()
        },
        ..Config::default()
    };
    cfg.validate().context("demo configuration")?;
    let running = app::start(&cfg).await.context("starting the pipeline")?;
    let stats = running.stats();
    if opts.status_lines {
        println!(
            "demo: simulator at {} with {} entities at {}/s for {:?}; monitor at http://{}; data in {}",
            sim.url(),
            opts.entities,
            opts.rate,
            opts.duration,
            running
                .monitor_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            cfg.data_dir.display()
        );
    }

    let started = Instant::now();
    let deadline = opts.duration + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_received = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = signals.shutdown() => {
                eprintln!("demo: interrupted; stopping");
                break;
            }
        }
        let t = stats.totals();
        if opts.status_lines {
            println!(
                "demo {:>4}s  emitted {:>8}  received {:>8}  written {:>8}  rate {:>7}/s  dropped {}  dead_lettered {}",
                started.elapsed().as_secs(),
                sim.emitted_count(),
                t.received,
                t.written,
                t.received - last_received,
                t.dropped,
                t.dead_lettered
            );
            let _ = std::io::stdout().flush();
        }
        last_received = t.received;
        if sim.finished() && t.received >= sim.emitted_count() {
            break;
        }
        if started.elapsed() > deadline {
            eprintln!("demo: not every emitted event arrived within {deadline:?}; stopping");
            break;
        }
    }
    let totals = running.stop().await;
    let emitted = sim.emitted_count();
    sim.shutdown().await;
    let lost_events = emitted.saturating_sub(totals.received);
    let lost_points = totals
        .encoded
        .saturating_sub(totals.written + totals.dead_lettered);
    Ok(DemoSummary {
        emitted,
        received: totals.received,
        written: totals.written,
        dropped: totals.dropped + lost_events + lost_points,
        dead_lettered: totals.dead_lettered + totals.decode_errors,
        filtered: totals.filtered,
        skipped: totals.skipped,
        encoded: totals.encoded,
    })
}

/// `CREATE DATABASE` is idempotent in InfluxDB 1.x, so the demo can always ask.
async fn create_database(url: &str, db: &str) -> anyhow::Result<()> {
    crate::ensure_crypto_provider();
    let query = format!("CREATE DATABASE \"{}\"", db.replace('"', "\\\""));
    let endpoint = url::Url::parse_with_params(
        &format!("{}/query", url.trim_end_matches('/')),
        [("q", query.as_str())],
    )
    .with_context(|| format!("{url:?} is not a URL"))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let response = client
        .post(endpoint)
        .send()
        .await
        .with_context(|| format!("InfluxDB at {url} is unreachable"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("InfluxDB refused CREATE DATABASE {db}: {status} {body}");
    }
    Ok(())
}

/// Arguments of `demo`.
#[derive(clap::Args)]
pub struct Args {
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
}

/// Runs the demo and prints its summary; fails if anything was lost.
pub fn main(args: Args, log_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
    super::init_logging(log_format.unwrap_or_default(), "warn");
    if args.entities == 0 || !(args.rate > 0.0 && args.rate.is_finite()) {
        eprintln!("ha-ingestor demo: --entities and --rate must be above zero");
        return ExitCode::from(2);
    }
    let opts = DemoOptions {
        duration: args.duration,
        entities: args.entities,
        rate: args.rate,
        data_dir: args.data_dir,
        influx_url: args.influx_url,
        influx_db: args.influx_db,
        monitor: args.monitor,
        status_lines: !args.quiet,
    };
    let result = runtime.block_on(async {
        let summary = run(&opts).await?;
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
        if let Some(path) = &args.summary_json {
            let json = serde_json::to_string_pretty(&summary)?;
            std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        }
        anyhow::ensure!(summary.dropped == 0, "{} events or points were lost", summary.dropped);
        anyhow::Ok(())
    });
    super::report(result)
}
