//! Per-entity rate shaping: dedup, deadband, throttle and heartbeat.
//!
//! A rule's `rate` shapes the events it keeps (or transforms), per entity:
//!
//! 1. a held throttle interval whose time is up (by the new event's
//!    `time_fired`) is written first;
//! 2. **dedup** drops an event whose state and attributes equal the entity's
//!    last written ones, within the window (by `time_fired`);
//! 3. **deadband** drops a numeric state closer than the threshold to the last
//!    written one (absolute, or percent of it);
//! 4. **throttle** writes the first event of a quiet entity at once and holds
//!    the ones that follow within the interval; the interval then writes one
//!    point (its last event, or the min/max/mean of its states on it) — when the
//!    entity's next event falls after the interval, or at the latest one interval
//!    of wall-clock time after the hold began ([`Shaper::tick`]);
//! 5. **heartbeat** re-writes the last written point every interval of
//!    wall-clock time the entity stays silent, at the last point's time plus
//!    whole intervals (so a replay writes the same points), tagged `heartbeat=true`.
//!
//! Held events carry upstream marks ([`crate::feedback::handoff`]): a mark releases every
//! earlier mark of its source, so while an event is held the [`MarkLedger`]
//! caps what a chunk may release to just before the first held mark of that
//! source; once the held value is written the cap lifts. The state is bounded:
//! at most [`ENTITY_LIMIT`] entities per pipeline, the least recently seen
//! evicted first (writing what it held).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Aggregate, FilterRuleConfig, RateConfig};
use crate::encode::PointOverrides;
use crate::event::{Attributes, Event, EventKind, Timestamp};
use crate::feedback::handoff::{Mark, Marks};

/// Entities whose rate state is kept at most; beyond it the least recently seen is evicted.
pub const ENTITY_LIMIT: usize = 100_000;

/// The tag that marks a heartbeat point.
pub const HEARTBEAT_TAG: &str = "heartbeat";

/// Why a rule's `rate` is refused: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateError {
    /// `rate.<key>`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// One rule's compiled `rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSpec {
    dedup: Option<i64>,
    deadband: Option<f64>,
    deadband_percent: Option<f64>,
    throttle: Option<Duration>,
    aggregate: Aggregate,
    heartbeat: Option<Duration>,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl RateSpec {
    /// Checks one rule's `rate`.
    pub fn new(cfg: &RateConfig) -> Result<RateSpec, RateError> {
        let err = |key: &str, message: &str| RateError {
            key: format!("rate.{key}"),
            message: message.to_string(),
        };
        for (key, d) in [
            ("dedup", cfg.dedup),
            ("throttle", cfg.throttle),
            ("heartbeat", cfg.heartbeat),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(err(key, "must be above zero"));
            }
        }
        for (key, v) in [
            ("deadband", cfg.deadband),
            ("deadband_percent", cfg.deadband_percent),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v <= 0.0) {
                return Err(err(key, "must be a number above zero"));
            }
        }
        if cfg.throttle.is_none() && cfg.aggregate != Aggregate::Last {
            return Err(err("aggregate", "only used with throttle"));
        }
        if cfg.dedup.is_none()
            && cfg.deadband.is_none()
            && cfg.deadband_percent.is_none()
            && cfg.throttle.is_none()
            && cfg.heartbeat.is_none()
        {
            return Err(err(
                "",
                "nothing to do: give dedup, deadband, deadband_percent, throttle or heartbeat",
            ));
        }
        Ok(RateSpec {
            dedup: cfg.dedup.map(nanos),
            deadband: cfg.deadband,
            deadband_percent: cfg.deadband_percent,
            throttle: cfg.throttle,
            aggregate: cfg.aggregate,
            heartbeat: cfg.heartbeat,
        })
    }

    /// One line for the rule plan.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.dedup {
            parts.push(format!(
                "dedup {}",
                humantime::format_duration(Duration::from_nanos(d as u64))
            ));
        }
        if let Some(d) = self.deadband {
            parts.push(format!("deadband {d}"));
        }
        if let Some(d) = self.deadband_percent {
            parts.push(format!("deadband {d}%"));
        }
        if let Some(t) = self.throttle {
            parts.push(format!(
                "throttle {} ({:?})",
                humantime::format_duration(t),
                self.aggregate
            ));
        }
        if let Some(h) = self.heartbeat {
            parts.push(format!("heartbeat {}", humantime::format_duration(h)));
        }
        format!("rate: {}", parts.join(", "))
    }
}

/// What became of an event offered to the shaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Write it now.
    Write,
    /// Held for its throttle interval; written later.
    Held,
    /// Dropped, for this reason.
    Drop(ShapeReason),
}

/// Why rate shaping removed an event: a bounded label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeReason {
    /// Same state and attributes as the last written, within the window.
    Dedup,
    /// A numeric change below the threshold.
    Deadband,
    /// Merged into a held throttle interval.
    Throttle,
}

impl ShapeReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ShapeReason::Dedup => "dedup",
            ShapeReason::Deadband => "deadband",
            ShapeReason::Throttle => "throttle",
        }
    }
}

/// A point the shaper writes on its own: a throttle interval's value or a heartbeat.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// The event to encode.
    pub event: Event,
    /// Its measurement and tags.
    pub overrides: PointOverrides,
    /// A heartbeat (tagged) rather than a held value.
    pub heartbeat: bool,
}

/// Marks of the events seen, capped by those still held (see the module doc).
#[derive(Debug, Default)]
pub struct MarkLedger {
    highest: Vec<Mark>,
    held: Vec<Mark>,
}

impl MarkLedger {
    /// Notes an event the pipeline is done with or holds.
    #[inline]
    pub fn seen(&mut self, mark: Mark) {
        if mark.is_none() {
            return;
        }
        match self.highest.iter_mut().find(|m| m.same_source(&mark)) {
            Some(m) => {
                if mark.seq() > m.seq() {
                    *m = mark;
                }
            }
            None => self.highest.push(mark),
        }
    }

    fn hold(&mut self, mark: Mark) {
        if !mark.is_none() {
            self.held.push(mark);
        }
    }

    fn unhold(&mut self, mark: Mark) {
        if let Some(i) = self.held.iter().position(|m| *m == mark) {
            self.held.swap_remove(i);
        }
    }

    /// Notes into `marks` what is safe to release: per source the highest seen, below its first held mark.
    pub fn fill(&self, marks: &mut Marks) {
        for m in &self.highest {
            let cap = self
                .held
                .iter()
                .filter(|h| h.same_source(m))
                .min_by_key(|h| h.seq());
            match cap {
                Some(h) if h.seq() <= m.seq() => marks.note(h.previous()),
                _ => marks.note(*m),
            }
        }
    }

    /// Marks still held (for tests and the status of a shutdown).
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

struct Held {
    event: Event,
    overrides: PointOverrides,
    first_mark: Mark,
    since: Instant,
    count: u32,
    sum: f64,
    min: f64,
    max: f64,
}

struct Last {
    state: String,
    attributes: Attributes,
    value: Option<f64>,
    time: Timestamp,
    /// The point for heartbeats (only kept when the rule has one).
    point: Option<(Event, PointOverrides)>,
    written_at: Instant,
    beats: u32,
}

#[derive(Default)]
struct EntityRate {
    last: Option<Last>,
    held: Option<Held>,
    last_emit: Option<Timestamp>,
    seen_at: Option<Instant>,
}

/// The rate state of every shaped entity, and the marks it holds.
pub struct Shaper {
    /// By rule index; `None` for rules without `rate`.
    specs: Vec<Option<RateSpec>>,
    entities: HashMap<(u32, Box<str>), EntityRate>,
    limit: usize,
    emitted: Vec<Emitted>,
    /// Marks seen and held.
    pub ledger: MarkLedger,
}

fn numeric(state: &str) -> Option<f64> {
    state.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn number_text(v: f64) -> String {
    format!("{v}")
}

impl Shaper {
    /// The shaper for the rules that have `rate`; `None` when none has.
    pub fn new(rules: &[FilterRuleConfig]) -> Result<Option<Shaper>, (String, RateError)> {
        let mut specs = Vec::with_capacity(rules.len());
        for r in rules {
            specs.push(match &r.rate {
                Some(cfg) => Some(RateSpec::new(cfg).map_err(|e| (r.name.clone(), e))?),
                None => None,
            });
        }
        if specs.iter().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(Shaper {
            specs,
            entities: HashMap::new(),
            limit: ENTITY_LIMIT,
            emitted: Vec::new(),
            ledger: MarkLedger::default(),
        }))
    }

    /// Rule `i`'s rate, if it has one.
    pub fn spec(&self, i: usize) -> Option<&RateSpec> {
        self.specs.get(i).and_then(Option::as_ref)
    }

    /// Caps the entities kept (tests use a tiny limit).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.max(1);
    }

    /// Entities with rate state.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether no entity has rate state.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Points the shaper wrote on its own since the last call, in order.
    pub fn drain_emitted(&mut self) -> std::vec::Drain<'_, Emitted> {
        self.emitted.drain(..)
    }

    /// Shapes one kept, transformed event by rule `rule`'s rate; may first emit a held interval.
    pub fn offer(
        &mut self,
        rule: usize,
        event: &Event,
        overrides: &PointOverrides,
        now: Instant,
    ) -> Offer {
        let Some(spec) = self.specs.get(rule).and_then(Option::as_ref).cloned() else {
            return Offer::Write;
        };
        let Some(state) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) else {
            return Offer::Write;
        };
        let key = (rule as u32, Box::<str>::from(state.entity_id.as_str()));
        if !self.entities.contains_key(&key) && self.entities.len() >= self.limit {
            self.evict_oldest();
        }
        let st = self.entities.entry(key).or_default();
        st.seen_at = Some(now);
        let t = event.time_fired;
        // 1. An interval that is over by this event's time is written first.
        if let (Some(iv), Some(le)) = (spec.throttle, st.last_emit)
            && st.held.is_some()
            && t.as_nanos().saturating_sub(le.as_nanos()) >= nanos(iv)
        {
            emit_held(st, &spec, &mut self.emitted, &mut self.ledger, now);
        }
        let value = numeric(&state.state);
        if let Some(last) = &st.last {
            // 2. Dedup.
            if let Some(window) = spec.dedup
                && t.as_nanos().saturating_sub(last.time.as_nanos()) < window
                && last.state == state.state
                && same_attributes(&last.attributes, &state.attributes)
            {
                return Offer::Drop(ShapeReason::Dedup);
            }
            // 3. Deadband.
            if let (Some(v), Some(lv)) = (value, last.value) {
                let diff = (v - lv).abs();
                if spec.deadband.is_some_and(|d| diff < d)
                    || spec
                        .deadband_percent
                        .is_some_and(|p| diff < p / 100.0 * lv.abs())
                {
                    return Offer::Drop(ShapeReason::Deadband);
                }
            }
        }
        // 4. Throttle.
        if let Some(iv) = spec.throttle
            && let Some(le) = st.last_emit
            && t.as_nanos().saturating_sub(le.as_nanos()) < nanos(iv)
        {
            let merged = st.held.is_some();
            let held = st.held.get_or_insert_with(|| {
                self.ledger.hold(event.meta.mark);
                Held {
                    event: event.clone(),
                    overrides: overrides.clone(),
                    first_mark: event.meta.mark,
                    since: now,
                    count: 0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: f64::NEG_INFINITY,
                }
            });
            if merged {
                held.event = event.clone();
                held.overrides = overrides.clone();
            }
            if let Some(v) = value {
                held.count += 1;
                held.sum += v;
                held.min = held.min.min(v);
                held.max = held.max.max(v);
            }
            return if merged {
                Offer::Drop(ShapeReason::Throttle)
            } else {
                Offer::Held
            };
        }
        note_written(st, &spec, event, overrides, now);
        Offer::Write
    }

    /// Writes held intervals that are over and heartbeats that are due, by the wall clock.
    pub fn tick(&mut self, now: Instant) {
        let Shaper {
            specs,
            entities,
            emitted,
            ledger,
            ..
        } = self;
        for ((rule, _), st) in entities.iter_mut() {
            let Some(spec) = specs.get(*rule as usize).and_then(Option::as_ref) else {
                continue;
            };
            if let (Some(iv), Some(held)) = (spec.throttle, &st.held)
                && now.saturating_duration_since(held.since) >= iv
            {
                emit_held(st, spec, emitted, ledger, now);
            }
            if let Some(every) = spec.heartbeat
                && let Some(last) = &mut st.last
                && let Some((event, overrides)) = &last.point
            {
                let due = every.saturating_mul(last.beats + 1);
                if now.saturating_duration_since(last.written_at) >= due {
                    last.beats += 1;
                    let mut beat = event.clone();
                    beat.meta = Default::default();
                    beat.time_fired = Timestamp::from_nanos(
                        last.time
                            .as_nanos()
                            .saturating_add(nanos(every).saturating_mul(i64::from(last.beats))),
                    );
                    let mut overrides = overrides.clone();
                    overrides.set_tag(HEARTBEAT_TAG, "true".into());
                    emitted.push(Emitted {
                        event: beat,
                        overrides,
                        heartbeat: true,
                    });
                }
            }
        }
    }

    /// Writes every held interval now (shutdown).
    pub fn flush(&mut self, now: Instant) {
        let Shaper {
            specs,
            entities,
            emitted,
            ledger,
            ..
        } = self;
        for ((rule, _), st) in entities.iter_mut() {
            if let Some(spec) = specs.get(*rule as usize).and_then(Option::as_ref)
                && st.held.is_some()
            {
                emit_held(st, spec, emitted, ledger, now);
            }
        }
    }

    fn evict_oldest(&mut self) {
        let Some(key) = self
            .entities
            .iter()
            .min_by_key(|(_, st)| st.seen_at)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(mut st) = self.entities.remove(&key)
            && let Some(spec) = self.specs.get(key.0 as usize).and_then(Option::as_ref)
            && st.held.is_some()
        {
            let now = st.seen_at.unwrap_or_else(Instant::now);
            emit_held(&mut st, spec, &mut self.emitted, &mut self.ledger, now);
        }
    }
}

/// Same keys and values in any order.
fn same_attributes(a: &Attributes, b: &Attributes) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

fn note_written(
    st: &mut EntityRate,
    spec: &RateSpec,
    event: &Event,
    overrides: &PointOverrides,
    now: Instant,
) {
    let Some(state) = event.state_changed().and_then(|sc| sc.new_state.as_ref()) else {
        return;
    };
    st.last_emit = Some(event.time_fired);
    let keep_point = spec.heartbeat.is_some();
    st.last = Some(Last {
        state: state.state.clone(),
        attributes: if spec.dedup.is_some() {
            state.attributes.clone()
        } else {
            Attributes::new()
        },
        value: numeric(&state.state),
        time: event.time_fired,
        point: keep_point.then(|| {
            let mut e = event.clone();
            e.meta = Default::default();
            (e, overrides.clone())
        }),
        written_at: now,
        beats: 0,
    });
}

fn emit_held(
    st: &mut EntityRate,
    spec: &RateSpec,
    emitted: &mut Vec<Emitted>,
    ledger: &mut MarkLedger,
    now: Instant,
) {
    let Some(mut held) = st.held.take() else {
        return;
    };
    if held.count > 0 {
        let v = match spec.aggregate {
            Aggregate::Last => None,
            Aggregate::Min => Some(held.min),
            Aggregate::Max => Some(held.max),
            Aggregate::Mean => Some(held.sum / f64::from(held.count)),
        };
        if let Some(v) = v
            && let EventKind::StateChanged(sc) = &mut held.event.kind
            && let Some(state) = sc.new_state.as_mut()
        {
            state.state = number_text(v);
        }
    }
    note_written(st, spec, &held.event, &held.overrides, now);
    ledger.unhold(held.first_mark);
    emitted.push(Emitted {
        event: held.event,
        overrides: held.overrides,
        heartbeat: false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::handoff::Handoff;
    use crate::pipeline::rules::test_support::state_event;
    use serde_json::json;

    const S: i64 = 1_000_000_000;

    fn shaper(rate: &str) -> Shaper {
        let text = format!("name = \"r\"\naction = \"include\"\nrate = {rate}\n");
        let rule: FilterRuleConfig = toml::from_str(&text).unwrap();
        Shaper::new(&[rule]).unwrap().unwrap()
    }

    fn at(entity: &str, state: &str, secs: i64) -> Event {
        let mut e = state_event(entity, state, json!({"unit_of_measurement": "W"}), None);
        e.time_fired = Timestamp::from_nanos(1_800_000_000 * S + secs * S);
        e
    }

    fn offer(s: &mut Shaper, e: &Event, now: Instant) -> Offer {
        s.offer(0, e, &PointOverrides::default(), now)
    }

    fn states(s: &mut Shaper) -> Vec<String> {
        s.drain_emitted()
            .map(|e| {
                e.event
                    .state_changed()
                    .and_then(|sc| sc.new_state.as_ref())
                    .map(|st| st.state.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn dedup_drops_repeats_within_the_window_only() {
        let mut s = shaper("{ dedup = \"1m\" }");
        let now = Instant::now();
        assert_eq!(offer(&mut s, &at("sensor.a", "5", 0), now), Offer::Write);
        assert_eq!(
            offer(&mut s, &at("sensor.a", "5", 30), now),
            Offer::Drop(ShapeReason::Dedup)
        );
        assert_eq!(
            offer(&mut s, &at("sensor.b", "5", 30), now),
            Offer::Write,
            "per entity"
        );
        assert_eq!(
            offer(&mut s, &at("sensor.a", "5", 61), now),
            Offer::Write,
            "window over"
        );
        let mut other_attrs = at("sensor.a", "5", 62);
        if let EventKind::StateChanged(sc) = &mut other_attrs.kind {
            sc.new_state
                .as_mut()
                .unwrap()
                .attributes
                .insert("x".into(), json!(1));
        }
        assert_eq!(
            offer(&mut s, &other_attrs, now),
            Offer::Write,
            "attributes differ"
        );
    }

    #[test]
    fn deadband_absolute_and_relative() {
        let mut s = shaper("{ deadband = 0.5 }");
        let now = Instant::now();
        assert_eq!(offer(&mut s, &at("sensor.a", "10", 0), now), Offer::Write);
        assert_eq!(
            offer(&mut s, &at("sensor.a", "10.4", 1), now),
            Offer::Drop(ShapeReason::Deadband)
        );
        assert_eq!(
            offer(&mut s, &at("sensor.a", "10.45", 2), now),
            Offer::Drop(ShapeReason::Deadband),
            "compared with the last written, not the last seen"
        );
        assert_eq!(offer(&mut s, &at("sensor.a", "10.5", 3), now), Offer::Write);
        assert_eq!(
            offer(&mut s, &at("sensor.a", "unavailable", 4), now),
            Offer::Write
        );
        let mut p = shaper("{ deadband_percent = 10 }");
        assert_eq!(offer(&mut p, &at("sensor.a", "200", 0), now), Offer::Write);
        assert_eq!(
            offer(&mut p, &at("sensor.a", "219", 1), now),
            Offer::Drop(ShapeReason::Deadband)
        );
        assert_eq!(offer(&mut p, &at("sensor.a", "221", 2), now), Offer::Write);
    }

    #[test]
    fn throttle_keeps_last_and_aggregates() {
        for (aggregate, want) in [("last", "3"), ("min", "1"), ("max", "4"), ("mean", "2.5")] {
            let mut s = shaper(&format!(
                "{{ throttle = \"10s\", aggregate = \"{aggregate}\" }}"
            ));
            let now = Instant::now();
            assert_eq!(offer(&mut s, &at("sensor.p", "100", 0), now), Offer::Write);
            assert_eq!(offer(&mut s, &at("sensor.p", "2", 2), now), Offer::Held);
            assert_eq!(
                offer(&mut s, &at("sensor.p", "4", 4), now),
                Offer::Drop(ShapeReason::Throttle)
            );
            assert_eq!(
                offer(&mut s, &at("sensor.p", "1", 6), now),
                Offer::Drop(ShapeReason::Throttle)
            );
            assert_eq!(
                offer(&mut s, &at("sensor.p", "3", 8), now),
                Offer::Drop(ShapeReason::Throttle)
            );
            assert!(states(&mut s).is_empty(), "nothing written while held");
            // The next event after the interval writes the held value first.
            let next = at("sensor.p", "7", 11);
            assert_eq!(
                offer(&mut s, &next, now),
                Offer::Held,
                "11 s is 3 s after the held write at 8 s"
            );
            assert_eq!(states(&mut s), [want], "{aggregate}");
        }
    }

    #[test]
    fn throttle_tick_writes_a_quiet_entity_after_one_interval() {
        let mut s = shaper("{ throttle = \"10s\" }");
        let t0 = Instant::now();
        offer(&mut s, &at("sensor.p", "1", 0), t0);
        assert_eq!(offer(&mut s, &at("sensor.p", "2", 1), t0), Offer::Held);
        s.tick(t0 + Duration::from_secs(9));
        assert!(states(&mut s).is_empty());
        s.tick(t0 + Duration::from_secs(10));
        assert_eq!(states(&mut s), ["2"]);
        s.tick(t0 + Duration::from_secs(30));
        assert!(states(&mut s).is_empty(), "written once");
    }

    #[test]
    fn heartbeat_rewrites_the_last_point_at_whole_intervals_tagged() {
        let mut s = shaper("{ heartbeat = \"15m\" }");
        let t0 = Instant::now();
        let e = at("sensor.t", "21", 0);
        assert_eq!(offer(&mut s, &e, t0), Offer::Write);
        s.tick(t0 + Duration::from_secs(899));
        assert_eq!(s.drain_emitted().count(), 0);
        s.tick(t0 + Duration::from_secs(900));
        s.tick(t0 + Duration::from_secs(1000));
        s.tick(t0 + Duration::from_secs(1800));
        let beats: Vec<Emitted> = s.drain_emitted().collect();
        assert_eq!(beats.len(), 2);
        for (k, b) in beats.iter().enumerate() {
            assert!(b.heartbeat);
            assert_eq!(
                b.event.time_fired.as_nanos(),
                e.time_fired.as_nanos() + (k as i64 + 1) * 900 * S
            );
            assert_eq!(
                b.overrides.tags,
                [("heartbeat".to_string(), "true".to_string())]
            );
            assert!(b.event.meta.mark.is_none());
        }
        // A new point restarts the count.
        offer(
            &mut s,
            &at("sensor.t", "22", 2000),
            t0 + Duration::from_secs(2000),
        );
        s.tick(t0 + Duration::from_secs(2000 + 899));
        assert_eq!(s.drain_emitted().count(), 0);
    }

    #[test]
    fn a_held_event_caps_the_released_marks_until_it_is_written() {
        let handoff = Handoff::new();
        let mut tracker = handoff.register("mqtt");
        let mut s = shaper("{ throttle = \"10s\" }");
        let now = Instant::now();
        let mut stamp = |mut e: Event| {
            e.meta.mark = tracker.mark();
            e
        };
        let first = stamp(at("sensor.p", "1", 0));
        let held = stamp(at("sensor.p", "2", 1));
        let other = stamp(at("sensor.q", "9", 2));
        for e in [&first, &held, &other] {
            offer(&mut s, e, now);
            s.ledger.seen(e.meta.mark);
        }
        let mut marks = Marks::default();
        s.ledger.fill(&mut marks);
        handoff.release(&marks);
        assert_eq!(
            tracker.safe(),
            1,
            "mark 2 is held, so 3 may not be released yet"
        );
        s.tick(now + Duration::from_secs(10));
        assert_eq!(s.drain_emitted().count(), 1);
        let mut marks = Marks::default();
        s.ledger.fill(&mut marks);
        handoff.release(&marks);
        assert_eq!(tracker.safe(), 3);
        assert_eq!(s.ledger.held(), 0);
    }

    #[test]
    fn state_is_bounded_and_eviction_writes_what_was_held() {
        let mut s = shaper("{ throttle = \"10s\" }");
        s.set_limit(2);
        let t0 = Instant::now();
        offer(&mut s, &at("sensor.a", "1", 0), t0);
        offer(&mut s, &at("sensor.a", "2", 1), t0);
        offer(&mut s, &at("sensor.b", "1", 0), t0 + Duration::from_secs(1));
        offer(&mut s, &at("sensor.c", "1", 0), t0 + Duration::from_secs(2));
        assert_eq!(s.len(), 2);
        assert_eq!(
            states(&mut s),
            ["2"],
            "sensor.a was evicted and its held value written"
        );
    }

    #[test]
    fn bad_rates_are_refused() {
        for (text, key) in [
            ("{}", "rate."),
            ("{ throttle = \"0s\" }", "rate.throttle"),
            ("{ deadband = -1 }", "rate.deadband"),
            ("{ dedup = \"1m\", aggregate = \"mean\" }", "rate.aggregate"),
        ] {
            let rule: FilterRuleConfig = toml::from_str(&format!(
                "name = \"r\"\naction = \"include\"\nrate = {text}\n"
            ))
            .unwrap();
            let (name, e) = match Shaper::new(&[rule]) {
                Err(e) => e,
                Ok(_) => panic!("{text} must be refused"),
            };
            assert_eq!(name, "r");
            assert!(e.key.starts_with(key), "{text}: {e:?}");
        }
    }
}
