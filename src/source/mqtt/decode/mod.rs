//! Turns MQTT messages into events: one decoder per subscription, chosen in config.
//!
//! [`Decoders`] holds every subscription of one broker, compiled once. The
//! client calls [`Decoders::decode`] per message, [`Decoders::flush_due`] when
//! [`Decoders::next_deadline`] passes (statestream groups), and acknowledges a
//! message only once its seq is below [`Decoders::oldest_held`] and its events
//! are safe.

mod config;

pub use config::{
    BoolMode, DecoderKind, JsonSplit, RetainedPolicy, SubscriptionConfig, TimestampFormat,
};

use std::sync::Arc;
use std::time::Instant;

use crate::event::{Event, SourceId, Timestamp};
use crate::source::mqtt::topic::{self, TopicError};

/// One received message, borrowed from the client's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The topic it was published to.
    pub topic: &'a str,
    /// The payload bytes as received.
    pub payload: &'a [u8],
    /// Whether the broker delivered it from its retained store.
    pub retained: bool,
    /// Arrival time (used when the payload carries none).
    pub received: Timestamp,
    /// The client's arrival counter, strictly increasing per broker connection set.
    pub seq: u64,
}

/// Why a message gave no event; `reason` is a bounded label for metrics.
#[derive(Debug, thiserror::Error)]
#[error("{subscription}: {reason}: {detail}")]
pub struct DecodeError {
    /// The subscription's name.
    pub subscription: String,
    /// A bounded label (`bad_json`, `invalid_utf8`, `oversize`, …).
    pub reason: &'static str,
    /// What exactly was wrong, for logs and dead letters.
    pub detail: String,
}

/// A subscription list that cannot be used, found when the decoders are built.
#[derive(Debug, thiserror::Error)]
pub enum DecodeConfigError {
    /// Two subscriptions share a name (names label metrics and events).
    #[error("mqtt.subscriptions: duplicate name {0:?}")]
    DuplicateName(String),
    /// A key has a value the decoder cannot use.
    #[error("mqtt.subscriptions {subscription:?}: {key}: {reason}")]
    Invalid {
        /// The subscription's name.
        subscription: String,
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The topic filter or pattern does not compile.
    #[error("mqtt.subscriptions {subscription:?}: {source}")]
    Topic {
        /// The subscription's name.
        subscription: String,
        /// The filter or pattern error.
        #[source]
        source: TopicError,
    },
}

/// One compiled subscription.
struct Compiled {
    source: SourceId,
    filter: String,
}

/// All subscriptions of one broker, compiled once: one pass over the patterns per message.
pub struct Decoders {
    subs: Vec<SubscriptionConfig>,
    compiled: Vec<Compiled>,
}

impl Decoders {
    /// Validates and compiles every subscription.
    pub fn new(subs: &[SubscriptionConfig]) -> Result<Decoders, DecodeConfigError> {
        let mut compiled = Vec::with_capacity(subs.len());
        for (i, sub) in subs.iter().enumerate() {
            if subs[..i].iter().any(|s| s.name == sub.name) {
                return Err(DecodeConfigError::DuplicateName(sub.name.clone()));
            }
            let filter =
                topic::validate_filter(&sub.topic).map_err(|source| DecodeConfigError::Topic {
                    subscription: sub.name.clone(),
                    source,
                })?;
            compiled.push(Compiled {
                source: Arc::from(format!("mqtt:{}", sub.name)),
                filter: filter.to_string(),
            });
        }
        Ok(Decoders {
            subs: subs.to_vec(),
            compiled,
        })
    }

    /// Index of the subscription a topic belongs to (first match in config order), if any.
    pub fn route(&self, topic: &str) -> Option<usize> {
        self.compiled
            .iter()
            .position(|c| topic::filter_matches(&c.filter, topic))
    }

    /// Decodes one message into 0..n events appended to `out` (each with `source`
    /// `mqtt:<name>` and `meta.retained` set; `meta.mark` left NONE — the client stamps it).
    /// Ok(0) for a message that is held (statestream grouping) or ignored by the retained policy.
    pub fn decode(
        &mut self,
        msg: &Message<'_>,
        out: &mut Vec<Event>,
    ) -> Result<usize, DecodeError> {
        let _ = out;
        let name = match self.route(msg.topic) {
            Some(i) => &self.subs[i].name,
            None => "",
        };
        let _ = &self.compiled.first().map(|c| &c.source);
        Err(DecodeError {
            subscription: name.to_string(),
            reason: "unsupported",
            detail: "decoders not implemented yet".to_string(),
        })
    }

    /// Statestream groups whose window elapsed are emitted.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<Event>) {
        let _ = (now, out);
    }

    /// When `flush_due` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Emits every held group (shutdown, reconnect).
    pub fn flush_all(&mut self, out: &mut Vec<Event>) {
        let _ = out;
    }

    /// The smallest `Message::seq` whose content is still held in an unemitted group (None: nothing held).
    /// The client acknowledges a message only when its seq is below this and every event emitted
    /// up to its processing is released by the handoff tracker.
    pub fn oldest_held(&self) -> Option<u64> {
        None
    }

    /// Subscription names and their filters/QoS (for subscribing and metrics labels).
    pub fn subscriptions(&self) -> &[SubscriptionConfig] {
        &self.subs
    }
}
