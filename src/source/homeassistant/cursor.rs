//! The resume cursor: HA's time of the last event handed on, kept in the data directory.
//!
//! After a reconnect or a restart of the process, the gap from the cursor to
//! the first live event is filled from HA's history. Two positions are kept:
//! the latest time *handed on* (what an in-process reconnect resumes from: the
//! events before it are on their way) and the latest time whose events are all
//! *safe* — released by the durable buffer through the [`Handoff`](crate::feedback::handoff)
//! marks the cursor stamps on every event. Only the safe position is persisted,
//! so a crash never skips an event that was handed on but not yet on disk. The file
//! (`<data_dir>/cursor/<source>.json`, `{"last_event": "<RFC 3339>"}`) is
//! replaced atomically: written to a temporary file, synced, renamed over the
//! old one, and the folder synced, so a crash leaves the old or the new cursor,
//! never a torn one. It is written at most every [`WRITE_EVERY`] and at
//! shutdown; a crash therefore loses at most those seconds of cursor, which only
//! means those rows are backfilled again (idempotent in InfluxDB).

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::event::{Event, Timestamp};
use crate::feedback::handoff::Tracker;

/// How often the cursor file is rewritten at most: each write is two fsyncs and a rename,
/// 12 % of the process's CPU at 30 events/s when it was every second (docs/BENCHMARKS.md);
/// a crash then backfills at most these seconds again.
pub const WRITE_EVERY: Duration = Duration::from_secs(5);
/// Cursor files being written at once, over every home of the process. Each write is a
/// blocking task (write, fsync, rename, fsync of the folder); unbounded, a process with
/// hundreds of homes grew the blocking pool to a thread per home (each with its stack and
/// allocator heap: ~2 MiB of RSS per home). Bounded, a write that waits is simply later,
/// and takes the newest position when it runs.
static SAVES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
/// "No time" in the atomics below.
const NONE: i64 = i64::MIN;

/// Why the cursor file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// Reading, writing, syncing or renaming failed.
    #[error("cursor file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a cursor.
    #[error("cursor file {path} is not a cursor: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

#[derive(Serialize, Deserialize)]
struct CursorFile {
    last_event: Timestamp,
}

/// Where the cursor of `source` lives in `dir` (`<data_dir>/cursor`).
pub fn path_for(dir: &Path, source: &str) -> PathBuf {
    let name: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.json"))
}

/// Reads the cursor; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Timestamp>, CursorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CursorError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_str::<CursorFile>(&text)
        .map(|c| Some(c.last_event))
        .map_err(|e| CursorError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Replaces the cursor atomically (temporary file, sync, rename, sync of the folder).
pub fn save(path: &Path, last_event: Timestamp) -> Result<(), CursorError> {
    let io = |source| CursorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string(&CursorFile { last_event }).unwrap_or_default();
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    // The rename is durable once the folder is synced; not every platform allows opening one.
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// The cursor as the client task keeps it, shared with the task that persists it.
#[derive(Debug)]
pub struct Cursor {
    /// The latest `time_fired` handed on (live, snapshot or backfill).
    last: AtomicI64,
    /// While a gap is being backfilled: its start, which is what must be persisted until the gap is filled.
    hold: AtomicI64,
    /// The latest time whose events (and every earlier one handed on) are safe.
    safe: AtomicI64,
    /// Marks handed out and the handed-on time reached at each, waiting to be released.
    marks: Mutex<Marking>,
}

/// The mark side of the cursor, behind one lock taken once per event.
#[derive(Debug)]
struct Marking {
    /// `None`: nobody releases marks (no acknowledging stage); the handed-on time is then taken as safe.
    tracker: Option<Tracker>,
    /// `(mark seq, handed-on time at that mark)`, in order; bounded by what the buffer has not yet made durable.
    pending: VecDeque<(u64, i64)>,
}

impl Cursor {
    /// A cursor starting at `start` (from the file), or empty.
    pub fn new(start: Option<Timestamp>, tracker: Option<Tracker>) -> Self {
        let start = start.map_or(NONE, Timestamp::as_nanos);
        Cursor {
            last: AtomicI64::new(start),
            hold: AtomicI64::new(NONE),
            safe: AtomicI64::new(start),
            marks: Mutex::new(Marking {
                tracker,
                pending: VecDeque::new(),
            }),
        }
    }

    /// Stamps the event with the next mark; call [`Cursor::advance`] with it once the event is handed on.
    pub fn stamp(&self, event: &mut Event) -> crate::feedback::handoff::Mark {
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        let mark = m
            .tracker
            .as_mut()
            .map_or(crate::feedback::handoff::Mark::NONE, Tracker::mark);
        event.meta.mark = mark;
        mark
    }

    /// Notes that an event of time `t`, stamped with `mark`, was handed on.
    pub fn advance(&self, t: Timestamp, mark: crate::feedback::handoff::Mark) {
        let last = self
            .last
            .fetch_max(t.as_nanos(), Ordering::AcqRel)
            .max(t.as_nanos());
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if m.tracker.is_none() || mark.is_none() {
            self.safe.fetch_max(last, Ordering::AcqRel);
            return;
        }
        match m.pending.back_mut() {
            // Same time reached again: the later mark stands for it.
            Some(back) if back.1 == last => back.0 = mark.seq(),
            _ => m.pending.push_back((mark.seq(), last)),
        }
    }

    /// Moves the safe position up to the marks released so far; returns it.
    pub fn settle(&self) -> Option<Timestamp> {
        let mut m = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(released) = m.tracker.as_ref().map(Tracker::safe) {
            let mut reached = NONE;
            while m.pending.front().is_some_and(|(seq, _)| *seq <= released) {
                if let Some((_, at)) = m.pending.pop_front() {
                    reached = reached.max(at);
                }
            }
            if reached != NONE {
                self.safe.fetch_max(reached, Ordering::AcqRel);
            }
        }
        drop(m);
        let safe = self.safe.load(Ordering::Acquire);
        (safe != NONE).then_some(Timestamp::from_nanos(safe))
    }

    /// What is written to the cursor file: the safe position, or the held gap start when earlier.
    pub fn persistable(&self) -> Option<Timestamp> {
        let safe = self.settle();
        let held = self.hold.load(Ordering::Acquire);
        match (held != NONE).then_some(Timestamp::from_nanos(held)) {
            Some(h) => Some(safe.map_or(h, |s| s.min(h))),
            None => safe,
        }
    }

    /// Pins the persisted value at `from` until [`Cursor::release`]: a crash mid-backfill resumes from the gap's start.
    pub fn hold(&self, from: Timestamp) {
        self.hold.store(from.as_nanos(), Ordering::Release);
    }

    /// Ends a [`Cursor::hold`]: the gap is filled (or reported lost).
    pub fn release(&self) {
        self.hold.store(NONE, Ordering::Release);
    }

    /// What a backfill must start from and what is persisted: the held gap start, else the latest time handed on.
    pub fn resume_from(&self) -> Option<Timestamp> {
        let held = self.hold.load(Ordering::Acquire);
        let value = if held != NONE {
            held
        } else {
            self.last.load(Ordering::Acquire)
        };
        (value != NONE).then_some(Timestamp::from_nanos(value))
    }
}

/// Persists `cursor` to `path` at most every [`WRITE_EVERY`] while it changes, and once more when `stop` is cancelled.
pub async fn keep_saved(cursor: Arc<Cursor>, path: PathBuf, stop: CancellationToken) {
    // Unknown at first: the first round writes whatever the cursor holds (at worst the loaded value again).
    let mut saved: Option<Timestamp> = None;
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let last_round = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
        };
        if cursor.persistable() != saved {
            // Never closed, so acquiring only waits for a turn; the position is read once it came.
            let _turn = SAVES.acquire().await;
            let now = cursor.persistable();
            let target = path.clone();
            let written = match now {
                Some(t) => tokio::task::spawn_blocking(move || save(&target, t)).await,
                None => Ok(Ok(())),
            };
            match written {
                Ok(Ok(())) => {
                    saved = now;
                    failing = false;
                }
                Ok(Err(error)) => {
                    if !failing {
                        tracing::warn!(message = "Cannot save the resume cursor; a restart may backfill from an older time.", %error);
                    }
                    failing = true;
                }
                Err(error) => {
                    tracing::error!(message = "The cursor writer failed.", %error);
                }
            }
        }
        if last_round {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::handoff::{Handoff, Mark, Marks};

    #[test]
    fn saves_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("cursor"), "homeassistant");
        assert!(path.ends_with("cursor/homeassistant.json"));
        assert_eq!(load(&path).unwrap(), None);
        let t = Timestamp::parse_rfc3339("2026-11-26T20:44:47.219127+00:00").unwrap();
        save(&path, t).unwrap();
        assert_eq!(load(&path).unwrap(), Some(t));
        let later = Timestamp::from_nanos(t.as_nanos() + 1_000);
        save(&path, later).unwrap();
        assert_eq!(load(&path).unwrap(), Some(later));
        assert!(!path.with_extension("json.tmp").exists());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{"last_event":"2026-11-26T20:44:47.219128+00:00"}"#
        );
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(load(&path), Err(CursorError::Corrupt { .. })));
        assert_eq!(
            path_for(dir.path(), "home/a b").file_name().unwrap(),
            "home_a_b.json"
        );
    }

    #[test]
    fn a_hold_pins_the_resume_point_until_released() {
        let c = Cursor::new(None, None);
        assert_eq!(c.resume_from(), None);
        c.advance(Timestamp::from_nanos(10), Mark::NONE);
        c.advance(Timestamp::from_nanos(5), Mark::NONE);
        assert_eq!(c.resume_from(), Some(Timestamp::from_nanos(10)));
        c.hold(Timestamp::from_nanos(10));
        c.advance(Timestamp::from_nanos(50), Mark::NONE);
        assert_eq!(c.resume_from(), Some(Timestamp::from_nanos(10)));
        c.release();
        assert_eq!(c.resume_from(), Some(Timestamp::from_nanos(50)));
    }

    #[tokio::test]
    async fn the_writer_saves_changes_and_once_more_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let cursor = Arc::new(Cursor::new(None, None));
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_saved(cursor.clone(), path.clone(), stop.clone()));
        cursor.advance(Timestamp::from_nanos(1_000), Mark::NONE);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while load(&path).unwrap() != Some(Timestamp::from_nanos(1_000)) {
            assert!(tokio::time::Instant::now() < deadline, "never saved");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cursor.advance(Timestamp::from_nanos(2_000), Mark::NONE);
        stop.cancel();
        task.await.unwrap();
        assert_eq!(load(&path).unwrap(), Some(Timestamp::from_nanos(2_000)));
    }

    fn event() -> Event {
        Event {
            source: Arc::from("test"),
            time_fired: Timestamp::from_nanos(0),
            origin: Default::default(),
            context: Default::default(),
            kind: crate::event::EventKind::Bus(crate::event::BusEvent {
                event_type: "x".into(),
                data: Default::default(),
            }),
            meta: Default::default(),
        }
    }

    #[test]
    fn only_released_marks_move_the_persisted_position() {
        let handoff = Handoff::new();
        let c = Cursor::new(Some(Timestamp::from_nanos(1)), Some(handoff.register("ha")));
        let mut stamped = Vec::new();
        for t in [10, 20, 20, 30] {
            let mut e = event();
            let mark = c.stamp(&mut e);
            assert_eq!(e.meta.mark, mark);
            c.advance(Timestamp::from_nanos(t), mark);
            stamped.push(mark);
        }
        // Handed on up to 30, nothing released: a reconnect resumes from 30, a restart from 1.
        assert_eq!(c.resume_from(), Some(Timestamp::from_nanos(30)));
        assert_eq!(c.persistable(), Some(Timestamp::from_nanos(1)));
        let release = |m: Mark| {
            let mut marks = Marks::default();
            marks.note(m);
            handoff.release(&marks);
        };
        release(stamped[1]);
        // The second event at 20 is not safe yet, but 20 is reached only with it.
        assert_eq!(c.persistable(), Some(Timestamp::from_nanos(10)));
        release(stamped[2]);
        assert_eq!(c.persistable(), Some(Timestamp::from_nanos(20)));
        // A held gap start below the safe position wins; above it, the safe position does.
        c.hold(Timestamp::from_nanos(15));
        assert_eq!(c.persistable(), Some(Timestamp::from_nanos(15)));
        c.hold(Timestamp::from_nanos(30));
        assert_eq!(c.persistable(), Some(Timestamp::from_nanos(20)));
        release(stamped[3]);
        c.release();
        assert_eq!(c.persistable(), Some(Timestamp::from_nanos(30)));
    }
}
