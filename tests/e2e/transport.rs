//! Transport security as a user meets it: `check` refuses a token over `ws://` to a
//! remote host and names the key, and warns when it is allowed; the system trust store
//! is used besides the bundled roots; `insecure_skip_verify` shows as a metric and a
//! note in `/ready`.

use crate::support;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::Duration;

use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use support::{Influxd, Running, wait_for};

fn check(config: &std::path::Path, env: &[(&str, &std::path::Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    cmd.args(["check", "--config"]).arg(config);
    // Only the test's own trust store settings.
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run check")
}

#[test]
fn check_refuses_a_token_in_clear_to_a_remote_host_and_warns_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    let text = |extra: &str| {
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"ws://10.0.0.5:8123\"\ntoken = \"s3cret-token\"\nconnect_timeout = \"1s\"\n{extra}",
            dir.path().join("data")
        )
    };
    std::fs::write(&config, text("")).expect("config");
    let out = check(&config, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("config: INVALID")
            && stdout.contains("homeassistant.allow_insecure_transport"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret-token"));

    std::fs::write(&config, text("allow_insecure_transport = true\n")).expect("config");
    let out = check(&config, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("config: ok"), "{stdout}");
    assert!(
        stdout.contains("transport: warning: homeassistant.allow_insecure_transport")
            && stdout.contains("10.0.0.5"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_trust_store_is_trusted_besides_the_bundled_roots() {
    let influx = Influxd::start_tls("trusted").await;
    let ca = influx.ca_file().expect("a CA file");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[influxdb]\nurl = \"{}\"\ndatabase = \"trusted\"\n",
            dir.path().join("data"),
            influx.url()
        ),
    )
    .expect("config");
    let (c1, c2, ca2) = (config.clone(), config.clone(), ca.clone());
    // No ca_file and no system store entry: the certificate is unknown.
    let out = tokio::task::spawn_blocking(move || check(&c1, &[]))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("influxdb: FAILED"), "{stdout}");
    // The CA in the system store (SSL_CERT_FILE, as OpenSSL reads it): trusted.
    let out = tokio::task::spawn_blocking(move || check(&c2, &[("SSL_CERT_FILE", &ca2)]))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("influxdb: ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_verification_shows_as_a_metric_and_a_note_in_ready() {
    let sim = Simulator::start(
        SimulatorConfig {
            token: "t".into(),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator");
    let influx = Influxd::start_tls("unverified").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let monitor = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"{}\"\ntoken = \"t\"\n[monitor]\nlisten = \"127.0.0.1:{monitor}\"\n\
             [influxdb]\nurl = \"{}\"\ndatabase = \"unverified\"\n[influxdb.tls]\ninsecure_skip_verify = true\n",
            dir.path().join("data"),
            sim.url(),
            influx.url()
        ),
    )
    .expect("config");
    let mut run = Running::start(&config);
    let client = support::influxd::http_client();
    let metrics = wait_for("the gauge in /metrics", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let text = client
                .get(format!("http://127.0.0.1:{monitor}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("ha_ingestor_tls_verification_disabled")
                .then_some(text)
        }
    })
    .await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("ha_ingestor_tls_verification_disabled{"))
        .expect("a sample");
    assert!(
        line.contains("peer=\"influxdb[influxdb].tls\"") && line.ends_with(" 1"),
        "{line}"
    );
    let ready = client
        .get(format!("http://127.0.0.1:{monitor}/ready"))
        .send()
        .await
        .expect("GET /ready")
        .text()
        .await
        .expect("body");
    let ready: serde_json::Value = serde_json::from_str(&ready).expect("JSON");
    let notes = ready["notes"].as_array().cloned().unwrap_or_default();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .is_some_and(|n| n.contains("influxdb[influxdb].tls"))),
        "{ready}"
    );
    run.stop().await;
    sim.shutdown().await;
}
