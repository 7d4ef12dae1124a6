//! `wss://`: the client's rustls setup against a TLS endpoint in front of the simulator.

use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::config::HomeAssistantConfig;
use ha_ingestor::simulator::{Simulator, SimulatorConfig, SimulatorHandle};
use ha_ingestor::source::homeassistant::client::{self, ClientError};
use tokio::net::{TcpListener, TcpStream};

/// A self-signed certificate for `localhost` and 127.0.0.1, valid until 2126, made for this test.
const CERT_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBmDCCAT6gAwIBAgIUIraHJpdIJoLFDkLnNtnUW1iZwb8wCgYIKoZIzj0EAwIw\n\
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNjIyMzE1M1oYDzIxMjYxMTAy\n\
MjIzMTUzWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\n\
PQMBBwNCAASwxzlUvTgbbIn1iS/3enc9xR0HCyS798rDYSodSs1CkuVuL6IVIZ1n\n\
dTCacFydoOKhWBOHyWdDSwGvo+6WIXwMo2wwajAdBgNVHQ4EFgQUcEeAHLZhZGOW\n\
V1jabzFW8DwjQvowHwYDVR0jBBgwFoAUcEeAHLZhZGOWV1jabzFW8DwjQvowGgYD\n\
VR0RBBMwEYIJbG9jYWxob3N0hwR/AAABMAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0E\n\
AwIDSAAwRQIhAIWFdgmMZkOC1tOg0IeFh5v7yKcjpeXkp4aEub+8aWBXAiACifCA\n\
wYyb0tw/9woGbr3a0rM8B/YXPQNiKqMEWSucIA==\n\
-----END CERTIFICATE-----\n";
/// Its private key (test only).
const KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgksWWaTJN2mHfv/HO\n\
GvgR5p5OSs8u1L1+IrUcAhAgHf6hRANCAASwxzlUvTgbbIn1iS/3enc9xR0HCyS7\n\
98rDYSodSs1CkuVuL6IVIZ1ndTCacFydoOKhWBOHyWdDSwGvo+6WIXwM\n\
-----END PRIVATE KEY-----\n";

/// Terminates TLS on a free port and forwards the bytes to the simulator.
async fn tls_front(sim: &SimulatorHandle) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<_> = rustls_pemfile::certs(&mut CERT_PEM.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut KEY_PEM.as_bytes())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = sim.addr();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

fn config(addr: std::net::SocketAddr) -> HomeAssistantConfig {
    let mut cfg =
        HomeAssistantConfig::new(format!("https://localhost:{}", addr.port()), "tls-token");
    cfg.connect_timeout = Duration::from_secs(5);
    cfg
}

#[tokio::test]
async fn wss_trusts_the_configured_ca_and_refuses_an_unknown_one() {
    let sim = Simulator::start(
        SimulatorConfig {
            token: "tls-token".into(),
            ..SimulatorConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = tls_front(&sim).await;

    let unknown = client::probe(&config(addr)).await.unwrap_err();
    assert!(matches!(unknown, ClientError::Tls(_)), "{unknown:?}");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, CERT_PEM).unwrap();
    let mut trusted = config(addr);
    trusted.tls.ca_file = Some(ca);
    let info = client::probe(&trusted).await.expect("trusted by ca_file");
    assert_eq!(
        info.url,
        format!("wss://localhost:{}/api/websocket", addr.port())
    );
    assert_eq!(info.ha_version, SimulatorConfig::default().ha_version);

    let mut insecure = config(addr);
    insecure.tls.insecure_skip_verify = true;
    client::probe(&insecure)
        .await
        .expect("verification skipped");
    sim.shutdown().await;
}
