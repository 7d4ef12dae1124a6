//! End to end into VictoriaMetrics: the simulator (a protocol-faithful Home Assistant)
//! → `ha-ingestor run` → a real VictoriaMetrics (Debian's 1.79), stopped and started
//! again in the middle of the stream, then read back through its export API and
//! compared point for point with what was sent.
//!
//! What was sent is recorded by a second `[[influxdb]]` target, a recorder that
//! accepts every write: each target receives the same lines (no measurement
//! routing), so the recorder holds exactly the lines VictoriaMetrics was sent. The
//! expectation applies VictoriaMetrics' documented mapping (docs/stores.md) to each
//! line: one sample per field, named `<measurement>_<field>`, labelled with the tags
//! and `db`, at the millisecond; integers and floats as they are, booleans 1/0,
//! strings that spell a number as that number, other strings 0, NaN not stored.

use crate::support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use ha_ingestor::bench::victoria::{Victoria, VictoriaError, VictoriaOptions};
use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use support::{Running, expected_points, wait_for};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// (metric name, labels) → time (ms) → the values sent for that sample.
type Samples = BTreeMap<(String, BTreeMap<String, String>), BTreeMap<i64, Vec<f64>>>;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_stream_reads_back_from_victoriametrics_point_for_point() {
    ha_ingestor::ensure_crypto_provider();
    let mut vm = match Victoria::start(&VictoriaOptions::default()).await {
        Ok(vm) => vm,
        Err(VictoriaError::NotFound) => {
            panic!("victoria-metrics not found: run scripts/test, which installs it")
        }
        Err(e) => panic!("victoria-metrics did not start: {e}"),
    };
    let recorder = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&recorder)
        .await;
    let token = "victoria-token";
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 60,
            rate: 500.0,
            token: token.into(),
            seed: 19,
            max_events: Some(2500),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("token");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {data:?}\n\
             [[homeassistant]]\nurl = \"{ha}\"\ntoken_file = \"token\"\ninitial_snapshot = false\n\
             [[influxdb]]\nname = \"victoria\"\nurl = \"{vm}\"\nflavor = \"victoriametrics\"\ndatabase = \"ha\"\n\
             flush_interval = \"100ms\"\nretry_min = \"100ms\"\nretry_max = \"500ms\"\n\
             [[influxdb]]\nname = \"sent\"\nurl = \"{rec}\"\nflavor = \"victoriametrics\"\ndatabase = \"ha\"\nflush_interval = \"100ms\"\n\
             [buffer]\nfsync_interval = \"100ms\"\n\
             [monitor]\nenabled = false\n",
            data = dir.path().join("data"),
            ha = sim.url(),
            vm = vm.url(),
            rec = recorder.uri(),
        ),
    )
    .expect("write config");
    let mut run = Running::launch(&config)
        .log(dir.path().join("run.log"))
        .spawn();

    // VictoriaMetrics goes away for part of the stream: the buffer holds its share, and
    // replays it once it is back, while the recorder keeps receiving.
    let sent_before = wait_for("points written before the outage", WAIT, || async {
        let n = sent_lines(&recorder).await.len();
        (n >= 500).then_some(n)
    })
    .await;
    vm.stop();
    wait_for("points made during the outage", WAIT, || async {
        (sent_lines(&recorder).await.len() >= sent_before + 600).then_some(())
    })
    .await;
    vm.restart().await.expect("victoria-metrics restarts");

    let want = wait_for("the whole stream sent", WAIT, || async {
        let want = expected_points(&sim.emitted());
        (sim.finished() && sent_lines(&recorder).await.len() >= want).then_some(want)
    })
    .await;
    let sent = sent_lines(&recorder).await;
    assert_eq!(sent.len(), want, "lines sent vs points the stream makes");
    let expected = expected_samples(&sent);
    let sample_count: usize = expected.values().map(BTreeMap::len).sum();

    // New series become searchable within about 10 s in VictoriaMetrics 1.79.
    let stored = wait_for("every sample in VictoriaMetrics", WAIT, || async {
        let stored = stored_samples(&vm).await;
        let n: usize = stored.values().map(BTreeMap::len).sum();
        (n >= sample_count).then_some(stored)
    })
    .await;
    let exit = run.stop().await;
    assert!(exit.success(), "run exited with {exit}");

    let mut checked = 0usize;
    for (series, samples) in &expected {
        let Some(got) = stored.get(series) else {
            panic!("series {series:?} not in VictoriaMetrics");
        };
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            samples.keys().collect::<Vec<_>>(),
            "sample times of {series:?}"
        );
        for (t, sent_values) in samples {
            let value = got[t];
            assert!(
                sent_values.iter().any(|v| same(*v, value)),
                "{series:?} at {t}: VictoriaMetrics holds {value}, sent {sent_values:?}"
            );
            checked += 1;
        }
    }
    assert_eq!(
        stored.len(),
        expected.len(),
        "series in VictoriaMetrics that were not sent: {:?}",
        stored
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert_eq!(checked, sample_count);
    // The stream carries numbers and strings (the schema writes a number as a number,
    // so numeric strings are only in the unit test below).
    let kinds = value_kinds(&sent);
    for kind in ["number", "string"] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} field in {kinds:?}"
        );
    }
    sim.shutdown().await;
}

/// The same value, allowing for VictoriaMetrics' own decimal parser (a last-bit difference).
fn same(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Every line the recorder received, in order.
async fn sent_lines(recorder: &MockServer) -> Vec<String> {
    recorder
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .flat_map(|r| {
            String::from_utf8_lossy(&r.body)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every sample VictoriaMetrics holds, keyed like [`expected_samples`].
async fn stored_samples(
    vm: &Victoria,
) -> HashMap<(String, BTreeMap<String, String>), BTreeMap<i64, f64>> {
    let mut out = HashMap::new();
    for s in vm.export(r#"{__name__=~".+"}"#).await.expect("export") {
        let mut labels: BTreeMap<String, String> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let name = labels.remove("__name__").unwrap_or_default();
        let samples = out.entry((name, labels)).or_insert_with(BTreeMap::new);
        for (t, v) in s.timestamps.iter().zip(&s.values) {
            assert!(
                samples.insert(*t, *v).is_none(),
                "two samples at {t}: deduplication is on"
            );
        }
    }
    out
}

/// One line split as VictoriaMetrics reads it: measurement, tags, (field key, raw value), time ns.
struct Line {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, String)>,
    time: i64,
}

/// VictoriaMetrics' unescaping of names and tag values: a backslash goes only before a space, comma, `=` or backslash.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, ' ' | ',' | '=' | '\\')
        {
            out.push(next);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

/// Splits `s` at unescaped `sep` outside double quotes (quotes count only when `quotes`).
fn split_unescaped(s: &str, sep: char, quotes: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut escaped, mut quoted) = (0, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if quotes && c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_line(line: &str) -> Line {
    let parts = split_unescaped(line, ' ', true);
    assert_eq!(
        parts.len(),
        3,
        "a line with measurement, fields and time: {line}"
    );
    let mut series = split_unescaped(parts[0], ',', false).into_iter();
    let measurement = unescape(series.next().unwrap_or_default());
    let tags = series
        .map(|kv| {
            let kv = split_unescaped(kv, '=', false);
            (unescape(kv[0]), unescape(kv[1]))
        })
        .collect();
    let fields = split_unescaped(parts[1], ',', true)
        .into_iter()
        .map(|kv| {
            let at = split_unescaped(kv, '=', true)[0].len();
            (unescape(&kv[..at]), kv[at + 1..].to_string())
        })
        .collect();
    Line {
        measurement,
        tags,
        fields,
        time: parts[2].parse().expect("a nanosecond time"),
    }
}

/// A decimal number as VictoriaMetrics 1.79 reads one: `-?digits[.digits][e[+-]digits]`, or an infinity.
fn vm_number(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let lower = body.trim_start_matches('+').to_ascii_lowercase();
    match lower.as_str() {
        "nan" => return Some(f64::NAN),
        "inf" | "infinity" if s.starts_with('-') => return Some(f64::NEG_INFINITY),
        "inf" | "infinity" => return Some(f64::INFINITY),
        _ => {}
    }
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok =
        exponent.is_none_or(|e| digits(e.trim_start_matches(['+', '-'])) && e.len() <= 4);
    (digits(int) && frac.is_none_or(digits) && exponent_ok)
        .then(|| s.parse::<f64>().ok())
        .flatten()
}

/// What VictoriaMetrics stores for one field value; `None`: nothing (NaN).
fn vm_value(raw: &str) -> Option<f64> {
    let v = if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        vm_number(inner).unwrap_or(0.0)
    } else if let Some(int) = raw.strip_suffix('i').or_else(|| raw.strip_suffix('u')) {
        int.parse::<i64>().expect("an integer field") as f64
    } else {
        match raw {
            "t" | "T" | "true" | "True" | "TRUE" => 1.0,
            "f" | "F" | "false" | "False" | "FALSE" => 0.0,
            _ => vm_number(raw).unwrap_or(0.0),
        }
    };
    (!v.is_nan()).then_some(v)
}

/// The samples VictoriaMetrics should hold for `lines` written to database `ha`.
fn expected_samples(lines: &[String]) -> Samples {
    let mut out = Samples::new();
    for text in lines {
        let line = parse_line(text);
        let mut labels: BTreeMap<String, String> = line
            .tags
            .into_iter()
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .collect();
        labels.insert("db".into(), "ha".into());
        for (key, raw) in line.fields {
            let Some(value) = vm_value(&raw) else {
                continue;
            };
            out.entry((format!("{}_{key}", line.measurement), labels.clone()))
                .or_default()
                .entry(line.time.div_euclid(1_000_000))
                .or_default()
                .push(value);
        }
    }
    out
}

/// How many field values of each kind `lines` carry (the test's own coverage check).
fn value_kinds(lines: &[String]) -> BTreeMap<&'static str, usize> {
    let mut kinds = BTreeMap::new();
    for text in lines {
        for (_, raw) in parse_line(text).fields {
            let kind = match raw.strip_prefix('"') {
                Some(s) if vm_number(s.trim_end_matches('"')).is_some() => "numeric string",
                Some(_) => "string",
                None => "number",
            };
            *kinds.entry(kind).or_insert(0) += 1;
        }
    }
    kinds
}

#[test]
fn values_are_mapped_as_victoriametrics_1_79_maps_them() {
    // Observed on victoria-metrics 1.79.5 (docs/stores.md).
    let cases: &[(&str, Option<f64>)] = &[
        ("21.5", Some(21.5)),
        ("3i", Some(3.0)),
        ("true", Some(1.0)),
        ("F", Some(0.0)),
        ("\"21.5\"", Some(21.5)),
        ("\"1e3\"", Some(1000.0)),
        ("\"on\"", Some(0.0)),
        ("\"\"", Some(0.0)),
        ("\"+5\"", Some(0.0)),
        ("\".5\"", Some(0.0)),
        ("\"5.\"", Some(0.0)),
        ("\" 2\"", Some(0.0)),
        ("\"1_000\"", Some(0.0)),
        ("\"inf\"", Some(f64::INFINITY)),
        ("\"-inf\"", Some(f64::NEG_INFINITY)),
        ("\"Infinity\"", Some(f64::INFINITY)),
        ("\"nan\"", None),
    ];
    for (raw, want) in cases {
        assert_eq!(vm_value(raw), *want, "{raw}");
    }
    let line = parse_line(
        r#"°C,domain=sensor,entity_id=a\ b value=1,friendly_name_str="x, \"y\" z" 1700000000123456789"#,
    );
    assert_eq!(line.measurement, "°C");
    assert_eq!(line.tags[1], ("entity_id".into(), "a b".into()));
    assert_eq!(line.fields[1].1, r#""x, \"y\" z""#);
    assert_eq!(line.time, 1_700_000_000_123_456_789);
}
