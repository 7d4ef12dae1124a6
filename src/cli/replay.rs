//! `ha-ingestor replay`: sends line-protocol files (the file sink's, or any) to InfluxDB.
//!
//! Files are read line by line, so their size does not matter. Points carry
//! their timestamps, so replaying a file twice writes the same points again
//! (InfluxDB overwrites a point with the same series and time).

use std::process::ExitCode;

use anyhow::Context as _;
use tokio::runtime::Runtime;

use crate::config::{Config, LogFormat};
use crate::sink::file;

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::dead_letter::DeadLetters;
use crate::sink::influxdb::{Delivery, InfluxWriter, MAX_BATCH_BYTES, WriteError};

/// What a replay sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Files read to the end.
    pub files: usize,
    /// Points InfluxDB accepted.
    pub points: u64,
    /// Lines InfluxDB refused, set aside in the dead-letter folder.
    pub dead_lettered: u64,
}

/// Why a replay stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// InfluxDB refused the writes in a way that needs an operator (credentials, missing database).
    #[error("InfluxDB refused the replay of {path} (sent so far: {points} points): {source}")]
    Write {
        /// The file being sent.
        path: PathBuf,
        /// Points accepted before the refusal.
        points: u64,
        /// The refusal.
        source: WriteError,
    },
}

/// Sends every line of the files (comments and blank lines skipped) in batches of `batch_size`, retrying transient failures like the writer does.
pub async fn replay(
    files: &[PathBuf],
    writer: &InfluxWriter,
    batch_size: usize,
    dead_letters: &DeadLetters,
) -> Result<ReplayReport, ReplayError> {
    let batch_size = batch_size.max(1);
    let mut report = ReplayReport::default();
    let mut delivery = Delivery::for_replay(writer, dead_letters);
    for path in files {
        send_file(path, batch_size, &mut delivery, &mut report).await?;
        report.files += 1;
        tracing::info!(
            message = "File replayed.",
            path = %path.display(),
            points = report.points,
            dead_lettered = report.dead_lettered,
        );
    }
    Ok(report)
}

async fn send_file(
    path: &Path,
    batch_size: usize,
    delivery: &mut Delivery<'_>,
    report: &mut ReplayReport,
) -> Result<(), ReplayError> {
    let read_err = |source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    // Reads are small and buffered; the sends between them are what takes time.
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut batch = String::new();
    let mut lines = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(read_err)?;
        if n > 0 {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            batch.push_str(trimmed);
            batch.push('\n');
            lines += 1;
        }
        let full = lines >= batch_size || batch.len() >= MAX_BATCH_BYTES;
        if (n == 0 || full) && lines > 0 {
            let outcome = delivery
                .deliver(&batch)
                .await
                .map_err(|source| ReplayError::Write {
                    path: path.to_path_buf(),
                    points: report.points,
                    source,
                })?;
            report.points += outcome.written;
            report.dead_lettered += outcome.dead_lettered;
            batch.clear();
            lines = 0;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Arguments of `replay`.
#[derive(clap::Args)]
pub struct Args {
    /// The config whose [influxdb] section receives the points.
    #[arg(long)]
    to_config: PathBuf,
    /// Folder of point files (default: the config's <data_dir>/points).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Specific files instead of a folder.
    files: Vec<PathBuf>,
}

/// Replays the files (or the config's point folder) into the config's InfluxDB and prints what was sent.
pub fn main(args: Args, log_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
    let cfg = match super::load_config(&args.to_config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    super::init_logging(log_format.unwrap_or(cfg.log.format), &cfg.log.level);
    super::report(runtime.block_on(replay_config(cfg, args.from, args.files)))
}

async fn replay_config(
    cfg: Config,
    from: Option<PathBuf>,
    files: Vec<PathBuf>,
) -> anyhow::Result<()> {
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
    // Opened before anything is sent: no audit log, no replay.
    let audit = crate::audit::AuditLog::open(&cfg.data_dir)?;
    let target = format!(
        "{} {}",
        crate::config::redact_url(&influx.url),
        influx
            .database
            .as_deref()
            .or(influx.bucket.as_deref())
            .unwrap_or_default()
    );
    let writer = InfluxWriter::new(influx)?;
    let dead_letters = DeadLetters::with_config(cfg.dead_letter_dir(), &cfg.dead_letter);
    // One file at a time, so each file gets its own audit line.
    let mut report = ReplayReport::default();
    for file in &files {
        let sent = replay(
            std::slice::from_ref(file),
            &writer,
            influx.batch_size,
            &dead_letters,
        )
        .await;
        let what = match &sent {
            Ok(r) => serde_json::json!({
                "file": file.display().to_string(),
                "points": r.points,
                "dead_lettered": r.dead_lettered,
            }),
            Err(ReplayError::Write { points, .. }) => {
                serde_json::json!({ "file": file.display().to_string(), "points": points })
            }
            Err(_) => serde_json::json!({ "file": file.display().to_string() }),
        };
        audit.record("replay", &target, what, &(&sent).into())?;
        let sent = sent?;
        report.files += sent.files;
        report.points += sent.points;
        report.dead_lettered += sent.dead_lettered;
    }
    println!(
        "replay: {} files, {} points sent to {}, {} set aside (see {})",
        report.files,
        report.points,
        crate::config::redact_url(&influx.url),
        report.dead_lettered,
        cfg.dead_letter_dir().display()
    );
    Ok(())
}
