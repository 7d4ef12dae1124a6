//! `schema migrate` against a real `influxd`: history written in `homeassistant`
//! mode (by the real encoder and writer) is migrated into the `optimized` layout
//! of another database; the run is stopped after two chunks and resumed; every
//! point is accounted for, with the values the optimized encoder gives the
//! original events, and no point twice.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ha_ingestor::config::{InfluxConfig, SchemaConfig, SchemaMode};
use ha_ingestor::encode::Encoder;
use ha_ingestor::event::{
    Attributes, BusEvent, Context, EntityId, Event, EventKind, EventMeta, Origin, State, Timestamp,
};
use ha_ingestor::schema_tools::influxql::InfluxQl;
use ha_ingestor::schema_tools::migrate::{MigrateOptions, migrate};
use ha_ingestor::sink::influxdb::InfluxWriter;
use serde_json::{Value, json};
use support::influxd::Influxd;

/// 2026-01-05T00:00:00Z.
const START: i64 = 1_767_571_200_000_000_000;
const HOUR: i64 = 3_600_000_000_000;

fn state_changed(t: i64, entity: &str, state: &str, attrs: Value) -> Event {
    let ts = Timestamp(t);
    let id = EntityId::new(entity).expect("entity id");
    let attributes: Attributes = attrs
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Event::from_state(
        Arc::from("test"),
        State::at(id, state.to_string(), attributes, ts),
    )
}

/// Four days of a small home: attributes of every kind HA's layout mangles.
fn history() -> Vec<Event> {
    let mut events = Vec::new();
    for h in 0..96i64 {
        let t = START + h * HOUR;
        let temp = format!("{:.1}", -3.0 + (h % 17) as f64 * 0.7);
        events.push(state_changed(
            t,
            "sensor.outdoor_temperature",
            &temp,
            json!({"unit_of_measurement": "°C", "device_class": "temperature",
                   "friendly_name": "Outdoor", "state_class": "measurement"}),
        ));
        events.push(state_changed(
            t + 1_000,
            "sensor.energy",
            &format!("{}", 1000 + h * 3),
            json!({"unit_of_measurement": "kWh", "device_class": "energy", "friendly_name": "Energy"}),
        ));
        if h % 3 == 0 {
            events.push(state_changed(
                t + 2_000,
                "light.kitchen",
                if h % 2 == 0 { "on" } else { "off" },
                json!({"brightness": if h % 2 == 0 { json!(180 + h) } else { Value::Null }, "rgb_color": [254, 208, h], "friendly_name": "Kitchen",
                       "supported_features": 40, "color_mode": "rgb"}),
            ));
        }
        if h % 5 == 0 {
            events.push(state_changed(
                t + 3_000,
                "climate.living_room",
                "heat",
                json!({"current_temperature": 20.5, "temperature": 21, "hvac_action": "heating",
                       "preset_mode": "comfort", "friendly_name": "Living room"}),
            ));
            let mut data = serde_json::Map::new();
            data.insert("domain".into(), json!("light"));
            data.insert("service".into(), json!("turn_on"));
            events.push(Event {
                source: Arc::from("test"),
                time_fired: Timestamp(t + 4_000),
                origin: Origin::Local,
                context: Context::default(),
                kind: EventKind::Bus(BusEvent {
                    event_type: "call_service".into(),
                    data,
                }),
                meta: EventMeta::default(),
            });
        }
    }
    events
}

fn encode(cfg: &SchemaConfig, events: &[Event]) -> String {
    let mut enc = Encoder::new(cfg).expect("encoder");
    let mut out = String::new();
    for e in events {
        enc.encode(e, &mut out);
    }
    out
}

/// (measurement, tags, time) → fields, for every row of a database.
type Rows = BTreeMap<(String, BTreeMap<String, String>, i64), BTreeMap<String, Value>>;

async fn all_rows(db: &InfluxQl) -> Rows {
    let mut out = Rows::new();
    for s in db
        .query("SELECT * FROM /.*/ GROUP BY *")
        .await
        .expect("read rows")
    {
        let tags: BTreeMap<String, String> = s
            .tags
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for row in &s.values {
            let fields = s
                .columns
                .iter()
                .zip(row)
                .skip(1)
                .filter(|(_, v)| !v.is_null())
                .map(|(c, v)| (c.clone(), v.clone()))
                .collect();
            let key = (
                s.name.clone().unwrap_or_default(),
                tags.clone(),
                row[0].as_i64().expect("time"),
            );
            assert!(out.insert(key, fields).is_none(), "a row twice");
        }
    }
    out
}

fn same(a: &Rows, b: &Rows) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} rows vs {} rows", a.len(), b.len()));
    }
    for (k, fa) in a {
        let fb = b.get(k).ok_or_else(|| format!("missing {k:?}"))?;
        let keys_a: Vec<_> = fa.keys().collect();
        let keys_b: Vec<_> = fb.keys().collect();
        if keys_a != keys_b {
            return Err(format!("{k:?}: fields {keys_a:?} vs {keys_b:?}"));
        }
        for (f, va) in fa {
            let vb = &fb[f];
            let equal = match (va.as_f64(), vb.as_f64()) {
                (Some(x), Some(y)) => x == y,
                _ => va == vb,
            };
            if !equal {
                return Err(format!("{k:?}.{f}: {va} vs {vb}"));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn migrate_accounts_for_every_point_and_resumes_without_duplicates() {
    let influx = Influxd::start("home_assistant").await;
    influx.create_database("optimized").await;
    influx.create_database("dry").await;
    let events = history();

    // The source, written in homeassistant mode by the real encoder and writer.
    let ha_lines = encode(&SchemaConfig::default(), &events);
    let writer = InfluxWriter::new(&InfluxConfig::v1(influx.url(), "home_assistant")).unwrap();
    writer.write(&ha_lines).await.expect("write the source");
    let source = InfluxQl::new(&InfluxConfig::v1(influx.url(), "home_assistant")).unwrap();
    let source_rows = all_rows(&source).await;
    assert_eq!(source_rows.len(), ha_lines.lines().count());

    // What the optimized encoder gives the original events: the migration must equal it.
    let optimized = SchemaConfig {
        mode: SchemaMode::Optimized,
        ..SchemaConfig::default()
    };
    // Written to a database of its own, so InfluxDB parses it exactly as it parses the migration's.
    influx.create_database("expected").await;
    InfluxWriter::new(&InfluxConfig::v1(influx.url(), "expected"))
        .unwrap()
        .write(&encode(&optimized, &events))
        .await
        .expect("write the expected points");
    let expected = all_rows(&source.with_database("expected")).await;
    assert_eq!(
        expected.len(),
        source_rows.len(),
        "one optimized point per source point"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut opts = MigrateOptions {
        schema: optimized.clone(),
        to_database: "optimized".into(),
        to_retention_policy: None,
        state_file: dir.path().join("state.json"),
        chunk: Duration::from_secs(86_400),
        from: None,
        until: None,
        max_chunks: None,
        dry_run: true,
        progress: false,
    };

    // Dry run: everything read and encoded, nothing written, no progress saved.
    let dry = migrate(
        &source.with_database("home_assistant"),
        &MigrateOptions {
            to_database: "dry".into(),
            ..opts.clone()
        },
    )
    .await
    .expect("dry run");
    assert_eq!(dry.rows as usize, source_rows.len());
    assert_eq!(dry.points as usize, expected.len());
    assert!(all_rows(&source.with_database("dry")).await.is_empty());
    assert!(!opts.state_file.exists());

    // Interrupted after two of four chunks…
    opts.dry_run = false;
    opts.max_chunks = Some(2);
    let first = migrate(&source, &opts).await.expect("first run");
    assert_eq!(
        (first.chunks, first.chunks_left, first.mismatches),
        (2, 2, 0)
    );
    let target = source.with_database("optimized");
    let partial = all_rows(&target).await;
    assert!(!partial.is_empty() && partial.len() < expected.len());
    assert_eq!(partial.len() as u64, first.points);

    // …and resumed: the rest, nothing twice.
    opts.max_chunks = None;
    let second = migrate(&source, &opts).await.expect("resumed run");
    assert!(second.resumed);
    assert_eq!(
        (second.chunks, second.chunks_left, second.mismatches),
        (2, 0, 0)
    );
    assert_eq!(first.rows + second.rows, source_rows.len() as u64);
    assert_eq!(first.points + second.points, expected.len() as u64);
    assert!(second.skipped.is_empty(), "{:?}", second.skipped);
    let migrated = all_rows(&target).await;
    if let Err(diff) = same(&expected, &migrated) {
        panic!(
            "the migrated points differ from the optimized encoding of the original events: {diff}"
        );
    }
    // The source is untouched.
    assert_eq!(all_rows(&source).await, source_rows);

    // In place: the optimized points land next to the source, and a second pass
    // skips them as already migrated instead of migrating its own output.
    let in_place = MigrateOptions {
        to_database: "expected".into(),
        state_file: dir.path().join("in-place.json"),
        ..opts.clone()
    };
    let again = migrate(&source.with_database("expected"), &in_place)
        .await
        .expect("in-place run over optimized points");
    assert_eq!(again.points, 0);
    let events_rows = expected.keys().filter(|k| k.0 == "ha_events").count() as u64;
    assert_eq!(
        again.skipped.get("already_optimized").copied(),
        Some(expected.len() as u64 - events_rows)
    );

    // The command line: a dry run reports what it would do and writes nothing.
    let to_config = dir.path().join("optimized.toml");
    std::fs::write(&to_config, "[schema]\nmode = \"optimized\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args(["schema", "migrate", "--influx-url", &influx.url()])
        .args([
            "--database",
            "home_assistant",
            "--to-database",
            "dry",
            "--dry-run",
            "--quiet",
        ])
        .arg("--to-config")
        .arg(&to_config)
        .arg("--state")
        .arg(dir.path().join("cli-state.json"))
        .output()
        .expect("run ha-ingestor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{} points encoded", expected.len())),
        "{text}"
    );
    assert!(all_rows(&source.with_database("dry")).await.is_empty());

    // A finished migration run again does nothing.
    let third = migrate(&source, &opts).await.expect("third run");
    assert_eq!((third.chunks, third.points), (0, 0));
}
