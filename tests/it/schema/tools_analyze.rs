//! `schema analyze` and `schema plan` against a real `influxd` with planted problems:
//! a field whose type differs between two shards, a churning high-cardinality tag,
//! unit-named measurement sprawl and HA's garbage numeric twins. Each must be found,
//! and the plan must carry a change for each.

use crate::support;

use std::process::Command;

use ha_ingestor::config::InfluxConfig;
use ha_ingestor::schema_tools::analyze::{AnalyzeOptions, MeasurementKind, analyze};
use ha_ingestor::schema_tools::influxql::InfluxQl;
use ha_ingestor::schema_tools::plan::{Addresses, plan};
use support::influxd::Influxd;

/// 2026-01-05 and 2026-02-09 (Mondays): two different weekly shards.
const WEEK_A: i64 = 1_767_571_200_000_000_000;
const WEEK_B: i64 = 1_770_595_200_000_000_000;
const MINUTE: i64 = 60_000_000_000;

/// Lines as HA's integration writes them, with the planted problems.
fn planted() -> String {
    let mut lp = String::new();
    // Unit-named sprawl: five unit measurements, two entities each.
    for (unit, value) in [
        ("°C", 21.5),
        ("%", 40.0),
        ("W", 120.0),
        ("kWh", 3.2),
        ("lx", 300.0),
    ] {
        for (i, entity) in ["one", "two"].iter().enumerate() {
            let m = unit.replace(' ', "\\ ");
            lp += &format!(
                "{m},domain=sensor,entity_id={entity}_{i} value={value},friendly_name_str=\"{entity}\",device_class_str=\"{}\" {}\n",
                if i == 0 { "temperature" } else { "power" },
                WEEK_A + i as i64 * MINUTE
            );
        }
    }
    // A churning tag: a context id as a tag on W, 40 values for two entities.
    for i in 0..40 {
        let entity = if i % 2 == 0 { "plug_a" } else { "plug_b" };
        lp += &format!(
            "W,context_id=ctx{i:03},domain=sensor,entity_id={entity} value={i} {}\n",
            WEEK_A + (10 + i) * MINUTE
        );
    }
    // A type conflict: `battery` a float in one shard, a string in another.
    lp += &format!(
        "%,domain=sensor,entity_id=phone battery=80 {}\n",
        WEEK_A + MINUTE * 100
    );
    lp += &format!(
        "%,domain=sensor,entity_id=phone battery=81 {}\n",
        WEEK_A + MINUTE * 101
    );
    lp += &format!(
        "%,domain=sensor,entity_id=phone battery=\"charging\" {}\n",
        WEEK_B
    );
    // Garbage twins on an entity-named light: a colour list and a sign lost; one honest pair.
    for i in 0..3 {
        lp += &format!(
            "light.kitchen,domain=light,entity_id=kitchen state=\"on\",value=1,brightness=180,rgb_color_str=\"[254, 208, 0]\",rgb_color=2542080,offset_str=\"-5.5 °C\",offset=5.5,distance_str=\"12 km\",distance=12 {}\n",
            WEEK_A + (200 + i) * MINUTE
        );
    }
    lp += &format!(
        "switch.fan,domain=switch,entity_id=fan state=\"off\",value=0 {}\n",
        WEEK_A + 300 * MINUTE
    );
    // Events: more event types than entities is normal there, not churn.
    for (i, t) in ["call_service", "automation_triggered", "script_started"]
        .iter()
        .enumerate()
    {
        lp += &format!(
            "ha_events,entity_id=automation.a,event_type={t},origin=LOCAL data=\"{{}}\" {}\n",
            WEEK_A + (400 + i as i64) * MINUTE
        );
    }
    lp
}

#[tokio::test]
async fn analyze_finds_planted_problems_and_plan_addresses_each() {
    let influx = Influxd::start("home_assistant").await;
    let db = InfluxQl::new(&InfluxConfig::v1(influx.url(), "home_assistant")).expect("client");
    db.write("home_assistant", None, planted())
        .await
        .expect("write planted lines");

    let a = analyze(&db, &AnalyzeOptions::default())
        .await
        .expect("analyze");
    println!("{}", a.to_text());

    // Sprawl: five unit-named measurements, two entity-named ones.
    assert!(a.sprawl.is_sprawl);
    let mut units = a.sprawl.unit_named.clone();
    units.sort();
    assert_eq!(units, ["%", "W", "kWh", "lx", "°C"]);
    assert_eq!(a.sprawl.entity_named.len(), 2);
    assert_eq!(a.measurements.len(), 8);
    assert_eq!(a.sprawl.domains, ["light", "sensor", "switch"]);
    let w = a.measurements.iter().find(|m| m.name == "W").expect("W");
    assert_eq!(w.kind, MeasurementKind::Unit);
    assert_eq!(w.series, 2 + 40, "two plain series plus one per context id");
    assert_eq!(w.points, Some(42));

    // The churning tag, and no false alarm on identity tags.
    assert_eq!(
        a.high_cardinality_tags.len(),
        1,
        "{:?}",
        a.high_cardinality_tags
    );
    let h = &a.high_cardinality_tags[0];
    assert_eq!(
        (h.measurement.as_str(), h.key.as_str()),
        ("W", "context_id")
    );
    assert_eq!((h.values, h.entities), (40, 4));
    assert!(h.churning);

    // The type conflict, placed in its two shards.
    assert_eq!(a.type_conflicts.len(), 1, "{:?}", a.type_conflicts);
    let c = &a.type_conflicts[0];
    assert_eq!((c.measurement.as_str(), c.field.as_str()), ("%", "battery"));
    assert_eq!(c.types, ["float", "string"]);
    let placed: Vec<(&str, u64)> = c
        .shards
        .iter()
        .map(|s| (s.field_type.as_str(), s.points))
        .collect();
    assert_eq!(placed, [("float", 2), ("string", 1)]);
    assert_ne!(c.shards[0].shard, c.shards[1].shard);

    // Twins: garbage found for the list and the lost sign, not for the honest distance.
    let twin = |attr: &str| {
        a.str_twins
            .iter()
            .find(|t| t.attribute == attr)
            .unwrap_or_else(|| panic!("twin {attr} not found"))
    };
    assert_eq!(
        (twin("rgb_color").sampled, twin("rgb_color").garbage),
        (3, 3)
    );
    assert_eq!(twin("offset").garbage, 3);
    assert_eq!((twin("distance").sampled, twin("distance").garbage), (3, 0));
    assert!(
        a.costly_fields
            .iter()
            .any(|c| c.display_only.contains(&"friendly_name_str".to_string())),
        "friendly_name_str is display-only: {:?}",
        a.costly_fields
    );

    // The plan answers every finding.
    let p = plan(&a, "ha_events");
    println!("{}", p.to_text());
    let find = |what: Addresses| p.changes.iter().filter(move |c| c.addresses == what);
    let sprawl = find(Addresses::MeasurementSprawl)
        .next()
        .expect("sprawl change");
    assert!(sprawl.config.contains("optimized"));
    assert_eq!(
        a.sprawl.device_classes["sensor"],
        ["power", "temperature"],
        "sensors are split by device class"
    );
    assert_eq!(
        p.measurements_after, 5,
        "light, switch, two sensor device classes, and the events"
    );
    let tag = find(Addresses::HighCardinalityTag)
        .next()
        .expect("tag change");
    assert_eq!(tag.subject, "W.context_id");
    assert_eq!((tag.series_before, tag.series_after), (42, 4));
    let conflict = find(Addresses::TypeConflict)
        .next()
        .expect("conflict change");
    assert_eq!(conflict.subject, "%.battery");
    assert!(
        conflict.config.contains("battery = \"float\""),
        "{}",
        conflict.config
    );
    assert!(find(Addresses::StrTwins).next().is_some());
    assert!(find(Addresses::CostlyFields).next().is_some());
    assert!(p.series_after < p.series_before);

    // The snippet is valid TOML and pins what it promised.
    let snippet: toml::Table = toml::from_str(&p.toml).expect("the snippet is TOML");
    assert_eq!(snippet["schema"]["mode"].as_str(), Some("optimized"));
    let attrs = &snippet["schema"]["optimized"]["attributes"];
    assert_eq!(attrs["battery"].as_str(), Some("float"));
    assert_eq!(
        attrs["rgb_color"].as_str(),
        Some("string"),
        "garbage twin stays text"
    );
    assert_eq!(
        attrs["distance"].as_str(),
        Some("float"),
        "honest number is parsed"
    );
    assert!(
        attrs.get("friendly_name").is_none(),
        "display-only left out"
    );

    // The command line gives the same findings as JSON.
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args(["schema", "analyze", "--influx-url", &influx.url()])
        .args(["--database", "home_assistant", "--json"])
        .output()
        .expect("run ha-ingestor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(json["type_conflicts"][0]["field"], "battery");
    assert_eq!(json["high_cardinality_tags"][0]["key"], "context_id");
    let out = Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
        .args(["schema", "plan", "--influx-url", &influx.url()])
        .args(["--database", "home_assistant"])
        .output()
        .expect("run ha-ingestor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mode = \"optimized\""), "{text}");
    assert!(text.contains("W.context_id"), "{text}");
}
