//! No loss from MQTT to InfluxDB: 10,000 QoS 1 messages published by a real client
//! while the broker restarts and while ha-ingestor restarts, every one a point.

use crate::support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ha_ingestor::app;
use ha_ingestor::config::Config;
use support::mosquitto::{Mosquitto, Settings};
use support::{Influxd, wait_for};

const MESSAGES: u64 = 10_000;
/// Epoch milliseconds of message 0; message `i` carries `BASE_MS + i` as its own timestamp.
const BASE_MS: i64 = 1_780_000_000_000;

fn config(data: &Path, influx: &Influxd, port: u16, topic: &str) -> Config {
    let text = format!(
        r#"
data_dir = "{data}"
[monitor]
enabled = false
[schema]
override_measurement = "nl"
[influxdb]
url = "{url}"
database = "{db}"
flush_interval = "100ms"
[[mqtt]]
url = "mqtt://127.0.0.1:{port}"
reconnect_min = "100ms"
reconnect_max = "500ms"
[[mqtt.subscriptions]]
name = "nl"
topic = "{topic}"
decoder = "json"
pattern = "nl/{{device}}"
split = "per_device"
state_key = "v"
timestamp = "ts"
timestamp_format = "epoch_millis"
"#,
        data = data.display(),
        url = influx.url(),
        db = influx.database(),
    );
    Config::from_toml_with_env(&text, Path::new("test.toml"), &[]).expect("test config is valid")
}

/// Waits until the MQTT source reports connected.
async fn wait_connected(running: &app::Running) {
    wait_source_connected(running, "mqtt:mqtt").await;
}

/// Waits until the named source reports connected.
async fn wait_source_connected(running: &app::Running, name: &str) {
    let stats = running.stats();
    wait_for(
        "the MQTT source to connect",
        Duration::from_secs(20),
        || {
            let ready = stats.readiness();
            async move {
                ready
                    .sources
                    .get(name)
                    .is_some_and(|s| s.connected)
                    .then_some(())
            }
        },
    )
    .await;
}

/// A real publisher with a persistent session: resends what the broker has not acknowledged.
struct Publisher {
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    poller: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Publishes `MESSAGES` QoS 1 messages, 20 every 5 ms (about 4,000/s), to `nl/dev<i % 10>`.
    fn start(port: u16) -> Publisher {
        Publisher::start_n(port, MESSAGES)
    }

    /// Publishes `n` (a multiple of 20) QoS 1 messages like [`Publisher::start`].
    fn start_n(port: u16, n: u64) -> Publisher {
        let mut opts = rumqttc::MqttOptions::new("nl-publisher", "127.0.0.1", port);
        opts.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5))
            .set_inflight(100);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 1000);
        let acked = Arc::new(AtomicU64::new(0));
        let counter = acked.clone();
        let poller = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    // The broker restarts: try again shortly (pending messages are resent).
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for batch in 0..n / 20 {
                tick.tick().await;
                for j in 0..20 {
                    let i = batch * 20 + j;
                    let payload = format!(r#"{{"v":{i},"ts":{}}}"#, BASE_MS + i as i64);
                    client
                        .publish(
                            format!("nl/dev{}", i % 10),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            payload,
                        )
                        .await
                        .expect("the publisher's request channel is open");
                }
            }
        });
        Publisher {
            acked,
            task,
            poller,
        }
    }

    async fn wait_acked(&self, n: u64) {
        eprintln!(
            "publisher: waiting for {n} acks, have {}",
            self.acked.load(Ordering::Relaxed)
        );
        let acked = self.acked.clone();
        wait_for(
            &format!("{n} publisher acknowledgements"),
            Duration::from_secs(60),
            || {
                let v = acked.load(Ordering::Relaxed);
                async move { (v >= n).then_some(()) }
            },
        )
        .await;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
        self.poller.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_qos1_messages_survive_a_broker_restart_and_an_ingestor_restart() {
    ha_ingestor::ensure_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let influx = Influxd::start("mqtt_no_loss").await;
    let mut broker = Mosquitto::start(Settings {
        persistence: true,
        // The session of a restarting ha-ingestor must be able to queue a few seconds of traffic.
        max_queued_messages: Some(0),
        ..Settings::default()
    });
    let data = tempfile::tempdir().expect("tempdir");
    let cfg = config(data.path(), &influx, broker.port(), "nl/#");
    let running = app::start(&cfg).await.expect("starts with only [[mqtt]]");
    wait_connected(&running).await;

    let publisher = Publisher::start(broker.port());
    publisher.wait_acked(3_000).await;
    // (a) The broker restarts midway (SIGTERM: it saves sessions and queued messages).
    let broker = tokio::task::spawn_blocking(move || {
        broker.restart();
        broker
    })
    .await
    .expect("broker restart");
    publisher.wait_acked(6_000).await;
    // (b) ha-ingestor restarts midway: the broker keeps its session and queues meanwhile.
    let first = running.stop().await;
    assert_eq!(first.dropped, 0, "{first:?}");
    let running = app::start(&cfg).await.expect("restarts");
    wait_connected(&running).await;
    publisher.wait_acked(MESSAGES).await;

    let rows = influx
        .wait_rows("nl", MESSAGES as usize, Duration::from_secs(90))
        .await;
    let totals = running.stop().await;
    let values: BTreeSet<i64> = rows
        .iter()
        .map(|r| r["value"].as_f64().expect("numeric value") as i64)
        .collect();
    assert_eq!(rows.len() as u64, MESSAGES, "exactly one point per message");
    assert_eq!(values, (0..MESSAGES as i64).collect::<BTreeSet<_>>());
    for r in &rows {
        let v = r["value"].as_f64().expect("value") as i64;
        let time = r["time"].as_i64().expect("time in ns");
        assert_eq!(
            time,
            (BASE_MS + v) * 1_000_000,
            "point {v} carries its own timestamp"
        );
        assert_eq!(r["entity_id"], format!("dev{}", v % 10), "{r:?}");
    }
    assert_eq!(totals.dropped, 0, "{totals:?}");
    assert_eq!(totals.decode_errors, 0, "{totals:?}");
    drop(broker);
}

/// The scale-out path: two ha-ingestor processes (own data directories, so own client
/// ids) share `$share/ingest/nl/#`; the broker splits the messages between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_a_shared_subscription_without_duplicates_or_loss() {
    const N: u64 = 2_000;
    ha_ingestor::ensure_crypto_provider();
    let influx = Influxd::start("mqtt_shared").await;
    let broker = Mosquitto::start(Settings::default());
    let (d1, d2) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let a = config(d1.path(), &influx, broker.port(), "$share/ingest/nl/#");
    let b = config(d2.path(), &influx, broker.port(), "$share/ingest/nl/#");
    let one = app::start(&a).await.expect("first instance starts");
    let two = app::start(&b).await.expect("second instance starts");
    wait_connected(&one).await;
    wait_connected(&two).await;
    // Subscriptions are acknowledged before messages flow: wait for both SUBACKs' effect
    // by publishing only once both report connected (the SUBSCRIBE follows CONNACK at once).
    let publisher = Publisher::start_n(broker.port(), N);
    publisher.wait_acked(N).await;
    let rows = influx
        .wait_rows("nl", N as usize, Duration::from_secs(60))
        .await;
    let (t1, t2) = (one.stop().await, two.stop().await);
    let values: BTreeSet<i64> = rows
        .iter()
        .map(|r| r["value"].as_f64().expect("numeric value") as i64)
        .collect();
    assert_eq!(rows.len() as u64, N);
    assert_eq!(values, (0..N as i64).collect::<BTreeSet<_>>());
    // None received twice, none lost, and both took a share.
    assert_eq!(t1.received + t2.received, N, "{t1:?} {t2:?}");
    assert!(t1.received > 0 && t2.received > 0, "{t1:?} {t2:?}");
}

/// MQTT 3.1.1, where ha-ingestor writes each run of PUBACKs itself in one socket write:
/// with Mosquitto's in-flight window of 20 messages for 3.1.1 clients, 2,000 messages
/// only arrive if every acknowledgement reaches the broker, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt311_acknowledgements_keep_the_window_moving() {
    const N: u64 = 2_000;
    ha_ingestor::ensure_crypto_provider();
    let influx = Influxd::start("mqtt_v311_acks").await;
    let broker = Mosquitto::start(Settings {
        max_inflight_messages: Some(20),
        ..Settings::default()
    });
    let data = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(data.path(), &influx, broker.port(), "nl/#");
    cfg.mqtt[0].protocol = ha_ingestor::config::MqttProtocol::V311;
    let running = app::start(&cfg).await.expect("starts");
    wait_connected(&running).await;
    let publisher = Publisher::start_n(broker.port(), N);
    publisher.wait_acked(N).await;
    let rows = influx
        .wait_rows("nl", N as usize, Duration::from_secs(60))
        .await;
    let totals = running.stop().await;
    let values: BTreeSet<i64> = rows
        .iter()
        .map(|r| r["value"].as_f64().expect("numeric value") as i64)
        .collect();
    assert_eq!(values, (0..N as i64).collect::<BTreeSet<_>>());
    // Each delivered once: an acknowledgement the broker missed would bring a redelivery.
    assert_eq!(totals.received, N, "{totals:?}");
}
