//! Entity ids from topic captures: the rules documented in `docs/mqtt.md`.

use super::{Ctx, DecodeError};
use crate::event::EntityId;
use crate::source::mqtt::topic::Role;

/// Appends HA's slug of `text`: ASCII letters lowercased, digits kept, every other run one `_`, no `_` at the ends.
pub(super) fn push_slug(out: &mut String, text: &str) {
    let start = out.len();
    let mut pending = false;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            if pending && out.len() > start {
                out.push('_');
            }
            pending = false;
            out.push(c.to_ascii_lowercase());
        } else {
            pending = true;
        }
    }
}

/// HA's slug of `text` (`Kitchen/Floor Light` → `kitchen_floor_light`).
pub(super) fn slug(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    push_slug(&mut s, text);
    s
}

/// The entity id of a message, with `key` appended to the object id when given.
///
/// In order: an `{entity_id}` capture (used as is when it holds a `.`, else
/// slugged after the domain); an `{object_id}` capture; a `{device}` capture;
/// without any, the topic after the filter's leading literal levels. The domain
/// is a `{domain}` capture or the subscription's `domain`.
pub(super) fn entity_id(
    ctx: &Ctx<'_>,
    key: Option<&str>,
    buf: &mut String,
) -> Result<EntityId, DecodeError> {
    if key.is_none()
        && let Some(id) = ctx.role(Role::EntityId).filter(|id| id.contains('.'))
    {
        return EntityId::new(id).map_err(|e| ctx.err("bad_entity_id", e));
    }
    base(ctx, buf);
    with_key(ctx, buf.len(), key, buf)
}

/// Writes `<domain>.<object>` of the message to `buf` (cleared first), by the rules of [`entity_id`].
pub(super) fn base(ctx: &Ctx<'_>, buf: &mut String) {
    buf.clear();
    if let Some(id) = ctx.role(Role::EntityId) {
        match id.split_once('.') {
            Some((domain, object)) => {
                push_slug(buf, domain);
                buf.push('.');
                push_slug(buf, object);
            }
            None => {
                buf.push_str(&ctx.sub.cfg.domain);
                buf.push('.');
                push_slug(buf, id);
            }
        }
        return;
    }
    match ctx.role(Role::Domain) {
        Some(d) => push_slug(buf, d),
        None => buf.push_str(&ctx.sub.cfg.domain),
    }
    buf.push('.');
    let name = ctx
        .role(Role::ObjectId)
        .or_else(|| ctx.role(Role::Device))
        .unwrap_or_else(|| {
            if ctx.sub.pattern.is_some() {
                ""
            } else {
                ctx.msg
                    .topic
                    .get(ctx.sub.literal_prefix..)
                    .filter(|rest| !rest.is_empty())
                    .unwrap_or(ctx.msg.topic)
            }
        });
    push_slug(buf, name);
}

/// The entity id of `buf[..base_len]` (a [`base`]) with `_<key>` appended when given.
pub(super) fn with_key(
    ctx: &Ctx<'_>,
    base_len: usize,
    key: Option<&str>,
    buf: &mut String,
) -> Result<EntityId, DecodeError> {
    buf.truncate(base_len);
    if let Some(key) = key {
        if !buf.ends_with('.') {
            buf.push('_');
        }
        push_slug(buf, key);
    }
    EntityId::new(buf).map_err(|e| {
        ctx.err(
            "bad_entity_id",
            format_args!("{e} from topic {:?}", ctx.msg.topic),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_ha() {
        assert_eq!(slug("Kitchen/Floor Light"), "kitchen_floor_light");
        assert_eq!(slug("  __a--b__ "), "a_b");
        assert_eq!(slug("0x00158d0001"), "0x00158d0001");
        assert_eq!(slug("Küche"), "k_che");
        assert_eq!(slug("///"), "");
    }
}
