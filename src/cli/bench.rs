//! `ha-ingestor bench …`: the benchmarks and load tools, each printing its own report (text, or JSON with `--json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use tokio::runtime::Runtime;

use super::{init_logging, report};
use crate::bench::pipeline as bench;
use crate::config::{Config, LogFormat};

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
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
    /// Serve the simulated Home Assistant on a port, the load of `scripts/bench-ws-e2e`: it
    /// changes states at `rate`/s while a client is subscribed, stops after `events`, and
    /// prints JSON (events sent) on SIGTERM.
    HaServe {
        /// Port on 127.0.0.1 (0 = a free one, printed on stderr).
        #[arg(long, default_value_t = 8123)]
        port: u16,
        /// State changes per second, all entities together.
        #[arg(long, default_value_t = 300.0)]
        rate: f64,
        /// Entities.
        #[arg(long, default_value_t = 200)]
        entities: usize,
        /// Stop changing states after this many events (0 = never).
        #[arg(long, default_value_t = 0)]
        events: u64,
        /// The access token clients must present (with `--homes`, home i's is `<token>-<i>`).
        #[arg(long, default_value = "bench-token")]
        token: String,
        /// Serve this many homes, each a simulator of its own on its own port, with `rate`
        /// state changes per second, a burst of 10 once a minute, and `--home-entities`
        /// entities each; 0 = one home of `entities`.
        #[arg(long, default_value_t = 0)]
        homes: usize,
        /// Entities per home with `--homes` (a small house: a few sensors, lights and switches).
        #[arg(long, default_value_t = 12)]
        home_entities: usize,
        /// With `--homes`: write one home file per home here (`home-0000.toml`: url and token), a `homes_dir` for the ingestor.
        #[arg(long)]
        homes_dir: Option<std::path::PathBuf>,
    },
    /// Read and decode Home Assistant's event stream as the source does, with nothing after it: the floor of the HA path; prints JSON.
    HaConsume {
        /// `ws://host:port/api/websocket`.
        #[arg(long, default_value = "ws://127.0.0.1:8123/api/websocket")]
        url: String,
        /// File holding the access token.
        #[arg(long)]
        token_file: PathBuf,
        /// Stop after this many seconds without an event (once one came).
        #[arg(long, default_value_t = 3.0)]
        idle: f64,
        /// Read at every frame instead of by tick and burst.
        #[arg(long)]
        every_frame: bool,
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

/// Runs one benchmark and prints its report.
pub fn main(what: BenchCommand, flag_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
    match what {
        BenchCommand::MqttConsume {
            host,
            port,
            topic,
            qos,
            protocol,
            idle,
            ack_every_ms,
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let cfg = crate::bench::mqtt_floor::FloorConfig {
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
                let r = crate::bench::mqtt_floor::consume(&cfg, || eprintln!("subscribed")).await?;
                println!("{}", serde_json::to_string(&r)?);
                anyhow::Ok(())
            });
            report(result)
        }
        BenchCommand::HaConsume {
            url,
            token_file,
            idle,
            every_frame,
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let result = runtime.block_on(async {
                let token = std::fs::read_to_string(&token_file)
                    .with_context(|| format!("reading {}", token_file.display()))?;
                let cfg = crate::bench::ha_floor::FloorConfig {
                    url,
                    token: token.trim_end().to_string(),
                    idle: std::time::Duration::from_secs_f64(idle.max(0.1)),
                    every_frame,
                };
                // SIGTERM ends the reading with a report, as idleness does.
                let stop = tokio_util::sync::CancellationToken::new();
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .context("cannot listen for SIGTERM")?;
                let on_term = stop.clone();
                tokio::spawn(async move {
                    term.recv().await;
                    on_term.cancel();
                });
                // On a worker, as the source's session runs (not on this blocked thread); the
                // benchmark script measures from `subscribed` on.
                let r = tokio::spawn(async move {
                    crate::bench::ha_floor::consume(&cfg, stop, || eprintln!("subscribed")).await
                })
                .await??;
                println!("{}", serde_json::to_string(&r)?);
                anyhow::Ok(())
            });
            report(result)
        }
        BenchCommand::HaServe {
            port,
            rate,
            entities,
            events,
            token,
            homes,
            home_entities,
            homes_dir,
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let result = if homes > 0 {
                runtime.block_on(ha_serve_homes(homes, rate, home_entities, token, homes_dir))
            } else {
                runtime.block_on(ha_serve(port, rate, entities, events, token))
            };
            report(result)
        }
        BenchCommand::MqttPublish {
            host,
            port,
            rate,
            seconds,
            topics,
            qos,
            prefix,
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let cfg = crate::bench::mqtt_loadgen::LoadConfig {
                host,
                port,
                rate,
                seconds,
                topics,
                qos,
                prefix,
                base_ms: crate::event::Timestamp::now().as_nanos() / 1_000_000,
            };
            let result = runtime.block_on(async {
                let r = crate::bench::mqtt_loadgen::publish(&cfg).await?;
                println!("{}", serde_json::to_string(&r)?);
                anyhow::Ok(())
            });
            report(result)
        }
        BenchCommand::Buffer {
            dir,
            points_per_chunk,
            fsync_interval,
            seconds,
            json,
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let cfg = crate::config::BufferConfig {
                fsync_interval,
                ..Default::default()
            };
            let result = (|| {
                let r = crate::bench::buffer::run(&dir, &cfg, points_per_chunk, seconds)?;
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
        BenchCommand::Pipeline {
            input,
            seconds,
            coalesce,
            config,
            json,
            metrics,
        } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            if metrics && crate::monitor::http::prometheus().is_none() {
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
        BenchCommand::Rules {
            config,
            input,
            rules,
            seconds,
            json,
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
        BenchCommand::Mqtt { seconds, json } => {
            init_logging(flag_format.unwrap_or_default(), "warn");
            let result = (|| {
                let cases = crate::bench::mqtt_decode::run(seconds)?;
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

/// `bench ha-serve`: the simulator in a process of its own, so the ingestor's CPU read from
/// `/proc` is its own; runs until SIGTERM/SIGINT, then prints what it sent.
async fn ha_serve(
    port: u16,
    rate: f64,
    entities: usize,
    events: u64,
    token: String,
) -> anyhow::Result<()> {
    use crate::simulator::{Simulator, SimulatorConfig};
    let cfg = SimulatorConfig {
        entities,
        rate,
        token,
        max_events: (events > 0).then_some(events),
        // The ingestor never backfills here; the recorder need not hold the whole run.
        ..SimulatorConfig::default()
    };
    let sim = Simulator::start(cfg, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .context("cannot start the simulator")?;
    eprintln!("serving {}", sim.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    // `finished` on stderr once the last of `events` is sent (the benchmark script waits on it).
    let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
    let mut said_finished = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = poll.tick(), if !said_finished => {
                if sim.finished() {
                    eprintln!("finished");
                    said_finished = true;
                }
            }
        }
    }
    let sent = sim.emitted_count();
    sim.shutdown().await;
    println!("{}", serde_json::json!({ "sent": sent }));
    Ok(())
}

/// `bench ha-serve --homes N`: N simulated homes in this process, each its own simulator
/// on its own port (the ingestor connects to each as to a separate Home Assistant); writes
/// their home files, runs until SIGTERM/SIGINT, then prints what each home sent.
async fn ha_serve_homes(
    homes: usize,
    rate: f64,
    entities: usize,
    token: String,
    homes_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use crate::simulator::{Simulator, SimulatorConfig};
    if let Some(dir) = &homes_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut sims = Vec::with_capacity(homes);
    for i in 0..homes {
        let name = format!("home-{i:04}");
        let cfg = SimulatorConfig {
            entities,
            rate,
            token: format!("{token}-{i}"),
            // Each home its own entities' values and order.
            seed: i as u64 + 1,
            // A realistic home: the steady rate, and every minute a burst of a scene's changes.
            burst_every: Some(std::time::Duration::from_secs(60)),
            burst_size: 10,
            ..SimulatorConfig::default()
        };
        let sim = Simulator::start(cfg.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .with_context(|| format!("cannot start the simulator of {name}"))?;
        if let Some(dir) = &homes_dir {
            let file = dir.join(format!("{name}.toml"));
            let text = format!("url = {:?}\ntoken = {:?}\n", sim.url(), cfg.token);
            std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        }
        sims.push((name, sim));
    }
    eprintln!("serving {homes} homes");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let mut sent = 0u64;
    let mut per_home = serde_json::Map::new();
    for (name, sim) in sims {
        let n = sim.emitted_count();
        sent += n;
        per_home.insert(name, n.into());
        sim.shutdown().await;
    }
    println!("{}", serde_json::json!({ "sent": sent, "homes": per_home }));
    Ok(())
}
