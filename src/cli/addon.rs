//! `ha-ingestor addon`: the entry point of the Home Assistant add-on image.
//!
//! Uses the full TOML file in the add-on's config folder when there is one; otherwise
//! turns the Supervisor's `options.json` into a config (asking the Supervisor for the
//! MQTT broker when MQTT is on), writes it privately into the data folder and runs the
//! service on it. Home Assistant is reached through the Supervisor with its token
//! (see `config::supervisor_api`), so there is no token to create.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::runtime::Runtime;

use crate::addon::{self, AddonError, AddonOptions};
use crate::config::{LogFormat, SUPERVISOR_TOKEN_VAR, supervisor_api, supervisor_token};
use crate::signals::Signals;

/// Arguments of `addon` (the defaults are the add-on container's paths).
#[derive(clap::Args)]
pub struct Args {
    /// The options the Supervisor writes on every start.
    #[arg(long, default_value = addon::OPTIONS_PATH)]
    options: PathBuf,
    /// A full TOML config that, when present, is used instead of the options.
    #[arg(long, default_value = addon::OVERRIDE_PATH)]
    override_config: PathBuf,
    /// Where the config made from the options is written.
    #[arg(long, default_value = addon::GENERATED_PATH)]
    write_config: PathBuf,
    /// The data folder written into that config (buffer, cursors, dead letters, points).
    #[arg(long, default_value = addon::DATA_DIR)]
    data_dir: PathBuf,
    /// Write the config and stop: shows what the options turn into.
    #[arg(long)]
    write_only: bool,
}

/// Makes the config (or takes the override), then runs the service on it.
pub fn main(args: Args, log_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
    // First, so no signal during start-up has its default action (see `run`).
    let mut signals = {
        let _runtime = runtime.enter();
        Signals::listen()
    };
    if args.override_config.is_file() {
        eprintln!(
            "ha-ingestor addon: using {} (the add-on options are ignored while it exists)",
            args.override_config.display()
        );
        if args.write_only {
            return ExitCode::SUCCESS;
        }
        return super::run::serve(args.override_config, log_format, runtime, signals);
    }
    // Nothing runs yet while the Supervisor is asked for the broker: a stop ends here.
    let made = runtime.block_on(async {
        tokio::select! {
            made = make_config(&args) => Some(made),
            _ = signals.shutdown() => None,
        }
    });
    match made {
        None => {
            eprintln!("ha-ingestor addon: stopped by a signal before the service started");
            return ExitCode::SUCCESS;
        }
        Some(Ok(())) => {
            eprintln!(
                "ha-ingestor addon: config written to {}",
                args.write_config.display()
            );
        }
        Some(Err(error)) => {
            eprintln!("ha-ingestor addon: {error}");
            return ExitCode::from(super::check::INVALID_CONFIG as u8);
        }
    }
    if args.write_only {
        return ExitCode::SUCCESS;
    }
    super::run::serve(args.write_config, log_format, runtime, signals)
}

/// Reads the options, discovers the broker when MQTT is on, and writes the config file.
async fn make_config(args: &Args) -> Result<(), AddonError> {
    let options = AddonOptions::read(&args.options)?;
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mqtt = if options.mqtt_enabled {
        let api = supervisor_api(&env);
        let Some(token) = supervisor_token(&env) else {
            return Err(AddonError::Discovery {
                url: format!("{api}/services/mqtt"),
                message: format!("{SUPERVISOR_TOKEN_VAR} is not set (not running as an add-on?)"),
            });
        };
        Some(addon::discover_mqtt(&api, token).await?)
    } else {
        None
    };
    let text = options.to_toml(&args.data_dir, mqtt.as_ref())?;
    let header = "# Made by `ha-ingestor addon` from the add-on's options on every start; edits are lost.\n# For keys the options lack, put a full config in the add-on's config folder as ha-ingestor.toml.\n";
    addon::write_private(&args.write_config, &format!("{header}{text}"))
}
