//! Several homes in one process: two simulated Home Assistants, each with its
//! own connection, token and cursor, written to one real `influxd` with every
//! point tagged by its instance — exactly each home's points under its name.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use ha_ingestor::app;
use ha_ingestor::config::{
    Config, HaSubscription, HomeAssistantConfig, InfluxConfig, MonitorConfig,
};
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use support::{Influxd, expected_points, wait_for};

async fn home(token: &str, seed: u64, events: u64) -> SimulatorHandle {
    Simulator::start(
        SimulatorConfig {
            entities: 20,
            rate: 400.0,
            token: token.into(),
            seed,
            max_events: Some(events),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts")
}

/// Points in the database whose `instance` tag is `name`.
async fn points_of(influx: &Influxd, name: &str) -> usize {
    let result = influx
        .query(&format!(
            "SELECT count(*) FROM /.*/ WHERE \"instance\" = '{name}' GROUP BY *"
        ))
        .await;
    // One count per series and field; the largest count of a series is its point count.
    let mut total = 0;
    for series in result["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for row in series["values"].as_array().into_iter().flatten() {
            let best = row
                .as_array()
                .into_iter()
                .flatten()
                .skip(1)
                .filter_map(|v| v.as_u64())
                .max()
                .unwrap_or(0);
            total += best as usize;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_homes_are_written_each_under_its_own_instance_tag() {
    two_homes(HaSubscription::Events).await;
}

/// The cabin on `subscribe_entities`: its state changes (it receives no other
/// events) land in InfluxDB exactly as the event stream's would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_on_the_entities_subscription_is_written_exactly() {
    two_homes(HaSubscription::Entities).await;
}

async fn two_homes(cabin: HaSubscription) {
    ha_ingestor::ensure_crypto_provider();
    let influx = Influxd::start("homes").await;
    // The same seed: both homes have the same entity ids and the same times; only the tag tells them apart.
    let (a, b) = (home("token-a", 9, 800).await, home("token-b", 9, 600).await);
    let data = tempfile::tempdir().expect("tempdir");
    let mut influx_cfg = InfluxConfig::v1(influx.url(), "homes");
    influx_cfg.flush_interval = Duration::from_millis(100);
    let ha = |name: &str, sim: &SimulatorHandle, token: &str| {
        let mut c = HomeAssistantConfig::new(sim.url(), token);
        c.name = name.to_string();
        c.initial_snapshot = false;
        c
    };
    let mut cabin_cfg = ha("cabin", &b, "token-b");
    cabin_cfg.subscription = cabin;
    let cfg = Config {
        data_dir: data.path().to_path_buf(),
        homeassistant: vec![ha("home", &a, "token-a"), cabin_cfg],
        influxdb: Some(influx_cfg),
        monitor: MonitorConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..MonitorConfig::default()
        },
        ..Config::default()
    };
    cfg.validate().expect("valid");
    let running = app::start(&cfg).await.expect("starts");
    let stats = running.stats();
    wait_for(
        "both homes sent everything",
        Duration::from_secs(60),
        || async {
            let t = stats.totals();
            (a.finished() && b.finished() && t.received == 1400 && t.written == t.encoded)
                .then_some(())
        },
    )
    .await;
    if cabin == HaSubscription::Entities {
        assert!(
            b.emitted().iter().all(|e| e.state_changed().is_some()),
            "the entities stream carries state changes only"
        );
    }
    let (want_a, want_b) = (expected_points(&a.emitted()), expected_points(&b.emitted()));
    wait_for(
        "every point in InfluxDB",
        Duration::from_secs(30),
        || async { (influx.point_count().await == want_a + want_b).then_some(()) },
    )
    .await;
    let totals = running.stop().await;
    assert_eq!(totals.dropped, 0);
    assert_eq!(points_of(&influx, "home").await, want_a);
    assert_eq!(points_of(&influx, "cabin").await, want_b);
    // One resume cursor per instance.
    for name in ["home", "cabin"] {
        assert!(
            data.path().join(format!("cursor/{name}.json")).exists(),
            "no cursor for {name}"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}
