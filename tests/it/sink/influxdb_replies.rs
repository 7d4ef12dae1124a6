//! Writer behaviour on replies a real InfluxDB 1.6.7 cannot be made to give:
//! the v2 API, throttling, 5xx, 413 and refused credentials (wiremock).

use crate::support;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::config::{Gzip, InfluxApi, InfluxConfig};
use ha_ingestor::dead_letter::DeadLetters;
use ha_ingestor::encode::Chunk;
use ha_ingestor::monitor::Stats;
use ha_ingestor::sink::SinkContext;
use ha_ingestor::sink::influxdb::InfluxWriter;
use support::wait_for;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const WAIT: Duration = Duration::from_secs(30);

fn v1(url: &str) -> InfluxConfig {
    let mut cfg = InfluxConfig::v1(url, "home_assistant");
    cfg.gzip = Gzip::Off;
    cfg.retry_min = Duration::from_millis(5);
    cfg.retry_max = Duration::from_millis(50);
    cfg.flush_interval = Duration::from_millis(20);
    // One request at a time: these tests count the requests.
    cfg.max_concurrent_requests = 1;
    cfg
}

fn context() -> SinkContext {
    SinkContext {
        stats: Arc::new(Stats::default()),
        dead_letters: Arc::new(DeadLetters::in_memory()),
        shutdown: CancellationToken::new(),
        acks: None,
    }
}

fn lines(n: usize) -> Chunk {
    Chunk {
        lines: (0..n)
            .map(|i| format!("m value={i} {}\n", 1_700_000_000_000_000_000u64 + i as u64))
            .collect(),
        points: n,
        seq: None,
        marks: Default::default(),
    }
}

/// Runs the sink on `cfg`, sends `chunk`, waits until `written` reaches its size, stops it.
async fn deliver(cfg: &InfluxConfig, chunk: Chunk) -> SinkContext {
    let ctx = context();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(InfluxWriter::new(cfg).unwrap().run(rx, ctx.clone()));
    let n = chunk.points as u64;
    tx.send(chunk).await.unwrap();
    let stats = ctx.stats.clone();
    wait_for("the points to be written", WAIT, || async {
        (stats.totals().written == n).then_some(())
    })
    .await;
    ctx.shutdown.cancel();
    drop(tx);
    task.await.unwrap();
    ctx
}

/// The write requests `server` received (the writer also asks for the field types at start).
async fn writes(server: &MockServer) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .collect()
}

/// Mounts on `server`: the first `times` writes get `first`, every later one 204.
async fn fail_first(server: &MockServer, first: ResponseTemplate, times: u64) {
    Mock::given(method("POST"))
        .respond_with(first)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(server)
        .await;
}

fn body_lines(req: &Request) -> Vec<String> {
    let text = if req
        .headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&req.body[..])
            .read_to_string(&mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(req.body.clone()).unwrap()
    };
    text.lines().map(str::to_string).collect()
}

/// Writes three lines with `cfg`, checks the server got them (gzipped or not) and returns its request.
async fn write_three_lines(cfg: &InfluxConfig, server: &MockServer) -> Request {
    let writer = InfluxWriter::new(cfg).unwrap();
    writer.write(&lines(3).lines).await.unwrap();
    let mut reqs = writes(server).await;
    assert_eq!(reqs.len(), 1);
    let req = reqs.remove(0);
    assert_eq!(body_lines(&req), lines(3).lines.lines().collect::<Vec<_>>());
    req
}

#[tokio::test]
async fn v2_writes_to_the_bucket_with_a_token_and_gzip() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v2/write"))
        .and(query_param("org", "my org"))
        .and(query_param("bucket", "ha/raw"))
        .and(query_param("precision", "ns"))
        .and(header("authorization", "Token s3cr3t"))
        .and(header("content-encoding", "gzip"))
        .and(header("content-type", "text/plain; charset=utf-8"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = v1(&server.uri());
    cfg.api = InfluxApi::V2;
    cfg.database = None;
    cfg.org = Some("my org".into());
    cfg.bucket = Some("ha/raw".into());
    cfg.token = Some("s3cr3t".into());
    cfg.gzip = Gzip::On;
    write_three_lines(&cfg, &server).await;
}

#[tokio::test]
async fn auto_gzip_sends_plain_bodies_to_a_loopback_influxdb() {
    let server = MockServer::start().await;
    assert!(
        server.uri().starts_with("http://127.0.0.1:"),
        "{}",
        server.uri()
    );
    Mock::given(method("POST"))
        .and(path("/write"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = v1(&server.uri());
    cfg.gzip = Gzip::Auto;
    let sent = write_three_lines(&cfg, &server).await;
    assert_eq!(sent.headers.get("content-encoding"), None);
}

#[tokio::test]
async fn v1_credentials_travel_as_basic_auth_never_in_the_url() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/write"))
        .and(query_param("db", "home_assistant"))
        .and(query_param("precision", "ns"))
        // base64("ha:pw")
        .and(header("authorization", "Basic aGE6cHc="))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = v1(&server.uri());
    cfg.username = Some("ha".into());
    cfg.password = Some("pw".into());
    let writer = InfluxWriter::new(&cfg).unwrap();
    writer.write(&lines(1).lines).await.unwrap();
    let reqs = writes(&server).await;
    let query = reqs[0].url.query().unwrap_or_default();
    assert!(!query.contains("pw") && !query.contains("u="), "{query}");
    assert!(!format!("{writer:?}").contains("pw"));
}

#[tokio::test]
async fn retry_after_on_503_is_honoured() {
    let server = MockServer::start().await;
    fail_first(
        &server,
        ResponseTemplate::new(503).insert_header("Retry-After", "1"),
        1,
    )
    .await;
    let started = std::time::Instant::now();
    let ctx = deliver(&v1(&server.uri()), lines(4)).await;
    // retry_max is 50 ms: only Retry-After can explain a second's wait.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(writes(&server).await.len(), 2);
    assert_eq!(ctx.stats.totals().written, 4);
    assert!(ctx.stats.readiness().ready);
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_until_accepted() {
    for (first, times) in [(429u16, 1u64), (500, 2), (502, 1), (408, 1)] {
        let server = MockServer::start().await;
        fail_first(
            &server,
            ResponseTemplate::new(first).set_body_string(r#"{"error":"busy"}"#),
            times,
        )
        .await;
        let ctx = deliver(&v1(&server.uri()), lines(5)).await;
        let reqs = writes(&server).await;
        assert_eq!(reqs.len() as u64, times + 1, "status {first}");
        // The same batch every time.
        assert!(
            reqs.iter().all(|r| body_lines(r).len() == 5),
            "status {first}"
        );
        let t = ctx.stats.totals();
        assert_eq!(
            (t.written, t.dead_lettered, t.dropped),
            (5, 0, 0),
            "status {first}"
        );
    }
}

#[tokio::test]
async fn too_large_batches_are_split_in_halves() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(|req: &Request| req.body.iter().filter(|b| **b == b'\n').count() > 2)
        .respond_with(
            ResponseTemplate::new(413).set_body_string(r#"{"error":"Request Entity Too Large"}"#),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let ctx = deliver(&v1(&server.uri()), lines(8)).await;
    let reqs = writes(&server).await;
    // 8 → 4 + 4 → 2 + 2 + 2 + 2.
    assert_eq!(reqs.len(), 7);
    let mut accepted: Vec<String> = reqs
        .iter()
        .map(body_lines)
        .filter(|l| l.len() <= 2)
        .flatten()
        .collect();
    accepted.sort();
    let mut expected: Vec<String> = lines(8).lines.lines().map(str::to_string).collect();
    expected.sort();
    assert_eq!(accepted, expected);
    let t = ctx.stats.totals();
    assert_eq!((t.written, t.dead_lettered, t.dropped), (8, 0, 0));
}

#[tokio::test]
async fn refused_credentials_hold_the_batch_and_mark_the_sink_not_ready() {
    let server = MockServer::start().await;
    fail_first(
        &server,
        ResponseTemplate::new(401).set_body_string(r#"{"error":"authorization failed"}"#),
        3,
    )
    .await;
    let ctx = context();
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(
        InfluxWriter::new(&v1(&server.uri()))
            .unwrap()
            .run(rx, ctx.clone()),
    );
    tx.send(lines(3)).await.unwrap();
    let stats = ctx.stats.clone();
    let reason = wait_for("not ready", WAIT, || async {
        let r = stats.readiness();
        (!r.ready).then(|| r.reasons.join("; "))
    })
    .await;
    assert!(
        reason.contains("401") && reason.contains("authorization failed"),
        "{reason}"
    );
    wait_for("the held batch to be written", WAIT, || async {
        (stats.totals().written == 3).then_some(())
    })
    .await;
    assert!(stats.readiness().ready);
    assert_eq!(writes(&server).await.len(), 4);
    ctx.shutdown.cancel();
    drop(tx);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn what_cannot_be_delivered_by_the_shutdown_deadline_is_counted_as_dropped() {
    // Nothing listens on this port: every attempt fails and is retried.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = v1(&format!("http://127.0.0.1:{port}"));
    cfg.batch_size = 4;
    let ctx = context();
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(InfluxWriter::new(&cfg).unwrap().run(rx, ctx.clone()));
    tx.send(lines(4)).await.unwrap();
    tx.send(lines(3)).await.unwrap();
    let stats = ctx.stats.clone();
    // Shut down while the first batch is being retried.
    wait_for("the first failed attempt", WAIT, || async {
        (!stats.readiness().ready).then_some(())
    })
    .await;
    ctx.shutdown.cancel();
    // The sender stays open: the sink must not wait for it past its deadline.
    // Virtual time: the 10 s deadline passes without waiting for it.
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the sink gives up at its shutdown deadline")
        .unwrap();
    let t = ctx.stats.totals();
    assert_eq!((t.written, t.dropped), (0, 7));
    assert!(!ctx.stats.readiness().ready);
    drop(tx);
}

#[tokio::test]
async fn v2_check_finds_the_bucket_and_reports_the_version() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ping"))
        .respond_with(ResponseTemplate::new(204).insert_header("X-Influxdb-Version", "v2.7.11"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/buckets"))
        .and(query_param("org", "o"))
        .and(query_param("name", "b"))
        .and(header("authorization", "Token t"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(r#"{"buckets":[{"id":"1","name":"b"}]}"#),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/buckets"))
        .respond_with(ResponseTemplate::new(200).set_body_string(r#"{"buckets":[]}"#))
        .mount(&server)
        .await;
    let cfg = v2_config(&server.uri());
    assert_eq!(
        InfluxWriter::new(&cfg).unwrap().check().await.unwrap(),
        "v2.7.11"
    );
    let mut other = cfg.clone();
    other.bucket = Some("missing".into());
    let err = InfluxWriter::new(&other)
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
}

/// A v2-like server: lines containing `bad` are refused as InfluxDB 2.x does.
/// `partial`: 422 with the others written (type conflict); otherwise 400 naming
/// the first bad line with nothing written (malformed line protocol).
fn v2_like(partial: bool) -> impl Fn(&Request) -> ResponseTemplate + Send + Sync {
    move |req: &Request| {
        let lines = body_lines(req);
        let bad: Vec<&String> = lines.iter().filter(|l| l.contains("bad")).collect();
        if bad.is_empty() {
            return ResponseTemplate::new(204);
        }
        if partial {
            ResponseTemplate::new(422).set_body_string(
                serde_json::json!({
                    "code": "unprocessable entity",
                    "message": format!(
                        "failure writing points to database: partial write: field type conflict: input field \"value\" on measurement \"m\" is type string, already exists as type float dropped={}",
                        bad.len()
                    ),
                })
                .to_string(),
            )
        } else {
            ResponseTemplate::new(400).set_body_string(
                serde_json::json!({
                    "code": "invalid",
                    "message": format!("unable to parse '{}': invalid field format", bad[0]),
                })
                .to_string(),
            )
        }
    }
}

fn v2_config(url: &str) -> InfluxConfig {
    let mut cfg = v1(url);
    cfg.api = InfluxApi::V2;
    cfg.database = None;
    cfg.org = Some("o".into());
    cfg.bucket = Some("b".into());
    cfg.token = Some("t".into());
    cfg
}

#[tokio::test]
async fn v2_partial_writes_and_malformed_lines_set_aside_only_the_bad_lines() {
    for partial in [true, false] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(v2_like(partial))
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let ctx = SinkContext {
            stats: Arc::new(Stats::default()),
            dead_letters: Arc::new(DeadLetters::new(dir.path())),
            shutdown: CancellationToken::new(),
            acks: None,
        };
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(
            InfluxWriter::new(&v2_config(&server.uri()))
                .unwrap()
                .run(rx, ctx.clone()),
        );
        let text = "m value=1 1\nm value=\"bad1\" 2\nm value=3 3\nm value=4 4\nm value=5 5\nm value=\"bad2\" 6\nm value=7 7\n";
        tx.send(Chunk {
            lines: text.to_string(),
            points: 7,
            seq: None,
            marks: Default::default(),
        })
        .await
        .unwrap();
        ctx.shutdown.cancel();
        drop(tx);
        task.await.unwrap();
        let t = ctx.stats.totals();
        assert_eq!(
            (t.written, t.dead_lettered, t.dropped),
            (5, 2, 0),
            "partial = {partial}"
        );
        let mut inputs: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flat_map(|e| {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
                text.lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        format!(
                            "{} | {}",
                            v["kind"].as_str().unwrap(),
                            v["input"].as_str().unwrap()
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        inputs.sort();
        let kind = if partial {
            "type_conflict"
        } else {
            "unparsable_line"
        };
        assert_eq!(
            inputs,
            [
                format!("{kind} | m value=\"bad1\" 2"),
                format!("{kind} | m value=\"bad2\" 6")
            ],
            "partial = {partial}"
        );
        // Every good line reached the server in a request it accepted.
        let mut accepted: Vec<String> = Vec::new();
        for req in writes(&server).await {
            let lines = body_lines(&req);
            if lines.iter().all(|l| !l.contains("bad")) {
                accepted.extend(lines);
            }
        }
        accepted.sort();
        accepted.dedup();
        assert_eq!(accepted.len(), 5, "partial = {partial}: {accepted:?}");
    }
}
