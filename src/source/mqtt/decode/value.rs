//! `value`: a plain scalar payload (`21.5`, `ON`, `open`) as one state (or bus) event.

use serde_json::Value;

use super::{BoolMode, Ctx, DecodeError, bus_event, entity, state_event};
use crate::event::{Attributes, Event};
use crate::source::mqtt::topic::Role;

/// `ON`/`OFF` style words as a bool, if the payload is one.
pub(super) fn as_bool(text: &str) -> Option<bool> {
    const ON: &[&str] = &["on", "true"];
    const OFF: &[&str] = &["off", "false"];
    if ON.iter().any(|w| text.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if OFF.iter().any(|w| text.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// The payload as a JSON scalar: a finite number, a bool (in `bool` mode) or the text.
fn as_json(text: &str, bools: BoolMode) -> Value {
    if let Some(b) = as_bool(text).filter(|_| bools == BoolMode::Bool) {
        return Value::Bool(b);
    }
    let numeric = text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if numeric && let Ok(n) = serde_json::from_str::<serde_json::Number>(text) {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

/// Decodes one scalar payload.
pub(super) fn decode(ctx: &Ctx<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError> {
    let text = ctx.text()?.trim();
    let cfg = &ctx.sub.cfg;
    if let Some(event_type) = &cfg.event_type {
        let mut data = serde_json::Map::new();
        data.insert(
            "topic".to_string(),
            Value::String(ctx.msg.topic.to_string()),
        );
        for (name, value) in ctx.extras() {
            data.insert(name.to_string(), Value::String(value.to_string()));
        }
        for role in [
            Role::EntityId,
            Role::Domain,
            Role::ObjectId,
            Role::Device,
            Role::Attribute,
        ] {
            if let (Some(v), Some(p)) = (ctx.role(role), ctx.sub.pattern.as_ref())
                && let Some((name, _)) = p.names().iter().find(|(_, r)| *r == role)
            {
                data.insert(name.clone(), Value::String(v.to_string()));
            }
        }
        data.insert("value".to_string(), as_json(text, cfg.bools));
        out.push(bus_event(
            ctx.sub,
            event_type,
            data,
            ctx.msg.received,
            ctx.msg.retained,
        ));
        return Ok(());
    }
    let mut buf = String::new();
    let id = entity::entity_id(ctx, ctx.role(Role::Attribute), &mut buf)?;
    let state = match as_bool(text).filter(|_| cfg.bools == BoolMode::Bool) {
        Some(true) => "on".to_string(),
        Some(false) => "off".to_string(),
        None => text.to_string(),
    };
    let attributes: Attributes = ctx
        .extras()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let t = ctx.msg.received;
    out.push(state_event(
        ctx.sub,
        id,
        state,
        attributes,
        t,
        t,
        ctx.msg.retained,
    ));
    Ok(())
}
