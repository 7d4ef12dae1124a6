//! `retention apply` against a real `influxd`: the first run creates the policies and
//! continuous queries `[retention]` asks for, a second run changes nothing, and a
//! changed configuration gives exactly the changes it implies.

mod support;

use std::process::Command;

use ha_ingestor::config::Config;
use ha_ingestor::schema::influxql::InfluxQl;
use ha_ingestor::schema::retention::{self, Change};
use serde_json::Value;
use support::influxd::Influxd;

fn config_text(url: &str, raw_keep: &str, domains: &str) -> String {
    format!(
        r#"
[influxdb]
url = "{url}"
database = "home_assistant"

[retention]
raw_keep = "{raw_keep}"

[[retention.downsample]]
name = "sensors"
measurements = ["°C", "W"]
domains = [{domains}]
tiers = [{{ every = "5m", keep = "365d" }}, {{ every = "1h", keep = "inf" }}]

[[retention.downsample]]
name = "everything"
tiers = [{{ every = "1h", keep = "inf" }}]
"#
    )
}

fn load(dir: &std::path::Path, text: &str) -> (std::path::PathBuf, Config) {
    let path = dir.join("retention.toml");
    std::fs::write(&path, text).expect("write config");
    let cfg = Config::load(&path).expect("config is valid");
    (path, cfg)
}

fn apply_cli(config: &std::path::Path, yes: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    cmd.args(["retention", "apply", "--config"]).arg(config);
    if yes {
        cmd.arg("--yes");
    }
    let out = cmd.output().expect("run ha-ingestor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// name → (duration, query) rows of a SHOW statement's first series.
async fn rows(influx: &Influxd, q: &str, key: &str, val: &str) -> Vec<(String, String)> {
    let json = influx.query(q).await;
    let mut out = Vec::new();
    for s in json["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let cols: Vec<&str> = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let (k, v) = (
            cols.iter().position(|c| *c == key).unwrap(),
            cols.iter().position(|c| *c == val).unwrap(),
        );
        for r in s["values"].as_array().cloned().unwrap_or_default() {
            let text = |x: &Value| x.as_str().map(str::to_string).unwrap_or(x.to_string());
            out.push((text(&r[k]), text(&r[v])));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn apply_is_idempotent_and_shows_changes_first() {
    let influx = Influxd::start("home_assistant").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, cfg) = load(dir.path(), &config_text(&influx.url(), "30d", "\"sensor\""));

    // Without --yes: the difference is shown and nothing changes.
    let text = apply_cli(&path, false);
    assert!(
        text.contains("+ retention policy ds_5m_365d: keep 365d"),
        "{text}"
    );
    assert!(
        text.contains("~ retention policy autogen: keep forever → 30d"),
        "{text}"
    );
    assert!(text.contains("dry run"), "{text}");
    let policies = rows(
        &influx,
        "SHOW RETENTION POLICIES ON home_assistant",
        "name",
        "duration",
    )
    .await;
    assert_eq!(policies, [("autogen".to_string(), "0s".to_string())]);

    // --yes: everything is created.
    let text = apply_cli(&path, true);
    assert!(text.contains("applied 6 changes"), "{text}");
    let policies = rows(
        &influx,
        "SHOW RETENTION POLICIES ON home_assistant",
        "name",
        "duration",
    )
    .await;
    assert_eq!(
        policies,
        [
            ("autogen".to_string(), "720h0m0s".to_string()),
            ("ds_1h_inf".to_string(), "0s".to_string()),
            ("ds_5m_365d".to_string(), "8760h0m0s".to_string()),
        ]
    );
    let cqs = rows(&influx, "SHOW CONTINUOUS QUERIES", "name", "query").await;
    let names: Vec<&str> = cqs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["everything_1h", "sensors_1h", "sensors_5m"]);
    let sensors_5m = &cqs[2].1;
    assert!(
        sensors_5m.contains("INTO home_assistant.ds_5m_365d.:MEASUREMENT"),
        "{sensors_5m}"
    );
    assert!(sensors_5m.contains("domain = 'sensor'"), "{sensors_5m}");
    assert!(sensors_5m.contains("GROUP BY time(5m), *"), "{sensors_5m}");

    // Second run: nothing to change, through the library and the command.
    let db = InfluxQl::new(cfg.influxdb.as_ref().unwrap()).unwrap();
    let diff = retention::diff(&db, &cfg.retention, "autogen")
        .await
        .unwrap();
    assert!(diff.changes.is_empty(), "{}", diff.to_text());
    assert_eq!(diff.unchanged.len(), 6);
    let status = retention::status(&db, &cfg.retention, "autogen")
        .await
        .unwrap();
    assert_eq!((status.wanted, status.pending), (6, 0));
    let text = apply_cli(&path, true);
    assert!(text.contains("nothing to change"), "{text}");
    let after = rows(&influx, "SHOW CONTINUOUS QUERIES", "name", "query").await;
    assert_eq!(after, cqs, "the second run left every query as it was");

    // A changed config: exactly the implied changes, and then in sync again.
    let (path, cfg) = load(
        dir.path(),
        &config_text(&influx.url(), "40d", "\"sensor\", \"climate\""),
    );
    let diff = retention::diff(&db, &cfg.retention, "autogen")
        .await
        .unwrap();
    let kinds: Vec<String> = diff
        .changes
        .iter()
        .map(|c| match c {
            Change::AlterPolicy { name, .. } => format!("alter {name}"),
            Change::ReplaceQuery { name, .. } => format!("replace {name}"),
            Change::CreatePolicy { name, .. } => format!("create {name}"),
            Change::CreateQuery { name, .. } => format!("create query {name}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["alter autogen", "replace sensors_5m", "replace sensors_1h"]
    );
    apply_cli(&path, true);
    let status = retention::status(&db, &cfg.retention, "autogen")
        .await
        .unwrap();
    assert_eq!(status.pending, 0);
    let cqs = rows(&influx, "SHOW CONTINUOUS QUERIES", "name", "query").await;
    assert!(cqs[2].1.contains("domain = 'climate'"), "{}", cqs[2].1);
}
