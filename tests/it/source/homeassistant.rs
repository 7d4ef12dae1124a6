//! The Home Assistant WebSocket source: recorded frames, and the client against
//! the simulator over real sockets on 127.0.0.1.

use crate::support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::config::HomeAssistantConfig;
use ha_ingestor::dead_letter::DeadLetters;
use ha_ingestor::event::{Event, EventKind, SourceId, Timestamp};
use ha_ingestor::feedback::handoff::{Handoff, Marks};
use ha_ingestor::monitor::Stats;
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use ha_ingestor::source::SourceContext;
use ha_ingestor::source::homeassistant::client::{self, ClientError};
use ha_ingestor::source::homeassistant::decode::{ServerMessage, decode_frame};
use ha_ingestor::source::homeassistant::protocol::ServerReply;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token";
const WAIT: Duration = Duration::from_secs(20);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fixtures")
        .join(name)
}

fn source() -> SourceId {
    SourceId::from("homeassistant")
}

/// Polls `cond` until it holds or [`WAIT`] passes; returns whether it held.
async fn wait_for(cond: impl FnMut() -> bool) -> bool {
    support::holds_within(WAIT, cond).await
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Events as the simulator records them carry source `simulator`; compare without it.
fn normalise(mut e: Event) -> Event {
    e.source = SourceId::from("simulator");
    // The client stamps its own delivery marks; they are not part of what HA sent.
    assert!(!e.meta.mark.is_none(), "every live event carries a mark");
    e.meta = Default::default();
    e
}

async fn simulator(max_events: Option<u64>, rate: f64) -> SimulatorHandle {
    let cfg = SimulatorConfig {
        entities: 40,
        rate,
        token: TOKEN.to_string(),
        seed: 42,
        max_events,
        ..SimulatorConfig::default()
    };
    Simulator::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

fn client_config(url: &str, token: &str) -> HomeAssistantConfig {
    let mut cfg = HomeAssistantConfig::new(url, token);
    cfg.reconnect_min = Duration::from_millis(10);
    cfg.reconnect_max = Duration::from_millis(200);
    cfg.connect_timeout = Duration::from_secs(5);
    // These tests compare the live stream with what the simulator emitted; the
    // snapshot has tests of its own.
    cfg.initial_snapshot = false;
    cfg
}

/// Starts `client::run` on `cfg` with a channel of `capacity` events: its channel, totals, stop token and task.
///
/// With `settle`, the task ends only once that token is cancelled (the events the
/// caller took are then safe and the cursor's final save may happen); without, at once.
fn spawn_client(
    cfg: HomeAssistantConfig,
    capacity: usize,
    dead_letters: DeadLetters,
    cursor_dir: Option<PathBuf>,
    settle: Option<(Arc<Handoff>, CancellationToken)>,
) -> (
    mpsc::Receiver<Event>,
    Arc<Stats>,
    CancellationToken,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(capacity);
    let stats = Arc::new(Stats::default());
    let shutdown = CancellationToken::new();
    let (handoff, settled) = settle.unwrap_or_else(|| (Handoff::new(), CancellationToken::new()));
    let background = tokio_util::task::TaskTracker::new();
    let ctx = SourceContext {
        tx,
        stats: stats.clone(),
        dead_letters: Arc::new(dead_letters),
        shutdown: shutdown.clone(),
        cursor_dir,
        handoff,
        settled: settled.clone(),
        background: background.clone(),
        commands: Default::default(),
    };
    let task = tokio::spawn(async move {
        client::run(cfg, source(), ctx).await;
        background.close();
        background.wait().await;
    });
    (rx, stats, shutdown, task)
}

/// Tells the source that `event` is safe, as the durable buffer would once it is on disk.
fn release(handoff: &Handoff, event: &Event) {
    let mut marks = Marks::default();
    marks.note(event.meta.mark);
    handoff.release(&marks);
}

struct Running {
    rx: mpsc::Receiver<Event>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    received: Vec<Event>,
}

impl Running {
    fn start(cfg: HomeAssistantConfig, dead_letters: DeadLetters) -> Running {
        let (rx, stats, shutdown, task) = spawn_client(cfg, 50_000, dead_letters, None, None);
        Running {
            rx,
            stats,
            shutdown,
            task,
            received: Vec::new(),
        }
    }

    /// Receives until `n` events in total have arrived.
    async fn receive_until(&mut self, n: usize) {
        while self.received.len() < n {
            let event = within(
                &format!("event {} of {n}", self.received.len() + 1),
                self.rx.recv(),
            )
            .await
            .expect("client task keeps the channel open");
            assert_eq!(&*event.source, "homeassistant");
            self.received.push(normalise(event));
        }
    }

    async fn stop(self) -> Vec<Event> {
        self.shutdown.cancel();
        within("client task stops", self.task)
            .await
            .expect("no panic");
        self.received
    }
}

#[test]
fn every_recorded_frame_decodes() {
    let text = std::fs::read_to_string(fixture("ha-ws-frames.jsonl")).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        decode_frame(line, &source(), &mut out);
    }
    assert_eq!(out.len(), 400);
    let mut state_changed = Vec::new();
    let mut call_service = Vec::new();
    let mut control = 0;
    for (i, item) in out.into_iter().enumerate() {
        match item {
            Ok(ServerMessage::Event { id: 1, event }) => match event.kind {
                EventKind::StateChanged(_) => state_changed.push(event),
                EventKind::Bus(ref bus) if bus.event_type == "call_service" => {
                    call_service.push(event)
                }
                EventKind::Bus(bus) => panic!("unexpected event type {}", bus.event_type),
            },
            Ok(ServerMessage::Reply(ServerReply::AuthRequired { ha_version }))
            | Ok(ServerMessage::Reply(ServerReply::AuthOk { ha_version })) => {
                assert_eq!(ha_version, "2024.3.3");
                control += 1;
            }
            Ok(ServerMessage::Reply(ServerReply::Result {
                id: 1,
                success: true,
                result: None,
                error: None,
            })) => control += 1,
            other => panic!("frame {i}: {other:?}"),
        }
    }
    assert_eq!(
        (state_changed.len(), call_service.len(), control),
        (327, 70, 3)
    );

    let first = state_changed[0].state_changed().unwrap();
    assert_eq!(first.entity_id.as_str(), "sensor.accept_temp_0");
    assert_eq!(first.entity_id.domain(), "sensor");
    assert!(first.old_state.is_none());
    let new = first.new_state.as_ref().unwrap();
    assert_eq!(new.state, "20.00");
    assert_eq!(
        new.attributes["friendly_name"],
        "Accept \"temp\" 0, with commas=equals"
    );
    assert_eq!(new.attributes["unit_of_measurement"], "°C");
    assert_eq!(new.attributes["accept_seq"], 0);
    assert_eq!(
        new.last_reported, None,
        "2024.3 frames have no last_reported"
    );
    assert_eq!(
        state_changed[0].time_fired,
        Timestamp::parse_rfc3339("2026-11-26T20:44:47.219127+00:00").unwrap()
    );
    assert_eq!(
        state_changed[0].context.user_id.as_deref(),
        Some("2863ffcc95c5495785bb107450175b9a")
    );

    let numstr = state_changed[1]
        .state_changed()
        .unwrap()
        .new_state
        .as_ref()
        .unwrap();
    assert_eq!(numstr.state, "12.5 °C");
    assert_eq!(
        numstr.attributes["friendly_name"],
        "Accept numstr 1 \\ back\\slash"
    );

    let special = state_changed[2]
        .state_changed()
        .unwrap()
        .new_state
        .as_ref()
        .unwrap();
    assert_eq!(
        special.attributes["friendly_name"],
        "Accept special 2\nsecond line"
    );

    let EventKind::Bus(call) = &call_service[0].kind else {
        unreachable!()
    };
    assert_eq!(call.data["domain"], "input_number");
    assert_eq!(call.data["service"], "set_value");
    assert_eq!(call.data["service_data"]["value"], -208.1);

    let with_old = state_changed
        .iter()
        .filter_map(|e| e.state_changed())
        .find(|sc| sc.old_state.is_some())
        .expect("some change has an old state");
    assert_eq!(
        with_old
            .old_state
            .as_ref()
            .unwrap()
            .get()
            .unwrap()
            .entity_id,
        with_old.entity_id
    );
}

#[test]
fn coalesced_array_frames_decode_element_by_element() {
    let text = std::fs::read_to_string(fixture("ha-ws-frames.jsonl")).unwrap();
    let events: Vec<&str> = text.lines().skip(3).take(50).collect();
    let mut out = Vec::new();
    decode_frame(&format!("[{}]", events.join(",")), &source(), &mut out);
    assert_eq!(out.len(), 50);
    assert!(
        out.iter()
            .all(|r| matches!(r, Ok(ServerMessage::Event { .. })))
    );

    let bad = events[1].replacen("\"time_fired\":\"", "\"time_fired\":5,\"x\":\"", 1);
    let frame = format!("[{},{},{}]", events[0], bad, events[2]);
    out.clear();
    decode_frame(&frame, &source(), &mut out);
    assert_eq!(out.len(), 3);
    assert!(matches!(out[0], Ok(ServerMessage::Event { .. })));
    let err = out[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), "invalid_field");
    assert_eq!(err.element(), Some(bad.as_str()));
    assert!(matches!(out[2], Ok(ServerMessage::Event { .. })));
}

#[tokio::test]
async fn events_flow_and_equal_what_the_simulator_sent() {
    let sim = simulator(Some(300), 3000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut run = Running::start(
        client_config(&sim.url(), TOKEN),
        DeadLetters::new(dir.path()),
    );
    run.receive_until(300).await;
    assert!(wait_for(|| sim.finished()).await);
    let stats = run.stats.clone();
    let received = run.stop().await;
    let emitted = sim.emitted();
    assert_eq!(emitted.len(), 300);
    assert_eq!(received, emitted);
    assert_eq!(stats.totals().received, 300);
    assert_eq!(stats.totals().decode_errors, 0);
    assert!(received.iter().any(|e| e.event_type() == "call_service"));
    sim.shutdown().await;
}

#[tokio::test]
async fn only_the_configured_event_types_are_subscribed() {
    let sim = simulator(Some(100), 3000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = client_config(&sim.url(), TOKEN);
    cfg.event_types = vec!["call_service".to_string()];
    let mut run = Running::start(cfg, DeadLetters::new(dir.path()));
    run.receive_until(100).await;
    assert!(wait_for(|| sim.finished()).await);
    let received = run.stop().await;
    assert!(received.iter().all(|e| e.event_type() == "call_service"));
    assert_eq!(received, sim.emitted());
    sim.shutdown().await;
}

#[tokio::test]
async fn probe_tells_a_refused_token_from_an_unreachable_peer() {
    let sim = simulator(None, 10.0).await;
    let info = client::probe(&client_config(&sim.url(), TOKEN))
        .await
        .expect("probe");
    assert_eq!(info.ha_version, SimulatorConfig::default().ha_version);
    assert_eq!(info.url, sim.url());

    let refused = client::probe(&client_config(&sim.url(), "wrong"))
        .await
        .unwrap_err();
    assert!(refused.is_auth(), "{refused:?}");
    assert!(
        matches!(refused, ClientError::AuthInvalid { ref message } if message.contains("Invalid access token"))
    );
    assert!(
        !refused.to_string().contains("wrong"),
        "the token never appears in errors"
    );

    let addr = sim.addr();
    sim.shutdown().await;
    let unreachable = client::probe(&client_config(&format!("ws://{addr}"), TOKEN))
        .await
        .unwrap_err();
    assert!(!unreachable.is_auth());
    assert!(
        matches!(unreachable, ClientError::Connect(_)),
        "{unreachable:?}"
    );
}

#[tokio::test]
async fn a_refused_token_is_retried_slowly() {
    let sim = simulator(None, 10.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = client_config(&sim.url(), "wrong-token");
    cfg.reconnect_min = Duration::from_millis(1);
    cfg.reconnect_max = Duration::from_millis(400);
    let run = Running::start(cfg, DeadLetters::new(dir.path()));
    assert!(wait_for(|| sim.auth_failures() >= 1).await);
    let first_refusal = tokio::time::Instant::now();
    let stats = run.stats.clone();
    assert!(
        wait_for(|| sim.auth_attempts() >= 3).await,
        "the client keeps retrying"
    );
    let elapsed = first_refusal.elapsed();
    // reconnect_min (1 ms) would allow hundreds of attempts a second; after a refusal
    // the client waits reconnect_max (400 ms), so two more attempts take at least ~800 ms
    // (less the 10 ms polling granularity). A slower machine only makes this larger.
    assert!(
        elapsed >= Duration::from_millis(750),
        "two retries after a refused token came after only {elapsed:?}"
    );
    let readiness = stats.readiness();
    assert!(!readiness.ready);
    let health = &readiness.sources["homeassistant"];
    assert!(!health.connected);
    assert!(
        health
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("refused the access token")
    );
    run.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn reconnects_after_the_server_drops_every_connection() {
    let sim = simulator(Some(1_000_000), 1000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut run = Running::start(
        client_config(&sim.url(), TOKEN),
        DeadLetters::new(dir.path()),
    );
    run.receive_until(50).await;
    assert!(run.stats.readiness().ready);
    sim.disconnect_all();
    assert!(wait_for(|| sim.clients() == 1 && sim.emitted_count() > 200).await);
    run.receive_until(200).await;
    assert!(run.stats.readiness().ready, "connected again");
    let received = run.stop().await;
    let emitted = sim.emitted();
    // Nothing is generated while nobody is subscribed, and frames queued before the
    // drop are flushed first, so the client saw exactly the simulator's sequence.
    assert_eq!(received[..], emitted[..received.len()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_4_mib_frame_arrives_whole() {
    // HA sends frames this large (a `get_states` of a big installation, an entity
    // with a huge attribute); the default limit (64 MiB) takes them.
    let sim = simulator(Some(1_000_000), 50.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut run = Running::start(
        client_config(&sim.url(), TOKEN),
        DeadLetters::new(dir.path()),
    );
    run.receive_until(5).await;
    let blob = "é".repeat(2 * 1024 * 1024);
    let frame = format!(
        r#"{{"type":"event","event":{{"event_type":"state_changed","data":{{"entity_id":"sensor.big","old_state":null,"new_state":{{"entity_id":"sensor.big","state":"1","attributes":{{"blob":"{blob}"}},"last_changed":"2026-01-01T00:00:00.000001+00:00","last_updated":"2026-01-01T00:00:00.000001+00:00","context":null}}}},"origin":"LOCAL","time_fired":"2026-01-01T00:00:00.000001+00:00","context":{{"id":"01JGH2K7Q3N8V5T1R9X4C6B2MZ","parent_id":null,"user_id":null}}}},"id":1}}"#
    );
    assert!(frame.len() > 4 * 1024 * 1024);
    sim.inject_raw(Message::text(frame));
    let found = within("the big event", async {
        loop {
            let event = run.rx.recv().await.expect("channel open");
            if event.entity_id().map(|e| e.as_str()) == Some("sensor.big") {
                return event;
            }
        }
    })
    .await;
    let state = found
        .state_changed()
        .and_then(|sc| sc.new_state.as_ref())
        .expect("a new state");
    assert_eq!(state.attributes["blob"].as_str(), Some(blob.as_str()));
    assert_eq!(run.stats.totals().decode_errors, 0);
    run.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_counted_set_aside_and_the_stream_goes_on() {
    let sim = simulator(Some(1_000_000), 500.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = client_config(&sim.url(), TOKEN);
    cfg.max_message_bytes = 64 * 1024;
    let mut run = Running::start(cfg, DeadLetters::new(dir.path()));
    run.receive_until(20).await;

    let good = r#"{"type":"event","event":{"event_type":"state_changed","data":{"entity_id":"sensor.x","old_state":null,"new_state":{"entity_id":"sensor.x","state":"1","attributes":{},"last_changed":"2026-01-01T00:00:00.000001+00:00","last_updated":"2026-01-01T00:00:00.000001+00:00","context":null}},"origin":"LOCAL","time_fired":"2026-01-01T00:00:00.000001+00:00","context":{"id":"01JGH2K7Q3N8V5T1R9X4C6B2MZ","parent_id":null,"user_id":null}},"id":1}"#;
    let bad_frames: Vec<(Message, &str)> = vec![
        (
            Message::text("{\"type\":\"event\",\"event\":{"),
            "malformed_json",
        ),
        (
            Message::text(good.replace(
                "\"time_fired\":\"2026-01-01T00:00:00.000001+00:00\"",
                "\"time_fired\":5",
            )),
            "invalid_field",
        ),
        (
            Message::text(good.replace("\"state\":\"1\"", "\"state\":12")),
            "invalid_field",
        ),
        (
            Message::text(good.replace("sensor.x", "sensor_x")),
            "invalid_field",
        ),
        (
            Message::text(good.replace("\"state\":\"1\"", "\"state\":\"\\udc80\"")),
            "invalid_utf8",
        ),
        (
            Message::binary(vec![b'{', 0xff, 0xfe, b'}']),
            "invalid_utf8",
        ),
        (
            Message::text(format!(
                "{{\"type\":\"event\",\"pad\":\"{}\"}}",
                "x".repeat(100 * 1024)
            )),
            "too_large",
        ),
        (
            Message::text(format!(
                "[{{\"type\":\"pong\",\"id\":99}},{}]",
                good.replace("\"state\":\"1\"", "\"state\":[]")
            )),
            "invalid_field",
        ),
    ];
    for (frame, _) in &bad_frames {
        sim.inject_raw(frame.clone());
    }
    let n = bad_frames.len() as u64;
    assert!(wait_for(|| run.stats.totals().decode_errors >= n).await);
    let before = run.received.len();
    run.receive_until(before + 100).await;
    let stats = run.stats.clone();
    let received = run.stop().await;
    assert_eq!(stats.totals().decode_errors, n);
    // Source input is counted as decode errors; `dead_lettered` counts points the sink set aside.
    assert_eq!(stats.totals().dead_lettered, 0);
    assert_eq!(
        received[..],
        sim.emitted()[..received.len()],
        "no good event lost"
    );

    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["stage"], "source");
            assert_eq!(record["source"], "homeassistant");
            assert!(!record["reason"].as_str().unwrap().is_empty());
            kinds.push(record["kind"].as_str().unwrap().to_string());
            if record["kind"] == "invalid_field" && line.contains("\\\"state\\\":[]") {
                assert!(
                    !line.contains("pong"),
                    "only the bad element is set aside: {line}"
                );
            }
        }
    }
    let mut expected: Vec<String> = bad_frames.iter().map(|(_, k)| k.to_string()).collect();
    expected.sort();
    kinds.sort();
    assert_eq!(kinds, expected);
    sim.shutdown().await;
}

#[tokio::test]
async fn metrics_follow_the_stream() {
    // #[tokio::test] runs on one thread, so a thread-local recorder sees the client task.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let sim = simulator(Some(100), 2000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut run = Running::start(
        client_config(&sim.url(), TOKEN),
        DeadLetters::new(dir.path()),
    );
    run.receive_until(100).await;
    sim.inject_raw(Message::text("not json"));
    assert!(wait_for(|| run.stats.totals().decode_errors == 1).await);
    let text = handle.render();
    let received = run.stop().await;
    let calls = received
        .iter()
        .filter(|e| e.event_type() == "call_service")
        .count();
    let value = |needle: &str| -> f64 {
        metric(&text, needle).unwrap_or_else(|| panic!("{needle} missing from:\n{text}"))
    };
    assert_eq!(
        value(
            r#"ha_ingestor_source_received_events_total{source="homeassistant",event_type="state_changed"}"#
        ),
        (100 - calls) as f64
    );
    assert_eq!(
        value(
            r#"ha_ingestor_source_received_events_total{source="homeassistant",event_type="call_service"}"#
        ),
        calls as f64
    );
    assert_eq!(
        value(
            r#"ha_ingestor_source_errors_total{source="homeassistant",error_type="malformed_json"}"#
        ),
        1.0
    );
    assert_eq!(
        value(r#"ha_ingestor_source_connects_total{source="homeassistant"}"#),
        1.0
    );
    assert_eq!(
        value(r#"ha_ingestor_source_connected{source="homeassistant"}"#),
        1.0
    );
    assert!(
        value(r#"ha_ingestor_source_received_bytes_total{source="homeassistant"}"#) > 100.0 * 500.0
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_refused_subscription_is_an_error_with_home_assistants_code() {
    let sim = simulator(None, 10.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = client_config(&sim.url(), TOKEN);
    cfg.event_types = vec!["state_reported".to_string()];
    let run = Running::start(cfg, DeadLetters::new(dir.path()));
    let stats = run.stats.clone();
    assert!(
        wait_for(|| {
            stats
                .readiness()
                .sources
                .get("homeassistant")
                .and_then(|s| s.last_error.clone())
                .is_some_and(|e| {
                    e.contains("home_assistant_error") && e.contains("subscribe_events")
                })
        })
        .await,
        "{:?}",
        stats.readiness()
    );
    assert!(!stats.readiness().ready);
    run.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_client_stops_when_the_pipeline_closes_its_channel() {
    let sim = simulator(None, 500.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut run = Running::start(
        client_config(&sim.url(), TOKEN),
        DeadLetters::new(dir.path()),
    );
    run.receive_until(5).await;
    let Running { rx, task, .. } = run;
    drop(rx);
    within("client returns once nobody listens", task)
        .await
        .expect("no panic");
    sim.shutdown().await;
}

#[tokio::test]
async fn probe_times_out_on_a_peer_that_never_upgrades() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(socket);
    });
    let mut cfg = client_config(&format!("ws://{addr}"), TOKEN);
    cfg.connect_timeout = Duration::from_millis(300);
    let error = client::probe(&cfg).await.unwrap_err();
    assert!(matches!(error, ClientError::Timeout(_)), "{error:?}");
    hold.abort();
}

/// An old core that knows neither `supported_features` nor `last_reported`.
#[tokio::test]
async fn an_old_core_without_coalescing_still_streams() {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        ws.send(Message::text(
            r#"{"type":"auth_required","ha_version":"2021.12.0"}"#,
        ))
        .await
        .unwrap();
        let auth = ws.next().await.unwrap().unwrap();
        assert!(auth.to_text().unwrap().contains(TOKEN));
        ws.send(Message::text(
            r#"{"type":"auth_ok","ha_version":"2021.12.0"}"#,
        ))
        .await
        .unwrap();
        let mut ids = Vec::new();
        while ids.len() < 2 {
            let msg = ws.next().await.unwrap().unwrap();
            let v: serde_json::Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
            ids.push((
                v["id"].as_u64().unwrap(),
                v["type"].as_str().unwrap().to_string(),
            ));
        }
        assert_eq!(
            ids,
            [
                (1, "supported_features".to_string()),
                (2, "subscribe_events".to_string())
            ]
        );
        ws.send(Message::text(r#"{"id":1,"type":"result","success":false,"error":{"code":"unknown_command","message":"Unknown command."}}"#)).await.unwrap();
        ws.send(Message::text(
            r#"{"id":2,"type":"result","success":true,"result":null}"#,
        ))
        .await
        .unwrap();
        let text = std::fs::read_to_string(fixture("ha-ws-frames.jsonl")).unwrap();
        for line in text.lines().skip(3).take(10) {
            ws.send(Message::text(line.replace("\"id\":1}", "\"id\":2}")))
                .await
                .unwrap();
        }
        // Keep the connection open until the client is done.
        while let Some(Ok(_)) = ws.next().await {}
    });
    let dir = tempfile::tempdir().unwrap();
    let mut run = Running::start(
        client_config(&format!("http://{addr}"), TOKEN),
        DeadLetters::new(dir.path()),
    );
    run.receive_until(10).await;
    assert!(run.stats.readiness().ready);
    assert_eq!(run.stats.totals().decode_errors, 0);
    run.stop().await;
    server.abort();
}

/// Log lines written on this thread while the returned guard lives (tests run on one thread).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(logs.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Lines of the client at `level` (`INFO`, `WARN`, …).
    fn at(&self, level: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| l.contains(&format!(" {level} ")) && l.contains("homeassistant::client"))
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// The value of the first sample line starting with `needle` in Prometheus text, if any.
fn metric(text: &str, needle: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(needle))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_server_that_stops_answering_pings_is_declared_dead_and_reconnected() {
    // #[tokio::test] runs on one thread, so a thread-local recorder sees the client task.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (logs, _log_guard) = Logs::capture();
    let timeouts =
        r#"ha_ingestor_source_reconnects_total{source="homeassistant",reason="ping_timeout"}"#;
    let connects = r#"ha_ingestor_source_connects_total{source="homeassistant"}"#;

    let sim = simulator(None, 50.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = client_config(&sim.url(), TOKEN);
    cfg.ping_interval = Duration::from_millis(50);
    // Generous against a loaded machine: a slow answer must not count as a dead server.
    cfg.pong_timeout = Duration::from_secs(1);
    let mut run = Running::start(cfg, DeadLetters::new(dir.path()));
    run.receive_until(5).await;

    // Answered pings keep the connection: several round trips, no timeout.
    assert!(wait_for(|| sim.pings() >= 5).await, "the client pings");
    assert_eq!(metric(&handle.render(), timeouts), None);
    assert_eq!(metric(&handle.render(), connects), Some(1.0));

    // A server that keeps the socket open but stops answering is given up on.
    sim.set_answer_pings(false);
    assert!(
        wait_for(|| metric(&handle.render(), timeouts).is_some()).await,
        "the dead connection is detected"
    );
    let last_error = run.stats.readiness().sources["homeassistant"]
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(last_error.contains("no pong"), "{last_error}");
    let warnings = logs.at("WARN");
    assert!(
        warnings.iter().any(|l| l.contains("no pong")),
        "a WARN gives the reason: {warnings:?}"
    );

    // And re-established once the server answers again.
    sim.set_answer_pings(true);
    assert!(
        wait_for(|| metric(&handle.render(), connects).unwrap_or(0.0) >= 2.0
            && run.stats.readiness().ready)
        .await,
        "reconnected"
    );
    let before = run.received.len();
    run.receive_until(before + 5).await;
    assert_eq!(
        metric(
            &handle.render(),
            r#"ha_ingestor_source_errors_total{source="homeassistant",error_type="ping_timeout"}"#
        )
        .map(|v| v >= 1.0),
        Some(true)
    );
    run.stop().await;
    sim.shutdown().await;
}

/// Runs a client configured by `configure`, restarts the simulator, and checks the restart is no error.
async fn restart_is_recognised(configure: impl FnOnce(&mut HomeAssistantConfig)) -> Vec<Event> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (logs, _log_guard) = Logs::capture();
    let restarts =
        r#"ha_ingestor_source_reconnects_total{source="homeassistant",reason="ha_restart"}"#;
    let connects = r#"ha_ingestor_source_connects_total{source="homeassistant"}"#;

    let sim = simulator(None, 200.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = client_config(&sim.url(), TOKEN);
    configure(&mut cfg);
    let mut run = Running::start(cfg, DeadLetters::new(dir.path()));
    run.receive_until(5).await;
    sim.restart();
    assert!(
        wait_for(|| metric(&handle.render(), restarts) == Some(1.0)).await,
        "{}",
        handle.render()
    );
    assert!(
        wait_for(|| metric(&handle.render(), connects) == Some(2.0) && run.stats.readiness().ready)
            .await,
        "reconnected after the restart"
    );
    let before = run.received.len();
    run.receive_until(before + 5).await;
    let text = handle.render();
    assert!(
        !text.contains("ha_ingestor_source_errors_total"),
        "a restart is not an error:\n{text}"
    );
    assert_eq!(run.stats.totals().decode_errors, 0);
    assert!(
        logs.at("INFO")
            .iter()
            .any(|l| l.contains("Home Assistant is restarting")),
        "{:?}",
        logs.lines()
    );
    let noise: Vec<String> = [logs.at("WARN"), logs.at("ERROR")].concat();
    assert!(noise.is_empty(), "a restart is no warning: {noise:?}");
    let received = run.stop().await;
    sim.shutdown().await;
    received
}

#[tokio::test]
async fn a_home_assistant_restart_is_recognised_and_not_an_error() {
    let received = restart_is_recognised(|_| {}).await;
    let stops = received
        .iter()
        .filter(|e| e.event_type() == "homeassistant_stop")
        .count();
    assert_eq!(stops, 1, "subscribed to everything: the event is forwarded");
}

#[tokio::test]
async fn a_restart_is_recognised_even_when_only_state_changes_are_subscribed() {
    let received =
        restart_is_recognised(|cfg| cfg.event_types = vec!["state_changed".to_string()]).await;
    assert!(
        received.iter().all(|e| e.event_type() == "state_changed"),
        "the private homeassistant_stop subscription forwards nothing"
    );
}

#[tokio::test]
async fn a_restart_is_recognised_on_the_entities_subscription() {
    let received = restart_is_recognised(|cfg| {
        cfg.subscription = ha_ingestor::config::HaSubscription::Entities;
    })
    .await;
    assert!(
        received.iter().all(|e| e.event_type() == "state_changed"),
        "the private homeassistant_stop subscription forwards nothing"
    );
}

#[tokio::test]
async fn the_first_connection_hands_on_every_current_state_once() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let snapshot_metric = r#"ha_ingestor_source_snapshot_states_total{source="homeassistant"}"#;

    // A first client makes the simulator change states, then leaves them as they are.
    let sim = simulator(Some(300), 3000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut driver = Running::start(
        client_config(&sim.url(), TOKEN),
        DeadLetters::new(dir.path()),
    );
    driver.receive_until(300).await;
    driver.stop().await;
    let mut current: std::collections::BTreeMap<String, ha_ingestor::event::State> =
        std::collections::BTreeMap::new();
    for event in sim.emitted() {
        if let Some(sc) = event.state_changed() {
            current.insert(
                sc.entity_id.to_string(),
                sc.new_state.clone().expect("the simulator never removes"),
            );
        }
    }
    assert!(current.len() > 10);

    let mut cfg = client_config(&sim.url(), TOKEN);
    cfg.initial_snapshot = true;
    let (mut rx, stats, shutdown, task) =
        spawn_client(cfg, 10_000, DeadLetters::new(dir.path()), None, None);
    let mut snapshot = std::collections::BTreeMap::new();
    while snapshot.len() < current.len() {
        let event = within("snapshot state", rx.recv()).await.unwrap();
        assert_eq!(&*event.source, "homeassistant/snapshot");
        let sc = event.state_changed().expect("a state change");
        assert!(sc.old_state.is_none());
        let new = sc.new_state.clone().unwrap();
        assert_eq!(event.time_fired, new.last_updated, "HA's own time");
        assert_eq!(Some(&event.context), new.context.as_ref());
        assert!(
            snapshot.insert(sc.entity_id.to_string(), new).is_none(),
            "each entity once"
        );
    }
    assert_eq!(snapshot, current, "exactly the simulator's current states");
    assert_eq!(
        stats.totals().received,
        0,
        "snapshot states are not bus events"
    );
    assert_eq!(
        metric(&handle.render(), snapshot_metric),
        Some(current.len() as f64)
    );

    // A reconnect does not repeat the snapshot. It reads get_states again, for the
    // entity ids of the gap backfill, and fills the gap only once that answer was
    // handled: then no further snapshot state was handed on.
    sim.disconnect_all();
    assert!(
        wait_for(|| metric(
            &handle.render(),
            r#"ha_ingestor_source_connects_total{source="homeassistant"}"#
        ) == Some(3.0)
            && stats.readiness().ready)
        .await
    );
    assert!(
        wait_for(|| metric(
            &handle.render(),
            r#"ha_ingestor_source_gap_seconds_count{source="homeassistant"}"#
        ) == Some(1.0))
        .await
    );
    assert_eq!(sim.commands_received("get_states"), 2);
    assert_eq!(
        metric(&handle.render(), snapshot_metric),
        Some(current.len() as f64)
    );
    while let Ok(event) = rx.try_recv() {
        assert_ne!(&*event.source, "homeassistant/snapshot");
    }
    shutdown.cancel();
    within("client stops", task).await.unwrap();
    sim.shutdown().await;
}

/// A client whose every event (live, snapshot, backfill) is kept with its source, for the backfill tests.
struct Keeper {
    rx: mpsc::Receiver<Event>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    handoff: Arc<Handoff>,
    settled: CancellationToken,
    got: Vec<Event>,
}

impl Keeper {
    fn start(cfg: HomeAssistantConfig, data: &Path) -> Keeper {
        let handoff = Handoff::new();
        let settled = CancellationToken::new();
        let (rx, stats, shutdown, task) = spawn_client(
            cfg,
            100_000,
            DeadLetters::new(data.join("dead-letter")),
            Some(data.join("cursor")),
            Some((handoff.clone(), settled.clone())),
        );
        Keeper {
            rx,
            stats,
            shutdown,
            task,
            handoff,
            settled,
            got: Vec::new(),
        }
    }

    /// Keeps one event and tells the source it is safe, as the durable buffer would.
    fn keep(&mut self, event: Event) {
        release(&self.handoff, &event);
        self.got.push(event);
    }

    /// Receives until `done` holds for what was received, or fails at the deadline.
    async fn receive_while(&mut self, what: &str, mut more: impl FnMut(&[Event]) -> bool) {
        while more(&self.got) {
            let event = within(what, self.rx.recv())
                .await
                .expect("the client keeps the channel open");
            self.keep(event);
        }
    }

    /// Stops the client and returns everything it handed on, including what was still in the channel.
    ///
    /// As the application does: the source stops, what it handed on is drained and made
    /// safe, and only then does the cursor get its final save.
    async fn stop(mut self) -> Vec<Event> {
        self.shutdown.cancel();
        // The channel ends when the source task has returned (its sender is gone).
        while let Some(event) = within("the source stops", self.rx.recv()).await {
            self.keep(event);
        }
        self.settled.cancel();
        within("client task stops", self.task)
            .await
            .expect("no panic");
        self.got
    }
}

/// (entity id, last_updated) of every state change in `events`, with its state.
fn state_keys(events: &[Event]) -> Vec<((String, Timestamp), ha_ingestor::event::State)> {
    events
        .iter()
        .filter_map(|e| e.state_changed())
        .filter_map(|sc| sc.new_state.clone())
        .map(|s| ((s.entity_id.to_string(), s.last_updated), s))
        .collect()
}

/// Every change the simulator made arrived exactly once, with HA's state and attributes.
fn assert_exactly_once(received: &[Event], made: &[ha_ingestor::event::State]) {
    let mut by_key: std::collections::HashMap<(String, Timestamp), Vec<ha_ingestor::event::State>> =
        std::collections::HashMap::new();
    for (key, state) in state_keys(received) {
        by_key.entry(key).or_default().push(state);
    }
    let duplicates: Vec<_> = by_key
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(
        duplicates.is_empty(),
        "received more than once: {duplicates:?}"
    );
    assert_eq!(by_key.len(), made.len(), "nothing more, nothing less");
    for state in made {
        let key = (state.entity_id.to_string(), state.last_updated);
        let got = by_key
            .get(&key)
            .unwrap_or_else(|| panic!("never received: {key:?}"));
        assert_eq!(got[0].state, state.state, "{key:?}");
        // In attribute order too, except that the entities stream cannot know where an
        // attribute removed and later added again stood (it comes last in the cache).
        let sorted = |a: &ha_ingestor::event::Attributes| {
            let mut v: Vec<(String, serde_json::Value)> =
                a.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        assert_eq!(
            sorted(&got[0].attributes),
            sorted(&state.attributes),
            "{key:?}"
        );
        assert_eq!(got[0].last_changed, state.last_changed, "{key:?}");
    }
}

/// Whether every change in `made` is among `received`.
fn covers(received: &[Event], made: &[ha_ingestor::event::State]) -> bool {
    let keys: std::collections::HashSet<(String, Timestamp)> =
        state_keys(received).into_iter().map(|(k, _)| k).collect();
    made.iter()
        .all(|s| keys.contains(&(s.entity_id.to_string(), s.last_updated)))
}

/// Streams, takes HA away while it makes 600 changes, brings it back, takes `live_after`
/// live events, stops the generator and checks every change arrived exactly once;
/// returns what the client handed on and how much of it came from the history.
async fn through_a_gap(
    cfg: HomeAssistantConfig,
    sim: &SimulatorHandle,
    data: &Path,
    live_after: usize,
) -> (Vec<Event>, usize) {
    let mut client = Keeper::start(cfg, data);
    client
        .receive_while("first live events", |got| got.len() < 50)
        .await;
    sim.refuse_connections(true);
    sim.disconnect_all();
    assert!(wait_for(|| !client.stats.readiness().ready).await);
    let before = sim.state_changes().len();
    assert!(
        wait_for(|| sim.state_changes().len() >= before + 600).await,
        "the simulator keeps changing states with nobody connected"
    );
    sim.refuse_connections(false);
    assert!(wait_for(|| client.stats.readiness().ready).await, "back");
    let seen = client.got.len();
    client
        .receive_while("live events after the gap", |got| {
            got.len() < seen + live_after
        })
        .await;
    sim.stop_generating();
    let made = sim.state_changes();
    client
        .receive_while("every change made", |got| !covers(got, &made))
        .await;
    // The status page's last gap: what the backfill recovered, its end confirmed by the recorder.
    let gap = client.stats.last_gap().expect("the gap is reported");
    assert!(gap.confirmed && gap.states >= 500, "{gap:?}");
    let received = client.stop().await;
    assert_exactly_once(&received, &made);
    let backfilled = received
        .iter()
        .filter(|e| &*e.source == "homeassistant/backfill")
        .count();
    assert!(
        backfilled >= 500,
        "the gap came from the history: {backfilled}"
    );
    (received, backfilled)
}

#[tokio::test]
async fn a_long_gap_is_asked_for_window_by_window_and_arrives_exactly_once() {
    let sim = simulator(None, 300.0).await;
    sim.keep_running_while_disconnected(true);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = client_config(&sim.url(), TOKEN);
    // A gap of about two seconds in windows of 200 ms, two entity chunks each.
    cfg.backfill_window = Duration::from_millis(200);
    cfg.backfill_chunk = 20;
    through_a_gap(cfg, &sim, data.path(), 300).await;
    let requests = sim.commands_received("history/history_during_period");
    assert!(
        requests >= 2 * 8,
        "a two-second gap in 200 ms windows of two chunks: {requests} requests"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_gap_while_home_assistant_is_away_is_backfilled_exactly_once() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let sim = simulator(None, 300.0).await;
    sim.keep_running_while_disconnected(true);
    let data = tempfile::tempdir().unwrap();
    // HA goes away for about two seconds and keeps changing states meanwhile.
    let (received, backfilled) =
        through_a_gap(client_config(&sim.url(), TOKEN), &sim, data.path(), 600).await;
    let text = handle.render();
    assert_eq!(
        metric(
            &text,
            r#"ha_ingestor_source_backfilled_points_total{source="homeassistant"}"#
        ),
        Some(backfilled as f64)
    );
    assert_eq!(
        metric(
            &text,
            r#"ha_ingestor_source_gap_seconds_count{source="homeassistant"}"#
        ),
        Some(1.0)
    );
    let gap = metric(
        &text,
        r#"ha_ingestor_source_gap_seconds_sum{source="homeassistant"}"#,
    )
    .unwrap_or(0.0);
    assert!(gap >= 1.0, "the gap lasted about two seconds: {gap}");
    // Subscribed to every event type: the others in the gap are reported lost.
    assert_eq!(
        metric(
            &text,
            r#"ha_ingestor_source_unrecoverable_gap_seconds_count{source="homeassistant"}"#
        ),
        Some(1.0)
    );
    // One commit check (asked again while HA's recorder had not committed the gap's
    // end), then one window: 40 entities fit in one chunk of 50.
    let waits = metric(
        &text,
        r#"ha_ingestor_backfill_commit_waits_total{source="homeassistant"}"#,
    )
    .unwrap_or(0.0);
    assert_eq!(
        sim.commands_received("history/history_during_period") as f64,
        1.0 + waits + 1.0,
    );

    // The cursor was saved at shutdown: HA's time of the last event handed on.
    let last = received.iter().map(|e| e.time_fired).max().unwrap();
    let cursor = std::fs::read_to_string(data.path().join("cursor/homeassistant.json")).unwrap();
    assert_eq!(
        cursor,
        format!("{{\"last_event\":\"{}\"}}", last.to_rfc3339())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_restart_of_the_ingestor_resumes_from_the_saved_cursor() {
    restart_of_the_ingestor(ha_ingestor::config::HaSubscription::Events).await;
}

#[tokio::test]
async fn a_restart_of_the_ingestor_resumes_on_the_entities_subscription() {
    restart_of_the_ingestor(ha_ingestor::config::HaSubscription::Entities).await;
}

/// Runs, stops, lets HA go on, runs again with the snapshot: every change exactly once.
async fn restart_of_the_ingestor(subscription: ha_ingestor::config::HaSubscription) {
    let sim = simulator(None, 300.0).await;
    sim.keep_running_while_disconnected(true);
    let data = tempfile::tempdir().unwrap();
    let mut cfg = client_config(&sim.url(), TOKEN);
    cfg.subscription = subscription;
    cfg.backfill_chunk = 7;
    let mut first = Keeper::start(cfg.clone(), data.path());
    first
        .receive_while("first run", |got| got.len() < 100)
        .await;
    let first_run = first.stop().await;

    // While the ingestor is down, HA goes on (few changes: most of the 40
    // entities keep the state the first run already handed on).
    let before = sim.state_changes().len();
    assert!(wait_for(|| sim.state_changes().len() >= before + 15).await);

    // The restarted process also takes the initial snapshot: only states newer
    // than the cursor are handed on by it, so nothing arrives twice.
    cfg.initial_snapshot = true;
    let mut second = Keeper::start(cfg, data.path());
    second
        .receive_while("second run", |got| {
            got.iter().filter(|e| &*e.source == "homeassistant").count() < 300
        })
        .await;
    sim.stop_generating();
    let made = sim.state_changes();
    let mut all = first_run;
    second
        .receive_while("every change made", |got| {
            !covers(&[all.as_slice(), got].concat(), &made)
        })
        .await;
    let second_run = second.stop().await;
    assert!(
        second_run
            .iter()
            .any(|e| &*e.source == "homeassistant/snapshot"),
        "states changed while the ingestor was down come with the snapshot"
    );
    all.extend(second_run);
    assert_exactly_once(&all, &made);
    assert!(
        sim.commands_received("history/history_during_period") >= 6,
        "40 entities in chunks of 7"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn without_history_the_gap_is_reported_lost_and_streaming_goes_on() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let lost = r#"ha_ingestor_source_unrecoverable_gap_seconds_count{source="homeassistant"}"#;

    let sim = simulator(None, 300.0).await;
    sim.set_history_available(false);
    // States change while disconnected, so the gap has something to ask history for.
    sim.keep_running_while_disconnected(true);
    let data = tempfile::tempdir().unwrap();
    let mut client = Keeper::start(client_config(&sim.url(), TOKEN), data.path());
    client
        .receive_while("first events", |got| got.len() < 20)
        .await;
    sim.disconnect_all();
    assert!(
        wait_for(|| metric(&handle.render(), lost) == Some(1.0)).await,
        "{}",
        handle.render()
    );
    let text = handle.render();
    assert_eq!(
        metric(
            &text,
            r#"ha_ingestor_source_errors_total{source="homeassistant",error_type="backfill"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"ha_ingestor_source_gap_seconds_count{source="homeassistant"}"#
        ),
        Some(0.0),
        "nothing was backfilled"
    );
    // The connection stays up and the cursor moves on past the lost gap.
    let seen = client.got.len();
    client
        .receive_while("live events after the gap", |got| got.len() < seen + 100)
        .await;
    let latest = client.got.iter().map(|e| e.time_fired).max().unwrap();
    let path = data.path().join("cursor/homeassistant.json");
    let saved = || -> Option<Timestamp> {
        let text = std::fs::read_to_string(&path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Timestamp::parse_rfc3339(v["last_event"].as_str()?).ok()
    };
    assert!(
        wait_for(|| saved().is_some_and(|t| t >= latest)).await,
        "the saved cursor follows the stream again"
    );
    assert_eq!(
        metric(
            &handle.render(),
            r#"ha_ingestor_source_connects_total{source="homeassistant"}"#
        ),
        Some(2.0),
        "a refused history does not cost the connection"
    );
    client.stop().await;
    sim.shutdown().await;
}

/// A client config for `subscribe_entities`.
fn entities_config(url: &str) -> HomeAssistantConfig {
    let mut cfg = client_config(url, TOKEN);
    cfg.subscription = ha_ingestor::config::HaSubscription::Entities;
    cfg
}

/// The event without what the compressed stream cannot carry: `last_reported`
/// (never sent) and the order of attributes (one removed and later added again
/// comes last in the cache; every schema sorts fields, so order is not data).
fn comparable(mut e: Event) -> Event {
    fn fix(state: &mut ha_ingestor::event::State) {
        state.last_reported = None;
        let mut attrs: Vec<(String, serde_json::Value)> = state
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        attrs.sort_by(|a, b| a.0.cmp(&b.0));
        state.attributes = attrs.into_iter().collect();
    }
    if let EventKind::StateChanged(sc) = &mut e.kind {
        if let Some(new) = sc.new_state.as_mut() {
            fix(new);
        }
        if let Some(old) = sc.old_state.take() {
            let mut old = old.get().expect("old state decodes").clone();
            fix(&mut old);
            sc.old_state = Some(old.into());
        }
    }
    e
}

#[test]
fn recorded_subscribe_entities_frames_decode_and_apply_without_loss() {
    use ha_ingestor::source::homeassistant::entities::StateCache;
    let text = std::fs::read_to_string(fixture("ha-subscribe-entities.jsonl")).unwrap();
    let mut cache = StateCache::new();
    let mut decoded = Vec::new();
    let (mut added, mut changed, mut events) = (0, 0, 0);
    for (i, line) in text.lines().enumerate() {
        decoded.clear();
        decode_frame(line, &source(), &mut decoded);
        let raw: serde_json::Value = serde_json::from_str(line).unwrap();
        for item in decoded.drain(..) {
            let message = match item {
                Ok(ServerMessage::Entities { id: 1, message }) => message,
                Ok(ServerMessage::Reply(ServerReply::AuthRequired { .. }))
                | Ok(ServerMessage::Reply(ServerReply::AuthOk { .. }))
                | Ok(ServerMessage::Reply(ServerReply::Result {
                    id: 1,
                    success: true,
                    ..
                })) => continue,
                other => panic!("frame {i}: {other:?}"),
            };
            added += message.added.len();
            changed += message.changed.len();
            let mut out = Vec::new();
            cache.apply(message, &source(), Timestamp::from_nanos(0), &mut out);
            for event in out {
                let event = event.unwrap_or_else(|e| panic!("frame {i}: {e}"));
                events += 1;
                let sc = event.state_changed().unwrap();
                let new = sc.new_state.as_ref().unwrap();
                assert_eq!(event.time_fired, new.last_updated);
                let id = sc.entity_id.as_str();
                // Every field HA sent for this entity is reachable on the event.
                let sent = &raw["event"];
                if let Some(full) = sent["a"].get(id) {
                    assert_eq!(new.state, full["s"].as_str().unwrap(), "frame {i} {id}");
                    let attrs = serde_json::to_value(&new.attributes).unwrap();
                    assert_eq!(attrs, full["a"], "frame {i} {id}");
                    let lc = Timestamp::from_epoch_seconds(full["lc"].as_f64().unwrap()).unwrap();
                    assert_eq!(new.last_changed, lc);
                    let lu = full.get("lu").and_then(|v| v.as_f64());
                    assert_eq!(
                        new.last_updated,
                        lu.map_or(lc, |s| Timestamp::from_epoch_seconds(s).unwrap())
                    );
                    let ctx = new.context.as_ref().unwrap();
                    match &full["c"] {
                        serde_json::Value::String(c) => {
                            assert_eq!(ctx.id.as_deref(), Some(c.as_str()))
                        }
                        object => {
                            assert_eq!(ctx.id.as_deref(), object["id"].as_str());
                            assert_eq!(ctx.user_id.as_deref(), object["user_id"].as_str());
                            assert_eq!(ctx.parent_id.as_deref(), object["parent_id"].as_str());
                        }
                    }
                } else {
                    let plus = &sent["c"][id]["+"];
                    if let Some(s) = plus.get("s") {
                        assert_eq!(new.state, s.as_str().unwrap(), "frame {i} {id}");
                    }
                    if let Some(a) = plus.get("a").and_then(|a| a.as_object()) {
                        for (k, v) in a {
                            assert_eq!(new.attributes.get(k), Some(v), "frame {i} {id} {k}");
                        }
                    }
                    if let Some(lc) = plus.get("lc").and_then(|v| v.as_f64()) {
                        let lc = Timestamp::from_epoch_seconds(lc).unwrap();
                        assert_eq!((new.last_changed, new.last_updated), (lc, lc));
                    } else if let Some(lu) = plus.get("lu").and_then(|v| v.as_f64()) {
                        assert_eq!(new.last_updated, Timestamp::from_epoch_seconds(lu).unwrap());
                    }
                    if let Some(serde_json::Value::String(c)) = plus.get("c") {
                        assert_eq!(
                            new.context.as_ref().unwrap().id.as_deref(),
                            Some(c.as_str())
                        );
                    }
                    assert!(sc.old_state.is_some(), "a change carries the cached state");
                }
            }
        }
    }
    assert!(
        added > 10 && changed > 10,
        "added {added}, changed {changed}"
    );
    assert_eq!(events, added + changed, "one state change per entity entry");
}

#[tokio::test]
async fn entities_mode_gives_the_state_changes_subscribe_events_would() {
    let sim = simulator(Some(400), 2000.0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut run = Running::start(entities_config(&sim.url()), DeadLetters::new(dir.path()));
    run.receive_until(400).await;
    assert!(wait_for(|| sim.finished()).await);
    let stats = run.stats.clone();
    let received = run.stop().await;
    // Only state changes were sent (nobody asked for call_service).
    let emitted: Vec<Event> = sim.emitted().into_iter().map(comparable).collect();
    assert_eq!(emitted.len(), 400);
    assert!(emitted.iter().all(|e| e.state_changed().is_some()));
    assert_eq!(received.len(), emitted.len());
    for (i, (got, sent)) in received.iter().zip(&emitted).enumerate() {
        let got = comparable(got.clone());
        assert!(
            got == *sent,
            "event {i}: old state from the cache, new state from the diff\n got {got:?}\nsent {sent:?}"
        );
    }
    assert_eq!(stats.totals().decode_errors, 0);
    assert_eq!(sim.commands_received("subscribe_entities"), 1);
    assert_eq!(
        sim.commands_received("get_states"),
        0,
        "no snapshot asked for"
    );
    // Lights going off lose their colour attributes: the `-` of a diff was applied.
    let dropped = received.iter().filter_map(|e| e.state_changed()).any(|sc| {
        let (Some(old), Some(new)) = (sc.old_state.as_ref(), sc.new_state.as_ref()) else {
            return false;
        };
        old.get()
            .unwrap()
            .attributes
            .iter()
            .any(|(k, _)| !new.attributes.contains_key(k))
    });
    assert!(dropped, "some change removed an attribute");
    sim.shutdown().await;
}

#[tokio::test]
async fn entities_mode_hands_on_the_first_states_removals_and_resubscribes() {
    let sim = simulator(None, 500.0).await;
    sim.keep_running_while_disconnected(true);
    assert!(wait_for(|| sim.state_changes().len() >= 300).await);
    sim.stop_generating();
    // HA's current state of every entity: the last change made to it.
    let mut current = std::collections::BTreeMap::new();
    for state in sim.state_changes() {
        current.insert(state.entity_id.to_string(), state);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = entities_config(&sim.url());
    cfg.initial_snapshot = true;
    let (mut rx, stats, shutdown, task) =
        spawn_client(cfg, 10_000, DeadLetters::new(dir.path()), None, None);
    let mut first = Vec::new();
    while first.len() < current.len() {
        first.push(within("the first states", rx.recv()).await.expect("open"));
    }
    for event in &first {
        assert_eq!(&*event.source, "homeassistant/snapshot");
        let sc = event.state_changed().unwrap();
        assert!(sc.old_state.is_none());
        let new = sc.new_state.clone().unwrap();
        let mut want = current[sc.entity_id.as_str()].clone();
        want.last_reported = None;
        assert_eq!(new, want);
        assert_eq!(event.time_fired, want.last_updated);
    }

    // A removal: no new state, the cached one as the old state.
    let (gone, last) = current
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    assert!(sim.remove_entity(&gone));
    let removal = within("the removal", rx.recv()).await.expect("open");
    assert_eq!(&*removal.source, "homeassistant");
    let sc = removal.state_changed().unwrap();
    assert_eq!(sc.entity_id.as_str(), gone);
    assert!(sc.new_state.is_none());
    let old = sc.old_state.as_ref().unwrap().get().unwrap();
    assert_eq!(
        (old.state.as_str(), old.last_updated),
        (last.state.as_str(), last.last_updated)
    );

    // Dropped: the client subscribes again and, having handed the states on, repeats none of them.
    sim.disconnect_all();
    assert!(wait_for(|| sim.commands_received("subscribe_entities") == 2).await);
    assert!(wait_for(|| stats.readiness().ready).await);
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(
        quiet.is_err(),
        "nothing changed, nothing handed on: {quiet:?}"
    );
    shutdown.cancel();
    within("client task stops", task).await.expect("no panic");
    assert_eq!(stats.totals().decode_errors, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn entities_mode_fills_a_gap_from_the_history_exactly_once() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let sim = simulator(None, 300.0).await;
    sim.keep_running_while_disconnected(true);
    let data = tempfile::tempdir().unwrap();
    let (received, _) = through_a_gap(entities_config(&sim.url()), &sim, data.path(), 300).await;
    assert_eq!(sim.commands_received("subscribe_entities"), 2);
    assert!(received.iter().all(|e| e.state_changed().is_some()));
    let text = handle.render();
    assert_eq!(
        metric(
            &text,
            r#"ha_ingestor_source_gap_seconds_count{source="homeassistant"}"#
        ),
        Some(1.0)
    );
    // No other events were subscribed to, so none are reported lost.
    assert_eq!(
        metric(
            &text,
            r#"ha_ingestor_source_unrecoverable_gap_seconds_count{source="homeassistant"}"#
        )
        .unwrap_or(0.0),
        0.0,
        "{text}"
    );
    sim.shutdown().await;
}
