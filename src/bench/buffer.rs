//! `ha-ingestor bench buffer`: append and read+acknowledge throughput of the
//! durable buffer with a given fsync policy, and the cost of the two ways of
//! calling it from async code (a dedicated thread fed by a channel, or one
//! `spawn_blocking` per append).

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::BufferConfig;
use crate::encode::Chunk;
use crate::sink::buffer::tasks::{self, READ_BATCH};
use crate::sink::buffer::{self as buffer, Buffer, BufferError};

/// The measured figures, as `--json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct BufferBenchReport {
    /// Points per appended chunk.
    pub points_per_chunk: usize,
    /// Bytes of line protocol per point.
    pub bytes_per_point: f64,
    /// The fsync interval used.
    pub fsync_interval: String,
    /// Appends from one thread: points per second.
    pub append_points_per_sec: f64,
    /// Appends from one thread: MB (10^6 bytes) of line protocol per second.
    pub append_mb_per_sec: f64,
    /// Size of the buffer file after the append phase (records plus the store's pages and free space).
    pub file_bytes_after_append: u64,
    /// Size of the buffer file after everything was read and acknowledged.
    pub file_bytes_after_ack: u64,
    /// Opening the buffer holding everything appended (every record verified): MB of records per second.
    pub open_verify_mb_per_sec: f64,
    /// Bytes of records verified by that open.
    pub open_verify_bytes: u64,
    /// Reading and acknowledging everything appended: points per second.
    pub read_ack_points_per_sec: f64,
    /// Reading and acknowledging: MB of line protocol per second.
    pub read_ack_mb_per_sec: f64,
    /// From a tokio task through a channel to the appender thread: chunks per second.
    pub async_thread_chunks_per_sec: f64,
    /// From a tokio task with one `spawn_blocking` per append: chunks per second.
    pub async_spawn_blocking_chunks_per_sec: f64,
}

/// A chunk of `points` lines shaped like the `homeassistant` schema's (about 150 bytes each).
pub fn sample_chunk(points: usize, n: u64) -> Chunk {
    let mut lines = String::with_capacity(points * 160);
    for i in 0..points {
        let t = 1_700_000_000_000_000_000u64 + n * points as u64 + i as u64;
        lines.push_str(&format!(
            "°C,domain=sensor,entity_id=living_room_temperature_{i:03} value={}.{},friendly_name_str=\"Living room temperature {i}\" {t}\n",
            18 + i % 7,
            i % 10
        ));
    }
    Chunk {
        lines,
        points,
        seq: None,
        marks: Default::default(),
    }
}

/// Runs each phase for about `seconds` in a fresh buffer under `dir` (removed afterwards).
pub fn run(
    dir: &Path,
    cfg: &BufferConfig,
    points_per_chunk: usize,
    seconds: f64,
) -> Result<BufferBenchReport, BufferError> {
    let points_per_chunk = points_per_chunk.max(1);
    let budget = Duration::from_secs_f64(seconds.max(0.1));
    let chunk = sample_chunk(points_per_chunk, 0);
    let bytes_per_point = chunk.lines.len() as f64 / points_per_chunk as f64;
    let cfg = BufferConfig {
        max_bytes: u64::MAX,
        ..cfg.clone()
    };
    let _ = std::fs::remove_dir_all(dir);

    let file_len = || {
        std::fs::metadata(dir.join(buffer::FILE_NAME))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let (append_pps, open_mbps, open_bytes, read_pps, after_append, after_ack) = {
        let (buffer, _) = Buffer::open(dir, &cfg)?;
        let started = Instant::now();
        let mut chunks = 0u64;
        while started.elapsed() < budget {
            buffer.append(&chunk)?;
            chunks += 1;
        }
        let append_pps =
            (chunks * points_per_chunk as u64) as f64 / started.elapsed().as_secs_f64();
        buffer.close()?;
        drop(buffer);
        let after_append = file_len();

        let started = Instant::now();
        let (buffer, report) = Buffer::open(dir, &cfg)?;
        let open_mbps = report.bytes as f64 / 1e6 / started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut read_points = 0u64;
        let mut cursor = None;
        loop {
            let records = buffer.read_after(cursor, READ_BATCH)?;
            let Some((last, _)) = records.last() else {
                break;
            };
            let last = *last;
            read_points += records.iter().map(|(_, c)| c.points as u64).sum::<u64>();
            buffer.ack_through(last)?;
            cursor = Some(last);
        }
        let read_pps = read_points as f64 / started.elapsed().as_secs_f64();
        buffer.close()?;
        drop(buffer);
        (
            append_pps,
            open_mbps,
            report.bytes,
            read_pps,
            after_append,
            file_len(),
        )
    };
    let _ = std::fs::remove_dir_all(dir);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BufferError::Dir {
            path: dir.to_path_buf(),
            source: e,
        })?;
    let thread_cps = {
        let (buffer, _) = Buffer::open(dir, &cfg)?;
        let stats = std::sync::Arc::new(crate::monitor::Stats::default());
        let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(64);
        let appender = tasks::spawn_appender(
            buffer.clone(),
            rx,
            stats,
            Default::default(),
            Duration::ZERO,
        )
        .map_err(|e| BufferError::Dir {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let started = Instant::now();
        let sent = runtime.block_on(async {
            let mut sent = 0u64;
            while started.elapsed() < budget {
                if tx.send(chunk.clone()).await.is_err() {
                    break;
                }
                sent += 1;
            }
            drop(tx);
            sent
        });
        let _ = appender.join();
        let cps = sent as f64 / started.elapsed().as_secs_f64();
        buffer.close()?;
        cps
    };
    let _ = std::fs::remove_dir_all(dir);
    let blocking_cps = {
        let (buffer, _) = Buffer::open(dir, &cfg)?;
        let started = Instant::now();
        let sent = runtime.block_on(async {
            let mut sent = 0u64;
            while started.elapsed() < budget {
                let b = buffer.clone();
                let c = chunk.clone();
                match tokio::task::spawn_blocking(move || b.append(&c)).await {
                    Ok(Ok(_)) => sent += 1,
                    _ => break,
                }
            }
            sent
        });
        let cps = sent as f64 / started.elapsed().as_secs_f64();
        buffer.close()?;
        cps
    };
    let _ = std::fs::remove_dir_all(dir);

    let mb = |pps: f64| pps * bytes_per_point / 1e6;
    Ok(BufferBenchReport {
        points_per_chunk,
        bytes_per_point,
        fsync_interval: humantime::format_duration(cfg.fsync_interval).to_string(),
        append_points_per_sec: append_pps,
        append_mb_per_sec: mb(append_pps),
        file_bytes_after_append: after_append,
        file_bytes_after_ack: after_ack,
        open_verify_mb_per_sec: open_mbps,
        open_verify_bytes: open_bytes,
        read_ack_points_per_sec: read_pps,
        read_ack_mb_per_sec: mb(read_pps),
        async_thread_chunks_per_sec: thread_cps,
        async_spawn_blocking_chunks_per_sec: blocking_cps,
    })
}
