//! `[schema]`: how events become points (HA's `influxdb` options under the same names,
//! and the `optimized` mode's keys).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::default_true;

/// The schema modes (`docs/schema.md`): HA-compatible or optimized for queries and cardinality.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// Byte-for-byte what HA's `influxdb` integration writes.
    #[default]
    Homeassistant,
    /// A schema built for query speed and bounded cardinality (see `docs/schema.md`).
    Optimized,
}

/// The type an allow-listed attribute is always written with in the `optimized` schema.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    /// A float field; numbers, booleans (1/0) and numeric text such as `-5.5 °C`.
    Float,
    /// A string field; other scalars as their JSON text, lists and objects as compact JSON.
    String,
    /// A boolean field; `true`/`false`, 1/0 and the texts `on`/`off`/`true`/`false`.
    Boolean,
}

/// `[schema.optimized]`: the keys only the `optimized` mode reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimizedSchemaConfig {
    /// Domains whose measurement is `<domain>__<device_class>` when the entity has a device class.
    #[serde(default = "default_split_by_device_class")]
    pub split_by_device_class: Vec<String>,
    /// Attributes written as fields, each always with this type; every other attribute is left out.
    #[serde(default = "default_optimized_attributes")]
    pub attributes: BTreeMap<String, AttributeType>,
}

fn default_split_by_device_class() -> Vec<String> {
    vec!["sensor".to_string()]
}

fn default_optimized_attributes() -> BTreeMap<String, AttributeType> {
    [
        ("brightness", AttributeType::Float),
        ("color_temp_kelvin", AttributeType::Float),
        ("current_humidity", AttributeType::Float),
        ("current_position", AttributeType::Float),
        ("current_temperature", AttributeType::Float),
        ("humidity", AttributeType::Float),
        ("hvac_action", AttributeType::String),
        ("preset_mode", AttributeType::String),
        ("target_temp_high", AttributeType::Float),
        ("target_temp_low", AttributeType::Float),
        ("temperature", AttributeType::Float),
    ]
    .into_iter()
    .map(|(k, t)| (k.to_string(), t))
    .collect()
}

impl Default for OptimizedSchemaConfig {
    fn default() -> Self {
        OptimizedSchemaConfig {
            split_by_device_class: default_split_by_device_class(),
            attributes: default_optimized_attributes(),
        }
    }
}

/// HA's `measurement_attr` choices.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementAttr {
    /// Measurement named by the unit (`°C`), HA's default.
    #[default]
    UnitOfMeasurement,
    /// `<domain>__<device_class>`, or the domain without a device class.
    DomainDeviceClass,
    /// The full entity id.
    EntityId,
}

/// Per-entity, per-domain or per-glob overrides, as HA's `component_config*`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ComponentOverride {
    /// Measurement for the matching entities.
    #[serde(default)]
    pub override_measurement: Option<String>,
    /// Attributes not written for the matching entities (merged with the global list).
    #[serde(default)]
    pub ignore_attributes: Vec<String>,
}

/// How events become points: HA's `influxdb` options under the same names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// `homeassistant` (drop-in compatible).
    #[serde(default)]
    pub mode: SchemaMode,
    /// Attribute that names the measurement.
    #[serde(default)]
    pub measurement_attr: MeasurementAttr,
    /// Measurement when `measurement_attr` gives none (HA: the entity id).
    #[serde(default)]
    pub default_measurement: Option<String>,
    /// One measurement for every state point.
    #[serde(default)]
    pub override_measurement: Option<String>,
    /// Static tags on every point; applied last, as in HA.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Attributes written as tags instead of fields.
    #[serde(default)]
    pub tags_attributes: Vec<String>,
    /// Attributes never written (raw key, `icon` not `icon_str`).
    #[serde(default)]
    pub ignore_attributes: Vec<String>,
    /// Overrides by exact entity id.
    #[serde(default)]
    pub component_config: BTreeMap<String, ComponentOverride>,
    /// Overrides by domain.
    #[serde(default)]
    pub component_config_domain: BTreeMap<String, ComponentOverride>,
    /// Overrides by entity-id glob, applied in key order.
    #[serde(default)]
    pub component_config_glob: BTreeMap<String, ComponentOverride>,
    /// Measurement for events other than `state_changed`.
    #[serde(default = "default_events_measurement")]
    pub events_measurement: String,
    /// Write events other than `state_changed` at all.
    #[serde(default = "default_true")]
    pub write_other_events: bool,
    /// Tag every point with the name of the source instance under this key (`instance` when several `[[homeassistant]]` are configured and this is unset).
    #[serde(default)]
    pub instance_tag: Option<String>,
    /// Keys of the `optimized` mode.
    #[serde(default)]
    pub optimized: OptimizedSchemaConfig,
}

fn default_events_measurement() -> String {
    "ha_events".to_string()
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            mode: SchemaMode::default(),
            measurement_attr: MeasurementAttr::default(),
            default_measurement: None,
            override_measurement: None,
            tags: BTreeMap::new(),
            tags_attributes: Vec::new(),
            ignore_attributes: Vec::new(),
            component_config: BTreeMap::new(),
            component_config_domain: BTreeMap::new(),
            component_config_glob: BTreeMap::new(),
            events_measurement: default_events_measurement(),
            write_other_events: true,
            instance_tag: None,
            optimized: OptimizedSchemaConfig::default(),
        }
    }
}
