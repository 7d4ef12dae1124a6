//! One face for rumqttc's MQTT 3.1.1 and MQTT 5 clients: what the client task needs
//! (poll the event loop, acknowledge, subscribe, disconnect), nothing more.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use rumqttc::v5::mqttbytes::v5 as v5b;

use crate::config::{MqttConfig, MqttProtocol};

/// What one poll of the event loop gave, in protocol-neutral terms.
#[derive(Debug)]
pub enum Polled {
    /// The broker accepted the connection.
    ConnAck {
        /// The broker still had our session (subscriptions and queued messages).
        session_present: bool,
    },
    /// A message.
    Publish(Received),
    /// The broker answered a SUBSCRIBE: one entry per filter, `None` for a refused one.
    SubAck(Vec<Option<u8>>),
    /// The broker answered an UNSUBSCRIBE.
    UnsubAck,
    /// Anything the task does not act on (pings, our own acks going out).
    Other,
}

/// One received PUBLISH.
#[derive(Debug)]
pub struct Received {
    /// The topic's bytes (MQTT says UTF-8; checked by the caller).
    pub topic: Bytes,
    /// The payload.
    pub payload: Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    /// A retained message (the broker's stored last value).
    pub retain: bool,
    /// Packet id, for the acknowledgement (QoS 1/2).
    pub pkid: u16,
}

/// The connection error kind of a PUBLISH whose topic is not UTF-8 that the client had to refuse
/// (MQTT 3.1.1 topics are strings to rumqttc; MQTT 5 ones are bytes and reach the task).
pub const INVALID_TOPIC: &str = "invalid_topic";

/// Why the connection failed; `kind` is a bounded label for metrics.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct ConnError {
    /// `refused`, `auth`, `tls`, `timeout`, `io`, `protocol`, `invalid_topic`.
    pub kind: &'static str,
    /// The client's message.
    pub detail: String,
}

/// A rumqttc client and its event loop, either protocol.
pub enum Conn {
    /// MQTT 3.1.1.
    V4 {
        /// Sends requests (acks, subscribes) to the event loop.
        client: rumqttc::AsyncClient,
        /// Owns the socket (boxed: the two event loops differ much in size).
        events: Box<rumqttc::EventLoop>,
    },
    /// MQTT 5.
    V5 {
        /// Sends requests (acks, subscribes) to the event loop.
        client: rumqttc::v5::AsyncClient,
        /// Owns the socket (boxed: the two event loops differ much in size).
        events: Box<rumqttc::v5::EventLoop>,
    },
}

/// Requests (acks mostly) that may wait for the event loop: the whole receive window and then some.
const REQUEST_CAPACITY: usize = u16::MAX as usize + 1024;

fn qos_of(n: u8) -> rumqttc::QoS {
    match n {
        0 => rumqttc::QoS::AtMostOnce,
        2 => rumqttc::QoS::ExactlyOnce,
        _ => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos5_of(n: u8) -> rumqttc::v5::mqttbytes::QoS {
    match n {
        0 => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        2 => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
        _ => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    }
}

impl Conn {
    /// Builds the client (no I/O yet: the first poll connects).
    pub fn new(
        cfg: &MqttConfig,
        client_id: &str,
        host: &str,
        port: u16,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Conn {
        let transport = match tls {
            Some(config) => {
                rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config))
            }
            None => rumqttc::Transport::Tcp,
        };
        let timeout_s = cfg.connect_timeout.as_secs().max(1);
        match cfg.protocol {
            MqttProtocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(client_id, host, port);
                o.set_transport(transport)
                    .set_keep_alive(cfg.keep_alive)
                    .set_clean_session(cfg.clean_session)
                    .set_manual_acks(true)
                    .set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size)
                    .set_request_channel_capacity(REQUEST_CAPACITY)
                    .set_pending_throttle(Duration::ZERO);
                if let Some(user) = &cfg.username {
                    o.set_credentials(user, cfg.password.as_deref().unwrap_or(""));
                }
                let (client, mut events) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
                let mut net = rumqttc::NetworkOptions::new();
                net.set_connection_timeout(timeout_s);
                events.set_network_options(net);
                Conn::V4 {
                    client,
                    events: Box::new(events),
                }
            }
            MqttProtocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(client_id, host, port);
                let expiry = if cfg.clean_session {
                    None
                } else {
                    Some(u32::try_from(cfg.session_expiry.as_secs()).unwrap_or(u32::MAX))
                };
                o.set_transport(transport)
                    .set_keep_alive(cfg.keep_alive)
                    .set_clean_start(cfg.clean_session)
                    .set_manual_acks(true)
                    .set_max_packet_size(Some(
                        u32::try_from(cfg.max_packet_size).unwrap_or(u32::MAX),
                    ))
                    .set_session_expiry_interval(expiry)
                    .set_receive_maximum(Some(cfg.receive_maximum))
                    .set_request_channel_capacity(REQUEST_CAPACITY)
                    .set_pending_throttle(Duration::ZERO)
                    .set_connection_timeout(timeout_s);
                if let Some(user) = &cfg.username {
                    o.set_credentials(user, cfg.password.as_deref().unwrap_or(""));
                }
                let (client, events) = rumqttc::v5::AsyncClient::new(o, REQUEST_CAPACITY);
                Conn::V5 {
                    client,
                    events: Box::new(events),
                }
            }
        }
    }

    /// Drives the connection one step: connects when disconnected, else reads, writes or pings.
    ///
    /// Cancel-safe for our use: a dropped poll keeps received packets queued in the
    /// event loop's state, and its writes only wait when the socket's buffer is full.
    pub async fn poll(&mut self) -> Result<Polled, ConnError> {
        match self {
            Conn::V4 { events, .. } => events.poll().await.map(polled_v4).map_err(v4_error),
            Conn::V5 { events, .. } => events.poll().await.map(polled_v5).map_err(v5_error),
        }
    }

    /// The next packet if one is there without waiting: first what the event loop already
    /// read and parsed (a socket read yields up to ten packets), taken without building a
    /// poll future (~2.7 KiB, a copy per message when made for each one); else one poll
    /// that is dropped at once if it would wait (cancel-safe, see [`Conn::poll`]).
    pub fn ready(&mut self) -> Option<Result<Polled, ConnError>> {
        let buffered = match self {
            Conn::V4 { events, .. } => events.state.events.pop_front().map(polled_v4),
            Conn::V5 { events, .. } => events.state.events.pop_front().map(polled_v5),
        };
        match buffered {
            Some(p) => Some(Ok(p)),
            None => self.poll().now_or_never(),
        }
    }

    /// Queues the acknowledgement of one QoS 1 (PUBACK) or QoS 2 (PUBREC) message; `false` when the queue is full.
    pub fn ack(&self, pkid: u16, qos: u8) -> bool {
        match self {
            Conn::V4 { client, .. } => {
                let p = rumqttc::Publish {
                    dup: false,
                    qos: qos_of(qos),
                    retain: false,
                    topic: String::new(),
                    pkid,
                    payload: Bytes::new(),
                };
                client.try_ack(&p).is_ok()
            }
            Conn::V5 { client, .. } => {
                let p = v5b::Publish {
                    dup: false,
                    qos: qos5_of(qos),
                    retain: false,
                    topic: Bytes::new(),
                    pkid,
                    payload: Bytes::new(),
                    properties: None,
                };
                client.try_ack(&p).is_ok()
            }
        }
    }

    /// Whether QoS 1 acknowledgements can go straight into the connection's write buffer
    /// ([`Conn::write_pubacks`]): MQTT 3.1.1 with a live connection (rumqttc exposes its
    /// network for that protocol only).
    pub fn direct_pubacks(&self) -> bool {
        matches!(self, Conn::V4 { events, .. } if events.network.is_some())
    }

    /// Writes one PUBACK per packet id into the connection's buffer and flushes once: one
    /// socket write for a whole run of acknowledgements instead of one per message. Only
    /// QoS 1 (rumqttc keeps no state for those with manual acks). A failed write leaves the
    /// error to the next poll, which reports the lost connection; the broker then sends the
    /// messages again.
    pub async fn write_pubacks(&mut self, pkids: &[u16], deadline: Duration) {
        let Conn::V4 { events, .. } = self else {
            return;
        };
        let Some(network) = events.network.as_mut() else {
            return;
        };
        for &pkid in pkids {
            if network
                .write(rumqttc::Packet::PubAck(rumqttc::PubAck::new(pkid)))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tokio::time::timeout(deadline, network.flush()).await;
    }

    /// Queues one SUBSCRIBE for every `(filter, qos)`.
    pub fn subscribe(&self, filters: &[(String, u8)]) -> Result<(), String> {
        match self {
            Conn::V4 { client, .. } => client
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos_of(*q))),
                )
                .map_err(|e| e.to_string()),
            Conn::V5 { client, .. } => client
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| v5b::Filter::new(f.clone(), qos5_of(*q))),
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues one UNSUBSCRIBE per filter.
    pub fn unsubscribe(&self, filters: &[String]) -> Result<(), String> {
        for f in filters {
            match self {
                Conn::V4 { client, .. } => client
                    .try_unsubscribe(f.clone())
                    .map_err(|e| e.to_string())?,
                Conn::V5 { client, .. } => client
                    .try_unsubscribe(f.clone())
                    .map_err(|e| e.to_string())?,
            }
        }
        Ok(())
    }

    /// Queues a DISCONNECT (the session stays with the broker when `clean_session` is off).
    pub fn disconnect(&self) {
        let _ = match self {
            Conn::V4 { client, .. } => client.try_disconnect().map_err(|e| e.to_string()),
            Conn::V5 { client, .. } => client.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

fn polled_v4(event: rumqttc::Event) -> Polled {
    match event {
        rumqttc::Event::Incoming(p) => match p {
            rumqttc::Packet::ConnAck(c) => Polled::ConnAck {
                session_present: c.session_present,
            },
            rumqttc::Packet::Publish(p) => Polled::Publish(Received {
                topic: Bytes::from(p.topic.into_bytes()),
                payload: p.payload,
                qos: p.qos as u8,
                retain: p.retain,
                pkid: p.pkid,
            }),
            rumqttc::Packet::SubAck(s) => Polled::SubAck(
                s.return_codes
                    .iter()
                    .map(|c| match c {
                        rumqttc::SubscribeReasonCode::Success(q) => Some(*q as u8),
                        rumqttc::SubscribeReasonCode::Failure => None,
                    })
                    .collect(),
            ),
            rumqttc::Packet::UnsubAck(_) => Polled::UnsubAck,
            _ => Polled::Other,
        },
        rumqttc::Event::Outgoing(_) => Polled::Other,
    }
}

fn polled_v5(event: rumqttc::v5::Event) -> Polled {
    match event {
        rumqttc::v5::Event::Incoming(p) => match p {
            v5b::Packet::ConnAck(c) => Polled::ConnAck {
                session_present: c.session_present,
            },
            v5b::Packet::Publish(p) => Polled::Publish(Received {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos as u8,
                retain: p.retain,
                pkid: p.pkid,
            }),
            v5b::Packet::SubAck(s) => Polled::SubAck(
                s.return_codes
                    .iter()
                    .map(|c| match c {
                        v5b::SubscribeReasonCode::Success(q) => Some(*q as u8),
                        _ => None,
                    })
                    .collect(),
            ),
            v5b::Packet::UnsubAck(_) => Polled::UnsubAck,
            _ => Polled::Other,
        },
        rumqttc::v5::Event::Outgoing(_) => Polled::Other,
    }
}

fn v4_error(e: rumqttc::ConnectionError) -> ConnError {
    use rumqttc::ConnectionError as E;
    let kind = match &e {
        E::ConnectionRefused(code) => match code {
            rumqttc::ConnectReturnCode::BadUserNamePassword
            | rumqttc::ConnectReturnCode::NotAuthorized => "auth",
            _ => "refused",
        },
        E::Tls(_) => "tls",
        E::NetworkTimeout | E::FlushTimeout => "timeout",
        E::Io(_) => "io",
        E::MqttState(rumqttc::StateError::Io(_)) => "io",
        E::MqttState(rumqttc::StateError::AwaitPingResp) => "ping_timeout",
        E::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::TopicNotUtf8,
        )) => INVALID_TOPIC,
        E::MqttState(
            rumqttc::StateError::ConnectionAborted | rumqttc::StateError::Deserialization(_),
        ) => "closed",
        _ => "protocol",
    };
    ConnError {
        kind,
        detail: e.to_string(),
    }
}

fn v5_error(e: rumqttc::v5::ConnectionError) -> ConnError {
    use rumqttc::v5::ConnectionError as E;
    let kind = match &e {
        E::ConnectionRefused(code) => match code {
            v5b::ConnectReturnCode::BadUserNamePassword | v5b::ConnectReturnCode::NotAuthorized => {
                "auth"
            }
            _ => "refused",
        },
        E::Tls(_) => "tls",
        E::Timeout(_) => "timeout",
        E::Io(_) => "io",
        E::MqttState(rumqttc::v5::StateError::Io(_)) => "io",
        E::MqttState(rumqttc::v5::StateError::AwaitPingResp) => "ping_timeout",
        E::MqttState(rumqttc::v5::StateError::Deserialization(
            rumqttc::v5::mqttbytes::Error::TopicNotUtf8,
        )) => INVALID_TOPIC,
        E::MqttState(
            rumqttc::v5::StateError::ConnectionAborted
            | rumqttc::v5::StateError::Deserialization(_),
        ) => "closed",
        _ => "protocol",
    };
    ConnError {
        kind,
        detail: e.to_string(),
    }
}
