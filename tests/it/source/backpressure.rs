//! The reader never waits for the sink: with InfluxDB unreachable (a sink that
//! delivers nothing at all, the slowest there is), Home Assistant — the
//! simulator, which drops a client that falls 4096 messages behind, as HA does —
//! streams 30 s of events and the one connection survives; every event is
//! received and every point waits in the durable buffer.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use ha_ingestor::app;
use ha_ingestor::config::{BufferConfig, Config, HomeAssistantConfig, InfluxConfig, MonitorConfig};
use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use ha_ingestor::sink::buffer::Buffer;
use support::{expected_points, wait_for};

const EVENTS: u64 = 30_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_never_makes_home_assistant_drop_the_connection() {
    ha_ingestor::ensure_crypto_provider();
    let token = "stall-token";
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 50,
            rate: 1_000.0,
            token: token.into(),
            seed: 5,
            max_events: Some(EVENTS),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");
    let data = tempfile::tempdir().expect("tempdir");
    // Nothing listens on a port just freed: every write fails, nothing is ever delivered.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut influx = InfluxConfig::v1(format!("http://127.0.0.1:{port}"), "nowhere");
    influx.retry_min = Duration::from_millis(100);
    influx.retry_max = Duration::from_millis(500);
    let mut ha = HomeAssistantConfig::new(sim.url(), token);
    ha.initial_snapshot = false;
    let cfg = Config {
        data_dir: data.path().to_path_buf(),
        homeassistant: vec![ha],
        influxdb: Some(influx),
        buffer: BufferConfig::default(),
        monitor: MonitorConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..MonitorConfig::default()
        },
        ..Config::default()
    };
    let running = app::start(&cfg).await.expect("starts");
    let stats = running.stats();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !sim.finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sim.finished(),
        "the simulator sent {} of {EVENTS} events in time; connections {}, received {}",
        sim.emitted_count(),
        sim.auth_attempts(),
        stats.totals().received
    );
    assert_eq!(
        sim.auth_attempts(),
        1,
        "the simulator dropped the client, which had to reconnect (received {} of {EVENTS})",
        stats.totals().received
    );
    wait_for("every event received", Duration::from_secs(60), || async {
        (stats.totals().received == EVENTS).then_some(())
    })
    .await;
    let expected = expected_points(&sim.emitted()) as u64;
    wait_for(
        "every point in the buffer",
        Duration::from_secs(60),
        || async { (stats.totals().encoded == expected).then_some(()) },
    )
    .await;
    let totals = running.stop().await;
    assert_eq!(
        totals.written, 0,
        "the sink delivered something: {totals:?}"
    );
    assert_eq!(totals.dropped, 0, "{totals:?}");
    sim.shutdown().await;

    // Everything waits on disk for InfluxDB.
    let (_, report) =
        Buffer::open(&data.path().join("buffer"), &BufferConfig::default()).expect("buffer");
    assert_eq!(
        report.points, expected,
        "every point is in the buffer: {totals:?} {report:?}"
    );
}
