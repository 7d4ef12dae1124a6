//! The InfluxDB writer against a real `influxd` 1.6.7 started per test.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::config::{Gzip, InfluxConfig, TypeConflict};
use ha_ingestor::dead_letter::DeadLetters;
use ha_ingestor::encode::Chunk;
use ha_ingestor::monitor::Stats;
use ha_ingestor::sink::SinkContext;
use ha_ingestor::sink::influxdb::{InfluxWriter, WriteError};
use serde_json::{Value, json};
use support::{Influxd, wait_for};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn config(db: &Influxd) -> InfluxConfig {
    let mut cfg = InfluxConfig::v1(db.url(), db.database());
    cfg.retry_min = Duration::from_millis(20);
    cfg.retry_max = Duration::from_millis(200);
    cfg.flush_interval = Duration::from_millis(50);
    // One request at a time: these tests follow the batches and replies exactly.
    cfg.max_concurrent_requests = 1;
    cfg
}

struct Harness {
    ctx: SinkContext,
    tx: mpsc::Sender<Chunk>,
    task: tokio::task::JoinHandle<()>,
    _dl_dir: tempfile::TempDir,
}

impl Harness {
    fn start(cfg: &InfluxConfig) -> Harness {
        let dl_dir = tempfile::tempdir().unwrap();
        let ctx = SinkContext {
            stats: Arc::new(Stats::default()),
            dead_letters: Arc::new(DeadLetters::new(dl_dir.path().join("dead-letter"))),
            shutdown: CancellationToken::new(),
            acks: None,
        };
        let (tx, rx) = mpsc::channel(16);
        let writer = InfluxWriter::new(cfg).unwrap();
        let task = tokio::spawn(writer.run(rx, ctx.clone()));
        Harness {
            ctx,
            tx,
            task,
            _dl_dir: dl_dir,
        }
    }

    async fn send(&self, lines: &[&str]) {
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        self.tx
            .send(Chunk {
                lines: text,
                points: lines.len(),
                seq: None,
                marks: Default::default(),
            })
            .await
            .unwrap();
    }

    async fn stop(self) -> (SinkContext, tempfile::TempDir) {
        self.ctx.shutdown.cancel();
        drop(self.tx);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the sink task ends within its shutdown deadline")
            .unwrap();
        (self.ctx, self._dl_dir)
    }

    fn dead_letters(&self) -> Vec<Value> {
        read_dead_letters(self._dl_dir.path())
    }
}

fn read_dead_letters(dir: &std::path::Path) -> Vec<Value> {
    let dir = dir.join("dead-letter");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        out.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    out
}

fn fields(row: &serde_json::Map<String, Value>, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .map(|k| (k.to_string(), row[*k].clone()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reads_back_exactly_with_and_without_gzip() {
    let db = Influxd::start("home_assistant").await;
    for (gzip, m) in [(Gzip::On, "gz"), (Gzip::Off, "plain")] {
        let mut cfg = config(&db);
        cfg.gzip = gzip;
        let writer = InfluxWriter::new(&cfg).unwrap();
        let body = format!(
            "{m},entity_id=sensor.a,domain=sensor value=21.5,state=\"21.5\",count=3i,on=true 1700000000123456789\n\
             {m},entity_id=sensor.b,domain=sensor value=-0.25,state=\"a \\\"quoted\\\" str\",count=-7i,on=false 1700000000123456790\n"
        );
        writer.write(&body).await.unwrap();
        let rows = db.rows(m).await;
        let got: Vec<Value> = rows
            .iter()
            .map(|r| fields(r, &["time", "entity_id", "value", "state", "count", "on"]))
            .collect();
        assert_eq!(
            got,
            vec![
                json!({"time": 1700000000123456789u64, "entity_id": "sensor.a", "value": 21.5, "state": "21.5", "count": 3, "on": true}),
                json!({"time": 1700000000123456790u64, "entity_id": "sensor.b", "value": -0.25, "state": "a \"quoted\" str", "count": -7, "on": false}),
            ],
            "gzip = {gzip:?}"
        );
        // Types as stored, not as JSON guesses.
        let keys = db.query(&format!("SHOW FIELD KEYS FROM \"{m}\"")).await;
        assert_eq!(
            keys["results"][0]["series"][0]["values"],
            json!([
                ["count", "integer"],
                ["on", "boolean"],
                ["state", "string"],
                ["value", "float"]
            ])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_version_and_missing_database() {
    let db = Influxd::start("home_assistant").await;
    let writer = InfluxWriter::new(&config(&db)).unwrap();
    let version = writer.check().await.unwrap();
    assert!(version.starts_with("1.6"), "{version}");
    let missing = InfluxWriter::new(&InfluxConfig::v1(db.url(), "nope")).unwrap();
    let err = missing.check().await.unwrap_err();
    assert!(matches!(err, WriteError::Missing(_)), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_task_batches_and_flushes_on_shutdown() {
    let db = Influxd::start("home_assistant").await;
    let mut cfg = config(&db);
    cfg.batch_size = 7;
    // Long enough that only the size cut and the shutdown flush can deliver.
    cfg.flush_interval = Duration::from_secs(3600);
    let h = Harness::start(&cfg);
    let lines: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "t,entity_id=e{} value={i} {}",
                i % 3,
                1_700_000_000_000_000_000u64 + i
            )
        })
        .collect();
    for chunk in lines.chunks(3) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        h.send(&refs).await;
    }
    // Two full batches of 7 go out on their own; the last 6 wait for the shutdown flush.
    db.wait_rows("t", 14, WAIT).await;
    let (ctx, _dl) = h.stop().await;
    let rows = db.rows("t").await;
    assert_eq!(rows.len(), 20);
    let totals = ctx.stats.totals();
    assert_eq!(totals.written, 20);
    assert_eq!(totals.dropped, 0);
    assert!(ctx.stats.readiness().ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_line_is_the_only_one_set_aside() {
    let db = Influxd::start("home_assistant").await;
    let h = Harness::start(&config(&db));
    h.send(&[
        "m,entity_id=a value=1 1700000000000000001",
        "m,entity_id=b value=2 1700000000000000002",
        "m,entity_id=c value= 1700000000000000003",
        "m,entity_id=d value=4 1700000000000000004",
        "m,entity_id=e value=5 1700000000000000005",
    ])
    .await;
    let (ctx, dl) = h.stop().await;
    let rows = db.rows("m").await;
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["entity_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "d", "e"]);
    let letters = read_dead_letters(dl.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0]["input"],
        "m,entity_id=c value= 1700000000000000003"
    );
    assert_eq!(letters[0]["stage"], "sink");
    assert_eq!(letters[0]["kind"], "unparsable_line");
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("unable to parse"),
        "{letters:?}"
    );
    let t = ctx.stats.totals();
    assert_eq!((t.written, t.dead_lettered, t.dropped), (4, 1, 0));
}

/// 4xx replies influxd has given so far (its `/debug/vars` httpd statistics).
async fn client_errors(db: &Influxd) -> u64 {
    let text = support::influxd::http_client()
        .get(format!("{}/debug/vars", db.url()))
        .send()
        .await
        .expect("GET /debug/vars")
        .text()
        .await
        .expect("read debug vars");
    let vars: Value = serde_json::from_str(&text).expect("debug vars are JSON");
    vars.as_object()
        .expect("debug vars object")
        .values()
        .filter(|v| v["name"] == "httpd")
        .map(|v| v["values"]["clientError"].as_u64().unwrap_or(0))
        .sum()
}

/// Plants field types in `c`: value float, n integer, flag boolean, s string.
async fn plant_history(db: &Influxd) {
    InfluxWriter::new(&config(db))
        .unwrap()
        .write("c,entity_id=x value=1.5,n=1i,flag=true,s=\"a\" 1700000000000000000\n")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_policy_sets_aside_only_the_conflicting_point_before_sending() {
    let db = Influxd::start("home_assistant").await;
    plant_history(&db).await;
    let mut cfg = config(&db);
    cfg.type_conflict = TypeConflict::DeadLetter;
    let h = Harness::start(&cfg);
    h.send(&[
        "c,entity_id=x value=2.5 1700000000000000010",
        "c,entity_id=y value=3.5 1700000000000000011",
        "c,entity_id=x value=\"oops\" 1700000000000000012",
        "c,entity_id=z value=4.5 1700000000000000013",
    ])
    .await;
    let (ctx, dl) = h.stop().await;
    let rows = db.rows("c").await;
    let values: Vec<Value> = rows.iter().map(|r| r["value"].clone()).collect();
    assert_eq!(values, [json!(1.5), json!(2.5), json!(3.5), json!(4.5)]);
    let letters = read_dead_letters(dl.path());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0]["input"],
        "c,entity_id=x value=\"oops\" 1700000000000000012"
    );
    assert_eq!(letters[0]["kind"], "type_conflict");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("field type conflict") && reason.contains("already float"),
        "{letters:?}"
    );
    let t = ctx.stats.totals();
    assert_eq!((t.written, t.dead_lettered, t.dropped), (3, 1, 0));
    // Known from SHOW FIELD KEYS at start: the server never saw the conflicting point.
    assert_eq!(client_errors(&db).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_conflicts_are_converted_or_written_to_str_fields_before_sending() {
    let db = Influxd::start("home_assistant").await;
    plant_history(&db).await;
    let writer = InfluxWriter::new(&config(&db)).unwrap();
    assert_eq!(writer.learn_field_types().await.unwrap(), 4);
    let h = Harness::start(&config(&db));
    h.send(&[
        // Lossless conversions: integer → float, float → integer, float → string.
        "c,entity_id=x value=3i,n=2.0,s=21.5 1700000000000000001",
        // Not lossless: the value goes to a string twin field.
        "c,entity_id=y value=\"unavailable\",n=2.5,flag=1i 1700000000000000002",
        "c,entity_id=z value=4.5,n=7i,flag=false,s=\"b\" 1700000000000000003",
    ])
    .await;
    let (ctx, dl) = h.stop().await;
    assert!(read_dead_letters(dl.path()).is_empty());
    let t = ctx.stats.totals();
    assert_eq!((t.written, t.dead_lettered, t.dropped), (3, 0, 0));
    assert_eq!(client_errors(&db).await, 0, "a batch was refused");
    let rows = db.rows("c").await;
    let got: Vec<Value> = rows
        .iter()
        .map(|r| {
            fields(
                r,
                &[
                    "entity_id",
                    "value",
                    "value_str",
                    "n",
                    "n_str",
                    "flag",
                    "flag_str",
                    "s",
                ],
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            json!({"entity_id": "x", "value": 1.5, "value_str": null, "n": 1, "n_str": null, "flag": true, "flag_str": null, "s": "a"}),
            json!({"entity_id": "x", "value": 3, "value_str": null, "n": 2, "n_str": null, "flag": null, "flag_str": null, "s": "21.5"}),
            json!({"entity_id": "y", "value": null, "value_str": "unavailable", "n": null, "n_str": "2.5", "flag": null, "flag_str": "1", "s": null}),
            json!({"entity_id": "z", "value": 4.5, "value_str": null, "n": 7, "n_str": null, "flag": false, "flag_str": null, "s": "b"}),
        ]
    );
    let keys = db.query("SHOW FIELD KEYS FROM \"c\"").await;
    assert_eq!(
        keys["results"][0]["series"][0]["values"],
        json!([
            ["flag", "boolean"],
            ["flag_str", "string"],
            ["n", "integer"],
            ["n_str", "string"],
            ["s", "string"],
            ["value", "float"],
            ["value_str", "string"]
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_the_guard_did_not_know_is_learned_from_the_reply_and_resolved() {
    let db = Influxd::start("home_assistant").await;
    let h = Harness::start(&config(&db));
    // The sink learns the (empty) field types with its first batch.
    h.send(&["other value=1 1700000000000000000"]).await;
    db.wait_rows("other", 1, WAIT).await;
    // History written behind the sink's back.
    plant_history(&db).await;
    // The batch's first value makes the guard take `value` for a string field.
    h.send(&[
        "c,entity_id=b value=\"oops\" 1700000000000000011",
        "c,entity_id=a value=2.5 1700000000000000010",
        "c,entity_id=c value=4i 1700000000000000012",
    ])
    .await;
    let (ctx, dl) = h.stop().await;
    assert!(read_dead_letters(dl.path()).is_empty());
    let rows = db.rows("c").await;
    let got: Vec<Value> = rows
        .iter()
        .map(|r| fields(r, &["entity_id", "value", "value_str"]))
        .collect();
    assert_eq!(
        got,
        vec![
            json!({"entity_id": "x", "value": 1.5, "value_str": null}),
            json!({"entity_id": "a", "value": 2.5, "value_str": null}),
            json!({"entity_id": "b", "value": null, "value_str": "oops"}),
            json!({"entity_id": "c", "value": 4, "value_str": null}),
        ]
    );
    let t = ctx.stats.totals();
    assert_eq!((t.written, t.dead_lettered, t.dropped), (4, 0, 0));
    // The one refusal that taught the guard.
    assert_eq!(client_errors(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_holds_the_batch_until_it_exists() {
    let db = Influxd::start("home_assistant").await;
    let mut cfg = config(&db);
    cfg.database = Some("later".into());
    let h = Harness::start(&cfg);
    h.send(&[
        "h value=1 1700000000000000001",
        "h value=2 1700000000000000002",
    ])
    .await;
    let stats = h.ctx.stats.clone();
    let reason = wait_for("the sink to report not ready", WAIT, || async {
        let r = stats.readiness();
        (!r.ready).then(|| r.reasons.join("; "))
    })
    .await;
    assert!(
        reason.contains("404") && reason.contains("database not found"),
        "{reason}"
    );
    assert_eq!(stats.totals().written, 0);
    db.create_database("later").await;
    wait_for("the held points to be written", WAIT, || async {
        (stats.totals().written == 2).then_some(())
    })
    .await;
    let (ctx, _dl) = h.stop().await;
    let json = db.query("SELECT count(value) FROM later.autogen.h").await;
    assert_eq!(json["results"][0]["series"][0]["values"][0][1], json!(2));
    assert!(ctx.stats.readiness().ready);
    assert_eq!(ctx.stats.totals().dropped, 0);
    assert!(read_dead_letters(_dl.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_influxdb_restart_mid_stream_loses_nothing() {
    let mut db = Influxd::start("home_assistant").await;
    let h = Harness::start(&config(&db));
    h.send(&["r value=1 1700000000000000001"]).await;
    db.wait_rows("r", 1, WAIT).await;
    db.stop();
    h.send(&[
        "r value=2 1700000000000000002",
        "r value=3 1700000000000000003",
    ])
    .await;
    let stats = h.ctx.stats.clone();
    wait_for("the sink to notice the outage", WAIT, || async {
        (!stats.readiness().ready).then_some(())
    })
    .await;
    db.restart().await;
    wait_for("the retried points to be written", WAIT, || async {
        (stats.totals().written == 3).then_some(())
    })
    .await;
    assert!(h.dead_letters().is_empty());
    let (ctx, _dl) = h.stop().await;
    let rows = db.rows("r").await;
    let values: Vec<Value> = rows.iter().map(|r| r["value"].clone()).collect();
    assert_eq!(values, [json!(1), json!(2), json!(3)]);
    assert_eq!(ctx.stats.totals().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_trusts_the_configured_ca_and_refuses_an_unknown_one() {
    let db = Influxd::start_tls("home_assistant").await;
    assert!(db.url().starts_with("https://"));
    let line = "tls value=1 1700000000000000001\n";

    // Unknown issuer: refused at the TLS handshake, reported as a transport error.
    let plain = InfluxWriter::new(&config(&db)).unwrap();
    let err = plain.write(line).await.unwrap_err();
    assert_eq!(err.kind(), "transport", "{err:?}");

    let mut with_ca = config(&db);
    with_ca.tls.ca_file = db.ca_file();
    let writer = InfluxWriter::new(&with_ca).unwrap();
    assert!(writer.check().await.unwrap().starts_with("1.6"));
    writer.write(line).await.unwrap();

    let mut insecure = config(&db);
    insecure.tls.insecure_skip_verify = true;
    InfluxWriter::new(&insecure)
        .unwrap()
        .write("tls value=2 1700000000000000002\n")
        .await
        .unwrap();
    assert_eq!(db.rows("tls").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_and_a_refusal_holds_the_batch() {
    let db = Influxd::start_auth("home_assistant").await;
    let mut good = config(&db);
    good.username = Some(support::influxd::ADMIN_USER.into());
    good.password = Some(support::influxd::ADMIN_PASSWORD.into());
    let writer = InfluxWriter::new(&good).unwrap();
    assert!(writer.check().await.unwrap().starts_with("1.6"));
    writer
        .write("auth value=1 1700000000000000001\n")
        .await
        .unwrap();

    let mut bad = good.clone();
    bad.password = Some("wrong".into());
    let refused = InfluxWriter::new(&bad).unwrap();
    let err = refused.check().await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    let err = refused
        .write("auth value=2 1700000000000000002\n")
        .await
        .unwrap_err();
    assert!(err.is_auth() && err.kind() == "unauthorized", "{err:?}");

    // The sink keeps the batch and reports why it is not ready.
    let h = Harness::start(&bad);
    h.send(&["auth value=3 1700000000000000003"]).await;
    let stats = h.ctx.stats.clone();
    let reason = wait_for("the sink to report not ready", WAIT, || async {
        let r = stats.readiness();
        (!r.ready).then(|| r.reasons.join("; "))
    })
    .await;
    assert!(reason.contains("401"), "{reason}");
    assert_eq!(stats.totals().written, 0);
    assert!(h.dead_letters().is_empty());
    let (ctx, _dl) = h.stop().await;
    // Still refused at shutdown: counted as not written, never silently.
    assert_eq!(ctx.stats.totals().dropped, 1);
    assert_eq!(db.rows("auth").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_measurements_writes_only_those_and_acknowledges_the_rest() {
    let db = Influxd::start("home_assistant").await;
    let mut cfg = config(&db);
    cfg.measurements = vec!["keep*".into()];
    let dl_dir = tempfile::tempdir().unwrap();
    let (acks, mut delivered) = ha_ingestor::feedback::acks::Acks::channel();
    let ctx = SinkContext {
        stats: Arc::new(Stats::default()),
        dead_letters: Arc::new(DeadLetters::new(dl_dir.path().join("dead-letter"))),
        shutdown: CancellationToken::new(),
        acks: Some(acks),
    };
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(InfluxWriter::new(&cfg).unwrap().run(rx, ctx.clone()));
    let chunk = |seq: u64, lines: &[&str]| Chunk {
        lines: lines.iter().map(|l| format!("{l}\n")).collect(),
        points: lines.len(),
        seq: Some(seq),
        marks: Default::default(),
    };
    tx.send(chunk(
        1,
        &[
            "keep_a value=1 1700000000000000001",
            "other value=2 1700000000000000002",
            "keep\\ b,entity_id=x value=3 1700000000000000003",
        ],
    ))
    .await
    .unwrap();
    wait_for("record 1 delivered", WAIT, || {
        let v = *delivered.borrow_and_update();
        async move { (v == 1).then_some(()) }
    })
    .await;
    // A record with nothing for this target is delivered as far as it goes.
    tx.send(chunk(2, &["other value=4 1700000000000000004"]))
        .await
        .unwrap();
    wait_for("record 2 delivered", WAIT, || {
        let v = *delivered.borrow_and_update();
        async move { (v == 2).then_some(()) }
    })
    .await;
    ctx.shutdown.cancel();
    drop(tx);
    task.await.unwrap();
    assert_eq!(db.rows("keep_a").await.len(), 1);
    assert_eq!(db.rows("keep b").await.len(), 1);
    assert!(db.rows("other").await.is_empty());
    let t = ctx.stats.totals();
    assert_eq!((t.written, t.dead_lettered, t.dropped), (2, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_keep_each_series_in_order_and_acknowledge_in_order() {
    let db = Influxd::start("home_assistant").await;
    let mut cfg = config(&db);
    cfg.max_concurrent_requests = 4;
    cfg.batch_size = 10;
    let dl_dir = tempfile::tempdir().unwrap();
    let (acks, mut delivered) = ha_ingestor::feedback::acks::Acks::channel();
    let ctx = SinkContext {
        stats: Arc::new(Stats::default()),
        dead_letters: Arc::new(DeadLetters::new(dl_dir.path().join("dead-letter"))),
        shutdown: CancellationToken::new(),
        acks: Some(acks),
    };
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(InfluxWriter::new(&cfg).unwrap().run(rx, ctx.clone()));
    // Every round rewrites each entity's one point (same timestamp): InfluxDB keeps the
    // last write, so any reordering within a series would leave an older value stored.
    const ENTITIES: u64 = 20;
    const ROUNDS: u64 = 30;
    for round in 0..ROUNDS {
        let lines: String = (0..ENTITIES)
            .map(|e| {
                format!(
                    "o,entity_id=e{e} value={round} {}\n",
                    1_700_000_000_000_000_000 + e
                )
            })
            .collect();
        tx.send(Chunk {
            lines,
            points: ENTITIES as usize,
            seq: Some(round + 1),
            marks: Default::default(),
        })
        .await
        .unwrap();
    }
    wait_for("every record delivered", WAIT, || {
        let v = *delivered.borrow_and_update();
        async move { (v == ROUNDS).then_some(()) }
    })
    .await;
    ctx.shutdown.cancel();
    drop(tx);
    task.await.unwrap();
    let rows = db.rows("o").await;
    assert_eq!(rows.len(), ENTITIES as usize);
    for row in &rows {
        assert_eq!(row["value"], json!(ROUNDS - 1), "{row:?}");
    }
    let t = ctx.stats.totals();
    assert_eq!(
        (t.written, t.dead_lettered, t.dropped),
        (ENTITIES * ROUNDS, 0, 0)
    );
}

/// A loopback URL where nothing listens (a port just freed).
fn unreachable_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    format!("http://127.0.0.1:{port}")
}

/// `/ready` of a monitor serving `stats`: status code and JSON body.
async fn ready(addr: std::net::SocketAddr) -> (u16, Value) {
    let reply = reqwest::get(format!("http://{addr}/ready"))
        .await
        .expect("GET /ready");
    let code = reply.status().as_u16();
    let text = reply.text().await.expect("read the body");
    (code, serde_json::from_str(&text).expect("JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reports_each_target_and_follows_each_targets_policy() {
    use ha_ingestor::config::TargetReadiness;
    let db = Influxd::start("ready_targets").await;
    let stats = Arc::new(Stats::default());
    let dl_dir = tempfile::tempdir().unwrap();
    let monitor_stop = CancellationToken::new();
    let (addr, serve) = ha_ingestor::monitor::http::serve(
        "127.0.0.1:0".parse().unwrap(),
        stats.clone(),
        monitor_stop.clone(),
    )
    .await
    .expect("monitor listens");
    tokio::spawn(serve);
    let mut tasks = Vec::new();
    let mut inputs = Vec::new();
    let mut start = |name: &str, url: String, readiness: TargetReadiness| {
        let mut cfg = config(&db);
        cfg.url = url;
        cfg.name = Some(name.into());
        cfg.readiness = readiness;
        let ctx = SinkContext {
            stats: stats.clone(),
            dead_letters: Arc::new(DeadLetters::new(dl_dir.path().join(name))),
            shutdown: CancellationToken::new(),
            acks: None,
        };
        let (tx, rx) = mpsc::channel(16);
        tasks.push(tokio::spawn(InfluxWriter::new(&cfg).unwrap().run(rx, ctx)));
        inputs.push(tx.clone());
        tx
    };
    let chunk = || Chunk {
        lines: "ready value=1 1700000000000000001\n".into(),
        points: 1,
        seq: None,
        marks: Default::default(),
    };
    let target = |body: &Value, name: &str| -> Value {
        body["sinks"]
            .as_array()
            .and_then(|s| s.iter().find(|t| t["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no target {name} in {body}"))
    };

    // A local target that writes, and an unreachable mirror allowed to be down.
    let local = start("local", db.url(), TargetReadiness::AnyFailure);
    let offsite_url = unreachable_url();
    let offsite = start("offsite", offsite_url.clone(), TargetReadiness::Refused);
    local.send(chunk()).await.unwrap();
    offsite.send(chunk()).await.unwrap();
    let body = wait_for("both targets reported", WAIT, || async {
        let (code, body) = ready(addr).await;
        let written = target(&body, "local")["last_write_age_seconds"].is_number();
        let failed = target(&body, "offsite")["writing"] == false;
        (written && failed).then_some((code, body))
    })
    .await;
    let (code, body) = body;
    assert_eq!(
        code, 200,
        "an outage of a `refused`-policy target keeps it ready: {body}"
    );
    let off = target(&body, "offsite");
    assert_eq!(off["url"], Value::String(format!("{offsite_url}/")));
    assert_eq!(off["readiness"], "refused");
    assert_eq!(off["refused"], false);
    assert!(off["last_error"].is_string(), "{off}");
    assert_eq!(target(&body, "local")["writing"], true);

    // A target refusing the credentials makes it not ready, even with that policy.
    let vault = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/write"))
        .respond_with(
            wiremock::ResponseTemplate::new(401)
                .set_body_string("{\"error\":\"authorization failed\"}"),
        )
        .mount(&vault)
        .await;
    let refused = start("vault", vault.uri(), TargetReadiness::Refused);
    refused.send(chunk()).await.unwrap();
    let (code, body) = wait_for("the refusal reported", WAIT, || async {
        let (code, body) = ready(addr).await;
        (target(&body, "vault")["refused"] == true).then_some((code, body))
    })
    .await;
    assert_eq!(code, 503, "{body}");
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("vault") && reasons.contains("401"),
        "{reasons}"
    );
    assert!(!reasons.contains("offsite"), "{reasons}");

    // With the default policy, the unreachable target's outage makes it not ready too.
    let backup = start("backup", unreachable_url(), TargetReadiness::AnyFailure);
    backup.send(chunk()).await.unwrap();
    let reasons = wait_for("the outage counted", WAIT, || async {
        let (code, body) = ready(addr).await;
        let reasons = body["reasons"].to_string();
        (code == 503 && reasons.contains("backup")).then_some(reasons)
    })
    .await;
    assert!(reasons.contains("vault"), "{reasons}");
    assert_eq!(db.rows("ready").await.len(), 1);
    for task in tasks {
        task.abort();
    }
    monitor_stop.cancel();
    drop(inputs);
}
