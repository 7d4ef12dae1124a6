//! The durable disk buffer: encoded chunks wait here, on disk, until the sink
//! has delivered them, so an InfluxDB outage or a `kill -9` loses nothing that
//! was made durable.
//!
//! Storage is one [redb](https://docs.rs/redb) file, `<dir>/buffer.redb`
//! (copy-on-write B-trees, crash-safe commits). Table `records` maps a
//! monotonically increasing `u64` sequence number to one record:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | CRC-32 (IEEE) of bytes 4.. , little-endian |
//! | 4..12 | append time, milliseconds since the Unix epoch, LE |
//! | 12..20 | points (lines) in the chunk, LE |
//! | 20.. | the line protocol, UTF-8 |
//!
//! Table `meta` keeps `next_seq`, so sequence numbers never repeat, even after
//! every record was acknowledged, and, with several InfluxDB targets,
//! `delivered:<target name>`: the last record each target delivered, so that
//! after a restart each resumes after its own position ([`Buffer::positions`]).
//!
//! Durability: with `fsync_interval > 0`, appends and acknowledgements are
//! committed with redb's non-durable commits (visible at once, not fsynced) and
//! a flusher thread makes them durable every interval with one durable
//! commit; [`Buffer::durable_seq`] tells up to which record that has happened.
//! With `fsync_interval = 0` every append and acknowledgement is durable
//! before it returns. A crash loses only what was committed after the last
//! durable commit; acknowledgements lost that way mean records are delivered
//! again, which is harmless because every line carries its timestamp.
//!
//! Integrity: at open every record's checksum is verified; a corrupt record is
//! removed, counted and logged with its sequence number, and the buffer opens
//! anyway. If redb itself cannot open the file (torn or garbage file), the file
//! is renamed `buffer.redb.corrupt-<unix seconds>`, an ERROR is logged and the
//! buffer starts empty.
//!
//! All methods block (file I/O, and [`Buffer::append`] may wait for space with
//! `when_full = "block"`): call them from a dedicated thread or
//! `spawn_blocking`, never directly on an async task.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};

use crate::config::{BufferConfig, WhenFull};
use crate::encode::Chunk;
use crate::monitor::metrics::{
    BUFFER_ACKED, BUFFER_APPENDS, BUFFER_BYTES, BUFFER_CORRUPT_RECORDS, BUFFER_DROPPED_POINTS,
    BUFFER_DURABLE_SEQUENCE, BUFFER_FULL_WAITS, BUFFER_OLDEST_AGE, BUFFER_POINTS, BUFFER_RECORDS,
};

/// The buffer's file name inside its directory.
pub const FILE_NAME: &str = "buffer.redb";
/// Bytes of a record before its line protocol (checksum, time, points).
pub const HEADER_BYTES: usize = 20;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
/// Key prefix in `meta` of a named reader's delivery position (`delivered:<target>`).
const POSITION_PREFIX: &str = "delivered:";
/// How long a blocked append sleeps between checks of the closed flag.
const BLOCK_POLL: Duration = Duration::from_millis(100);
/// Least time between two "dropped the oldest records" log lines.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// Corrupt records logged one by one at open; the rest are summarised.
const CORRUPT_LOGGED: usize = 20;
/// Memory redb may use to cache the file (its default is 1 GiB). Its write buffer
/// keeps the pages of non-durable commits, so with the default the process grew with
/// the buffer during an outage (by ~120 MiB in 60 s at 10,000 points/s); reads of
/// fresh records are served by the OS page cache just as well.
pub const CACHE_BYTES: usize = 32 << 20;

/// Why a buffer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The buffer directory could not be created.
    #[error("buffer directory {path}: {source}")]
    Dir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The buffer file could not be opened (and was not set aside as corrupt).
    #[error("buffer file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's error.
        source: redb::Error,
    },
    /// A read or write of the store failed.
    #[error("buffer {op}: {source}")]
    Store {
        /// What was being done (`append`, `ack`, `read`, `sync`, `stats`).
        op: &'static str,
        /// redb's error.
        source: redb::Error,
    },
    /// The buffer was closed while an append waited for space.
    #[error("the buffer is closed")]
    Closed,
}

fn store<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> BufferError {
    move |e| BufferError::Store {
        op,
        source: e.into(),
    }
}

/// What opening the buffer found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Records waiting for delivery.
    pub records: u64,
    /// Points in those records.
    pub points: u64,
    /// Bytes of those records.
    pub bytes: u64,
    /// Sequence numbers of the corrupt records that were skipped and removed.
    pub corrupt: Vec<u64>,
    /// Where an unreadable file was moved, when it was.
    pub moved_aside: Option<PathBuf>,
}

/// A snapshot of the buffer's contents and counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BufferStats {
    /// Records waiting for delivery.
    pub records: u64,
    /// Points in those records.
    pub points: u64,
    /// Bytes of those records (header included).
    pub bytes: u64,
    /// Sequence number of the oldest waiting record.
    pub oldest_seq: Option<u64>,
    /// Time since the oldest waiting record was appended.
    pub oldest_age: Option<Duration>,
    /// Highest sequence number known to be durable (0: none yet).
    pub durable_seq: u64,
    /// Records appended since open.
    pub appended: u64,
    /// Records removed after delivery since open.
    pub acked: u64,
    /// Points removed undelivered by `when_full = "drop_oldest"` since open.
    pub dropped_points: u64,
    /// Appends that had to wait for space since open.
    pub full_waits: u64,
    /// Corrupt records skipped since open (at open or when read).
    pub corrupt_skipped: u64,
}

/// The durable queue; cheap to clone (one shared store), `Send + Sync`.
///
/// When the last clone is dropped the flusher thread is stopped and joined and
/// the file is closed before `drop` returns, so it can be opened again at once.
#[derive(Clone)]
pub struct Buffer {
    // Declared first so it is released before the flusher's join lets the store close.
    inner: Arc<Inner>,
    _flusher: Arc<FlusherGuard>,
}

/// Stops and joins the flusher thread when the last [`Buffer`] clone goes.
struct FlusherGuard {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                tracing::error!(message = "The buffer flusher thread panicked.");
            }
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("durable_seq", &self.durable_seq())
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Database,
    max_bytes: u64,
    when_full: WhenFull,
    /// Every commit durable (`fsync_interval = 0`).
    immediate: bool,
    /// Held across each write transaction of appends and acks (never across an `.await`: the
    /// methods are blocking), so the totals always match the committed store.
    state: Mutex<State>,
    /// Signalled when acknowledgements free space or the buffer closes.
    space: Condvar,
    /// Last committed append (durable or not).
    last_seq: AtomicU64,
    /// Highest sequence number made durable.
    durable_seq: AtomicU64,
    /// A non-durable commit happened since the last durable one.
    dirty: AtomicBool,
    /// Tells async readers the last appended sequence number.
    appended_tx: tokio::sync::watch::Sender<u64>,
    /// Tells waiters the durable sequence number (upstream acknowledgement).
    durable_tx: tokio::sync::watch::Sender<u64>,
    appended: AtomicU64,
    acked: AtomicU64,
    dropped_points: AtomicU64,
    full_waits: AtomicU64,
    corrupt_skipped: AtomicU64,
}

struct State {
    next_seq: u64,
    records: u64,
    points: u64,
    bytes: u64,
    closed: bool,
    scratch: Vec<u8>,
    last_drop_log: Option<Instant>,
    drops_unlogged: (u64, u64),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the totals half-updated in a way that matters
    // more than stopping would; keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The header fields of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    at_ms: u64,
    points: u64,
}

fn encode(chunk: &Chunk, at_ms: u64, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(HEADER_BYTES + chunk.lines.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&at_ms.to_le_bytes());
    out.extend_from_slice(&(chunk.points as u64).to_le_bytes());
    out.extend_from_slice(chunk.lines.as_bytes());
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// Reads the header without verifying the checksum (for accounting).
fn header(bytes: &[u8]) -> Option<Header> {
    Some(Header {
        at_ms: u64_at(bytes, 4)?,
        points: u64_at(bytes, 12)?,
    })
}

/// Verifies and decodes a record; `None` when it is corrupt.
fn decode(bytes: &[u8]) -> Option<(Header, &str)> {
    let stored = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let body = bytes.get(4..)?;
    if body.len() < HEADER_BYTES - 4 || crc32fast::hash(body) != stored {
        return None;
    }
    let h = header(bytes)?;
    let lines = std::str::from_utf8(bytes.get(HEADER_BYTES..)?).ok()?;
    Some((h, lines))
}

/// Whether an open error means the file is not a usable redb file (so it is set aside).
fn is_corruption(e: &DatabaseError) -> bool {
    match e {
        DatabaseError::UpgradeRequired(_) | DatabaseError::RepairAborted => true,
        DatabaseError::Storage(StorageError::Corrupted(_)) => true,
        DatabaseError::Storage(StorageError::Io(io)) => matches!(
            io.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

/// Records removed by one append under `when_full = "drop_oldest"`.
#[derive(Debug, Default)]
struct Dropped {
    records: u64,
    points: u64,
    bytes: u64,
    first_seq: Option<u64>,
    last_seq: u64,
}

/// Totals found by the verification scan at open.
struct Loaded {
    next_seq: u64,
    records: u64,
    points: u64,
    bytes: u64,
    corrupt: Vec<u64>,
}

/// Verifies every record, removes the corrupt ones and returns the totals (one durable commit).
fn load(db: &Database) -> Result<Loaded, redb::Error> {
    let txn = db.begin_write()?;
    let mut loaded = Loaded {
        next_seq: 1,
        records: 0,
        points: 0,
        bytes: 0,
        corrupt: Vec::new(),
    };
    {
        let mut records = txn.open_table(RECORDS)?;
        let mut meta = txn.open_table(META)?;
        let mut last = 0u64;
        for row in records.iter()? {
            let (k, v) = row?;
            let seq = k.value();
            last = seq;
            let bytes = v.value();
            match decode(bytes) {
                Some((h, _)) => {
                    loaded.records += 1;
                    loaded.points += h.points;
                    loaded.bytes += bytes.len() as u64;
                }
                None => loaded.corrupt.push(seq),
            }
        }
        for seq in &loaded.corrupt {
            records.remove(*seq)?;
        }
        let stored_next = meta.get(NEXT_SEQ)?.map(|g| g.value()).unwrap_or(1);
        loaded.next_seq = stored_next.max(last.saturating_add(1)).max(1);
        meta.insert(NEXT_SEQ, loaded.next_seq)?;
    }
    txn.commit()?;
    Ok(loaded)
}

/// Opens (or creates) a database and loads it, turning a panic inside the store into an error.
fn open_and_load(
    create: &dyn Fn() -> Result<Database, DatabaseError>,
) -> Result<(Database, Loaded), (bool, redb::Error)> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = create().map_err(|e| (is_corruption(&e), redb::Error::from(e)))?;
        match load(&db) {
            Ok(loaded) => Ok((db, loaded)),
            Err(e) => {
                let corrupt = matches!(&e, redb::Error::Corrupted(_))
                    || matches!(&e, redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData);
                Err((corrupt, e))
            }
        }
    }));
    match attempt {
        Ok(result) => result,
        Err(_) => Err((
            true,
            redb::Error::Corrupted("the store panicked while opening the file".into()),
        )),
    }
}

/// A file this much larger than its records (and at least [`COMPACT_MIN_BYTES`]) is compacted at open.
const COMPACT_RATIO: u64 = 2;
/// Files below this size are never compacted.
#[cfg(not(test))]
const COMPACT_MIN_BYTES: u64 = 64 << 20;
/// Files below this size are never compacted (small in tests, to exercise compaction).
#[cfg(test)]
const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// Compacts the file at open when most of it is free pages (space freed by deliveries is
/// reused while running but never given back to the file system); a failure is logged and ignored.
fn compact_if_sparse(mut db: Database, path: &Path, records_bytes: u64) -> Database {
    let before = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if before < COMPACT_MIN_BYTES || before <= records_bytes.saturating_mul(COMPACT_RATIO) {
        return db;
    }
    let started = std::time::Instant::now();
    match db.compact() {
        Ok(_) => {
            let after = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            tracing::info!(
                message = "Compacted the buffer file.",
                before_bytes = before,
                after_bytes = after,
                records_bytes,
                took = ?started.elapsed(),
            );
        }
        Err(error) => {
            tracing::warn!(message = "Cannot compact the buffer file; it keeps its size.", %error)
        }
    }
    db
}

impl Buffer {
    /// Opens `<dir>/buffer.redb` (creating the folder and file), verifies every record and starts the flusher.
    pub fn open(dir: &Path, cfg: &BufferConfig) -> Result<(Buffer, OpenReport), BufferError> {
        crate::private_fs::create_dir_all(dir).map_err(|source| BufferError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let create = || {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
        };
        let mut moved_aside = None;
        let (db, loaded) = match open_and_load(&create) {
            Ok(ok) => ok,
            Err((true, error)) => {
                let aside = dir.join(format!(
                    "{FILE_NAME}.corrupt-{}",
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                ));
                std::fs::rename(&path, &aside).map_err(|source| BufferError::Dir {
                    path: aside.clone(),
                    source,
                })?;
                tracing::error!(
                    message = "The buffer file cannot be read; it was set aside and the buffer starts empty. Points in it are not delivered.",
                    %error,
                    moved_to = %aside.display(),
                );
                moved_aside = Some(aside);
                open_and_load(&create).map_err(|(_, source)| BufferError::Open {
                    path: path.clone(),
                    source,
                })?
            }
            Err((false, source)) => return Err(BufferError::Open { path, source }),
        };
        let db = compact_if_sparse(db, &path, loaded.bytes);
        // redb creates its file with the process's umask; the buffer holds a home's history.
        if let Err(error) = crate::private_fs::tighten(dir) {
            tracing::warn!(message = "Cannot make the buffer file private.", dir = %dir.display(), %error);
        }
        let mut report = Buffer::start(db, loaded, cfg);
        report.1.moved_aside = moved_aside;
        Ok(report)
    }

    /// Opens a buffer on any redb storage backend (tests simulate crashes with one).
    #[cfg(test)]
    fn open_with_backend<B: redb::StorageBackend + Clone>(
        backend: B,
        cfg: &BufferConfig,
    ) -> Result<(Buffer, OpenReport), BufferError> {
        let create = || {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(backend.clone())
        };
        let (db, loaded) = open_and_load(&create).map_err(|(_, source)| BufferError::Open {
            path: PathBuf::from("<backend>"),
            source,
        })?;
        Ok(Buffer::start(db, loaded, cfg))
    }

    fn start(db: Database, loaded: Loaded, cfg: &BufferConfig) -> (Buffer, OpenReport) {
        for seq in loaded.corrupt.iter().take(CORRUPT_LOGGED) {
            tracing::error!(
                message = "A buffer record failed its checksum; it was skipped and removed.",
                seq
            );
        }
        if loaded.corrupt.len() > CORRUPT_LOGGED {
            tracing::error!(
                message =
                    "More buffer records failed their checksum; they were skipped and removed.",
                more = loaded.corrupt.len() - CORRUPT_LOGGED,
            );
        }
        metrics::counter!(BUFFER_CORRUPT_RECORDS).increment(loaded.corrupt.len() as u64);
        let last = loaded.next_seq - 1;
        let (appended_tx, _) = tokio::sync::watch::channel(last);
        let (durable_tx, _) = tokio::sync::watch::channel(last);
        let inner = Arc::new(Inner {
            db,
            max_bytes: cfg.max_bytes,
            when_full: cfg.when_full,
            immediate: cfg.fsync_interval.is_zero(),
            state: Mutex::new(State {
                next_seq: loaded.next_seq,
                records: loaded.records,
                points: loaded.points,
                bytes: loaded.bytes,
                closed: false,
                scratch: Vec::new(),
                last_drop_log: None,
                drops_unlogged: (0, 0),
            }),
            space: Condvar::new(),
            last_seq: AtomicU64::new(last),
            // `load` committed durably.
            durable_seq: AtomicU64::new(last),
            dirty: AtomicBool::new(false),
            appended_tx,
            durable_tx,
            appended: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            dropped_points: AtomicU64::new(0),
            full_waits: AtomicU64::new(0),
            corrupt_skipped: AtomicU64::new(loaded.corrupt.len() as u64),
        });
        let tick = if cfg.fsync_interval.is_zero() {
            Duration::from_secs(1)
        } else {
            cfg.fsync_interval
        };
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("buffer-flusher".into())
                .spawn(move || flusher(&inner, &stop, tick))
        };
        let thread = match thread {
            Ok(handle) => Some(handle),
            // Without the thread appends stay visible but become durable only on sync/close.
            Err(error) => {
                tracing::error!(message = "Cannot start the buffer flusher thread.", %error);
                None
            }
        };
        let buffer = Buffer {
            inner,
            _flusher: Arc::new(FlusherGuard { stop, thread }),
        };
        buffer.publish_gauges(&lock(&buffer.inner.state));
        let report = OpenReport {
            records: loaded.records,
            points: loaded.points,
            bytes: loaded.bytes,
            corrupt: loaded.corrupt,
            moved_aside: None,
        };
        (buffer, report)
    }

    fn begin(&self) -> Result<redb::WriteTransaction, redb::Error> {
        let mut txn = self.inner.db.begin_write()?;
        if !self.inner.immediate {
            txn.set_durability(Durability::None)?;
        }
        Ok(txn)
    }

    fn committed(&self) {
        if !self.inner.immediate {
            self.inner.dirty.store(true, Ordering::Release);
        }
    }

    /// Appends a chunk and returns its sequence number; with `when_full = "block"` waits for space (until [`Buffer::close`]).
    pub fn append(&self, chunk: &Chunk) -> Result<u64, BufferError> {
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        let mut record = std::mem::take(&mut st.scratch);
        encode(chunk, now_ms(), &mut record);
        let size = record.len() as u64;
        let mut waited = false;
        loop {
            if st.closed {
                st.scratch = record;
                return Err(BufferError::Closed);
            }
            // A record larger than the whole buffer is accepted when the buffer is empty.
            if st.bytes + size <= inner.max_bytes
                || st.records == 0
                || inner.when_full == WhenFull::DropOldest
            {
                break;
            }
            if !waited {
                waited = true;
                inner.full_waits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(BUFFER_FULL_WAITS).increment(1);
                tracing::debug!(
                    message = "Buffer full; the append waits for deliveries.",
                    bytes = st.bytes
                );
            }
            st = inner
                .space
                .wait_timeout(st, BLOCK_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let seq = st.next_seq;
        let result = (|| -> Result<Dropped, redb::Error> {
            let txn = self.begin()?;
            let mut dropped = Dropped::default();
            {
                let mut records = txn.open_table(RECORDS)?;
                let (mut bytes, mut count) = (st.bytes, st.records);
                while bytes + size > inner.max_bytes && count > 0 {
                    let Some((k, v)) = records.pop_first()? else {
                        break;
                    };
                    let len = v.value().len() as u64;
                    let key = k.value();
                    dropped.first_seq.get_or_insert(key);
                    dropped.last_seq = key;
                    dropped.records += 1;
                    dropped.points += header(v.value()).map(|h| h.points).unwrap_or(0);
                    dropped.bytes += len;
                    bytes = bytes.saturating_sub(len);
                    count -= 1;
                }
                records.insert(seq, record.as_slice())?;
                let mut meta = txn.open_table(META)?;
                meta.insert(NEXT_SEQ, seq + 1)?;
            }
            txn.commit()?;
            Ok(dropped)
        })();
        st.scratch = record;
        let dropped = result.map_err(store("append"))?;
        self.committed();
        st.next_seq = seq + 1;
        st.records = st.records.saturating_sub(dropped.records) + 1;
        st.points = st.points.saturating_sub(dropped.points) + chunk.points as u64;
        st.bytes = st.bytes.saturating_sub(dropped.bytes) + size;
        inner.last_seq.store(seq, Ordering::Release);
        if inner.immediate {
            inner.durable_seq.store(seq, Ordering::Release);
            inner.durable_tx.send_replace(seq);
            metrics::gauge!(BUFFER_DURABLE_SEQUENCE).set(seq as f64);
        }
        inner.appended.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(BUFFER_APPENDS).increment(1);
        if dropped.records > 0 {
            inner
                .dropped_points
                .fetch_add(dropped.points, Ordering::Relaxed);
            metrics::counter!(BUFFER_DROPPED_POINTS, "reason" => "buffer_full")
                .increment(dropped.points);
            self.log_drop(&mut st, &dropped);
        }
        self.publish_gauges(&st);
        drop(st);
        inner.appended_tx.send_replace(seq);
        Ok(seq)
    }

    fn log_drop(&self, st: &mut State, dropped: &Dropped) {
        st.drops_unlogged.0 += dropped.records;
        st.drops_unlogged.1 += dropped.points;
        if st
            .last_drop_log
            .is_some_and(|t| t.elapsed() < DROP_LOG_EVERY)
        {
            return;
        }
        let first_seq = dropped.first_seq.unwrap_or(0);
        let last_seq = dropped.last_seq;
        tracing::warn!(
            message = "Buffer full: the oldest undelivered records were removed (when_full = \"drop_oldest\"); their points are lost.",
            reason = "buffer_full",
            records = st.drops_unlogged.0,
            points = st.drops_unlogged.1,
            first_seq,
            last_seq,
            max_bytes = self.inner.max_bytes,
        );
        st.drops_unlogged = (0, 0);
        st.last_drop_log = Some(Instant::now());
    }

    /// Up to `max_records` records after sequence `after` (from the oldest when `None`), in order; each chunk carries its `seq`.
    pub fn read_after(
        &self,
        after: Option<u64>,
        max_records: usize,
    ) -> Result<Vec<(u64, Chunk)>, BufferError> {
        let txn = self.inner.db.begin_read().map_err(store("read"))?;
        let records = txn.open_table(RECORDS).map_err(store("read"))?;
        let start = match after {
            Some(seq) => Bound::Excluded(seq),
            None => Bound::Unbounded,
        };
        let mut out = Vec::with_capacity(max_records.min(1024));
        for row in records
            .range::<u64>((start, Bound::Unbounded))
            .map_err(store("read"))?
        {
            if out.len() >= max_records {
                break;
            }
            let (k, v) = row.map_err(store("read"))?;
            let seq = k.value();
            match decode(v.value()) {
                Some((h, lines)) => out.push((
                    seq,
                    Chunk {
                        lines: lines.to_string(),
                        points: h.points as usize,
                        seq: Some(seq),
                        marks: Default::default(),
                    },
                )),
                None => {
                    // Verified at open, so only a disk fault gets here; the ack removes it.
                    self.inner.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(BUFFER_CORRUPT_RECORDS).increment(1);
                    tracing::error!(
                        message = "A buffer record failed its checksum when read; it is skipped.",
                        seq
                    );
                }
            }
        }
        Ok(out)
    }

    /// Removes every record up to and including `seq`: the sink delivered them (or set them aside).
    pub fn ack_through(&self, seq: u64) -> Result<(), BufferError> {
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        let result = (|| -> Result<(u64, u64, u64), redb::Error> {
            let txn = self.begin()?;
            let mut removed = (0u64, 0u64, 0u64);
            {
                let mut records = txn.open_table(RECORDS)?;
                for row in records.extract_from_if(..=seq, |_, _| true)? {
                    let (_, v) = row?;
                    removed.0 += 1;
                    removed.1 += header(v.value()).map(|h| h.points).unwrap_or(0);
                    removed.2 += v.value().len() as u64;
                }
            }
            if removed.0 == 0 {
                txn.abort()?;
            } else {
                txn.commit()?;
            }
            Ok(removed)
        })();
        let (records, points, bytes) = result.map_err(store("ack"))?;
        if records == 0 {
            return Ok(());
        }
        self.committed();
        st.records = st.records.saturating_sub(records);
        st.points = st.points.saturating_sub(points);
        st.bytes = st.bytes.saturating_sub(bytes);
        inner.acked.fetch_add(records, Ordering::Relaxed);
        metrics::counter!(BUFFER_ACKED).increment(records);
        self.publish_gauges(&st);
        drop(st);
        inner.space.notify_all();
        Ok(())
    }

    /// Makes every commit so far durable now; returns the durable sequence number.
    pub fn sync(&self) -> Result<u64, BufferError> {
        self.inner.sync()
    }

    /// The delivery position saved for each named reader (`None`: none saved), never past the last record.
    ///
    /// With several InfluxDB targets each reads the buffer on its own; a target
    /// that was ahead of the others resumes after its own position at the next
    /// start instead of receiving again what it already delivered.
    pub fn positions(&self, names: &[&str]) -> Result<Vec<Option<u64>>, BufferError> {
        let txn = self.inner.db.begin_read().map_err(store("positions"))?;
        let meta = txn.open_table(META).map_err(store("positions"))?;
        let last = self.last_seq();
        names
            .iter()
            .map(|name| {
                let key = format!("{POSITION_PREFIX}{name}");
                let saved = meta.get(key.as_str()).map_err(store("positions"))?;
                Ok(saved.map(|g| g.value().min(last)))
            })
            .collect()
    }

    /// Saves each named reader's delivery position: every record up to it was delivered by that reader.
    ///
    /// Committed like appends (durable within `fsync_interval`); a position lost in a
    /// crash only means records are delivered again, which is harmless.
    pub fn save_positions(&self, positions: &[(&str, u64)]) -> Result<(), BufferError> {
        let _st = lock(&self.inner.state);
        let result = (|| -> Result<(), redb::Error> {
            let txn = self.begin()?;
            {
                let mut meta = txn.open_table(META)?;
                for (name, seq) in positions {
                    let key = format!("{POSITION_PREFIX}{name}");
                    meta.insert(key.as_str(), *seq)?;
                }
            }
            txn.commit()?;
            Ok(())
        })();
        result.map_err(store("positions"))?;
        self.committed();
        Ok(())
    }

    /// Points removed undelivered by `when_full = "drop_oldest"` since open (a cheap counter read).
    pub fn dropped_points(&self) -> u64 {
        self.inner.dropped_points.load(Ordering::Relaxed)
    }

    /// Highest sequence number known to be on disk durably (0: none); upstream acknowledgement waits for it.
    pub fn durable_seq(&self) -> u64 {
        self.inner.durable_seq.load(Ordering::Acquire)
    }

    /// The configured size limit (bytes of records).
    pub fn max_bytes(&self) -> u64 {
        self.inner.max_bytes
    }

    /// A receiver of the durable sequence number, for what waits until records are safe on disk.
    pub fn subscribe_durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.durable_tx.subscribe()
    }

    /// The last appended sequence number (durable or not; 0: none since the file was created).
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq.load(Ordering::Acquire)
    }

    /// A receiver of the last appended sequence number, for readers that wait for new records.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.appended_tx.subscribe()
    }

    /// Contents and counters; reads the oldest record's header.
    pub fn stats(&self) -> Result<BufferStats, BufferError> {
        let inner = &*self.inner;
        let (records, points, bytes) = {
            let st = lock(&inner.state);
            (st.records, st.points, st.bytes)
        };
        let (oldest_seq, oldest_age) = self.inner.oldest()?;
        Ok(BufferStats {
            records,
            points,
            bytes,
            oldest_seq,
            oldest_age,
            durable_seq: self.durable_seq(),
            appended: inner.appended.load(Ordering::Relaxed),
            acked: inner.acked.load(Ordering::Relaxed),
            dropped_points: inner.dropped_points.load(Ordering::Relaxed),
            full_waits: inner.full_waits.load(Ordering::Relaxed),
            corrupt_skipped: inner.corrupt_skipped.load(Ordering::Relaxed),
        })
    }

    /// Stops blocked and future appends (they return [`BufferError::Closed`]) and makes everything durable.
    pub fn close(&self) -> Result<u64, BufferError> {
        lock(&self.inner.state).closed = true;
        self.inner.space.notify_all();
        self.sync()
    }

    fn publish_gauges(&self, st: &State) {
        metrics::gauge!(BUFFER_DURABLE_SEQUENCE).set(self.durable_seq() as f64);
        metrics::gauge!(BUFFER_BYTES).set(st.bytes as f64);
        metrics::gauge!(BUFFER_RECORDS).set(st.records as f64);
        metrics::gauge!(BUFFER_POINTS).set(st.points as f64);
    }
}

impl Inner {
    /// Makes every commit so far durable now; returns the durable sequence number.
    fn sync(&self) -> Result<u64, BufferError> {
        let inner = self;
        let target = inner.last_seq.load(Ordering::Acquire);
        if !inner.dirty.swap(false, Ordering::AcqRel) {
            return Ok(inner.durable_seq.load(Ordering::Acquire));
        }
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = inner.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            inner.dirty.store(true, Ordering::Release);
            return Err(store("sync")(e));
        }
        inner.durable_seq.fetch_max(target, Ordering::AcqRel);
        let durable = inner.durable_seq.load(Ordering::Acquire);
        inner.durable_tx.send_if_modified(|v| {
            let moved = durable > *v;
            *v = (*v).max(durable);
            moved
        });
        metrics::gauge!(BUFFER_DURABLE_SEQUENCE).set(durable as f64);
        Ok(durable)
    }

    fn oldest(&self) -> Result<(Option<u64>, Option<Duration>), BufferError> {
        let txn = self.db.begin_read().map_err(store("stats"))?;
        let records = txn.open_table(RECORDS).map_err(store("stats"))?;
        let Some((k, v)) = records.first().map_err(store("stats"))? else {
            return Ok((None, None));
        };
        let age =
            header(v.value()).map(|h| Duration::from_millis(now_ms().saturating_sub(h.at_ms)));
        Ok((Some(k.value()), age))
    }
}

/// Makes non-durable commits durable every `tick` and refreshes the oldest-age gauge; ends when the buffer is gone.
fn flusher(inner: &Inner, stop: &AtomicBool, tick: Duration) {
    let mut failing = false;
    loop {
        std::thread::park_timeout(tick);
        if stop.load(Ordering::Acquire) {
            return;
        }
        match inner.sync() {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(message = "The buffer is made durable again.");
            }
            Ok(_) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::error!(message = "Cannot make the buffer durable (fsync); retrying every interval.", %error);
            }
            Err(_) => {}
        }
        if let Ok((_, age)) = inner.oldest() {
            metrics::gauge!(BUFFER_OLDEST_AGE).set(age.map_or(0.0, |a| a.as_secs_f64()));
        }
    }
}

pub mod tasks;

#[cfg(test)]
mod tests;
