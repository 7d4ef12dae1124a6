//! Reading back from VictoriaMetrics what the writer needs to know: the newest point of
//! one home, so that a new owner of that home (after a fleet's shards change) resumes
//! from the store's last point instead of a cursor on another replica's volume.
//!
//! VictoriaMetrics has no InfluxQL; its MetricsQL query API answers
//! `max(tlast_over_time({instance="home"}[window]))`: the time of the newest sample
//! over every series carrying that tag (each line-protocol field is a series there).
//! Two properties of VictoriaMetrics shape the answer:
//!
//! - it keeps milliseconds (`-influxTrimTimestamp=1ms`), so the time returned is a whole
//!   millisecond, at or up to 999 999 ns before the newest point written;
//! - a sample becomes searchable about a second after it was accepted, and an instant
//!   query is moved 30 s into the past (`-search.latencyOffset`) unless it says
//!   `nocache=1`, which this one does.

use std::time::Duration;

use super::{InfluxWriter, WriteError};
use crate::config::{InfluxApi, InfluxConfig};

/// How far past now the query looks, for points stamped ahead of this machine's clock.
const AHEAD_SECS: u64 = 60;

/// The label VictoriaMetrics gives the `db` of a v1 write (its `-influxDBLabel` default).
const DB_LABEL: &str = "db";

/// Newest point time (ns, a whole millisecond) among the points tagged `tag_key=instance`
/// that VictoriaMetrics holds from the last `lookback`; `None` when it holds none.
///
/// `writer` is made from `cfg`, the target's configuration (URL, credentials, TLS); with `api = "v1"` only
/// the points written to its `database` count (VictoriaMetrics keeps it as the `db` label).
/// `tag_key` is the schema's `instance_tag` (`instance` when several homes are configured).
pub async fn last_point_ns(
    writer: &InfluxWriter,
    cfg: &InfluxConfig,
    tag_key: &str,
    instance: &str,
    lookback: Duration,
) -> Result<Option<i64>, WriteError> {
    let mut selector = vec![label_matcher(tag_key, instance)?];
    if cfg.api == InfluxApi::V1
        && let Some(db) = cfg.database.as_deref()
    {
        selector.push(label_matcher(DB_LABEL, db)?);
    }
    // The query is asked at a minute past now (a point stamped a little ahead of this clock
    // still counts), so the window reaches that minute further back.
    let window = lookback.as_secs() + AHEAD_SECS;
    let query = format!(
        "max(tlast_over_time({{{}}}[{window}s]))",
        selector.join(",")
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| WriteError::Config(format!("system clock before 1970: {e}")))?
        .as_secs()
        + AHEAD_SECS;
    let url = super::client::with_query(
        &format!("{}/api/v1/query", writer.base),
        &[
            ("query", query.as_str()),
            ("time", now.to_string().as_str()),
            ("nocache", "1"),
        ],
    )?;
    let reply = writer
        .authorize(writer.client.get(&url))
        .send()
        .await
        .map_err(|e| writer.transport(&url, e))?;
    let json = super::client::json_reply(reply).await?;
    newest_from_reply(&json)
}

/// `key="value"` for a MetricsQL selector; `key` must be a label name VictoriaMetrics can be asked for.
fn label_matcher(key: &str, value: &str) -> Result<String, WriteError> {
    let valid = key
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if key.is_empty() || !valid {
        return Err(WriteError::Config(format!(
            "tag {key:?} cannot be selected in a VictoriaMetrics query (letters, digits and _ only)"
        )));
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    Ok(format!("{key}=\"{quoted}\""))
}

/// The newest time of an instant-query reply (`[seconds, "time in seconds"]`) in nanoseconds.
fn newest_from_reply(json: &serde_json::Value) -> Result<Option<i64>, WriteError> {
    if json["status"] != "success" {
        return Err(WriteError::Protocol(format!("query failed: {json:.300}")));
    }
    let Some(result) = json.pointer("/data/result").and_then(|r| r.as_array()) else {
        return Err(WriteError::Protocol(format!("no data.result: {json:.300}")));
    };
    let Some(first) = result.first() else {
        return Ok(None);
    };
    let seconds = first
        .pointer("/value/1")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .ok_or_else(|| WriteError::Protocol(format!("no time in {first:.300}")))?;
    // VictoriaMetrics keeps milliseconds: rounding to one removes the float's error.
    Ok(Some((seconds * 1000.0).round() as i64 * 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_quote_values_and_refuse_odd_keys() {
        assert_eq!(
            label_matcher("instance", r#"a "b" \c"#).unwrap(),
            r#"instance="a \"b\" \\c""#
        );
        assert!(label_matcher("in-stance", "x").is_err());
        assert!(label_matcher("1x", "x").is_err());
        assert!(label_matcher("", "x").is_err());
    }

    #[test]
    fn the_newest_time_is_read_to_the_millisecond() {
        let reply = serde_json::json!({"status":"success","data":{"resultType":"vector",
            "result":[{"metric":{},"value":[1796523202,"1796523199.952"]}]}});
        assert_eq!(
            newest_from_reply(&reply).unwrap(),
            Some(1_796_523_199_952_000_000)
        );
        let empty =
            serde_json::json!({"status":"success","data":{"resultType":"vector","result":[]}});
        assert_eq!(newest_from_reply(&empty).unwrap(), None);
        let error = serde_json::json!({"status":"error","error":"bad query"});
        assert!(newest_from_reply(&error).is_err());
    }
}
