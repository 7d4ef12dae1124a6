//! `eventstream`: HA's `mqtt_eventstream` JSON, `{"event_type": …, "event_data": {…}}`.
//!
//! The payload carries no `time_fired`, origin or event context: a
//! `state_changed` takes its time from `new_state.last_updated` (its context
//! from the new state), every other event the arrival time.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Ctx, DecodeError};
use crate::event::{
    BusEvent, Context, Event, EventKind, EventMeta, Origin, STATE_CHANGED, StateChanged,
};

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event_type: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    event_data: Option<&'a RawValue>,
}

/// Decodes one eventstream message.
pub(super) fn decode(ctx: &Ctx<'_>, out: &mut Vec<Event>) -> Result<(), DecodeError> {
    let text = ctx.text()?;
    if text.trim().is_empty() {
        return Err(ctx.err("empty_payload", format_args!("on {:?}", ctx.msg.topic)));
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        let reason = if e.is_data() {
            "wrong_type"
        } else {
            "bad_json"
        };
        ctx.err(reason, e)
    })?;
    if env.event_type.is_empty() {
        return Err(ctx.err("wrong_type", "empty event_type"));
    }
    let data = env.event_data.map(RawValue::get).unwrap_or("{}");
    let (kind, time, context) = if env.event_type == STATE_CHANGED {
        let sc: StateChanged = serde_json::from_str(data)
            .map_err(|e| ctx.err("wrong_type", format_args!("state_changed event_data: {e}")))?;
        let time = sc
            .new_state
            .as_ref()
            .map_or(ctx.msg.received, |s| s.last_updated);
        let context = sc
            .new_state
            .as_ref()
            .and_then(|s| s.context.clone())
            .unwrap_or_default();
        (EventKind::StateChanged(Box::new(sc)), time, context)
    } else {
        let data: serde_json::Map<String, serde_json::Value> = if data == "null" {
            serde_json::Map::new()
        } else {
            serde_json::from_str(data)
                .map_err(|e| ctx.err("wrong_type", format_args!("event_data: {e}")))?
        };
        (
            EventKind::Bus(BusEvent {
                event_type: env.event_type.into_owned(),
                data,
            }),
            ctx.msg.received,
            Context::default(),
        )
    };
    out.push(Event {
        source: ctx.sub.source.clone(),
        time_fired: time,
        origin: Origin::Local,
        context,
        kind,
        meta: EventMeta {
            mark: crate::feedback::handoff::Mark::NONE,
            retained: ctx.msg.retained,
        },
    });
    Ok(())
}
