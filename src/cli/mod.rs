//! The `ha-ingestor` command line: one file per subcommand.
//!
//! Each subcommand's file holds its arguments (clap), the work it asks of the
//! library and the report it prints; `main.rs` only parses, builds the runtime
//! and dispatches here. Exit codes: 0 success, 1 failure, 2 an invalid
//! configuration (3 for a peer that failed `check`). A command other than the
//! service whose output's reader goes away (`check | head -1`) ends by SIGPIPE, as
//! `cat` does (141 in a shell).

pub mod addon;
pub mod alerts;
pub mod bench;
pub mod buffer;
pub mod check;
pub mod completions;
pub mod demo;
pub mod explain;
pub mod health;
pub mod man;
pub mod replay;
pub mod retention;
pub mod run;
pub mod schema;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::runtime::Runtime;

use crate::config::{Config, LogFormat};

/// The version `--version` prints: the crate's version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HA_INGESTOR_BUILD_COMMIT"),
    ")"
);

/// Captures every Home Assistant event and stores it in InfluxDB without gaps.
#[derive(Parser)]
#[command(name = "ha-ingestor", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// Log format (overrides `log.format`).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; each variant's arguments live in the subcommand's own file.
#[derive(Subcommand)]
pub enum Command {
    /// Run the service.
    Run(run::Args),
    /// Run the whole path against the built-in simulator; no servers needed.
    Demo(demo::Args),
    /// Validate a config and test every connection (exit 0 ok, 2 invalid, 3 peer failed).
    Check(check::Args),
    /// Show which filter rules match an event, what they decide and transform, and the line protocol written.
    Explain(explain::Args),
    /// Send line-protocol files (the file sink's output) to the InfluxDB of a config.
    Replay(replay::Args),
    /// Show or empty the durable buffer (run them while the service is stopped).
    Buffer {
        /// Which buffer command.
        #[command(subcommand)]
        what: buffer::BufferCommand,
    },
    /// Measure the hot path.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Measure the stored schema, plan a better one, migrate data into it, compare the schema modes.
    Schema {
        /// Which schema tool.
        #[command(subcommand)]
        what: schema::SchemaCommand,
    },
    /// Retention policies and downsampling of `[retention]` (InfluxDB 1.x).
    Retention {
        /// Which retention command.
        #[command(subcommand)]
        what: retention::RetentionCommand,
    },
    /// Test the alert notifiers: one test notification through each (audited).
    Alerts {
        /// Which alerts command.
        #[command(subcommand)]
        what: alerts::AlertsCommand,
    },
    /// Run as a Home Assistant add-on: turn the add-on's options into a config, then run the service.
    Addon(addon::Args),
    /// Exit 0 when the monitor's `/health` answers 2xx (the container image's HEALTHCHECK).
    Health(health::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Print the man page (or write one page per subcommand with `--out-dir`).
    Man(man::Args),
}

impl Command {
    /// Runs the subcommand on `runtime`; `log_format` is the `--log-format` flag, if given.
    pub fn run(self, log_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
        if !self.is_service() {
            end_quietly_on_a_closed_stdout();
        }
        if self.writes_data_dir() {
            // A home's whole history lives in data_dir: everything created there (redb,
            // cursors, dead letters, points) is for the service's user alone.
            crate::private_fs::restrict_umask();
        }
        match self {
            Command::Run(args) => run::main(args, log_format, runtime),
            Command::Demo(args) => demo::main(args, log_format, runtime),
            Command::Check(args) => check::main(args, log_format, runtime),
            Command::Explain(args) => explain::main(args, log_format),
            Command::Replay(args) => replay::main(args, log_format, runtime),
            Command::Buffer { what } => buffer::main(what, log_format, runtime),
            Command::Bench { what } => bench::main(what, log_format, runtime),
            Command::Schema { what } => {
                init_logging(log_format.unwrap_or_default(), "warn");
                report(runtime.block_on(schema::main(what)))
            }
            Command::Retention { what } => {
                init_logging(log_format.unwrap_or_default(), "warn");
                report(runtime.block_on(retention::main(what)))
            }
            Command::Alerts { what } => alerts::main(what, log_format, runtime),
            Command::Addon(args) => addon::main(args, log_format, runtime),
            Command::Health(args) => health::main(args),
            Command::Completions(args) => completions::main(args),
            Command::Man(args) => man::main(args),
        }
    }
}

impl Command {
    /// Whether the subcommand is the long-running service (its output is logs, not a report).
    fn is_service(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Addon(_) | Command::Demo(_))
    }

    /// Whether the subcommand creates files under `data_dir` (its folders, buffer, cursors, dead letters, points, audit log).
    fn writes_data_dir(&self) -> bool {
        matches!(
            self,
            Command::Run(_)
                | Command::Addon(_)
                | Command::Demo(_)
                | Command::Check(_)
                | Command::Replay(_)
                | Command::Buffer { .. }
                | Command::Alerts { .. }
        )
    }
}

/// A report's reader went away (`ha-ingestor check | head -1`): end as `cat` does, by
/// SIGPIPE's default action, instead of panicking on the EPIPE of the next `println!`
/// (Rust ignores SIGPIPE). Not for the service: a closed log pipe must not kill it.
/// Sockets are unaffected: Rust sends on them with `MSG_NOSIGNAL`.
fn end_quietly_on_a_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: signal(2) only sets SIGPIPE's disposition back to the default; it touches no memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Installs the process's log subscriber: `format` on stderr at `level` (`RUST_LOG` wins), plus the status page's recent-errors layer.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The status page's "recent errors" come from this layer.
    let recent = crate::monitor::page::RecentErrorsLayer;
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

/// Loads a config for a subcommand, or prints why not and gives the invalid-config exit code.
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("ha-ingestor: {error}");
        ExitCode::from(check::INVALID_CONFIG as u8)
    })
}

/// A `--from`/`--until` argument (RFC 3339) as nanoseconds since the epoch.
fn parse_time(text: &Option<String>) -> anyhow::Result<Option<i64>> {
    use anyhow::Context as _;
    text.as_deref()
        .map(|t| crate::event::Timestamp::parse_rfc3339(t).map(|ts| ts.0))
        .transpose()
        .context("--from/--until")
}

/// Turns a subcommand's result into its exit code, printing the error chain on failure.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ha-ingestor: {error:#}");
            ExitCode::FAILURE
        }
    }
}
