//! No gaps, end to end: the simulator (a protocol-faithful Home Assistant) keeps
//! changing states while ha-ingestor cannot see it — HA unreachable for 10 s, or
//! the ingestor process killed with SIGKILL — and afterwards every state change
//! the simulator made is in a real `influxd`: exact count, exact values, no
//! duplicates (one row per entity and time). The changes made during the gap
//! come from HA's history (`history/history_during_period`), which the
//! simulator answers from its own record.

use crate::support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use ha_ingestor::app;
use ha_ingestor::config::{Config, HomeAssistantConfig, InfluxConfig, MonitorConfig};
use ha_ingestor::event::State;
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use support::ha_schema::{all_rows, assert_state_point, is_written, state_key};
use support::{Influxd, Running, wait_for};

async fn simulator(token: &str, seed: u64) -> SimulatorHandle {
    Simulator::start(
        SimulatorConfig {
            entities: 40,
            rate: 150.0,
            token: token.into(),
            seed,
            max_events: None,
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts")
}

/// State points (not `ha_events`) in the database.
async fn state_points(influx: &Influxd) -> usize {
    all_rows(influx)
        .await
        .keys()
        .filter(|(m, _, _)| m != "ha_events")
        .count()
}

/// Every state the simulator made (sent live or not) is in InfluxDB with its value, and nothing else is.
async fn assert_every_change_stored_once(influx: &Influxd, made: &[State], gap: usize) {
    let expected: Vec<&State> = made.iter().filter(|s| is_written(s)).collect();
    let deadline = Duration::from_secs(60);
    let got = wait_for("every state change in InfluxDB", deadline, || async {
        let n = state_points(influx).await;
        (n >= expected.len()).then_some(n)
    })
    .await;
    let rows = all_rows(influx).await;
    for state in &expected {
        assert_state_point(&rows, state);
    }
    let made_keys: HashSet<_> = expected.iter().map(|s| state_key(s)).collect();
    let extra: Vec<_> = rows
        .iter()
        .filter(|((m, _, _), _)| m != "ha_events")
        .filter(|(key, _)| !made_keys.contains(*key))
        .take(5)
        .collect();
    assert_eq!(
        got,
        expected.len(),
        "state points in InfluxDB vs changes the simulator made (rows are unique per entity and time, so more would be extra points); extra rows: {extra:?}"
    );
    assert!(
        gap >= 100,
        "the gap held too few changes to prove anything: {gap}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_unreachable_for_10_s_leaves_no_gap_in_influxdb() {
    ha_ingestor::ensure_crypto_provider();
    let influx = Influxd::start("outage10").await;
    let token = "gap-token";
    let sim = simulator(token, 21).await;
    let data = tempfile::tempdir().expect("tempdir");
    let mut influx_cfg = InfluxConfig::v1(influx.url(), "outage10");
    influx_cfg.flush_interval = Duration::from_millis(100);
    let mut ha = HomeAssistantConfig::new(sim.url(), token);
    // The changes before the first connection are not part of this test's record.
    ha.initial_snapshot = false;
    ha.reconnect_min = Duration::from_millis(200);
    ha.reconnect_max = Duration::from_secs(1);
    let cfg = Config {
        data_dir: data.path().to_path_buf(),
        homeassistant: vec![ha],
        influxdb: Some(influx_cfg),
        monitor: MonitorConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..MonitorConfig::default()
        },
        ..Config::default()
    };
    let running = app::start(&cfg).await.expect("starts");
    let stats = running.stats();
    wait_for("points written", Duration::from_secs(30), || async {
        (stats.totals().written >= 100).then_some(())
    })
    .await;

    // HA goes away for 10 s and keeps changing states meanwhile.
    sim.keep_running_while_disconnected(true);
    sim.refuse_connections(true);
    sim.disconnect_all();
    let before = sim.state_changes().len();
    let outage = Instant::now();
    wait_for("the 10 s outage", Duration::from_secs(30), || async {
        (outage.elapsed() >= Duration::from_secs(10)).then_some(())
    })
    .await;
    let gap = sim.state_changes().len() - before;
    sim.refuse_connections(false);
    wait_for(
        "reconnected and backfilled",
        Duration::from_secs(30),
        || async {
            (sim.commands_received("history/history_during_period") >= 1
                && sim.emitted_count() > 0
                && stats.readiness().ready)
                .then_some(())
        },
    )
    .await;
    let live_after = sim.emitted_count();
    wait_for(
        "live events after the gap",
        Duration::from_secs(30),
        || async { (sim.emitted_count() >= live_after + 50).then_some(()) },
    )
    .await;
    sim.stop_generating();
    let made = sim.state_changes();
    assert_every_change_stored_once(&influx, &made, gap).await;
    let totals = running.stop().await;
    assert_eq!(totals.dropped, 0);
    sim.shutdown().await;
}

fn write_config(path: &Path, data: &Path, ha_url: &str, influx_url: &str) {
    std::fs::write(
        path,
        format!(
            "data_dir = {data:?}\n\
             [homeassistant]\nurl = \"{ha_url}\"\ntoken_file = \"token\"\ninitial_snapshot = false\nreconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n\
             [influxdb]\nurl = \"{influx_url}\"\ndatabase = \"killed\"\nflush_interval = \"100ms\"\n\
             [buffer]\nfsync_interval = \"100ms\"\n\
             [monitor]\nenabled = false\n"
        ),
    )
    .expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_ingestor_fills_its_gap_from_history_after_restart() {
    ha_ingestor::ensure_crypto_provider();
    let influx = Influxd::start("killed").await;
    let token = "kill-gap-token";
    let sim = simulator(token, 22).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("token");
    let config = dir.path().join("run.toml");
    write_config(&config, &data, &sim.url(), &influx.url());

    let mut run = Running::launch(&config)
        .log(dir.path().join("first.log"))
        .spawn();
    wait_for("points written", Duration::from_secs(30), || async {
        (state_points(&influx).await >= 100).then_some(())
    })
    .await;
    // The cursor file exists once something was safe on disk.
    wait_for("a saved cursor", Duration::from_secs(30), || async {
        data.join("cursor/homeassistant.json")
            .exists()
            .then_some(())
    })
    .await;
    sim.keep_running_while_disconnected(true);
    run.kill();
    let before = sim.state_changes().len();
    wait_for(
        "changes while the ingestor is dead",
        Duration::from_secs(30),
        || async { (sim.state_changes().len() >= before + 300).then_some(()) },
    )
    .await;
    let gap = sim.state_changes().len() - before;

    let mut run = Running::launch(&config)
        .log(dir.path().join("second.log"))
        .spawn();
    wait_for(
        "the restarted process backfilled",
        Duration::from_secs(30),
        || async { (sim.commands_received("history/history_during_period") >= 1).then_some(()) },
    )
    .await;
    let live_after = sim.emitted_count();
    wait_for(
        "live events after the restart",
        Duration::from_secs(30),
        || async { (sim.emitted_count() >= live_after + 50).then_some(()) },
    )
    .await;
    sim.stop_generating();
    let made = sim.state_changes();
    assert_every_change_stored_once(&influx, &made, gap).await;
    let exit = run.stop().await;
    assert!(exit.success(), "run exited with {exit}");
    sim.shutdown().await;
}
