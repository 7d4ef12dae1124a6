//! The durable buffer against a real `influxd`: a one-minute outage under a
//! steady load, and a `kill -9` of the `ha-ingestor run` process while InfluxDB is down.

use crate::support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ha_ingestor::app;
use ha_ingestor::config::{BufferConfig, Config, HomeAssistantConfig, InfluxConfig, MonitorConfig};
use ha_ingestor::event::EventKind;
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use ha_ingestor::sink::buffer::Buffer;
use support::ha_schema::{all_rows, assert_state_point, is_written};
use support::{Influxd, Running, expected_points, wait_for};

async fn simulator(token: &str, rate: f64, max_events: u64, seed: u64) -> SimulatorHandle {
    Simulator::start(
        SimulatorConfig {
            entities: 50,
            rate,
            token: token.into(),
            seed,
            max_events: Some(max_events),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts")
}

fn buffer_contents(data: &Path) -> (Vec<u64>, u64) {
    let (buffer, report) =
        Buffer::open(&data.join("buffer"), &BufferConfig::default()).expect("buffer opens");
    assert!(report.corrupt.is_empty(), "corrupt records: {report:?}");
    assert_eq!(report.moved_aside, None);
    let seqs = buffer
        .read_after(None, usize::MAX)
        .expect("read")
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    (seqs, report.points)
}

/// How long influxd stays down in the outage test, from its stop to its restart.
const OUTAGE: Duration = Duration::from_secs(60);
/// The steady load during that test, events per second.
const OUTAGE_RATE: f64 = 200.0;

/// influxd killed for 60 s under a steady load that goes on through the outage and
/// after the restart: every point arrives once, with its value, and the buffer empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_influxdb_outage_of_a_minute_under_steady_load_loses_and_duplicates_nothing() {
    ha_ingestor::ensure_crypto_provider();
    let mut influx = Influxd::start("outage").await;
    let token = "outage-token";
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 50,
            rate: OUTAGE_RATE,
            token: token.into(),
            seed: 11,
            max_events: None,
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");
    let data = tempfile::tempdir().expect("tempdir");
    let mut influx_cfg = InfluxConfig::v1(influx.url(), "outage");
    influx_cfg.flush_interval = Duration::from_millis(100);
    influx_cfg.retry_min = Duration::from_millis(50);
    influx_cfg.retry_max = Duration::from_millis(500);
    let cfg = Config {
        data_dir: data.path().to_path_buf(),
        homeassistant: vec![HomeAssistantConfig::new(sim.url(), token)],
        influxdb: Some(influx_cfg),
        buffer: BufferConfig {
            fsync_interval: Duration::from_millis(100),
            ..BufferConfig::default()
        },
        monitor: MonitorConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..MonitorConfig::default()
        },
        ..Config::default()
    };
    let running = app::start(&cfg).await.expect("starts");
    let stats = running.stats();
    wait_for(
        "the first points written",
        Duration::from_secs(30),
        || async { (stats.totals().written > 0).then_some(()) },
    )
    .await;

    influx.stop();
    let stopped = tokio::time::Instant::now();
    let at_stop = stats.totals();
    // The outage itself: influxd stays down for its whole length while the load goes on.
    tokio::time::sleep_until(stopped + OUTAGE).await;
    let before_restart = stats.totals();
    let during = before_restart.received - at_stop.received;
    assert!(
        during as f64 >= OUTAGE_RATE * OUTAGE.as_secs_f64() / 2.0,
        "the load did not go on during the outage: {during} events in {OUTAGE:?}"
    );
    let waiting = before_restart.encoded - before_restart.written;
    assert!(
        waiting as f64 >= OUTAGE_RATE * OUTAGE.as_secs_f64() / 4.0,
        "too few points waited for InfluxDB: {before_restart:?}"
    );

    influx.restart().await;
    let outage = stopped.elapsed();
    assert!(outage >= OUTAGE, "influxd was down only {outage:?}");
    // The load goes on after the restart, then stops.
    let at_restart = stats.totals().received;
    wait_for(
        "events received after the restart",
        Duration::from_secs(30),
        || async { (stats.totals().received >= at_restart + OUTAGE_RATE as u64 * 3).then_some(()) },
    )
    .await;
    sim.stop_generating();
    wait_for("every event received", Duration::from_secs(30), || async {
        (stats.totals().received == sim.emitted_count()).then_some(())
    })
    .await;
    wait_for("every point written", Duration::from_secs(60), || async {
        let t = stats.totals();
        (t.written == t.encoded).then_some(())
    })
    .await;
    let totals = running.stop().await;

    let emitted = sim.emitted();
    assert_eq!(
        emitted.len() as u64,
        sim.emitted_count(),
        "history kept whole"
    );
    let expected = expected_points(&emitted);
    assert_eq!(totals.dropped, 0);
    assert_eq!(totals.dead_lettered, 0);
    assert_eq!(
        totals.written as usize, expected,
        "every point accepted exactly once (a point sent twice would count twice)"
    );
    // Exact values: each state change's point with its value, each bus event's point.
    let rows = all_rows(&influx).await;
    assert_eq!(rows.len(), expected, "rows in InfluxDB");
    let bus_times: std::collections::HashSet<i64> = rows
        .keys()
        .filter(|(m, _, _)| m == "ha_events")
        .map(|(_, _, t)| *t)
        .collect();
    for event in &emitted {
        match &event.kind {
            EventKind::StateChanged(sc) => {
                if let Some(new) = sc.new_state.as_ref().filter(|s| is_written(s)) {
                    assert_state_point(&rows, new);
                }
            }
            EventKind::Bus(bus) => assert!(
                bus_times.contains(&event.time_fired.as_nanos()),
                "no ha_events point for {} at {}",
                bus.event_type,
                event.time_fired
            ),
        }
    }
    let (left, _) = buffer_contents(data.path());
    assert!(
        left.is_empty(),
        "delivered records were not removed: {left:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_targets_one_down_the_other_keeps_up_and_both_end_exact() {
    ha_ingestor::ensure_crypto_provider();
    let a = Influxd::start("mirror_a").await;
    let mut b = Influxd::start("mirror_b").await;
    let token = "mirror-token";
    let sim = simulator(token, 1000.0, 3000, 12).await;
    let data = tempfile::tempdir().expect("tempdir");
    let cfg = two_targets_config(data.path(), &sim.url(), token, &a, &b);
    let names: Vec<&str> = cfg
        .influxdb
        .as_ref()
        .expect("influxdb")
        .targets()
        .map(|t| t.target_name())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let running = app::start(&cfg).await.expect("starts");
    let stats = running.stats();
    wait_for("points in b", Duration::from_secs(30), || async {
        (b.point_count().await > 0).then_some(())
    })
    .await;
    b.stop();
    wait_for("every event received", Duration::from_secs(30), || async {
        (sim.finished() && stats.totals().received == sim.emitted_count()).then_some(())
    })
    .await;
    let expected = expected_points(&sim.emitted());
    // Target a is not held back by b's outage.
    wait_for(
        "every point in a while b is down",
        Duration::from_secs(30),
        || async { (a.point_count().await == expected).then_some(()) },
    )
    .await;
    let during = stats.totals();
    assert!(
        during.written < 2 * expected as u64,
        "b's outage left nothing waiting: {during:?}"
    );
    b.restart().await;
    wait_for("every point in b", Duration::from_secs(60), || async {
        (b.point_count().await == expected).then_some(())
    })
    .await;
    wait_for("both targets counted", Duration::from_secs(30), || async {
        (stats.totals().written == 2 * expected as u64).then_some(())
    })
    .await;
    let totals = running.stop().await;
    assert_eq!(totals.dropped, 0);
    assert_eq!(totals.dead_lettered, 0);
    assert_eq!(totals.written as usize, 2 * expected, "each target once");
    assert_eq!(a.point_count().await, expected);
    assert_eq!(b.point_count().await, expected);
    // A record is removed once both targets have it: none are left.
    let (records, _) = buffer_contents(data.path());
    assert!(records.is_empty(), "records left: {records:?}");
    sim.shutdown().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn write_config(path: &Path, data: &Path, ha_url: &str, influx_url: &str, monitor_port: u16) {
    std::fs::write(
        path,
        format!(
            "data_dir = {data:?}\n\
             [homeassistant]\nurl = \"{ha_url}\"\ntoken_file = \"token\"\n\
             [influxdb]\nurl = \"{influx_url}\"\ndatabase = \"killed\"\nflush_interval = \"100ms\"\nretry_min = \"50ms\"\nretry_max = \"200ms\"\n\
             [buffer]\nfsync_interval = \"50ms\"\n\
             [monitor]\nlisten = \"127.0.0.1:{monitor_port}\"\n"
        ),
    )
    .expect("write config");
}

/// A gauge or counter from the monitor's `/metrics`, when present.
async fn metric(port: u16, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_that_was_durable() {
    ha_ingestor::ensure_crypto_provider();
    let mut influx = Influxd::start("killed").await;
    influx.stop();
    let token = "kill-token";
    let sim = simulator(token, 500.0, 5000, 5).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("token");
    let config = dir.path().join("run.toml");
    let port = free_port();
    write_config(&config, &data, &sim.url(), &influx.url(), port);

    let mut run = Running::launch(&config)
        .log(dir.path().join("first.log"))
        .spawn();
    let durable = wait_for("records made durable", Duration::from_secs(30), || async {
        metric(port, "ha_ingestor_buffer_durable_sequence")
            .await
            .filter(|d| *d >= 5.0)
    })
    .await as u64;
    run.kill();
    assert!(!sim.finished(), "the kill did not come mid-stream");

    // Every record made durable before the kill is on disk, intact, none delivered.
    let (seqs, points) = buffer_contents(&data);
    assert!(
        seqs.len() as u64 >= durable
            && seqs[..durable as usize] == (1..=durable).collect::<Vec<_>>()[..],
        "durable records 1..={durable} missing: {seqs:?}"
    );
    assert!(points > 0);

    // InfluxDB back, the process restarted with a source that sends nothing new:
    // exactly the buffered points arrive.
    influx.restart().await;
    // influxd was killed right after creating the database, before that was on its disk.
    influx.create_database("killed").await;
    let quiet = simulator(token, 1.0, 0, 6).await;
    write_config(&config, &data, &quiet.url(), &influx.url(), port);
    let mut run = Running::launch(&config)
        .log(dir.path().join("second.log"))
        .spawn();
    wait_for(
        "the buffered points in InfluxDB",
        Duration::from_secs(30),
        || async { (influx.point_count().await as u64 >= points).then_some(()) },
    )
    .await;
    wait_for("the buffer emptied", Duration::from_secs(30), || async {
        metric(port, "ha_ingestor_buffer_records")
            .await
            .filter(|r| *r == 0.0)
    })
    .await;
    let exit = run.stop().await;
    assert!(exit.success(), "run exited with {exit}");
    assert_eq!(influx.point_count().await as u64, points);
    let (left, _) = buffer_contents(&data);
    assert!(left.is_empty(), "records left after delivery: {left:?}");
    sim.shutdown().await;
    quiet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_blocking_buffer_with_influxdb_unreachable_still_stops_and_accounts_every_point() {
    ha_ingestor::ensure_crypto_provider();
    let token = "full-token";
    let sim = simulator(token, 2000.0, 3000, 13).await;
    let data = tempfile::tempdir().expect("tempdir");
    // Nothing listens on a port just freed: every write fails to connect.
    let mut influx_cfg = InfluxConfig::v1(format!("http://127.0.0.1:{}", free_port()), "nowhere");
    influx_cfg.retry_min = Duration::from_millis(50);
    influx_cfg.retry_max = Duration::from_millis(200);
    let cfg = Config {
        data_dir: data.path().to_path_buf(),
        homeassistant: vec![HomeAssistantConfig::new(sim.url(), token)],
        influxdb: Some(influx_cfg),
        buffer: BufferConfig {
            enabled: true,
            max_bytes: 20_000,
            when_full: ha_ingestor::config::WhenFull::Block,
            fsync_interval: Duration::from_millis(100),
        },
        monitor: MonitorConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..MonitorConfig::default()
        },
        ..Config::default()
    };
    let running = app::start(&cfg).await.expect("starts");
    let stats = running.stats();
    wait_for("every event received", Duration::from_secs(30), || async {
        (sim.finished() && stats.totals().received == sim.emitted_count()).then_some(())
    })
    .await;
    let totals = tokio::time::timeout(Duration::from_secs(60), running.stop())
        .await
        .expect("stop returns although the buffer is full and blocks");
    let (seqs, in_buffer) = buffer_contents(data.path());
    assert!(!seqs.is_empty());
    assert_eq!(totals.written, 0);
    assert!(
        totals.dropped > 0,
        "points that never fit the full buffer are counted: {totals:?}"
    );
    assert_eq!(
        totals.encoded,
        in_buffer + totals.dropped,
        "every point is either in the buffer or counted as dropped"
    );
    sim.shutdown().await;
}

/// Config text of one Home Assistant source and two targets `a` and `b`.
fn two_targets_config(data: &Path, ha_url: &str, token: &str, a: &Influxd, b: &Influxd) -> Config {
    let target = |name: &str, db: &Influxd| {
        format!(
            "[[influxdb]]\nname = \"{name}\"\nurl = \"{}\"\ndatabase = \"{}\"\n\
             flush_interval = \"100ms\"\nretry_min = \"50ms\"\nretry_max = \"200ms\"\n",
            db.url(),
            db.database()
        )
    };
    let text = format!(
        "data_dir = {data:?}\n[homeassistant]\nurl = \"{ha_url}\"\ntoken = \"{token}\"\n\
         [buffer]\nfsync_interval = \"100ms\"\n[monitor]\nenabled = false\n{}{}",
        target("a", a),
        target("b", b),
    );
    Config::from_toml_with_env(&text, &data.join("config.toml"), &[]).expect("[[influxdb]] config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_each_target_resumes_at_its_own_position() {
    ha_ingestor::ensure_crypto_provider();
    let a = Influxd::start("resume_a").await;
    let mut b = Influxd::start("resume_b").await;
    b.stop();
    let token = "resume-token";
    let sim = simulator(token, 1000.0, 1000, 21).await;
    let data = tempfile::tempdir().expect("tempdir");

    // First run: a gets everything, b is down and gets nothing.
    let cfg = two_targets_config(data.path(), &sim.url(), token, &a, &b);
    let running = app::start(&cfg).await.expect("starts");
    let stats = running.stats();
    wait_for("every event received", Duration::from_secs(30), || async {
        (sim.finished() && stats.totals().received == sim.emitted_count()).then_some(())
    })
    .await;
    let expected = expected_points(&sim.emitted());
    wait_for("every point in a", Duration::from_secs(30), || async {
        (a.point_count().await == expected).then_some(())
    })
    .await;
    let first = running.stop().await;
    assert_eq!(first.written as usize, expected, "only a wrote: {first:?}");
    let (left, points) = buffer_contents(data.path());
    assert!(
        !left.is_empty() && points as usize == expected,
        "b's points wait"
    );

    // Second run, b back, no new events: b gets everything, a nothing again.
    b.restart().await;
    b.create_database("resume_b").await;
    let quiet = simulator(token, 1.0, 0, 22).await;
    let cfg = two_targets_config(data.path(), &quiet.url(), token, &a, &b);
    let running = app::start(&cfg).await.expect("restarts");
    let stats = running.stats();
    wait_for("every point in b", Duration::from_secs(60), || async {
        (b.point_count().await == expected).then_some(())
    })
    .await;
    wait_for(
        "b's deliveries counted",
        Duration::from_secs(30),
        || async { (stats.totals().written as usize >= expected).then_some(()) },
    )
    .await;
    let second = running.stop().await;
    assert_eq!(
        second.written as usize, expected,
        "a resumed after its saved position and sent nothing again: {second:?}"
    );
    assert_eq!(a.point_count().await, expected);
    let (left, _) = buffer_contents(data.path());
    assert!(left.is_empty(), "records left: {left:?}");
    sim.shutdown().await;
    quiet.shutdown().await;
}
