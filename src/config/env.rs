//! `HA_INGESTOR_<SECTION>__<KEY>` environment overrides, applied to the parsed TOML
//! table before it is read as a [`Config`](super::Config).

use super::ConfigError;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "HA_INGESTOR_";

/// Sets `HA_INGESTOR_A__B__C=value` at `a.b.c`; the value is read as TOML when it parses, else as a string.
pub(super) fn apply_env_override(
    table: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<(), ConfigError> {
    let path = &var[ENV_PREFIX.len()..];
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "expected HA_INGESTOR_<SECTION>__<KEY> with double underscores between levels"
                .into(),
        });
    }
    let parsed = parse_env_value(value);
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
