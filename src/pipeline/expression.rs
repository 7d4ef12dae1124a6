//! Jinja expressions over one event (minijinja), compiled once at start-up.
//!
//! HA users already write Jinja templates, so filter expressions use the same
//! language: `state | float(0) > 30 and attributes.device_class == "temperature"`.
//! The context of one event holds `entity_id`, `domain`, `object_id`,
//! `state`, `attributes`, `old_state` (`state` and `attributes` of the state
//! before the change, or none), `event_type` and `time` (HA's `time_fired`,
//! RFC 3339 UTC). Only the variables an expression names are built per event,
//! so `state | float(0) > 30` never converts the attributes.
//!
//! The context is not a map built per event: it is one object holding the
//! named variables (and, for `attributes.key` and `old_state.field` reads, a
//! small object holding only those keys), refilled for each event and reused
//! as long as no result of an earlier evaluation still refers to it.

use std::sync::{Arc, LazyLock, Mutex};

use minijinja::value::{Enumerator, Object};
use minijinja::{Environment, Value};

use crate::event::{Attributes, Event, State};

/// The one environment every expression is compiled in: Jinja's built-in filters and
/// tests, plus Python's string and dict methods (`.startswith`, `.get`) as HA templates use them.
static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env
});

/// The variables an expression may name, in bit order.
const VARIABLES: [&str; 8] = [
    "entity_id",
    "domain",
    "object_id",
    "state",
    "attributes",
    "old_state",
    "event_type",
    "time",
];

/// Why an expression could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum ExpressionError {
    /// Jinja syntax error.
    #[error("{0}")]
    Syntax(#[from] minijinja::Error),
    /// The expression names a variable the event context does not have.
    #[error("unknown variable {name:?}; known: {}", VARIABLES.join(", "))]
    UnknownVariable {
        /// The name used.
        name: String,
    },
}

/// Map methods (Jinja's and Python's): `attributes.get(…)` needs the whole map, not a key named `get`.
const MAP_METHODS: [&str; 6] = ["get", "items", "keys", "values", "copy", "__contains__"];

/// The fields of `old_state` in the context.
const OLD_STATE_FIELDS: [&str; 4] = ["state", "attributes", "last_changed", "last_updated"];

/// Which keys of a map variable an expression reads: `None` means the whole map.
type Keys = Option<Arc<[String]>>;

/// A compiled expression that decides true or false for one event.
pub struct EventExpression {
    compiled: minijinja::Expression<'static, 'static>,
    /// Bit `i` set: the expression reads `VARIABLES[i]`.
    used: u8,
    /// The attribute keys read as `attributes.key`; `None` when it reads the map otherwise.
    attribute_keys: Keys,
    /// The `old_state` fields read as `old_state.field`; `None` when it reads the map otherwise.
    old_state_fields: Keys,
    /// The context objects of the last evaluation, refilled by the next one.
    scratch: Mutex<Scratch>,
}

/// Context objects kept from one evaluation to the next.
#[derive(Default)]
struct Scratch {
    context: Option<Arc<EventContext>>,
    attributes: Option<Arc<KeyedMap>>,
    old_state: Option<Arc<KeyedMap>>,
}

/// The variables of one event, as the root of the Jinja context.
#[derive(Debug, Default)]
struct EventContext {
    /// Bit `i` set: `values[i]` is `VARIABLES[i]` (others are not looked up).
    used: u8,
    values: [Value; 8],
}

impl EventContext {
    fn lookup(&self, key: &str) -> Option<Value> {
        let i = VARIABLES.iter().position(|v| *v == key)?;
        (self.used & (1 << i) != 0).then(|| self.values[i].clone())
    }
}

impl Object for EventContext {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().and_then(|k| self.lookup(k))
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.lookup(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&VARIABLES)
    }
}

/// A map holding only the keys an expression reads (`attributes.unit`, `old_state.state`).
#[derive(Debug)]
struct KeyedMap {
    keys: Arc<[String]>,
    /// Per key, its value in this event; `None` where the event has no such key.
    values: Vec<Option<Value>>,
}

impl KeyedMap {
    fn new(keys: &Arc<[String]>) -> KeyedMap {
        KeyedMap {
            keys: keys.clone(),
            values: vec![None; keys.len()],
        }
    }

    fn lookup(&self, key: &str) -> Option<Value> {
        let i = self.keys.iter().position(|k| k == key)?;
        self.values[i].clone()
    }
}

impl Object for KeyedMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        key.as_str().and_then(|k| self.lookup(k))
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.lookup(key)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let present: Vec<Value> = self
            .keys
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| Value::from(k.as_str()))
            .collect();
        Enumerator::Iter(Box::new(present.into_iter()))
    }
}

/// `slot`'s object when no earlier result still holds it, else a new one from `make`.
fn reuse<T>(slot: &mut Option<Arc<T>>, make: impl FnOnce() -> T) -> &mut T {
    let fresh = match slot {
        Some(arc) => Arc::get_mut(arc).is_none(),
        None => true,
    };
    if fresh {
        *slot = Some(Arc::new(make()));
    }
    // Just made, or checked unique above.
    match slot {
        Some(arc) => Arc::get_mut(arc).unwrap_or_else(|| unreachable!()),
        None => unreachable!(),
    }
}

/// The keys read from map variable `var`, from minijinja's dotted paths (`attributes.unit`).
fn keys_read(var: &str, paths: &[String]) -> Keys {
    let mut keys = Vec::new();
    for path in paths {
        if path == var {
            // Read whole (`attributes[name]`, `'x' in attributes`, `attributes | length`).
            return None;
        }
        if let Some(rest) = path.strip_prefix(var).and_then(|r| r.strip_prefix('.')) {
            let key = rest.split('.').next().unwrap_or(rest);
            if MAP_METHODS.contains(&key) {
                return None;
            }
            if !keys.iter().any(|k| k == key) {
                keys.push(key.to_string());
            }
        }
    }
    Some(keys.into())
}

impl std::fmt::Debug for EventExpression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventExpression")
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl EventExpression {
    /// Compiles `source` once; refuses syntax errors and unknown variables.
    pub fn compile(source: &str) -> Result<EventExpression, ExpressionError> {
        let compiled = ENV.compile_expression_owned(source.to_string())?;
        let globals: Vec<&str> = ENV.globals().map(|(name, _)| name).collect();
        let mut used = 0u8;
        let mut names: Vec<String> = compiled.undeclared_variables(false).into_iter().collect();
        names.sort();
        for name in names {
            match VARIABLES.iter().position(|v| *v == name) {
                Some(i) => used |= 1 << i,
                None if globals.contains(&name.as_str()) => {}
                None => return Err(ExpressionError::UnknownVariable { name }),
            }
        }
        let mut paths: Vec<String> = compiled.undeclared_variables(true).into_iter().collect();
        paths.sort();
        Ok(EventExpression {
            compiled,
            used,
            attribute_keys: keys_read("attributes", &paths),
            old_state_fields: keys_read("old_state", &paths),
            scratch: Mutex::new(Scratch::default()),
        })
    }

    /// Evaluates the expression for `event`: its truthiness, or Jinja's run-time error.
    pub fn eval(&self, event: &Event) -> Result<bool, minijinja::Error> {
        Ok(self.value(event)?.is_true())
    }

    /// Evaluates the expression for `event` and returns its value (transforms compute with it).
    pub fn value(&self, event: &Event) -> Result<Value, minijinja::Error> {
        // Poisoned only if an evaluation panicked; the objects are refilled anyway.
        let mut guard = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let scratch = &mut *guard;
        let root = self.fill(event, scratch);
        let result = self.compiled.eval(root);
        drop(guard);
        result
    }

    /// Refills the context objects for `event`; returns the root.
    fn fill(&self, event: &Event, scratch: &mut Scratch) -> Value {
        let sc = event.state_changed();
        let new_state = sc.and_then(|sc| sc.new_state.as_ref());
        let entity = event.entity_id();
        // The root first: emptying it lets go of the previous event's inner objects.
        let context = reuse(&mut scratch.context, EventContext::default);
        context.used = self.used;
        for (i, slot) in context.values.iter_mut().enumerate() {
            if self.used & (1 << i) == 0 {
                continue;
            }
            *slot = match i {
                0 => entity.map_or(Value::from(()), |e| Value::from(e.as_str())),
                1 => entity.map_or(Value::from(()), |e| Value::from(e.domain())),
                2 => entity.map_or(Value::from(()), |e| Value::from(e.object_id())),
                3 => new_state.map_or(Value::from(()), |s| Value::from(s.state.as_str())),
                6 => Value::from(event.event_type()),
                7 => Value::from(event.time_fired.to_rfc3339()),
                // attributes and old_state below, once the root holds none of the last event's.
                _ => Value::from(()),
            };
        }
        if self.used & (1 << 4) != 0 {
            let value = new_state.map_or(Value::from(()), |s| match &self.attribute_keys {
                None => attributes_value(&s.attributes),
                Some(keys) => {
                    let map = reuse(&mut scratch.attributes, || KeyedMap::new(keys));
                    for (key, slot) in keys.iter().zip(map.values.iter_mut()) {
                        *slot = s.attributes.get(key).map(json_value);
                    }
                    scratch
                        .attributes
                        .as_ref()
                        .map_or(Value::from(()), |m| Value::from_dyn_object(m.clone()))
                }
            });
            set(scratch, 4, value);
        }
        if self.used & (1 << 5) != 0 {
            let old = sc
                .and_then(|sc| sc.old_state.as_ref())
                .and_then(|old| old.state());
            let value = old.map_or(Value::from(()), |old| match &self.old_state_fields {
                None => state_value(old),
                Some(fields) => {
                    let map = reuse(&mut scratch.old_state, || KeyedMap::new(fields));
                    for (field, slot) in fields.iter().zip(map.values.iter_mut()) {
                        *slot = old_state_field(old, field);
                    }
                    scratch
                        .old_state
                        .as_ref()
                        .map_or(Value::from(()), |m| Value::from_dyn_object(m.clone()))
                }
            });
            set(scratch, 5, value);
        }
        scratch
            .context
            .as_ref()
            .map_or(Value::from(()), |c| Value::from_dyn_object(c.clone()))
    }
}

/// Sets variable `i` of the root context (held only by the scratch between evaluations).
fn set(scratch: &mut Scratch, i: usize, value: Value) {
    if let Some(context) = scratch.context.as_mut().and_then(Arc::get_mut) {
        context.values[i] = value;
    }
}

/// One field of `old_state` (`None` for a name it does not have).
fn old_state_field(state: &State, field: &str) -> Option<Value> {
    Some(match field {
        "state" => Value::from(state.state.as_str()),
        "attributes" => attributes_value(&state.attributes),
        "last_changed" => Value::from(state.last_changed.to_rfc3339()),
        "last_updated" => Value::from(state.last_updated.to_rfc3339()),
        _ => return None,
    })
}

/// `old_state` in the context, whole: its `state`, `attributes` and times.
fn state_value(state: &State) -> Value {
    let pairs = OLD_STATE_FIELDS
        .iter()
        .filter_map(|&f| old_state_field(state, f).map(|v| (f, v)));
    Value::from_pairs(pairs)
}

/// The attributes as a Jinja map, whole.
fn attributes_value(attributes: &Attributes) -> Value {
    Value::from_pairs(attributes.iter().map(|(k, v)| (k.as_str(), json_value(v))))
}

/// HA's JSON as a Jinja value: objects become maps, numbers keep their kind.
fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => items.iter().map(json_value).collect(),
        serde_json::Value::Object(map) => {
            Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), json_value(v))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::rules::test_support::{bus_event, state_event};

    #[test]
    fn reads_state_attributes_and_ids() {
        let e = EventExpression::compile(
            r#"state | float(0) > 30 and attributes.device_class == "temperature" and domain == "sensor""#,
        )
        .unwrap();
        let hot = state_event(
            "sensor.oven",
            "31.5",
            serde_json::json!({"device_class": "temperature"}),
            None,
        );
        let cold = state_event(
            "sensor.oven",
            "12",
            serde_json::json!({"device_class": "temperature"}),
            None,
        );
        let text = state_event(
            "sensor.oven",
            "unknown",
            serde_json::json!({"device_class": "temperature"}),
            None,
        );
        assert!(e.eval(&hot).unwrap());
        assert!(!e.eval(&cold).unwrap());
        assert!(!e.eval(&text).unwrap(), "float(0) turns text into 0");
        let e = EventExpression::compile(
            "event_type == 'state_changed' and object_id.endswith('_power')",
        )
        .unwrap();
        let power = state_event("sensor.a_power", "1", serde_json::json!({}), None);
        assert!(e.eval(&power).unwrap());
        assert!(
            !e.eval(&bus_event("call_service")).unwrap(),
            "`and` stops before object_id"
        );
        // Without the guard a bus event (no entity: object_id is none) fails at run time.
        let e = EventExpression::compile("object_id.endswith('_power')").unwrap();
        assert!(e.eval(&bus_event("call_service")).is_err());
    }

    #[test]
    fn old_state_and_time_are_in_context() {
        let e = EventExpression::compile(
            "old_state.state == 'off' and state == 'on' and time.startswith('2026-')",
        )
        .unwrap();
        let on = state_event("light.a", "on", serde_json::json!({}), Some("off"));
        let again = state_event("light.a", "on", serde_json::json!({}), Some("on"));
        let new = state_event("light.a", "on", serde_json::json!({}), None);
        assert!(e.eval(&on).unwrap());
        assert!(!e.eval(&again).unwrap());
        assert!(
            !e.eval(&new).unwrap(),
            "no old state: none.state is undefined"
        );
    }

    #[test]
    fn run_time_failure_is_an_error_not_a_panic() {
        let e = EventExpression::compile("state | float > 3").unwrap();
        let err = e
            .eval(&state_event("sensor.a", "abc", serde_json::json!({}), None))
            .unwrap_err();
        assert!(err.to_string().contains("float"), "{err}");
    }

    #[test]
    fn only_the_keys_read_are_built_and_whole_reads_get_the_whole_map() {
        let attrs = serde_json::json!({"unit_of_measurement": "W", "get": 1, "x": 2});
        let e = state_event("sensor.p", "5", attrs.clone(), Some("4"));
        let cases = [
            ("attributes.unit_of_measurement == 'W'", true),
            ("attributes['x'] == 2", true),
            ("attributes.get('x') == 2", true),
            ("'x' in attributes", true),
            ("attributes | length == 3", true),
            ("attributes.missing is undefined", true),
            (
                "old_state.state == '4' and old_state.attributes.x == 2",
                true,
            ),
            ("old_state.last_changed.startswith('2026')", true),
            ("old_state is none", false),
            ("old_state | length == 4", true),
        ];
        for (src, want) in cases {
            let compiled = EventExpression::compile(src).unwrap();
            assert_eq!(compiled.eval(&e).unwrap(), want, "{src}");
        }
        let partial = EventExpression::compile("attributes.unit_of_measurement == 'W'").unwrap();
        assert_eq!(
            partial.attribute_keys.as_deref(),
            Some(&["unit_of_measurement".to_string()][..])
        );
        // The context objects are reused from event to event, and refilled.
        let other = state_event("sensor.q", "6", serde_json::json!({"x": 1}), None);
        for _ in 0..3 {
            assert!(partial.eval(&e).unwrap());
            assert!(!partial.eval(&other).unwrap(), "no unit: undefined, not W");
        }
        let fields = EventExpression::compile("old_state.state == '4'").unwrap();
        let changed = state_event("sensor.p", "5", serde_json::json!({}), Some("3"));
        let first = state_event("sensor.p", "5", serde_json::json!({}), None);
        for _ in 0..3 {
            assert!(fields.eval(&e).unwrap());
            assert!(!fields.eval(&changed).unwrap());
            assert!(!fields.eval(&first).unwrap(), "none.state is undefined");
        }
        let whole = EventExpression::compile("attributes.get('x')").unwrap();
        assert!(whole.attribute_keys.is_none());
    }

    #[test]
    fn bad_syntax_and_unknown_variables_are_refused() {
        assert!(matches!(
            EventExpression::compile("state >"),
            Err(ExpressionError::Syntax(_))
        ));
        let err = EventExpression::compile("atributes.unit == 'W'").unwrap_err();
        assert!(err.to_string().contains("atributes"), "{err}");
        // Built-in globals such as `range` are not variables.
        assert!(EventExpression::compile("state in range(3) | map('string') | list").is_ok());
    }
}
