//! Config reload on SIGHUP: `ha-ingestor run` as a process, a private Mosquitto and a real
//! influxd. A subscription added to the file and signalled starts giving points, a removed
//! one stops, on the same connection (connect count 1, no reconnect); a setting that needs
//! a new connection is named in a "needs restart" warning.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::mosquitto::{Mosquitto, Settings};
use support::{Influxd, Running, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

fn write_config(
    path: &Path,
    data: &Path,
    influx: &Influxd,
    port: u16,
    monitor: u16,
    subs: &[&str],
    keep_alive: &str,
) {
    let mut text = format!(
        r#"
data_dir = "{data}"
[log]
level = "info"
[monitor]
listen = "127.0.0.1:{monitor}"
[schema]
override_measurement = "rl"
[influxdb]
url = "{url}"
database = "{db}"
flush_interval = "100ms"
[[mqtt]]
url = "mqtt://127.0.0.1:{port}"
keep_alive = "{keep_alive}"
"#,
        data = data.display(),
        url = influx.url(),
        db = influx.database(),
    );
    for s in subs {
        text.push_str(&format!(
            r#"
[[mqtt.subscriptions]]
name = "{s}"
topic = "r{s}/#"
decoder = "json"
pattern = "r{s}/{{device}}"
split = "per_device"
state_key = "v"
"#
        ));
    }
    std::fs::write(path, text).expect("write the config");
}

fn publish(port: u16, topic: &str, v: i64) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", &format!(r#"{{"v":{v}}}"#)])
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success(), "mosquitto_pub {topic}");
}

fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

async fn wait_log(log: &Path, needle: &str, n: usize) {
    wait_for(&format!("{n}× {needle:?} in the log"), DEADLINE, || {
        let c = log_count(log, needle);
        async move { (c >= n).then_some(()) }
    })
    .await;
}

/// (entity_id, value) of every stored point.
async fn points(influx: &Influxd) -> Vec<(String, i64)> {
    let mut p: Vec<(String, i64)> = influx
        .rows("rl")
        .await
        .iter()
        .map(|r| {
            (
                r["entity_id"].as_str().unwrap_or_default().to_string(),
                r["value"].as_f64().unwrap_or(-1.0) as i64,
            )
        })
        .collect();
    p.sort();
    p
}

async fn wait_point(influx: &Influxd, entity: &str, v: i64) -> Vec<(String, i64)> {
    wait_for(&format!("point {entity}={v}"), DEADLINE, || async {
        let p = points(influx).await;
        p.contains(&(entity.to_string(), v)).then_some(p)
    })
    .await
}

/// Sum of a metric's samples whose line contains every `filter`.
async fn metric(monitor: u16, name: &str, filter: &str) -> f64 {
    let text = support::influxd::http_client()
        .get(format!("http://127.0.0.1:{monitor}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_subscriptions_on_the_live_connection() {
    let influx = Influxd::start("mqtt_reload").await;
    let broker = Mosquitto::start(Settings::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, log) = (dir.path().join("ingestor.toml"), dir.path().join("run.log"));
    let data = dir.path().join("data");
    let monitor = free_port();
    let port = broker.port();
    write_config(&config, &data, &influx, port, monitor, &["a"], "30s");
    let mut run = Running::launch(&config).log(&log).spawn();
    let subscribed = "The broker confirmed a subscription.";
    wait_log(&log, subscribed, 1).await;

    // Only `ra/#` is subscribed.
    publish(port, "rb/b1", 1);
    publish(port, "ra/a1", 2);
    wait_point(&influx, "a1", 2).await;

    // Add `rb/#`: SIGHUP, the broker confirms the new filter, its messages become points.
    write_config(&config, &data, &influx, port, monitor, &["a", "b"], "30s");
    run.signal(libc::SIGHUP);
    wait_log(&log, subscribed, 2).await;
    publish(port, "rb/b1", 3);
    publish(port, "ra/a1", 4);
    wait_point(&influx, "b1", 3).await;
    wait_point(&influx, "a1", 4).await;

    // Remove `ra/#` (and change a setting that needs a new connection).
    write_config(&config, &data, &influx, port, monitor, &["b"], "45s");
    run.signal(libc::SIGHUP);
    wait_log(&log, "The broker confirmed an unsubscription.", 1).await;
    publish(port, "ra/a1", 5);
    publish(port, "rb/b1", 6);
    // The broker delivers in order: once b1=6 is stored, a1=5 would have been too.
    let stored = wait_point(&influx, "b1", 6).await;
    assert_eq!(
        stored,
        vec![
            ("a1".to_string(), 2),
            ("a1".to_string(), 4),
            ("b1".to_string(), 3),
            ("b1".to_string(), 6)
        ],
        "nothing from before a subscription or after its removal"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("need a restart") && text.contains("keep_alive"),
        "{text}"
    );

    // One connection throughout, and nothing set aside as unmatched.
    let source = "source=\"mqtt:mqtt\"";
    assert_eq!(
        metric(monitor, "ha_ingestor_source_connects_total", source).await,
        1.0
    );
    assert_eq!(
        metric(monitor, "ha_ingestor_source_reconnects_total", source).await,
        0.0
    );
    assert_eq!(
        metric(
            monitor,
            "ha_ingestor_mqtt_received_messages_total",
            "subscription=\"unmatched\""
        )
        .await,
        0.0
    );

    let status = run.stop().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}
