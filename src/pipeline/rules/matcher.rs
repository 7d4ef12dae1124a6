//! A rule's match, compiled, and whether it holds for one event.
//!
//! The *static* part (event type, domain, entity, source) depends on nothing but
//! the event's type, entity id and source, so the chain evaluates it once per
//! such key and caches the outcome. The *dynamic* part (time window, attribute
//! and state tests, expression) reads the event and runs every time; only an
//! expression can fail, and its failure is an [`Eval::Error`] for the rule's
//! `on_error` to settle. Values compare as HA's JSON does: numbers by value, and
//! a number sent as text still counts as a number for the bounds.

use globset::GlobSet;
use regex::{Regex, RegexSet};

use crate::config::StateSide;
use crate::event::{Event, LazyState, State};
use crate::pipeline::expression::EventExpression;
use crate::pipeline::time_window::TimeWindow;

/// Numeric bounds; every one given must hold.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Range {
    pub(super) gt: Option<f64>,
    pub(super) gte: Option<f64>,
    pub(super) lt: Option<f64>,
    pub(super) lte: Option<f64>,
}

impl Range {
    pub(super) fn is_set(&self) -> bool {
        self.gt.is_some() || self.gte.is_some() || self.lt.is_some() || self.lte.is_some()
    }

    fn holds(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// One attribute test of a match (`match.attribute`); every test given must hold.
pub(super) struct AttributeTest {
    pub(super) name: String,
    pub(super) side: StateSide,
    pub(super) exists: Option<bool>,
    pub(super) equals: Option<serde_json::Value>,
    pub(super) one_of: Option<Vec<serde_json::Value>>,
    pub(super) range: Range,
    pub(super) regex: Option<Regex>,
}

/// The state test of a match (`match.state`); every test given must hold.
pub(super) struct StateTest {
    pub(super) equals: Option<String>,
    pub(super) one_of: Option<Vec<String>>,
    pub(super) range: Range,
    pub(super) changed: Option<bool>,
    pub(super) attributes_only_changed: Option<bool>,
}

/// The parts of a match fixed by (event type, entity id, source).
#[derive(Default)]
pub(super) struct StaticMatch {
    pub(super) event_types: Option<GlobSet>,
    pub(super) domains: Vec<String>,
    pub(super) entity: Option<(GlobSet, RegexSet)>,
    pub(super) sources: Vec<String>,
}

/// The parts read per event.
#[derive(Default)]
pub(super) struct DynamicMatch {
    pub(super) attributes: Vec<AttributeTest>,
    pub(super) state: Option<StateTest>,
    pub(super) expression: Option<EventExpression>,
    pub(super) time: Option<TimeWindow>,
}

/// A dynamic part's verdict on one event.
pub(super) enum Eval {
    Match,
    NoMatch,
    Error(String),
}

pub(super) fn static_holds(m: &StaticMatch, event: &Event) -> bool {
    if let Some(types) = &m.event_types
        && !types.is_match(event.event_type())
    {
        return false;
    }
    if !m.sources.is_empty() && !m.sources.iter().any(|s| **s == *event.source) {
        return false;
    }
    if m.domains.is_empty() && m.entity.is_none() {
        return true;
    }
    let Some(id) = event.entity_id() else {
        return false;
    };
    if !m.domains.is_empty() && !m.domains.iter().any(|d| d == id.domain()) {
        return false;
    }
    if let Some((globs, regexes)) = &m.entity
        && !globs.is_match(id.as_str())
        && !regexes.is_match(id.as_str())
    {
        return false;
    }
    true
}

pub(super) fn dynamic_holds(m: &DynamicMatch, event: &Event) -> Eval {
    if let Some(window) = &m.time
        && !window.holds(event.time_fired)
    {
        return Eval::NoMatch;
    }
    let sc = event.state_changed();
    if !m.attributes.is_empty() || m.state.is_some() {
        let Some(sc) = sc else {
            return Eval::NoMatch;
        };
        let new = sc.new_state.as_ref();
        let old = || sc.old_state.as_ref().and_then(|o| o.state());
        for test in &m.attributes {
            let state = match test.side {
                StateSide::New => new,
                StateSide::Old => old(),
            };
            if !attribute_holds(test, state) {
                return Eval::NoMatch;
            }
        }
        if let Some(test) = &m.state
            && !state_holds(test, new, sc.old_state.as_ref())
        {
            return Eval::NoMatch;
        }
    }
    if let Some(expression) = &m.expression {
        return match expression.eval(event) {
            Ok(true) => Eval::Match,
            Ok(false) => Eval::NoMatch,
            Err(e) => Eval::Error(e.to_string()),
        };
    }
    Eval::Match
}

fn attribute_holds(test: &AttributeTest, state: Option<&State>) -> bool {
    let value = state.and_then(|s| s.attributes.get(&test.name));
    if let Some(want) = test.exists
        && value.is_some() != want
    {
        return false;
    }
    if let Some(want) = &test.equals
        && !value.is_some_and(|v| json_eq(v, want))
    {
        return false;
    }
    if let Some(list) = &test.one_of
        && !value.is_some_and(|v| list.iter().any(|w| json_eq(v, w)))
    {
        return false;
    }
    if test.range.is_set()
        && !value
            .and_then(json_number)
            .is_some_and(|x| test.range.holds(x))
    {
        return false;
    }
    if let Some(re) = &test.regex {
        let matched = match value {
            Some(serde_json::Value::String(s)) => re.is_match(s),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                re.is_match(&v.to_string())
            }
            _ => false,
        };
        if !matched {
            return false;
        }
    }
    true
}

fn state_holds(test: &StateTest, new: Option<&State>, old: Option<&LazyState>) -> bool {
    let value = new.map(|s| s.state.as_str());
    if let Some(want) = &test.equals
        && value != Some(want.as_str())
    {
        return false;
    }
    if let Some(list) = &test.one_of
        && !value.is_some_and(|v| list.iter().any(|w| w == v))
    {
        return false;
    }
    if test.range.is_set()
        && !value
            .and_then(|v| v.trim().parse::<f64>().ok())
            .is_some_and(|x| test.range.holds(x))
    {
        return false;
    }
    // The old state's value alone, read without decoding its attributes (most of its cost).
    let old_value = || match old {
        None => None,
        Some(o) => o.peek_state().or_else(|| {
            o.state()
                .map(|s| std::borrow::Cow::Borrowed(s.state.as_str()))
        }),
    };
    if let Some(want) = test.changed {
        let before = old_value();
        if (value != before.as_deref()) != want {
            return false;
        }
    }
    if let Some(want) = test.attributes_only_changed {
        // Decoded only when the values are equal and the attributes must be compared.
        let only_attributes = match (new, old_value()) {
            (Some(n), Some(before)) if n.state == before => old
                .and_then(|o| o.state())
                .is_some_and(|o| !same_attributes(&n.attributes, &o.attributes)),
            _ => false,
        };
        if only_attributes != want {
            return false;
        }
    }
    true
}

/// Same keys and values in any order, as HA compares attribute dicts.
fn same_attributes(a: &crate::event::Attributes, b: &crate::event::Attributes) -> bool {
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
}

/// Equality of HA's JSON with a configured value; numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A number, or a string holding one (some integrations send numbers as text).
fn json_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
