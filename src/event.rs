//! The one value that flows from sources to the encoder.
//!
//! An [`Event`] owns everything a stage may need: where it came from, the time
//! Home Assistant gave it, and either a decoded `state_changed` payload or the
//! raw data of any other bus event. Field names and JSON shapes follow Home
//! Assistant's own serialisation (`Event._as_dict`, `State._as_dict`) so the
//! same types decode recorded frames and let the simulator produce them.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Names the source an event came from (`homeassistant`, `simulator`, `mqtt:<name>`); cheap to clone per event.
pub type SourceId = Arc<str>;

/// An entity's attributes in HA's insertion order (which decides renames on key collisions).
///
/// A small ordered map backed by a `Vec`: HA states carry a handful to a few
/// dozen attributes, where a linear scan beats hashing every key on the hot
/// decode path (measured: hashing and rehashing were ~10% of decode time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(Vec<(String, serde_json::Value)>);

/// Above this many keys, duplicate detection while decoding uses a hash set instead of a scan.
const ATTRIBUTES_SCAN_LIMIT: usize = 32;

impl Attributes {
    /// An empty map.
    pub fn new() -> Self {
        Attributes(Vec::new())
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`, keeping its first position when it already exists (as a Python dict does).
    pub fn insert(&mut self, key: String, value: serde_json::Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// Entries in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &serde_json::Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps the last value of a repeated key at its first position, as JSON decoders into dicts do.
    fn dedup_keys(&mut self) {
        let n = self.0.len();
        let has_duplicates = if n <= ATTRIBUTES_SCAN_LIMIT {
            (1..n).any(|i| self.0[..i].iter().any(|(k, _)| *k == self.0[i].0))
        } else {
            let mut seen = std::collections::HashSet::with_capacity(n);
            !self.0.iter().all(|(k, _)| seen.insert(k.as_str()))
        };
        if has_duplicates {
            let entries = std::mem::take(&mut self.0);
            let mut index: std::collections::HashMap<String, usize> =
                std::collections::HashMap::new();
            for (k, v) in entries {
                match index.get(&k) {
                    Some(&i) => self.0[i].1 = v,
                    None => {
                        index.insert(k.clone(), self.0.len());
                        self.0.push((k, v));
                    }
                }
            }
        }
    }
}

/// `attributes["key"]` reads like a JSON object: a missing key gives `null`, never a panic.
impl std::ops::Index<&str> for Attributes {
    type Output = serde_json::Value;
    fn index(&self, key: &str) -> &serde_json::Value {
        static NULL: serde_json::Value = serde_json::Value::Null;
        self.get(key).unwrap_or(&NULL)
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a String, &'a serde_json::Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, serde_json::Value)>,
        fn(&'a (String, serde_json::Value)) -> (&'a String, &'a serde_json::Value),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

/// Entries gathered by the caller (sized once); a repeated key keeps its first position and last value.
impl From<Vec<(String, serde_json::Value)>> for Attributes {
    fn from(entries: Vec<(String, serde_json::Value)>) -> Self {
        let mut a = Attributes(entries);
        a.dedup_keys();
        a
    }
}

impl FromIterator<(String, serde_json::Value)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (String, serde_json::Value)>>(iter: I) -> Self {
        Attributes::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for Attributes {
    fn from(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Attributes(map.into_iter().collect())
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttrVisitor;
        impl<'de> Visitor<'de> for AttrVisitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attributes object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                let mut a = Attributes(entries);
                a.dedup_keys();
                Ok(a)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Attributes, E> {
                Ok(Attributes::new())
            }
        }
        deserializer.deserialize_any(AttrVisitor)
    }
}

/// Nanoseconds since the Unix epoch (UTC): the exact resolution InfluxDB stores.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

/// Why a timestamp from outside could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {value:?}: expected RFC 3339 like 2026-01-01T10:00:00.123456+00:00")]
pub struct TimestampError {
    /// The text that failed, cut to a readable length.
    pub value: String,
}

impl Timestamp {
    /// Wraps nanoseconds since the epoch.
    pub const fn from_nanos(nanos: i64) -> Self {
        Timestamp(nanos)
    }

    /// Nanoseconds since the epoch, as line protocol wants them.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// The wall clock, for the few places a source gives no time of its own.
    pub fn now() -> Self {
        let now = chrono::Utc::now();
        Timestamp(now.timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// Reads HA's `2026-01-01T10:00:00.123456+00:00` (any RFC 3339 offset accepted).
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimestampError> {
        if let Some(nanos) = parse_ha_utc(text.as_bytes()) {
            return Ok(Timestamp(nanos));
        }
        let parsed = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| TimestampError {
            value: text.chars().take(64).collect(),
        })?;
        parsed
            .timestamp_nanos_opt()
            .map(Timestamp)
            .ok_or_else(|| TimestampError {
                value: text.chars().take(64).collect(),
            })
    }

    /// Reads the epoch-seconds floats of `subscribe_entities` and the history API, rounded to the microsecond HA keeps.
    pub fn from_epoch_seconds(seconds: f64) -> Option<Self> {
        if !seconds.is_finite() {
            return None;
        }
        let micros = (seconds * 1e6).round();
        if micros.abs() > (i64::MAX / 1000) as f64 {
            return None;
        }
        Some(Timestamp(micros as i64 * 1000))
    }

    /// Writes the time the way HA does: UTC, microseconds, `+00:00`.
    pub fn to_rfc3339(self) -> String {
        let dt = chrono::DateTime::from_timestamp_nanos(self.0);
        dt.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

/// Fast path for HA's exact `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` (every timestamp
/// HA sends): about ten of them per `state_changed`, so this is hot. Anything
/// else (other offsets, precisions, leap seconds, out-of-range years) returns
/// `None` and goes through chrono.
fn parse_ha_utc(b: &[u8]) -> Option<i64> {
    if b.len() != 32
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || &b[26..] != b"+00:00"
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let micros = num(20, 26)?;
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (years counted from March).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    seconds
        .checked_mul(1_000_000_000)?
        .checked_add(micros * 1_000)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TsVisitor;
        impl Visitor<'_> for TsVisitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp or epoch seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
                Timestamp::from_epoch_seconds(v)
                    .ok_or_else(|| E::custom(format!("epoch seconds out of range: {v}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                self.visit_f64(v as f64)
            }
        }
        deserializer.deserialize_any(TsVisitor)
    }
}

/// Text kept inline up to `N` bytes (heap beyond): ids that recur in every event then cost no allocation.
#[derive(Clone)]
enum InlineStr<const N: usize> {
    Inline { len: u8, bytes: [u8; N] },
    Heap(Box<str>),
}

impl<const N: usize> InlineStr<N> {
    fn new(text: &str) -> Self {
        if text.len() <= N && N <= u8::MAX as usize {
            let mut bytes = [0u8; N];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            InlineStr::Inline {
                len: text.len() as u8,
                bytes,
            }
        } else {
            InlineStr::Heap(text.into())
        }
    }

    #[inline]
    fn as_str(&self) -> &str {
        match self {
            // SAFETY: `bytes[..len]` is a copy of a whole `&str` made in `new`, so it is valid UTF-8.
            InlineStr::Inline { len, bytes } => unsafe {
                std::str::from_utf8_unchecked(&bytes[..*len as usize])
            },
            InlineStr::Heap(text) => text,
        }
    }
}

/// A context id (HA's are 26-character ULIDs, user ids 32 hex digits), stored without an allocation.
#[derive(Clone)]
pub struct ContextId(InlineStr<32>);

impl ContextId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::ops::Deref for ContextId {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for ContextId {
    fn from(text: &str) -> Self {
        ContextId(InlineStr::new(text))
    }
}

impl From<String> for ContextId {
    fn from(text: String) -> Self {
        ContextId(InlineStr::new(&text))
    }
}

/// Ids compare, hash, print and (de)serialise as their text; `$parse` checks text from outside.
macro_rules! text_id_impls {
    ($ty:ty, $expecting:literal, $parse:expr) => {
        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $ty {}

        impl std::hash::Hash for $ty {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state);
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct TextVisitor;
                impl Visitor<'_> for TextVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        $parse(v).map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(TextVisitor)
            }
        }
    };
}

text_id_impls!(ContextId, "a context id string", |v: &str| -> Result<
    ContextId,
    std::convert::Infallible,
> {
    Ok(ContextId::from(v))
});
text_id_impls!(EntityId, "an entity id string", EntityId::new);

/// A validated `domain.object_id`; the split is kept so tags need no re-parsing.
#[derive(Clone)]
pub struct EntityId {
    full: InlineStr<40>,
    dot: usize,
}

impl PartialOrd for EntityId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for EntityId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// Why an entity id from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid entity_id {0:?}: expected domain.object_id")]
pub struct EntityIdError(pub String);

impl EntityId {
    /// Accepts `domain.object_id` with both parts non-empty.
    pub fn new(full: &str) -> Result<Self, EntityIdError> {
        match full.find('.') {
            Some(dot) if dot > 0 && dot + 1 < full.len() => Ok(EntityId {
                full: InlineStr::new(full),
                dot,
            }),
            _ => Err(EntityIdError(full.chars().take(128).collect())),
        }
    }

    /// The whole id, `sensor.kitchen_temperature`.
    pub fn as_str(&self) -> &str {
        self.full.as_str()
    }

    /// The part before the first dot, `sensor`.
    pub fn domain(&self) -> &str {
        &self.as_str()[..self.dot]
    }

    /// The part after the first dot, `kitchen_temperature`: HA's `entity_id` tag.
    pub fn object_id(&self) -> &str {
        &self.as_str()[self.dot + 1..]
    }
}

/// HA's context: who or what caused a change; ids are unbounded, so never tags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// ULID of this context.
    #[serde(default)]
    pub id: Option<ContextId>,
    /// The context that caused this one, if any.
    #[serde(default)]
    pub parent_id: Option<ContextId>,
    /// The HA user behind the change, if any.
    #[serde(default)]
    pub user_id: Option<ContextId>,
}

/// One entity's state as HA serialises it in events, `get_states` and history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The entity this state belongs to.
    pub entity_id: EntityId,
    /// The raw state string (`"21.5"`, `"on"`, `"unavailable"` …).
    pub state: String,
    /// Attributes in HA's order.
    #[serde(default)]
    pub attributes: Attributes,
    /// When `state` last changed.
    pub last_changed: Timestamp,
    /// Sent by HA since 2024.x; absent in older frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reported: Option<Timestamp>,
    /// When state or attributes last changed: the point's time in history backfill.
    pub last_updated: Timestamp,
    /// The context of the change that produced this state.
    #[serde(default)]
    pub context: Option<Context>,
}

impl State {
    /// A state set at one moment (changed and updated then), with no HA context: what a
    /// migration or a generated history rebuilds from a stored point.
    pub fn at(entity_id: EntityId, state: String, attributes: Attributes, at: Timestamp) -> State {
        State {
            entity_id,
            state,
            attributes,
            last_changed: at,
            last_reported: None,
            last_updated: at,
            context: None,
        }
    }
}

/// Where HA says an event was fired: this instance or a remote one (eventstream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Origin {
    /// Fired by this HA instance.
    #[default]
    #[serde(rename = "LOCAL")]
    Local,
    /// Re-fired from another instance.
    #[serde(rename = "REMOTE")]
    Remote,
}

impl Origin {
    /// HA's spelling, used as a tag value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Origin::Local => "LOCAL",
            Origin::Remote => "REMOTE",
        }
    }
}

/// The state before a change, kept as HA's JSON and decoded on first use.
///
/// Most stages never look at the old state (the `homeassistant` schema does
/// not), yet it is as large as the new one: decoding it eagerly was about a
/// third of the decode cost per event. It is validated as JSON on arrival and
/// decoded into a [`State`] once, when a stage first asks.
#[derive(Clone, Debug)]
pub struct LazyState {
    raw: Option<Box<serde_json::value::RawValue>>,
    decoded: std::sync::OnceLock<Result<State, String>>,
}

impl LazyState {
    /// Wraps an already decoded state.
    pub fn decoded(state: State) -> Self {
        LazyState {
            raw: None,
            decoded: std::sync::OnceLock::from(Ok(state)),
        }
    }

    /// The state, decoded on first call; the error says why HA's JSON is not a state.
    pub fn get(&self) -> Result<&State, &str> {
        let decoded = self.decoded.get_or_init(|| match &self.raw {
            Some(raw) => serde_json::from_str(raw.get()).map_err(|e| e.to_string()),
            None => Err("no state".to_string()),
        });
        decoded.as_ref().map_err(String::as_str)
    }

    /// The state, or `None` when HA's JSON for it is malformed.
    pub fn state(&self) -> Option<&State> {
        self.get().ok()
    }

    /// The state's `state` string without decoding the rest: read from the start of HA's
    /// JSON (where HA puts it, after `entity_id`), or from the decoded state when there is one.
    ///
    /// Tests that only compare the old state's value (`changed`, and the first half of
    /// `attributes_only_changed`) use it; decoding the attributes was most of their cost.
    /// `None` when the JSON has no string `state` member, or is malformed before it.
    pub fn peek_state(&self) -> Option<std::borrow::Cow<'_, str>> {
        if let Some(decoded) = self.decoded.get() {
            return decoded
                .as_ref()
                .ok()
                .map(|s| std::borrow::Cow::Borrowed(s.state.as_str()));
        }
        let raw = self.raw.as_ref()?;
        let mut found = None;
        let mut de = serde_json::Deserializer::from_str(raw.get());
        // The visitor stops at `state`; serde_json then reports the members it did not
        // read as an error, which is expected and ignored: `found` holds the answer.
        let _ = de::Deserializer::deserialize_map(&mut de, PeekState { found: &mut found });
        found
    }
}

/// Reads map members up to `state` and keeps its string value.
struct PeekState<'a, 'de> {
    found: &'a mut Option<std::borrow::Cow<'de, str>>,
}

impl<'de> Visitor<'de> for PeekState<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a state object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<&'de str>()? {
            if key == "state" {
                *self.found = Some(map.next_value_seed(PeekText)?);
                return Ok(());
            }
            map.next_value::<de::IgnoredAny>()?;
        }
        Ok(())
    }
}

/// A string member, borrowed from the JSON unless it has escapes.
struct PeekText;

impl<'de> de::DeserializeSeed<'de> for PeekText {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PeekText {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }
}

impl From<State> for LazyState {
    fn from(state: State) -> Self {
        LazyState::decoded(state)
    }
}

impl PartialEq for LazyState {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Serialize for LazyState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.raw, self.get()) {
            (Some(raw), _) => raw.serialize(serializer),
            (None, Ok(state)) => state.serialize(serializer),
            (None, Err(e)) => Err(serde::ser::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for LazyState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        if !raw.get().starts_with('{') {
            return Err(de::Error::custom("old_state must be an object or null"));
        }
        Ok(LazyState {
            raw: Some(raw),
            decoded: std::sync::OnceLock::new(),
        })
    }
}

/// The payload of a `state_changed` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateChanged {
    /// The entity that changed.
    pub entity_id: EntityId,
    /// `None` when the entity was just added; decoded on demand.
    pub old_state: Option<LazyState>,
    /// `None` when the entity was removed.
    pub new_state: Option<State>,
}

/// Any bus event other than `state_changed`, kept whole so nothing is lost.
#[derive(Clone, Debug, PartialEq)]
pub struct BusEvent {
    /// `call_service`, `automation_triggered`, `homeassistant_start` …
    pub event_type: String,
    /// The event's `data` object as HA sent it.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// What happened: a decoded state change or another bus event.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// A `state_changed` event.
    StateChanged(Box<StateChanged>),
    /// Every other event type.
    Bus(BusEvent),
}

/// One HA bus event, owned, with its source and HA's own time.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The source that produced it.
    pub source: SourceId,
    /// HA's `time_fired`: the point's timestamp, so replays overwrite themselves.
    pub time_fired: Timestamp,
    /// `LOCAL` or `REMOTE`.
    pub origin: Origin,
    /// The event's context.
    pub context: Context,
    /// The payload.
    pub kind: EventKind,
    /// Delivery details that are not Home Assistant's (upstream mark, MQTT retained flag).
    pub meta: EventMeta,
}

/// What travels with an event besides HA's own fields; `Default` for events that need none of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// Released once the event's points are safe, so the source may acknowledge upstream.
    pub mark: crate::feedback::handoff::Mark,
    /// Came from a retained MQTT message (a broker's stored last value, not a fresh one).
    pub retained: bool,
}

/// The type string of a state change, shared to avoid re-spelling it.
pub const STATE_CHANGED: &str = "state_changed";

impl Event {
    /// A state as a `state_changed` event with no old state, at the state's `last_updated` and with its
    /// context: how snapshots, MQTT decoders, migrations and generated histories hand on a state.
    pub fn from_state(source: SourceId, state: State) -> Event {
        Event {
            meta: EventMeta::default(),
            source,
            time_fired: state.last_updated,
            origin: Origin::Local,
            context: state.context.clone().unwrap_or_default(),
            kind: EventKind::StateChanged(Box::new(StateChanged {
                entity_id: state.entity_id.clone(),
                old_state: None,
                new_state: Some(state),
            })),
        }
    }

    /// HA's `event_type`.
    pub fn event_type(&self) -> &str {
        match &self.kind {
            EventKind::StateChanged(_) => STATE_CHANGED,
            EventKind::Bus(bus) => &bus.event_type,
        }
    }

    /// The entity a state change is about, if this is one.
    pub fn entity_id(&self) -> Option<&EntityId> {
        match &self.kind {
            EventKind::StateChanged(sc) => Some(&sc.entity_id),
            EventKind::Bus(_) => None,
        }
    }

    /// The state change payload, if this is one.
    pub fn state_changed(&self) -> Option<&StateChanged> {
        match &self.kind {
            EventKind::StateChanged(sc) => Some(sc),
            EventKind::Bus(_) => None,
        }
    }

    /// The state change, to amend (a backfilled state gets back what the recorder dropped).
    pub fn state_changed_mut(&mut self) -> Option<&mut StateChanged> {
        match &mut self.kind {
            EventKind::StateChanged(sc) => Some(sc),
            EventKind::Bus(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
