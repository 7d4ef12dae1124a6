//! Each notifier against a real receiver: an HTTP listener for the webhook (or
//! wiremock, answering by request and counting them, for which replies are
//! retried), the real Mosquitto at 127.0.0.1:1883 for MQTT, the simulator (a
//! protocol-faithful Home Assistant) for the persistent notification and the
//! event.

use crate::support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use ha_ingestor::config::HomeAssistantConfig;
use ha_ingestor::config::alerts::NotifierConfig;
use ha_ingestor::dead_letter::DeadLetters;
use ha_ingestor::feedback::commands::Commands;
use ha_ingestor::monitor::Stats;
use ha_ingestor::monitor::alerts::notify::{self, Notification, Status};
use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use ha_ingestor::source::SourceContext;
use ha_ingestor::source::homeassistant::client;
use serde_json::Value;
use support::wait_for;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn notification(rule: &str, status: Status) -> Notification {
    Notification {
        rule: rule.to_string(),
        severity: "critical",
        status,
        value: Some(312.0),
        summary: "no point written for 5m 12s".into(),
        description: Some("InfluxDB stopped".into()),
        firing_since: Some("2026-11-27T01:02:03Z".into()),
        at: "2026-11-27T01:02:03Z".into(),
    }
}

/// The authorization header and the JSON body of one request.
type Request = (Option<String>, Value);

#[derive(Clone, Default)]
struct Hook {
    /// Requests still to refuse with 503.
    refuse: Arc<Mutex<u32>>,
    /// (authorization header, body) of every request.
    seen: Arc<Mutex<Vec<Request>>>,
}

async fn receive(State(hook): State<Hook>, headers: HeaderMap, body: String) -> StatusCode {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    hook.seen.lock().unwrap().push((auth, json));
    let mut refuse = hook.refuse.lock().unwrap();
    if *refuse > 0 {
        *refuse -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}

/// An HTTP listener on a free port recording every POST to `/hook`.
async fn hook_server(refuse: u32, shutdown: CancellationToken) -> (String, Hook) {
    let hook = Hook::default();
    *hook.refuse.lock().unwrap() = refuse;
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(hook.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .unwrap();
    });
    (format!("http://{addr}/hook"), hook)
}

fn webhook(url: &str, retries: u32) -> NotifierConfig {
    NotifierConfig::Webhook {
        name: "hook".into(),
        url: url.into(),
        headers: BTreeMap::from([("Authorization".into(), "Bearer t0ken".into())]),
        timeout: Duration::from_secs(5),
        retries,
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        tls: Default::default(),
        allow_insecure_transport: false,
    }
}

#[tokio::test]
async fn webhook_posts_json_and_retries_until_accepted() {
    let stop = CancellationToken::new();
    let (url, hook) = hook_server(2, stop.clone()).await;
    let (target, task) = notify::spawn(&webhook(&url, 3), None, stop.clone()).expect("builds");
    target.offer(&notification("no_writes", Status::Firing));
    target.offer(&notification("no_writes", Status::Resolved));
    // Two refusals, then the first is accepted; the second goes through at once.
    let seen = wait_for("four requests", WAIT, || {
        let seen = hook.seen.lock().unwrap().clone();
        async move { (seen.len() >= 4).then_some(seen) }
    })
    .await;
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (auth, _) in &seen {
        assert_eq!(auth.as_deref(), Some("Bearer t0ken"));
    }
    let statuses: Vec<&str> = seen
        .iter()
        .map(|(_, b)| b["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["firing", "firing", "firing", "resolved"]);
    let body = &seen[0].1;
    assert_eq!(body["rule"], "no_writes");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["value"], 312.0);
    assert_eq!(body["summary"], "no point written for 5m 12s");
    assert_eq!(body["description"], "InfluxDB stopped");
    assert_eq!(body["firing_since"], "2026-11-27T01:02:03Z");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn webhook_gives_up_after_its_retries_and_goes_on() {
    let stop = CancellationToken::new();
    // Refuses the first three: with 2 retries the first notification is given up.
    let (url, hook) = hook_server(3, stop.clone()).await;
    let (target, task) = notify::spawn(&webhook(&url, 2), None, stop.clone()).expect("builds");
    target.offer(&notification("a", Status::Firing));
    target.offer(&notification("b", Status::Firing));
    let seen = wait_for("the second notification", WAIT, || {
        let seen = hook.seen.lock().unwrap().clone();
        async move { (seen.len() >= 4).then_some(seen) }
    })
    .await;
    let rules: Vec<&str> = seen
        .iter()
        .map(|(_, b)| b["rule"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(rules, ["a", "a", "a", "b"]);
    stop.cancel();
    task.await.unwrap();
}

/// The rules of the requests `server` received, in order.
async fn rules_received(server: &wiremock::MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            body["rule"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

#[tokio::test]
async fn webhook_never_retries_a_4xx() {
    use wiremock::matchers::{body_partial_json, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    for code in [400u16, 401, 403, 404, 410, 422] {
        let server = MockServer::start().await;
        // `ok` is accepted; every other notification is refused with `code`.
        Mock::given(method("POST"))
            .and(path("/hook"))
            .and(body_partial_json(serde_json::json!({"rule": "ok"})))
            .respond_with(ResponseTemplate::new(204))
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/hook"))
            .respond_with(ResponseTemplate::new(code))
            .with_priority(2)
            .mount(&server)
            .await;
        let stop = CancellationToken::new();
        let url = format!("{}/hook", server.uri());
        let (target, task) = notify::spawn(&webhook(&url, 3), None, stop.clone()).expect("builds");
        target.offer(&notification("a", Status::Firing));
        target.offer(&notification("b", Status::Firing));
        target.offer(&notification("ok", Status::Firing));
        // Delivered in order: once `ok` arrived, `a` and `b` are done with, so a retry of
        // either would be in the list before it.
        let rules = wait_for("the accepted notification", WAIT, || {
            let server = &server;
            async move {
                let rules = rules_received(server).await;
                rules.iter().any(|r| r == "ok").then_some(rules)
            }
        })
        .await;
        assert_eq!(rules, ["a", "b", "ok"], "HTTP {code} was retried");
        stop.cancel();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn webhook_retries_408_and_429() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    for code in [408u16, 429] {
        let server = MockServer::start().await;
        // The first request is refused with `code`, the rest accepted.
        Mock::given(method("POST"))
            .and(path("/hook"))
            .respond_with(ResponseTemplate::new(code))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/hook"))
            .respond_with(ResponseTemplate::new(204))
            .with_priority(2)
            .mount(&server)
            .await;
        let stop = CancellationToken::new();
        let url = format!("{}/hook", server.uri());
        let (target, task) = notify::spawn(&webhook(&url, 3), None, stop.clone()).expect("builds");
        target.offer(&notification("a", Status::Firing));
        target.offer(&notification("b", Status::Firing));
        let rules = wait_for("the second notification", WAIT, || {
            let server = &server;
            async move {
                let rules = rules_received(server).await;
                rules.iter().any(|r| r == "b").then_some(rules)
            }
        })
        .await;
        assert_eq!(rules, ["a", "a", "b"], "HTTP {code} was not retried");
        stop.cancel();
        task.await.unwrap();
    }
}

#[tokio::test]
async fn mqtt_publishes_retained_state_per_rule() {
    use rumqttc::{Event, Packet, QoS};
    let prefix = format!("ha-ingestor-test/alerts-{}", std::process::id());
    let stop = CancellationToken::new();
    let cfg = NotifierConfig::Mqtt {
        name: "broker".into(),
        host: "127.0.0.1".into(),
        port: Some(1883),
        topic: prefix.clone(),
        qos: 1,
        retain: true,
        client_id: format!("ha-ingestor-alerts-test-{}", std::process::id()),
        username: None,
        password: None,
        tls: None,
        allow_insecure_transport: false,
    };
    let (target, task) = notify::spawn(&cfg, None, stop.clone()).expect("builds");
    target.offer(&notification("no_writes", Status::Firing));

    // A subscriber arriving afterwards gets the retained state.
    let topic = format!("{prefix}/no_writes");
    let retained = {
        let topic = topic.clone();
        wait_for("a retained firing state", WAIT, move || {
            let topic = topic.clone();
            async move { retained_message(&topic, "alerts-test-sub").await }
        })
        .await
    };
    assert_eq!(retained.topic, topic);
    let body: Value = serde_json::from_slice(&retained.payload).unwrap();
    assert_eq!(body["rule"], "no_writes");
    assert_eq!(body["status"], "firing");

    // The recovery replaces the retained state.
    target.offer(&notification("no_writes", Status::Resolved));
    let t2 = topic.clone();
    let resolved = wait_for("the retained state to become resolved", WAIT, move || {
        let topic = t2.clone();
        async move {
            let got = retained_message(&topic, "alerts-test-sub2").await?;
            let body: Value = serde_json::from_slice(&got.payload).ok()?;
            (body["status"] == "resolved").then_some(body)
        }
    })
    .await;
    assert_eq!(resolved["rule"], "no_writes");

    // Leave the broker clean: an empty retained message deletes the state.
    let (client, mut events) = mqtt_client(&format!("alerts-test-clean-{}", std::process::id()));
    client
        .publish(&topic, QoS::AtLeastOnce, true, Vec::<u8>::new())
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) | Err(_) = events.poll().await {
                break;
            }
        }
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn home_assistant_gets_a_notification_and_an_event() {
    let sim = Simulator::start(
        SimulatorConfig {
            rate: 5.0,
            ..SimulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let commands = Commands::default();
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(1024);
    let ctx = SourceContext {
        tx,
        stats: stats.clone(),
        dead_letters: Arc::new(DeadLetters::new(dir.path().join("dead-letter"))),
        shutdown: shutdown.clone(),
        cursor_dir: None,
        handoff: ha_ingestor::feedback::handoff::Handoff::new(),
        commands: commands.clone(),
        settled: tokio_util::sync::CancellationToken::new(),
        background: tokio_util::task::TaskTracker::new(),
    };
    let cfg = HomeAssistantConfig::new(sim.url(), "simulator-token".to_string());
    let source = tokio::spawn(client::run(cfg, Arc::from("homeassistant"), ctx));
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });

    let stop = CancellationToken::new();
    let ha_cfg = NotifierConfig::Homeassistant {
        name: "ha".into(),
        notification: true,
        event: true,
        event_type: "ha_ingestor_alert".into(),
        instance: None,
    };
    let (target, task) = notify::spawn(&ha_cfg, Some(&commands), stop.clone()).expect("builds");
    // Queued before the connection is up: sent once subscribed.
    target.offer(&notification("no_writes", Status::Firing));
    let calls = wait_for("call_service", WAIT, || {
        let c = sim.service_commands("call_service");
        async move { (!c.is_empty()).then_some(c) }
    })
    .await;
    assert_eq!(calls[0]["domain"], "persistent_notification");
    assert_eq!(calls[0]["service"], "create");
    let data = &calls[0]["service_data"];
    assert_eq!(data["notification_id"], "ha_ingestor_no_writes");
    assert!(
        data["title"].as_str().unwrap().contains("no_writes"),
        "{data}"
    );
    assert!(
        data["message"]
            .as_str()
            .unwrap()
            .contains("no point written for 5m 12s"),
        "{data}"
    );
    let events = wait_for("fire_event", WAIT, || {
        let c = sim.service_commands("fire_event");
        async move { (!c.is_empty()).then_some(c) }
    })
    .await;
    assert_eq!(events[0]["event_type"], "ha_ingestor_alert");
    assert_eq!(events[0]["event_data"]["rule"], "no_writes");
    assert_eq!(events[0]["event_data"]["status"], "firing");

    // The recovery notice replaces the same notification.
    target.offer(&notification("no_writes", Status::Resolved));
    let events = wait_for("the resolved event", WAIT, || {
        let c = sim.service_commands("fire_event");
        async move { (c.len() >= 2).then_some(c) }
    })
    .await;
    assert_eq!(events[1]["event_data"]["status"], "resolved");
    let calls = sim.service_commands("call_service");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[1]["service_data"]["notification_id"],
        "ha_ingestor_no_writes"
    );
    assert!(
        calls[1]["service_data"]["message"]
            .as_str()
            .unwrap()
            .contains("Resolved")
    );
    // Ingestion went on meanwhile: the connection was never dropped.
    assert!(stats.readiness().ready, "{:?}", stats.readiness());
    assert_eq!(sim.commands_received("subscribe_events"), 1);

    stop.cancel();
    task.await.unwrap();
    shutdown.cancel();
    source.await.unwrap();
    drain.await.unwrap();
    sim.shutdown().await;
}

/// The retained message on `topic`, read by a fresh subscriber (`<client>-<pid>`) within 2 s;
/// `None` when there is none yet (a subscriber that was there before the publish would get it
/// live, not retained: the caller asks again).
async fn retained_message(topic: &str, client: &str) -> Option<rumqttc::Publish> {
    use rumqttc::{Event, Packet, QoS};
    let (client, mut events) = mqtt_client(&format!("{client}-{}", std::process::id()));
    client.subscribe(topic, QoS::AtLeastOnce).await.ok()?;
    let got = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return Some(p),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    let _ = client.disconnect().await;
    got.filter(|p| p.retain)
}

/// A client of the shared broker on 127.0.0.1:1883.
fn mqtt_client(id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", 1883);
    opts.set_keep_alive(Duration::from_secs(5));
    rumqttc::AsyncClient::new(opts, 10)
}
