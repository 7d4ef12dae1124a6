//! The floor of the MQTT path (`ha-ingestor bench mqtt-consume`): the source's own
//! connection ([`Conn`], rumqttc underneath) reading and acknowledging as the source
//! does (batched reads; acknowledgements after each batch, or in the source's rhythm
//! with [`FloorConfig::ack_every`]), with no decoding, pipeline, buffer or InfluxDB. Its CPU per message, beside `mosquitto_sub`'s and the whole
//! ingestor's on the same load (`scripts/bench-mqtt-reference --client floor`), tells
//! what the client library and runtime cost apart from everything after them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::config::MqttConfig;
use crate::source::mqtt::conn::{Conn, Polled};

/// What to read.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Subscription filter.
    pub topic: String,
    /// 0, 1 or 2.
    pub qos: u8,
    /// `v5` or `v3.1.1`, as in `[[mqtt]] protocol`.
    pub protocol: String,
    /// Stop once this long passes without a message (after the first one).
    pub idle: Duration,
    /// Acknowledge at most this often (zero: after every read batch). The source
    /// acknowledges once the buffer's group commit made messages durable, every
    /// 20–100 ms; this gives the floor the same rhythm.
    pub ack_every: Duration,
}

/// What was read, and the CPU it cost.
#[derive(Debug, Clone, Serialize)]
pub struct FloorReport {
    /// Messages received.
    pub received: u64,
    /// Process CPU seconds from the first message until the end (the idle wait adds next to nothing).
    pub cpu_seconds: f64,
    /// `cpu_seconds` per message, in µs.
    pub micros_per_message: f64,
}

/// Messages taken per batch before acknowledging, as the source does.
const BATCH: usize = 512;

/// Subscribes, calls `subscribed` once the broker confirms, and reads until idle.
pub async fn consume(
    cfg: &FloorConfig,
    mut subscribed: impl FnMut(),
) -> anyhow::Result<FloorReport> {
    let mqtt: MqttConfig = toml::from_str(&format!(
        "name = \"floor\"\nurl = \"mqtt://{}:{}\"\nprotocol = \"{}\"\nclean_session = true\n",
        cfg.host, cfg.port, cfg.protocol
    ))
    .context("broker settings")?;
    // Unique per call too: a second client with the same id would take the session over.
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let id = format!(
        "ha-ingestor-floor-{}-{}",
        std::process::id(),
        CLIENTS.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = Conn::new(&mqtt, &id, &cfg.host, cfg.port, None);
    let mut received = 0u64;
    let mut cpu_start = None;
    let mut unacked: Vec<(u16, u8)> = Vec::with_capacity(BATCH);
    let mut pkids: Vec<u16> = Vec::with_capacity(BATCH);
    let mut last_ack = tokio::time::Instant::now();
    let lost = |e| anyhow::anyhow!("connection to {}:{} lost: {e}", cfg.host, cfg.port);
    loop {
        let wait = if unacked.is_empty() {
            cfg.idle
        } else {
            cfg.ack_every.saturating_sub(last_ack.elapsed())
        };
        let mut next = match tokio::time::timeout(wait, conn.poll()).await {
            Err(_) if !unacked.is_empty() => None,
            Err(_) if received > 0 => break,
            Err(_) => continue,
            Ok(polled) => Some(polled.map_err(lost)?),
        };
        let mut n = 0;
        while let Some(polled) = next.take() {
            match polled {
                Polled::Publish(r) => {
                    if cpu_start.is_none() {
                        cpu_start = crate::monitor::process::sample().cpu_seconds;
                    }
                    received += 1;
                    if r.qos > 0 {
                        unacked.push((r.pkid, r.qos));
                    }
                }
                Polled::ConnAck { .. } => conn
                    .subscribe(&[(cfg.topic.clone(), cfg.qos)])
                    .map_err(|e| anyhow::anyhow!("subscribe: {e}"))?,
                Polled::SubAck(_) => subscribed(),
                Polled::UnsubAck | Polled::Other => {}
            }
            n += 1;
            if n < BATCH {
                next = conn.ready().transpose().map_err(lost)?;
            }
        }
        if unacked.is_empty() || last_ack.elapsed() < cfg.ack_every {
            continue;
        }
        last_ack = tokio::time::Instant::now();
        // As the source does: QoS 1 in one write where the protocol allows it, the rest queued.
        let direct = conn.direct_pubacks();
        pkids.clear();
        for &(pkid, qos) in &unacked {
            if direct && qos == 1 {
                pkids.push(pkid);
            } else if !conn.ack(pkid, qos) {
                bail!("the client's request queue is full");
            }
        }
        if !pkids.is_empty() {
            conn.write_pubacks(&pkids, Duration::from_secs(5)).await;
        }
        unacked.clear();
    }
    let cpu_seconds = match (cpu_start, crate::monitor::process::sample().cpu_seconds) {
        (Some(a), Some(b)) => b - a,
        _ => bail!("cannot read this process's CPU time from /proc/self/stat"),
    };
    conn.disconnect();
    Ok(FloorReport {
        received,
        cpu_seconds,
        micros_per_message: cpu_seconds / received.max(1) as f64 * 1e6,
    })
}
