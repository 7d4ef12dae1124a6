//! The embedded file sink, and replaying its files into a real `influxd` 1.6.7.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use ha_ingestor::cli::replay::{ReplayReport, replay};
use ha_ingestor::config::InfluxConfig;
use ha_ingestor::dead_letter::DeadLetters;
use ha_ingestor::encode::Chunk;
use ha_ingestor::monitor::Stats;
use ha_ingestor::sink::SinkContext;
use ha_ingestor::sink::file::{FileSink, point_files};
use ha_ingestor::sink::influxdb::InfluxWriter;
use serde_json::Value;
use support::{Influxd, wait_for};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn context(dir: &std::path::Path) -> SinkContext {
    SinkContext {
        stats: Arc::new(Stats::default()),
        dead_letters: Arc::new(DeadLetters::new(dir.join("dead-letter"))),
        shutdown: CancellationToken::new(),
        acks: None,
    }
}

fn chunk(lines: &[String]) -> Chunk {
    Chunk {
        lines: lines.iter().map(|l| format!("{l}\n")).collect(),
        points: lines.len(),
        seq: None,
        marks: Default::default(),
    }
}

fn sample_lines() -> Vec<String> {
    (0..10)
        .map(|i| {
            format!(
                "°C,entity_id=sensor.t{},domain=sensor value={}.25,state=\"{i} \\\"x\\\"\",n={i}i,ok={} {}",
                i % 3,
                20 + i,
                i % 2 == 0,
                1_700_000_000_000_000_000u64 + i * 1_000_001
            )
        })
        .collect()
}

/// Expected rows of `sample_lines`, as InfluxQL returns them.
fn expected_rows() -> Vec<Value> {
    (0..10u64)
        .map(|i| {
            serde_json::json!({
                "time": 1_700_000_000_000_000_000u64 + i * 1_000_001,
                "domain": "sensor",
                "entity_id": format!("sensor.t{}", i % 3),
                "n": i,
                "ok": i % 2 == 0,
                "state": format!("{i} \"x\""),
                "value": (20 + i) as f64 + 0.25,
            })
        })
        .collect()
}

fn as_values(rows: Vec<serde_json::Map<String, Value>>) -> Vec<Value> {
    rows.into_iter().map(Value::Object).collect()
}

#[tokio::test]
async fn files_rotate_with_the_hour_and_flush_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("points");
    let now = Arc::new(AtomicI64::new(
        Utc.with_ymd_and_hms(2026, 3, 1, 10, 59, 59)
            .unwrap()
            .timestamp(),
    ));
    let clock_now = now.clone();
    let sink = FileSink::with_clock(
        points.clone(),
        Arc::new(move || {
            Utc.timestamp_opt(clock_now.load(Ordering::SeqCst), 0)
                .single()
                .unwrap_or_default()
        }),
    )
    .unwrap();
    let ctx = context(dir.path());
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink.run(rx, ctx.clone()));
    let lines = sample_lines();
    tx.send(chunk(&lines[..4])).await.unwrap();
    let stats = ctx.stats.clone();
    // The periodic flush counts them once they are in the file.
    wait_for("the first chunk to be flushed", WAIT, || async {
        (stats.totals().written == 4).then_some(())
    })
    .await;
    now.store(
        Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0)
            .unwrap()
            .timestamp(),
        Ordering::SeqCst,
    );
    tx.send(chunk(&lines[4..])).await.unwrap();
    // Shutdown right away: the second chunk is only in the buffer until the final flush.
    ctx.shutdown.cancel();
    drop(tx);
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(ctx.stats.totals().written, 10);
    assert_eq!(ctx.stats.totals().dropped, 0);

    let files = point_files(&points).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["points-2026-03-01T10.lp", "points-2026-03-01T11.lp"]
    );
    for (file, expected) in files.iter().zip([&lines[..4], &lines[4..]]) {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.starts_with("# "), "{text}");
        assert!(
            text.contains("\n# DML\n# CONTEXT-DATABASE: home_assistant\n"),
            "{text}"
        );
        let data: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            data,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn reopening_an_hour_appends_without_a_second_header() {
    let dir = tempfile::tempdir().unwrap();
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
    let lines = sample_lines();
    for part in [&lines[..2], &lines[2..3]] {
        let sink = FileSink::with_clock(dir.path().to_path_buf(), Arc::new(move || at)).unwrap();
        let ctx = context(dir.path());
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(sink.run(rx, ctx.clone()));
        tx.send(chunk(part)).await.unwrap();
        drop(tx);
        task.await.unwrap();
        assert_eq!(ctx.stats.totals().written, part.len() as u64);
    }
    let files = point_files(dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert_eq!(text.matches("# DML").count(), 1, "{text}");
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 3);
}

async fn write_sample_file(dir: &std::path::Path, extra: &[String]) -> Vec<std::path::PathBuf> {
    let sink = FileSink::new(dir.join("points")).unwrap();
    let ctx = context(dir);
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink.run(rx, ctx.clone()));
    let lines = sample_lines();
    tx.send(chunk(&lines[..5])).await.unwrap();
    if !extra.is_empty() {
        tx.send(chunk(extra)).await.unwrap();
    }
    tx.send(chunk(&lines[5..])).await.unwrap();
    drop(tx);
    task.await.unwrap();
    point_files(&dir.join("points")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_into_influxdb_gives_identical_points() {
    let db = Influxd::start("home_assistant").await;
    let dir = tempfile::tempdir().unwrap();
    let bad = vec!["°C,entity_id=sensor.bad value=oops 1700000000000000000".to_string()];
    let files = write_sample_file(dir.path(), &bad).await;
    assert!(!files.is_empty());
    let mut cfg = InfluxConfig::v1(db.url(), db.database());
    cfg.retry_min = Duration::from_millis(20);
    cfg.retry_max = Duration::from_millis(200);
    let writer = InfluxWriter::new(&cfg).unwrap();
    let dead = DeadLetters::new(dir.path().join("replay-dead-letter"));
    let report = replay(&files, &writer, 3, &dead)
        .await
        .unwrap_or_else(|e| panic!("replay failed: {e}"));
    assert_eq!(
        report,
        ReplayReport {
            files: files.len(),
            points: 10,
            dead_lettered: 1,
        }
    );
    assert_eq!(as_values(db.rows("°C").await), expected_rows());
    // The refused line is in the dead-letter folder with the server's reason.
    let dl: Vec<_> = std::fs::read_dir(dir.path().join("replay-dead-letter"))
        .unwrap()
        .collect();
    let text = std::fs::read_to_string(dl[0].as_ref().unwrap().path()).unwrap();
    assert!(
        text.contains("sensor.bad") && text.contains("unable to parse"),
        "{text}"
    );
    // Replaying again overwrites the same points: still ten.
    let again = replay(&files, &writer, 1000, &DeadLetters::in_memory())
        .await
        .unwrap();
    assert_eq!(again.points, 10);
    assert_eq!(db.rows("°C").await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_import_reads_the_files() {
    let db = Influxd::start("home_assistant").await;
    let dir = tempfile::tempdir().unwrap();
    let files = write_sample_file(dir.path(), &[]).await;
    let url = url::Url::parse(&db.url()).unwrap();
    for file in &files {
        let out = tokio::process::Command::new("influx")
            .args(["-host", "127.0.0.1", "-port"])
            .arg(url.port().unwrap().to_string())
            .args(["-import", "-precision", "ns", "-path"])
            .arg(file)
            .output()
            .await
            .expect("influx CLI (installed with influxdb-client by scripts/test)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(!text.contains("failed"), "{text}");
    }
    assert_eq!(as_values(db.rows("°C").await), expected_rows());
}

#[tokio::test]
async fn points_that_cannot_be_stored_are_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("points");
    let sink = FileSink::new(points.clone()).unwrap();
    // The folder is replaced by a file: nothing can be opened in it any more.
    std::fs::remove_dir(&points).unwrap();
    std::fs::write(&points, "not a folder").unwrap();
    let ctx = context(dir.path());
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(sink.run(rx, ctx.clone()));
    tx.send(chunk(&sample_lines()[..3])).await.unwrap();
    drop(tx);
    task.await.unwrap();
    let t = ctx.stats.totals();
    assert_eq!((t.written, t.dropped), (0, 3));
    let r = ctx.stats.readiness();
    assert!(!r.ready && r.reasons[0].contains("file"), "{:?}", r.reasons);
}
