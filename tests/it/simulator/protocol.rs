//! The simulator speaks Home Assistant's WebSocket protocol: checked with a raw
//! WebSocket client over 127.0.0.1, independent of the ingestor's own client.

use crate::support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

const TOKEN: &str = "sim-token";
const WAIT: Duration = Duration::from_secs(10);

async fn start(rate: f64, max_events: Option<u64>) -> SimulatorHandle {
    let cfg = SimulatorConfig {
        entities: 20,
        rate,
        token: TOKEN.into(),
        seed: 3,
        max_events,
        ha_version: "2026.11.1".into(),
        // History answers at once here; the recorder's commit interval has its own test.
        recorder_commit_interval: Duration::ZERO,
        ..SimulatorConfig::default()
    };
    Simulator::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The next text frame as JSON, or `None` when the server closed.
async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the deadline");
        match msg {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn connect(sim: &SimulatorHandle, token: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(sim.url()).await.unwrap();
    let required = next_json(&mut ws).await.unwrap();
    assert_eq!(
        required,
        json!({"type": "auth_required", "ha_version": "2026.11.1"})
    );
    send(&mut ws, json!({"type": "auth", "access_token": token})).await;
    let reply = next_json(&mut ws).await.unwrap();
    (ws, reply)
}

/// Reads until the reply to command `id` (skipping events).
async fn reply_to(ws: &mut Ws, id: u64) -> Value {
    loop {
        let v = next_json(ws).await.expect("connection open");
        let items = match v {
            Value::Array(items) => items,
            one => vec![one],
        };
        if let Some(found) = items
            .into_iter()
            .find(|m| m["id"] == id && m["type"] != "event")
        {
            return found;
        }
    }
}

#[tokio::test]
async fn auth_is_refused_for_a_wrong_token_or_a_malformed_message() {
    let sim = start(10.0, None).await;
    let (mut ws, reply) = connect(&sim, "nope").await;
    assert_eq!(
        reply,
        json!({"type": "auth_invalid", "message": "Invalid access token or password"})
    );
    assert!(
        next_json(&mut ws).await.is_none(),
        "closed after auth_invalid"
    );

    let (mut ws, _) = tokio_tungstenite::connect_async(sim.url()).await.unwrap();
    next_json(&mut ws).await.unwrap();
    send(&mut ws, json!({"type": "auth", "token": TOKEN})).await;
    let reply = next_json(&mut ws).await.unwrap();
    assert_eq!(reply["type"], "auth_invalid");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .starts_with("Auth message incorrectly formatted")
    );
    assert!(next_json(&mut ws).await.is_none());
    assert_eq!((sim.auth_attempts(), sim.auth_failures()), (2, 2));

    let (_ws, reply) = connect(&sim, TOKEN).await;
    assert_eq!(reply, json!({"type": "auth_ok", "ha_version": "2026.11.1"}));
    sim.shutdown().await;
}

#[tokio::test]
async fn commands_are_answered_as_home_assistant_does() {
    let sim = start(200.0, None).await;
    let (mut ws, reply) = connect(&sim, TOKEN).await;
    assert_eq!(reply["type"], "auth_ok");

    send(&mut ws, json!({"id": 1, "type": "ping"})).await;
    assert_eq!(reply_to(&mut ws, 1).await, json!({"id": 1, "type": "pong"}));

    send(&mut ws, json!({"id": 2, "type": "get_config"})).await;
    let config = reply_to(&mut ws, 2).await;
    assert_eq!(config["success"], true);
    assert_eq!(config["result"]["state"], "RUNNING");
    assert_eq!(config["result"]["version"], "2026.11.1");
    assert_eq!(config["result"]["unit_system"]["temperature"], "°C");

    send(&mut ws, json!({"id": 3, "type": "no_such_command"})).await;
    assert_eq!(
        reply_to(&mut ws, 3).await,
        json!({"type": "result", "id": 3, "success": false, "error": {"code": "unknown_command", "message": "Unknown command."}})
    );

    send(&mut ws, json!({"id": 3, "type": "ping"})).await;
    let reuse = reply_to(&mut ws, 3).await;
    assert_eq!(reuse["error"]["code"], "id_reuse");

    send(
        &mut ws,
        json!({"id": 4, "type": "subscribe_events", "event_type": "state_reported"}),
    )
    .await;
    assert_eq!(
        reply_to(&mut ws, 4).await["error"]["code"],
        "home_assistant_error"
    );

    send(
        &mut ws,
        json!({"id": 5, "type": "subscribe_events", "event_type": "state_changed"}),
    )
    .await;
    let sub = reply_to(&mut ws, 5).await;
    assert_eq!(
        sub,
        json!({"type": "result", "id": 5, "success": true, "result": null})
    );

    // Events of subscription 5, one object per frame (no coalescing asked), id last.
    let mut seen = 0;
    while seen < 30 {
        let v = next_json(&mut ws).await.unwrap();
        assert!(v.is_object(), "no arrays without supported_features: {v}");
        assert_eq!(v["type"], "event");
        assert_eq!(v["id"], 5);
        assert_eq!(v["event"]["event_type"], "state_changed");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["type", "event", "id"]);
        let new = &v["event"]["data"]["new_state"];
        assert_eq!(v["event"]["time_fired"], new["last_updated"]);
        assert_eq!(new["last_reported"], new["last_updated"]);
        assert_eq!(v["event"]["origin"], "LOCAL");
        seen += 1;
    }

    send(&mut ws, json!({"id": 6, "type": "get_states"})).await;
    let states = reply_to(&mut ws, 6).await;
    let list = states["result"].as_array().unwrap();
    assert!(!list.is_empty() && list.len() <= 20);
    assert!(
        list.iter()
            .all(|s| s["entity_id"].is_string() && s["last_reported"].is_string())
    );

    send(
        &mut ws,
        json!({"id": 7, "type": "unsubscribe_events", "subscription": 99}),
    )
    .await;
    assert_eq!(reply_to(&mut ws, 7).await["error"]["code"], "not_found");
    send(
        &mut ws,
        json!({"id": 8, "type": "unsubscribe_events", "subscription": 5}),
    )
    .await;
    assert_eq!(reply_to(&mut ws, 8).await["success"], true);
    // Events queued before the unsubscribe may still arrive before pong 9; after
    // it nothing more is sent, so pong 10 is the very next message.
    send(&mut ws, json!({"id": 9, "type": "ping"})).await;
    assert_eq!(reply_to(&mut ws, 9).await["type"], "pong");
    send(&mut ws, json!({"id": 10, "type": "ping"})).await;
    assert_eq!(
        next_json(&mut ws).await.unwrap(),
        json!({"id": 10, "type": "pong"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn coalescing_sends_array_frames_and_only_subscribers_get_events() {
    let sim = start(2000.0, Some(400)).await;
    let (mut idle, _) = connect(&sim, TOKEN).await;
    let (mut ws, _) = connect(&sim, TOKEN).await;
    send(
        &mut ws,
        json!({"id": 1, "type": "supported_features", "features": {"coalesce_messages": 1}}),
    )
    .await;
    assert_eq!(reply_to(&mut ws, 1).await["result"], Value::Null);
    send(&mut ws, json!({"id": 2, "type": "subscribe_events"})).await;
    assert_eq!(reply_to(&mut ws, 2).await["success"], true);

    let mut events = Vec::new();
    let mut largest = 0;
    while events.len() < 400 {
        let v = next_json(&mut ws).await.unwrap();
        let items = v
            .as_array()
            .expect("array frames once coalescing is on")
            .clone();
        largest = largest.max(items.len());
        assert!(items.len() <= 256);
        events.extend(items);
    }
    assert!(largest > 1, "several events per frame at 2000/s");
    assert!(sim.finished());
    assert_eq!(sim.emitted_count(), 400);
    let types: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["event"]["event_type"].as_str().unwrap())
        .collect();
    assert!(types.contains("state_changed") && types.contains("call_service"));
    let mut last = String::new();
    for e in &events {
        let t = e["event"]["time_fired"].as_str().unwrap().to_string();
        assert!(t > last, "time_fired strictly increases: {t} after {last}");
        last = t;
    }

    // The connection that never subscribed got no events: its pong comes first.
    send(&mut idle, json!({"id": 1, "type": "ping"})).await;
    assert_eq!(
        next_json(&mut idle).await.unwrap(),
        json!({"id": 1, "type": "pong"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_like_ha_does() {
    let sim = start(20_000.0, None).await;
    let (mut ws, _) = connect(&sim, TOKEN).await;
    send(&mut ws, json!({"id": 1, "type": "subscribe_events"})).await;
    // Read nothing: socket buffers fill, then 4096 pending messages end the connection
    // (at 20,000 events/s long before the 10 s of the peak rule).
    assert!(
        support::holds_within(Duration::from_secs(20), || sim.clients() == 0).await,
        "the slow client was dropped"
    );
    assert_eq!(sim.slow_client_drops().over_max, 1);
    // What was still queued when the limit was passed is never written: fewer
    // frames arrive than the subscribe result plus every emitted event.
    let mut frames = 0u64;
    while next_json(&mut ws).await.is_some() {
        frames += 1;
    }
    assert!(
        frames < 1 + sim.emitted_count(),
        "the connection ended before everything was sent: {frames} frames of {} events",
        sim.emitted_count()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stays_over_the_peak_is_disconnected_like_ha_does() {
    // 1,000 events/s: from 1,024 pending to 4,096 takes 3 s, ten times the
    // shortened peak time, so only HA's second rule can end the connection.
    let sim = start(1_000.0, None).await;
    sim.set_pending_peak_time(Duration::from_millis(300));
    let (mut ws, _) = connect(&sim, TOKEN).await;
    send(&mut ws, json!({"id": 1, "type": "subscribe_events"})).await;
    assert!(
        support::holds_within(Duration::from_secs(60), || sim.clients() == 0).await,
        "the slow client was dropped"
    );
    let drops = sim.slow_client_drops();
    assert_eq!(drops.over_peak, 1, "{drops:?}");
    assert_eq!(drops.over_max, 0, "the 4096 rule did not fire: {drops:?}");
    let mut frames = 0u64;
    while next_json(&mut ws).await.is_some() {
        frames += 1;
    }
    assert!(
        frames < 1 + sim.emitted_count(),
        "what was still queued was never written: {frames} frames of {} events",
        sim.emitted_count()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_completes_with_a_client_that_does_not_read() {
    let sim = start(5_000.0, None).await;
    let (mut ws, _) = connect(&sim, TOKEN).await;
    send(&mut ws, json!({"id": 1, "type": "subscribe_events"})).await;
    assert!(support::holds_within(WAIT, || sim.emitted_count() >= 1_000).await);
    tokio::time::timeout(WAIT, sim.shutdown())
        .await
        .expect("shutdown does not wait for a blocked write");
    drop(ws);
}

/// The key names of a JSON object, in order.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn history_is_answered_from_the_record_in_home_assistants_shape() {
    let sim = start(1000.0, None).await;
    let (mut ws, ok) = connect(&sim, TOKEN).await;
    assert_eq!(ok["type"], "auth_ok");
    send(&mut ws, json!({"id": 1, "type": "subscribe_events"})).await;
    assert_eq!(reply_to(&mut ws, 1).await["success"], true);
    assert!(
        support::holds_within(WAIT, || sim.state_changes().len() >= 200).await,
        "no changes made"
    );
    sim.stop_generating();
    let made = sim.state_changes();
    let start_time = made[100].last_updated;

    send(&mut ws, json!({"id": 2, "type": "get_states"})).await;
    let states = reply_to(&mut ws, 2).await;
    let ids: Vec<Value> = states["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["entity_id"].clone())
        .collect();
    // Exactly the request the fixture recorded from a real HA, but for the ids and time.
    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/fixtures/ha-history-response.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut request = recorded["request"].clone();
    request["id"] = json!(3);
    request["start_time"] = json!(start_time.to_rfc3339());
    request.as_object_mut().unwrap().remove("end_time");
    request["entity_ids"] = Value::Array(ids);
    send(&mut ws, request).await;
    let reply = reply_to(&mut ws, 3).await;

    // The envelope and the row shapes are those of HA's reply.
    let mut envelope = keys(&reply);
    envelope.sort_unstable();
    let mut expected = keys(&recorded["response"]);
    expected.sort_unstable();
    assert_eq!(envelope, expected);
    assert_eq!(reply["success"], true);
    let row_shapes = [vec!["s", "a", "lu"], vec!["s", "a", "lu", "lc"]];
    for rows in recorded["response"]["result"].as_object().unwrap().values() {
        for row in rows.as_array().unwrap() {
            assert!(row_shapes.contains(&keys(row)), "fixture row {row}");
        }
    }
    let start_s = start_time.as_nanos() as f64 / 1e9;
    let mut got = std::collections::BTreeSet::new();
    for (entity, rows) in reply["result"].as_object().unwrap() {
        for (i, row) in rows.as_array().unwrap().iter().enumerate() {
            assert!(row_shapes.contains(&keys(row)), "simulator row {row}");
            assert!(row["a"].is_object() && row["s"].is_string() && row["lu"].is_f64());
            let lu = ha_ingestor::event::Timestamp::from_epoch_seconds(row["lu"].as_f64().unwrap())
                .unwrap();
            if lu == start_time {
                assert_eq!(i, 0, "only the first row is the state at the start");
                continue;
            }
            assert!(row["lu"].as_f64().unwrap() > start_s);
            got.insert((entity.clone(), lu));
        }
    }
    let wanted: std::collections::BTreeSet<_> = made
        .iter()
        .filter(|s| s.last_updated > start_time)
        .map(|s| (s.entity_id.to_string(), s.last_updated))
        .collect();
    assert_eq!(got, wanted, "every change after the start, nothing else");

    // HA's errors for a bad time and a missing entity list.
    send(&mut ws, json!({"id": 4, "type": "history/history_during_period", "start_time": "soon", "entity_ids": []})).await;
    assert_eq!(
        reply_to(&mut ws, 4).await["error"]["code"],
        "invalid_start_time"
    );
    send(&mut ws, json!({"id": 5, "type": "history/history_during_period", "start_time": start_time.to_rfc3339()})).await;
    assert_eq!(
        reply_to(&mut ws, 5).await["error"]["code"],
        "invalid_format"
    );
    sim.shutdown().await;
}

/// The next message (an element of an array frame counts alone), or `None` when the server closed.
async fn next_message(
    ws: &mut Ws,
    queued: &mut std::collections::VecDeque<Value>,
) -> Option<Value> {
    loop {
        if let Some(m) = queued.pop_front() {
            return Some(m);
        }
        match next_json(ws).await? {
            Value::Array(items) => queued.extend(items),
            one => return Some(one),
        }
    }
}

#[tokio::test]
async fn subscribe_entities_is_served_in_home_assistants_compressed_shape() {
    let sim = start(500.0, None).await;
    sim.keep_running_while_disconnected(true);
    assert!(support::holds_within(WAIT, || sim.state_changes().len() >= 200).await);
    let (mut ws, _) = connect(&sim, TOKEN).await;
    send(
        &mut ws,
        json!({"id": 1, "type": "supported_features", "features": {"coalesce_messages": 1}}),
    )
    .await;
    send(&mut ws, json!({"id": 2, "type": "subscribe_entities"})).await;
    let mut queued = std::collections::VecDeque::new();
    // The result, then one event with every current state, id first as HA writes it.
    let mut first = None;
    while first.is_none() {
        let m = next_message(&mut ws, &mut queued).await.expect("open");
        if m["id"] == 2 && m["type"] == "result" {
            assert_eq!(m["success"], true);
            let initial = next_message(&mut ws, &mut queued).await.expect("open");
            first = Some(initial);
        }
    }
    let initial = first.unwrap();
    assert_eq!(keys(&initial), ["id", "type", "event"]);
    let added = initial["event"]["a"].as_object().expect("a");
    assert_eq!(added.len(), 20, "every entity has a state by now");
    for (id, state) in added {
        let k = keys(state);
        assert!(k.starts_with(&["s", "a", "c", "lc"]), "{id}: {k:?}");
        // lu only when it differs from lc.
        match state.get("lu") {
            Some(lu) => assert_ne!(lu, &state["lc"], "{id}"),
            None => assert_eq!(k.len(), 4, "{id}: {k:?}"),
        }
        assert!(state["lc"].is_f64(), "epoch seconds: {id}");
        assert!(state["c"].is_string() || state["c"].is_object(), "{id}");
    }
    // Then diffs: "+" with only what changed, and "-" for attributes that went away.
    let (mut plus, mut minus) = (0, 0);
    while plus < 50 || minus == 0 {
        let m = next_message(&mut ws, &mut queued).await.expect("open");
        if m["type"] != "event" {
            continue;
        }
        assert_eq!(m["id"], 2);
        if let Some(changed) = m["event"]["c"].as_object() {
            for diff in changed.values() {
                let add = diff["+"].as_object().expect("+");
                assert!(
                    !(add.contains_key("lc") && add.contains_key("lu")),
                    "{diff}"
                );
                plus += 1;
                if let Some(gone) = diff.get("-") {
                    assert!(!gone["a"].as_array().expect("-.a").is_empty());
                    minus += 1;
                }
            }
        }
    }
    // A removal is {"r": [id]}.
    let gone = added.keys().next().unwrap().clone();
    assert!(sim.remove_entity(&gone));
    loop {
        let m = next_message(&mut ws, &mut queued).await.expect("open");
        if m["event"]["r"] == json!([gone]) {
            break;
        }
    }
    // With entity_ids, only those entities come.
    send(&mut ws, json!({"id": 3, "type": "subscribe_entities", "entity_ids": [added.keys().nth(1).unwrap()]})).await;
    let mut seen = 0;
    while seen < 2 {
        let m = next_message(&mut ws, &mut queued).await.expect("open");
        if m["type"] == "event" && m["id"] == 3 {
            let event = m["event"].as_object().unwrap();
            for part in ["a", "c"] {
                if let Some(entities) = event.get(part).and_then(Value::as_object) {
                    assert!(
                        entities.keys().all(|k| k == added.keys().nth(1).unwrap()),
                        "{m}"
                    );
                }
            }
            seen += 1;
        }
    }
    sim.shutdown().await;
}

/// The entity ids (and their rows) of a history reply.
fn history_rows(reply: &Value) -> std::collections::BTreeMap<String, Vec<Value>> {
    reply["result"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_array().unwrap().clone()))
        .collect()
}

#[tokio::test]
async fn history_holds_what_the_recorder_committed_without_what_it_does_not_keep() {
    // A recorder that commits every 5 s (HA's default), excludes one entity and
    // drops the attributes HA's entity classes declare unrecorded.
    let excluded = "sensor.kitchen_temperature_0";
    let interval = Duration::from_secs(5);
    let cfg = SimulatorConfig {
        entities: 14,
        rate: 400.0,
        token: TOKEN.into(),
        seed: 5,
        recorder_commit_interval: interval,
        recorder_exclude: vec![excluded.into()],
        ha_version: "2026.11.1".into(),
        ..SimulatorConfig::default()
    };
    let started = tokio::time::Instant::now();
    let sim = Simulator::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    sim.keep_running_while_disconnected(true);
    let (mut ws, _) = connect(&sim, TOKEN).await;
    let ask = |id: u64, ids: &[String]| {
        json!({"id": id, "type": "history/history_during_period",
               "start_time": "2000-01-01T00:00:00+00:00", "entity_ids": ids,
               "include_start_time_state": false, "significant_changes_only": false,
               "minimal_response": false, "no_attributes": false})
    };
    // Before the recorder's first commit, history has none of the changes made.
    assert!(support::holds_within(WAIT, || sim.state_changes().len() >= 50).await);
    let ids: Vec<String> = sim
        .state_changes()
        .iter()
        .map(|s| s.entity_id.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    send(&mut ws, ask(1, &ids)).await;
    let early = history_rows(&reply_to(&mut ws, 1).await);
    assert!(
        started.elapsed() < interval,
        "the machine took longer than a commit interval to ask; this check needs a quicker answer"
    );
    assert!(
        early.is_empty(),
        "history before the first commit: {early:?}"
    );

    assert!(support::holds_within(WAIT, || sim.state_changes().len() >= 300).await);
    sim.stop_generating();
    let made = sim.state_changes();
    let ids: Vec<String> = made
        .iter()
        .map(|s| s.entity_id.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(ids.iter().any(|id| id == excluded));
    let kept = made
        .iter()
        .filter(|s| s.entity_id.as_str() != excluded)
        .count();
    // Within one more interval every change the recorder keeps is history, and only those.
    let deadline = tokio::time::Instant::now() + 3 * interval;
    let mut id = 2;
    let rows = loop {
        send(&mut ws, ask(id, &ids)).await;
        let rows = history_rows(&reply_to(&mut ws, id).await);
        id += 1;
        if rows.values().map(Vec::len).sum::<usize>() == kept {
            break rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !rows.contains_key(excluded),
        "an excluded entity has no history"
    );
    // Unrecorded attributes are gone from history, kept in what was sent live.
    let mut checked = 0;
    for state in &made {
        let dropped: &[&str] = match state.entity_id.domain() {
            "light" => &["supported_color_modes"],
            "climate" => &["hvac_modes", "min_temp", "max_temp"],
            "input_select" => &["options", "editable"],
            _ => continue,
        };
        for key in dropped {
            assert!(
                state.attributes.contains_key(key),
                "{} sent live without {key}",
                state.entity_id
            );
        }
        let lu = (state.last_updated.as_nanos() / 1_000) as f64 / 1e6;
        let row = rows[state.entity_id.as_str()]
            .iter()
            .find(|r| r["lu"].as_f64() == Some(lu))
            .expect("the change is history");
        for key in dropped {
            assert!(
                row["a"].get(key).is_none(),
                "{} recorded {key}",
                state.entity_id
            );
        }
        assert!(
            row["a"].get("friendly_name").is_some(),
            "other attributes are kept"
        );
        checked += 1;
    }
    assert!(
        checked > 10,
        "only {checked} states of entities with unrecorded attributes"
    );
    sim.shutdown().await;
}
