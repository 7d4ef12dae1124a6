//! The embedded file sink: with no InfluxDB configured, points go to hourly
//! line-protocol files that `ha-ingestor replay` (or `influx -import`) can send later.
//!
//! Files are `<dir>/points-YYYY-MM-DDTHH.lp`, named by the UTC wall-clock hour
//! of writing. Each new file starts with `#` comment lines, including the
//! `# DML` and `# CONTEXT-DATABASE:` headers that InfluxDB 1.x's
//! `influx -import` requires (database `home_assistant`, HA's default; edit
//! that line to import elsewhere). Replay skips every comment line.
//!
//! Writes go through a buffered writer flushed at least every second and on
//! shutdown; `stats.written` counts points once they are flushed. The writes
//! are small buffered appends, so they run on the task itself.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::Receiver;
use tokio::time::Instant;

use crate::encode::Chunk;
use crate::monitor::Stats;
use crate::monitor::metrics::{SINK_ERRORS, SINK_SENT_BYTES, SINK_SENT_POINTS};
use crate::sink::SinkContext;

/// The sink name in metrics, logs and health.
const SINK: &str = "file";
/// Longest time a written point waits in memory before it reaches the file.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Time allowed, once shutdown starts, to drain the input.
const SHUTDOWN_DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// The database named in the `influx -import` header.
pub const IMPORT_DATABASE: &str = "home_assistant";

/// Where the sink's current time comes from (injectable so tests can cross hours).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

struct Current {
    hour: String,
    path: PathBuf,
    out: BufWriter<File>,
}

/// Appends chunks to hourly line-protocol files.
pub struct FileSink {
    dir: PathBuf,
    clock: Clock,
    current: Option<Current>,
    unflushed_points: u64,
    unflushed_bytes: u64,
    /// The last buffer record whose lines are all in the unflushed output.
    unflushed_seq: Option<u64>,
    /// Told about buffer records once they are flushed to the file.
    acks: Option<crate::feedback::acks::Acks>,
    /// In a streak of failures: log the first at ERROR, the rest at DEBUG.
    failing: bool,
}

impl FileSink {
    /// A sink writing under `dir` (created if missing), on the system clock.
    pub fn new(dir: PathBuf) -> std::io::Result<FileSink> {
        FileSink::with_clock(dir, Arc::new(Utc::now))
    }

    /// A sink whose hour comes from `clock` (tests).
    pub fn with_clock(dir: PathBuf, clock: Clock) -> std::io::Result<FileSink> {
        crate::private_fs::create_dir_all(&dir)?;
        Ok(FileSink {
            dir,
            clock,
            current: None,
            unflushed_points: 0,
            unflushed_bytes: 0,
            unflushed_seq: None,
            acks: None,
            failing: false,
        })
    }

    /// The sink task: appends every chunk, flushes every second, and on shutdown drains the channel (until its senders are gone, at most 10 s) and flushes.
    pub async fn run(mut self, mut rx: Receiver<Chunk>, ctx: SinkContext) {
        self.acks = ctx.acks.clone();
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => break,
                chunk = rx.recv() => match chunk {
                    Some(chunk) => self.append(&chunk, &ctx.stats),
                    None => break,
                },
                _ = tick.tick() => self.flush(&ctx.stats),
            }
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN_DEADLINE;
        while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            self.append(&chunk, &ctx.stats);
        }
        self.flush(&ctx.stats);
        super::account_unwritten(&mut rx, &ctx.stats, "file");
    }

    fn append(&mut self, chunk: &Chunk, stats: &Stats) {
        if chunk.lines.is_empty() {
            if chunk.seq.is_some() {
                self.unflushed_seq = chunk.seq;
            }
            return;
        }
        let hour = (self.clock)().format("%Y-%m-%dT%H").to_string();
        if self.current.as_ref().is_none_or(|c| c.hour != hour) {
            self.flush(stats);
            self.current = None;
            match self.open(&hour) {
                Ok(c) => self.current = Some(c),
                Err(error) => {
                    self.failed(stats, chunk.points as u64, &error, "open");
                    return;
                }
            }
        }
        let Some(current) = self.current.as_mut() else {
            return;
        };
        let mut result = current.out.write_all(chunk.lines.as_bytes());
        if result.is_ok() && !chunk.lines.ends_with('\n') {
            result = current.out.write_all(b"\n");
        }
        match result {
            Ok(()) => {
                self.unflushed_points += chunk.points as u64;
                self.unflushed_bytes += chunk.lines.len() as u64;
                if chunk.seq.is_some() {
                    self.unflushed_seq = chunk.seq;
                }
            }
            Err(error) => {
                let lost = self.unflushed_points + chunk.points as u64;
                self.unflushed_points = 0;
                self.unflushed_bytes = 0;
                self.current = None;
                self.failed(stats, lost, &error, "write");
            }
        }
    }

    fn open(&self, hour: &str) -> std::io::Result<Current> {
        crate::private_fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("points-{hour}.lp"));
        let file = crate::private_fs::file_options()
            .create(true)
            .append(true)
            .open(&path)?;
        let fresh = file.metadata()?.len() == 0;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        if fresh {
            write!(
                out,
                "# ha-ingestor points written in the UTC hour {hour}: InfluxDB line protocol, nanosecond timestamps.\n\
                 # Send with `ha-ingestor replay`, or `influx -import -path <file> -precision ns` (edit the database below).\n\
                 # DML\n\
                 # CONTEXT-DATABASE: {IMPORT_DATABASE}\n"
            )?;
        }
        tracing::debug!(message = "Writing points to a new hourly file.", path = %path.display());
        Ok(Current {
            hour: hour.to_string(),
            path,
            out,
        })
    }

    fn flush(&mut self, stats: &Stats) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if self.unflushed_points == 0 && current.out.buffer().is_empty() {
            return;
        }
        let mut result = current.out.flush();
        if result.is_ok() && self.acks.is_some() {
            // The buffer forgets these records once acknowledged: make the file durable first.
            result = current.out.get_ref().sync_data();
        }
        match result {
            Ok(()) => {
                Stats::add(&stats.written, self.unflushed_points);
                metrics::counter!(SINK_SENT_POINTS, "sink" => SINK)
                    .increment(self.unflushed_points);
                metrics::counter!(SINK_SENT_BYTES, "sink" => SINK).increment(self.unflushed_bytes);
                stats.sink_result(SINK, Ok(()));
                if let (Some(acks), Some(seq)) = (&self.acks, self.unflushed_seq) {
                    acks.delivered(seq);
                }
                if self.failing {
                    tracing::info!(message = "The file sink writes again.", dir = %self.dir.display());
                    self.failing = false;
                }
            }
            Err(error) => {
                let lost = self.unflushed_points;
                tracing::error!(message = "Cannot flush the points file.", path = %current.path.display());
                self.current = None;
                self.failed(stats, lost, &error, "flush");
            }
        }
        self.unflushed_points = 0;
        self.unflushed_bytes = 0;
        self.unflushed_seq = None;
    }

    fn failed(&mut self, stats: &Stats, points: u64, error: &std::io::Error, op: &'static str) {
        metrics::counter!(SINK_ERRORS, "sink" => SINK, "error_type" => op).increment(1);
        stats.sink_result(
            SINK,
            Err(format!("{op} in {}: {error}", self.dir.display())),
        );
        if self.failing {
            tracing::debug!(message = "The file sink could not store points; they are lost.", op, %error, points);
        } else {
            self.failing = true;
            tracing::error!(
                message = "The file sink could not store points; they are lost (further failures are logged at debug level until it recovers).",
                dir = %self.dir.display(),
                op,
                %error,
                points,
            );
        }
        Stats::add(&stats.dropped, points);
    }
}

/// The point files in `dir`, oldest first.
pub fn point_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("points-") && name.ends_with(".lp") && entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    // `points-YYYY-MM-DDTHH.lp` sorts by time.
    files.sort();
    Ok(files)
}
