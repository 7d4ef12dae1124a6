//! The writer against a real VictoriaMetrics (Debian's 1.79): what it answers for good
//! lines, an unparsable line, a line above its size limit, a wrong path and refused
//! credentials, how each reply is classified (written, set aside, held), and the
//! newest point of a home read back through its query API.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::bench::victoria::{Victoria, VictoriaError, VictoriaOptions};
use ha_ingestor::config::{Flavor, Gzip, InfluxConfig};
use ha_ingestor::dead_letter::DeadLetters;
use ha_ingestor::encode::Chunk;
use ha_ingestor::monitor::Stats;
use ha_ingestor::sink::SinkContext;
use ha_ingestor::sink::influxdb::{InfluxWriter, WriteError, victoria::last_point_ns};
use support::wait_for;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const USER: &str = "writer";
const PASSWORD: &str = "vm-secret";

/// A VictoriaMetrics with basic authentication; panics with its reason when it cannot start.
async fn victoria() -> Victoria {
    let opts = VictoriaOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        label: "test-victoria".into(),
        ..VictoriaOptions::default()
    };
    match Victoria::start(&opts).await {
        Ok(vm) => vm,
        Err(VictoriaError::NotFound) => {
            panic!("victoria-metrics not found: run scripts/test, which installs it")
        }
        Err(e) => panic!("victoria-metrics did not start: {e}"),
    }
}

fn config(url: &str, password: &str) -> InfluxConfig {
    let mut cfg = InfluxConfig::v1(url, "ha");
    cfg.flavor = Flavor::VictoriaMetrics;
    cfg.username = Some(USER.into());
    cfg.password = Some(password.into());
    cfg.gzip = Gzip::Off;
    cfg.retry_min = Duration::from_millis(5);
    cfg.retry_max = Duration::from_millis(50);
    cfg.flush_interval = Duration::from_millis(20);
    cfg.max_concurrent_requests = 1;
    cfg
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn chunk(lines: &[String]) -> Chunk {
    Chunk {
        lines: lines.iter().map(|l| format!("{l}\n")).collect(),
        points: lines.len(),
        seq: None,
        marks: Default::default(),
    }
}

/// A sink task writing to one target, with its stats and dead letters in `dir`.
struct Sink {
    ctx: SinkContext,
    tx: mpsc::Sender<Chunk>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    fn start(cfg: &InfluxConfig, dir: &std::path::Path) -> Sink {
        let ctx = SinkContext {
            stats: Arc::new(Stats::default()),
            dead_letters: Arc::new(DeadLetters::new(dir)),
            shutdown: CancellationToken::new(),
            acks: None,
        };
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(InfluxWriter::new(cfg).unwrap().run(rx, ctx.clone()));
        Sink { ctx, tx, task }
    }

    /// Waits until `written` + `dead_lettered` reach `n`.
    async fn settled(&self, n: u64) {
        let stats = self.ctx.stats.clone();
        wait_for("every line written or set aside", WAIT, || async {
            let t = stats.totals();
            (t.written + t.dead_lettered == n).then_some(())
        })
        .await;
    }

    /// Waits until the target is marked failed; whether as refused (held) rather than an outage.
    async fn failed(&self) -> (bool, String) {
        let stats = self.ctx.stats.clone();
        wait_for("the write to be reported failed", WAIT, || async {
            let r = stats.readiness();
            r.sinks
                .first()
                .filter(|s| !s.writing && s.last_error.is_some())
                .map(|s| (s.refused, s.last_error.clone().unwrap_or_default()))
        })
        .await
    }

    /// Ends a sink holding a batch at once (a graceful stop would retry it until the shutdown deadline).
    async fn abort(self) -> ha_ingestor::monitor::Totals {
        self.task.abort();
        let _ = self.task.await;
        self.ctx.stats.totals()
    }

    async fn stop(self) -> ha_ingestor::monitor::Totals {
        self.ctx.shutdown.cancel();
        drop(self.tx);
        self.task.await.unwrap();
        self.ctx.stats.totals()
    }
}

/// The dead letters written under `dir`: (kind, input).
fn dead_letters(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            out.push((
                v["kind"].as_str().unwrap_or_default().to_string(),
                v["input"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// Samples of metric `name`, waiting until there are `n` (VictoriaMetrics makes them searchable within about a second).
async fn samples(vm: &Victoria, name: &str, n: usize) -> Vec<(i64, f64)> {
    wait_for(&format!("{n} samples of {name}"), WAIT, || async {
        let series = vm
            .export(&format!("{{__name__=\"{name}\"}}"))
            .await
            .unwrap();
        let mut all: Vec<(i64, f64)> = series
            .iter()
            .flat_map(|s| s.timestamps.iter().copied().zip(s.values.iter().copied()))
            .collect();
        all.sort_by_key(|(t, _)| *t);
        (all.len() >= n).then_some(all)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoriametrics_replies_are_classified() {
    ha_ingestor::ensure_crypto_provider();
    let vm = victoria().await;
    let t = now_ns();

    // `check`: the path and credentials, through an empty write.
    let version = InfluxWriter::new(&config(&vm.url(), PASSWORD))
        .unwrap()
        .check()
        .await
        .expect("check passes");
    assert_eq!(version, "VictoriaMetrics");

    // Good lines: 204, written; the values and millisecond times read back.
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(&config(&vm.url(), PASSWORD), dir.path());
    let good: Vec<String> = (0..3)
        .map(|i| format!("good,entity_id=e{i} value={i}.5 {}", t + i * 1_000_000))
        .collect();
    sink.tx.send(chunk(&good)).await.unwrap();
    sink.settled(3).await;

    // An unparsable line: VictoriaMetrics skips it, logs it and still answers 204, so the
    // writer counts the batch written and sets nothing aside (docs/stores.md says so).
    let with_bad = vec![
        format!("parsed,entity_id=a value=1 {t}"),
        "bad line here".to_string(),
        format!("parsed,entity_id=b value=2 {t}"),
    ];
    sink.tx.send(chunk(&with_bad)).await.unwrap();
    sink.settled(6).await;

    // A line well above -influx.maxLineSize (256 KiB; it checks per read block, so 600 KB): 400
    // `too long line` for the request; the
    // batch is bisected down to that line, which is set aside; the others are written.
    let long = format!("long,entity_id=x text=\"{}\" {t}", "x".repeat(600_000));
    let around = vec![
        format!("around,entity_id=a value=1 {t}"),
        long.clone(),
        format!("around,entity_id=b value=2 {t}"),
    ];
    sink.tx.send(chunk(&around)).await.unwrap();
    sink.settled(9).await;
    let totals = sink.stop().await;
    assert_eq!(totals.written, 8, "{totals:?}");
    assert_eq!(totals.dead_lettered, 1, "{totals:?}");
    assert_eq!(totals.dropped, 0);
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, "line_too_large");
    assert!(letters[0].1.starts_with("long,entity_id=x"), "{letters:?}");

    assert_eq!(
        samples(&vm, "good_value", 3).await,
        (0..3)
            .map(|i| ((t + i * 1_000_000) / 1_000_000, i as f64 + 0.5))
            .collect::<Vec<_>>()
    );
    assert_eq!(samples(&vm, "parsed_value", 2).await.len(), 2);
    assert_eq!(samples(&vm, "around_value", 2).await.len(), 2);
    assert!(
        vm.log_tail().contains("bad line here"),
        "VictoriaMetrics logs the line it skipped:\n{}",
        vm.log_tail()
    );

    // A URL path VictoriaMetrics does not serve: 400 `unsupported path requested`, held
    // (retried, marked refused), never set aside line by line.
    let wrong = tempfile::tempdir().unwrap();
    let sink = Sink::start(
        &config(&format!("{}/nope", vm.url()), PASSWORD),
        wrong.path(),
    );
    sink.tx
        .send(chunk(&[format!("held,entity_id=a value=1 {t}")]))
        .await
        .unwrap();
    let (refused, error) = sink.failed().await;
    assert!(refused, "a wrong path is held as a refusal: {error}");
    assert!(error.contains("unsupported path"), "{error}");
    let totals = sink.abort().await;
    assert_eq!((totals.written, totals.dead_lettered), (0, 0), "{totals:?}");
    assert!(dead_letters(wrong.path()).is_empty());

    // Refused credentials: 401, held; `check` names the status.
    let refused_dir = tempfile::tempdir().unwrap();
    let bad_password = config(&vm.url(), "wrong");
    match InfluxWriter::new(&bad_password).unwrap().check().await {
        Err(e @ WriteError::Status { code: 401, .. }) => assert!(e.is_auth()),
        other => panic!("check with a wrong password: {other:?}"),
    }
    let sink = Sink::start(&bad_password, refused_dir.path());
    sink.tx
        .send(chunk(&[format!("held,entity_id=b value=1 {t}")]))
        .await
        .unwrap();
    let (refused, error) = sink.failed().await;
    assert!(refused, "refused credentials are held: {error}");
    assert!(error.contains("401"), "{error}");
    let totals = sink.abort().await;
    assert_eq!((totals.written, totals.dead_lettered), (0, 0), "{totals:?}");
    assert!(dead_letters(refused_dir.path()).is_empty());
    assert!(
        vm.export(r#"{__name__="held_value"}"#)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_point_ns_is_the_newest_point_of_the_home() {
    ha_ingestor::ensure_crypto_provider();
    let vm = victoria().await;
    let cfg = config(&vm.url(), PASSWORD);
    let writer = InfluxWriter::new(&cfg).expect("writer");
    let t = now_ns() - 60_000_000_000;
    let home_newest = t + 5_123_456_789;
    let cabin_newest = t + 9_000_000_001;
    let lines = [
        format!("°C,instance=home,entity_id=a value=20 {t}"),
        format!("°C,instance=home,entity_id=b value=21,state=\"x\" {home_newest}"),
        format!("sensor.door,instance=home,entity_id=door value=1 {}", t + 1),
        format!("°C,instance=cabin,entity_id=a value=5 {cabin_newest}"),
    ]
    .join("\n");
    vm.write("ha", lines).await.unwrap();
    // Newer points of `home` in another database do not count for this target (v1: the `db` label).
    vm.write(
        "other",
        format!(
            "°C,instance=home,entity_id=a value=1 {}",
            t + 30_000_000_000
        ),
    )
    .await
    .unwrap();

    let day = Duration::from_secs(86_400);
    let ms = |ns: i64| ns / 1_000_000 * 1_000_000;
    let home = wait_for("home's last point", WAIT, || async {
        last_point_ns(&writer, &cfg, "instance", "home", day)
            .await
            .unwrap()
            .filter(|&n| n == ms(home_newest))
    })
    .await;
    assert_eq!(home, ms(home_newest));
    assert_eq!(
        last_point_ns(&writer, &cfg, "instance", "cabin", day)
            .await
            .unwrap(),
        Some(ms(cabin_newest))
    );
    assert_eq!(
        last_point_ns(&writer, &cfg, "instance", "nowhere", day)
            .await
            .unwrap(),
        None
    );
    // Older than the window asked for: not found.
    assert_eq!(
        last_point_ns(&writer, &cfg, "instance", "home", Duration::from_secs(10))
            .await
            .unwrap(),
        None
    );
    // Refused credentials are an error, not "no point".
    let refused = config(&vm.url(), "wrong");
    let err = last_point_ns(
        &InfluxWriter::new(&refused).unwrap(),
        &refused,
        "instance",
        "home",
        day,
    )
    .await
    .unwrap_err();
    assert!(err.is_auth(), "{err}");
}
