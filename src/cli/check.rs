//! `ha-ingestor check`: validate the config and test every connection without starting anything.
//!
//! Exit codes: 0 all good, 2 the configuration is invalid, 3 a peer is
//! unreachable or refused the credentials.

use std::process::ExitCode;

use tokio::runtime::Runtime;

use std::path::Path;

use crate::config::{Config, redact_url};
use crate::pipeline::Pipeline;
use crate::sink::influxdb::InfluxWriter;
use crate::source::homeassistant::client;

/// Exit code: everything checked out.
pub const OK: i32 = 0;
/// Exit code: the configuration is invalid.
pub const INVALID_CONFIG: i32 = 2;
/// Exit code: a peer is unreachable or refused the credentials.
pub const PEER_FAILED: i32 = 3;

/// Runs every check, printing one line per check to stdout, and returns the exit code.
pub async fn run(path: &Path) -> i32 {
    let cfg = match Config::load(path) {
        Ok(cfg) => cfg,
        Err(error) => {
            println!("config: INVALID: {error}");
            return INVALID_CONFIG;
        }
    };
    println!("config: ok ({})", path.display());
    // Allowed by allow_insecure_transport, but said every time.
    for warning in cfg.transport_warnings() {
        println!("transport: warning: {warning}");
    }
    for peer in cfg.tls_unverified_peers() {
        println!(
            "tls: warning: {peer}: certificate verification is disabled (insecure_skip_verify)"
        );
    }
    let pipeline = match Pipeline::new(&cfg.filter, &cfg.effective_schema()) {
        Ok(pipeline) => pipeline,
        Err(error) => {
            println!("pipeline: INVALID: {error}");
            return INVALID_CONFIG;
        }
    };
    println!("pipeline: ok (filter and schema compiled)");
    // The compiled rule plan, in evaluation order.
    for line in pipeline.chain().plan_text() {
        println!("  {line}");
    }
    crate::ensure_crypto_provider();

    let mut code = OK;
    if cfg.homeassistant.is_empty() {
        println!("homeassistant: not configured");
    }
    // A sharded replica probes the homes it runs; the others are some other replica's.
    if let Some(shard) = &cfg.shard {
        let owned: Vec<&str> = cfg.owned_homes().map(|ha| ha.name.as_str()).collect();
        println!(
            "shard: index {} of {}: runs {} of {} homes{}{}",
            shard.index.unwrap_or_default(),
            shard.count,
            owned.len(),
            cfg.homeassistant.len(),
            if owned.is_empty() { "" } else { ": " },
            owned.join(", ")
        );
    }
    for ha in cfg.owned_homes() {
        // The default instance keeps the plain label; named ones say which they are.
        let label = if ha.name == "homeassistant" {
            "homeassistant".to_string()
        } else {
            format!("homeassistant[{}]", ha.name)
        };
        match client::probe(ha).await {
            Ok(info) => println!(
                "{label}: ok (Home Assistant {} at {})",
                info.ha_version, info.url
            ),
            Err(error) if error.is_auth() => {
                println!(
                    "{label}: FAILED: Home Assistant refused the access token at {}: {error}",
                    ha.websocket_url()
                );
                code = PEER_FAILED;
            }
            Err(error) => {
                println!(
                    "{label}: FAILED: cannot reach Home Assistant at {}: {error}",
                    ha.websocket_url()
                );
                code = PEER_FAILED;
            }
        }
    }

    match &cfg.influxdb {
        Some(influx) => match InfluxWriter::new(influx) {
            // Shown without any `user:password@` or query string.
            Ok(writer) => match writer.check().await {
                Ok(version) => println!(
                    "influxdb: ok (InfluxDB {version} at {})",
                    redact_url(&influx.url)
                ),
                Err(error) if error.is_auth() => {
                    println!(
                        "influxdb: FAILED: InfluxDB at {} refused the credentials: {error}",
                        redact_url(&influx.url)
                    );
                    code = PEER_FAILED;
                }
                Err(error) => {
                    println!("influxdb: FAILED: {error}");
                    code = PEER_FAILED;
                }
            },
            Err(error) => {
                println!("influxdb: INVALID: {error}");
                return INVALID_CONFIG;
            }
        },
        None => {
            let dir = cfg.points_dir();
            match crate::private_fs::create_dir_all(&dir) {
                Ok(()) => println!(
                    "sink: ok (no [influxdb]; line protocol files in {})",
                    dir.display()
                ),
                Err(error) => {
                    println!("sink: FAILED: cannot create {}: {error}", dir.display());
                    code = PEER_FAILED;
                }
            }
        }
    }

    if cfg.monitor.enabled {
        match std::net::TcpListener::bind(cfg.monitor.listen) {
            Ok(_) => println!("monitor: ok ({} is free)", cfg.monitor.listen),
            // Not fatal: the running service itself may hold the port.
            Err(error) => println!(
                "monitor: warning: cannot bind {}: {error}",
                cfg.monitor.listen
            ),
        }
        cfg.monitor
            .warnings()
            .iter()
            .for_each(|w| println!("monitor: warning: {w}"));
    }
    code
}

/// Arguments of `check`.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file.
    #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
    config: std::path::PathBuf,
}

/// Runs every check and exits with its code.
pub fn main(
    args: Args,
    log_format: Option<crate::config::LogFormat>,
    runtime: &Runtime,
) -> ExitCode {
    super::init_logging(log_format.unwrap_or_default(), "warn");
    let code = runtime.block_on(run(&args.config));
    ExitCode::from(code as u8)
}
