//! Reading back what the `homeassistant` schema wrote, for end-to-end tests.

use std::collections::HashMap;

use serde_json::Value;

use super::Influxd;

/// Rows keyed by (measurement, entity_id tag, time ns).
pub type Rows = HashMap<(String, String, i64), HashMap<String, Value>>;

/// How a string field reads back: HA's client writes a newline as the two characters `\n`,
/// which InfluxDB keeps as they are.
pub fn stored(s: &str) -> Value {
    Value::String(s.replace('\n', "\\n"))
}

/// Python's `float()` for the states the simulator produces: plain decimal numbers, signs, exponents, nan/inf.
pub fn ha_float(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.contains('_') {
        return None;
    }
    t.parse::<f64>().ok()
}

/// HA's `value` field for a non-numeric state (its on/off style mapping).
pub fn state_as_number(s: &str) -> Option<f64> {
    match s {
        "on" | "locked" | "above_horizon" | "open" | "home" => Some(1.0),
        "off" | "unlocked" | "unknown" | "below_horizon" | "closed" | "not_home" => Some(0.0),
        _ => None,
    }
}

/// (measurement, entity_id tag, time ns) → column → value, for every row in the database.
pub async fn all_rows(influx: &Influxd) -> Rows {
    rows_of(influx, "SELECT * FROM /.*/").await
}

/// As [`all_rows`], for the rows of one home: those whose `instance` tag is `instance`.
pub async fn instance_rows(influx: &Influxd, instance: &str) -> Rows {
    rows_of(
        influx,
        &format!("SELECT * FROM /.*/ WHERE \"instance\" = '{instance}'"),
    )
    .await
}

/// The rows a `SELECT *` statement gives, keyed as [`all_rows`] keys them.
async fn rows_of(influx: &Influxd, statement: &str) -> Rows {
    let mut rows = HashMap::new();
    let result = influx.query(statement).await;
    let series = result["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in series {
        let name = s["name"].as_str().unwrap_or_default().to_string();
        let columns: Vec<String> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        for values in s["values"].as_array().unwrap() {
            let mut row = HashMap::new();
            for (c, v) in columns.iter().zip(values.as_array().unwrap()) {
                if !v.is_null() {
                    row.insert(c.clone(), v.clone());
                }
            }
            let time = row["time"].as_i64().expect("epoch=ns time");
            let entity = row
                .get("entity_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let key = (name.clone(), entity, time);
            assert!(
                rows.insert(key.clone(), row).is_none(),
                "duplicate row {key:?}"
            );
        }
    }
    rows
}

/// The (measurement, entity_id tag, time ns) of the point HA's schema gives for `state`.
pub fn state_key(state: &ha_ingestor::event::State) -> (String, String, i64) {
    let measurement = match state.attributes.get("unit_of_measurement") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => state.entity_id.as_str().to_string(),
    };
    (
        measurement,
        state.entity_id.object_id().to_string(),
        state.last_updated.as_nanos(),
    )
}

/// Checks the point HA's schema gives for `state` (measurement, tags, value or state field); whether its value was a hard one to encode.
pub fn assert_state_point(rows: &Rows, state: &ha_ingestor::event::State) -> bool {
    let key = state_key(state);
    let row = rows
        .get(&key)
        .unwrap_or_else(|| panic!("missing point {key:?} for state {:?}", state.state));
    assert_eq!(
        row["domain"],
        Value::String(state.entity_id.domain().to_string()),
        "{key:?}"
    );
    match ha_float(&state.state) {
        Some(v) if v.is_finite() => {
            assert_eq!(row["value"].as_f64(), Some(v), "value of {key:?}");
            assert!(!row.contains_key("state"), "{key:?} has a state field");
            false
        }
        Some(_) => {
            // Non-finite: InfluxDB cannot store it as a float; the state string is kept instead.
            assert_eq!(row["state"], stored(&state.state), "{key:?}");
            false
        }
        None => {
            assert_eq!(row["state"], stored(&state.state), "state of {key:?}");
            match state_as_number(&state.state) {
                Some(v) => assert_eq!(row["value"].as_f64(), Some(v), "{key:?}"),
                None => assert!(!row.contains_key("value"), "{key:?} has a value field"),
            }
            state.state.contains([' ', ',', '=', '"', '\\']) || !state.state.is_ascii()
        }
    }
}

/// Whether HA writes a point for this state (not unknown, unavailable or empty).
pub fn is_written(state: &ha_ingestor::event::State) -> bool {
    !matches!(state.state.as_str(), "unknown" | "unavailable" | "")
}
