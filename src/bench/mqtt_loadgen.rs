//! A load generator for the end-to-end MQTT benchmark (`ha-ingestor bench mqtt-publish`):
//! Zigbee2MQTT-style JSON of about 300 bytes on many topics, at a fixed rate or flat out.
//!
//! It runs as its own process so the ingestor's CPU time is measured alone
//! (`scripts/bench-mqtt-e2e`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What to publish.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Messages per second; 0 publishes as fast as the broker acknowledges.
    pub rate: f64,
    /// How long to publish.
    pub seconds: f64,
    /// Devices (topics `<prefix>/device_<n>`), published round-robin.
    pub topics: usize,
    /// 0 or 1.
    pub qos: u8,
    /// Topic prefix.
    pub prefix: String,
    /// Epoch milliseconds of message 0; message `i` carries `last_seen = base_ms + i`.
    pub base_ms: i64,
}

/// What was published.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Messages handed to the client.
    pub published: u64,
    /// QoS 1 acknowledgements from the broker (0 for QoS 0).
    pub acked: u64,
    /// Seconds spent publishing.
    pub seconds: f64,
    /// Bytes of one payload (they all have about this size).
    pub payload_bytes: usize,
}

/// One Zigbee2MQTT-style payload (an Aqara sensor with an OTA block), about 300 bytes.
pub fn payload(i: u64, base_ms: i64) -> String {
    let t = 18.0 + (i % 97) as f64 / 10.0;
    format!(
        concat!(
            r#"{{"battery":{},"humidity":{:.2},"linkquality":{},"pressure":{:.1},"temperature":{:.2},"#,
            r#""voltage":{},"power_outage_count":{},"device_temperature":{},"update_available":false,"#,
            r#""update":{{"state":"idle","installed_version":16777241,"latest_version":16777241}},"#,
            r#""last_seen":{},"seq":{}}}"#
        ),
        60 + i % 40,
        40.0 + (i % 200) as f64 / 10.0,
        80 + i % 120,
        990.0 + (i % 300) as f64 / 10.0,
        t,
        2900 + i % 200,
        i % 7,
        20 + i % 15,
        base_ms + i as i64,
        i
    )
}

/// Publishes per `cfg` and waits (up to 60 s) for the broker's acknowledgement of every QoS 1 message.
pub async fn publish(cfg: &LoadConfig) -> anyhow::Result<LoadReport> {
    // Unique per call too: a second client with the same id would take the session over.
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let id = format!(
        "ha-ingestor-loadgen-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::Relaxed)
    );
    let mut opts = rumqttc::MqttOptions::new(id, cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 10_000);
    let acked = Arc::new(AtomicU64::new(0));
    let counter = acked.clone();
    let poller = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(message = "Load generator connection error.", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let qos = if cfg.qos == 0 {
        rumqttc::QoS::AtMostOnce
    } else {
        rumqttc::QoS::AtLeastOnce
    };
    let topics: Vec<String> = (0..cfg.topics.max(1))
        .map(|n| format!("{}/device_{n:04}", cfg.prefix))
        .collect();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(cfg.seconds);
    let mut i = 0u64;
    let tick = Duration::from_millis(5);
    let mut next = tokio::time::Instant::now();
    while Instant::now() < end {
        let due = if cfg.rate > 0.0 {
            next += tick;
            tokio::time::sleep_until(next).await;
            ((start.elapsed().as_secs_f64() * cfg.rate) as u64).saturating_sub(i)
        } else {
            1000
        };
        for _ in 0..due {
            let topic = topics[(i % topics.len() as u64) as usize].clone();
            client
                .publish(topic, qos, false, payload(i, cfg.base_ms))
                .await?;
            i += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if cfg.qos > 0 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::Relaxed) < i && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        // QoS 0 has no acknowledgement: give the client a moment to write what it holds.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    poller.abort();
    Ok(LoadReport {
        published: i,
        acked: acked.load(Ordering::Relaxed),
        seconds,
        payload_bytes: payload(0, cfg.base_ms).len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_zigbee_sized_json() {
        let p = payload(12345, 1_780_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&p).expect("valid JSON");
        assert_eq!(v["seq"], 12345);
        assert_eq!(v["last_seen"], 1_780_000_012_345i64);
        assert!((250..=330).contains(&p.len()), "{} bytes", p.len());
    }
}
