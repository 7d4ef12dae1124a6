//! `HA_INGESTOR_<SECTION>__<KEY>` environment overrides, applied to the parsed TOML
//! table before it is read as a [`Config`](super::Config).
//!
//! Which variables count: only a name with a double underscore after the prefix
//! (`HA_INGESTOR_INFLUXDB__BATCH_SIZE`) is an override. `HA_INGESTOR_CONFIG` is the
//! config path (clap reads it), and every other `HA_INGESTOR_*` variable — such as
//! the `HA_INGESTOR_SERVICE_HOST` / `HA_INGESTOR_PORT_9464_TCP…` that Kubernetes
//! injects for a Service named `ha-ingestor` — is ignored and named once at DEBUG,
//! without its value, so it can never stop start-up.
//!
//! How a value is read is decided by the type of the key it sets, not by how the
//! text looks: [`key_shape`] asks the config types themselves. It deserializes a
//! one-key table through a probing deserializer that records the first thing the
//! key's type asks for. A type that asks for a string (`String`, `Option<String>`,
//! paths, socket addresses, durations) gets the variable's text exactly as it is,
//! so a token `98765432`, a password `true` or a name `2024-01-01` stay text. Any
//! other type (numbers, booleans, lists, enums, `gzip`'s `true`/`false`/`"auto"`)
//! gets the text read as a TOML value, or as a plain string when it is not one
//! (`drop_oldest`). This works for keys absent from the file, since it looks at
//! types, not at the file's values.
//!
//! All overrides are applied before the table is read, so variables that
//! complete a section together work in any order; an error names the variables
//! under the key at fault and never the value of a secret key.

use std::cell::Cell;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

use super::{Config, ConfigError, HomeAssistantConfig};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "HA_INGESTOR_";

/// The variable that names the config file; read by the command line, never an override.
pub const CONFIG_VAR: &str = "HA_INGESTOR_CONFIG";

/// The variable that sets the async runtime's worker threads; read before the config, never an override.
pub const WORKER_THREADS_VAR: &str = "HA_INGESTOR_WORKER_THREADS";

/// Whether `var` is a `HA_INGESTOR_<SECTION>__<KEY>` override (the only ones applied).
pub(super) fn is_override(var: &str) -> bool {
    var.strip_prefix(ENV_PREFIX)
        .is_some_and(|path| path.contains("__"))
}

/// Whether `var` carries the prefix but is neither an override nor a process variable
/// (the config path, the worker threads): ignored.
pub(super) fn is_ignored(var: &str) -> bool {
    var.starts_with(ENV_PREFIX)
        && var != CONFIG_VAR
        && var != WORKER_THREADS_VAR
        && !is_override(var)
}

/// The lower-case key path an override names: `HA_INGESTOR_A__B_C` → `["a", "b_c"]`.
pub(super) fn key_path(var: &str) -> Vec<String> {
    var.get(ENV_PREFIX.len()..)
        .unwrap_or("")
        .split("__")
        .map(|k| k.to_ascii_lowercase())
        .collect()
}

/// Sets `HA_INGESTOR_A__B__C=value` at `a.b.c`, read as the key's type asks ([`key_shape`]).
pub(super) fn apply_env_override(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let keys = key_path(var);
    if keys.iter().any(|k| k.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "expected HA_INGESTOR_<SECTION>__<KEY> with double underscores between levels"
                .into(),
        });
    }
    let parsed = match key_shape(&keys) {
        Shape::Text => toml::Value::String(value.to_string()),
        Shape::Other | Shape::Unknown => parse_env_value(value),
    };
    let Some((last, parents)) = keys.split_last() else {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "names no key".into(),
        });
    };
    let mut cursor = table;
    for key in parents {
        let entry = cursor
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_string(),
                    message: format!("{key} is not a section"),
                });
            }
        };
    }
    cursor.insert(last.clone(), parsed);
    Ok(())
}

/// A variable's value as TOML (`250`, `false`, `["a"]`), else as the plain string.
fn parse_env_value(value: &str) -> toml::Value {
    let doc = format!("v = {value}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.to_string()),
    }
}

/// What the type of a config key asks its deserializer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// A string (`String`, paths, addresses, durations): the variable's text is taken as it is.
    Text,
    /// Anything else (numbers, booleans, lists, enums, either-or types): read as TOML.
    Other,
    /// No such key (the deserialization that follows names it).
    Unknown,
}

/// What the key at `path` (lower case, from the top of the file) is, asked of the config types.
pub(super) fn key_shape(path: &[String]) -> Shape {
    let hit = Cell::new(None);
    // `[homeassistant]` is read through a `toml::Value` (one table or an array of
    // tables), which the probe cannot see through: its keys are asked of the
    // section's own type.
    match path {
        [section, rest @ ..] if section == "homeassistant" && !rest.is_empty() => {
            let _ = HomeAssistantConfig::deserialize(Probe::new(rest, &hit));
        }
        _ => {
            let _ = Config::deserialize(Probe::new(path, &hit));
        }
    }
    hit.get().unwrap_or(Shape::Unknown)
}

/// A deserializer over a table holding only `path`, which records in `hit` what the
/// type at the end of the path first asks for. Errors (missing fields) are ignored.
struct Probe<'p> {
    path: &'p [String],
    hit: &'p Cell<Option<Shape>>,
}

impl<'p> Probe<'p> {
    fn new(path: &'p [String], hit: &'p Cell<Option<Shape>>) -> Self {
        Probe { path, hit }
    }

    /// Records the shape unless an earlier call already did.
    fn record(&self, shape: Shape) {
        if self.hit.get().is_none() {
            self.hit.set(Some(shape));
        }
    }

    /// The placeholder the probed type finally reads (its value does not matter).
    fn placeholder() -> toml::Value {
        toml::Value::String(String::new())
    }
}

/// Forwards the listed methods: at the end of the path they record [`Shape::Other`]
/// and read the placeholder; before it they present the next key as a one-entry map.
macro_rules! probe_other {
    ($($method:ident ( $($arg:ident : $ty:ty),* )),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
                $(let _ = $arg;)*
                if self.path.is_empty() {
                    self.record(Shape::Other);
                    Probe::placeholder().deserialize_any(visitor)
                } else {
                    visitor.visit_map(ProbeMap { probe: Some(self) })
                }
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = toml::de::Error;

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.path.is_empty() {
            self.record(Shape::Text);
            Probe::placeholder().deserialize_string(visitor)
        } else {
            visitor.visit_map(ProbeMap { probe: Some(self) })
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    probe_other!(
        deserialize_any(),
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_seq(),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(),
        deserialize_ignored_any(),
    );
}

/// The one-entry map `{ path[0] = <probe of the rest> }`.
struct ProbeMap<'p> {
    probe: Option<Probe<'p>>,
}

impl<'de> MapAccess<'de> for ProbeMap<'_> {
    type Error = toml::de::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match &self.probe {
            Some(probe) => match probe.path.first() {
                Some(key) => {
                    let key: de::value::StringDeserializer<toml::de::Error> =
                        key.clone().into_deserializer();
                    seed.deserialize(key).map(Some)
                }
                None => Ok(None),
            },
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        match self.probe.take() {
            Some(probe) => seed.deserialize(Probe::new(
                probe.path.get(1..).unwrap_or_default(),
                probe.hit,
            )),
            None => Err(de::Error::custom("no value")),
        }
    }
}
