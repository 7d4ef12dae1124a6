//! Tests of the durable buffer, including a crash model: a storage backend
//! that keeps only what was synced when the "machine" dies.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn cfg(fsync_interval: Duration) -> BufferConfig {
    BufferConfig {
        fsync_interval,
        ..BufferConfig::default()
    }
}

fn chunk(tag: &str, points: usize) -> Chunk {
    Chunk {
        lines: (0..points)
            .map(|i| {
                format!(
                    "m,tag={tag} value={i} {}\n",
                    1_700_000_000_000_000_000u64 + i as u64
                )
            })
            .collect(),
        points,
        seq: None,
        marks: Default::default(),
    }
}

fn all(buffer: &Buffer) -> Vec<(u64, Chunk)> {
    buffer.read_after(None, usize::MAX).expect("read")
}

/// Polls `f` until it holds or 10 s pass.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A disk image: `current` is what the process sees, `synced` what survives a crash.
#[derive(Debug, Default)]
struct Disk {
    current: Vec<u8>,
    synced: Vec<u8>,
    dead: bool,
}

/// A storage backend whose unsynced writes are lost by [`CrashDisk::crash`].
#[derive(Debug, Clone, Default)]
struct CrashDisk(Arc<Mutex<Disk>>);

impl CrashDisk {
    /// The machine dies: this backend refuses every later write; returns the disk as it reboots.
    fn crash(&self) -> CrashDisk {
        let mut disk = self.0.lock().expect("disk");
        disk.dead = true;
        CrashDisk(Arc::new(Mutex::new(Disk {
            current: disk.synced.clone(),
            synced: disk.synced.clone(),
            dead: false,
        })))
    }
}

fn dead() -> std::io::Error {
    std::io::Error::other("the machine crashed")
}

impl redb::StorageBackend for CrashDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.lock().map_err(|_| dead())?.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let disk = self.0.lock().map_err(|_| dead())?;
        let start = offset as usize;
        let src = disk
            .current
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut disk = self.0.lock().map_err(|_| dead())?;
        if disk.dead {
            return Err(dead());
        }
        disk.current.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut disk = self.0.lock().map_err(|_| dead())?;
        if disk.dead {
            return Err(dead());
        }
        let Disk {
            current, synced, ..
        } = &mut *disk;
        synced.clone_from(current);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut disk = self.0.lock().map_err(|_| dead())?;
        if disk.dead {
            return Err(dead());
        }
        let start = offset as usize;
        if disk.current.len() < start + data.len() {
            disk.current.resize(start + data.len(), 0);
        }
        disk.current[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn appends_read_in_order_and_acks_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, report) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    assert_eq!(report, OpenReport::default());
    let seqs: Vec<u64> = ["a", "b", "c"]
        .iter()
        .map(|t| buffer.append(&chunk(t, 2)).expect("append"))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let got = all(&buffer);
    assert_eq!(got.len(), 3);
    for ((seq, c), tag) in got.iter().zip(["a", "b", "c"]) {
        let mut want = chunk(tag, 2);
        want.seq = Some(*seq);
        assert_eq!(c, &want);
    }
    let next = buffer.read_after(Some(1), 1).expect("read");
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].0, 2);

    buffer.ack_through(2).expect("ack");
    let stats = buffer.stats().expect("stats");
    assert_eq!(
        (stats.records, stats.points, stats.oldest_seq, stats.acked),
        (1, 2, Some(3), 2)
    );
    assert_eq!(
        stats.bytes,
        (HEADER_BYTES + chunk("c", 2).lines.len()) as u64
    );
    assert!(stats.oldest_age.is_some());
    drop(buffer);

    let (buffer, report) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("reopen");
    assert_eq!((report.records, report.points), (1, 2));
    assert_eq!(all(&buffer)[0].0, 3);
    assert_eq!(buffer.append(&chunk("d", 1)).expect("append"), 4);
}

#[test]
fn sequence_numbers_never_repeat_after_everything_was_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    let seq = buffer.append(&chunk("a", 1)).expect("append");
    buffer.ack_through(seq).expect("ack");
    assert_eq!(buffer.stats().expect("stats").records, 0);
    drop(buffer);
    let (buffer, report) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("reopen");
    assert_eq!(report.records, 0);
    assert_eq!(buffer.append(&chunk("b", 1)).expect("append"), seq + 1);
}

#[test]
fn a_mostly_free_file_is_compacted_at_open_and_keeps_its_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::from_secs(1))).expect("open");
    let mut last = 0;
    for i in 0..60 {
        last = buffer
            .append(&chunk(&format!("r{i}"), 2000))
            .expect("append");
    }
    buffer.ack_through(last - 1).expect("ack");
    buffer.close().expect("close");
    drop(buffer);
    let before = std::fs::metadata(&path).expect("file").len();
    assert!(before > 4 * COMPACT_MIN_BYTES, "{before}");
    let (buffer, report) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("reopen");
    let after = std::fs::metadata(&path).expect("file").len();
    assert_eq!((report.records, report.points), (1, 2000));
    assert!(
        after < before / 4,
        "not compacted: {before} → {after} bytes for {} record bytes",
        report.bytes
    );
    eprintln!(
        "compaction at open: {before} → {after} bytes for {} record bytes",
        report.bytes
    );
    let left = all(&buffer);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, last);
    assert!(left[0].1.lines.starts_with("m,tag=r59 "));
}

#[test]
fn a_corrupt_record_is_skipped_counted_and_the_rest_survive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    buffer.append(&chunk("first", 3)).expect("append");
    let bad = buffer.append(&chunk("CORRUPTME", 3)).expect("append");
    buffer.append(&chunk("last", 3)).expect("append");
    drop(buffer);

    let path = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&path).expect("read file");
    let needle = b"CORRUPTME";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the record's text is in the file");
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).expect("write file");

    let (buffer, report) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("reopen");
    assert_eq!(report.corrupt, vec![bad]);
    assert_eq!(report.moved_aside, None);
    assert_eq!((report.records, report.points), (2, 6));
    assert_eq!(buffer.stats().expect("stats").corrupt_skipped, 1);
    let tags: Vec<bool> = all(&buffer)
        .iter()
        .map(|(_, c)| c.lines.contains("first") || c.lines.contains("last"))
        .collect();
    assert_eq!(tags, vec![true, true]);
}

#[test]
fn a_garbage_file_is_moved_aside_and_the_buffer_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(dir.path().join(FILE_NAME), &garbage).expect("write");
    let (buffer, report) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    let aside = report.moved_aside.expect("moved aside");
    assert!(
        aside
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("buffer.redb.corrupt-"))
    );
    assert_eq!(std::fs::read(&aside).expect("aside file"), garbage);
    assert_eq!(report.records, 0);
    assert_eq!(buffer.append(&chunk("a", 1)).expect("append"), 1);
}

#[test]
fn a_truncated_file_never_stops_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    for i in 0..50 {
        buffer.append(&chunk(&format!("t{i}"), 20)).expect("append");
    }
    drop(buffer);
    let path = dir.path().join(FILE_NAME);
    let len = std::fs::metadata(&path).expect("meta").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open file");
    file.set_len(len / 3).expect("truncate");
    drop(file);
    let (buffer, report) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    // A file cut to a third has lost its B-tree pages: set aside whole, the buffer starts empty.
    let aside = report.moved_aside.expect("moved aside");
    assert_eq!(std::fs::metadata(&aside).expect("aside").len(), len / 3);
    assert_eq!(report.records, 0);
    let seq = buffer.append(&chunk("after", 1)).expect("append");
    assert!(all(&buffer).iter().any(|(s, _)| *s == seq));
}

#[test]
fn block_waits_for_an_ack_and_close_releases_a_waiter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = (HEADER_BYTES + chunk("a", 10).lines.len()) as u64;
    let config = BufferConfig {
        max_bytes: one * 3,
        when_full: WhenFull::Block,
        fsync_interval: Duration::ZERO,
        enabled: true,
    };
    let (buffer, _) = Buffer::open(dir.path(), &config).expect("open");
    for tag in ["a", "b", "c"] {
        buffer.append(&chunk(tag, 10)).expect("append");
    }
    let waiter = {
        let buffer = buffer.clone();
        std::thread::spawn(move || buffer.append(&chunk("d", 10)))
    };
    wait_for("the append to wait", || {
        buffer.stats().expect("stats").full_waits == 1
    });
    assert_eq!(buffer.stats().expect("stats").records, 3);
    buffer.ack_through(1).expect("ack");
    let seq = waiter.join().expect("join").expect("append after ack");
    assert_eq!(seq, 4);
    let stats = buffer.stats().expect("stats");
    assert_eq!((stats.records, stats.dropped_points), (3, 0));

    let waiter = {
        let buffer = buffer.clone();
        std::thread::spawn(move || buffer.append(&chunk("e", 10)))
    };
    wait_for("the second append to wait", || {
        buffer.stats().expect("stats").full_waits == 2
    });
    buffer.close().expect("close");
    assert!(matches!(
        waiter.join().expect("join"),
        Err(BufferError::Closed)
    ));
    assert_eq!(buffer.stats().expect("stats").records, 3);
}

#[test]
fn drop_oldest_removes_and_counts_the_oldest_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = (HEADER_BYTES + chunk("a", 10).lines.len()) as u64;
    let config = BufferConfig {
        max_bytes: one * 3,
        when_full: WhenFull::DropOldest,
        fsync_interval: Duration::ZERO,
        enabled: true,
    };
    let (buffer, _) = Buffer::open(dir.path(), &config).expect("open");
    for tag in ["a", "b", "c", "d", "e"] {
        buffer.append(&chunk(tag, 10)).expect("append");
    }
    let stats = buffer.stats().expect("stats");
    assert_eq!(
        (
            stats.records,
            stats.points,
            stats.dropped_points,
            stats.full_waits
        ),
        (3, 30, 20, 0)
    );
    assert!(stats.bytes <= config.max_bytes);
    let seqs: Vec<u64> = all(&buffer).iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
}

#[test]
fn a_record_larger_than_the_buffer_is_accepted_when_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = BufferConfig {
        max_bytes: 10,
        fsync_interval: Duration::ZERO,
        ..BufferConfig::default()
    };
    let (buffer, _) = Buffer::open(dir.path(), &config).expect("open");
    assert_eq!(buffer.append(&chunk("big", 5)).expect("append"), 1);
}

#[test]
fn interval_mode_loses_only_what_was_not_yet_durable() {
    let disk = CrashDisk::default();
    let config = cfg(Duration::from_secs(3600));
    let (buffer, _) = Buffer::open_with_backend(disk.clone(), &config).expect("open");
    let base = buffer.durable_seq();
    let a = buffer.append(&chunk("a", 1)).expect("append");
    let b = buffer.append(&chunk("b", 1)).expect("append");
    assert_eq!(buffer.durable_seq(), base);
    assert_eq!(buffer.sync().expect("sync"), b);
    assert_eq!(buffer.durable_seq(), b);
    let c = buffer.append(&chunk("c", 1)).expect("append");
    assert_eq!(all(&buffer).len(), 3, "visible before it is durable");
    let disk = disk.crash();
    drop(buffer);

    let (buffer, report) = Buffer::open_with_backend(disk.clone(), &config).expect("reopen");
    let seqs: Vec<u64> = all(&buffer).iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        vec![a, b],
        "durable records survive, {c} was not durable"
    );
    assert_eq!(report.records, 2);
    // An ack that was not made durable comes back: the record is delivered again.
    buffer.ack_through(a).expect("ack");
    let disk = disk.crash();
    drop(buffer);
    let (buffer, _) = Buffer::open_with_backend(disk, &config).expect("reopen");
    assert_eq!(all(&buffer).len(), 2);
}

#[test]
fn the_flusher_makes_appends_durable_within_the_interval() {
    let disk = CrashDisk::default();
    let config = cfg(Duration::from_millis(20));
    let (buffer, _) = Buffer::open_with_backend(disk.clone(), &config).expect("open");
    let seq = buffer.append(&chunk("a", 4)).expect("append");
    wait_for("the flusher", || buffer.durable_seq() >= seq);
    let disk = disk.crash();
    drop(buffer);
    let (buffer, _) = Buffer::open_with_backend(disk, &config).expect("reopen");
    let got = all(&buffer);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.points, 4);
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        points: usize,
        tag: u16,
    },
    /// Acknowledge through the n-th waiting record (modulo their count).
    Ack(usize),
    /// The machine dies: only synced data survives.
    Crash,
    /// A clean close and open.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (1usize..6, any::<u16>()).prop_map(|(points, tag)| Op::Append { points, tag }),
        3 => (0usize..8).prop_map(Op::Ack),
        1 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// With every commit durable, any sequence of appends, acks, crashes and
    /// reopens yields every un-acked record exactly once, in order, and
    /// sequence numbers only grow.
    #[test]
    fn unacked_records_survive_exactly_once_in_order(ops in proptest::collection::vec(op(), 1..40)) {
        let config = cfg(Duration::ZERO);
        let mut disk = CrashDisk::default();
        let (mut buffer, _) = Buffer::open_with_backend(disk.clone(), &config).expect("open");
        let mut model: VecDeque<(u64, Chunk)> = VecDeque::new();
        let mut highest = 0u64;
        for op in ops {
            match op {
                Op::Append { points, tag } => {
                    let c = chunk(&tag.to_string(), points);
                    let seq = buffer.append(&c).expect("append");
                    prop_assert!(seq > highest, "sequence {} after {}", seq, highest);
                    highest = seq;
                    prop_assert_eq!(buffer.durable_seq(), seq);
                    model.push_back((seq, Chunk { seq: Some(seq), ..c }));
                }
                Op::Ack(n) => {
                    if !model.is_empty() {
                        let i = n % model.len();
                        buffer.ack_through(model[i].0).expect("ack");
                        model.drain(..=i);
                    }
                }
                Op::Crash => {
                    let rebooted = disk.crash();
                    drop(buffer);
                    disk = rebooted;
                    buffer = Buffer::open_with_backend(disk.clone(), &config).expect("reopen").0;
                }
                Op::Reopen => {
                    drop(buffer);
                    buffer = Buffer::open_with_backend(disk.clone(), &config).expect("reopen").0;
                }
            }
            let got = all(&buffer);
            prop_assert_eq!(&got, &model.iter().cloned().collect::<Vec<_>>());
            let stats = buffer.stats().expect("stats");
            prop_assert_eq!(stats.records, model.len() as u64);
            prop_assert_eq!(stats.points, model.iter().map(|(_, c)| c.points as u64).sum::<u64>());
            prop_assert_eq!(stats.oldest_seq, model.front().map(|(s, _)| *s));
        }
    }
}

#[test]
fn the_appender_counts_points_drop_oldest_removed_as_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = (HEADER_BYTES + chunk("a", 10).lines.len()) as u64;
    let config = BufferConfig {
        max_bytes: one * 2,
        when_full: WhenFull::DropOldest,
        fsync_interval: Duration::ZERO,
        enabled: true,
    };
    let (buffer, _) = Buffer::open(dir.path(), &config).expect("open");
    let stats = Arc::new(crate::monitor::Stats::default());
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let appender = tasks::spawn_appender(
        buffer.clone(),
        rx,
        stats.clone(),
        Default::default(),
        Duration::ZERO,
    )
    .expect("appender starts");
    for tag in ["a", "b", "c", "d", "e"] {
        tx.blocking_send(chunk(tag, 10)).expect("send");
    }
    drop(tx);
    appender.join().expect("appender ends");
    assert_eq!(stats.totals().dropped, 30);
    assert_eq!(buffer.stats().expect("stats").records, 2);
}

#[tokio::test]
async fn the_feeder_sends_in_order_and_wakes_on_appends_and_acks_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    for tag in ["a", "b", "c"] {
        buffer.append(&chunk(tag, 1)).expect("append");
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let stop = tokio_util::sync::CancellationToken::new();
    let feeder = tokio::spawn(tasks::feed(
        buffer.clone(),
        tx,
        stop.clone(),
        Duration::from_secs(5),
    ));
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let c = rx.recv().await.expect("a chunk");
        seqs.push(c.seq.expect("carries its sequence"));
    }
    assert_eq!(seqs, vec![1, 2, 3]);
    let b = buffer.clone();
    tokio::task::spawn_blocking(move || b.append(&chunk("d", 1)))
        .await
        .expect("join")
        .expect("append");
    let d = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the feeder woke up")
        .expect("a chunk");
    assert_eq!(d.seq, Some(4));

    let (acks, delivered) = crate::feedback::acks::Acks::channel();
    let acknowledger = tokio::spawn(tasks::acknowledge(buffer.clone(), delivered));
    acks.delivered(3);
    acks.delivered(2); // older reports change nothing
    drop(acks);
    acknowledger.await.expect("acknowledger ends");
    let stats = buffer.stats().expect("stats");
    assert_eq!((stats.records, stats.oldest_seq), (1, Some(4)));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), feeder)
        .await
        .expect("the feeder ends once drained")
        .expect("join");
    assert!(rx.recv().await.is_none(), "nothing sent twice");
}

/// A buffer whose own `fsync_interval` tick never comes (an hour), with its appender and the
/// marks releaser running: what the tests of upstream marks need.
struct MarksRig {
    _dir: tempfile::TempDir,
    buffer: Buffer,
    tracker: crate::feedback::handoff::Tracker,
    tx: tokio::sync::mpsc::Sender<Chunk>,
    appender: std::thread::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
    releaser: tokio::task::JoinHandle<()>,
}

impl MarksRig {
    fn start(group_commit: Option<Duration>) -> MarksRig {
        let dir = tempfile::tempdir().expect("tempdir");
        let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::from_secs(3600))).expect("open");
        let handoff = crate::feedback::handoff::Handoff::new();
        let tracker = handoff.register("mqtt:test");
        let pending = Arc::new(tasks::PendingMarks::default());
        let stats = Arc::new(crate::monitor::Stats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let appender =
            tasks::spawn_appender(buffer.clone(), rx, stats, pending.clone(), Duration::ZERO)
                .expect("appender starts");
        let stop = tokio_util::sync::CancellationToken::new();
        let releaser = tokio::spawn(tasks::release(
            buffer.clone(),
            pending,
            handoff,
            stop.clone(),
            group_commit,
        ));
        MarksRig {
            _dir: dir,
            buffer,
            tracker,
            tx,
            appender,
            stop,
            releaser,
        }
    }

    async fn finish(
        tx: tokio::sync::mpsc::Sender<Chunk>,
        appender: std::thread::JoinHandle<()>,
        stop: tokio_util::sync::CancellationToken,
        releaser: tokio::task::JoinHandle<()>,
    ) {
        drop(tx);
        tokio::task::spawn_blocking(move || appender.join())
            .await
            .expect("join")
            .expect("appender ends");
        stop.cancel();
        releaser.await.expect("releaser ends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_marks_are_released_only_once_their_record_is_durable() {
    // Nothing becomes durable by itself during the test: only the explicit sync does.
    let MarksRig {
        _dir,
        buffer,
        mut tracker,
        tx,
        appender,
        stop,
        releaser,
    } = MarksRig::start(None);

    let mut with_points = chunk("a", 3);
    with_points.marks.note(tracker.mark());
    // A chunk whose events were all filtered: no record, its mark waits on the one before.
    let mut filtered = Chunk::default();
    filtered.marks.note(tracker.mark());
    tx.send(with_points).await.expect("send");
    tx.send(filtered).await.expect("send");
    let mut appended = buffer.subscribe();
    tokio::time::timeout(Duration::from_secs(10), appended.wait_for(|seq| *seq >= 1))
        .await
        .expect("appended in time")
        .expect("buffer open");
    // Appended but not durable: nothing released (give the releaser a chance to run first).
    tokio::task::yield_now().await;
    assert_eq!(tracker.safe(), 0, "released before the record was durable");
    assert_eq!(
        buffer.stats().expect("stats").records,
        1,
        "the empty chunk is not stored"
    );

    let b = buffer.clone();
    tokio::task::spawn_blocking(move || b.sync())
        .await
        .expect("join")
        .expect("sync");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), tracker.wait_safe(2))
            .await
            .expect("released within the deadline"),
        "both marks released after the sync"
    );
    MarksRig::finish(tx, appender, stop, releaser).await;
}

/// With a group commit, waiting marks make their record durable themselves, long before the
/// buffer's own `fsync_interval` tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_commit_makes_waiting_marks_durable_without_the_tick() {
    let MarksRig {
        _dir,
        buffer,
        mut tracker,
        tx,
        appender,
        stop,
        releaser,
    } = MarksRig::start(Some(tasks::GROUP_COMMIT_WIDE));
    let mut with_points = chunk("a", 3);
    with_points.marks.note(tracker.mark());
    tx.send(with_points).await.expect("send");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), tracker.wait_safe(1))
            .await
            .expect("released by the group commit, not the hour-long tick"),
        "the mark is released"
    );
    assert!(buffer.durable_seq() >= 1, "the record was made durable");
    MarksRig::finish(tx, appender, stop, releaser).await;
}

#[test]
fn the_group_commit_follows_the_narrowest_mqtt_window() {
    use crate::config::{Config, MqttConfig, MqttProtocol};
    let mqtt = |protocol, receive_maximum| MqttConfig {
        protocol,
        receive_maximum,
        ..MqttConfig::new("mqtt://127.0.0.1:1883")
    };
    let with = |brokers: Vec<MqttConfig>| Config {
        mqtt: brokers,
        ..Config::default()
    };
    let cases = [
        ("no MQTT: the fsync tick suffices", with(vec![]), None),
        (
            "MQTT 5, default window",
            with(vec![mqtt(MqttProtocol::V5, u16::MAX)]),
            Some(tasks::GROUP_COMMIT_WIDE),
        ),
        (
            "MQTT 5, a narrow window",
            with(vec![mqtt(MqttProtocol::V5, 100)]),
            Some(tasks::GROUP_COMMIT),
        ),
        (
            "one MQTT 3.1.1 broker among MQTT 5 ones",
            with(vec![
                mqtt(MqttProtocol::V5, u16::MAX),
                mqtt(MqttProtocol::V311, u16::MAX),
            ]),
            Some(tasks::GROUP_COMMIT),
        ),
    ];
    for (name, config, want) in cases {
        assert_eq!(tasks::group_commit_for(&config), want, "{name}");
    }
}

#[test]
fn the_appender_joins_queued_chunks_into_one_record_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    let stats = Arc::new(crate::monitor::Stats::default());
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    // Queued before the appender runs: it finds all three waiting.
    let parts = [chunk("a", 2), chunk("b", 3), chunk("c", 1)];
    for c in &parts {
        tx.blocking_send(c.clone()).expect("send");
    }
    drop(tx);
    let appender = tasks::spawn_appender(
        buffer.clone(),
        rx,
        stats,
        Default::default(),
        Duration::ZERO,
    )
    .expect("appender starts");
    appender.join().expect("appender ends");
    let records = buffer.read_after(None, usize::MAX).expect("read");
    assert_eq!(records.len(), 1, "one commit for what was waiting");
    let joined: String = parts.iter().map(|c| c.lines.as_str()).collect();
    assert_eq!(records[0].1.lines, joined);
    assert_eq!(records[0].1.points, 6);
}

/// The value of an unlabelled metric in Prometheus text.
fn rendered(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn the_size_gauges_follow_appends_as_well_as_acknowledgements() {
    // During an InfluxDB outage nothing is acknowledged: the gauges must grow with the appends.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let dir = tempfile::tempdir().expect("tempdir");
    metrics::with_local_recorder(&recorder, || {
        let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::from_secs(60))).expect("open");
        let gauges = || {
            let text = handle.render();
            (
                rendered(&text, BUFFER_POINTS),
                rendered(&text, BUFFER_RECORDS),
                rendered(&text, BUFFER_BYTES),
            )
        };
        let mut bytes = 0.0;
        let mut seqs = Vec::new();
        for (i, points) in [2usize, 3, 4].into_iter().enumerate() {
            let c = chunk("gauges", points);
            bytes += (HEADER_BYTES + c.lines.len()) as f64;
            seqs.push(buffer.append(&c).expect("append"));
            let expected_points = [2.0, 5.0, 9.0][i];
            assert_eq!(
                gauges(),
                (Some(expected_points), Some(i as f64 + 1.0), Some(bytes)),
                "after append {}",
                i + 1
            );
        }
        buffer.ack_through(seqs[0]).expect("ack");
        let first = (HEADER_BYTES + chunk("gauges", 2).lines.len()) as f64;
        assert_eq!(gauges(), (Some(7.0), Some(2.0), Some(bytes - first)));
        buffer.ack_through(seqs[2]).expect("ack");
        assert_eq!(gauges(), (Some(0.0), Some(0.0), Some(0.0)));
    });
}

#[test]
fn saved_positions_survive_a_reopen_and_never_point_past_the_last_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::from_millis(50))).expect("open");
        for tag in ["a", "b", "c"] {
            buffer.append(&chunk(tag, 1)).expect("append");
        }
        assert_eq!(
            buffer.positions(&["local", "offsite"]).expect("read"),
            [None, None]
        );
        buffer
            .save_positions(&[("local", 3), ("offsite", 1)])
            .expect("save");
        buffer.save_positions(&[("spare", 99)]).expect("save");
    }
    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::from_millis(50))).expect("reopen");
    assert_eq!(
        buffer
            .positions(&["local", "offsite", "spare", "new"])
            .expect("read"),
        [Some(3), Some(1), Some(3), None],
        "a position past the last record is read as the last record"
    );
}

#[tokio::test]
async fn each_target_resumes_after_its_own_saved_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("open");
    for tag in ["a", "b", "c", "d"] {
        buffer.append(&chunk(tag, 1)).expect("append");
    }
    // Target "local" delivered up to 3, "offsite" up to 1: records 2..4 stay, both positions are saved.
    let (local, local_rx) = crate::feedback::acks::Acks::channel();
    let (offsite, offsite_rx) = crate::feedback::acks::Acks::channel();
    let acknowledger = tokio::spawn(tasks::acknowledge_all_saving(
        buffer.clone(),
        vec![local_rx, offsite_rx],
        vec!["local".into(), "offsite".into()],
    ));
    local.delivered(3);
    offsite.delivered(1);
    drop((local, offsite));
    acknowledger.await.expect("acknowledger ends");
    assert_eq!(buffer.stats().expect("stats").oldest_seq, Some(2));
    drop(buffer);

    let (buffer, _) = Buffer::open(dir.path(), &cfg(Duration::ZERO)).expect("reopen");
    let positions = buffer.positions(&["local", "offsite"]).expect("read");
    assert_eq!(positions, [Some(3), Some(1)]);
    let mut sent = Vec::new();
    for position in positions {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let stop = tokio_util::sync::CancellationToken::new();
        stop.cancel();
        tasks::feed_from(buffer.clone(), tx, stop, Duration::from_secs(5), position).await;
        let mut seqs = Vec::new();
        while let Some(c) = rx.recv().await {
            seqs.push(c.seq.expect("seq"));
        }
        sent.push(seqs);
    }
    assert_eq!(
        sent,
        [vec![4], vec![2, 3, 4]],
        "local gets only what it lacks"
    );
}

/// A buffer in `dir` and its appender with a linger far longer than any test: only more
/// chunks or the end of input close a record.
fn lingering_appender(
    dir: &std::path::Path,
) -> (
    Buffer,
    tokio::sync::mpsc::Sender<Chunk>,
    std::thread::JoinHandle<()>,
) {
    let (buffer, _) = Buffer::open(dir, &cfg(Duration::ZERO)).expect("open");
    let stats = Arc::new(crate::monitor::Stats::default());
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let appender = tasks::spawn_appender(
        buffer.clone(),
        rx,
        stats,
        Default::default(),
        Duration::from_secs(600),
    )
    .expect("appender starts");
    (buffer, tx, appender)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_appender_joins_the_chunks_of_its_linger_into_one_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, tx, appender) = lingering_appender(dir.path());
    // A full pipeline round (64 points or more): more chunks may follow at once.
    tx.send(chunk("a", 64)).await.expect("send");
    // The appender (its own thread) has taken the first chunk and waits in its linger.
    wait_for("the appender to take the chunk", || {
        tx.capacity() == tx.max_capacity()
    });
    tx.send(chunk("b", 4)).await.expect("send");
    tx.send(chunk("c", 5)).await.expect("send");
    drop(tx);
    tokio::task::spawn_blocking(move || appender.join().expect("appender ends"))
        .await
        .expect("join");
    let s = buffer.stats().expect("stats");
    assert_eq!((s.records, s.points), (1, 73));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_chunk_is_committed_without_lingering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, tx, appender) = lingering_appender(dir.path());
    // A quiet pipeline's round: it already waited its gathering window, nothing follows.
    tx.send(chunk("a", 3)).await.expect("send");
    // Committed while the input is still open: a lingering appender would hold it for 600 s.
    wait_for("the small chunk committed, not lingered behind", || {
        buffer.stats().expect("stats").records >= 1
    });
    drop(tx);
    tokio::task::spawn_blocking(move || appender.join().expect("appender ends"))
        .await
        .expect("join");
    assert_eq!(buffer.stats().expect("stats").points, 3);
}

#[test]
fn the_append_linger_is_a_quarter_of_the_group_commit_at_most_25_milliseconds() {
    use tasks::{APPEND_LINGER, APPEND_LINGER_MAX, GROUP_COMMIT, GROUP_COMMIT_WIDE, append_linger};
    assert_eq!(append_linger(None), APPEND_LINGER);
    assert_eq!(append_linger(Some(GROUP_COMMIT)), Duration::from_millis(5));
    assert_eq!(
        append_linger(Some(GROUP_COMMIT_WIDE)),
        Duration::from_millis(25)
    );
    assert_eq!(
        append_linger(Some(Duration::from_secs(5))),
        APPEND_LINGER_MAX
    );
}
