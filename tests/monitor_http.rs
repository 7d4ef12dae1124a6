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
