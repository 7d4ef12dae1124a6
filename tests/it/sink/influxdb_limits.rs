//! Reply bodies are read with a limit: an "InfluxDB" (a raw loopback server) that answers
//! with a body that never ends — an error body (400, 500) or a query reply's JSON — cannot
//! make the writer read it all. The write still ends, with the error classified and its
//! reason cut at 64 KiB; a query reply is abandoned at 16 MiB. The body never ends, so
//! finishing at all proves the rest was never read.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ha_ingestor::config::{Gzip, InfluxConfig};
use ha_ingestor::dead_letter::DeadLetters;
use ha_ingestor::encode::Chunk;
use ha_ingestor::monitor::Stats;
use ha_ingestor::sink::SinkContext;
use ha_ingestor::sink::influxdb::{InfluxWriter, WriteError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::wait_for;

/// The writer's limit on an error body (`MAX_ERROR_BODY` in `sink/influxdb/client.rs`).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The writer's limit on a successful JSON reply (`MAX_JSON_BODY`).
const MAX_JSON_BODY: u64 = 16 << 20;
/// Well past any limit and any socket buffer: a body read to its end would take this long at least.
const DEADLINE: Duration = Duration::from_secs(30);
/// One chunk of an endless body.
const CHUNK: usize = 16 * 1024;

/// What the fake server answers to each request.
#[derive(Clone, Copy)]
enum Answer {
    /// `/write`: this status with an endless text body.
    EndlessError(u16),
    /// `/query`: 200 with an endless JSON body.
    EndlessJson,
}

/// A loopback server that answers every request with `answer`'s endless chunked body;
/// counts the body bytes it managed to hand to the socket (they stop when the client hangs up).
async fn endless_server(answer: Answer) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, answer, counter.clone()));
        }
    });
    (url, sent)
}

async fn serve(socket: TcpStream, answer: Answer, sent: Arc<AtomicU64>) {
    let mut reader = BufReader::new(socket);
    // The request head, then its body (Content-Length), so the client sees its request taken.
    let mut content_length = 0usize;
    let mut first = String::new();
    if reader.read_line(&mut first).await.unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).await.is_err() {
        return;
    }
    let mut socket = reader.into_inner();
    let (status, prefix, fill) = match answer {
        Answer::EndlessError(code) => (code, String::new(), b'x'),
        // Valid JSON as far as it goes: an array that never closes.
        Answer::EndlessJson => (200, "{\"results\":[{\"series\":[".to_string(), b' '),
    };
    let head = format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let framed = |data: &[u8]| {
        let mut out = format!("{:x}\r\n", data.len()).into_bytes();
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
        out
    };
    if !prefix.is_empty() && socket.write_all(&framed(prefix.as_bytes())).await.is_err() {
        return;
    }
    let filler = framed(&[fill; CHUNK]);
    // Never the closing zero-length chunk: the body ends only when the client hangs up.
    while socket.write_all(&filler).await.is_ok() {
        sent.fetch_add(CHUNK as u64, Ordering::Relaxed);
    }
}

fn config(url: &str) -> InfluxConfig {
    let mut cfg = InfluxConfig::v1(url, "home_assistant");
    cfg.gzip = Gzip::Off;
    cfg.timeout = DEADLINE * 2;
    cfg.retry_min = Duration::from_millis(5);
    cfg.retry_max = Duration::from_millis(50);
    cfg.flush_interval = Duration::from_millis(20);
    cfg.max_concurrent_requests = 1;
    cfg
}

/// The cut body: at most the limit plus the `…(truncated)` mark, and marked.
fn assert_cut(body: &str) {
    assert!(
        body.len() <= MAX_ERROR_BODY + " …(truncated)".len(),
        "error body of {} bytes kept",
        body.len()
    );
    assert!(
        body.len() >= MAX_ERROR_BODY / 2,
        "body too short: {}",
        body.len()
    );
    assert!(body.ends_with("…(truncated)"), "not marked as cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_error_body_is_cut_at_64_kib_and_the_write_ends() {
    for code in [400, 500] {
        let (url, sent) = endless_server(Answer::EndlessError(code)).await;
        let writer = InfluxWriter::new(&config(&url)).expect("writer");
        let result = tokio::time::timeout(DEADLINE, writer.write("m value=1 1\n"))
            .await
            .unwrap_or_else(|_| panic!("{code}: the write did not end: the body was read on"));
        match result {
            Err(WriteError::Status { code: got, body }) => {
                assert_eq!(got, code);
                assert_cut(&body);
            }
            other => panic!("{code}: expected a status error, got {other:?}"),
        }
        // The client had more than the limit on offer (what it received, the server sent).
        sent_at_least(&sent, MAX_ERROR_BODY as u64 - CHUNK as u64).await;
    }
}

/// The dead letter of a line the server refused with an endless 400 keeps a reason of at most 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_line_is_dead_lettered_with_a_reason_of_at_most_64_kib() {
    let (url, _) = endless_server(Answer::EndlessError(400)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = SinkContext {
        stats: Arc::new(Stats::default()),
        dead_letters: Arc::new(DeadLetters::new(dir.path())),
        shutdown: CancellationToken::new(),
        acks: None,
    };
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(
        InfluxWriter::new(&config(&url))
            .expect("writer")
            .run(rx, ctx.clone()),
    );
    tx.send(Chunk {
        lines: "m value=1 1700000000000000000\n".to_string(),
        points: 1,
        seq: None,
        marks: Default::default(),
    })
    .await
    .expect("send");
    let stats = ctx.stats.clone();
    wait_for("the line to be dead-lettered", DEADLINE, || async {
        (stats.totals().dead_lettered == 1).then_some(())
    })
    .await;
    ctx.shutdown.cancel();
    drop(tx);
    task.await.expect("writer task");
    let record = dead_letter_records(dir.path())
        .into_iter()
        .next()
        .expect("one dead letter");
    assert_eq!(record["input"], "m value=1 1700000000000000000");
    let reason = record["reason"].as_str().expect("a reason");
    assert!(
        reason.len() <= MAX_ERROR_BODY + 200,
        "a reason of {} bytes",
        reason.len()
    );
    assert!(reason.contains("…(truncated)"), "{:.200}", reason);
}

/// A query reply (`SHOW FIELD KEYS` at start) that never ends is abandoned at 16 MiB as not JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_query_reply_is_abandoned_at_16_mib() {
    let (url, sent) = endless_server(Answer::EndlessJson).await;
    let writer = InfluxWriter::new(&config(&url)).expect("writer");
    let result = tokio::time::timeout(DEADLINE, writer.learn_field_types())
        .await
        .expect("the query did not end: the reply was read on");
    match result {
        Err(WriteError::Protocol(message)) => {
            assert!(message.contains("not JSON"), "{message}");
            assert!(message.len() < 1024, "the message repeats the body");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // About the limit was sent; the reply never ends, so reading it whole was impossible.
    sent_at_least(&sent, MAX_JSON_BODY - CHUNK as u64).await;
}

/// The server counts a chunk once its write returned: waits for the count to reach `bytes`.
async fn sent_at_least(sent: &AtomicU64, bytes: u64) {
    wait_for("the server's count of bytes sent", DEADLINE, || async {
        (sent.load(Ordering::Relaxed) >= bytes).then_some(())
    })
    .await;
}

fn dead_letter_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut records = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dead-letter folder") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        records.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line")),
        );
    }
    records
}
