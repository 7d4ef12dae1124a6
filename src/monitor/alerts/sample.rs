//! Where rules read their values: the metrics registry, as `/metrics` renders it.
//!
//! Why the registry and not [`crate::monitor::Stats`]: every metric in
//! `docs/metrics.md` (with its labels) is there, so a user's rule can name any
//! of them, and a built-in rule means exactly what the equivalent Prometheus
//! rule means. Reading costs one render per tick, off the data path; the data
//! path pays nothing extra. `Stats` holds only unlabelled totals.

use std::collections::BTreeMap;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::alerts::Aggregate;

/// One series: a metric name, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Metric name (histograms and summaries: `_sum`, `_count`, `_bucket`, or the bare name for quantiles).
    pub name: String,
    /// Label pairs, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Every series at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    series: Vec<Series>,
}

impl Snapshot {
    /// A snapshot of the given series (tests build them by hand).
    pub fn new(series: Vec<Series>) -> Self {
        Snapshot { series }
    }

    /// Every series, in the order read.
    pub fn series(&self) -> &[Series] {
        &self.series
    }

    /// Parses Prometheus text exposition; lines it cannot read are skipped.
    pub fn parse(text: &str) -> Self {
        Snapshot {
            series: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// Combines the series named `name` whose labels include `labels`; `None` when none matches.
    pub fn select(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        aggregate: Aggregate,
    ) -> Option<f64> {
        let mut values = self
            .series
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(k).is_some_and(|have| have == v))
            })
            .map(|s| s.value);
        let first = values.next()?;
        Some(values.fold(first, |acc, v| match aggregate {
            Aggregate::Sum => acc + v,
            Aggregate::Max => acc.max(v),
            Aggregate::Min => acc.min(v),
        }))
    }

    /// The sum of the series named `name` with exactly one label `key` = `value` among their labels.
    pub fn sum_where(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        let labels = BTreeMap::from([(key.to_string(), value.to_string())]);
        self.select(name, &labels, Aggregate::Sum)
    }

    /// The sum of every series named `name`.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.select(name, &BTreeMap::new(), Aggregate::Sum)
    }
}

/// Gives the evaluator a [`Snapshot`] each tick.
pub trait Sampler: Send {
    /// The values now.
    fn sample(&mut self) -> Snapshot;
}

/// Reads the process-wide Prometheus registry (refreshing the process metrics first).
pub struct RegistrySampler {
    handle: Option<PrometheusHandle>,
    warned: bool,
}

impl RegistrySampler {
    /// Uses the recorder `/metrics` serves, installing it if nobody did yet.
    pub fn new() -> Self {
        RegistrySampler {
            handle: crate::monitor::http::prometheus(),
            warned: false,
        }
    }
}

impl Default for RegistrySampler {
    fn default() -> Self {
        RegistrySampler::new()
    }
}

impl Sampler for RegistrySampler {
    fn sample(&mut self) -> Snapshot {
        let Some(handle) = &self.handle else {
            if !self.warned {
                self.warned = true;
                tracing::warn!(
                    message = "No metrics recorder: alert rules see no values and stay inactive."
                );
            }
            return Snapshot::default();
        };
        crate::monitor::process::refresh();
        Snapshot::parse(&handle.render())
    }
}

/// Any closure returning snapshots is a sampler (tests drive the evaluator with one).
impl<F: FnMut() -> Snapshot + Send> Sampler for F {
    fn sample(&mut self) -> Snapshot {
        self()
    }
}

fn parse_line(line: &str) -> Option<Series> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], BTreeMap::new(), &line[space..])
        }
    };
    // A value, then optionally a timestamp.
    let value = rest.split_ascii_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads `k="v",…}` and returns the labels and the text after the `}`.
fn parse_labels(mut s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE ha_ingestor_source_received_events_total counter
ha_ingestor_source_received_events_total{source="homeassistant",event_type="state_changed"} 120
ha_ingestor_source_received_events_total{source="homeassistant",event_type="call_service"} 5
ha_ingestor_source_received_events_total{source="mqtt",event_type="message"} 7
ha_ingestor_buffer_bytes 1024
weird{l="a \"quoted\" \\ value, with }"} 3.5 1700000000
ha_ingestor_sink_batch_duration_seconds_bucket{sink="influxdb",le="+Inf"} 4
broken{l="x" 1
"#;

    #[test]
    fn exposition_text_is_read_and_selected() {
        let s = Snapshot::parse(TEXT);
        let recv = "ha_ingestor_source_received_events_total";
        assert_eq!(s.sum_where(recv, "source", "homeassistant"), Some(125.0));
        assert_eq!(s.sum(recv), Some(132.0));
        let ha = BTreeMap::from([("source".to_string(), "homeassistant".to_string())]);
        assert_eq!(s.select(recv, &ha, Aggregate::Max), Some(120.0));
        assert_eq!(s.select(recv, &ha, Aggregate::Min), Some(5.0));
        assert_eq!(s.sum("ha_ingestor_buffer_bytes"), Some(1024.0));
        assert_eq!(s.sum_where(recv, "source", "nothing"), None);
        let weird =
            BTreeMap::from([("l".to_string(), "a \"quoted\" \\ value, with }".to_string())]);
        assert_eq!(s.select("weird", &weird, Aggregate::Sum), Some(3.5));
        assert_eq!(
            s.sum_where(
                "ha_ingestor_sink_batch_duration_seconds_bucket",
                "le",
                "+Inf"
            ),
            Some(4.0)
        );
        assert_eq!(s.sum("broken"), None);
    }
}
