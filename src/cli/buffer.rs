//! `ha-ingestor buffer inspect|drain`: look into the durable buffer, or deliver all of it and exit (while the service is stopped).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use clap::Subcommand;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{init_logging, load_config, report};
use crate::app::{
    CHUNK_CHANNEL, FLUSH_DEADLINE, StartError, build_sink, lock_data_dir, open_buffer,
};
use crate::config::{Config, LogFormat};
use crate::dead_letter::DeadLetters;
use crate::encode::Chunk;
use crate::feedback::acks::Acks;
use crate::monitor::Stats;
use crate::sink::SinkContext;
use crate::sink::buffer::{BufferStats, tasks};

/// The buffer commands.
#[derive(Subcommand)]
pub enum BufferCommand {
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

/// Inspects or drains the buffer of the config and prints what it found or did.
pub fn main(what: BufferCommand, flag_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
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
                        let s = inspect_buffer(&cfg).await?;
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
                        // Opened before the drain: no audit log, no drain.
                        let audit = crate::audit::AuditLog::open(&cfg.data_dir)?;
                        let drained = drain_buffer(&cfg, crate::app::shutdown_signal()).await;
                        let what = match &drained {
                            Ok(r) => serde_json::json!({
                                "points_written": r.written,
                                "points_dead_lettered": r.dead_lettered,
                                "records_left": r.records_left,
                                "points_left": r.points_left,
                            }),
                            Err(_) => serde_json::json!({}),
                        };
                        audit.record("buffer drain", &drain_target(&cfg), what, &(&drained).into())?;
                        let r = drained?;
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

/// The audit target of a drain: the buffer and where its points go.
fn drain_target(cfg: &Config) -> String {
    let to = match &cfg.influxdb {
        Some(influx) => crate::config::redact_url(&influx.url),
        None => cfg.points_dir().display().to_string(),
    };
    format!("{} -> {to}", cfg.buffer_dir().display())
}

/// What the durable buffer holds, for `ha-ingestor buffer inspect` (takes the data directory's lock).
pub async fn inspect_buffer(cfg: &Config) -> Result<BufferStats, StartError> {
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let buffer = open_buffer(cfg).await?;
    tokio::task::spawn_blocking(move || buffer.stats())
        .await
        .map_err(|e| StartError::BufferTask(e.to_string()))?
        .map_err(StartError::from)
}

/// What `ha-ingestor buffer drain` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Points the sink stored.
    pub written: u64,
    /// Points set aside as dead letters.
    pub dead_lettered: u64,
    /// Records still in the buffer afterwards (interrupted, or not delivered in time).
    pub records_left: u64,
    /// Points in those records.
    pub points_left: u64,
}

/// Delivers everything in the durable buffer to the configured sink, then returns (`ha-ingestor buffer drain`).
///
/// Waits for the sink as long as it takes (InfluxDB down means retrying);
/// `interrupt` resolving (Ctrl-C) ends it with the usual shutdown deadline,
/// leaving what was not delivered in the buffer.
pub async fn drain_buffer(
    cfg: &Config,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<DrainReport, StartError> {
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let sink = build_sink(cfg)?;
    let buffer = open_buffer(cfg).await?;
    let stats = Arc::new(Stats::default());
    let targets = sink.targets();
    let (acks, delivered): (Vec<Acks>, Vec<_>) = (0..targets).map(|_| Acks::channel()).unzip();
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..targets)
        .map(|_| mpsc::channel::<Chunk>(CHUNK_CHANNEL))
        .unzip();
    let sink_token = CancellationToken::new();
    let ctx = SinkContext {
        stats: stats.clone(),
        dead_letters: Arc::new(DeadLetters::with_config(
            cfg.dead_letter_dir(),
            &cfg.dead_letter,
        )),
        shutdown: sink_token.clone(),
        acks: None,
    };
    let mut sink = sink.spawn_targets(rxs, acks.into_iter().map(Some).collect(), ctx);
    let acknowledger = tokio::spawn(tasks::acknowledge_all(buffer.clone(), delivered));
    let stop = CancellationToken::new();
    // Everything on disk now; each feeder ends once it read all of it (or at the deadline after `stop`).
    stop.cancel();
    let feeders: Vec<JoinHandle<()>> = txs
        .into_iter()
        .map(|tx| tokio::spawn(tasks::feed(buffer.clone(), tx, stop.clone(), Duration::MAX)))
        .collect();
    let feeder = tokio::spawn(async move {
        for f in feeders {
            let _ = f.await;
        }
    });
    tokio::pin!(interrupt);
    let interrupted = tokio::select! {
        _ = &mut sink => false,
        _ = &mut interrupt => true,
    };
    if interrupted {
        tracing::info!(
            message = "Interrupted: flushing what the sink holds; the rest stays in the buffer."
        );
        feeder.abort();
        sink_token.cancel();
        if tokio::time::timeout(FLUSH_DEADLINE, &mut sink)
            .await
            .is_err()
        {
            sink.abort();
        }
    }
    let _ = feeder.await;
    let _ = acknowledger.await;
    let left = tokio::task::spawn_blocking(move || {
        buffer.close()?;
        buffer.stats()
    })
    .await
    .map_err(|e| StartError::BufferTask(e.to_string()))??;
    let totals = stats.totals();
    Ok(DrainReport {
        written: totals.written,
        dead_lettered: totals.dead_lettered,
        records_left: left.records,
        points_left: left.points,
    })
}
