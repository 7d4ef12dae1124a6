//! Transform steps: reshape a kept event before it is encoded.
//!
//! A rule's `transform` list is compiled once into [`Transform`]; per event the
//! steps run in order, each on the result of the one before. Attribute and
//! state steps change the event itself; `measurement` and tags go into a
//! [`PointOverrides`] the encoder applies last.
//!
//! Which events a step applies to:
//! - `measurement`, `tags`, `computed_tags`: every event (state points and the
//!   points of other events alike);
//! - `rename`, `drop_attributes`, `keep_attributes`, `convert`, `compute`,
//!   `map`: `state_changed` events (they change the new state or its
//!   attributes, which other events do not have);
//! - `rename_data`, `drop_data`, `keep_data`: other events (they change the
//!   members of the event's `data`, which the events measurement writes as
//!   `data` and `data_<key>` fields; a state change's data is its states).
//!
//! A step never applies to an event it has nothing to change in: it passes
//! over it. A rule whose match can only select events a step cannot change is
//! refused at start-up ([`Transform::check_reach`]).

use globset::GlobSet;
use minijinja::Value;

use super::expression::EventExpression;
use super::filter::glob_set;
use crate::config::{ConvertTo, StepOnError, TransformStepConfig};
use crate::encode::PointOverrides;
use crate::event::{Attributes, Event, EventKind, State, Timestamp};

/// Why a step could not be compiled: the key at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// `transform[i].key`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// What a step writes to or reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    State,
    Attribute(String),
}

impl Target {
    fn parse(text: &str) -> Option<Target> {
        if text == "state" {
            return Some(Target::State);
        }
        text.strip_prefix("attributes.")
            .filter(|name| !name.is_empty())
            .map(|name| Target::Attribute(name.to_string()))
    }

    fn describe(&self) -> String {
        match self {
            Target::State => "state".into(),
            Target::Attribute(a) => format!("attributes.{a}"),
        }
    }
}

enum Step {
    Rename(Vec<(String, String)>),
    Drop(GlobSet),
    Keep(GlobSet),
    Measurement(String),
    Tags(Vec<(String, String)>),
    ComputedTags(Vec<(String, EventExpression)>, StepOnError),
    Convert(Target, ConvertTo, StepOnError),
    Compute(Target, EventExpression, StepOnError),
    Map(Target, Vec<(String, serde_json::Value)>),
    RenameData(Vec<(String, String)>),
    DropData(GlobSet),
    KeepData(GlobSet),
}

/// Which events a step can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Every event.
    Any,
    /// `state_changed` only.
    StateChanges,
    /// Every other event type only.
    OtherEvents,
}

impl Step {
    fn reach(&self) -> Reach {
        match self {
            Step::Measurement(_) | Step::Tags(_) | Step::ComputedTags(..) => Reach::Any,
            Step::RenameData(_) | Step::DropData(_) | Step::KeepData(_) => Reach::OtherEvents,
            _ => Reach::StateChanges,
        }
    }
}

/// A rule's step that can never apply, given which events the rule's match can select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreachableStep {
    /// `transform[i].<operation>`.
    pub key: String,
    /// Why it can never apply, and what to use instead.
    pub message: String,
}

/// A rule's compiled steps.
pub struct Transform {
    steps: Vec<Step>,
    plan: Vec<String>,
    /// Each step's operation key (`drop_data` …), for messages.
    ops: Vec<&'static str>,
}

/// What applying a rule's steps to one event did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Applied {
    /// Steps that failed for this event.
    pub errors: u32,
    /// The first failure's message.
    pub first_error: Option<String>,
    /// A failing step with `on_error = "drop"` drops the event.
    pub drop: bool,
}

impl Applied {
    fn fail(&mut self, policy: StepOnError, message: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
        if policy == StepOnError::Drop {
            self.drop = true;
        }
    }
}

impl Transform {
    /// Compiles every step; the error names the step's index and key.
    pub fn new(steps: &[TransformStepConfig]) -> Result<Transform, StepError> {
        let mut out = Vec::with_capacity(steps.len());
        let mut plan = Vec::with_capacity(steps.len());
        let mut ops = Vec::with_capacity(steps.len());
        for (i, cfg) in steps.iter().enumerate() {
            let err = |key: &str, message: String| StepError {
                key: format!("transform[{i}].{key}"),
                message,
            };
            let (step, text, op) = compile_step(cfg, &err)?;
            out.push(step);
            plan.push(text);
            ops.push(op);
        }
        Ok(Transform {
            steps: out,
            plan,
            ops,
        })
    }

    /// Refuses a step the rule can never apply: one that changes a state when the rule's
    /// match selects only other events, or event data when it selects only state changes.
    pub fn check_reach(
        &self,
        matches_state_changes: bool,
        matches_other_events: bool,
    ) -> Result<(), UnreachableStep> {
        for (i, (step, op)) in self.steps.iter().zip(&self.ops).enumerate() {
            let message = match step.reach() {
                Reach::StateChanges if !matches_state_changes => {
                    "changes the new state or its attributes, which only state_changed events have, \
                     and this rule's match selects no state_changed event \
                     (for other events use rename_data, drop_data or keep_data on their data)"
                }
                Reach::OtherEvents if !matches_other_events => {
                    "changes the members of an event's data, and this rule's match selects only \
                     state_changed events (their data is the states: use rename, drop_attributes \
                     or keep_attributes)"
                }
                _ => continue,
            };
            return Err(UnreachableStep {
                key: format!("transform[{i}].{op}"),
                message: message.to_string(),
            });
        }
        Ok(())
    }

    /// One line per step, for `check` and `explain`.
    pub fn plan(&self) -> &[String] {
        &self.plan
    }

    /// Runs the steps in order on `event` and `overrides`.
    pub fn apply(&self, event: &mut Event, overrides: &mut PointOverrides) -> Applied {
        let mut applied = Applied::default();
        for step in &self.steps {
            match step {
                Step::Measurement(m) => overrides.measurement = Some(m.clone()),
                Step::Tags(tags) => {
                    for (k, v) in tags {
                        overrides.set_tag(k, v.clone());
                    }
                }
                Step::ComputedTags(tags, policy) => {
                    for (k, expr) in tags {
                        match expr.value(event) {
                            Ok(v) if !v.is_undefined() && !v.is_none() => {
                                overrides.set_tag(k, v.to_string())
                            }
                            Ok(_) => applied.fail(
                                *policy,
                                format!("computed tag {k:?}: the expression gave no value"),
                            ),
                            Err(e) => applied.fail(*policy, format!("computed tag {k:?}: {e}")),
                        }
                    }
                }
                Step::Rename(pairs) => {
                    if let Some(state) = new_state_mut(event) {
                        rename(&mut state.attributes, pairs);
                    }
                }
                Step::Drop(globs) => {
                    if let Some(state) = new_state_mut(event) {
                        retain(&mut state.attributes, |k| !globs.is_match(k));
                    }
                }
                Step::Keep(globs) => {
                    if let Some(state) = new_state_mut(event) {
                        retain(&mut state.attributes, |k| globs.is_match(k));
                    }
                }
                Step::Convert(target, to, policy) => {
                    let Some(state) = new_state_mut(event) else {
                        continue;
                    };
                    let Some(current) = read(state, target) else {
                        continue;
                    };
                    match convert(&current, *to) {
                        Ok(v) => write(state, target, v),
                        Err(message) => {
                            if *policy == StepOnError::Remove {
                                remove(state, target);
                            }
                            applied.fail(
                                *policy,
                                format!("convert {} to {to:?}: {message}", target.describe()),
                            );
                        }
                    }
                }
                Step::Compute(target, expr, policy) => {
                    if new_state_mut(event).is_none() {
                        continue;
                    }
                    let result = expr.value(event).map_err(|e| e.to_string()).and_then(|v| {
                        jinja_to_json(&v).ok_or_else(|| "the expression gave no value".to_string())
                    });
                    let Some(state) = new_state_mut(event) else {
                        continue;
                    };
                    match result {
                        Ok(v) => write(state, target, v),
                        Err(message) => {
                            if *policy == StepOnError::Remove {
                                remove(state, target);
                            }
                            applied
                                .fail(*policy, format!("compute {}: {message}", target.describe()));
                        }
                    }
                }
                Step::Map(target, table) => {
                    let Some(state) = new_state_mut(event) else {
                        continue;
                    };
                    let Some(current) = read(state, target) else {
                        continue;
                    };
                    let text = match &current {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    if let Some((_, v)) = table.iter().find(|(k, _)| *k == text) {
                        write(state, target, v.clone());
                    }
                }
                Step::RenameData(pairs) => {
                    if let Some(data) = data_mut(event) {
                        rename_data(data, pairs);
                    }
                }
                Step::DropData(globs) => {
                    if let Some(data) = data_mut(event) {
                        data.retain(|k, _| !globs.is_match(k));
                    }
                }
                Step::KeepData(globs) => {
                    if let Some(data) = data_mut(event) {
                        data.retain(|k, _| globs.is_match(k));
                    }
                }
            }
        }
        applied
    }
}

fn compile_step(
    cfg: &TransformStepConfig,
    err: &impl Fn(&str, String) -> StepError,
) -> Result<(Step, String, &'static str), StepError> {
    let ops: Vec<&'static str> = [
        ("rename", cfg.rename.is_some()),
        ("drop_attributes", cfg.drop_attributes.is_some()),
        ("keep_attributes", cfg.keep_attributes.is_some()),
        ("measurement", cfg.measurement.is_some()),
        ("tags", cfg.tags.is_some()),
        ("computed_tags", cfg.computed_tags.is_some()),
        ("convert", cfg.convert.is_some()),
        ("compute", cfg.compute.is_some()),
        ("map", cfg.map.is_some()),
        ("rename_data", cfg.rename_data.is_some()),
        ("drop_data", cfg.drop_data.is_some()),
        ("keep_data", cfg.keep_data.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(name, _)| *name)
    .collect();
    let op = match ops.as_slice() {
        [op] => *op,
        [] => {
            return Err(err(
                "",
                "no operation: give one of rename, drop_attributes, keep_attributes, measurement, tags, computed_tags, convert, compute, map, rename_data, drop_data, keep_data".into(),
            ));
        }
        many => {
            return Err(err(
                many[1],
                format!(
                    "one operation per step, found {}: write them as separate steps",
                    many.join(", ")
                ),
            ));
        }
    };
    // Options that belong to another operation are refused, not ignored.
    for (key, set, owner) in [
        ("to", cfg.to.is_some(), "convert"),
        ("expression", cfg.expression.is_some(), "compute"),
        ("values", cfg.values.is_some(), "map"),
    ] {
        if set && op != owner {
            return Err(err(key, format!("only used with {owner}")));
        }
    }
    if cfg.on_error.is_some() && !matches!(op, "convert" | "compute" | "computed_tags") {
        return Err(err(
            "on_error",
            "only used with convert, compute or computed_tags".into(),
        ));
    }
    let policy = cfg.on_error.unwrap_or_default();
    let target = |key: &str, text: &str| -> Result<Target, StepError> {
        let t = Target::parse(text).ok_or_else(|| {
            err(
                key,
                format!("bad target {text:?}: give \"state\" or \"attributes.<name>\""),
            )
        })?;
        if t == Target::State && policy == StepOnError::Remove {
            return Err(err(
                "on_error",
                "\"remove\" cannot remove the state: use \"keep\" or \"drop\"".into(),
            ));
        }
        Ok(t)
    };
    let globs = |key: &str, list: &[String]| -> Result<GlobSet, StepError> {
        glob_set(list).map_err(|e| err(key, format!("bad glob: {e}")))
    };
    let expression = |key: &str, source: &str| -> Result<EventExpression, StepError> {
        EventExpression::compile(source).map_err(|e| err(key, e.to_string()))
    };
    let (step, text) = match op {
        "rename_data" => {
            let pairs = rename_pairs(cfg.rename_data.as_ref(), "rename_data", err)?;
            let text = describe_pairs(&pairs);
            (
                Step::RenameData(pairs),
                format!("rename data members {text}"),
            )
        }
        "drop_data" => {
            let list = cfg.drop_data.as_deref().unwrap_or_default();
            (
                Step::DropData(globs("drop_data", list)?),
                format!("drop data members {}", list.join(", ")),
            )
        }
        "keep_data" => {
            let list = cfg.keep_data.as_deref().unwrap_or_default();
            (
                Step::KeepData(globs("keep_data", list)?),
                format!("keep only data members {}", list.join(", ")),
            )
        }
        "rename" => {
            let pairs = rename_pairs(cfg.rename.as_ref(), "rename", err)?;
            let text = describe_pairs(&pairs);
            (Step::Rename(pairs), format!("rename attributes {text}"))
        }
        "drop_attributes" => {
            let list = cfg.drop_attributes.as_deref().unwrap_or_default();
            (
                Step::Drop(globs("drop_attributes", list)?),
                format!("drop attributes {}", list.join(", ")),
            )
        }
        "keep_attributes" => {
            let list = cfg.keep_attributes.as_deref().unwrap_or_default();
            (
                Step::Keep(globs("keep_attributes", list)?),
                format!("keep only attributes {}", list.join(", ")),
            )
        }
        "measurement" => {
            let m = cfg.measurement.clone().unwrap_or_default();
            if m.is_empty() {
                return Err(err("measurement", "must not be empty".into()));
            }
            let text = format!("measurement {m}");
            (Step::Measurement(m), text)
        }
        "tags" => {
            let tags: Vec<(String, String)> = cfg
                .tags
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if tags.iter().any(|(k, _)| k.is_empty()) {
                return Err(err("tags", "tag keys must not be empty".into()));
            }
            let text = tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            (Step::Tags(tags), format!("tags {text}"))
        }
        "computed_tags" => {
            let mut tags = Vec::new();
            let mut text = Vec::new();
            for (k, source) in cfg.computed_tags.iter().flatten() {
                if k.is_empty() {
                    return Err(err("computed_tags", "tag keys must not be empty".into()));
                }
                tags.push((
                    k.clone(),
                    expression(&format!("computed_tags.{k}"), source)?,
                ));
                text.push(format!("{k} = {{{{ {source} }}}}"));
            }
            (
                Step::ComputedTags(tags, policy),
                format!("computed tags {} (on_error {policy:?})", text.join(", ")),
            )
        }
        "convert" => {
            let t = target("convert", cfg.convert.as_deref().unwrap_or_default())?;
            let Some(to) = cfg.to else {
                return Err(err(
                    "to",
                    "convert needs to = float, int, bool, duration, timestamp or string".into(),
                ));
            };
            let text = format!("convert {} to {to:?} (on_error {policy:?})", t.describe());
            (Step::Convert(t, to, policy), text)
        }
        "compute" => {
            let t = target("compute", cfg.compute.as_deref().unwrap_or_default())?;
            let Some(source) = &cfg.expression else {
                return Err(err("expression", "compute needs an expression".into()));
            };
            let text = format!(
                "compute {} = {{{{ {source} }}}} (on_error {policy:?})",
                t.describe()
            );
            (
                Step::Compute(t, expression("expression", source)?, policy),
                text,
            )
        }
        _ => {
            let t = target("map", cfg.map.as_deref().unwrap_or_default())?;
            let Some(values) = &cfg.values else {
                return Err(err("values", "map needs a values table".into()));
            };
            let table: Vec<(String, serde_json::Value)> =
                values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let text = format!(
                "map {} {}",
                t.describe(),
                table
                    .iter()
                    .map(|(k, v)| format!("{k} -> {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            (Step::Map(t, table), text)
        }
    };
    Ok((step, text, op))
}

/// `{ old = "new" }` pairs; names must not be empty.
fn rename_pairs(
    map: Option<&std::collections::BTreeMap<String, String>>,
    key: &str,
    err: &impl Fn(&str, String) -> StepError,
) -> Result<Vec<(String, String)>, StepError> {
    let pairs: Vec<(String, String)> = map
        .into_iter()
        .flatten()
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect();
    if pairs.iter().any(|(a, b)| a.is_empty() || b.is_empty()) {
        return Err(err(key, "names must not be empty".into()));
    }
    Ok(pairs)
}

fn describe_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn data_mut(event: &mut Event) -> Option<&mut serde_json::Map<String, serde_json::Value>> {
    match &mut event.kind {
        EventKind::Bus(bus) => Some(&mut bus.data),
        EventKind::StateChanged(_) => None,
    }
}

/// Renames data members in place, order kept; a renamed member that meets an existing one replaces it.
fn rename_data(data: &mut serde_json::Map<String, serde_json::Value>, pairs: &[(String, String)]) {
    if !data.keys().any(|k| pairs.iter().any(|(a, _)| a == k)) {
        return;
    }
    let old = std::mem::take(data);
    for (k, v) in old {
        let key = pairs
            .iter()
            .find(|(a, _)| *a == k)
            .map_or(k, |(_, b)| b.clone());
        data.insert(key, v);
    }
}

fn new_state_mut(event: &mut Event) -> Option<&mut State> {
    match &mut event.kind {
        EventKind::StateChanged(sc) => sc.new_state.as_mut(),
        EventKind::Bus(_) => None,
    }
}

fn rename(attributes: &mut Attributes, pairs: &[(String, String)]) {
    if !attributes
        .iter()
        .any(|(k, _)| pairs.iter().any(|(a, _)| a == k))
    {
        return;
    }
    // Rebuilt in order; a renamed key that meets an existing one keeps the later value at the first position.
    *attributes = attributes
        .iter()
        .map(|(k, v)| {
            let key = pairs
                .iter()
                .find(|(a, _)| a == k)
                .map_or_else(|| k.clone(), |(_, b)| b.clone());
            (key, v.clone())
        })
        .collect();
}

fn retain(attributes: &mut Attributes, keep: impl Fn(&str) -> bool) {
    if attributes.iter().all(|(k, _)| keep(k)) {
        return;
    }
    *attributes = attributes
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
}

fn read(state: &State, target: &Target) -> Option<serde_json::Value> {
    match target {
        Target::State => Some(serde_json::Value::String(state.state.clone())),
        Target::Attribute(name) => state.attributes.get(name).cloned(),
    }
}

fn write(state: &mut State, target: &Target, value: serde_json::Value) {
    match target {
        Target::State => state.state = state_text(&value),
        Target::Attribute(name) => state.attributes.insert(name.clone(), value),
    }
}

fn remove(state: &mut State, target: &Target) {
    if let Target::Attribute(name) = target {
        retain(&mut state.attributes, |k| k != name);
    }
}

/// A value as the state string: numbers as their shortest text, booleans as `1`/`0` (so `value` is numeric).
fn state_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn number(f: f64) -> Result<serde_json::Value, String> {
    serde_json::Number::from_f64(f)
        .map(serde_json::Value::Number)
        .ok_or_else(|| format!("{f} is not a finite number"))
}

const TRUE_WORDS: [&str; 7] = ["true", "on", "yes", "1", "open", "home", "locked"];
const FALSE_WORDS: [&str; 8] = [
    "false", "off", "no", "0", "closed", "not_home", "unlocked", "none",
];

/// Converts one value; the error says why in a few words.
fn convert(value: &serde_json::Value, to: ConvertTo) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let text = |v: &J| match v {
        J::String(s) => Ok(s.trim().to_string()),
        J::Number(n) => Ok(n.to_string()),
        J::Bool(b) => Ok(b.to_string()),
        other => Err(format!("cannot convert {other}")),
    };
    match to {
        ConvertTo::String => Ok(J::String(match value {
            J::String(s) => s.clone(),
            other => other.to_string(),
        })),
        ConvertTo::Float => match value {
            J::Number(_) => Ok(value.clone()),
            J::Bool(b) => number(f64::from(u8::from(*b))),
            v => {
                let t = text(v)?;
                let f: f64 = t.parse().map_err(|_| format!("{t:?} is not a number"))?;
                number(f)
            }
        },
        ConvertTo::Int => match value {
            J::Bool(b) => Ok(J::from(i64::from(*b))),
            v => {
                let t = text(v)?;
                if let Ok(i) = t.parse::<i64>() {
                    return Ok(J::from(i));
                }
                match t.parse::<f64>() {
                    Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(J::from(f as i64)),
                    _ => Err(format!("{t:?} is not a whole number")),
                }
            }
        },
        ConvertTo::Bool => match value {
            J::Bool(_) => Ok(value.clone()),
            J::Number(n) => Ok(J::Bool(n.as_f64().is_some_and(|f| f != 0.0))),
            v => {
                let t = text(v)?.to_ascii_lowercase();
                if TRUE_WORDS.contains(&t.as_str()) {
                    Ok(J::Bool(true))
                } else if FALSE_WORDS.contains(&t.as_str()) {
                    Ok(J::Bool(false))
                } else {
                    Err(format!("{t:?} is not a truth value"))
                }
            }
        },
        ConvertTo::Duration => match value {
            J::Number(_) => Ok(value.clone()),
            v => {
                let t = text(v)?;
                number(duration_seconds(&t).ok_or_else(|| format!("{t:?} is not a duration"))?)
            }
        },
        ConvertTo::Timestamp => match value {
            J::Number(_) => Ok(value.clone()),
            v => {
                let t = text(v)?;
                let ts = Timestamp::parse_rfc3339(&t).map_err(|e| e.to_string())?;
                number(ts.as_nanos() as f64 / 1e9)
            }
        },
    }
}

/// `HH:MM:SS[.f]` (HA's timer `remaining`), `D days, HH:MM:SS`-free forms, or humantime (`5m 30s`); seconds.
fn duration_seconds(text: &str) -> Option<f64> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() == 3 || parts.len() == 2 {
        let mut total = 0.0;
        for (i, p) in parts.iter().enumerate() {
            let v: f64 = p.trim().parse().ok()?;
            if v < 0.0 || (i > 0 && v >= 60.0) {
                return None;
            }
            total = total * 60.0 + v;
        }
        return Some(total);
    }
    if let Ok(f) = text.parse::<f64>() {
        return f.is_finite().then_some(f);
    }
    humantime::parse_duration(text)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// A Jinja result as JSON; `None` for undefined and none (no value to set).
fn jinja_to_json(v: &Value) -> Option<serde_json::Value> {
    use minijinja::value::ValueKind;
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => None,
        ValueKind::Bool => Some(serde_json::Value::Bool(v.is_true())),
        ValueKind::Number => {
            if v.is_integer()
                && let Some(i) = v.as_i64()
            {
                return Some(serde_json::Value::from(i));
            }
            f64::try_from(v.clone())
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(serde_json::Value::Number)
        }
        ValueKind::String => v.as_str().map(|s| serde_json::Value::String(s.to_string())),
        // Lists and maps are written as their text.
        _ => Some(serde_json::Value::String(v.to_string())),
    }
}

#[cfg(test)]
mod tests;
