//! `ha-ingestor run`: the service, until SIGINT/SIGTERM; SIGHUP re-reads the config.
//!
//! The signal handlers are installed first, before the config is read: a signal during
//! start-up is acted on once the service has started (see [`crate::signals`]).
//!
//! Under systemd (`Type=notify`, `$NOTIFY_SOCKET` set) it says `READY=1` once every
//! stage has started and `STOPPING=1` when it begins to stop; elsewhere that is a no-op.

use std::path::PathBuf;
use std::process::ExitCode;

use sd_notify::NotifyState;
use tokio::runtime::Runtime;

use super::{init_logging, load_config, report};
use crate::app;
use crate::config::LogFormat;
use crate::signals::Signals;

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file.
    #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
    config: PathBuf,
}

/// Starts the service and serves until a shutdown signal, then stops in data-flow order.
pub fn main(args: Args, log_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
    let signals = {
        let _runtime = runtime.enter();
        Signals::listen()
    };
    serve(args.config, log_format, runtime, signals)
}

/// `run` on the config file at `config` (also what `addon` runs once it has written its
/// config), stopped by `signals` (listening since the process began).
pub(super) fn serve(
    config: PathBuf,
    log_format: Option<LogFormat>,
    runtime: &Runtime,
    mut signals: Signals,
) -> ExitCode {
    let cfg = match load_config(&config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    init_logging(log_format.unwrap_or(cfg.log.format), &cfg.log.level);
    let result = runtime.block_on(async {
        let mut running = app::start(&cfg).await?;
        tracing::info!(message = "Started.", version = super::VERSION, config = %config.display());
        notify_service_manager(&[NotifyState::Ready, NotifyState::Status("running")]);
        // SIGHUP re-reads the config (MQTT subscriptions change live) until SIGINT/SIGTERM;
        // one that came during start-up is acted on now.
        running.serve_until_shutdown(&config, &mut signals).await;
        notify_service_manager(&[NotifyState::Stopping]);
        tracing::info!(message = "Stopping: sources first, then flushing the sink.");
        running.stop().await;
        anyhow::Ok(())
    });
    report(result)
}

/// Tells systemd (the datagram socket in `$NOTIFY_SOCKET`) about the service's state; a failure is logged, never fatal.
fn notify_service_manager(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(message = "Cannot notify the service manager.", %error);
    }
}
