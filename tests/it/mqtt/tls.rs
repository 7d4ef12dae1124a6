//! TLS with a private CA, a client certificate and a password file against a private
//! mosquitto that requires all three; a wrong password is refused and reported.

use crate::support;

use std::path::Path;
use std::time::Duration;

use ha_ingestor::app;
use ha_ingestor::config::Config;
use support::mosquitto::{Mosquitto, Settings};
use support::wait_for;

fn config(data: &Path, broker: &Mosquitto, password_file: &Path) -> Config {
    let tls = broker.tls().expect("the broker serves TLS");
    let text = format!(
        r#"
data_dir = "{data}"
[monitor]
enabled = false
[[mqtt]]
name = "secure"
url = "mqtts://127.0.0.1:{port}"
username = "ingestor"
password_file = "{password_file}"
reconnect_min = "100ms"
reconnect_max = "200ms"
[mqtt.tls]
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
[[mqtt.subscriptions]]
name = "t"
topic = "tls/#"
decoder = "value"
"#,
        data = data.display(),
        port = broker.port(),
        password_file = password_file.display(),
        ca = tls.ca.display(),
        cert = tls.client_cert.display(),
        key = tls.client_key.display(),
    );
    Config::from_toml_with_env(&text, Path::new("test.toml"), &[]).expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_over_tls_with_client_certificate_and_password_and_reports_a_wrong_password() {
    ha_ingestor::ensure_crypto_provider();
    let broker = Mosquitto::start(Settings {
        tls: true,
        require_client_cert: true,
        users: vec![("ingestor".into(), "s3cret".into())],
        ..Settings::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good");
    std::fs::write(&good, "s3cret\n").expect("write password");
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "wrong\n").expect("write password");

    // Right password, certificate and CA: connected and subscribed.
    let running = app::start(&config(&dir.path().join("a"), &broker, &good))
        .await
        .expect("starts");
    let stats = running.stats();
    wait_for(
        "the TLS source to connect and subscribe",
        Duration::from_secs(20),
        || {
            let r = stats.readiness();
            async move {
                r.sources
                    .get("mqtt:secure")
                    .is_some_and(|s| s.connected)
                    .then_some(())
            }
        },
    )
    .await;
    running.stop().await;

    // Wrong password: never connected, and the reason is said.
    let running = app::start(&config(&dir.path().join("b"), &broker, &bad))
        .await
        .expect("starts (the broker refuses later)");
    let stats = running.stats();
    let error = wait_for(
        "the refusal to be reported",
        Duration::from_secs(20),
        || {
            let r = stats.readiness();
            async move {
                r.sources
                    .get("mqtt:secure")
                    .and_then(|s| s.last_error.clone())
            }
        },
    )
    .await;
    assert!(
        !stats.readiness().sources["mqtt:secure"].connected,
        "connected with a wrong password"
    );
    assert!(
        error.contains("refused") || error.contains("BadUserNamePassword"),
        "{error}"
    );
    running.stop().await;
    drop(broker);
}
