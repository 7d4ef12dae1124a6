//! A PUBLISH whose topic is not UTF-8 must never block the session.
//!
//! - Mosquitto itself refuses such a PUBLISH from a publisher (it closes the publisher's
//!   connection as a malformed packet, as MQTT 3.1.1 §1.5.3 and MQTT 5 §1.5.4 require),
//!   so through Mosquitto none can reach a subscriber: proven with a raw client.
//! - A broker that forwards one anyway (played here by a scripted broker on a loopback
//!   socket): over MQTT 5 the message is counted, set aside as a dead letter with its
//!   topic and acknowledged, and the next message flows; over MQTT 3.1.1 the client must
//!   close the connection, and the source reports why and reconnects with back-off.

use crate::support;

use std::path::Path;
use std::time::Duration;

use ha_ingestor::app;
use ha_ingestor::config::Config;
use support::mosquitto::{Mosquitto, Settings};
use support::wait_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BAD_TOPIC: &[u8] = b"probe/\xff\xfe/temp";
const IO_DEADLINE: Duration = Duration::from_secs(20);

fn config(data: &Path, port: u16, protocol: &str) -> Config {
    let text = format!(
        r#"
data_dir = "{data}"
[monitor]
enabled = false
[[mqtt]]
url = "mqtt://127.0.0.1:{port}"
protocol = "{protocol}"
reconnect_min = "200ms"
reconnect_max = "1s"
[[mqtt.subscriptions]]
name = "probe"
topic = "probe/#"
decoder = "json"
pattern = "probe/{{device}}"
split = "per_device"
state_key = "v"
"#,
        data = data.display(),
    );
    Config::from_toml_with_env(&text, Path::new("test.toml"), &[]).expect("test config is valid")
}

// ---- MQTT packets as raw bytes (the point is to send what a conforming client cannot) ----

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut d = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            d |= 0x80;
        }
        out.push(d);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

fn connect(client_id: &str, v5: bool) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.push(if v5 { 5 } else { 4 });
    body.push(0x02); // clean session
    body.extend_from_slice(&30u16.to_be_bytes());
    if v5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&string(client_id.as_bytes()));
    packet(0x10, &body)
}

fn publish_qos1(topic: &[u8], pkid: u16, payload: &[u8], v5: bool) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(&pkid.to_be_bytes());
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x32, &body)
}

/// Reads one packet: (first byte, body); `None` once the peer closed the connection.
async fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let read = async {
        let first = s.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let d = s.read_u8().await.ok()?;
            len |= ((d & 0x7f) as usize) << shift;
            shift += 7;
            if d & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.ok()?;
        Some((first, body))
    };
    tokio::time::timeout(IO_DEADLINE, read)
        .await
        .expect("a packet or a close within the deadline")
}

/// Mosquitto closes the connection of a publisher that sends a non-UTF-8 topic, acknowledging
/// nothing, over both protocol versions; the subscriber (our source) gets only the valid message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_refuses_a_non_utf8_topic_so_none_reaches_the_source() {
    ha_ingestor::ensure_crypto_provider();
    let broker = Mosquitto::start(Settings::default());
    let data = tempfile::tempdir().expect("tempdir");
    let running = app::start(&config(data.path(), broker.port(), "v3.1.1"))
        .await
        .expect("starts");
    let stats = running.stats();
    wait_for("the MQTT source to connect", IO_DEADLINE, || {
        let ready = stats.readiness();
        async move {
            ready
                .sources
                .get("mqtt:mqtt")
                .is_some_and(|s| s.connected)
                .then_some(())
        }
    })
    .await;

    for (v5, id) in [(false, "bad-topic-v4"), (true, "bad-topic-v5")] {
        let mut s = TcpStream::connect(("127.0.0.1", broker.port()))
            .await
            .expect("connect to mosquitto");
        s.write_all(&connect(id, v5)).await.expect("CONNECT");
        let (first, _) = read_packet(&mut s).await.expect("CONNACK");
        assert_eq!(first, 0x20, "CONNACK");
        s.write_all(&publish_qos1(BAD_TOPIC, 7, br#"{"v":1}"#, v5))
            .await
            .expect("PUBLISH");
        // No PUBACK: MQTT 3.1.1 gets the socket closed, MQTT 5 a DISCONNECT "malformed packet" first.
        match read_packet(&mut s).await {
            None => assert!(!v5, "MQTT 5 gets a DISCONNECT with a reason"),
            Some((first, body)) => {
                assert!(v5, "MQTT 3.1.1 gets no reply, only a closed socket");
                assert_eq!(
                    (first, body.first()),
                    (0xe0, Some(&0x81)),
                    "DISCONNECT 0x81"
                );
                assert!(
                    read_packet(&mut s).await.is_none(),
                    "then the socket closes"
                );
            }
        }
    }
    // A valid message after the refused ones arrives, and is the only thing that does.
    let mut s = TcpStream::connect(("127.0.0.1", broker.port()))
        .await
        .expect("connect to mosquitto");
    s.write_all(&connect("good-topic", false))
        .await
        .expect("CONNECT");
    read_packet(&mut s).await.expect("CONNACK");
    s.write_all(&publish_qos1(b"probe/dev1", 8, br#"{"v":2}"#, false))
        .await
        .expect("PUBLISH");
    let (first, body) = read_packet(&mut s).await.expect("PUBACK");
    assert_eq!((first, body.as_slice()), (0x40, &[0u8, 8][..]));
    wait_for("the valid message to be decoded", IO_DEADLINE, || {
        let received = stats.totals().received;
        async move { (received >= 1).then_some(()) }
    })
    .await;
    let totals = running.stop().await;
    assert_eq!(totals.received, 1, "{totals:?}");
    assert_eq!(totals.decode_errors, 0, "{totals:?}");
    assert!(
        broker.log().contains("malformed packet"),
        "{}",
        broker.log()
    );
}

/// A scripted broker on a loopback port: one session at a time, as the test directs.
struct Scripted {
    listener: TcpListener,
    v5: bool,
}

impl Scripted {
    async fn bind(v5: bool) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Scripted { listener, v5 }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().expect("addr").port()
    }

    /// Accepts the client's connection, answers CONNECT and SUBSCRIBE; returns the socket.
    async fn session(&self) -> TcpStream {
        let (mut s, _) = tokio::time::timeout(IO_DEADLINE, self.listener.accept())
            .await
            .expect("the client connects within the deadline")
            .expect("accept");
        let (first, _) = read_packet(&mut s).await.expect("CONNECT");
        assert_eq!(first, 0x10);
        let connack: &[u8] = if self.v5 {
            &[0x20, 3, 0, 0, 0]
        } else {
            &[0x20, 2, 0, 0]
        };
        s.write_all(connack).await.expect("CONNACK");
        let (first, body) = read_packet(&mut s).await.expect("SUBSCRIBE");
        assert_eq!(first, 0x82, "SUBSCRIBE");
        let mut suback = body[..2].to_vec();
        if self.v5 {
            suback.push(0);
        }
        suback.push(1); // granted QoS 1 for the one filter
        s.write_all(&packet(0x90, &suback)).await.expect("SUBACK");
        s
    }

    /// Waits for the PUBACK of `pkid` (answering pings); `false` if the client closed first.
    async fn puback(&self, s: &mut TcpStream, pkid: u16) -> bool {
        loop {
            match read_packet(s).await {
                None => return false,
                Some((0x40, body)) if body[..2] == pkid.to_be_bytes() => return true,
                Some((0x40, body)) => panic!("PUBACK for {body:?}, expected {pkid}"),
                Some((0xc0, _)) => s.write_all(&[0xd0, 0]).await.expect("PINGRESP"),
                Some((first, _)) => panic!("unexpected packet {first:#x}"),
            }
        }
    }
}

fn dead_letters(data: &Path) -> String {
    let mut text = String::new();
    if let Ok(dir) = std::fs::read_dir(data.join("dead-letter")) {
        for e in dir.flatten() {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    text
}

/// MQTT 5 hands the topic over as bytes: the message is counted, dead-lettered with its
/// topic and acknowledged, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt5_a_non_utf8_topic_is_dead_lettered_and_acknowledged() {
    ha_ingestor::ensure_crypto_provider();
    let broker = Scripted::bind(true).await;
    let data = tempfile::tempdir().expect("tempdir");
    let running = app::start(&config(data.path(), broker.port(), "v5"))
        .await
        .expect("starts");
    let mut s = broker.session().await;
    s.write_all(&publish_qos1(BAD_TOPIC, 7, br#"{"v":1}"#, true))
        .await
        .expect("PUBLISH");
    assert!(
        broker.puback(&mut s, 7).await,
        "the bad message is acknowledged"
    );
    s.write_all(&publish_qos1(b"probe/dev1", 8, br#"{"v":2}"#, true))
        .await
        .expect("PUBLISH");
    assert!(broker.puback(&mut s, 8).await, "the next message flows");
    let totals = running.stop().await;
    assert_eq!(totals.decode_errors, 1, "{totals:?}");
    assert_eq!(totals.received, 1, "{totals:?}");
    let letters = dead_letters(data.path());
    assert!(letters.contains("invalid_topic"), "{letters}");
    assert!(letters.contains("probe/\u{fffd}\u{fffd}/temp"), "{letters}");
}

/// MQTT 3.1.1 obliges the client to close the connection on a non-UTF-8 topic: the source
/// counts it as `invalid_topic`, reconnects after its back-off (no busy loop) and tells
/// the user to switch to MQTT 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mqtt311_a_non_utf8_topic_is_counted_and_the_client_reconnects() {
    ha_ingestor::ensure_crypto_provider();
    let broker = Scripted::bind(false).await;
    let data = tempfile::tempdir().expect("tempdir");
    let running = app::start(&config(data.path(), broker.port(), "v3.1.1"))
        .await
        .expect("starts");
    let mut s = broker.session().await;
    s.write_all(&publish_qos1(BAD_TOPIC, 7, br#"{"v":1}"#, false))
        .await
        .expect("PUBLISH");
    assert!(
        !broker.puback(&mut s, 7).await,
        "MQTT 3.1.1 cannot acknowledge it"
    );
    let closed = std::time::Instant::now();
    // The next session is clean of it (as a broker that drops it would be): messages flow again.
    let mut s = broker.session().await;
    assert!(
        closed.elapsed() >= Duration::from_millis(150),
        "reconnects after the back-off, not at once"
    );
    s.write_all(&publish_qos1(b"probe/dev1", 8, br#"{"v":2}"#, false))
        .await
        .expect("PUBLISH");
    assert!(broker.puback(&mut s, 8).await);
    let totals = running.stop().await;
    assert_eq!(totals.decode_errors, 1, "{totals:?}");
    assert_eq!(totals.received, 1, "{totals:?}");
    let letters = dead_letters(data.path());
    assert!(letters.contains("invalid_topic"), "{letters}");
}
