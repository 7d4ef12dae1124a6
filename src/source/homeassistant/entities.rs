//! `subscribe_entities`: Home Assistant's compressed state stream, and the
//! client-side cache that turns it back into ordinary `state_changed` events.
//!
//! HA sends, per subscription, one `{"a": {entity_id: state}}` with every
//! current state, then `{"c": {entity_id: {"+": additions, "-": {"a": [keys]}}}}`
//! for changes (a diff against what the client already has), `{"a": …}` for
//! entities added later and `{"r": [entity_id]}` for removals; one event may
//! carry any combination. A compressed state is `{"s": state, "a": attributes,
//! "c": context, "lc": last_changed[, "lu": last_updated]}`: times are epoch
//! seconds, `lu` is sent only when it differs from `lc`, and the context is a
//! bare id string when it has no parent and no user. In a diff, `lc` means
//! "last_changed and last_updated are both this", `lu` alone moves
//! last_updated, `a` holds only the attributes added or changed, and a context
//! string replaces only the id (sources: HA's `State.as_compressed_state` and
//! `websocket_api/messages.py::_state_diff`; the frontend's cache in
//! `home-assistant-js-websocket` applies them the same way).
//!
//! The cache keeps the last state of every entity so each change becomes a
//! `state_changed` event with its old state, at the new state's
//! `last_updated` (HA's `time_fired` for a state change). `last_reported` is
//! never sent in this stream, so it is absent from these states.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::event::{
    Attributes, Context, ContextId, EntityId, Event, EventKind, LazyState, Origin, SourceId, State,
    StateChanged, Timestamp,
};

/// One event of a `subscribe_entities` subscription, decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntitiesMessage {
    /// `a`: full states of entities that are new to the client (all of them in the first event).
    pub added: Vec<(EntityId, CompressedState)>,
    /// `c`: diffs against the client's cached states.
    pub changed: Vec<(EntityId, StateDiff)>,
    /// `r`: entities that no longer exist.
    pub removed: Vec<EntityId>,
}

/// A whole state in the compressed form.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompressedState {
    /// `s`: the state string.
    pub s: String,
    /// `a`: every attribute.
    #[serde(default)]
    pub a: Attributes,
    /// `c`: the context.
    #[serde(default)]
    pub c: Option<ContextPatch>,
    /// `lc`: last_changed.
    #[serde(deserialize_with = "epoch")]
    pub lc: Timestamp,
    /// `lu`: last_updated, only when it differs from `lc`.
    #[serde(default, deserialize_with = "epoch_opt")]
    pub lu: Option<Timestamp>,
}

/// A diff: what to overlay (`+`) and which attributes to drop (`-`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct StateDiff {
    /// `+`: changed parts.
    #[serde(rename = "+", default)]
    pub plus: Additions,
    /// `-`: removed parts.
    #[serde(rename = "-", default)]
    pub minus: Removals,
}

/// The `+` of a diff: only what changed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Additions {
    /// A new state string.
    #[serde(default)]
    pub s: Option<String>,
    /// Attributes added or changed (not the whole set).
    #[serde(default)]
    pub a: Option<Attributes>,
    /// The context's changed parts.
    #[serde(default)]
    pub c: Option<ContextPatch>,
    /// New last_changed, which is also the new last_updated.
    #[serde(default, deserialize_with = "epoch_opt")]
    pub lc: Option<Timestamp>,
    /// New last_updated (the state string did not change).
    #[serde(default, deserialize_with = "epoch_opt")]
    pub lu: Option<Timestamp>,
}

/// The `-` of a diff.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Removals {
    /// Attribute keys that are gone.
    #[serde(default)]
    pub a: Vec<String>,
}

/// A context as this stream sends it: a bare id, or the fields that are set (or changed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ContextPatch {
    /// Only the id (a whole context: no parent, no user; in a diff: only the id changed).
    Id(String),
    /// Some of `id`, `parent_id`, `user_id`; a key that is present replaces that part.
    Fields(ContextFields),
}

/// The object form of [`ContextPatch`]: `Some(None)` is a key sent as `null`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ContextFields {
    /// The context id.
    #[serde(default, deserialize_with = "present")]
    pub id: Option<Option<String>>,
    /// The parent context id.
    #[serde(default, deserialize_with = "present")]
    pub parent_id: Option<Option<String>>,
    /// The user id.
    #[serde(default, deserialize_with = "present")]
    pub user_id: Option<Option<String>>,
}

impl ContextPatch {
    /// Overlays this patch on `context` (a whole context starts from the default).
    fn apply(&self, context: &mut Context) {
        match self {
            ContextPatch::Id(id) => context.id = Some(ContextId::from(id.as_str())),
            ContextPatch::Fields(f) => {
                let set = |slot: &mut Option<ContextId>, v: &Option<Option<String>>| {
                    if let Some(v) = v {
                        *slot = v.as_deref().map(ContextId::from);
                    }
                };
                set(&mut context.id, &f.id);
                set(&mut context.parent_id, &f.parent_id);
                set(&mut context.user_id, &f.user_id);
            }
        }
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn epoch<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let seconds = f64::deserialize(d)?;
    Timestamp::from_epoch_seconds(seconds)
        .ok_or_else(|| de::Error::custom(format!("{seconds} is not a time in epoch seconds")))
}

fn epoch_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    epoch(d).map(Some)
}

/// A JSON object of entity ids to `T`, kept in HA's order.
struct Pairs<T>(Vec<(EntityId, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Pairs<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for PairsVisitor<T> {
            type Value = Pairs<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object keyed by entity id")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<T>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some((k, v)) = map.next_entry::<EntityId, T>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        deserializer.deserialize_map(PairsVisitor(std::marker::PhantomData))
    }
}

/// Reads the `a` part of an entities event.
pub(crate) fn read_added<'de, A: MapAccess<'de>>(
    map: &mut A,
) -> Result<Vec<(EntityId, CompressedState)>, A::Error> {
    Ok(map.next_value::<Pairs<CompressedState>>()?.0)
}

/// Reads the `c` part of an entities event.
pub(crate) fn read_changed<'de, A: MapAccess<'de>>(
    map: &mut A,
) -> Result<Vec<(EntityId, StateDiff)>, A::Error> {
    Ok(map.next_value::<Pairs<StateDiff>>()?.0)
}

impl<'de> Deserialize<'de> for EntitiesMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            a: Option<Pairs<CompressedState>>,
            #[serde(default)]
            c: Option<Pairs<StateDiff>>,
            #[serde(default)]
            r: Option<Vec<EntityId>>,
        }
        let wire = Wire::deserialize(deserializer)?;
        Ok(EntitiesMessage {
            added: wire.a.map(|p| p.0).unwrap_or_default(),
            changed: wire.c.map(|p| p.0).unwrap_or_default(),
            removed: wire.r.unwrap_or_default(),
        })
    }
}

/// Why part of an entities event could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntitiesError {
    /// A change or removal for an entity the cache does not hold (its `a` was never received).
    #[error("subscribe_entities {what} for {entity_id}, which was never added")]
    UnknownEntity {
        /// `change` or `removal`.
        what: &'static str,
        /// The entity.
        entity_id: String,
    },
}

/// The client's copy of every entity's state, fed by one subscription.
#[derive(Debug, Default)]
pub struct StateCache {
    states: HashMap<EntityId, State>,
}

impl StateCache {
    /// An empty cache (a new subscription starts from one).
    pub fn new() -> Self {
        Self::default()
    }

    /// Entities held.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The cached state of `entity_id`.
    pub fn get(&self, entity_id: &EntityId) -> Option<&State> {
        self.states.get(entity_id)
    }

    /// Applies one event (`a`, then `r`, then `c`, the order HA's own frontend
    /// uses) and appends one `state_changed` per entity to `out`, carrying
    /// `source`. A removal has no time from HA: it is stamped `removed_at`.
    pub fn apply(
        &mut self,
        message: EntitiesMessage,
        source: &SourceId,
        removed_at: Timestamp,
        out: &mut Vec<Result<Event, EntitiesError>>,
    ) {
        for (entity_id, compressed) in message.added {
            let mut context = Context::default();
            if let Some(c) = &compressed.c {
                c.apply(&mut context);
            }
            let new = State {
                entity_id: entity_id.clone(),
                state: compressed.s,
                attributes: compressed.a,
                last_changed: compressed.lc,
                last_reported: None,
                last_updated: compressed.lu.unwrap_or(compressed.lc),
                context: Some(context),
            };
            let old = self.states.insert(entity_id.clone(), new.clone());
            out.push(Ok(state_changed(source, entity_id, old, Some(new), None)));
        }
        for entity_id in message.removed {
            match self.states.remove(&entity_id) {
                Some(old) => out.push(Ok(state_changed(
                    source,
                    entity_id,
                    Some(old),
                    None,
                    Some(removed_at),
                ))),
                None => out.push(Err(EntitiesError::UnknownEntity {
                    what: "removal",
                    entity_id: entity_id.to_string(),
                })),
            }
        }
        for (entity_id, diff) in message.changed {
            let Some(cached) = self.states.get_mut(&entity_id) else {
                out.push(Err(EntitiesError::UnknownEntity {
                    what: "change",
                    entity_id: entity_id.to_string(),
                }));
                continue;
            };
            let old = cached.clone();
            apply_diff(cached, diff);
            let new = cached.clone();
            out.push(Ok(state_changed(
                source,
                entity_id,
                Some(old),
                Some(new),
                None,
            )));
        }
    }
}

/// Overlays a diff on a cached state.
fn apply_diff(state: &mut State, diff: StateDiff) {
    let StateDiff { plus, minus } = diff;
    if let Some(s) = plus.s {
        state.state = s;
    }
    if let Some(c) = &plus.c {
        c.apply(state.context.get_or_insert_with(Context::default));
    }
    if let Some(lc) = plus.lc {
        state.last_changed = lc;
        state.last_updated = lc;
    } else if let Some(lu) = plus.lu {
        state.last_updated = lu;
    }
    if !minus.a.is_empty() {
        let kept: Attributes = state
            .attributes
            .iter()
            .filter(|(k, _)| !minus.a.iter().any(|gone| gone == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        state.attributes = kept;
    }
    if let Some(a) = plus.a {
        for (k, v) in a.iter() {
            state.attributes.insert(k.clone(), v.clone());
        }
    }
}

/// A `state_changed` event at the new state's `last_updated` (or `at` for a removal).
fn state_changed(
    source: &SourceId,
    entity_id: EntityId,
    old: Option<State>,
    new: Option<State>,
    at: Option<Timestamp>,
) -> Event {
    let time_fired = match (&new, at) {
        (Some(new), _) => new.last_updated,
        (None, Some(at)) => at,
        (None, None) => Timestamp::now(),
    };
    let context = new
        .as_ref()
        .and_then(|n| n.context.clone())
        .unwrap_or_default();
    Event {
        meta: Default::default(),
        source: source.clone(),
        time_fired,
        origin: Origin::Local,
        context,
        kind: EventKind::StateChanged(Box::new(StateChanged {
            entity_id,
            old_state: old.map(LazyState::from),
            new_state: new,
        })),
    }
}

/// The compressed form of `state`, as HA's `State.as_compressed_state` writes it (the simulator serves it).
pub fn compressed_state(state: &State) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    out.insert("s".into(), serde_json::Value::String(state.state.clone()));
    out.insert(
        "a".into(),
        serde_json::to_value(&state.attributes).unwrap_or_default(),
    );
    out.insert("c".into(), compressed_context(state.context.as_ref()));
    out.insert("lc".into(), seconds(state.last_changed));
    if state.last_updated != state.last_changed {
        out.insert("lu".into(), seconds(state.last_updated));
    }
    serde_json::Value::Object(out)
}

/// The diff HA's `_state_diff` makes from `old` to `new` (the simulator serves it).
pub fn state_diff(old: &State, new: &State) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut plus = Map::new();
    if old.state != new.state {
        plus.insert("s".into(), json!(new.state));
    }
    if old.last_changed != new.last_changed {
        plus.insert("lc".into(), seconds(new.last_changed));
    } else if old.last_updated != new.last_updated {
        plus.insert("lu".into(), seconds(new.last_updated));
    }
    let (oc, nc) = (
        old.context.clone().unwrap_or_default(),
        new.context.clone().unwrap_or_default(),
    );
    let text = |v: &Option<ContextId>| v.as_ref().map_or(Value::Null, |c| json!(c.as_str()));
    let mut context = Map::new();
    if oc.parent_id != nc.parent_id {
        context.insert("parent_id".into(), text(&nc.parent_id));
    }
    if oc.user_id != nc.user_id {
        context.insert("user_id".into(), text(&nc.user_id));
    }
    if oc.id != nc.id {
        if context.is_empty() {
            plus.insert("c".into(), text(&nc.id));
        } else {
            context.insert("id".into(), text(&nc.id));
        }
    }
    if !context.is_empty() {
        plus.insert("c".into(), Value::Object(context));
    }
    let mut diff = Map::new();
    if old.attributes != new.attributes {
        let mut changed = Map::new();
        for (k, v) in new.attributes.iter() {
            if old.attributes.get(k) != Some(v) {
                changed.insert(k.clone(), v.clone());
            }
        }
        if !changed.is_empty() {
            plus.insert("a".into(), Value::Object(changed));
        }
        let removed: Vec<&String> = old
            .attributes
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !new.attributes.contains_key(k))
            .collect();
        if !removed.is_empty() {
            diff.insert("-".into(), json!({ "a": removed }));
        }
    }
    diff.insert("+".into(), Value::Object(plus));
    Value::Object(diff)
}

fn compressed_context(context: Option<&Context>) -> serde_json::Value {
    let c = context.cloned().unwrap_or_default();
    let text = |v: &Option<ContextId>| {
        v.as_ref()
            .map_or(serde_json::Value::Null, |c| c.as_str().into())
    };
    if c.parent_id.is_none() && c.user_id.is_none() {
        text(&c.id)
    } else {
        serde_json::json!({"id": text(&c.id), "parent_id": text(&c.parent_id), "user_id": text(&c.user_id)})
    }
}

/// Epoch seconds with HA's microsecond resolution.
fn seconds(t: Timestamp) -> serde_json::Value {
    serde_json::json!((t.as_nanos() / 1_000) as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src() -> SourceId {
        SourceId::from("homeassistant")
    }

    fn apply(
        cache: &mut StateCache,
        frame: serde_json::Value,
    ) -> Vec<Result<Event, EntitiesError>> {
        let message: EntitiesMessage = serde_json::from_value(frame).expect("decodes");
        let mut out = Vec::new();
        cache.apply(message, &src(), Timestamp::from_nanos(5), &mut out);
        out
    }

    fn new_state(e: &Result<Event, EntitiesError>) -> State {
        let e = e.as_ref().expect("an event");
        e.state_changed().unwrap().new_state.clone().unwrap()
    }

    #[test]
    fn adds_changes_and_removals_become_state_changes() {
        let mut cache = StateCache::new();
        let out = apply(
            &mut cache,
            json!({"a": {"light.bed": {"s": "on", "a": {"brightness": 180, "effect": "none", "friendly_name": "Bed"},
                "c": "01JGH2FXR0A4W7D2E9M3P5K8QY", "lc": 1767261492.004211}}}),
        );
        assert_eq!(out.len(), 1);
        let first = new_state(&out[0]);
        assert_eq!(first.state, "on");
        assert_eq!(
            first.last_changed,
            Timestamp::from_nanos(1_767_261_492_004_211_000)
        );
        assert_eq!(
            first.last_updated, first.last_changed,
            "no lu: it equals lc"
        );
        assert_eq!(
            first.context.as_ref().unwrap().id.as_deref(),
            Some("01JGH2FXR0A4W7D2E9M3P5K8QY")
        );
        let event = out[0].as_ref().unwrap();
        assert_eq!(event.time_fired, first.last_updated);
        assert!(event.state_changed().unwrap().old_state.is_none());

        // An attribute-only change: lu, a partial `a`, one attribute removed, a user on the context.
        let out = apply(
            &mut cache,
            json!({"c": {"light.bed": {"+": {"lu": 1767261601.5, "a": {"brightness": 200},
                "c": {"user_id": "u1", "id": "01JGH2K7Q3Y1S6H4G8J2N5V3TA"}}, "-": {"a": ["effect"]}}}}),
        );
        let second = new_state(&out[0]);
        assert_eq!(second.state, "on");
        assert_eq!(second.attributes["brightness"], 200);
        assert!(!second.attributes.contains_key("effect"));
        assert_eq!(second.attributes["friendly_name"], "Bed", "kept");
        assert_eq!(second.last_changed, first.last_changed);
        assert_eq!(
            second.last_updated,
            Timestamp::from_nanos(1_767_261_601_500_000_000)
        );
        let ctx = second.context.clone().unwrap();
        assert_eq!(ctx.user_id.as_deref(), Some("u1"));
        assert_eq!(ctx.id.as_deref(), Some("01JGH2K7Q3Y1S6H4G8J2N5V3TA"));
        let event = out[0].as_ref().unwrap();
        let old = event.state_changed().unwrap().old_state.as_ref().unwrap();
        assert_eq!(
            old.get().unwrap(),
            &first,
            "the old state is the cached one"
        );
        assert_eq!(event.context, ctx);

        // A state change: lc moves both times; a bare context id replaces only the id.
        let out = apply(
            &mut cache,
            json!({"c": {"light.bed": {"+": {"s": "off", "lc": 1767261700.25, "c": "01JGH2K7Q3N8V5T1R9X4C6B2MZ"}}}}),
        );
        let third = new_state(&out[0]);
        assert_eq!(third.state, "off");
        assert_eq!(third.last_updated, third.last_changed);
        let ctx = third.context.unwrap();
        assert_eq!(ctx.id.as_deref(), Some("01JGH2K7Q3N8V5T1R9X4C6B2MZ"));
        assert_eq!(
            ctx.user_id.as_deref(),
            Some("u1"),
            "only the id was replaced"
        );

        // Removal, then a change for an entity never added.
        let out = apply(
            &mut cache,
            json!({"r": ["light.bed"], "c": {"light.bed": {"+": {"s": "on"}}}}),
        );
        assert_eq!(out.len(), 2);
        let removal = out[0].as_ref().unwrap();
        let sc = removal.state_changed().unwrap();
        assert!(sc.new_state.is_none());
        assert_eq!(sc.old_state.as_ref().unwrap().get().unwrap().state, "off");
        assert_eq!(removal.time_fired, Timestamp::from_nanos(5));
        assert!(matches!(
            &out[1],
            Err(EntitiesError::UnknownEntity { what: "change", .. })
        ));
        assert!(cache.is_empty());
    }

    #[test]
    fn what_the_simulator_serves_round_trips_through_the_cache() {
        let ctx = |id: &str, user: Option<&str>| Context {
            id: Some(id.into()),
            parent_id: None,
            user_id: user.map(ContextId::from),
        };
        let mut attrs = Attributes::new();
        attrs.insert("a".into(), json!(1));
        attrs.insert("gone".into(), json!("x"));
        let old = State {
            entity_id: EntityId::new("sensor.t").unwrap(),
            state: "1".into(),
            attributes: attrs,
            last_changed: Timestamp::from_nanos(1_000_000_000_000_000),
            last_reported: None,
            last_updated: Timestamp::from_nanos(1_000_000_002_000_000),
            context: Some(ctx("c1", Some("u"))),
        };
        let mut new = old.clone();
        new.attributes = [("a".to_string(), json!(2)), ("b".to_string(), json!(null))]
            .into_iter()
            .collect();
        new.last_updated = Timestamp::from_nanos(1_000_000_005_000_000);
        new.context = Some(ctx("c2", None));
        let compressed = compressed_state(&old);
        assert!(compressed.get("lu").is_some(), "lu differs from lc: sent");
        let mut cache = StateCache::new();
        let out = apply(&mut cache, json!({"a": {"sensor.t": compressed}}));
        assert_eq!(new_state(&out[0]), old);
        let out = apply(
            &mut cache,
            json!({"c": {"sensor.t": state_diff(&old, &new)}}),
        );
        assert_eq!(new_state(&out[0]), new);
    }
}
