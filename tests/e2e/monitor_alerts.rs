//! End to end: the simulator → ha-ingestor → a real `influxd`; InfluxDB is
//! stopped while ha-ingestor runs, the `no_writes` alert fires to a webhook and
//! to Home Assistant (the simulator records the service call and the event);
//! InfluxDB comes back and the alert resolves, both notified again.
//!
//! The metrics registry the rules read is per process, and other tests' topologies
//! writing points would keep the rule from firing: the test runs alone in a process of
//! its own (`support::alone`).

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ha_ingestor::app;
use ha_ingestor::config::alerts::{AlertsConfig, Condition, NotifierConfig, RuleConfig, Severity};
use ha_ingestor::config::{Config, HomeAssistantConfig, InfluxConfig, MonitorConfig};
use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use serde_json::Value;
use support::influxd::Influxd;
use support::wait_for;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

type Bodies = Arc<Mutex<Vec<Value>>>;

async fn receive(State(bodies): State<Bodies>, body: String) -> StatusCode {
    if let Ok(v) = serde_json::from_str(&body) {
        bodies.lock().unwrap().push(v);
    }
    StatusCode::OK
}

fn statuses(bodies: &Bodies) -> Vec<String> {
    bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b["rule"] == "influx_silent")
        .map(|b| b["status"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn ha_event_statuses(sim: &ha_ingestor::simulator::SimulatorHandle) -> Vec<String> {
    sim.service_commands("fire_event")
        .iter()
        .filter(|c| {
            c["event_type"] == "ha_ingestor_alert" && c["event_data"]["rule"] == "influx_silent"
        })
        .map(|c| {
            c["event_data"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn alert_state(client: &reqwest::Client, url: &str) -> Option<Value> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    let body: Value = serde_json::from_str(&text).ok()?;
    body["rules"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == "influx_silent")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxdb_outage_fires_and_resolves_an_alert_to_the_webhook_and_home_assistant() {
    if !support::alone::in_own_process(concat!(
        module_path!(),
        "::influxdb_outage_fires_and_resolves_an_alert_to_the_webhook_and_home_assistant"
    ))
    .await
    {
        return;
    }
    ha_ingestor::ensure_crypto_provider();
    let mut influx = Influxd::start("alerts").await;
    let sim = Simulator::start(
        SimulatorConfig {
            rate: 50.0,
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");

    // The webhook receiver.
    let bodies: Bodies = Arc::default();
    let stop_hook = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app_hook = Router::new()
        .route("/hook", post(receive))
        .with_state(bodies.clone());
    let stop = stop_hook.clone();
    let hook_task = tokio::spawn(async move {
        axum::serve(listener, app_hook)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .unwrap();
    });

    let data = tempfile::tempdir().unwrap();
    let mut influx_cfg = InfluxConfig::v1(influx.url(), "alerts");
    influx_cfg.flush_interval = Duration::from_millis(200);
    influx_cfg.retry_min = Duration::from_millis(100);
    influx_cfg.retry_max = Duration::from_millis(500);
    influx_cfg.timeout = Duration::from_secs(2);
    let cfg = Config {
        data_dir: data.path().to_path_buf(),
        homeassistant: vec![HomeAssistantConfig::new(
            sim.url(),
            "simulator-token".to_string(),
        )],
        influxdb: Some(influx_cfg),
        monitor: MonitorConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..MonitorConfig::default()
        },
        alerts: AlertsConfig {
            interval: Duration::from_millis(250),
            builtin_rules: false,
            rules: vec![RuleConfig {
                name: "influx_silent".into(),
                condition: Condition::NoWrites {
                    after: Duration::from_secs(2),
                },
                for_: Duration::from_millis(500),
                resolve_after: Duration::from_secs(1),
                severity: Severity::Critical,
                notifiers: None,
                recovery: true,
                description: Some("InfluxDB accepts no points".into()),
            }],
            notifiers: vec![
                NotifierConfig::Webhook {
                    name: "hook".into(),
                    url: hook_url,
                    headers: Default::default(),
                    timeout: Duration::from_secs(2),
                    retries: 3,
                    retry_min: Duration::from_millis(100),
                    retry_max: Duration::from_millis(500),
                    tls: Default::default(),
                    allow_insecure_transport: false,
                },
                NotifierConfig::Homeassistant {
                    name: "ha".into(),
                    notification: true,
                    event: true,
                    event_type: "ha_ingestor_alert".into(),
                    instance: None,
                },
            ],
            ..AlertsConfig::default()
        },
        ..Config::default()
    };
    cfg.validate().expect("valid config");
    let running = app::start(&cfg).await.expect("starts");
    let alerts_url = format!("http://{}/alerts", running.monitor_addr().unwrap());
    let client = reqwest::Client::new();

    // Writing: the rule is inactive.
    wait_for("points in InfluxDB", WAIT, || async {
        (influx.point_count().await > 0).then_some(())
    })
    .await;
    let rule = alert_state(&client, &alerts_url)
        .await
        .expect("rule listed");
    assert_eq!(rule["state"], "inactive", "{rule}");
    assert!(statuses(&bodies).is_empty());

    // InfluxDB goes away: pending, then firing, to both notifiers.
    influx.stop();
    let rule = wait_for("the alert to fire", WAIT, || async {
        alert_state(&client, &alerts_url)
            .await
            .filter(|r| r["state"] == "firing")
    })
    .await;
    assert!(rule["since"].is_string(), "{rule}");
    assert!(rule["value"].as_f64().is_some_and(|v| v >= 2.0), "{rule}");
    wait_for("the webhook's firing notice", WAIT, || {
        let s = statuses(&bodies);
        async move { (s == ["firing"]).then_some(()) }
    })
    .await;
    let body = bodies.lock().unwrap()[0].clone();
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["description"], "InfluxDB accepts no points");
    assert!(
        body["summary"]
            .as_str()
            .unwrap()
            .contains("no point written")
    );
    wait_for("Home Assistant's firing event", WAIT, || {
        let s = ha_event_statuses(&sim);
        async move { (s == ["firing"]).then_some(()) }
    })
    .await;
    let notes = sim.service_commands("call_service");
    assert!(
        notes
            .iter()
            .any(|c| c["domain"] == "persistent_notification"
                && c["service_data"]["notification_id"] == "ha_ingestor_influx_silent"),
        "{notes:?}"
    );
    // Ingestion went on: events are still received (into the durable buffer).
    let received = running.stats().totals().received;
    wait_for("events still flowing", WAIT, || {
        let now = running.stats().totals().received;
        async move { (now > received + 20).then_some(()) }
    })
    .await;

    // InfluxDB is back: the buffer is delivered and the alert resolves.
    influx.restart().await;
    wait_for("the alert to resolve", WAIT, || async {
        alert_state(&client, &alerts_url)
            .await
            .filter(|r| r["state"] == "inactive")
    })
    .await;
    wait_for("the webhook's recovery notice", WAIT, || {
        let s = statuses(&bodies);
        async move { (s == ["firing", "resolved"]).then_some(()) }
    })
    .await;
    wait_for("Home Assistant's recovery event", WAIT, || {
        let s = ha_event_statuses(&sim);
        async move { (s == ["firing", "resolved"]).then_some(()) }
    })
    .await;

    // The end-to-end latency and the process metrics are served at /metrics.
    let metrics_url = format!("http://{}/metrics", running.monitor_addr().unwrap());
    let text = client
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ha_ingestor_sink_end_to_end_latency_seconds_count{sink=\"influxdb\"}",
        "ha_ingestor_process_resident_memory_bytes",
        "ha_ingestor_process_open_fds",
        "ha_ingestor_process_cpu_seconds_total",
        "ha_ingestor_alert_firing{rule=\"influx_silent\",severity=\"critical\"} 0",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }

    let totals = running.stop().await;
    assert_eq!(totals.dropped, 0, "{totals:?}");
    stop_hook.cancel();
    hook_task.await.unwrap();
    sim.shutdown().await;
}
