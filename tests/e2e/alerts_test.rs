//! `ha-ingestor alerts test`: one test notification through each configured notifier —
//! a webhook (a local HTTP endpoint), MQTT (the machine's Mosquitto, received by a
//! subscriber) and Home Assistant (the simulator records the service call and the
//! event) — one line per notifier on stdout, one audit line per notifier, and a
//! notifier that cannot be reached fails with a clear error and exit code 1.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use rumqttc::{Event, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::audit_lines;

const WAIT: Duration = Duration::from_secs(30);

/// Runs `ha-ingestor alerts test --config CONFIG EXTRA…` off the async runtime.
async fn alerts_test(config: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    cmd.args(["alerts", "test", "--config"])
        .arg(config)
        .args(extra);
    tokio::task::spawn_blocking(move || cmd.output().expect("run ha-ingestor"))
        .await
        .expect("join")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Subscribes to `topic` on 127.0.0.1:1883; returns once the broker confirmed, with the messages to come.
async fn subscribe(topic: &str, id: &str) -> mpsc::Receiver<(String, Vec<u8>, bool)> {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 10);
    client
        .subscribe(topic, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (subscribed_tx, subscribed) = oneshot::channel();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _client = client; // kept alive with the loop
        let mut subscribed_tx = Some(subscribed_tx);
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let message = (p.topic.clone(), p.payload.to_vec(), p.retain);
                    if tx.send(message).await.is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("SUBACK within the deadline")
        .expect("subscriber running");
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_notifier_gets_one_test_notification_and_each_is_audited() {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&hook)
        .await;
    let token = "alerts-test-token";
    let sim = Simulator::start(
        SimulatorConfig {
            token: token.into(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator");
    let prefix = format!("ha-ingestor-test/alerts-cli-{}", std::process::id());
    let mut received = subscribe(
        &format!("{prefix}/#"),
        &format!("alerts-cli-sub-{}", std::process::id()),
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
[homeassistant]
url = "{ha}"
token = "{token}"
[[alerts.notifiers]]
type = "webhook"
name = "hook"
url = "{hook}/hook"
[[alerts.notifiers]]
type = "mqtt"
name = "broker"
host = "127.0.0.1"
port = 1883
topic = "{prefix}"
client_id = "alerts-cli-pub-{pid}"
[[alerts.notifiers]]
type = "homeassistant"
name = "home"
"#,
            ha = sim.url(),
            hook = hook.uri(),
            pid = std::process::id(),
        ),
    )
    .expect("config");

    let out = alerts_test(&config, &[]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    for line in [
        "notifier hook (webhook): ok",
        "notifier broker (mqtt): ok",
        "notifier home (homeassistant): ok",
    ] {
        assert!(stdout.contains(line), "{line:?} missing: {stdout}");
    }

    // The webhook got the test notification.
    let posts = hook.received_requests().await.expect("recorded requests");
    assert_eq!(posts.len(), 1, "one POST, no retries");
    let body: Value = serde_json::from_slice(&posts[0].body).expect("JSON body");
    assert_eq!(body["rule"], "notifier_test");
    assert_eq!(body["severity"], "info");
    // The subscriber got it on `<topic>/notifier_test`, not retained.
    let (topic, payload, retain) = tokio::time::timeout(WAIT, received.recv())
        .await
        .expect("the MQTT test message within the deadline")
        .expect("subscriber running");
    assert_eq!(topic, format!("{prefix}/notifier_test"));
    assert!(!retain, "a test leaves no retained message");
    let body: Value = serde_json::from_slice(&payload).expect("JSON payload");
    assert_eq!(body["rule"], "notifier_test");
    // Home Assistant got the persistent notification and the event.
    let calls = sim.service_commands("call_service");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["domain"], "persistent_notification");
    assert_eq!(
        calls[0]["service_data"]["notification_id"],
        "ha_ingestor_notifier_test"
    );
    let events = sim.service_commands("fire_event");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event_type"], "ha_ingestor_alert");

    // One audit line per notifier: who, when, which, and that it worked.
    let lines = audit_lines(&data);
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut notifiers: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["action"], "alerts test", "{l}");
            assert_eq!(l["result"], "ok", "{l}");
            assert_eq!(l["uid"], uid, "{l}");
            assert!(l["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
            assert_eq!(l["what"]["rule"], "notifier_test", "{l}");
            (
                l["what"]["notifier"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                l["what"]["type"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    notifiers.sort();
    assert_eq!(
        notifiers,
        [
            ("broker".to_string(), "mqtt".to_string()),
            ("home".to_string(), "homeassistant".to_string()),
            ("hook".to_string(), "webhook".to_string()),
        ]
    );
    assert!(
        !std::fs::read_to_string(data.join("audit.log"))
            .expect("read")
            .contains(token)
    );
    sim.shutdown().await;
}

/// A port nothing listens on (bound, then released).
fn refused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_notifier_fails_clearly_and_is_audited_as_an_error() {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let sim = Simulator::start(
        SimulatorConfig {
            token: "the-right-token".into(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator");
    let (dead_hook, dead_broker) = (refused_port(), refused_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = {data:?}
[homeassistant]
url = "{ha}"
token = "a-wrong-token"
[[alerts.notifiers]]
type = "webhook"
name = "good"
url = "{hook}/hook"
[[alerts.notifiers]]
type = "webhook"
name = "dead_hook"
url = "http://127.0.0.1:{dead_hook}/hook"
[[alerts.notifiers]]
type = "mqtt"
name = "dead_broker"
host = "127.0.0.1"
port = {dead_broker}
[[alerts.notifiers]]
type = "homeassistant"
name = "home"
"#,
            ha = sim.url(),
            hook = hook.uri(),
        ),
    )
    .expect("config");

    let out = alerts_test(&config, &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("notifier good (webhook): ok"), "{stdout}");
    for (name, why) in [
        (
            "notifier dead_hook (webhook): FAILED:",
            "Connection refused",
        ),
        ("notifier dead_broker (mqtt): FAILED:", "Connection refused"),
        (
            "notifier home (homeassistant): FAILED:",
            "token was refused",
        ),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name:?} missing: {stdout}"));
        assert!(line.contains(why), "{line}");
    }
    assert!(!stdout.contains("a-wrong-token"), "{stdout}");
    let lines = audit_lines(&data);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for line in &lines {
        let ok = line["what"]["notifier"] == "good";
        assert_eq!(line["result"], if ok { "ok" } else { "error" }, "{line}");
        assert_eq!(line["error"].is_string(), !ok, "{line}");
    }

    // --notifier tests that one alone.
    let out = alerts_test(&config, &["--notifier", "good"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "notifier good (webhook): ok");
    assert_eq!(audit_lines(&data).len(), 5);
    // An unknown name is an error naming the configured ones; nothing is sent or audited.
    let out = alerts_test(&config, &["--notifier", "nope"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("\"nope\"") && stderr.contains("good, dead_hook, dead_broker, home"),
        "{stderr}"
    );
    assert_eq!(audit_lines(&data).len(), 5);
    assert_eq!(hook.received_requests().await.expect("requests").len(), 2);
    sim.shutdown().await;
}
