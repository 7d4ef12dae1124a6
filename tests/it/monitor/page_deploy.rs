//! `deploy/prometheus` and `deploy/grafana`: the rules and dashboards name only metrics
//! that exist (`src/monitor/metrics.rs`), the built-in default alerts all have a Prometheus
//! twin, and every InfluxQL query of the dashboards runs on a real influxd holding what the
//! pipeline wrote from the simulator in the dashboard's schema mode (returning data where the
//! simulator has that kind of entity).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ha_ingestor::app;
use ha_ingestor::config::Config;
use ha_ingestor::monitor::metrics as names;
use ha_ingestor::simulator::{Simulator, SimulatorConfig};
use serde_json::Value;
use support::{Influxd, wait_for};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every metric name `src/monitor/metrics.rs` defines.
fn defined_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("src/monitor/metrics.rs")).expect("metrics.rs");
    let names: BTreeSet<String> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const"))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_string)
        .collect();
    assert!(names.len() > 20, "{names:?}");
    names
}

/// The `ha_ingestor_*` metric names an expression uses (histogram suffixes removed).
fn used_metrics(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("ha_ingestor_") {
        let start = i + at;
        // Not a recording rule's name (`ha_ingestor:…`) nor part of a longer identifier.
        let standalone = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if standalone {
            let name = &expr[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.push(base.to_string());
        }
        i = end;
    }
    out
}

fn check_names(what: &str, expr: &str, defined: &BTreeSet<String>) -> usize {
    let used = used_metrics(expr);
    for name in &used {
        let known = defined.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| defined.contains(&format!("{name}{s}")));
        assert!(
            known,
            "{what}: {name} is not in src/monitor/metrics.rs ({expr})"
        );
    }
    used.len()
}

#[test]
fn used_metrics_finds_names_and_strips_histogram_suffixes() {
    assert_eq!(
        used_metrics(
            "histogram_quantile(0.9, rate(ha_ingestor_sink_batch_duration_seconds_bucket[5m])) / ha_ingestor:x:rate5m + ha_ingestor_uptime_seconds"
        ),
        vec![
            "ha_ingestor_sink_batch_duration_seconds",
            "ha_ingestor_uptime_seconds"
        ]
    );
    let defined = defined_metrics();
    let result = std::panic::catch_unwind(|| {
        check_names("t", "rate(ha_ingestor_no_such_metric_total[1m])", &defined)
    });
    assert!(result.is_err(), "an unknown name is caught");
}

#[test]
fn prometheus_rules_cover_the_default_alerts_with_existing_metrics() {
    let path = root().join("deploy/prometheus/ha-ingestor-rules.yml");
    let text = std::fs::read_to_string(&path).expect("rules file");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules are YAML");
    let defined = defined_metrics();
    let mut alerts = BTreeMap::new();
    let mut records = BTreeSet::new();
    let mut used = 0;
    for group in doc["groups"].as_sequence().expect("groups") {
        let name = group["name"].as_str().expect("group name");
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            used += check_names(name, expr, &defined);
            if let Some(record) = rule["record"].as_str() {
                records.insert(record.to_string());
            } else {
                let alert = rule["alert"].as_str().expect("alert or record");
                let severity = rule["labels"]["severity"].as_str().expect("severity label");
                assert!(
                    ["critical", "warning"].contains(&severity),
                    "{alert}: {severity}"
                );
                assert!(
                    rule["annotations"]["summary"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{alert}"
                );
                if let Some(r#for) = rule["for"].as_str() {
                    humantime::parse_duration(r#for)
                        .unwrap_or_else(|e| panic!("{alert}: for {for}: {e}"));
                }
                alerts.insert(
                    alert.to_string(),
                    (expr.to_string(), rule["for"].as_str().map(str::to_string)),
                );
            }
        }
    }
    assert!(used >= 6, "the rules name metrics: {used}");
    // Recording rules the alerts use are defined here.
    for (alert, (expr, _)) in &alerts {
        for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if token.starts_with("ha_ingestor:") {
                assert!(
                    records.contains(token),
                    "{alert} uses {token}, not recorded"
                );
            }
        }
    }
    // The built-in defaults: HA disconnected > 2 min, no writes 5 min, buffer > 80 %,
    // dead letters rising, event-rate anomaly.
    let want = [
        (
            "HaIngestorHomeAssistantDisconnected",
            "ha_ingestor_source_connected",
            Some("2m"),
        ),
        ("HaIngestorNoWrites", "[5m]", None),
        ("HaIngestorBufferFilling", "> 0.8", Some("1m")),
        (
            "HaIngestorDeadLettersRising",
            "ha_ingestor_dead_letters_total",
            None,
        ),
        (
            "HaIngestorEventRateAnomaly",
            "stddev_over_time",
            Some("15m"),
        ),
    ];
    for (name, needle, r#for) in want {
        let (expr, got_for) = alerts
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {alerts:?}"));
        assert!(expr.contains(needle), "{name}: {expr}");
        assert_eq!(got_for.as_deref(), r#for, "{name}");
    }

    // promtool, where installed, checks the PromQL itself and runs the rules' unit tests.
    if let Ok(out) = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    {
        assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tests = root().join("deploy/prometheus/ha-ingestor-rules.test.yml");
        if tests.exists() {
            let out = std::process::Command::new("promtool")
                .arg("test")
                .arg("rules")
                .arg(&tests)
                .output()
                .expect("promtool runs");
            assert!(
                out.status.success(),
                "promtool test rules: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn dashboards() -> Vec<(String, Value)> {
    let dir = root().join("deploy/grafana/dashboards");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("dashboards dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            let text = std::fs::read_to_string(e.path()).expect("dashboard");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
            (e.file_name().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// (panel title, datasource type, query) for every target.
fn targets(dashboard: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let kind = t["datasource"]["type"]
                .as_str()
                .expect("datasource type")
                .to_string();
            let q = t["expr"]
                .as_str()
                .or_else(|| t["query"].as_str())
                .expect("expr or query");
            out.push((
                panel["title"].as_str().expect("title").to_string(),
                kind,
                q.to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboards_are_valid_and_name_existing_metrics() {
    let defined = defined_metrics();
    let boards = dashboards();
    let names: Vec<&str> = boards.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ha-ingestor.json",
            "home-assistant-optimized.json",
            "home-assistant.json"
        ]
    );
    let mut uids = BTreeSet::new();
    for (file, board) in &boards {
        assert!(
            uids.insert(board["uid"].as_str().expect("uid").to_string()),
            "{file}: uid twice"
        );
        let mut ids = BTreeSet::new();
        for panel in board["panels"].as_array().expect("panels") {
            assert!(
                ids.insert(panel["id"].as_u64().expect("id")),
                "{file}: panel id twice"
            );
            let pos = &panel["gridPos"];
            assert!(
                pos["x"].as_u64().expect("x") + pos["w"].as_u64().expect("w") <= 24,
                "{file}: {pos}"
            );
        }
        let targets = targets(board);
        assert!(targets.len() >= 8, "{file}: {} queries", targets.len());
        for (title, kind, q) in &targets {
            match kind.as_str() {
                "prometheus" => {
                    assert!(
                        check_names(&format!("{file}: {title}"), q, &defined) > 0,
                        "{file}: {title}: no metric in {q}"
                    );
                }
                "influxdb" => assert!(q.starts_with("SELECT "), "{file}: {title}: {q}"),
                other => panic!("{file}: {title}: data source {other}"),
            }
        }
    }
    // The ingestor's board shows the process metrics and the events by domain.
    let ingestor = &boards
        .iter()
        .find(|(n, _)| n == "ha-ingestor.json")
        .expect("ingestor board")
        .1;
    let shown: BTreeSet<String> = targets(ingestor)
        .iter()
        .flat_map(|(_, _, q)| used_metrics(q))
        .collect();
    for name in [
        names::PROCESS_CPU_SECONDS,
        names::PROCESS_RESIDENT_MEMORY,
        names::PROCESS_OPEN_FDS,
        names::PROCESS_MAX_FDS,
        names::PROCESS_THREADS,
        names::UPTIME,
        names::BUILD_INFO,
        names::PIPELINE_RECEIVED_EVENTS,
    ] {
        assert!(
            shown.contains(name),
            "ha-ingestor.json has no panel for {name}"
        );
    }
    // Provisioning files are YAML with what Grafana needs.
    let prov = root().join("deploy/grafana/provisioning");
    let ds: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(prov.join("datasources/ha-ingestor.yml")).expect("datasources"),
    )
    .expect("YAML");
    let kinds: BTreeSet<&str> = ds["datasources"]
        .as_sequence()
        .expect("list")
        .iter()
        .filter_map(|d| d["type"].as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["influxdb", "prometheus"]));
    let dash: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(prov.join("dashboards/ha-ingestor.yml")).expect("providers"),
    )
    .expect("YAML");
    assert_eq!(dash["providers"][0]["type"].as_str(), Some("file"));
}

/// Replaces Grafana's macros and the dashboard variables with concrete values.
fn concrete(query: &str, measurement: &str) -> String {
    query
        .replace("$timeFilter", "time > now() - 1h")
        .replace("$__interval", "10s")
        .replace("$measurement", &regex::escape(measurement))
        .replace("$entity", ".*")
}

/// A private influxd holding what the pipeline wrote from the simulator (60 entities of every
/// kind, 1500 events), with `schema` as the config's `[schema]` section.
async fn influxd_with_simulated_data(database: &str, schema: &str) -> Influxd {
    ha_ingestor::ensure_crypto_provider();
    let influx = Influxd::start(database).await;
    let token = "dash-token";
    let sim = Simulator::start(
        SimulatorConfig {
            entities: 60,
            rate: 400.0,
            token: token.into(),
            seed: 5,
            max_events: Some(1500),
            ..SimulatorConfig::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("dash.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[homeassistant]\nurl = \"{}\"\ntoken = \"{token}\"\n\
             [influxdb]\nurl = \"{}\"\ndatabase = \"{database}\"\nflush_interval = \"200ms\"\n\
             [monitor]\nenabled = false\n[schema]\n{schema}\n",
            dir.path().join("data"),
            sim.url(),
            influx.url(),
        ),
    )
    .expect("config");
    let cfg = Config::load(&config).expect("config loads");
    let running = app::start(&cfg).await.expect("starts");
    wait_for(
        "the simulator to finish",
        Duration::from_secs(30),
        || async { sim.finished().then_some(()) },
    )
    .await;
    let stats = running.stats();
    wait_for("every point written", Duration::from_secs(30), || {
        let stats = stats.clone();
        async move {
            let t = stats.totals();
            (t.encoded > 0 && t.written + t.dead_lettered >= t.encoded).then_some(())
        }
    })
    .await;
    running.stop().await;
    influx
}

/// Runs an InfluxQL query; asserts it ran without error; returns how many series it gave.
async fn series_of(influx: &Influxd, q: String) -> usize {
    let v = influx.query(&q).await;
    assert!(v["results"][0]["error"].is_null(), "{q}: {v}");
    v["results"][0]["series"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxql_dashboards_run_on_what_the_pipeline_wrote() {
    let influx = influxd_with_simulated_data("dashboards", "mode = \"homeassistant\"").await;

    let run = |q: String| series_of(&influx, q);
    let boards = dashboards();
    let ha = &boards
        .iter()
        .find(|(n, _)| n == "home-assistant.json")
        .expect("ha board")
        .1;
    let mut returned = BTreeMap::new();
    for (title, _, q) in targets(ha) {
        let series = run(concrete(&q, "°C")).await;
        *returned.entry(title).or_insert(0) += series;
    }
    // The simulator has temperature, humidity, power and energy sensors, lights, switches,
    // binary sensors and service calls: each of those panels shows data.
    for title in [
        "$measurement: value of $entity",
        "Temperatures (°C)",
        "Humidity and other percentages (%)",
        "Power (W)",
        "Energy (kWh), last value",
        "On/off (1 = on)",
        "Last state",
        "Events by type",
        "Service calls",
    ] {
        assert!(
            returned.get(title).copied().unwrap_or(0) > 0,
            "{title}: no data in {returned:?}"
        );
    }
    // The variables' queries run too.
    for var in ha["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = var["query"].as_str().filter(|q| q.starts_with("SHOW")) {
            assert!(run(concrete(q, "°C")).await > 0, "{q}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimized_dashboard_runs_on_what_the_optimized_schema_wrote() {
    let influx = influxd_with_simulated_data("optimized", "mode = \"optimized\"").await;
    let boards = dashboards();
    let opt = &boards
        .iter()
        .find(|(n, _)| n == "home-assistant-optimized.json")
        .expect("optimized board")
        .1;
    let mut returned = BTreeMap::new();
    for (title, _, q) in targets(opt) {
        let series = series_of(&influx, concrete(&q, "sensor__temperature")).await;
        *returned.entry(title).or_insert(0) += series;
    }
    // The simulator has every kind of entity these panels read: each shows data.
    for title in [
        "$measurement: value of $entity",
        "Temperature",
        "Humidity",
        "Power",
        "Energy, last value",
        "Light brightness",
        "Thermostats: current and target",
        "Last state of lights, switches and binary sensors",
        "Events by type",
        "Service calls",
    ] {
        assert!(
            returned.get(title).copied().unwrap_or(0) > 0,
            "{title}: no data in {returned:?}"
        );
    }
    for var in opt["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = var["query"].as_str().filter(|q| q.starts_with("SHOW")) {
            assert!(
                series_of(&influx, concrete(q, "sensor__temperature")).await > 0,
                "{q}"
            );
        }
    }
}
