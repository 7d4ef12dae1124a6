//! `ha-ingestor bench mqtt-consume` (the floor of the MQTT path) against the machine's
//! real Mosquitto on 127.0.0.1:1883: it must receive every message the load generator
//! publishes, over both protocols and in both acknowledgement rhythms, and report its CPU
//! per message. Over MQTT 3.1.1 the broker's window is 20 messages, so a consumer that
//! failed to acknowledge would stall there and the count would fall short.

use std::time::Duration;

use ha_ingestor::bench::mqtt_floor::{FloorConfig, consume};
use ha_ingestor::bench::mqtt_loadgen::{LoadConfig, publish};

async fn every_message_is_received(protocol: &str, qos: u8, ack_every: Duration) {
    let prefix = format!(
        "floor-test-{}-{}-{}-{}",
        std::process::id(),
        protocol.replace('.', ""),
        qos,
        ack_every.as_millis()
    );
    let cfg = FloorConfig {
        host: "127.0.0.1".into(),
        port: 1883,
        topic: format!("{prefix}/+"),
        qos,
        protocol: protocol.into(),
        idle: Duration::from_secs(2),
        ack_every,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let consumer = tokio::spawn(async move {
        consume(&cfg, move || {
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
        })
        .await
    });
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("the broker confirmed the subscription within 20 s")
        .expect("the consumer is running");
    let load = publish(&LoadConfig {
        host: "127.0.0.1".into(),
        port: 1883,
        rate: 2000.0,
        seconds: 0.5,
        topics: 7,
        qos,
        prefix,
        base_ms: 1_780_000_000_000,
    })
    .await
    .expect("the load generator publishes");
    assert!(load.published > 100, "published only {}", load.published);
    if qos > 0 {
        assert_eq!(
            load.acked, load.published,
            "the broker acknowledged every message"
        );
    }
    let report = tokio::time::timeout(Duration::from_secs(60), consumer)
        .await
        .expect("the consumer stops once idle")
        .expect("the consumer task did not panic")
        .expect("the consumer read without error");
    assert_eq!(report.received, load.published, "{protocol} QoS {qos}");
    assert!(
        (report.micros_per_message - report.cpu_seconds / report.received as f64 * 1e6).abs()
            < 1e-6,
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt5_every_qos1_message_is_received() {
    every_message_is_received("v5", 1, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt311_every_qos1_message_is_received() {
    every_message_is_received("v3.1.1", 1, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_qos0_every_message_is_received() {
    every_message_is_received("v5", 0, Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_acknowledgements_every_100_ms_every_qos1_message_is_received() {
    every_message_is_received("v5", 1, Duration::from_millis(100)).await;
}
