//! The tasks that put the buffer on the data path: the appender (pipeline
//! chunks → disk), the feeder (disk → sink, in order, from the oldest
//! undelivered record), the acknowledger (sink deliveries → records removed)
//! and the releaser (durable records → upstream marks released to sources).
//!
//! The appender is a dedicated thread: appends are short blocking commits, and
//! with `when_full = "block"` one may wait for minutes, which must not hold a
//! runtime worker. The feeder and acknowledger are tasks that run their reads
//! and deletes on `spawn_blocking`, once per batch of records.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Buffer, BufferError};
use crate::encode::Chunk;
use crate::feedback::handoff::{Handoff, Marks};
use crate::monitor::Stats;

/// Upstream marks waiting for their record to be durable: `(record seq, marks)`, in order.
#[derive(Debug, Default)]
pub struct PendingMarks {
    queue: Mutex<VecDeque<(u64, Marks)>>,
    added: tokio::sync::Notify,
}

impl PendingMarks {
    fn push(&self, seq: u64, marks: Marks) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match q.back_mut() {
            // Coalesce marks waiting on the same record (chunks without points).
            Some((last, m)) if *last == seq => m.merge(&marks),
            _ => q.push_back((seq, marks)),
        }
        drop(q);
        self.added.notify_one();
    }

    /// Whether marks wait on a record (one not yet durable, after `take_through`).
    fn is_waiting(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Removes and merges every entry whose record is at or below `durable`.
    fn take_through(&self, durable: u64) -> Marks {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Marks::default();
        while q.front().is_some_and(|(seq, _)| *seq <= durable) {
            if let Some((_, m)) = q.pop_front() {
                out.merge(&m);
            }
        }
        out
    }
}

/// Records read from disk per round trip of the feeder.
pub const READ_BATCH: usize = 16;
/// Records read at once, on the feeder's own task, right after an append woke it: a
/// home's stream appends one record per round (at most 1 MiB each), so this bounds the
/// work done outside the blocking pool to a copy of a few records.
const FRESH_READ_BATCH: usize = 4;
/// Pause after a failed read before the feeder tries again.
const READ_RETRY: Duration = Duration::from_secs(1);

/// Starts the appender thread: every chunk from `rx` is appended; ends when every sender is gone.
///
/// A chunk that cannot be appended (a disk error, or the buffer closed) is
/// counted in `stats.dropped` and logged (the first of a streak at ERROR); so
/// are the points `when_full = "drop_oldest"` removes to make room.
///
/// A chunk's upstream marks go to `pending` with its record's sequence number; a
/// chunk with no points (all its events filtered) is not stored, and its marks wait
/// on the last record appended before it.
///
/// With a `linger` (and a runtime to time it), a record not yet full waits up to
/// `linger` after its first chunk for more: one commit per linger instead of one per
/// chunk at moderate rates, where the commits were the appender's whole cost.
pub fn spawn_appender(
    buffer: Buffer,
    mut rx: mpsc::Receiver<Chunk>,
    stats: Arc<Stats>,
    pending: Arc<PendingMarks>,
    linger: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let timer = tokio::runtime::Handle::try_current()
        .ok()
        .filter(|_| !linger.is_zero())
        .map(|handle| (handle, linger));
    std::thread::Builder::new()
        .name("buffer-appender".into())
        .spawn(move || {
            let mut failing = false;
            let mut dropped_seen = buffer.dropped_points();
            // A joined record stays small against the buffer, so `when_full` keeps its granularity.
            let limit = COALESCE_BYTES.min(usize::try_from(buffer.max_bytes() / 16).unwrap_or(usize::MAX));
            while let Some(first) = rx.blocking_recv() {
                let mut chunk = coalesce(first, &mut rx, limit, timer.as_ref());
                if chunk.points == 0 {
                    pending.push(buffer.last_seq(), std::mem::take(&mut chunk.marks));
                    continue;
                }
                let result = buffer.append(&chunk);
                if result.is_ok() {
                    crate::monitor::latency::observe_durable(&chunk.lines);
                }
                if let Ok(seq) = result
                    && !chunk.marks.is_empty()
                {
                    pending.push(seq, std::mem::take(&mut chunk.marks));
                }
                let dropped = buffer.dropped_points();
                if dropped > dropped_seen {
                    Stats::add(&stats.dropped, dropped - dropped_seen);
                    dropped_seen = dropped;
                }
                match result {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!(message = "Appending to the buffer works again.");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        Stats::add(&stats.dropped, chunk.points as u64);
                        if failing {
                            tracing::debug!(message = "Cannot append to the buffer; points lost.", %error, points = chunk.points);
                        } else {
                            failing = true;
                            tracing::error!(
                                message = "Cannot append to the buffer; points lost (further failures are logged at debug level until it recovers).",
                                %error,
                                points = chunk.points,
                            );
                        }
                    }
                }
            }
        })
}

/// Points a chunk needs before the appender lingers for more behind it: below this the
/// pipeline's round was small, i.e. it already waited its gathering window (the pipeline's
/// `COALESCE_BELOW` events), and the next chunk is that window away.
const LINGER_FROM_POINTS: usize = 64;

/// Largest record the appender builds from queued chunks.
const COALESCE_BYTES: usize = 1 << 20;

/// How long an append waits for more chunks when no source waits on the group commit (see [`append_linger`]).
pub const APPEND_LINGER: Duration = Duration::from_millis(10);

/// The longest an append waits for more chunks.
pub const APPEND_LINGER_MAX: Duration = Duration::from_millis(25);

/// How long the appender lets a record gather chunks: a quarter of the group commit
/// (acknowledgements wait for that fsync anyway, so this adds at most a quarter to their
/// delay), at most [`APPEND_LINGER_MAX`]; [`APPEND_LINGER`] without one (nothing waits on
/// the commit but the feeder, whose batches to InfluxDB are far longer). A quarter rather
/// than a tenth took 4 % less CPU per message at 5,000 MQTT messages/s (docs/BENCHMARKS.md).
pub fn append_linger(group_commit: Option<Duration>) -> Duration {
    group_commit.map_or(APPEND_LINGER, |g| (g / 4).min(APPEND_LINGER_MAX))
}

/// Joins the chunks already waiting behind `first` (up to `limit` bytes) into one record,
/// and with a `linger` also those arriving within it.
///
/// One commit per record is the appender's cost; at a few events per chunk (a
/// quiet pipeline hands on each frame's events at once) a commit per chunk would
/// make the disk, not the stream, set the pace — and a reader that waits is a
/// reader Home Assistant drops. Joining keeps order, points and marks.
fn coalesce(
    mut first: Chunk,
    rx: &mut mpsc::Receiver<Chunk>,
    limit: usize,
    linger: Option<&(tokio::runtime::Handle, Duration)>,
) -> Chunk {
    // A small first chunk comes from a quiet pipeline, which already gathered its events
    // for a window: no more chunks are coming, and lingering would only add a wake-up.
    let linger = linger.filter(|_| first.points >= LINGER_FROM_POINTS);
    let deadline = linger.map(|(_, d)| Instant::now() + *d);
    while first.lines.len() < limit {
        let next = match rx.try_recv() {
            Ok(next) => next,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                let (Some((handle, _)), Some(deadline)) = (linger, deadline) else {
                    break;
                };
                // The timer is made inside `block_on`, where the runtime's context is.
                match handle.block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await })
                {
                    Ok(Some(next)) => next,
                    _ => break,
                }
            }
        };
        first.lines.push_str(&next.lines);
        first.points += next.points;
        first.marks.merge(&next.marks);
    }
    first
}

async fn read(buffer: &Buffer, after: Option<u64>) -> Result<Vec<(u64, Chunk)>, BufferError> {
    let buffer = buffer.clone();
    match tokio::task::spawn_blocking(move || buffer.read_after(after, READ_BATCH)).await {
        Ok(result) => result,
        Err(join) => Err(BufferError::Store {
            op: "read",
            source: redb::Error::Corrupted(format!("the read task failed: {join}")),
        }),
    }
}

/// The feeder: sends every record, oldest first, to the sink's channel and waits for new ones.
///
/// When `stop` is cancelled it sends what is already in the buffer, until
/// `drain_deadline` after the cancellation (`Duration::MAX`: no limit), then returns (dropping `tx`, which
/// tells the sink its input ended). Records it could not send stay on disk.
pub async fn feed(
    buffer: Buffer,
    tx: mpsc::Sender<Chunk>,
    stop: CancellationToken,
    drain_deadline: Duration,
) {
    feed_from(buffer, tx, stop, drain_deadline, None).await;
}

/// As [`feed`], starting after record `after` (a target's saved delivery position) instead of the oldest.
pub async fn feed_from(
    buffer: Buffer,
    tx: mpsc::Sender<Chunk>,
    stop: CancellationToken,
    drain_deadline: Duration,
    after: Option<u64>,
) {
    let mut appended = buffer.subscribe();
    let mut cursor: Option<u64> = after;
    // `Some` once stopping: drain until empty, by the deadline (`None` when it is too far to represent).
    let mut draining: Option<Option<Instant>> = None;
    // Woken by an append after a short read: what waits is what the appender just
    // committed, in redb's cache — read here, without a hand-off to the blocking pool.
    let mut after_append = false;
    loop {
        appended.borrow_and_update();
        if draining.is_none() && stop.is_cancelled() {
            draining = Some(Instant::now().checked_add(drain_deadline));
        }
        let (read_now, limit) = if std::mem::take(&mut after_append) {
            (
                buffer.read_after(cursor, FRESH_READ_BATCH),
                FRESH_READ_BATCH,
            )
        } else {
            (read(&buffer, cursor).await, READ_BATCH)
        };
        let records = match read_now {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(message = "Cannot read the buffer; retrying.", %error);
                tokio::select! {
                    _ = tokio::time::sleep(READ_RETRY) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        let caught_up = records.len() < limit;
        if records.is_empty() {
            if draining.is_some() {
                return;
            }
            tokio::select! {
                changed = appended.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => {}
            }
            continue;
        }
        for (seq, chunk) in records {
            let sent = match draining {
                Some(Some(at)) => matches!(
                    tokio::time::timeout_at(at, tx.send(chunk)).await,
                    Ok(Ok(()))
                ),
                Some(None) => tx.send(chunk).await.is_ok(),
                None => tokio::select! {
                    r = tx.send(chunk) => r.is_ok(),
                    _ = stop.cancelled() => {
                        // Re-read from this record in drain mode.
                        break;
                    }
                },
            };
            if !sent {
                return;
            }
            cursor = Some(seq);
        }
        // A short read took everything there was when `appended` was marked seen: wait for
        // the next append instead of asking the disk again (one blocking read per append).
        if caught_up && draining.is_none() {
            tokio::select! {
                changed = appended.changed() => {
                    if changed.is_err() { return }
                    after_append = true;
                }
                _ = stop.cancelled() => {}
            }
        }
    }
}

/// How long upstream marks wait for their record to become durable before the releaser
/// commits it itself (a group commit), instead of waiting for the next `fsync_interval` tick,
/// when a source's in-flight window is small.
///
/// An MQTT broker lets only a bounded number of messages wait for acknowledgement
/// (Mosquitto: 20 for MQTT 3.1.1 clients); holding them for a whole second would cap
/// throughput at that many messages per second. Measured cost in `docs/mqtt.md`.
pub const GROUP_COMMIT: Duration = Duration::from_millis(20);

/// The group commit when every source's window is wide ([`WIDE_WINDOW`] or more in flight).
///
/// Each commit is an fsync; at 20 ms that is 50 a second whatever the message rate, about a
/// quarter of the ingestor's CPU at 5,000 MQTT messages/s (docs/BENCHMARKS.md). A window of
/// 5,000 messages acknowledged every 100 ms still allows 50,000 messages/s.
pub const GROUP_COMMIT_WIDE: Duration = Duration::from_millis(100);

/// The smallest in-flight window for which [`GROUP_COMMIT_WIDE`] is used.
pub const WIDE_WINDOW: u32 = 5_000;

/// The releaser's group commit for a configuration: `None` when no source waits for
/// acknowledgements (the Home Assistant cursor is content with the `fsync_interval` tick),
/// [`GROUP_COMMIT_WIDE`] when every MQTT broker is MQTT 5 with a wide `receive_maximum`,
/// else [`GROUP_COMMIT`].
pub fn group_commit_for(cfg: &crate::config::Config) -> Option<Duration> {
    use crate::config::MqttProtocol;
    if cfg.mqtt.is_empty() {
        return None;
    }
    let wide = cfg.mqtt.iter().all(|m| {
        matches!(m.protocol, MqttProtocol::V5) && u32::from(m.receive_maximum) >= WIDE_WINDOW
    });
    Some(if wide {
        GROUP_COMMIT_WIDE
    } else {
        GROUP_COMMIT
    })
}

/// The releaser: as records become durable, releases the upstream marks waiting on them; ends with `stop`.
///
/// While marks wait on records that are not durable yet, it makes them durable itself
/// after `group_commit` (one fsync for everything appended meanwhile); with `None` they
/// wait for the buffer's own `fsync_interval` tick.
pub async fn release(
    buffer: Buffer,
    pending: Arc<PendingMarks>,
    handoff: Arc<Handoff>,
    stop: CancellationToken,
    group_commit: Option<Duration>,
) {
    let mut durable = buffer.subscribe_durable();
    loop {
        let seq = *durable.borrow_and_update();
        handoff.release(&pending.take_through(seq));
        // With a group commit: sleep it out while marks wait, else wake when marks are added.
        // Without: only the buffer's own syncs (`durable`) release marks.
        let forced = group_commit.filter(|_| pending.is_waiting());
        tokio::select! {
            changed = durable.changed() => if changed.is_err() { return },
            _ = pending.added.notified(), if group_commit.is_some() && forced.is_none() => {}
            _ = tokio::time::sleep(forced.unwrap_or(GROUP_COMMIT)), if forced.is_some() => {
                let b = buffer.clone();
                match tokio::task::spawn_blocking(move || b.sync()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::error!(message = "Cannot make the buffer durable for waiting acknowledgements.", %error);
                        tokio::select! {
                            _ = tokio::time::sleep(READ_RETRY) => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                    Err(error) => tracing::error!(message = "The buffer sync task failed.", %error),
                }
            }
            _ = stop.cancelled() => {
                handoff.release(&pending.take_through(buffer.durable_seq()));
                return;
            }
        }
    }
}

/// The acknowledger: removes delivered records as the sink reports them; ends when every reporter is gone.
pub async fn acknowledge(buffer: Buffer, delivered: watch::Receiver<u64>) {
    acknowledge_all(buffer, vec![delivered]).await;
}

/// The acknowledger of several sinks (one per InfluxDB target, each with its own feeder):
/// a record is removed once every sink has reported it delivered; ends when every reporter is gone.
pub async fn acknowledge_all(buffer: Buffer, delivered: Vec<watch::Receiver<u64>>) {
    acknowledge_and_save(buffer, delivered, None).await;
}

/// As [`acknowledge_all`], and saves each sink's delivery position under its name
/// (`names[i]` for `delivered[i]`) as it moves, so that after a restart each target
/// resumes after its own position ([`Buffer::positions`]).
pub async fn acknowledge_all_saving(
    buffer: Buffer,
    delivered: Vec<watch::Receiver<u64>>,
    names: Vec<String>,
) {
    acknowledge_and_save(buffer, delivered, Some(names)).await;
}

async fn acknowledge_and_save(
    buffer: Buffer,
    mut delivered: Vec<watch::Receiver<u64>>,
    names: Option<Vec<String>>,
) {
    // What was last saved; `None` until the first save of this run.
    let mut saved: Option<Vec<u64>> = None;
    let mut save_failing = false;
    let mut done = 0u64;
    let mut open = vec![true; delivered.len()];
    loop {
        crate::feedback::acks::next_report(&mut delivered, &mut open).await;
        let positions: Vec<u64> = delivered
            .iter_mut()
            .map(|rx| *rx.borrow_and_update())
            .collect();
        let seq = positions.iter().copied().min().unwrap_or(0);
        if let Some(names) = names
            .as_ref()
            .filter(|_| saved.as_ref() != Some(&positions))
        {
            let b = buffer.clone();
            let pairs: Vec<(String, u64)> = names
                .iter()
                .cloned()
                .zip(positions.iter().copied())
                .collect();
            let result = tokio::task::spawn_blocking(move || {
                let pairs: Vec<(&str, u64)> = pairs.iter().map(|(n, s)| (n.as_str(), *s)).collect();
                b.save_positions(&pairs)
            })
            .await;
            match result {
                Ok(Ok(())) => {
                    saved = Some(positions);
                    save_failing = false;
                }
                // Unsaved positions only mean records are delivered again after a restart.
                Ok(Err(error)) if !save_failing => {
                    save_failing = true;
                    tracing::warn!(message = "Cannot save the targets' delivery positions (logged once until it works again).", %error)
                }
                Ok(Err(_)) => {}
                Err(error) => tracing::error!(message = "The position-saving task failed.", %error),
            }
        }
        if seq > done {
            let b = buffer.clone();
            match tokio::task::spawn_blocking(move || b.ack_through(seq)).await {
                Ok(Ok(())) => done = seq,
                Ok(Err(error)) => {
                    // The records stay and are delivered again after a restart; harmless duplicates.
                    tracing::error!(message = "Cannot remove delivered records from the buffer.", %error, seq);
                }
                Err(error) => {
                    tracing::error!(message = "The buffer acknowledgement task failed.", %error)
                }
            }
        }
        if !open.iter().any(|o| *o) {
            return;
        }
    }
}
