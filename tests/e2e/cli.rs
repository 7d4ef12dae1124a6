//! The binary as a user runs it: `demo`, `check` (with its environment) and `bench`.

use std::net::SocketAddr;
use std::process::Command;

use ha_ingestor::simulator::{Simulator, SimulatorConfig};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
}

#[test]
fn demo_runs_without_servers_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let out = bin()
        .args([
            "demo",
            "--for",
            "3s",
            "--entities",
            "50",
            "--rate",
            "300",
            "--quiet",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("dropped=0"), "{stdout}");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(s["dropped"], 0);
    assert_eq!(s["received"], s["emitted"]);
    assert_eq!(s["emitted"], 900);
    let written = s["written"].as_u64().unwrap();
    assert!(written > 0);
    // The file sink holds exactly the written points.
    let mut lines = 0u64;
    for entry in std::fs::read_dir(dir.path().join("data/points")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines += text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count() as u64;
    }
    assert_eq!(lines, written);
}

#[test]
fn check_exits_2_on_an_invalid_config_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[influxdb]\nurl = \"http://127.0.0.1:1\"\ndatabse = \"x\"\n",
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("databse") && stdout.contains("line 3"),
        "{stdout}"
    );
}

/// A simulated Home Assistant that accepts only `token`, and a config for it in a temp
/// folder (`token_line` is written into `[homeassistant]` as it is; the monitor is off).
async fn simulator_and_config(
    token: &str,
    token_line: &str,
) -> (
    ha_ingestor::simulator::SimulatorHandle,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let sim = Simulator::start(
        SimulatorConfig {
            token: token.into(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ha-ingestor.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"{}\"\n{token_line}[monitor]\nenabled = false\n",
            dir.path().join("data"),
            sim.url()
        ),
    )
    .unwrap();
    (sim, dir, cfg)
}

/// Runs the binary off the runtime (the simulator needs it meanwhile).
async fn output_of(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_3_when_the_token_is_refused() {
    let (sim, _dir, cfg) =
        simulator_and_config("the-right-token", "token = \"a-wrong-token\"\n").await;
    let mut command = bin();
    command.arg("check").arg("--config").arg(&cfg);
    let out = output_of(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("refused the access token"), "{stdout}");
    assert!(
        !stdout.contains("a-wrong-token"),
        "the token must never be printed: {stdout}"
    );
    sim.shutdown().await;
}

/// In a Kubernetes pod behind a Service named `ha-ingestor`: the config path comes
/// from `HA_INGESTOR_CONFIG`, the Service's variables are ignored, and a numeric
/// token from the environment is the token's text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_takes_the_path_from_the_environment_beside_kubernetes_service_variables() {
    let (sim, _dir, cfg) = simulator_and_config("98765432", "").await;
    let mut command = bin();
    command
        .arg("check")
        .env("HA_INGESTOR_CONFIG", &cfg)
        .env("HA_INGESTOR_SERVICE_HOST", "10.96.0.17")
        .env("HA_INGESTOR_SERVICE_PORT", "9464")
        .env("HA_INGESTOR_PORT", "tcp://10.96.0.17:9464")
        .env("HA_INGESTOR_PORT_9464_TCP", "tcp://10.96.0.17:9464")
        .env("HA_INGESTOR_PORT_9464_TCP_PORT", "9464")
        .env("HA_INGESTOR_WORKER_THREADS", "3")
        .env("HA_INGESTOR_HOMEASSISTANT__TOKEN", "98765432");
    let out = output_of(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("config: ok") && stdout.contains("homeassistant: ok"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("98765432") && !stderr.contains("98765432"),
        "the token must never be printed: {stdout}\n{stderr}"
    );
    sim.shutdown().await;
}

/// A worker-thread count the runtime cannot use stops the command before anything
/// starts, naming the variable and the value (exit 2, as a config error).
#[test]
fn a_bad_worker_thread_count_is_refused_with_the_variable_named() {
    for bad in ["0", "many"] {
        let out = bin()
            .args(["check", "--config", "/nonexistent.toml"])
            .env("HA_INGESTOR_WORKER_THREADS", bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("HA_INGESTOR_WORKER_THREADS={bad:?}")),
            "{stderr}"
        );
    }
}

#[test]
fn bench_pipeline_reports_json() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/fixtures/ha-ws-frames.jsonl"
    );
    let out = bin()
        .args([
            "bench",
            "pipeline",
            "--seconds",
            "0.2",
            "--json",
            "--input",
            fixtures,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["decode_errors"], 0);
    assert!(r["events"].as_u64().unwrap() >= 397, "{r}");
    assert!(r["events_per_sec"].as_f64().unwrap() > 0.0);
    assert!(
        r["allocs_per_event"].as_f64().is_some(),
        "the binary counts allocations: {r}"
    );
}

/// `ha-ingestor check | head -1`: once the reader is gone, printing ends the process
/// quietly (as SIGPIPE ends `cat`), without a panic about a broken pipe.
#[test]
fn printing_to_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", dir.path().join("data")),
    )
    .unwrap();
    for args in [&["check", "--config"][..], &["completions", "bash"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        // The reader is gone before the first line is printed.
        drop(reader);
        let mut cmd = bin();
        cmd.args(args);
        if args[0] == "check" {
            cmd.arg(&config);
        }
        let out = cmd
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?} ended with {}: {stderr}",
            out.status
        );
    }
}
