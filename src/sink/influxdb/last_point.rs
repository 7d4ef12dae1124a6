//! The store's last point of one home (InfluxDB 1.x, InfluxQL), where a home's
//! new owner in a sharded fleet resumes from: the old owner's cursor is on
//! another volume, but what it wrote is in the store.
//!
//! The measurement set is open (one per unit or entity in the `homeassistant`
//! schema), so the query asks every measurement for its newest row of the home:
//!
//! ```sql
//! SELECT * FROM /.*/ WHERE "instance" = 'home' ORDER BY time DESC LIMIT 1
//! ```
//!
//! `LIMIT 1` applies per series of the result, i.e. per measurement, and the
//! largest `time` of the rows is the answer. `SELECT last(*)` looks cheaper but
//! on 1.x gives the time `0` whenever a measurement has more than one field
//! (each field's last value may have its own time), and `last(<field>)` needs a
//! field every measurement has. The cost grows with the number of measurements,
//! not of points: each series is read from its newest block backwards.
//! InfluxDB 2.x and 3.x serve the same statement on their v1 compatibility
//! `/query` (with a DBRP mapping of the bucket).

use std::time::Duration;

use serde_json::Value;

use super::{InfluxWriter, WriteError};
use crate::config::{InfluxApi, InfluxConfig};

/// The InfluxQL statement that finds the newest point whose `tag` is `instance`.
pub fn last_point_statement(cfg: &InfluxConfig, tag: &str, instance: &str) -> String {
    let from = match cfg.retention_policy.as_deref().filter(|rp| !rp.is_empty()) {
        Some(rp) => format!("{}./.*/", ident(rp)),
        None => "/.*/".to_string(),
    };
    format!(
        "SELECT * FROM {from} WHERE {} = {} ORDER BY time DESC LIMIT 1",
        ident(tag),
        literal(instance)
    )
}

/// The time (ns) of the newest point of the home whose `tag` (the instance tag) is
/// `instance`, in the database (v1) or bucket (v2) of `cfg`; `None` when it has none.
/// Asked with `writer`'s client (TLS, credentials, URL; built once for every home) and
/// bounded reply reading; `writer` is made from `cfg`.
pub async fn last_point_ns(
    writer: &InfluxWriter,
    cfg: &InfluxConfig,
    tag: &str,
    instance: &str,
) -> Result<Option<i64>, WriteError> {
    let database = match cfg.api {
        InfluxApi::V1 => cfg.database.clone(),
        InfluxApi::V2 => cfg.bucket.clone(),
    }
    .unwrap_or_default();
    let statement = last_point_statement(cfg, tag, instance);
    let url = super::client::with_query(
        &format!("{}/query", writer.base),
        &[
            ("db", database.as_str()),
            ("q", statement.as_str()),
            ("epoch", "ns"),
        ],
    )?;
    let reply = writer
        .authorize(writer.client.get(&url))
        // One row per measurement: slower than a write, far from a schema scan.
        .timeout(cfg.timeout.max(Duration::from_secs(30)))
        .send()
        .await
        .map_err(|e| writer.transport(&url, e))?;
    parse_newest(&super::client::json_reply(reply).await?)
}

/// The largest `time` of every row of every series of a `/query` reply (`epoch=ns`).
pub fn parse_newest(reply: &Value) -> Result<Option<i64>, WriteError> {
    let result = reply
        .get("results")
        .and_then(|r| r.get(0))
        .ok_or_else(|| WriteError::Protocol("no results".into()))?;
    if let Some(error) = result.get("error").and_then(Value::as_str) {
        return Err(WriteError::Status {
            code: 200,
            body: error.to_string(),
        });
    }
    let mut newest: Option<i64> = None;
    for series in result
        .get("series")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let Some(at) = series
            .get("columns")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().position(|c| c == "time"))
        else {
            continue;
        };
        for row in series
            .get("values")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(t) = row.get(at).and_then(Value::as_i64) {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
        }
    }
    Ok(newest)
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_row_of_all_measurements_is_the_answer() {
        // A reply of influxd 1.6.7 to the statement, trimmed.
        let body = br#"{"results":[{"statement_id":0,"series":[
            {"name":"\u00b0C","columns":["time","domain","value"],"values":[[1000000000000,"sensor",1]]},
            {"name":"light.x","columns":["time","domain","state"],"values":[[1000000009000,"light","on"]]},
            {"name":"ha_events","columns":["time","event_type"],"values":[[1000000002000,"foo"]]}]}]}"#;
        let json = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
        assert_eq!(parse_newest(&json(body)).unwrap(), Some(1_000_000_009_000));
        assert_eq!(
            parse_newest(&json(br#"{"results":[{"statement_id":0}]}"#)).unwrap(),
            None
        );
        assert!(
            parse_newest(&json(
                br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#
            ))
            .is_err()
        );
        assert!(parse_newest(&json(br#"{"error":"not a query reply"}"#)).is_err());
    }

    #[test]
    fn the_statement_quotes_the_tag_and_the_name_and_names_the_retention_policy() {
        let mut cfg = InfluxConfig::v1("http://127.0.0.1:8086", "db");
        assert_eq!(
            last_point_statement(&cfg, "instance", "o'brien"),
            r#"SELECT * FROM /.*/ WHERE "instance" = 'o\'brien' ORDER BY time DESC LIMIT 1"#
        );
        cfg.retention_policy = Some("week".into());
        assert!(
            last_point_statement(&cfg, "instance", "h")
                .starts_with(r#"SELECT * FROM "week"./.*/ "#)
        );
    }
}
