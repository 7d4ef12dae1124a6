//! `[filter]`: which events are kept. HA's include/exclude lists as a gate, then an
//! ordered chain of named rules, each with its match, transform steps and rate shaping.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One side (include or exclude) of HA's entity filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityFilterConfig {
    /// Domains (`sensor`, `light`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Exact entity ids.
    #[serde(default)]
    pub entities: Vec<String>,
    /// `fnmatch`-style globs over the entity id (`sensor.*_power`).
    #[serde(default)]
    pub entity_globs: Vec<String>,
    /// Event types (exact) for events other than `state_changed`.
    #[serde(default)]
    pub event_types: Vec<String>,
}

/// Which events are kept: HA's include/exclude lists as a gate, then an ordered rule chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// What to keep (HA semantics; evaluated before the rules).
    #[serde(default)]
    pub include: EntityFilterConfig,
    /// What to drop (HA semantics; evaluated before the rules).
    #[serde(default)]
    pub exclude: EntityFilterConfig,
    /// The decision when no rule matches.
    #[serde(default)]
    pub default: FilterAction,
    /// Ordered rules; the first whose match holds decides.
    #[serde(default)]
    pub rules: Vec<FilterRuleConfig>,
    /// IANA zone of `time` matches (`Europe/Berlin`); unset: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// What a rule (or the default) does with an event.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// Keep the event.
    #[default]
    Include,
    /// Drop the event.
    Exclude,
    /// Apply the rule's `transform` steps, then go on down the chain (rules only, not the default).
    Transform,
}

/// What a rule does when its expression fails at run time for one event.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The rule does not match; the event goes on down the chain (kept unless something later drops it).
    #[default]
    Skip,
    /// Keep the event now.
    Keep,
    /// Drop the event now.
    Drop,
}

/// One named rule of the chain: `{ name, action, match, on_error }`.
///
/// Deserialised through a table so that an unknown or mistyped key is
/// reported with the rule's name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(try_from = "toml::Table")]
pub struct FilterRuleConfig {
    /// Unique name: used in messages and as the `rule` metric label.
    pub name: String,
    /// `include` or `exclude`.
    pub action: FilterAction,
    /// Conditions, all of which must hold (an empty match holds for every event).
    #[serde(rename = "match", default)]
    pub matches: RuleMatchConfig,
    /// What a failing expression does.
    #[serde(default)]
    pub on_error: OnError,
    /// Steps applied in order when the rule matches (`action` `transform`, or `include`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<TransformStepConfig>,
    /// Per-entity rate shaping of the events this rule keeps or transforms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateConfig>,
}

/// Per-entity rate shaping: dedup, deadband, throttle and heartbeat; each optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Drop an event whose state and attributes equal the entity's last written ones within this window.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub dedup: Option<Duration>,
    /// Drop a numeric state closer than this to the last written one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// Drop a numeric state within this percentage of the last written one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband_percent: Option<f64>,
    /// At most one point per entity per interval.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub throttle: Option<Duration>,
    /// What a throttled interval writes: its last event, or the min, max or mean of its states.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Re-write the last value after this long without a new point, tagged `heartbeat=true`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat: Option<Duration>,
}

/// What one throttled interval writes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The last event of the interval.
    #[default]
    Last,
    /// The smallest numeric state (on the last event).
    Min,
    /// The largest numeric state (on the last event).
    Max,
    /// The mean of the numeric states (on the last event).
    Mean,
}

impl FilterRuleConfig {
    /// Whether the rule's events may be written (`include` or `transform`), so shaping them means something.
    pub fn keep_or_transform(&self) -> bool {
        self.action != FilterAction::Exclude
    }
}

/// The typed fields of a rule, read after its name is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFields {
    name: String,
    action: FilterAction,
    #[serde(rename = "match", default)]
    matches: RuleMatchConfig,
    #[serde(default)]
    on_error: OnError,
    #[serde(default)]
    transform: Vec<TransformStepConfig>,
    #[serde(default)]
    rate: Option<RateConfig>,
}

/// One transform step: exactly one operation key (`rename`, `drop_attributes`, `keep_attributes`,
/// `measurement`, `tags`, `computed_tags`, `convert`, `compute`, `map`) and its options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransformStepConfig {
    /// Renames attributes: `{ old = "new" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<BTreeMap<String, String>>,
    /// Removes the attributes matching these globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_attributes: Option<Vec<String>>,
    /// Keeps only the attributes matching these globs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_attributes: Option<Vec<String>>,
    /// Sets the point's measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<String>,
    /// Adds static tags (they win over every other tag of the same key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Adds tags computed by Jinja expressions: `{ room = "attributes.area | default('none')" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_tags: Option<BTreeMap<String, String>>,
    /// Converts a value's type: the target, `state` or `attributes.<name>`; with `to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convert: Option<String>,
    /// The type `convert` converts to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ConvertTo>,
    /// Sets a value from a Jinja expression: the target, `state` or `attributes.<name>`; with `expression`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    /// The expression `compute` evaluates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Maps values one to one: the target, `state` or `attributes.<name>`; with `values`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    /// The table `map` looks the current value (as text) up in; values not listed stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeMap<String, serde_json::Value>>,
    /// When `convert`, `compute` or `computed_tags` fails for an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<StepOnError>,
    /// Renames members of an event's `data` (events other than `state_changed`): `{ old = "new" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_data: Option<BTreeMap<String, String>>,
    /// Removes the members of an event's `data` matching these globs (events other than `state_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_data: Option<Vec<String>>,
    /// Keeps only the members of an event's `data` matching these globs (events other than `state_changed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_data: Option<Vec<String>>,
}

/// The types `convert` knows.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConvertTo {
    /// A float (`"21.5"` → 21.5).
    Float,
    /// A whole number (`"12"` → 12; `"12.5"` fails).
    Int,
    /// `true`/`false` (`on`, `yes`, `1`, `open`, `home` …; state: `1`/`0`).
    Bool,
    /// Seconds, from `HH:MM:SS[.f]`, `"5m 30s"` or a number of seconds.
    Duration,
    /// Seconds since the epoch, from RFC 3339 text or a number.
    Timestamp,
    /// Text (numbers and booleans as their JSON text).
    String,
}

/// What a failing `convert`, `compute` or `computed_tags` step does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepOnError {
    /// Leave the value (or tag) as it was; the event goes on.
    #[default]
    Keep,
    /// Remove the attribute (or leave the tag out); not for the state.
    Remove,
    /// Drop the event.
    Drop,
}

impl TryFrom<toml::Table> for FilterRuleConfig {
    type Error = String;

    fn try_from(table: toml::Table) -> Result<Self, String> {
        let name = match table.get("name") {
            Some(toml::Value::String(name)) => name.clone(),
            _ => return Err("filter.rules: every rule needs a name (a string)".to_string()),
        };
        let fields = RuleFields::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("filter rule {name:?}: {}", e.to_string().trim()))?;
        Ok(FilterRuleConfig {
            name: fields.name,
            action: fields.action,
            matches: fields.matches,
            on_error: fields.on_error,
            transform: fields.transform,
            rate: fields.rate,
        })
    }
}

/// The conditions of a rule; every one given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleMatchConfig {
    /// Event types, exact or glob (`call_*`); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_type: Vec<String>,
    /// Entity domains; any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain: Vec<String>,
    /// Globs and regexes over the entity id; any may match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityMatchConfig>,
    /// Source ids (`homeassistant`, `simulator`, `mqtt:<name>`); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<String>,
    /// Attribute tests; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attribute: Vec<AttributeMatchConfig>,
    /// A test of the state value and of how it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateMatchConfig>,
    /// A Jinja expression (minijinja) that must be true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// A time-of-day window and weekdays on the wall clock of a time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeMatchConfig>,
}

/// A time-of-day window and/or weekdays, tested on the event's `time_fired` in a zone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeMatchConfig {
    /// From this local time on (`HH:MM[:SS]`, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Until this local time (exclusive); earlier than `after`: the window crosses midnight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Local weekdays (`mon` … `sun`); empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<String>,
    /// IANA zone for this rule; unset: `filter.time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// Entity ids by glob or regex: one compiled set each.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityMatchConfig {
    /// Globs over the entity id (`sensor.*_linkquality`); an id without wildcards matches exactly.
    #[serde(default)]
    pub glob: Vec<String>,
    /// Regexes searched in the entity id (anchor with `^…$` for a whole match).
    #[serde(default)]
    pub regex: Vec<String>,
}

/// Which state of a change an attribute test reads.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StateSide {
    /// The new state.
    #[default]
    New,
    /// The state before the change.
    Old,
}

/// Tests on one attribute; all given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatchConfig {
    /// The attribute's key.
    pub name: String,
    /// Present (`true`) or absent (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exists: Option<bool>,
    /// Equal to this value (numbers compare numerically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<serde_json::Value>,
    /// Equal to one of these values.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Numeric value above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// Numeric value at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// Numeric value below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// Numeric value at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// A regex searched in the value (strings, or the JSON text of numbers and booleans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Read the new state (default) or the old one.
    #[serde(default)]
    pub on: StateSide,
}

/// Tests on the state value; all given must hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateMatchConfig {
    /// The state string equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// The state string is one of these.
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    /// The state as a number is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<f64>,
    /// The state as a number is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gte: Option<f64>,
    /// The state as a number is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lt: Option<f64>,
    /// The state as a number is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lte: Option<f64>,
    /// `true`: the state string differs from the old state's (or there is no old state); `false`: it is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// `true`: same state string as before, different attributes; `false`: anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes_only_changed: Option<bool>,
}
