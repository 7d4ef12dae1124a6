//! The monitor listener over a real socket: `/health`, `/ready` with reasons, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use ha_ingestor::monitor::Stats;
use ha_ingestor::monitor::http::serve;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn health_ready_and_metrics() {
    ha_ingestor::ensure_crypto_provider();
    let stats = Arc::new(Stats::default());
    stats.register_source("homeassistant");
    let token = CancellationToken::new();
    let (addr, fut) = serve(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        stats.clone(),
        token.clone(),
    )
    .await
    .unwrap();
    let server = tokio::spawn(fut);
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");

    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert_eq!(body["ready"], false);
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("homeassistant"),
        "{body}"
    );

    stats.source_state("homeassistant", true, None);
    stats.sink_result("influxdb", Ok(()));
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    stats.sink_result("influxdb", Err("HTTP 404: database not found".into()));
    let ready = client.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap()
            .contains("database not found"),
        "{body}"
    );

    metrics::counter!(ha_ingestor::monitor::metrics::SINK_SENT_POINTS, "sink" => "test")
        .increment(3);
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ha_ingestor_build_info"), "{text}");
    assert!(
        text.contains("ha_ingestor_sink_sent_points_total{sink=\"test\"} 3"),
        "{text}"
    );
    assert!(text.contains("ha_ingestor_uptime_seconds"), "{text}");

    token.cancel();
    server.await.unwrap();
}

/// `/ready` must not answer "ready" in the moment between the monitor starting to listen
/// and the sources' tasks first running (nor while the buffer opens before them).
#[tokio::test]
async fn ready_is_false_from_the_first_moment_until_every_source_has_connected() {
    ha_ingestor::ensure_crypto_provider();
    let data = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on: the source cannot connect.
    let cfg = config_with_absent_broker(
        data.path(),
        "upstairs",
        "reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n",
    );
    let running = ha_ingestor::app::start(&cfg).await.expect("starts");
    // Nothing awaited since `start` returned: on this single-threaded runtime no source
    // task has run yet, so only what `start` itself registered can make this false.
    let now = running.stats().readiness();
    assert!(!now.ready, "ready before any source ran: {now:?}");
    assert!(
        now.reasons.iter().any(|r| r.contains("mqtt:upstairs")),
        "{:?}",
        now.reasons
    );
    let addr = running.monitor_addr().expect("monitor enabled");
    let reply = reqwest::get(format!("http://{addr}/ready"))
        .await
        .expect("the monitor answers");
    assert_eq!(reply.status(), 503);
    running.stop().await;
}

/// Clients that open a connection and never finish their headers must not hold shutdown:
/// `stop` returns within the monitor's deadline with twenty of them connected.
#[tokio::test]
async fn stop_is_not_held_by_slow_monitor_clients() {
    use tokio::io::AsyncWriteExt;
    ha_ingestor::ensure_crypto_provider();
    let data = tempfile::tempdir().expect("tempdir");
    // A source is required; this one's broker is absent (a port nothing listens on).
    let cfg = config_with_absent_broker(data.path(), "absent", "");
    let running = ha_ingestor::app::start(&cfg).await.expect("starts");
    let addr = running.monitor_addr().expect("monitor enabled");
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .expect("writes part of the headers");
        slow.push(s);
    }
    // The listener has seen them: a full request still gets its answer.
    let reply = reqwest::get(format!("http://{addr}/health"))
        .await
        .expect("answers");
    assert_eq!(reply.status(), 200);
    let deadline = ha_ingestor::app::MONITOR_DEADLINE + std::time::Duration::from_secs(5);
    tokio::time::timeout(deadline, running.stop())
        .await
        .expect("stop returns within the monitor deadline while slow clients stay connected");
    drop(slow);
}

async fn listener() -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    ha_ingestor::ensure_crypto_provider();
    let token = CancellationToken::new();
    let (addr, fut) = serve(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Arc::new(Stats::default()),
        token.clone(),
    )
    .await
    .unwrap();
    (addr, token, tokio::spawn(fut))
}

/// A client that never finishes its headers is closed once the header timeout passes.
#[tokio::test]
async fn partial_headers_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, token, server) = listener().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let deadline =
        ha_ingestor::monitor::http::HEADER_READ_TIMEOUT + std::time::Duration::from_secs(5);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(deadline, s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "still open after {:?}", started.elapsed());
    token.cancel();
    server.await.unwrap();
}

/// Beyond the limit a connection gets a 503 at once; the held ones keep their slots.
#[tokio::test]
async fn the_connection_limit_holds() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, token, server) = listener().await;
    let mut held = Vec::new();
    for _ in 0..ha_ingestor::monitor::http::MAX_CONNECTIONS {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // The limit is reached once the server has accepted them all: poll until a refusal comes.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        extra
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            extra.read_to_end(&mut buf),
        )
        .await
        .expect("an answer")
        .ok();
        let text = String::from_utf8_lossy(&buf);
        if text.starts_with("HTTP/1.1 503") {
            assert!(text.contains("too many connections"), "{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused: {text}"
        );
        tokio::task::yield_now().await;
    }
    drop(held);
    token.cancel();
    server.await.unwrap();
}

/// A service config whose one source is an MQTT broker `name` that is absent (a port
/// nothing listens on), with the monitor on a free loopback port; `extra` adds broker keys.
fn config_with_absent_broker(
    data: &std::path::Path,
    name: &str,
    extra: &str,
) -> ha_ingestor::config::Config {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let text = format!(
        r#"
data_dir = "{data}"
[monitor]
listen = "127.0.0.1:0"
[[mqtt]]
name = "{name}"
url = "mqtt://127.0.0.1:{closed}"
{extra}[[mqtt.subscriptions]]
name = "all"
topic = "probe/#"
decoder = "value"
"#,
        data = data.display(),
    );
    ha_ingestor::config::Config::from_toml_with_env(&text, std::path::Path::new("test.toml"), &[])
        .expect("test config is valid")
}
