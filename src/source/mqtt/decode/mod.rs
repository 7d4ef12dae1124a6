//! Turns MQTT messages into events: one decoder per subscription, chosen in config.
//!
//! [`Decoders`] holds every subscription of one broker, compiled once. The
//! client calls [`Decoders::decode`] per message, [`Decoders::flush_due`] when
//! [`Decoders::next_deadline`] passes (statestream groups), and acknowledges a
//! message only once its seq is below [`Decoders::oldest_held`] and its events
//! are safe. Entity-id rules and each decoder's mapping are in `docs/mqtt.md`.

mod entity;
mod eventstream;
mod json;
mod statestream;
mod value;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use crate::config::validate::StageCheck;
use crate::config::{
    BoolMode, DecoderKind, JsonSplit, RetainedPolicy, SubscriptionConfig, TimestampFormat,
};
use crate::event::{
    Attributes, Context, Event, EventKind, EventMeta, Origin, SourceId, State, Timestamp,
};
use crate::source::mqtt::topic::{self, Capture, Pattern, Router, TopicError};

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
    /// The subscription's name (empty when no subscription matched the topic).
    pub subscription: String,
    /// A bounded label: one of [`REASONS`].
    pub reason: &'static str,
    /// What exactly was wrong, for logs and dead letters (bounded length).
    pub detail: String,
}

/// Every `DecodeError::reason` label, for metrics and docs.
pub const REASONS: &[&str] = &[
    "no_subscription",
    "oversize",
    "invalid_utf8",
    "empty_payload",
    "bad_json",
    "wrong_type",
    "bad_timestamp",
    "bad_entity_id",
    "no_state",
];

/// Topics remembered by `ingest_once`; past this the memory is cleared.
const SEEN_RETAINED_MAX: usize = 1_000_000;

/// Longest `detail` kept, so a huge payload cannot make a huge log line.
const DETAIL_MAX: usize = 200;

impl DecodeError {
    fn new(sub: &str, reason: &'static str, detail: impl std::fmt::Display) -> DecodeError {
        let mut detail = detail.to_string();
        if detail.len() > DETAIL_MAX {
            let mut cut = DETAIL_MAX;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        DecodeError {
            subscription: sub.to_string(),
            reason,
            detail,
        }
    }
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
struct Sub {
    cfg: SubscriptionConfig,
    source: SourceId,
    /// The filter without `$share/<group>/`.
    filter: String,
    /// Bytes of the topic's leading literal levels (with their `/`), skipped to find the device when there is no pattern.
    literal_prefix: usize,
    pattern: Option<Pattern>,
    locs: Option<regex::CaptureLocations>,
    /// `json`: the timestamp path as a flattened key.
    ts_key: Option<String>,
}

/// All subscriptions of one broker, compiled once: one pass over the patterns per message.
pub struct Decoders {
    subs: Vec<Sub>,
    configs: Vec<SubscriptionConfig>,
    router: Router,
    caps: Vec<Capture>,
    groups: statestream::Groups,
    /// `ingest_once`: the payload hash last ingested per topic.
    seen_retained: HashMap<String, u64>,
    errors: Vec<DecodeError>,
    scratch: json::Scratch,
}

impl std::fmt::Debug for Decoders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoders")
            .field("subscriptions", &self.configs.len())
            .finish_non_exhaustive()
    }
}

fn invalid(sub: &SubscriptionConfig, key: &'static str, reason: &str) -> DecodeConfigError {
    DecodeConfigError::Invalid {
        subscription: sub.name.clone(),
        key,
        reason: reason.to_string(),
    }
}

/// Loading a config compiles each broker's subscriptions as the source will, so a
/// subscription the decoders would refuse is refused with the config's other errors.
impl StageCheck for [SubscriptionConfig] {
    fn stage_check(&self) -> Result<(), String> {
        Decoders::new(self).map(drop).map_err(|e| e.to_string())
    }
}

impl Decoders {
    /// Validates and compiles every subscription.
    pub fn new(subs: &[SubscriptionConfig]) -> Result<Decoders, DecodeConfigError> {
        let mut compiled = Vec::with_capacity(subs.len());
        for (i, sub) in subs.iter().enumerate() {
            if subs[..i].iter().any(|s| s.name == sub.name) {
                return Err(DecodeConfigError::DuplicateName(sub.name.clone()));
            }
            if sub.name.is_empty() {
                return Err(invalid(sub, "name", "must not be empty"));
            }
            if sub.qos > 2 {
                return Err(invalid(sub, "qos", "must be 0, 1 or 2"));
            }
            if sub.max_payload == 0 {
                return Err(invalid(sub, "max_payload", "must be at least 1"));
            }
            if sub.separator.is_empty() {
                return Err(invalid(sub, "separator", "must not be empty"));
            }
            if entity::slug(&sub.domain) != sub.domain || sub.domain.is_empty() {
                return Err(invalid(
                    sub,
                    "domain",
                    "must be lowercase letters, digits and '_' (an HA domain)",
                ));
            }
            if sub.event_type.as_deref() == Some("") {
                return Err(invalid(sub, "event_type", "must not be empty"));
            }
            if sub.event_type.is_some()
                && matches!(
                    sub.decoder,
                    DecoderKind::Statestream | DecoderKind::Eventstream
                )
            {
                return Err(invalid(
                    sub,
                    "event_type",
                    "only for the json and value decoders",
                ));
            }
            if sub.decoder == DecoderKind::Statestream && sub.group_window.is_zero() {
                return Err(invalid(sub, "group_window", "must be above zero"));
            }
            let topic_err = |source| DecodeConfigError::Topic {
                subscription: sub.name.clone(),
                source,
            };
            let filter = topic::validate_filter(&sub.topic).map_err(topic_err)?;
            let pattern = match &sub.pattern {
                Some(p) => Some(Pattern::compile(p).map_err(topic_err)?),
                None => None,
            };
            if sub.decoder == DecoderKind::Statestream
                && let Some(p) = &pattern
            {
                let has = |role| p.names().iter().any(|(_, r)| *r == role);
                if !has(topic::Role::Attribute)
                    || !(has(topic::Role::EntityId)
                        || has(topic::Role::ObjectId)
                        || has(topic::Role::Device))
                {
                    return Err(invalid(
                        sub,
                        "pattern",
                        "statestream needs an {attribute} capture and an entity ({entity_id}, {object_id} or {device})",
                    ));
                }
            }
            let literal_prefix = filter
                .split('/')
                .take_while(|l| *l != "+" && *l != "#")
                .map(|l| l.len() + 1)
                .sum();
            let ts_key = sub
                .timestamp
                .as_ref()
                .map(|path| path.split('.').collect::<Vec<_>>().join(&sub.separator));
            compiled.push(Sub {
                cfg: sub.clone(),
                source: Arc::from(format!("mqtt:{}", sub.name)),
                filter: filter.to_string(),
                literal_prefix,
                pattern,
                locs: None,
                ts_key,
            });
        }
        let entries: Vec<(&str, Option<&Pattern>)> = compiled
            .iter()
            .map(|s| (s.filter.as_str(), s.pattern.as_ref()))
            .collect();
        let router = Router::new(&entries).map_err(|source| DecodeConfigError::Topic {
            subscription: "(all)".to_string(),
            source,
        })?;
        Ok(Decoders {
            subs: compiled,
            configs: subs.to_vec(),
            router,
            caps: Vec::with_capacity(8),
            groups: statestream::Groups::default(),
            seen_retained: HashMap::new(),
            errors: Vec::new(),
            scratch: json::Scratch::default(),
        })
    }

    /// Index of the subscription a topic belongs to (first match in config order), if any.
    pub fn route(&self, topic: &str) -> Option<usize> {
        self.router.route(topic)
    }

    /// Decodes one message into 0..n events appended to `out` (each with `source`
    /// `mqtt:<name>` and `meta.retained` set; `meta.mark` left NONE — the client stamps it).
    /// Ok(0) for a message that is held (statestream grouping) or ignored by the retained policy.
    pub fn decode(
        &mut self,
        msg: &Message<'_>,
        out: &mut Vec<Event>,
    ) -> Result<usize, DecodeError> {
        // Only statestream windows need the monotonic clock: read it only for them.
        let idx = self.router.route(msg.topic);
        self.decode_with(idx, msg, Instant::now, out)
    }

    /// [`Decoders::decode`] for a message already routed with [`Decoders::route`] (one
    /// pattern pass per message instead of two when the caller needs the index too).
    pub fn decode_routed(
        &mut self,
        idx: Option<usize>,
        msg: &Message<'_>,
        out: &mut Vec<Event>,
    ) -> Result<usize, DecodeError> {
        self.decode_with(idx, msg, Instant::now, out)
    }

    /// [`Decoders::decode`] with the monotonic arrival time given (statestream windows start there).
    pub fn decode_at(
        &mut self,
        msg: &Message<'_>,
        now: Instant,
        out: &mut Vec<Event>,
    ) -> Result<usize, DecodeError> {
        let idx = self.router.route(msg.topic);
        self.decode_with(idx, msg, || now, out)
    }

    fn decode_with(
        &mut self,
        idx: Option<usize>,
        msg: &Message<'_>,
        now: impl FnOnce() -> Instant,
        out: &mut Vec<Event>,
    ) -> Result<usize, DecodeError> {
        let Some(idx) = idx.filter(|i| *i < self.subs.len()) else {
            return Err(DecodeError::new("", "no_subscription", msg.topic));
        };
        let before = out.len();
        let sub = &mut self.subs[idx];
        if msg.payload.len() > sub.cfg.max_payload {
            return Err(DecodeError::new(
                &sub.cfg.name,
                "oversize",
                format_args!(
                    "{} bytes on {:?}, max_payload is {}",
                    msg.payload.len(),
                    msg.topic,
                    sub.cfg.max_payload
                ),
            ));
        }
        match sub.cfg.retained {
            RetainedPolicy::Ingest => {}
            RetainedPolicy::Ignore if msg.retained => return Ok(0),
            RetainedPolicy::Ignore => {}
            RetainedPolicy::IngestOnce => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                msg.payload.hash(&mut h);
                let hash = h.finish();
                let seen = self.seen_retained.get(msg.topic) == Some(&hash);
                if msg.retained && seen {
                    return Ok(0);
                }
                if !seen {
                    if self.seen_retained.len() >= SEEN_RETAINED_MAX {
                        // A flood of distinct topics: forget rather than grow without bound
                        // (the cost is writing some replayed values again).
                        self.seen_retained.clear();
                    }
                    self.seen_retained.insert(msg.topic.to_string(), hash);
                }
            }
        }
        if let Some(p) = &sub.pattern {
            if !p.captures(msg.topic, &mut sub.locs, &mut self.caps) {
                // The router matched this pattern; a mismatch here is a bug, not bad input.
                return Err(DecodeError::new(
                    &sub.cfg.name,
                    "no_subscription",
                    msg.topic,
                ));
            }
        } else {
            self.caps.clear();
        }
        let sub = &self.subs[idx];
        let ctx = Ctx {
            sub,
            msg,
            caps: &self.caps,
        };
        match sub.cfg.decoder {
            DecoderKind::Statestream => {
                self.groups
                    .add(idx as u32, &ctx, now(), out, &mut self.errors)?;
            }
            DecoderKind::Eventstream => eventstream::decode(&ctx, out)?,
            DecoderKind::Json => {
                if let Err(e) = json::decode(&ctx, &mut self.scratch, out) {
                    // All of a message's events or none: a key may fail after others were added.
                    out.truncate(before);
                    return Err(e);
                }
            }
            DecoderKind::Value => value::decode(&ctx, out)?,
        }
        Ok(out.len() - before)
    }

    /// Statestream groups whose window elapsed are emitted.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<Event>) {
        self.groups
            .flush(Some(now), &self.subs, out, &mut self.errors);
    }

    /// When `flush_due` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.groups.next_deadline()
    }

    /// Emits every held group (shutdown, reconnect).
    pub fn flush_all(&mut self, out: &mut Vec<Event>) {
        self.groups.flush(None, &self.subs, out, &mut self.errors);
    }

    /// The smallest `Message::seq` whose content is still held in an unemitted group (None: nothing held).
    /// The client acknowledges a message only when its seq is below this and every event emitted
    /// up to its processing is released by the handoff tracker.
    pub fn oldest_held(&self) -> Option<u64> {
        self.groups.oldest_held()
    }

    /// Subscription names and their filters/QoS (for subscribing and metrics labels).
    pub fn subscriptions(&self) -> &[SubscriptionConfig] {
        &self.configs
    }

    /// Errors found while emitting held statestream groups (`no_state`): the caller counts and logs them.
    ///
    /// Messages' own errors are returned by [`Decoders::decode`]; these belong to
    /// no single message (a group whose entity never had a `state` topic).
    pub fn take_errors(&mut self) -> Vec<DecodeError> {
        std::mem::take(&mut self.errors)
    }
}

/// What a decoder needs about the message in hand.
struct Ctx<'a> {
    sub: &'a Sub,
    msg: &'a Message<'a>,
    caps: &'a [Capture],
}

impl Ctx<'_> {
    fn err(&self, reason: &'static str, detail: impl std::fmt::Display) -> DecodeError {
        DecodeError::new(&self.sub.cfg.name, reason, detail)
    }

    /// The text of the capture with `role`, if the pattern has one that matched.
    fn role(&self, role: topic::Role) -> Option<&str> {
        let p = self.sub.pattern.as_ref()?;
        self.caps
            .iter()
            .find(|c| p.names()[c.name].1 == role)
            .and_then(|c| self.msg.topic.get(c.start..c.end))
    }

    /// Captures that are not entity parts, as (name, text).
    fn extras(&self) -> impl Iterator<Item = (&str, &str)> {
        let names = self.sub.pattern.as_ref().map(|p| p.names()).unwrap_or(&[]);
        self.caps.iter().filter_map(move |c| {
            let (name, role) = names.get(c.name)?;
            (*role == topic::Role::Extra)
                .then(|| Some((name.as_str(), self.msg.topic.get(c.start..c.end)?)))
                .flatten()
        })
    }

    /// Payload as UTF-8 text.
    fn text(&self) -> Result<&str, DecodeError> {
        std::str::from_utf8(self.msg.payload)
            .map_err(|e| self.err("invalid_utf8", format_args!("{e} on {:?}", self.msg.topic)))
    }
}

/// A `state_changed`-shaped event with no old state; `last_changed` = `last_updated` = `time` unless given.
fn state_event(
    sub: &Sub,
    entity_id: crate::event::EntityId,
    state: String,
    attributes: Attributes,
    time: Timestamp,
    last_changed: Timestamp,
    retained: bool,
) -> Event {
    let mut event = Event::from_state(
        sub.source.clone(),
        State {
            entity_id,
            state,
            attributes,
            last_changed,
            last_reported: None,
            last_updated: time,
            context: None,
        },
    );
    event.meta.retained = retained;
    event
}

/// A bus event of the subscription's `event_type`.
fn bus_event(
    sub: &Sub,
    event_type: &str,
    data: serde_json::Map<String, serde_json::Value>,
    time: Timestamp,
    retained: bool,
) -> Event {
    Event {
        source: sub.source.clone(),
        time_fired: time,
        origin: Origin::Local,
        context: Context::default(),
        kind: EventKind::Bus(crate::event::BusEvent {
            event_type: event_type.to_string(),
            data,
        }),
        meta: EventMeta {
            mark: crate::feedback::handoff::Mark::NONE,
            retained,
        },
    }
}

#[cfg(test)]
mod tests;
