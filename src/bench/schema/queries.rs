//! The dashboard queries, each written the idiomatic way for each layout, and
//! their answers put in a form that compares across layouts.

use std::time::Duration;

use serde_json::Value;

use super::tiers::{route, tier_policies};
use super::{DAY_NS, DB, END_NS};

/// The dashboard queries, by name.
pub const QUERIES: [&str; 6] = [
    "last value of one sensor",
    "5-min mean of one sensor, 24 h",
    "5-min mean of one sensor, 7 d",
    "all lights' states, 24 h",
    "energy per day (all meters), 30 d",
    "top 10 entities by changes, 30 d",
];

/// What the data is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// HA's layout, raw points.
    Homeassistant,
    /// The optimized layout, raw points.
    Optimized,
    /// The optimized layout, reading the tier [`route`] picks.
    Tiers,
}

pub(super) const LAYOUTS: [Layout; 3] = [Layout::Homeassistant, Layout::Optimized, Layout::Tiers];

/// Query `i`'s range and bucket (`None`: whole range); `None` for queries that are not aggregates.
fn shape(i: usize, days: u32) -> Option<(Duration, Option<Duration>)> {
    let day = Duration::from_secs(86_400);
    let five = Duration::from_secs(300);
    match i {
        1 => Some((day, Some(five))),
        2 => Some((day * 7, Some(five))),
        4 => Some((day * days, Some(day))),
        5 => Some((day * days, None)),
        _ => None,
    }
}

/// The policy query `i` reads in the tiered layout (`None`: raw points).
pub(super) fn tier_of(i: usize, days: u32) -> Option<String> {
    let tiers = tier_policies();
    let widths: Vec<Duration> = tiers.iter().map(|(e, _)| *e).collect();
    let (range, interval) = shape(i, days)?;
    let every = route(range, interval, &widths)?;
    tiers.into_iter().find(|(e, _)| *e == every).map(|(_, n)| n)
}

/// The InfluxQL of query `i` for `layout`, over the history ending at [`END_NS`].
pub(super) fn query_text(i: usize, layout: Layout, days: u32) -> String {
    let since = |d: i64| format!("time >= {} AND time < {END_NS}", END_NS - d * DAY_NS);
    let all = i64::from(days);
    if layout == Layout::Tiers
        && let Some(rp) = tier_of(i, days)
    {
        let from = |m: &str| format!("\"{DB}\".\"{rp}\".{m}");
        match i {
            // Buckets as wide as the tier's: each stored point is the bucket's
            // mean, stamped at the bucket's start like `GROUP BY time(5m)`, so
            // the panel reads them as they are. (Wider buckets would need the
            // exact mean of means, `sum("value_sum") / sum("value_count")`.)
            1 | 2 => {
                return format!(
                    "SELECT \"value\" AS \"mean\" FROM {} WHERE \"entity_id\" = 'sensor.temperature_0' AND {}",
                    from("\"sensor__temperature\""),
                    since(if i == 1 { 1 } else { 7 })
                );
            }
            // A day's spread is the largest hourly max minus the smallest hourly min.
            4 => {
                return format!(
                    "SELECT sum(\"used\") FROM (SELECT max(\"value_max\") - min(\"value_min\") AS \"used\" FROM {} WHERE {} GROUP BY time(1d), \"entity_id\") WHERE {} GROUP BY time(1d) fill(none)",
                    from("\"sensor__energy\""),
                    since(all),
                    since(all)
                );
            }
            5 => {
                return format!(
                    "SELECT sum(\"value_count\"), sum(\"state_count\") FROM {} WHERE {} GROUP BY \"entity_id\"",
                    from("/.*/"),
                    since(all)
                );
            }
            _ => {}
        }
    }
    let ha = layout == Layout::Homeassistant;
    let (temp_m, temp_id) = if ha {
        ("\"°C\"", "'temperature_0'")
    } else {
        ("\"sensor__temperature\"", "'sensor.temperature_0'")
    };
    match i {
        0 => format!("SELECT last(\"value\") FROM {temp_m} WHERE \"entity_id\" = {temp_id}"),
        1 | 2 => format!(
            "SELECT mean(\"value\") FROM {temp_m} WHERE \"entity_id\" = {temp_id} AND {} GROUP BY time(5m) fill(none)",
            since(if i == 1 { 1 } else { 7 })
        ),
        3 if ha => format!("SELECT \"state\" FROM /^light\\./ WHERE {}", since(1)),
        3 => format!(
            "SELECT \"state\" FROM \"light\" WHERE {} GROUP BY \"entity_id\"",
            since(1)
        ),
        4 => format!(
            "SELECT sum(\"used\") FROM (SELECT spread(\"value\") AS \"used\" FROM {} WHERE {} GROUP BY time(1d), \"entity_id\") WHERE {} GROUP BY time(1d) fill(none)",
            if ha { "\"kWh\"" } else { "\"sensor__energy\"" },
            since(all),
            since(all)
        ),
        _ => format!(
            "SELECT count(\"value\"), count(\"state\") FROM /.*/ WHERE {} GROUP BY \"entity_id\"",
            since(all)
        ),
    }
}

/// A `count()` over the fields, sources and range query `i` reads in `layout`:
/// how many stored values it has to decode.
pub(super) fn values_read_text(i: usize, layout: Layout, days: u32) -> Option<String> {
    let since = |d: i64| format!("time >= {} AND time < {END_NS}", END_NS - d * DAY_NS);
    let all = i64::from(days);
    let ha = layout == Layout::Homeassistant;
    let tier = match layout {
        Layout::Tiers => tier_of(i, days),
        _ => None,
    };
    let from = |m: &str| match &tier {
        Some(rp) => format!("\"{DB}\".\"{rp}\".{m}"),
        None => m.to_string(),
    };
    Some(match i {
        1 | 2 => {
            let (m, id) = if ha {
                ("\"°C\"", "'temperature_0'")
            } else {
                ("\"sensor__temperature\"", "'sensor.temperature_0'")
            };
            format!(
                "SELECT count(\"value\") FROM {} WHERE \"entity_id\" = {id} AND {}",
                from(m),
                since(if i == 1 { 1 } else { 7 })
            )
        }
        3 if ha => format!(
            "SELECT count(\"state\") FROM /^light\\./ WHERE {}",
            since(1)
        ),
        3 => format!("SELECT count(\"state\") FROM \"light\" WHERE {}", since(1)),
        4 if tier.is_some() => format!(
            "SELECT count(\"value_max\"), count(\"value_min\") FROM {} WHERE {}",
            from("\"sensor__energy\""),
            since(all)
        ),
        4 => format!(
            "SELECT count(\"value\") FROM {} WHERE {}",
            if ha { "\"kWh\"" } else { "\"sensor__energy\"" },
            since(all)
        ),
        5 if tier.is_some() => format!(
            "SELECT count(\"value_count\"), count(\"state_count\") FROM {} WHERE {}",
            from("/.*/"),
            since(all)
        ),
        5 => format!(
            "SELECT count(\"value\"), count(\"state\") FROM /.*/ WHERE {}",
            since(all)
        ),
        _ => return None,
    })
}

/// The sum of every count in a reply.
pub(super) fn sum_of_counts(reply: &Value) -> u64 {
    series_of(reply)
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        .flat_map(|row| {
            row.as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .skip(1)
        })
        .filter_map(|v| v.as_u64())
        .sum()
}

pub(super) fn series_of(reply: &Value) -> &[Value] {
    reply
        .pointer("/results/0/series")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Rows of a reply: values over every series; for the top-10 query, the number of entities ranked.
pub(super) fn rows_of(i: usize, layout: Layout, reply: &Value) -> usize {
    if i != 5 {
        return values_in(reply);
    }
    top_entities(layout, series_of(reply)).len()
}

/// An entity's name without its domain: HA's layout tags `light_0`, names
/// measurements `light.light_0`; the optimized layout tags `light.light_0`.
fn object_id(name: &str) -> &str {
    name.split_once('.').map_or(name, |(_, o)| o)
}

/// The ten entities with the most points. In HA's layout a point has `value`,
/// `state` or both (on/off), so an entity's count is the larger of the two; in
/// the optimized layout exactly one, so it is their sum.
fn top_entities(layout: Layout, series: &[Value]) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for s in series {
        let name = object_id(
            s.pointer("/tags/entity_id")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
        .to_string();
        for row in s["values"].as_array().into_iter().flatten() {
            let v = row.get(1).and_then(Value::as_u64).unwrap_or(0);
            let st = row.get(2).and_then(Value::as_u64).unwrap_or(0);
            let n = if layout == Layout::Homeassistant {
                v.max(st)
            } else {
                v + st
            };
            counts.push((name.clone(), n));
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(10);
    counts
}

/// One row of an answer in a form comparable across layouts: entity (empty
/// for single-series answers), time, then the values.
type Row = (String, i64, Vec<Value>);

/// The answer of query `i` in a form comparable across layouts.
pub(super) fn canonical(i: usize, layout: Layout, reply: &Value) -> Vec<Row> {
    let series = series_of(reply);
    if i == 5 {
        return top_entities(layout, series)
            .into_iter()
            .map(|(name, n)| (name, 0, vec![Value::from(n)]))
            .collect();
    }
    let mut rows = Vec::new();
    for s in series {
        // All lights: HA's layout has one measurement per light, the optimized one a tag.
        let entity = if i == 3 {
            let name = if layout == Layout::Homeassistant {
                s["name"].as_str()
            } else {
                s.pointer("/tags/entity_id").and_then(Value::as_str)
            };
            object_id(name.unwrap_or("")).to_string()
        } else {
            String::new()
        };
        for row in s["values"].as_array().into_iter().flatten() {
            let Some(cells) = row.as_array() else {
                continue;
            };
            let time = cells.first().and_then(Value::as_i64).unwrap_or(0);
            rows.push((
                entity.clone(),
                time,
                cells.iter().skip(1).cloned().collect(),
            ));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    rows
}

/// Whether two values are the same answer: numbers within 1e-9 (relative), anything else exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

/// The first difference between two answers, if any.
pub(super) fn difference(a: &[Row], b: &[Row]) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} rows vs {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(b) {
        let equal = x.0 == y.0
            && x.1 == y.1
            && x.2.len() == y.2.len()
            && x.2.iter().zip(&y.2).all(|(p, q)| same_value(p, q));
        if !equal {
            return Some(format!("{x:?} vs {y:?}"));
        }
    }
    None
}

pub(super) fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Values over every series of a reply.
pub(super) fn values_in(reply: &Value) -> usize {
    series_of(reply)
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_entities_count_points_by_layout() {
        let series = vec![json!({
            "name": "light.a", "tags": {"entity_id": "a"},
            "columns": ["time", "count", "count_1"], "values": [[0, 5, 5]]
        })];
        assert_eq!(
            top_entities(Layout::Homeassistant, &series)[0],
            ("a".into(), 5)
        );
        let series = vec![json!({
            "name": "climate", "tags": {"entity_id": "climate.c"},
            "columns": ["time", "count", "count_1"], "values": [[0, 2, 3]]
        })];
        assert_eq!(top_entities(Layout::Optimized, &series)[0], ("c".into(), 5));
        assert_eq!(top_entities(Layout::Tiers, &series)[0].1, 5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn answers_compare_by_value_within_float_tolerance() {
        let a: Vec<Row> = vec![(String::new(), 1, vec![json!(0.1 + 0.2)])];
        let b: Vec<Row> = vec![(String::new(), 1, vec![json!(0.3)])];
        assert_eq!(difference(&a, &b), None);
        let c: Vec<Row> = vec![(String::new(), 1, vec![json!(0.31)])];
        assert!(difference(&a, &c).is_some());
        let d: Vec<Row> = vec![(String::new(), 2, vec![json!(0.3)])];
        assert!(difference(&b, &d).is_some(), "times differ");
        assert!(difference(&a, &[]).is_some(), "row counts differ");
        // The lights' timelines compare per entity whatever the layout names it by.
        let ha = json!({"results": [{"series": [
            {"name": "light.light_0", "columns": ["time", "state"], "values": [[5, "on"]]}
        ]}]});
        let opt = json!({"results": [{"series": [
            {"name": "light", "tags": {"entity_id": "light.light_0"}, "columns": ["time", "state"], "values": [[5, "on"]]}
        ]}]});
        assert_eq!(
            difference(
                &canonical(3, Layout::Homeassistant, &ha),
                &canonical(3, Layout::Optimized, &opt)
            ),
            None
        );
    }
}
