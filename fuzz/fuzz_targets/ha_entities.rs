//! A `subscribe_entities` stream through the entity cache, the way the WebSocket
//! session feeds it: each line of the input is one frame, decoded by the source's
//! decoder; every entities event is applied to one cache, in order.
//!
//! Besides "never panics", the cache is checked against a model (the set of
//! entity ids it should hold): an addition always succeeds, a removal or a change
//! succeeds exactly when the entity is held, and the cache's size follows.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;

use ha_ingestor::event::{EventKind, SourceId, Timestamp};
use ha_ingestor::source::homeassistant::decode::{ServerMessage, decode_frame};
use ha_ingestor::source::homeassistant::entities::StateCache;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source: SourceId = Arc::from("ha:fuzz");
    let mut cache = StateCache::new();
    let mut held: HashSet<String> = HashSet::new();
    let mut frames = Vec::new();
    let mut changes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        frames.clear();
        decode_frame(line, &source, &mut frames);
        for message in frames.drain(..) {
            let Ok(ServerMessage::Entities { message, .. }) = message else {
                continue;
            };
            // What the model expects, in the order the cache applies: a, then r, then c.
            let mut expected = Vec::new();
            for (id, _) in &message.added {
                held.insert(id.as_str().to_string());
                expected.push(true);
            }
            for id in &message.removed {
                expected.push(held.remove(id.as_str()));
            }
            for (id, _) in &message.changed {
                expected.push(held.contains(id.as_str()));
            }
            changes.clear();
            cache.apply(
                message,
                &source,
                Timestamp::from_nanos(n as i64),
                &mut changes,
            );
            let got: Vec<bool> = changes.iter().map(Result::is_ok).collect();
            assert_eq!(got, expected, "cache outcomes differ from the model");
            assert_eq!(cache.len(), held.len(), "cache size differs from the model");
            for change in &changes {
                match change {
                    Ok(event) => {
                        let EventKind::StateChanged(sc) = &event.kind else {
                            panic!("the cache made a non-state_changed event");
                        };
                        // What the cache holds now is what the last event for it says.
                        if let Some(new) = &sc.new_state {
                            assert_eq!(new.entity_id.as_str(), sc.entity_id.as_str());
                        }
                    }
                    Err(error) => {
                        let _ = error.to_string();
                    }
                }
            }
        }
    }
});
