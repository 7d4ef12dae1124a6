//! `retention apply` against a real `influxd`: the first run creates the policies and
//! continuous queries `[retention]` asks for, a second run changes nothing, and a
//! changed configuration gives exactly the changes it implies. `--backfill` fills
//! the tiers from raw points, resumes after an interruption, and every tier bucket
//! equals the aggregate of its raw points.

use crate::support;

use std::process::Command;

use ha_ingestor::config::Config;
use ha_ingestor::schema_tools::backfill::{self, BackfillOptions};
use ha_ingestor::schema_tools::influxql::InfluxQl;
use ha_ingestor::schema_tools::retention::{self, Change};
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
    // The default `data_dir` (where the audit log goes) is relative to the working directory.
    cmd.current_dir(config.parent().expect("config folder"));
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

const DAY_NS: i64 = 86_400_000_000_000;

fn tiers_text(url: &str) -> String {
    format!(
        r#"
[influxdb]
url = "{url}"
database = "home_assistant"

[retention]

[[retention.downsample]]
name = "numeric"
fields = ["value"]
aggregates = ["mean", "count", "sum", "min", "max", "first", "last"]
tiers = [{{ every = "5m", keep = "365d" }}, {{ every = "1h", keep = "inf" }}]

[[retention.downsample]]
name = "changes"
fields = ["state"]
aggregates = ["count"]
tiers = [{{ every = "1h", keep = "inf" }}]
"#
    )
}

#[tokio::test]
async fn tiers_with_aggregates_apply_once() {
    let influx = Influxd::start("home_assistant").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, _) = load(dir.path(), &tiers_text(&influx.url()));
    let text = apply_cli(&path, true);
    assert!(text.contains("applied 5 changes"), "{text}");
    let cqs = rows(&influx, "SHOW CONTINUOUS QUERIES", "name", "query").await;
    let names: Vec<&str> = cqs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["changes_1h", "numeric_1h", "numeric_5m"]);
    let numeric_5m = &cqs[2].1;
    for part in [
        "mean(value) AS value,",
        "count(value) AS value_count",
        "first(value) AS value_first",
        "INTO home_assistant.ds_5m_365d.:MEASUREMENT",
        "GROUP BY time(5m), * fill(none)",
    ] {
        assert!(numeric_5m.contains(part), "{part} missing: {numeric_5m}");
    }
    // Second run: InfluxDB's printout of each query matches the wanted one, so nothing changes.
    let text = apply_cli(&path, true);
    assert!(text.contains("nothing to change"), "{text}");
    assert!(text.contains("5 unchanged"), "{text}");
    let after = rows(&influx, "SHOW CONTINUOUS QUERIES", "name", "query").await;
    assert_eq!(after, cqs);
}

/// Writes three days of raw points ending at `end`: two temperature sensors every
/// 97 s with wandering values, one light switching every 100 min.
async fn write_history(db: &InfluxQl, end: i64) -> usize {
    let mut lines = String::new();
    let mut n = 0;
    let mut x: u64 = 42;
    let mut next = || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) as f64 / (1u64 << 31) as f64
    };
    let start = end - 3 * DAY_NS;
    for entity in ["sensor.t_0", "sensor.t_1"] {
        let mut level = 20.0;
        let mut t = start + 13_000_000_000;
        while t < end {
            level += next() - 0.5;
            lines += &format!(
                "sensor__temperature,domain=sensor,entity_id={entity} value={level:.2} {t}\n"
            );
            n += 1;
            t += 97_000_000_000;
        }
    }
    let mut t = start + 1_000_000_000;
    let mut on = false;
    while t < end {
        on = !on;
        lines += &format!(
            "light,domain=light,entity_id=light.l_0 state=\"{}\" {t}\n",
            if on { "on" } else { "off" }
        );
        n += 1;
        t += 6_000_000_000_000;
    }
    db.write("home_assistant", None, lines)
        .await
        .expect("write history");
    n
}

/// Rows of `q`, as (entity, time, values), sorted.
async fn answer(db: &InfluxQl, q: &str) -> Vec<(String, i64, Vec<Value>)> {
    let mut out = Vec::new();
    for s in db.query(q).await.expect(q) {
        let entity = s.tags.get("entity_id").cloned().unwrap_or_default();
        for row in &s.values {
            let time = row[0].as_i64().expect("time");
            out.push((entity.clone(), time, row[1..].to_vec()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    out
}

fn assert_same(raw: &[(String, i64, Vec<Value>)], tier: &[(String, i64, Vec<Value>)], what: &str) {
    assert!(!raw.is_empty(), "{what}: no raw rows");
    assert_eq!(raw.len(), tier.len(), "{what}: row counts");
    for (r, t) in raw.iter().zip(tier) {
        assert_eq!((&r.0, r.1), (&t.0, t.1), "{what}");
        for (a, b) in r.2.iter().zip(&t.2) {
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => assert!(
                    (x - y).abs() <= 1e-9 * x.abs().max(1.0),
                    "{what}: {r:?} vs {t:?}"
                ),
                _ => assert_eq!(a, b, "{what}: {r:?} vs {t:?}"),
            }
        }
    }
}

async fn tier_points(db: &InfluxQl) -> u64 {
    let mut n = 0;
    for q in [
        "SELECT count(value_count) FROM home_assistant.ds_5m_365d./.*/",
        "SELECT count(value_count), count(state_count) FROM home_assistant.ds_1h_inf./.*/",
    ] {
        for s in db.query(q).await.expect(q) {
            for row in &s.values {
                n += row[1..].iter().filter_map(Value::as_u64).sum::<u64>();
            }
        }
    }
    n
}

fn backfill_cli(
    config: &std::path::Path,
    state: &std::path::Path,
    from: &str,
    until: &str,
    max: Option<usize>,
) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"));
    cmd.args([
        "retention",
        "apply",
        "--yes",
        "--backfill",
        "--quiet",
        "--config",
    ])
    .arg(config)
    .arg("--state")
    .arg(state)
    .args(["--from", from, "--until", until])
    .current_dir(config.parent().expect("config folder"));
    if let Some(m) = max {
        cmd.args(["--max-chunks", &m.to_string()]);
    }
    let out = cmd.output().expect("run ha-ingestor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn backfill_resumes_and_tiers_equal_raw_aggregates() {
    let influx = Influxd::start("home_assistant").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, cfg) = load(dir.path(), &tiers_text(&influx.url()));
    let db = InfluxQl::new(cfg.influxdb.as_ref().unwrap()).unwrap();
    // Three whole days ending at the last midnight (tiers keep 365 days: recent data).
    let now = ha_ingestor::event::Timestamp::now().0;
    let end = now - now.rem_euclid(DAY_NS);
    let start = end - 3 * DAY_NS;
    let written = write_history(&db, end).await;
    assert!(written > 5_000);
    let (from, until) = (
        ha_ingestor::event::Timestamp(start).to_rfc3339(),
        ha_ingestor::event::Timestamp(end).to_rfc3339(),
    );
    let state = dir.path().join("backfill.state.json");

    // Interrupted after one chunk (a day), then resumed: three chunks in all.
    let text = backfill_cli(&path, &state, &from, &until, Some(1));
    assert!(text.contains("1 chunks (2 left)"), "{text}");
    assert!(state.is_file());
    let text = backfill_cli(&path, &state, &from, &until, None);
    assert!(
        text.contains("2 chunks (0 left)") && text.contains("resumed"),
        "{text}"
    );
    let text = backfill_cli(&path, &state, &from, &until, None);
    assert!(text.contains("0 chunks (0 left)"), "done is done: {text}");
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args([
            "retention",
            "apply",
            "--yes",
            "--backfill",
            "--json",
            "--config",
        ])
        .arg(&path)
        .arg("--state")
        .arg(&state)
        .args(["--from", &from, "--until", &until])
        .current_dir(dir.path())
        .output()
        .expect("run ha-ingestor");
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["backfill"]["chunks"], 0);
    assert_eq!(doc["backfill"]["resumed"], true);
    assert_eq!(doc["diff"]["changes"].as_array().map(Vec::len), Some(0));

    // Every tier bucket holds exactly what the raw points give for it, no bucket more.
    let range = format!("time >= {start} AND time < {end}");
    for (every, rp) in [("5m", "ds_5m_365d"), ("1h", "ds_1h_inf")] {
        let raw = answer(
            &db,
            &format!(
                "SELECT mean(value), count(value), sum(value), min(value), max(value), first(value), last(value) FROM home_assistant.autogen.sensor__temperature WHERE {range} GROUP BY time({every}), entity_id fill(none)"
            ),
        )
        .await;
        let tier = answer(
            &db,
            &format!(
                "SELECT value, value_count, value_sum, value_min, value_max, value_first, value_last FROM home_assistant.{rp}.sensor__temperature WHERE {range} GROUP BY entity_id"
            ),
        )
        .await;
        assert_same(&raw, &tier, rp);
    }
    let raw = answer(
        &db,
        &format!("SELECT count(state) FROM home_assistant.autogen.light WHERE {range} GROUP BY time(1h), entity_id fill(none)"),
    )
    .await;
    let tier = answer(
        &db,
        &format!("SELECT state_count FROM home_assistant.ds_1h_inf.light WHERE {range} GROUP BY entity_id"),
    )
    .await;
    assert_same(&raw, &tier, "changes");
    // The 5-minute tier has no mean-less buckets: the light has no value, so none of its buckets.
    let light_5m = db
        .query("SELECT count(*) FROM home_assistant.ds_5m_365d.light")
        .await
        .unwrap();
    assert!(light_5m.is_empty(), "{light_5m:?}");

    // A whole backfill again, without a state: the same points are rewritten, none added.
    let before = tier_points(&db).await;
    let r = backfill::backfill(
        &db,
        &cfg.retention,
        "autogen",
        &BackfillOptions {
            from: Some(start),
            until: Some(end),
            ..BackfillOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((r.chunks, r.chunks_left), (3, 0));
    assert!(r.points_written > 0);
    assert_eq!(tier_points(&db).await, before);

    // Without --from: from the start of the raw policy's oldest shard (a 7-day
    // shard group here), which holds the oldest point; again nothing is added.
    let r = backfill::backfill(
        &db,
        &cfg.retention,
        "autogen",
        &BackfillOptions {
            until: Some(end),
            ..BackfillOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(
        r.from <= start && r.from > start - 7 * DAY_NS,
        "{} vs {start}",
        r.from
    );
    assert_eq!(r.chunks as i64, (end - r.from) / DAY_NS);
    assert_eq!(tier_points(&db).await, before);
}
