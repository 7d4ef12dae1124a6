//! The notifiers over TLS against real servers: the webhook to a local HTTPS server whose
//! certificate is signed by a CA made here (trusted through `tls.ca_file`, refused
//! without it), the MQTT notifier to a private Mosquitto with a TLS listener that
//! requires a client certificate.

use crate::support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ha_ingestor::config::MqttTlsConfig;
use ha_ingestor::config::alerts::NotifierConfig;
use ha_ingestor::monitor::alerts::notify::{self, Notification, Status};
use support::mosquitto::{Mosquitto, Settings};
use support::wait_for;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

fn notification(rule: &str) -> Notification {
    Notification {
        rule: rule.to_string(),
        severity: "warning",
        status: Status::Firing,
        value: Some(1.0),
        summary: "tls test".into(),
        description: None,
        firing_since: None,
        at: "2026-11-27T01:02:03Z".into(),
    }
}

/// A CA (written to `dir/ca.pem`) and a server certificate for `localhost` it signed.
fn certificates(
    dir: &Path,
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("server certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write CA");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (vec![server.der().clone()], key)
}

/// Handshakes that failed and requests received by [`https_hook`].
#[derive(Default)]
struct Seen {
    failed_handshakes: AtomicUsize,
    requests: AtomicUsize,
}

/// A minimal HTTPS server on a free port: every request is answered 204 and counted.
async fn https_hook(dir: &Path) -> (String, Arc<Seen>) {
    let (certs, key) = certificates(dir);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Seen::default());
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counts = counts.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    counts.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then the body its Content-Length announces.
                loop {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counts.requests.fetch_add(1, Ordering::SeqCst);
                let _ = tls
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}/hook"), seen)
}

fn webhook(url: &str, tls: MqttTlsConfig) -> NotifierConfig {
    NotifierConfig::Webhook {
        name: "tls-hook".into(),
        url: url.into(),
        headers: BTreeMap::new(),
        timeout: Duration::from_secs(5),
        retries: 0,
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(100),
        tls,
        allow_insecure_transport: false,
    }
}

#[tokio::test]
async fn the_webhook_trusts_its_ca_file_and_refuses_an_unknown_ca() {
    ha_ingestor::ensure_crypto_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, seen) = https_hook(dir.path()).await;
    let stop = CancellationToken::new();

    // Without the CA: the handshake fails, nothing is posted.
    let (target, task) =
        notify::spawn(&webhook(&url, MqttTlsConfig::default()), None, stop.clone())
            .expect("builds");
    target.offer(&notification("untrusted"));
    wait_for("a refused handshake", WAIT, || {
        let n = seen.failed_handshakes.load(Ordering::SeqCst);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);

    // With ca_file: delivered.
    let trusted = MqttTlsConfig {
        ca_file: Some(dir.path().join("ca.pem")),
        ..MqttTlsConfig::default()
    };
    let (target2, task2) =
        notify::spawn(&webhook(&url, trusted), None, stop.clone()).expect("builds");
    target2.offer(&notification("trusted"));
    wait_for("the POST over TLS", WAIT, || {
        let n = seen.requests.load(Ordering::SeqCst);
        async move { (n >= 1).then_some(()) }
    })
    .await;
    stop.cancel();
    let _ = task.await;
    let _ = task2.await;
}

/// The retained message on `topic`, read with `mosquitto_sub` over TLS with the client certificate.
fn retained_over_tls(broker: &Mosquitto, topic: &str) -> Option<String> {
    let tls = broker.tls()?;
    let out = std::process::Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &broker.port().to_string()])
        .arg("--cafile")
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.client_cert)
        .arg("--key")
        .arg(&tls.client_key)
        .args(["-t", topic, "-C", "1", "-W", "2"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_notifier_publishes_over_tls_with_a_client_certificate() {
    let broker = Mosquitto::start(Settings {
        tls: true,
        require_client_cert: true,
        ..Settings::default()
    });
    let files = broker.tls().expect("tls files").clone();
    let stop = CancellationToken::new();
    let cfg = NotifierConfig::Mqtt {
        name: "tls-broker".into(),
        host: "localhost".into(),
        port: Some(broker.port()),
        topic: "alerts".into(),
        qos: 1,
        retain: true,
        client_id: "ha-ingestor-alerts-tls-test".into(),
        username: None,
        password: None,
        tls: Some(MqttTlsConfig {
            ca_file: Some(files.ca.clone()),
            cert_file: Some(files.client_cert.clone()),
            key_file: Some(files.client_key.clone()),
            insecure_skip_verify: false,
        }),
        allow_insecure_transport: false,
    };
    let (target, task) = notify::spawn(&cfg, None, stop.clone()).expect("builds");
    target.offer(&notification("over_tls"));
    let broker = Arc::new(broker);
    let body = wait_for("the retained alert over TLS", WAIT, || {
        let broker = broker.clone();
        async move {
            tokio::task::spawn_blocking(move || retained_over_tls(&broker, "alerts/over_tls"))
                .await
                .ok()
                .flatten()
        }
    })
    .await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["rule"], "over_tls");
    assert_eq!(json["status"], "firing");
    stop.cancel();
    let _ = task.await;
}
