//! `ha-ingestor run`: the service, until SIGINT/SIGTERM; SIGHUP re-reads the config.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::runtime::Runtime;

use super::{init_logging, load_config, report};
use crate::app;
use crate::config::LogFormat;

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file.
    #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
    config: PathBuf,
}

/// Starts the service and serves until a shutdown signal, then stops in data-flow order.
pub fn main(args: Args, log_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
    let config = args.config;
    let cfg = match load_config(&config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    init_logging(log_format.unwrap_or(cfg.log.format), &cfg.log.level);
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
