//! End to end: simulator (a protocol-faithful Home Assistant) → ha-ingestor → a real `influxd`.
//!
//! Every state change the simulator emitted must be in InfluxDB, queried back
//! with InfluxQL, with identical values and timestamps; unknown/unavailable
//! states are skipped as HA skips them; other bus events land in `ha_events`.
//! The expectations are computed here from the emitted events with HA's rules,
//! not with the encoder under test.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ha_ingestor::app;
use ha_ingestor::config::{Config, HomeAssistantConfig, InfluxConfig, MonitorConfig};
use ha_ingestor::event::{Event, EventKind};
use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use serde_json::Value;
use support::ha_schema::{all_rows, assert_state_point, ha_float, stored};
use support::influxd::Influxd;
use support::wait_for;

/// Polls `cond` until it holds or the deadline passes; returns whether it held.
async fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_change_reaches_influxdb_with_identical_values() {
    ha_ingestor::ensure_crypto_provider();
    let influx = Influxd::start("e2e").await;
    let token = "e2e-token".to_string();
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 80,
            rate: 600.0,
            token: token.clone(),
            seed: 7,
            max_events: Some(2400),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");

    let data = tempfile::tempdir().unwrap();
    let mut influx_cfg = InfluxConfig::v1(influx.url(), "e2e");
    influx_cfg.flush_interval = Duration::from_millis(200);
    // This test counts exactly what the simulator emitted; the initial snapshot
    // (states already written, at the same times) has tests of its own.
    let mut ha = HomeAssistantConfig::new(sim.url(), token);
    ha.initial_snapshot = false;
    let cfg = Config {
        data_dir: data.path().to_path_buf(),
        homeassistant: vec![ha],
        influxdb: Some(influx_cfg),
        monitor: MonitorConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..MonitorConfig::default()
        },
        ..Config::default()
    };
    let running = app::start(&cfg).await.expect("pipeline starts");
    let stats = running.stats();

    // /ready turns 200 once HA is connected and writes succeed.
    let ready_url = format!("http://{}/ready", running.monitor_addr().unwrap());
    let client = reqwest::Client::new();
    wait_for(
        "/ready to answer 200 with points written",
        Duration::from_secs(30),
        || async {
            let ready = matches!(client.get(&ready_url).send().await, Ok(r) if r.status() == 200);
            (ready && stats.totals().written > 0).then_some(())
        },
    )
    .await;

    let all_in = wait_until(Duration::from_secs(60), || {
        let t = stats.totals();
        sim.finished() && t.received == sim.emitted_count() && t.written == t.encoded
    })
    .await;
    let totals = running.stop().await;
    assert!(
        all_in,
        "not everything arrived: emitted {} totals {totals:?}",
        sim.emitted_count()
    );
    assert_eq!(totals.dropped, 0);
    assert_eq!(totals.dead_lettered, 0);
    assert_eq!(totals.decode_errors, 0);

    let emitted: Vec<Event> = sim.emitted();
    assert_eq!(emitted.len(), 2400);
    let rows = all_rows(&influx).await;

    let mut expected_points = 0usize;
    let mut hard_values = 0usize;
    let mut skipped = 0usize;
    let mut bus_events = 0usize;
    for event in &emitted {
        let sc = match &event.kind {
            EventKind::StateChanged(sc) => sc,
            EventKind::Bus(bus) => {
                bus_events += 1;
                let key = (
                    "ha_events".to_string(),
                    String::new(),
                    event.time_fired.as_nanos(),
                );
                let row = rows
                    .iter()
                    .find(|((m, _, t), _)| m == "ha_events" && *t == key.2)
                    .map(|(_, r)| r)
                    .unwrap_or_else(|| {
                        panic!(
                            "no ha_events point for {} at {}",
                            bus.event_type, event.time_fired
                        )
                    });
                assert_eq!(row["event_type"], Value::String(bus.event_type.clone()));
                continue;
            }
        };
        let Some(new) = &sc.new_state else { continue };
        if matches!(new.state.as_str(), "unknown" | "unavailable" | "") {
            skipped += 1;
            continue;
        }
        expected_points += 1;
        if assert_state_point(&rows, new) {
            hard_values += 1;
        }
        let key = (
            String::new(),
            sc.entity_id.object_id().to_string(),
            event.time_fired.as_nanos(),
        );
        let row = rows
            .iter()
            .find(|((_, e, t), _)| *e == key.1 && *t == key.2)
            .map(|(_, r)| r)
            .expect("checked above");
        for (attr, value) in &new.attributes {
            match value {
                Value::String(s) if attr != "unit_of_measurement" && ha_float(s).is_none() => {
                    let field = format!("{attr}_str");
                    if let Some(stored_value) = row.get(&field) {
                        assert_eq!(stored_value, &stored(s), "{field} of {key:?}");
                        if s.contains([' ', ',', '=', '"', '\\']) || !s.is_ascii() {
                            hard_values += 1;
                        }
                    } else if row.get(attr.as_str()).is_none() {
                        panic!("attribute {attr} of {key:?} not stored");
                    }
                }
                Value::Number(n) => {
                    let stored = row
                        .get(attr.as_str())
                        .or_else(|| row.get(&format!("{attr}_")))
                        .and_then(Value::as_f64);
                    assert_eq!(stored, n.as_f64(), "{attr} of {key:?}");
                }
                _ => {}
            }
        }
    }
    let state_rows = rows.keys().filter(|(m, _, _)| m != "ha_events").count();
    let event_rows = rows.len() - state_rows;
    assert_eq!(state_rows, expected_points, "state points in InfluxDB");
    assert_eq!(event_rows, bus_events, "ha_events points in InfluxDB");
    assert_eq!(totals.skipped as usize, skipped);
    assert!(
        skipped > 0,
        "the simulator must emit unknown/unavailable states"
    );
    assert!(bus_events > 0, "the simulator must emit other event types");
    assert!(
        hard_values > 50,
        "too few hard values exercised: {hard_values}"
    );
    sim.shutdown().await;
}
