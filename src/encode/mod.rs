//! The encoder: how an event becomes line-protocol points (the schema modes).
//!
//! [`Encoder`] is built once from [`SchemaConfig`] (globs compiled, lists
//! prepared) and then turns each [`Event`] into zero or more complete lines,
//! appended to a caller's buffer. `state_changed` events follow HA's own
//! `influxdb` integration ([`homeassistant`]) or the [`optimized`] layout; every
//! other event goes to one measurement ([`events`]). Encoding never fails: odd
//! input gives a point or a counted [`SkipReason`].
//!
//! The pipeline task runs the encoder right after its rules and hands the lines
//! on as [`Chunk`]s to the sinks; [`line_protocol`] (escaping and the line
//! builder) is shared by the encoder, the writers and the schema tools.

pub mod events;
pub mod homeassistant;
pub mod line_protocol;
pub mod optimized;
pub(crate) mod pyrepr;
mod pytables;

use crate::config::{SchemaConfig, SchemaMode};
use crate::event::{Event, EventKind, State, StateChanged};

/// Encoded line protocol on its way to a sink: whole lines, each ending in `\n`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The lines.
    pub lines: String,
    /// How many lines (points) `lines` holds.
    pub points: usize,
    /// The chunk's sequence number in the durable buffer; the sink acknowledges it once delivered. `None` when unbuffered.
    pub seq: Option<u64>,
    /// The highest upstream mark per source among the events behind these lines (filtered ones included); released once the chunk is safe. Not stored in the buffer.
    pub marks: crate::feedback::handoff::Marks,
}

/// What [`Encoder::encode`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {
    /// This many lines were appended.
    Points(usize),
    /// No line was written, for this reason.
    Skipped(SkipReason),
}

/// Why an event gives no point: a bounded label set for the discarded-events metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// New state `unknown`, `unavailable` or empty: HA writes nothing for these.
    UnknownState,
    /// `new_state` is null: the entity was removed.
    EntityRemoved,
    /// An event other than `state_changed` while `write_other_events` is off.
    OtherEventsDisabled,
    /// Every field of the point was empty or invalid, so there was nothing to write.
    NoFields,
}

impl SkipReason {
    /// The metric label for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnknownState => "unknown_state",
            SkipReason::EntityRemoved => "entity_removed",
            SkipReason::OtherEventsDisabled => "other_events_disabled",
            SkipReason::NoFields => "no_fields",
        }
    }
}

/// A schema configuration that cannot be used, found when the encoder is built.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A `component_config_glob` key that does not compile.
    #[error("schema.component_config_glob: invalid glob {glob:?}: {source}")]
    Glob {
        /// The glob as written in the config.
        glob: String,
        /// Why it failed.
        #[source]
        source: regex::Error,
    },
    /// An `optimized.attributes` key that would give a field two types or clash with a tag.
    #[error("schema.optimized.attributes: {name:?} cannot be a field: it is {why}")]
    OptimizedAttribute {
        /// The attribute name as configured.
        name: String,
        /// What it clashes with.
        why: &'static str,
    },
    /// `events_measurement` is empty while other events are written.
    #[error("schema.events_measurement must not be empty when schema.write_other_events is true")]
    EmptyEventsMeasurement,
}

/// Reused per-event buffers, so encoding allocates nothing once warm.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// Keys and string values of the point being built, addressed by ranges.
    pub(crate) text: String,
    /// Number parsing space.
    pub(crate) num: Vec<u8>,
    /// Compact JSON of an event's data.
    pub(crate) json: Vec<u8>,
}

/// What the filter's transforms set on a point, apart from the event itself: measurement and tags.
///
/// Kept out of [`Event`] so the encoder's default path reads nothing extra:
/// [`Encoder::encode`] passes none, [`Encoder::encode_with`] these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointOverrides {
    /// Replaces the measurement every other rule would choose.
    pub measurement: Option<String>,
    /// Added last, so they win over `domain`, `entity_id` and the configured tags; in order, a later key wins.
    pub tags: Vec<(String, String)>,
}

impl PointOverrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.measurement.is_none() && self.tags.is_empty()
    }

    /// Forgets every override (reused per event).
    pub fn clear(&mut self) {
        self.measurement = None;
        self.tags.clear();
    }

    /// Sets one tag, replacing an earlier value of the same key.
    pub fn set_tag(&mut self, key: &str, value: String) {
        match self.tags.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.tags.push((key.to_string(), value)),
        }
    }
}

/// The new state a state change writes, or why it writes none — HA's rule, the same in every layout:
/// a removed entity and `unknown`/`unavailable`/empty states give no point.
fn writable_state(sc: &StateChanged) -> Result<&State, SkipReason> {
    let state = sc.new_state.as_ref().ok_or(SkipReason::EntityRemoved)?;
    if matches!(state.state.as_str(), "unknown" | "unavailable" | "") {
        return Err(SkipReason::UnknownState);
    }
    Ok(state)
}

/// The `state_changed` encoder of the configured mode.
#[derive(Debug)]
enum States {
    Homeassistant(homeassistant::StateEncoder),
    Optimized(optimized::OptimizedEncoder),
}

/// Turns events into line protocol by the configured schema; one per encoding task.
#[derive(Debug)]
pub struct Encoder {
    states: States,
    events: Option<events::EventEncoder>,
    scratch: Scratch,
    /// `schema.instance_tag`: the tag key that names each point's source instance.
    instance_tag: Option<String>,
    /// The overrides of one point plus its instance tag (reused per event).
    with_instance: PointOverrides,
}

impl Encoder {
    /// Compiles globs etc. once.
    pub fn new(cfg: &SchemaConfig) -> Result<Encoder, SchemaError> {
        let events = if cfg.write_other_events {
            Some(events::EventEncoder::new(cfg)?)
        } else {
            None
        };
        Ok(Encoder {
            states: match cfg.mode {
                SchemaMode::Homeassistant => {
                    States::Homeassistant(homeassistant::StateEncoder::new(cfg)?)
                }
                SchemaMode::Optimized => States::Optimized(optimized::OptimizedEncoder::new(cfg)?),
            },
            events,
            scratch: Scratch::default(),
            instance_tag: cfg.instance_tag.clone().filter(|k| !k.is_empty()),
            with_instance: PointOverrides::default(),
        })
    }

    /// Appends zero or more complete lines, each ending in '\n', to `out`.
    pub fn encode(&mut self, event: &Event, out: &mut String) -> Encoded {
        self.encode_inner(event, None, out)
    }

    /// As [`Encoder::encode`], with a transform's measurement and tags applied, so rules shape points in every layout.
    pub fn encode_with(
        &mut self,
        event: &Event,
        overrides: &PointOverrides,
        out: &mut String,
    ) -> Encoded {
        let overrides = (!overrides.is_empty()).then_some(overrides);
        self.encode_inner(event, overrides, out)
    }

    fn encode_inner(
        &mut self,
        event: &Event,
        overrides: Option<&PointOverrides>,
        out: &mut String,
    ) -> Encoded {
        let Some(key) = &self.instance_tag else {
            return self.encode_point(event, overrides, out);
        };
        // The instance tag goes in as the last override, so the layouts write it sorted among the
        // others and it wins over any tag of the same key: points of two homes never mix.
        // The instance is the source's name without its `/backfill` or `/snapshot` part.
        let source: &str = &event.source;
        let instance = source.split('/').next().unwrap_or(source);
        let mut all = std::mem::take(&mut self.with_instance);
        all.clear();
        if let Some(o) = overrides {
            all.measurement.clone_from(&o.measurement);
            all.tags.extend(o.tags.iter().cloned());
        }
        all.set_tag(key, instance.to_string());
        let encoded = self.encode_point(event, Some(&all), out);
        self.with_instance = all;
        encoded
    }

    fn encode_point(
        &mut self,
        event: &Event,
        overrides: Option<&PointOverrides>,
        out: &mut String,
    ) -> Encoded {
        match &event.kind {
            EventKind::StateChanged(sc) => {
                let state = match writable_state(sc) {
                    Ok(state) => state,
                    Err(reason) => return Encoded::Skipped(reason),
                };
                match &mut self.states {
                    States::Homeassistant(enc) => {
                        enc.encode(state, event.time_fired, overrides, &mut self.scratch, out)
                    }
                    States::Optimized(enc) => {
                        enc.encode(state, event.time_fired, overrides, &mut self.scratch, out)
                    }
                }
            }
            EventKind::Bus(bus) => match &mut self.events {
                Some(enc) => enc.encode(event, bus, overrides, &mut self.scratch, out),
                None => Encoded::Skipped(SkipReason::OtherEventsDisabled),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instance tag is written sorted among the point's tags, in both layouts, and wins over a
    /// transform's tag of the same key, so the points of two homes never mix.
    #[test]
    fn the_instance_tag_is_sorted_in_and_wins() {
        use crate::event::{EntityId, Timestamp};
        let ts = Timestamp::from_nanos(1_000);
        let event = Event::from_state(
            std::sync::Arc::from("cabin/backfill"),
            State::at(
                EntityId::new("switch.fan").expect("entity id"),
                "off".to_string(),
                Default::default(),
                ts,
            ),
        );
        let rule = PointOverrides {
            measurement: None,
            tags: vec![
                ("instance".to_string(), "forged".to_string()),
                ("zone".to_string(), "attic".to_string()),
            ],
        };
        for mode in [SchemaMode::Homeassistant, SchemaMode::Optimized] {
            let cfg = SchemaConfig {
                mode,
                instance_tag: Some("instance".to_string()),
                ..SchemaConfig::default()
            };
            let mut enc = Encoder::new(&cfg).expect("encoder");
            let mut plain = String::new();
            assert_eq!(enc.encode(&event, &mut plain), Encoded::Points(1));
            let mut shaped = String::new();
            assert_eq!(
                enc.encode_with(&event, &rule, &mut shaped),
                Encoded::Points(1)
            );
            for line in [&plain, &shaped] {
                let series = line.split(' ').next().unwrap_or_default();
                let keys: Vec<&str> = series
                    .split(',')
                    .skip(1)
                    .map(|t| t.split('=').next().unwrap_or_default())
                    .collect();
                let mut sorted = keys.clone();
                sorted.sort_unstable();
                assert_eq!(keys, sorted, "{mode:?}: tags sorted: {line}");
                assert_eq!(
                    series.matches("instance=").count(),
                    1,
                    "{mode:?}: one instance tag: {line}"
                );
                assert!(series.contains(",instance=cabin"), "{mode:?}: {line}");
            }
            assert!(shaped.contains(",zone=attic"), "{mode:?}: {shaped}");
        }
    }

    #[test]
    fn skip_reasons_have_distinct_labels() {
        let all = [
            SkipReason::UnknownState,
            SkipReason::EntityRemoved,
            SkipReason::OtherEventsDisabled,
            SkipReason::NoFields,
        ];
        let mut labels: Vec<_> = all.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn bad_config_is_refused_at_build_time() {
        let cfg = SchemaConfig {
            events_measurement: String::new(),
            ..SchemaConfig::default()
        };
        assert!(matches!(
            Encoder::new(&cfg),
            Err(SchemaError::EmptyEventsMeasurement)
        ));
        let cfg = SchemaConfig {
            events_measurement: String::new(),
            write_other_events: false,
            ..SchemaConfig::default()
        };
        assert!(Encoder::new(&cfg).is_ok());
    }
}
