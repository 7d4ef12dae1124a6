//! `ha-ingestor run` as a service: a real process against the simulator, JSON logs,
//! graceful shutdown on SIGTERM, then `replay --to-config` of its files into a real influxd.

use crate::support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use support::{Influxd, Running, expected_points, wait_for};

fn point_lines(dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            lines.extend(
                text.lines()
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_files_logs_json_stops_on_sigterm_and_replays() {
    ha_ingestor::ensure_crypto_provider();
    let token = "run-test-token";
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 40,
            rate: 400.0,
            token: token.into(),
            seed: 3,
            max_events: Some(600),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n[homeassistant]\nurl = \"{}\"\ntoken_file = \"token\"\n[monitor]\nlisten = \"127.0.0.1:0\"\n",
            sim.url()
        ),
    )
    .unwrap();

    let mut run = Running::launch(&config).json().spawn();

    // Every state change that HA would write, plus every other event, ends up in the files.
    wait_for(
        "the simulator to finish",
        Duration::from_secs(30),
        || async { sim.finished().then_some(()) },
    )
    .await;
    let expected = expected_points(&sim.emitted());
    let points = data.join("points");
    wait_for(
        "every point in the files",
        Duration::from_secs(30),
        || async { (point_lines(&points).len() >= expected).then_some(()) },
    )
    .await;

    // SIGTERM: a clean, prompt exit.
    let status = run.stop().await;
    let stderr = run.log();
    assert!(status.success(), "run exited with {status}: {stderr}");
    assert_eq!(
        point_lines(&points).len(),
        expected,
        "exactly the expected points"
    );

    // Logs are JSON lines, and the token never appears in them.
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(logs.iter().any(|l| l["message"] == "Started."), "{stderr}");
    assert!(logs.iter().any(|l| l["message"] == "Stopped."), "{stderr}");
    assert!(!stderr.contains(token), "the token leaked into the logs");

    // The files replay into InfluxDB, every point once.
    let influx = Influxd::start("replayed").await;
    let replay_config = dir.path().join("replay.toml");
    std::fs::write(
        &replay_config,
        format!(
            "data_dir = {data:?}\n[influxdb]\nurl = \"{}\"\ndatabase = \"replayed\"\n",
            influx.url()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
            .args(["replay", "--to-config"])
            .arg(&replay_config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{expected} points")), "{stdout}");
    assert_eq!(influx.point_count().await, expected);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_share_the_data_directory() {
    let sim = Simulator::start(
        SimulatorConfig {
            token: "t".into(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"{}\"\ntoken = \"t\"\n[monitor]\nenabled = false\n",
            dir.path().join("data"),
            sim.url()
        ),
    )
    .unwrap();
    let mut first = Running::start(&config);
    wait_for(
        "the first process to connect",
        Duration::from_secs(20),
        || async { (sim.clients() == 1).then_some(()) },
    )
    .await;
    let config2 = config.clone();
    let second = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
            .args(["run", "--config"])
            .arg(&config2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("in use by another ha-ingestor process"),
        "{stderr}"
    );
    first.kill();
    sim.shutdown().await;
}

/// Twenty monitor clients that never finish their headers do not hold the process after
/// SIGTERM: it exits within the monitor's shutdown deadline, well before their header
/// timeout would have closed them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_not_held_by_slow_monitor_clients() {
    use tokio::io::AsyncWriteExt as _;
    let sim = Simulator::start(
        SimulatorConfig {
            token: "t".into(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let monitor = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"{}\"\ntoken = \"t\"\n[monitor]\nlisten = \"{monitor}\"\n",
            dir.path().join("data"),
            sim.url()
        ),
    )
    .unwrap();
    let mut run = Running::start(&config);
    run.wait_http(&format!("http://{monitor}/health"), Duration::from_secs(20))
        .await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(monitor).await.unwrap();
        s.write_all(b"GET /api/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    run.signal(libc::SIGTERM);
    // Below the header timeout: waiting on the clients would end only once it closed them.
    let deadline = ha_ingestor::app::MONITOR_DEADLINE + Duration::from_secs(5);
    assert!(deadline < ha_ingestor::monitor::http::HEADER_READ_TIMEOUT);
    let status = run.wait_exit(deadline).await;
    assert!(status.success(), "run exited with {status}: {}", run.log());
    drop(slow);
    sim.shutdown().await;
}
