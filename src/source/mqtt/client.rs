//! The MQTT client task: one per broker, reading its socket continuously.
//!
//! - **Never stops reading.** A broker whose per-client queue fills drops QoS 1
//!   messages while still acknowledging the publisher; so the task keeps polling
//!   and hands every event on towards the durable buffer.
//! - **Acknowledges late.** Manual acks: a QoS 1/2 message is acknowledged only
//!   once every event emitted up to its processing is released by the handoff
//!   tracker (durable in the buffer) and no decoder holds part of it
//!   ([`AckQueue`]); acknowledgements go out in arrival order, a run at a time.
//! - **Persistent session.** Clean session off and a stable client id: messages
//!   published while we are away (or not yet acknowledged) wait at the broker.
//!   When CONNACK says the broker has no session, the task subscribes again.
//! - **Reconnects** with exponential back-off and jitter; an unacknowledged
//!   message is forgotten on a lost connection (the broker sends it again).
//! - **Bad input** (undecodable payload, non-UTF-8 topic) is counted per
//!   subscription and reason, set aside as a dead letter with its topic, and
//!   acknowledged so it never blocks the session.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use metrics::{Counter, Gauge};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::acks::{AckQueue, Unacked};
use super::conn::{Conn, ConnError, INVALID_TOPIC, Polled, Received};
use super::decode::{Decoders, Message};
use crate::config::{MqttConfig, TlsConfig};
use crate::dead_letter::DeadLetter;
use crate::event::{Event, Timestamp};
use crate::feedback::handoff::Tracker;
use crate::monitor::Stats;
use crate::monitor::metrics as names;
use crate::source::SourceContext;

/// Messages taken from the event loop without waiting, before their events go to the
/// pipeline in one send and the ready acknowledgements go out: one wake-up of the pipeline
/// and one pass over the acknowledgement queue per batch instead of per message.
const READ_BATCH: usize = 512;

/// Events sent to the pipeline per channel reservation (well below its capacity).
const SEND_CHUNK: usize = 256;

/// Config reloads that may wait for the task (a second SIGHUP while one is applied).
const RELOAD_QUEUE: usize = 4;

/// At shutdown, how long the task still waits for its last events to be released so it can acknowledge them.
pub const ACK_DRAIN_DEADLINE: Duration = Duration::from_secs(3);

/// Why an MQTT source could not be built; the message names the broker and the setting.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// A setting is unusable (URL, TLS files, subscriptions).
    #[error("mqtt[{broker}]: {message}")]
    Config {
        /// The broker's `name`.
        broker: String,
        /// What is wrong.
        message: String,
    },
}

/// One broker's source, built from config (failing early) and started with [`MqttSource::run`].
pub struct MqttSource {
    cfg: MqttConfig,
    decoders: Decoders,
    client_id: String,
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    reload_tx: mpsc::Sender<MqttConfig>,
    reload_rx: mpsc::Receiver<MqttConfig>,
}

/// Hands a re-read `[[mqtt]]` section to a running source (config reload on SIGHUP).
#[derive(Clone, Debug)]
pub struct MqttReload {
    name: String,
    tx: mpsc::Sender<MqttConfig>,
}

impl MqttReload {
    /// The broker's `name`, which ties a re-read section to its running source.
    pub fn broker(&self) -> &str {
        &self.name
    }

    /// Queues the new section; `false` if the source has stopped or a reload is already queued.
    pub fn send(&self, cfg: MqttConfig) -> bool {
        self.tx.try_send(cfg).is_ok()
    }
}

impl MqttSource {
    /// Compiles the subscriptions, reads the TLS files and settles the client id.
    pub fn build(cfg: &MqttConfig, data_dir: &Path) -> Result<MqttSource, MqttError> {
        let error = |message: String| MqttError::Config {
            broker: cfg.name.clone(),
            message,
        };
        let (host, port, use_tls) = cfg.endpoint().map_err(|e| error(format!("url: {e}")))?;
        let decoders =
            Decoders::new(&cfg.subscriptions).map_err(|e| error(format!("subscriptions: {e}")))?;
        let tls = if use_tls {
            let shared = TlsConfig {
                ca_file: cfg.tls.ca_file.clone(),
                insecure_skip_verify: cfg.tls.insecure_skip_verify,
            };
            let config = crate::tls::client_config_with_cert(
                &shared,
                cfg.tls.cert_file.as_deref(),
                cfg.tls.key_file.as_deref(),
                &format!("mqtt[{}]", cfg.name),
            )
            .map_err(|e| error(e.to_string()))?;
            Some(Arc::new(config))
        } else {
            None
        };
        let client_id = cfg
            .client_id
            .clone()
            .unwrap_or_else(|| default_client_id(&cfg.name, data_dir));
        let (reload_tx, reload_rx) = mpsc::channel(RELOAD_QUEUE);
        Ok(MqttSource {
            cfg: cfg.clone(),
            decoders,
            client_id,
            host,
            port,
            tls,
            reload_tx,
            reload_rx,
        })
    }

    /// A handle that forwards a re-read config section to this source once it runs.
    pub fn reloader(&self) -> MqttReload {
        MqttReload {
            name: self.cfg.name.clone(),
            tx: self.reload_tx.clone(),
        }
    }

    /// The client id the broker knows this source by.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The source name in metrics, logs and `/ready`: `mqtt:<broker>`.
    pub fn name(&self) -> String {
        format!("mqtt:{}", self.cfg.name)
    }

    /// Runs until `ctx.shutdown`: connects, subscribes, reads, decodes, acknowledges, reconnects.
    pub async fn run(self, ctx: SourceContext) {
        let name: Arc<str> = Arc::from(self.name());
        let tracker = ctx.handoff.register(&name);
        let safe_rx = tracker.watch();
        ctx.stats.register_source(&name);
        let conn = Conn::new(
            &self.cfg,
            &self.client_id,
            &self.host,
            self.port,
            self.tls.clone(),
        );
        tracing::info!(
            message = "Connecting to the MQTT broker.",
            source = %name,
            url = %crate::config::redact_url(&self.cfg.url),
            client_id = %self.client_id,
            protocol = ?self.cfg.protocol,
        );
        let metrics = Metrics::new(&self.cfg.name, &name, &self.decoders);
        let backoff = Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        let mut task = Task {
            name,
            cfg: self.cfg,
            decoders: self.decoders,
            conn,
            tracker,
            safe_rx,
            ctx,
            queue: AckQueue::new(),
            seq: 0,
            last_mark: 0,
            out: Vec::new(),
            stamped: 0,
            metrics,
            connected: false,
            ever_connected: false,
            subscribed: false,
            last_error: "none",
            failing: false,
            refused_topic_logged: false,
            backoff,
            reload_rx: self.reload_rx,
            unsubscribe_pending: Vec::new(),
            pubacks: Vec::new(),
        };
        drop(self.reload_tx);
        task.run().await;
    }
}

/// `ha-ingestor-<8 hex>`: a CRC of host name, data directory and broker name, so the same
/// install reconnects to its own session after a restart and two installs never collide
/// (23 characters at most, the MQTT 3.1.1 limit every broker accepts).
pub fn default_client_id(broker: &str, data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    // Absolute but not canonical: the folder may not exist yet on the first start.
    let dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let key = format!("{}\0{}\0{}", host.trim(), dir.display(), broker);
    format!("ha-ingestor-{:08x}", crc32fast::hash(key.as_bytes()))
}

/// Metric handles resolved once, so the per-message path does no registry lookups.
struct Metrics {
    broker: String,
    subscriptions: Vec<String>,
    /// Per subscription, plus one last entry for topics no subscription matches.
    received: Vec<Counter>,
    decoded: Vec<Counter>,
    failed: HashMap<(usize, &'static str), Counter>,
    bytes: Counter,
    unacked: Gauge,
    acked: Counter,
    connected: Gauge,
    connects: Counter,
}

const UNMATCHED: &str = "unmatched";

impl Metrics {
    fn new(broker: &str, source: &str, decoders: &Decoders) -> Metrics {
        let mut subscriptions: Vec<String> = decoders
            .subscriptions()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        subscriptions.push(UNMATCHED.to_string());
        let per_sub = |metric: &'static str| -> Vec<Counter> {
            subscriptions
                .iter()
                .map(|s| {
                    metrics::counter!(metric, "broker" => broker.to_string(), "subscription" => s.clone())
                })
                .collect()
        };
        Metrics {
            broker: broker.to_string(),
            received: per_sub(names::MQTT_RECEIVED_MESSAGES),
            decoded: per_sub(names::MQTT_DECODED_EVENTS),
            subscriptions,
            failed: HashMap::new(),
            bytes: metrics::counter!(names::SOURCE_RECEIVED_BYTES, "source" => source.to_string()),
            unacked: metrics::gauge!(names::MQTT_UNACKED_MESSAGES, "broker" => broker.to_string()),
            acked: metrics::counter!(names::MQTT_ACKED_MESSAGES, "broker" => broker.to_string()),
            connected: metrics::gauge!(names::SOURCE_CONNECTED, "source" => source.to_string()),
            connects: metrics::counter!(names::SOURCE_CONNECTS, "source" => source.to_string()),
        }
    }

    fn index(&self, sub: Option<usize>) -> usize {
        sub.unwrap_or(self.subscriptions.len() - 1)
            .min(self.subscriptions.len() - 1)
    }

    fn failed(&mut self, sub: usize, reason: &'static str) {
        let (broker, subscriptions) = (&self.broker, &self.subscriptions);
        self.failed
            .entry((sub, reason))
            .or_insert_with(|| {
                metrics::counter!(
                    names::MQTT_DECODE_ERRORS,
                    "broker" => broker.clone(),
                    "subscription" => subscriptions[sub].clone(),
                    "reason" => reason
                )
            })
            .increment(1);
    }
}

/// The running state of one broker's client.
struct Task {
    name: Arc<str>,
    cfg: MqttConfig,
    decoders: Decoders,
    conn: Conn,
    tracker: Tracker,
    safe_rx: watch::Receiver<u64>,
    ctx: SourceContext,
    queue: AckQueue,
    /// Arrival counter of messages (strictly increasing for the process's life).
    seq: u64,
    /// The last handoff mark stamped on an event.
    last_mark: u64,
    /// Events decoded and not yet sent.
    out: Vec<Event>,
    /// How many of `out` (from the front) carry their handoff mark already.
    stamped: usize,
    metrics: Metrics,
    connected: bool,
    ever_connected: bool,
    /// Subscribed at least once in this process (a present session may predate a config change).
    subscribed: bool,
    /// Why the last connection ended (the reconnect metric's reason).
    last_error: &'static str,
    /// Connection attempts are failing (log the first at WARN, the rest at DEBUG).
    failing: bool,
    /// The advice for a refused non-UTF-8 topic was logged.
    refused_topic_logged: bool,
    /// Re-read `[[mqtt]]` sections (SIGHUP).
    reload_rx: mpsc::Receiver<MqttConfig>,
    /// Filters removed by a reload while disconnected: unsubscribed after the next CONNACK.
    unsubscribe_pending: Vec<String>,
    /// Packet ids of one run of direct PUBACKs (reused).
    pubacks: Vec<u16>,
    backoff: Backoff,
}

/// What the loop does next.
enum Step {
    Go,
    Stop,
}

impl Task {
    async fn run(&mut self) {
        let mut watch_open = true;
        let mut reload_open = true;
        loop {
            let deadline = self.decoders.next_deadline().map(Instant::from_std);
            let step = tokio::select! {
                biased;
                _ = self.ctx.shutdown.cancelled() => Step::Stop,
                changed = self.safe_rx.changed(), if watch_open => {
                    watch_open = changed.is_ok();
                    self.ack_ready().await;
                    Step::Go
                }
                _ = sleep_until(deadline) => self.flush_due().await,
                reload = self.reload_rx.recv(), if reload_open => match reload {
                    Some(cfg) => self.on_reload(cfg).await,
                    None => {
                        reload_open = false;
                        Step::Go
                    }
                },
                polled = self.conn.poll() => match polled {
                    Ok(p) => self.on_batch(p).await,
                    Err(e) => self.on_lost(e).await,
                },
            };
            if let Step::Stop = step {
                break;
            }
        }
        self.stop().await;
    }

    /// Handles `first` and whatever else the event loop has ready (up to [`READ_BATCH`]),
    /// then sends the batch's events and acknowledges what is safe.
    async fn on_batch(&mut self, first: Polled) -> Step {
        self.on_polled(first);
        let mut lost = None;
        for _ in 1..READ_BATCH {
            match self.conn.ready() {
                Some(Ok(p)) => self.on_polled(p),
                Some(Err(e)) => {
                    lost = Some(e);
                    break;
                }
                None => break,
            }
        }
        if !self.emit().await {
            return Step::Stop;
        }
        if let Some(e) = lost {
            return self.on_lost(e).await;
        }
        self.ack_ready().await;
        Step::Go
    }

    fn on_polled(&mut self, polled: Polled) {
        match polled {
            Polled::Publish(r) => self.on_publish(r),
            Polled::ConnAck { session_present } => self.on_connack(session_present),
            Polled::SubAck(codes) => {
                // Connected and subscribed: ready.
                self.ctx.stats.source_state(&self.name, true, None);
                tracing::info!(
                    message = "The broker confirmed a subscription.",
                    source = %self.name,
                    filters = codes.len(),
                    refused = codes.iter().filter(|c| c.is_none()).count(),
                );
                for code in codes.iter().filter(|c| c.is_none()) {
                    let _ = code;
                    metrics::counter!(names::SOURCE_ERRORS, "source" => self.name.to_string(), "error_type" => "subscribe_refused").increment(1);
                }
                if codes.iter().any(Option::is_none) {
                    tracing::error!(
                        message = "The broker refused a subscription (ACL, invalid filter, or shared subscriptions unsupported).",
                        source = %self.name,
                        refused = codes.iter().filter(|c| c.is_none()).count(),
                        filters = ?self.filters(),
                    );
                }
            }
            Polled::UnsubAck => {
                tracing::info!(message = "The broker confirmed an unsubscription.", source = %self.name);
            }
            Polled::Other => {}
        }
    }

    fn filters(&self) -> Vec<(String, u8)> {
        let mut filters: Vec<(String, u8)> = Vec::new();
        for s in self.decoders.subscriptions() {
            match filters.iter_mut().find(|(f, _)| *f == s.topic) {
                Some((_, q)) => *q = (*q).max(s.qos.min(2)),
                None => filters.push((s.topic.clone(), s.qos.min(2))),
            }
        }
        filters
    }

    fn on_connack(&mut self, session_present: bool) {
        self.connected = true;
        self.failing = false;
        self.backoff.reset();
        self.metrics.connected.set(1.0);
        self.metrics.connects.increment(1);
        if self.ever_connected {
            metrics::counter!(names::SOURCE_RECONNECTS, "source" => self.name.to_string(), "reason" => self.last_error).increment(1);
        }
        if self.ever_connected && !session_present && !self.cfg.clean_session {
            metrics::counter!(names::MQTT_SESSIONS_LOST, "broker" => self.cfg.name.clone())
                .increment(1);
            tracing::warn!(
                message = "The broker kept no session for us (expired, restarted without persistence, or taken over): messages published while disconnected are lost; subscribing again.",
                source = %self.name,
            );
        }
        tracing::info!(message = "Connected to the MQTT broker.", source = %self.name, session_present);
        if !session_present || !self.subscribed {
            // Ready once the SUBACK arrives.
            let filters = self.filters();
            match self.conn.subscribe(&filters) {
                Ok(()) => self.subscribed = true,
                Err(error) => {
                    tracing::error!(message = "Cannot subscribe.", source = %self.name, %error)
                }
            }
        } else {
            self.ctx.stats.source_state(&self.name, true, None);
        }
        if !self.unsubscribe_pending.is_empty() {
            let gone = std::mem::take(&mut self.unsubscribe_pending);
            if let Err(error) = self.conn.unsubscribe(&gone) {
                tracing::error!(message = "Cannot unsubscribe.", source = %self.name, %error);
            }
        }
        self.ever_connected = true;
    }

    /// Decodes one message into `out` (stamped, sent with its batch) and queues its acknowledgement.
    fn on_publish(&mut self, r: Received) {
        self.seq += 1;
        let seq = self.seq;
        self.metrics.bytes.increment(r.payload.len() as u64);
        let held_before = self.decoders.oldest_held();
        match std::str::from_utf8(&r.topic) {
            Ok(topic) => {
                let sub = self.decoders.route(topic);
                let i = self.metrics.index(sub);
                self.metrics.received[i].increment(1);
                let msg = Message {
                    topic,
                    payload: &r.payload,
                    retained: r.retain,
                    received: Timestamp::now(),
                    seq,
                };
                match self.decoders.decode_routed(sub, &msg, &mut self.out) {
                    Ok(n) => self.metrics.decoded[i].increment(n as u64),
                    Err(e) => {
                        let detail = format!("topic {topic}: {e}");
                        self.bad_input(i, e.reason, &detail, &r.payload);
                    }
                }
            }
            Err(_) => {
                let i = self.metrics.index(None);
                self.metrics.received[i].increment(1);
                let detail = format!("topic is not UTF-8: {}", String::from_utf8_lossy(&r.topic));
                self.bad_input(i, INVALID_TOPIC, &detail, &r.payload);
            }
        }
        let emitted = self.out.len() > self.stamped;
        self.stamp();
        if emitted && let Some(h) = held_before {
            self.queue.raise_from(h, self.last_mark);
        }
        if r.qos > 0 {
            self.queue.push(Unacked {
                pkid: r.pkid,
                qos: r.qos,
                seq,
                needs: self.last_mark,
            });
        }
    }

    /// Gives the events not yet stamped their handoff marks, in order.
    fn stamp(&mut self) {
        for event in &mut self.out[self.stamped..] {
            let mark = self.tracker.mark();
            self.last_mark = mark.seq();
            event.meta.mark = mark;
        }
        self.stamped = self.out.len();
    }

    fn bad_input(&mut self, sub: usize, reason: &'static str, detail: &str, payload: &[u8]) {
        Stats::add(&self.ctx.stats.decode_errors, 1);
        self.metrics.failed(sub, reason);
        let source = format!("mqtt:{}", self.metrics.subscriptions[sub]);
        self.ctx.dead_letters.record(DeadLetter {
            stage: "source",
            kind: reason,
            reason: detail,
            source: &source,
            input: payload,
        });
    }

    /// Applies a re-read `[[mqtt]]` section: the subscriptions change on the live connection
    /// (SUBSCRIBE for new or changed filters, UNSUBSCRIBE for removed ones); what decoders held
    /// is emitted first, so nothing received is lost. Settings that need a new connection are
    /// named in a "needs restart" warning and keep their old values.
    async fn on_reload(&mut self, new: MqttConfig) -> Step {
        let restart = needs_restart(&self.cfg, &new);
        if !restart.is_empty() {
            tracing::warn!(
                message = "Changed MQTT settings need a restart; they keep their old values until then.",
                source = %self.name,
                keys = %restart.join(", "),
            );
        }
        if new.subscriptions == self.cfg.subscriptions {
            tracing::info!(message = "Configuration reloaded; the subscriptions are unchanged.", source = %self.name);
            return Step::Go;
        }
        let decoders = match Decoders::new(&new.subscriptions) {
            Ok(d) => d,
            Err(error) => {
                tracing::error!(message = "The reloaded subscriptions are invalid; the old ones stay.", source = %self.name, %error);
                return Step::Go;
            }
        };
        let old_filters = self.filters();
        // What the old decoders hold goes out now, like at a deadline.
        let held_before = self.decoders.oldest_held();
        self.decoders.flush_all(&mut self.out);
        let emitted = !self.out.is_empty();
        if !self.emit().await {
            return Step::Stop;
        }
        if emitted && let Some(h) = held_before {
            self.queue.raise_from(h, self.last_mark);
        }
        self.decoders = decoders;
        self.cfg.subscriptions = new.subscriptions;
        self.metrics = Metrics::new(&self.cfg.name, &self.name, &self.decoders);
        let new_filters = self.filters();
        let added: Vec<(String, u8)> = new_filters
            .iter()
            .filter(|f| !old_filters.contains(f))
            .cloned()
            .collect();
        let removed: Vec<String> = old_filters
            .iter()
            .filter(|(t, _)| !new_filters.iter().any(|(n, _)| n == t))
            .map(|(t, _)| t.clone())
            .collect();
        tracing::info!(
            message = "Subscriptions reloaded.",
            source = %self.name,
            subscriptions = self.decoders.subscriptions().len(),
            subscribe = ?added,
            unsubscribe = ?removed,
            connected = self.connected,
        );
        if self.connected {
            if !added.is_empty()
                && let Err(error) = self.conn.subscribe(&added)
            {
                tracing::error!(message = "Cannot subscribe.", source = %self.name, %error);
            }
            if !removed.is_empty()
                && let Err(error) = self.conn.unsubscribe(&removed)
            {
                tracing::error!(message = "Cannot unsubscribe.", source = %self.name, %error);
            }
        } else {
            // The next CONNACK subscribes to every filter and drops the removed ones.
            self.subscribed = false;
            self.unsubscribe_pending.extend(removed);
        }
        self.ack_ready().await;
        Step::Go
    }

    /// An MQTT 3.1.1 PUBLISH with a non-UTF-8 topic: the client had to close the connection
    /// (the protocol says so) without reading its packet id, so it cannot be acknowledged; a
    /// broker that keeps it for the session sends it again on every reconnect. Counted and
    /// set aside each time; MQTT 5 (`protocol = "v5"`) hands the topic over and acknowledges it.
    fn refused_topic(&mut self, e: &ConnError) {
        let i = self.metrics.index(None);
        self.metrics.received[i].increment(1);
        if !self.refused_topic_logged {
            self.refused_topic_logged = true;
            tracing::error!(
                message = "The broker delivered a topic that is not UTF-8; an MQTT 3.1.1 client must close the connection on it and cannot acknowledge it, so a persistent session gets it again on every reconnect. Use protocol = \"v5\" for this broker: MQTT 5 sets such a message aside and acknowledges it.",
                source = %self.name,
                error = %e,
            );
        }
        let detail =
            format!("topic is not UTF-8 (MQTT 3.1.1: connection closed, not acknowledged): {e}");
        self.bad_input(i, INVALID_TOPIC, &detail, b"");
    }

    /// Stamps and sends the decoded events; `false` once the pipeline is gone.
    async fn emit(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        self.stamp();
        Stats::add(&self.ctx.stats.received, self.out.len() as u64);
        // One reservation per chunk: the pipeline is woken once, not once per event.
        while !self.out.is_empty() {
            let n = self.out.len().min(SEND_CHUNK);
            let Ok(permits) = self.ctx.tx.reserve_many(n).await else {
                self.out.clear();
                self.stamped = 0;
                return false;
            };
            for (permit, event) in permits.zip(self.out.drain(..n)) {
                permit.send(event);
            }
        }
        self.stamped = 0;
        true
    }

    async fn flush_due(&mut self) -> Step {
        let held_before = self.decoders.oldest_held();
        self.decoders
            .flush_due(std::time::Instant::now(), &mut self.out);
        let emitted = !self.out.is_empty();
        if !self.emit().await {
            return Step::Stop;
        }
        if emitted && let Some(h) = held_before {
            self.queue.raise_from(h, self.last_mark);
        }
        self.ack_ready().await;
        Step::Go
    }

    /// Acknowledges the ready prefix of the queue, in order. Over MQTT 3.1.1 the QoS 1
    /// acknowledgements of the run go out in one socket write ([`Conn::write_pubacks`]);
    /// otherwise each is one request to rumqttc's event loop.
    async fn ack_ready(&mut self) {
        if self.queue.is_empty() {
            self.metrics.unacked.set(0.0);
            return;
        }
        let safe = self.tracker.safe();
        let held = self.decoders.oldest_held();
        let direct = self.conn.direct_pubacks();
        let mut pubacks = std::mem::take(&mut self.pubacks);
        pubacks.clear();
        let mut n = 0u64;
        while let Some(m) = self.queue.ready_front(safe, held) {
            if direct && m.qos == 1 {
                pubacks.push(m.pkid);
            } else if !self.conn.ack(m.pkid, m.qos) {
                // The request queue is full (cannot happen within the receive window); retried on the next wake-up.
                break;
            }
            self.queue.pop_front();
            n += 1;
        }
        if !pubacks.is_empty() {
            self.conn
                .write_pubacks(&pubacks, self.cfg.connect_timeout)
                .await;
        }
        self.pubacks = pubacks;
        if n > 0 {
            self.metrics.acked.increment(n);
        }
        self.metrics.unacked.set(self.queue.len() as f64);
    }

    async fn on_lost(&mut self, e: ConnError) -> Step {
        metrics::counter!(names::SOURCE_ERRORS, "source" => self.name.to_string(), "error_type" => e.kind).increment(1);
        self.last_error = e.kind;
        if e.kind == INVALID_TOPIC {
            self.refused_topic(&e);
        }
        if self.connected {
            self.connected = false;
            self.metrics.connected.set(0.0);
            tracing::warn!(message = "Connection to the MQTT broker lost; reconnecting.", source = %self.name, error = %e, unacked = self.queue.len());
        } else if !self.failing {
            tracing::warn!(message = "Cannot connect to the MQTT broker; retrying with back-off (further failures are logged at debug level).", source = %self.name, error = %e);
        } else {
            tracing::debug!(message = "Cannot connect to the MQTT broker.", source = %self.name, error = %e);
        }
        self.failing = true;
        self.ctx
            .stats
            .source_state(&self.name, false, Some(e.to_string()));
        // The broker sends unacknowledged messages again; what a decoder holds goes out now.
        self.decoders.flush_all(&mut self.out);
        if !self.emit().await {
            return Step::Stop;
        }
        self.queue.clear();
        self.metrics.unacked.set(0.0);
        let delay = if e.kind == "auth" {
            self.cfg.reconnect_max
        } else {
            self.backoff.next_delay()
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => Step::Go,
            _ = self.ctx.shutdown.cancelled() => Step::Stop,
        }
    }

    /// Emits what decoders hold, acknowledges what becomes safe in time, then disconnects
    /// (the session and anything unacknowledged stay with the broker for the next start).
    async fn stop(&mut self) {
        self.decoders.flush_all(&mut self.out);
        let sent = self.emit().await;
        let deadline = Instant::now() + ACK_DRAIN_DEADLINE;
        while sent && self.connected && !self.queue.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                changed = self.safe_rx.changed() => {
                    if changed.is_err() { break; }
                    self.ack_ready().await;
                }
                // Keeps the socket moving (acks out); messages arriving now are not
                // acknowledged, so the broker sends them again next time.
                polled = self.conn.poll() => if polled.is_err() { self.connected = false; }
            }
        }
        if self.connected {
            self.conn.disconnect();
            // Let the DISCONNECT (and the last acks) reach the socket.
            let until = Instant::now() + Duration::from_secs(1);
            while let Ok(Ok(_)) = tokio::time::timeout_at(until, self.conn.poll()).await {}
        }
        self.metrics.connected.set(0.0);
        self.ctx
            .stats
            .source_state(&self.name, false, Some("stopped".into()));
        tracing::info!(message = "MQTT source stopped.", source = %self.name, unacked_left = self.queue.len());
    }
}

/// The keys of a broker's section, other than `subscriptions`, whose change needs a new connection.
fn needs_restart(old: &MqttConfig, new: &MqttConfig) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys().filter(|k| !a.contains_key(*k)))
        .filter(|k| *k != "subscriptions" && a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    // Not serialized (a secret), compared here.
    if old.password != new.password {
        keys.push("password".to_string());
    }
    keys.sort();
    keys
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_client_id_is_stable_short_and_distinct_per_broker_and_dir() {
        let dir = tempfile::tempdir().unwrap();
        let a = default_client_id("mqtt", dir.path());
        assert_eq!(a, default_client_id("mqtt", dir.path()));
        assert!(a.len() <= 23, "{a}");
        assert_ne!(a, default_client_id("other", dir.path()));
        let dir2 = tempfile::tempdir().unwrap();
        assert_ne!(a, default_client_id("mqtt", dir2.path()));
    }
}
