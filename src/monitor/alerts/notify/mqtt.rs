//! Publishes each [`Notification`] as JSON to `<topic>/<rule>` on an MQTT
//! broker, retained by default: the topic then always holds each rule's last
//! state (`firing` or `resolved`) for whoever subscribes later.
//!
//! One task owns the connection (rumqttc's event loop) and polls it all the
//! time, so the session is kept alive and reconnected by itself, with the
//! program's [`Backoff`] (exponential with jitter, 1 s growing to 30 s). A
//! notification counts as sent when the broker acknowledged it (PUBACK for
//! QoS 1, PUBCOMP for QoS 2) or, with QoS 0, when it was written.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Notification, Status, failed, sent};
use crate::backoff::Backoff;
use crate::config::alerts::NotifierConfig;

/// Publishes that may wait in the client for the connection.
const CLIENT_QUEUE: usize = 64;
/// First delay before reconnecting to the broker.
const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Longest delay before reconnecting to the broker.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// The MQTT notifier.
pub struct Mqtt {
    name: String,
    topic: String,
    qos: QoS,
    retain: bool,
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Mqtt {
    /// Sets up the client (it connects once running).
    pub fn new(cfg: &NotifierConfig) -> Result<Self, String> {
        let NotifierConfig::Mqtt {
            name,
            host,
            port,
            topic,
            qos,
            retain,
            client_id,
            username,
            password,
            tls,
            allow_insecure_transport: _,
        } = cfg
        else {
            return Err("not an MQTT notifier".into());
        };
        let port = port.unwrap_or(if tls.is_some() { 8883 } else { 1883 });
        let mut options = MqttOptions::new(client_id.clone(), host.clone(), port);
        if let Some(tls) = tls {
            crate::ensure_crypto_provider();
            let config = crate::tls::client_config_for(tls, &format!("alerts.notifiers[{name}]"))
                .map_err(|e| e.to_string())?;
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(config)),
            ));
        }
        options.set_keep_alive(Duration::from_secs(30));
        if let Some(user) = username {
            options.set_credentials(user.clone(), password.clone().unwrap_or_default());
        }
        let qos = rumqttc::qos(*qos).map_err(|e| e.to_string())?;
        let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
        Ok(Mqtt {
            name: name.clone(),
            topic: topic.trim_end_matches('/').to_string(),
            qos,
            retain: *retain,
            client,
            eventloop,
        })
    }

    /// Connects, publishes `n` once — not retained, so a test leaves no state on the
    /// broker — and waits for the broker's acknowledgement (as [`Mqtt::run`] counts a
    /// send), within `within`; for `ha-ingestor alerts test`. The first connection
    /// error ends it: no reconnecting.
    pub async fn send_once(mut self, n: &Notification, within: Duration) -> Result<(), String> {
        let payload = serde_json::to_vec(n).map_err(|e| e.to_string())?;
        let topic = format!("{}/{}", self.topic, n.rule);
        self.client
            .try_publish(topic, self.qos, false, payload)
            .map_err(|e| e.to_string())?;
        let qos = self.qos;
        let acknowledged = async {
            loop {
                match self.eventloop.poll().await {
                    Ok(event) => {
                        if matches!(
                            (event, qos),
                            (Event::Outgoing(Outgoing::Publish(_)), QoS::AtMostOnce)
                                | (Event::Incoming(Packet::PubAck(_)), QoS::AtLeastOnce)
                                | (Event::Incoming(Packet::PubComp(_)), QoS::ExactlyOnce)
                        ) {
                            return Ok(());
                        }
                    }
                    Err(error) => return Err(format!("broker: {error}")),
                }
            }
        };
        let result = match tokio::time::timeout(within, acknowledged).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no acknowledgement from the broker within {within:?}"
            )),
        };
        if result.is_ok() {
            // A clean DISCONNECT, so the broker does not publish a will or log a lost client.
            let _ = self.client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(event) = self.eventloop.poll().await {
                    if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        result
    }

    /// Publishes notifications until `shutdown`, keeping the connection up meanwhile.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Notification>, shutdown: CancellationToken) {
        // Statuses of publishes not yet acknowledged, oldest first.
        let mut unacked: VecDeque<Status> = VecDeque::new();
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = self.client.try_disconnect();
                    return;
                }
                n = rx.recv() => {
                    let Some(n) = n else { return };
                    let payload = serde_json::to_vec(&n).unwrap_or_default();
                    let topic = format!("{}/{}", self.topic, n.rule);
                    match self.client.try_publish(topic, self.qos, self.retain, payload) {
                        Ok(()) => unacked.push_back(n.status),
                        Err(error) => {
                            failed(&self.name, "queue_full");
                            tracing::warn!(message = "Alert notification to MQTT dropped.", notifier = %self.name, rule = %n.rule, %error);
                        }
                    }
                }
                event = self.eventloop.poll() => match event {
                    Ok(event) => {
                        if failing {
                            tracing::info!(message = "Alert MQTT broker reachable again.", notifier = %self.name);
                            failing = false;
                        }
                        backoff.reset();
                        let done = matches!(
                            (event, self.qos),
                            (Event::Outgoing(Outgoing::Publish(_)), QoS::AtMostOnce)
                                | (Event::Incoming(Packet::PubAck(_)), QoS::AtLeastOnce)
                                | (Event::Incoming(Packet::PubComp(_)), QoS::ExactlyOnce)
                        );
                        if done && let Some(status) = unacked.pop_front() {
                            sent(&self.name, status);
                        }
                    }
                    Err(error) => {
                        failed(&self.name, "connection");
                        if !failing {
                            tracing::warn!(message = "Alert MQTT broker unreachable; retrying.", notifier = %self.name, %error);
                            failing = true;
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff.next_delay()) => {}
                        }
                    }
                },
            }
        }
    }
}
