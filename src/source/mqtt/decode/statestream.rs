//! `statestream`: HA's `mqtt_statestream` topics reassembled into one state event per update.
//!
//! HA publishes one change as `…/<domain>/<object_id>/state` (the raw state),
//! then `last_updated` and `last_changed` (with `publish_timestamps`), then one
//! topic per attribute (JSON, with `publish_attributes`). The topics of one
//! entity are collected in a group for `group_window` from the first of them;
//! a leaf that arrives again (a new `state`, a repeated attribute) closes the
//! group early, since it belongs to the next update. A group with no `state`
//! (attributes that came after the window, or a retained replay in another
//! order) takes the entity's last known state and timestamps, so its fields
//! land on the same point in InfluxDB.
//!
//! An attribute named `state` is published on the `state` topic, among the
//! other attributes. A second `state` after the group's timestamps and
//! attributes is therefore held until the entity's next message: a
//! `last_updated`/`last_changed`/`state` means it started the next update, an
//! attribute (or the window ending) means it was the attribute.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde_json::Value;

use super::{Ctx, DecodeError, Sub, entity, state_event};
use crate::event::{Attributes, EntityId, Event, Timestamp};
use crate::source::mqtt::topic::Role;

/// Entities remembered for state-less groups; past this the memory is cleared (hostile topic floods).
const LAST_MAX: usize = 200_000;

type Key = (u32, EntityId);

/// One update being collected.
#[derive(Debug)]
struct Group {
    first_seq: u64,
    deadline: Instant,
    received: Timestamp,
    retained: bool,
    state: Option<String>,
    /// A second `state` topic, not yet known to be the next update or an attribute named `state`.
    pending_state: Option<Pending>,
    last_updated: Option<Timestamp>,
    last_changed: Option<Timestamp>,
    attributes: Attributes,
}

/// A held `state` message.
#[derive(Debug)]
struct Pending {
    raw: String,
    seq: u64,
    received: Timestamp,
    retained: bool,
}

/// An attribute payload as JSON, or as text when it is not JSON.
fn attribute_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// What the last emitted update of an entity said.
#[derive(Debug)]
struct Last {
    state: String,
    last_updated: Timestamp,
    last_changed: Timestamp,
}

/// One statestream topic's meaning.
enum Leaf {
    State(String),
    LastUpdated(Timestamp),
    LastChanged(Timestamp),
    Attribute(String, Value),
}

/// The open groups of every statestream subscription.
#[derive(Debug, Default)]
pub(super) struct Groups {
    open: HashMap<Key, Group>,
    /// First seq of each open group (the oldest is what the client may not acknowledge).
    by_seq: BTreeMap<u64, Key>,
    /// (deadline, first seq) of each open group.
    by_deadline: BTreeSet<(Instant, u64)>,
    last: HashMap<Key, Last>,
}

/// `"x"` → `x` when the payload is a JSON string (HA's docs say states are JSON; its code sends them raw).
fn unquote(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() >= 2
        && text.starts_with('"')
        && text.ends_with('"')
        && let Ok(s) = serde_json::from_str::<String>(text)
    {
        return s.into();
    }
    text.into()
}

fn parse_leaf(ctx: &Ctx<'_>, leaf: &str) -> Result<Option<Leaf>, DecodeError> {
    let text = ctx.text()?;
    let ts = |text: &str| {
        let t = unquote(text.trim());
        Timestamp::parse_rfc3339(&t).map_err(|e| ctx.err("bad_timestamp", e))
    };
    Ok(Some(match leaf {
        "state" => Leaf::State(text.to_string()),
        // An empty payload on these is a cleared retained topic, not an update.
        _ if text.is_empty() => return Ok(None),
        "last_updated" => Leaf::LastUpdated(ts(text)?),
        "last_changed" => Leaf::LastChanged(ts(text)?),
        attr => {
            let v: Value = serde_json::from_str(text).map_err(|e| {
                ctx.err(
                    "bad_json",
                    format_args!("attribute {attr}: {e} on {:?}", ctx.msg.topic),
                )
            })?;
            Leaf::Attribute(attr.to_string(), v)
        }
    }))
}

impl Groups {
    /// Adds one message to its entity's group, emitting the previous group when this one starts a new update.
    pub(super) fn add(
        &mut self,
        idx: u32,
        ctx: &Ctx<'_>,
        now: Instant,
        out: &mut Vec<Event>,
        errors: &mut Vec<DecodeError>,
    ) -> Result<(), DecodeError> {
        let mut buf = String::new();
        let (id, leaf_name) = if ctx.sub.pattern.is_some() {
            let leaf = ctx.role(Role::Attribute).unwrap_or("");
            (entity::entity_id(ctx, None, &mut buf)?, leaf)
        } else {
            // `…/<domain>/<object_id>/<leaf>`: the last three levels.
            let mut it = ctx.msg.topic.rsplitn(4, '/');
            let (leaf, object, domain) = match (it.next(), it.next(), it.next()) {
                (Some(l), Some(o), Some(d)) => (l, o, d),
                _ => {
                    return Err(ctx.err(
                        "bad_entity_id",
                        format_args!(
                            "topic {:?} is not …/<domain>/<object_id>/<leaf>",
                            ctx.msg.topic
                        ),
                    ));
                }
            };
            buf.push_str(domain);
            buf.push('.');
            buf.push_str(object);
            if domain.contains('.') {
                return Err(ctx.err(
                    "bad_entity_id",
                    format_args!("domain {domain:?} holds a '.'"),
                ));
            }
            let id = EntityId::new(&buf).map_err(|e| ctx.err("bad_entity_id", e))?;
            (id, leaf)
        };
        if leaf_name.is_empty() {
            return Err(ctx.err(
                "bad_entity_id",
                format_args!("no leaf in {:?}", ctx.msg.topic),
            ));
        }
        let Some(leaf) = parse_leaf(ctx, leaf_name)? else {
            return Ok(());
        };
        let key: Key = (idx, id);
        let deadline = now + ctx.sub.cfg.group_window;
        if let Some(g) = self.open.get_mut(&key) {
            if let Some(pending) = g.pending_state.take() {
                if let Leaf::Attribute(..) = leaf {
                    // The held `state` was the attribute named `state`, published among the others.
                    g.attributes
                        .insert("state".to_string(), attribute_value(&pending.raw));
                } else {
                    // It was the next update's state: this update is complete.
                    self.close(&key, ctx.sub, out, errors);
                    let g = self.open_group(&key, pending.seq, pending.received, deadline, ctx);
                    g.retained &= pending.retained;
                    g.state = Some(unquote(&pending.raw).into_owned());
                }
            } else if let Leaf::State(raw) = &leaf
                && g.state.is_some()
                && g.last_updated.is_some()
                && !g.attributes.is_empty()
            {
                // HA publishes an attribute named `state` on the same topic as the state:
                // the next message tells which this is (`last_updated` follows a real state).
                g.pending_state = Some(Pending {
                    raw: raw.clone(),
                    seq: ctx.msg.seq,
                    received: ctx.msg.received,
                    retained: ctx.msg.retained,
                });
                return Ok(());
            }
        }
        if let Some(g) = self.open.get(&key) {
            let repeated = match &leaf {
                Leaf::State(_) => g.state.is_some(),
                Leaf::LastUpdated(_) => g.last_updated.is_some(),
                Leaf::LastChanged(_) => g.last_changed.is_some(),
                Leaf::Attribute(k, _) => g.attributes.contains_key(k),
            };
            if repeated {
                self.close(&key, ctx.sub, out, errors);
            }
        }
        let g = self.open_group(&key, ctx.msg.seq, ctx.msg.received, deadline, ctx);
        g.retained &= ctx.msg.retained;
        match leaf {
            Leaf::State(raw) => g.state = Some(unquote(&raw).into_owned()),
            Leaf::LastUpdated(t) => g.last_updated = Some(t),
            Leaf::LastChanged(t) => g.last_changed = Some(t),
            Leaf::Attribute(k, v) => g.attributes.insert(k, v),
        }
        Ok(())
    }

    /// The open group of `key`, opened with this first message if there is none.
    fn open_group(
        &mut self,
        key: &Key,
        seq: u64,
        received: Timestamp,
        deadline: Instant,
        ctx: &Ctx<'_>,
    ) -> &mut Group {
        match self.open.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.by_seq.insert(seq, key.clone());
                self.by_deadline.insert((deadline, seq));
                let mut attributes = Attributes::new();
                for (name, value) in ctx.extras() {
                    attributes.insert(name.to_string(), Value::String(value.to_string()));
                }
                e.insert(Group {
                    first_seq: seq,
                    deadline,
                    received,
                    retained: true,
                    state: None,
                    pending_state: None,
                    last_updated: None,
                    last_changed: None,
                    attributes,
                })
            }
        }
    }

    /// Removes one open group and emits its event.
    fn close(&mut self, key: &Key, sub: &Sub, out: &mut Vec<Event>, errors: &mut Vec<DecodeError>) {
        let Some(mut g) = self.open.remove(key) else {
            return;
        };
        if let Some(pending) = g.pending_state.take() {
            // Nothing followed the held `state` within the window: an attribute of this update.
            g.attributes
                .insert("state".to_string(), attribute_value(&pending.raw));
        }
        self.by_seq.remove(&g.first_seq);
        self.by_deadline.remove(&(g.deadline, g.first_seq));
        let last = self.last.get(key);
        let (state, last_updated, last_changed) = match (g.state, last) {
            (Some(state), _) => {
                let lu = g.last_updated.unwrap_or(g.received);
                (state, lu, g.last_changed.unwrap_or(lu))
            }
            (None, Some(last)) => (
                last.state.clone(),
                g.last_updated.unwrap_or(last.last_updated),
                g.last_changed.unwrap_or(last.last_changed),
            ),
            (None, None) => {
                errors.push(DecodeError::new(
                    &sub.cfg.name,
                    "no_state",
                    format_args!(
                        "{}: attributes or timestamps without a state topic and no earlier state",
                        key.1
                    ),
                ));
                return;
            }
        };
        if self.last.len() >= LAST_MAX && !self.last.contains_key(key) {
            self.last.clear();
        }
        self.last.insert(
            key.clone(),
            Last {
                state: state.clone(),
                last_updated,
                last_changed,
            },
        );
        out.push(state_event(
            sub,
            key.1.clone(),
            state,
            g.attributes,
            last_updated,
            last_changed,
            g.retained,
        ));
    }

    /// Emits groups whose deadline is at or before `now` (all of them for `None`), oldest first.
    pub(super) fn flush(
        &mut self,
        now: Option<Instant>,
        subs: &[Sub],
        out: &mut Vec<Event>,
        errors: &mut Vec<DecodeError>,
    ) {
        while let Some(&(deadline, seq)) = self.by_deadline.first() {
            if now.is_some_and(|now| deadline > now) {
                break;
            }
            let Some(key) = self.by_seq.get(&seq).cloned() else {
                self.by_deadline.pop_first();
                continue;
            };
            match subs.get(key.0 as usize) {
                Some(sub) => self.close(&key, sub, out, errors),
                None => {
                    self.by_deadline.pop_first();
                }
            }
        }
    }

    /// The earliest deadline of an open group.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// The first seq of the oldest open group.
    pub(super) fn oldest_held(&self) -> Option<u64> {
        self.by_seq.first_key_value().map(|(s, _)| *s)
    }
}
