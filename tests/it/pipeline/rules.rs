//! The filter rule chain end to end: golden decisions on the recorded frames,
//! the decision cache against the uncached reference (proptest), and per-rule
//! metrics from the pipeline task.

use std::path::Path;
use std::sync::Arc;

use ha_ingestor::config::{Config, FilterConfig, SchemaConfig};
use ha_ingestor::event::{
    Attributes, BusEvent, Context, EntityId, Event, EventKind, LazyState, Origin, State,
    StateChanged, Timestamp,
};
use ha_ingestor::monitor::Stats;
use ha_ingestor::pipeline::Pipeline;
use ha_ingestor::pipeline::rules::{DecidedBy, RuleChain};
use ha_ingestor::source::homeassistant::decode::{ServerMessage, decode_frame};
use proptest::prelude::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn recorded_events() -> Vec<Event> {
    let text =
        std::fs::read_to_string(root().join("tests/data/fixtures/ha-ws-frames.jsonl")).unwrap();
    let source = Arc::from("homeassistant");
    let mut messages = Vec::new();
    let mut events = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        messages.clear();
        decode_frame(line, &source, &mut messages);
        for m in messages.drain(..) {
            if let Ok(ServerMessage::Event { event, .. }) = m {
                events.push(event);
            }
        }
    }
    events
}

fn golden_config() -> Config {
    let path = root().join("tests/data/rules/config.toml");
    Config::from_toml_with_env(&std::fs::read_to_string(&path).unwrap(), &path, &[]).unwrap()
}

fn describe(chain: &RuleChain, i: usize, event: &Event, keep: bool, by: DecidedBy) -> String {
    let names: Vec<&str> = chain.rule_names().collect();
    let by = match by {
        DecidedBy::Gate => "gate".to_string(),
        DecidedBy::Rule(r) => format!("rule:{}", names[r]),
        DecidedBy::RuleError(r) => format!("error:{}", names[r]),
        DecidedBy::Default => "default".to_string(),
    };
    let entity = event.entity_id().map_or("-", |e| e.as_str());
    let verdict = if keep { "keep" } else { "drop" };
    format!("{i} {} {entity} {verdict} {by}", event.event_type())
}

/// The chain agrees, event by event, with `oracle.py`'s independent reading of the rules.
#[test]
fn golden_decisions_on_recorded_frames() {
    let cfg = golden_config();
    let mut chain = RuleChain::new(&cfg.filter).unwrap();
    let events = recorded_events();
    assert_eq!(events.len(), 397);
    let mut actual = Vec::new();
    // Twice: the second pass is decided from the cache and must not differ.
    for pass in 0..2 {
        for (i, event) in events.iter().enumerate() {
            let d = chain.decide(event);
            let line = describe(&chain, i, event, d.keep, d.by);
            if pass == 0 {
                actual.push(line);
            } else {
                assert_eq!(line, actual[i], "cached decision differs");
            }
        }
    }
    let expected = std::fs::read_to_string(root().join("tests/data/rules/expected.txt")).unwrap();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(actual.len(), expected.len());
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(a, e);
    }
    // Every rule the fixture can reach was reached.
    let counts = chain.counts();
    assert_eq!(counts[0].matches, 2 * 24, "drop long texts");
    assert_eq!(counts[2].matches, 2 * 104, "sensors with a unit");
}

/// `check` builds the pipeline, so a bad expression in a config file is refused with the rule's name.
#[test]
fn pipeline_build_refuses_a_bad_rule() {
    let text = "[[filter.rules]]\nname = \"broken\"\naction = \"exclude\"\nmatch = { expression = \"state | float(0) >\" }\n";
    let cfg = Config::from_toml_with_env(text, Path::new("t.toml"), &[]).unwrap();
    let err = match Pipeline::new(&cfg.filter, &cfg.schema) {
        Ok(_) => panic!("a bad expression must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("\"broken\""), "{err}");
    assert!(err.contains("match.expression"), "{err}");
    let dup = "[[filter.rules]]\nname = \"a\"\naction = \"exclude\"\n[[filter.rules]]\nname = \"a\"\naction = \"include\"\n";
    let err = Config::from_toml_with_env(dup, Path::new("t.toml"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("two rules are named \"a\""), "{err}");
}

/// Two rules: a static one on lights and an expression on sensors.
const TWO_RULES: &str = r#"
    [[filter.rules]]
    name = "drop lights"
    action = "exclude"
    match = { domain = ["light"] }
    [[filter.rules]]
    name = "numeric"
    action = "include"
    match = { domain = ["sensor"], expression = "state | float > 1" }
"#;

/// Runs the pipeline task over `events` with a local metrics recorder; the rendered metrics and the points written.
fn run_pipeline_task(rules: &str, events: Vec<Event>, stats: Arc<Stats>) -> (String, usize) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let cfg: FilterConfig = toml::from_str::<Config>(rules).unwrap().filter;
    let pipeline = Pipeline::new(&cfg, &SchemaConfig::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let points = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let (tx, rx) = tokio::sync::mpsc::channel(events.len().max(1));
            let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(16);
            let task = tokio::spawn(pipeline.run(rx, out_tx, stats));
            for event in events {
                tx.send(event).await.unwrap();
            }
            drop(tx);
            let mut points = 0;
            while let Some(chunk) = out_rx.recv().await {
                points += chunk.points;
            }
            task.await.unwrap();
            points
        })
    });
    (handle.render(), points)
}

/// The pipeline task adds per-rule counts to the metrics once per batch.
#[test]
fn pipeline_task_reports_rule_matches_and_errors() {
    let stats = Arc::new(Stats::default());
    let events = [
        ("light.a", "on"),
        ("light.b", "off"),
        ("sensor.t", "5"),
        ("sensor.t", "n/a"),
    ]
    .into_iter()
    .map(|(id, state)| state_event(id, state, vec![], None))
    .collect();
    let (text, points) = run_pipeline_task(TWO_RULES, events, stats.clone());
    // sensor.t 5 (matched) and sensor.t n/a (error, on_error skip, default include).
    assert_eq!(points, 2);
    assert!(
        text.contains("ha_ingestor_filter_rule_matches_total{rule=\"drop lights\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("ha_ingestor_filter_rule_matches_total{rule=\"numeric\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("ha_ingestor_filter_rule_errors_total{rule=\"numeric\"} 1"),
        "{text}"
    );
    assert_eq!(stats.filtered.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// The per-rule evaluation time is sampled: one event in 64 has each rule it runs timed.
#[test]
fn pipeline_task_samples_rule_evaluation_time() {
    // 200 events: the 64th, 128th and 192nd are timed; all are sensors, so "numeric" runs.
    let events = (0..200)
        .map(|i| state_event("sensor.t", &(i % 7).to_string(), vec![], None))
        .collect();
    let (text, _) = run_pipeline_task(TWO_RULES, events, Arc::new(Stats::default()));
    assert!(
        text.contains("ha_ingestor_filter_rule_eval_seconds_count{rule=\"numeric\"} 3"),
        "{text}"
    );
    let static_count = text.lines().find_map(|l| {
        l.strip_prefix("ha_ingestor_filter_rule_eval_seconds_count{rule=\"drop lights\"} ")
    });
    assert!(
        static_count.is_none_or(|n| n == "0"),
        "a static rule is decided by the cache and never timed: {text}"
    );
}

fn state(entity: &str, value: &str, attributes: Vec<(String, serde_json::Value)>) -> State {
    State::at(
        EntityId::new(entity).unwrap(),
        value.to_string(),
        attributes.into_iter().collect::<Attributes>(),
        Timestamp::from_nanos(1_790_000_000_000_000_000),
    )
}

fn state_event(
    entity: &str,
    value: &str,
    attributes: Vec<(String, serde_json::Value)>,
    old: Option<(&str, Vec<(String, serde_json::Value)>)>,
) -> Event {
    Event {
        meta: Default::default(),
        source: Arc::from("homeassistant"),
        time_fired: Timestamp::from_nanos(1_795_725_887_219_127_000),
        origin: Origin::Local,
        context: Context::default(),
        kind: EventKind::StateChanged(Box::new(StateChanged {
            entity_id: EntityId::new(entity).unwrap(),
            old_state: old.map(|(v, a)| LazyState::from(state(entity, v, a))),
            new_state: Some(state(entity, value, attributes)),
        })),
    }
}

// ---- property test: the cache never changes a decision ----

const ENTITIES: [&str; 8] = [
    "sensor.kitchen_power",
    "sensor.plug_linkquality",
    "sensor.outdoor_temperature",
    "light.kitchen",
    "binary_sensor.door",
    "switch.plug_12",
    "automation.night",
    "person.anna",
];
const STATES: [&str; 8] = ["on", "off", "12.5", "-3", "0", "unknown", "abc", " 40 "];
const EVENT_TYPES: [&str; 4] = [
    "state_changed",
    "call_service",
    "automation_triggered",
    "state_changed",
];
const SOURCES: [&str; 2] = ["homeassistant", "simulator"];

/// Rule bodies covering every match kind, combined at random.
const MATCHES: [&str; 16] = [
    r#"{ domain = ["sensor"] }"#,
    r#"{ entity = { glob = ["sensor.*_linkquality", "light.*"] } }"#,
    r#"{ entity = { regex = ['^switch\.plug_\d+$'] } }"#,
    r#"{ event_type = ["call_*"] }"#,
    r#"{ source = ["simulator"] }"#,
    r#"{ attribute = [{ name = "unit_of_measurement", exists = true }] }"#,
    r#"{ attribute = [{ name = "device_class", in = ["power", "temperature"] }] }"#,
    r#"{ attribute = [{ name = "level", gt = 2, lte = 8 }] }"#,
    r#"{ attribute = [{ name = "level", equals = 3, on = "old" }] }"#,
    r#"{ state = { gt = 0 } }"#,
    r#"{ state = { in = ["on", "unknown"] } }"#,
    r#"{ state = { changed = true } }"#,
    r#"{ state = { attributes_only_changed = true } }"#,
    r#"{ domain = ["sensor", "light"], expression = "state | float > 1" }"#,
    r#"{ expression = "attributes.unit_of_measurement == 'W' or old_state.state == 'on'" }"#,
    r#"{}"#,
];

fn attributes_strategy() -> impl Strategy<Value = Vec<(String, serde_json::Value)>> {
    (
        prop::option::of(prop::sample::select(vec!["W", "°C", ""])),
        prop::option::of(prop::sample::select(vec!["power", "temperature", "door"])),
        prop::option::of(0i64..10),
    )
        .prop_map(|(unit, class, level)| {
            let mut a = Vec::new();
            if let Some(u) = unit {
                a.push(("unit_of_measurement".to_string(), serde_json::json!(u)));
            }
            if let Some(c) = class {
                a.push(("device_class".to_string(), serde_json::json!(c)));
            }
            if let Some(l) = level {
                a.push(("level".to_string(), serde_json::json!(l)));
            }
            a
        })
}

fn event_strategy() -> impl Strategy<Value = Event> {
    (
        prop::sample::select(EVENT_TYPES.to_vec()),
        prop::sample::select(ENTITIES.to_vec()),
        prop::sample::select(STATES.to_vec()),
        attributes_strategy(),
        prop::option::of((prop::sample::select(STATES.to_vec()), attributes_strategy())),
        prop::sample::select(SOURCES.to_vec()),
    )
        .prop_map(|(event_type, entity, value, attributes, old, source)| {
            let mut event = if event_type == "state_changed" {
                state_event(entity, value, attributes, old)
            } else {
                Event {
                    meta: Default::default(),
                    source: Arc::from("homeassistant"),
                    time_fired: Timestamp::from_nanos(1_795_725_887_219_127_000),
                    origin: Origin::Local,
                    context: Context::default(),
                    kind: EventKind::Bus(BusEvent {
                        event_type: event_type.to_string(),
                        data: serde_json::Map::new(),
                    }),
                }
            };
            event.source = Arc::from(source);
            event
        })
}

fn config_strategy() -> impl Strategy<Value = String> {
    let rule = (
        prop::sample::select(MATCHES.to_vec()),
        prop::bool::ANY,
        prop::sample::select(vec!["skip", "keep", "drop"]),
    );
    (
        prop::collection::vec(rule, 0..8),
        prop::bool::ANY,
        prop::sample::select(vec![
            "",
            "[exclude]\ndomains = [\"automation\"]\n",
            "[include]\ndomains = [\"sensor\", \"light\"]\nevent_types = [\"state_changed\", \"call_service\"]\n",
            "[exclude]\nentity_globs = [\"*_linkquality\"]\nevent_types = [\"automation_triggered\"]\n",
        ]),
    )
        .prop_map(|(rules, default_include, gate)| {
            let mut text = format!(
                "default = \"{}\"\n{gate}",
                if default_include { "include" } else { "exclude" }
            );
            for (i, (m, include, on_error)) in rules.iter().enumerate() {
                text.push_str(&format!(
                    "[[rules]]\nname = \"r{i}\"\naction = \"{}\"\non_error = \"{on_error}\"\nmatch = {m}\n",
                    if *include { "include" } else { "exclude" }
                ));
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// For any rule set and any sequence of events, the cached decision (and the
    /// per-rule counts) equal the uncached ones, also across cache evictions.
    #[test]
    fn cache_never_changes_a_decision(
        config in config_strategy(),
        events in prop::collection::vec(event_strategy(), 1..40),
        cache_limit in 1usize..8,
    ) {
        let cfg: FilterConfig = toml::from_str(&config).unwrap();
        let mut cached = RuleChain::new(&cfg).unwrap();
        cached.set_cache_limit(cache_limit);
        let mut reference = RuleChain::new(&cfg).unwrap();
        // Each event twice: the second time its plan may come from the cache.
        for event in events.iter().chain(events.iter()) {
            prop_assert_eq!(cached.decide(event), reference.decide_uncached(event), "{}", config);
        }
        prop_assert_eq!(cached.counts(), reference.counts());
    }
}

/// Every example config's filter chain and schema compile, as `check` would build them.
#[test]
fn every_example_builds_a_pipeline() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg: Config = toml::from_str(&text).unwrap();
        if let Err(e) = Pipeline::new(&cfg.filter, &cfg.schema) {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 3);
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ha-ingestor"))
}

fn json_output(args: &[&str]) -> serde_json::Value {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `bench rules` and `bench pipeline --config` run the example chain over the recorded frames.
#[test]
fn bench_rules_and_pipeline_with_a_config() {
    let frames = root().join("tests/data/fixtures/ha-ws-frames.jsonl");
    let config = root().join("examples/bench-rules.toml");
    let (frames, config) = (frames.to_str().unwrap(), config.to_str().unwrap());
    // (--rules, rules in the chain, events kept): one row per selection.
    for (selection, rules, kept) in [
        ("all", 20, 291),
        ("no-expressions", 18, 295),
        ("static", 10, 303),
    ] {
        let r = json_output(&[
            "bench",
            "rules",
            "--config",
            config,
            "--input",
            frames,
            "--seconds",
            "0.05",
            "--rules",
            selection,
            "--json",
        ]);
        assert_eq!(r["rules"], rules, "{selection}: {r}");
        assert_eq!(r["events"], 397, "{selection}: {r}");
        assert_eq!(r["kept"], kept, "{selection}: {r}");
        assert!(
            r["decisions_per_sec"].as_f64().unwrap() > 0.0,
            "{selection}: {r}"
        );
        let share = r["chain_share"].as_f64().unwrap();
        assert!(share > 0.0 && share < 1.0, "{selection}: {r}");
        // Linux has schedstat: the per-CPU-second figures are there.
        assert!(
            r["decisions_per_cpu_sec"].as_f64().unwrap() > 0.0,
            "{selection}: {r}"
        );
        // Sampled rule timing: one event in 64 has its dynamic rules timed; static ones never are.
        let samples = r["rule_time_samples_per_event"].as_f64().unwrap();
        if selection == "static" {
            assert_eq!(samples, 0.0, "{r}");
        } else {
            assert!(
                samples > 0.0 && samples < rules as f64 / 32.0,
                "{selection}: {r}"
            );
        }
    }
    let r = json_output(&[
        "bench",
        "pipeline",
        "--config",
        config,
        "--input",
        frames,
        "--seconds",
        "0.05",
        "--json",
    ]);
    assert!(
        r["input"].as_str().unwrap().contains("bench-rules.toml"),
        "{r}"
    );
    assert_eq!(r["decode_errors"], 0);
    // Whole passes over the 397 events: 289 points each with the config's chain, 387 without it.
    let (events, points) = (r["events"].as_u64().unwrap(), r["points"].as_u64().unwrap());
    assert_eq!(events % 397, 0, "{r}");
    assert_eq!(
        points,
        events / 397 * 289,
        "the config's filter applies: {r}"
    );
}

/// `check` reports a bad rule with its name and key and exits 2.
#[test]
fn check_names_the_bad_rule() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[filter.rules]]\nname = \"power\"\naction = \"include\"\nmatch = { entity = { regex = [\"sensor.(\"] } }\n",
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("filter rule \"power\": match.entity.regex"),
        "{stdout}"
    );
}

/// Rules can come from the environment like every other key (a TOML array of tables).
#[test]
fn rules_from_an_environment_override() {
    let env = vec![
        (
            "HA_INGESTOR_FILTER__RULES".to_string(),
            r#"[{ name = "no lights", action = "exclude", match = { domain = ["light"] } }]"#
                .to_string(),
        ),
        (
            "HA_INGESTOR_FILTER__DEFAULT".to_string(),
            "exclude".to_string(),
        ),
    ];
    let cfg = Config::from_toml_with_env("", Path::new("t.toml"), &env).unwrap();
    let mut chain = RuleChain::new(&cfg.filter).unwrap();
    let light = state_event("light.a", "on", vec![], None);
    let d = chain.decide(&light);
    assert!(!d.keep);
    assert_eq!(d.by, DecidedBy::Rule(0));
    assert_eq!(
        chain
            .decide(&state_event("switch.a", "on", vec![], None))
            .by,
        DecidedBy::Default
    );
    let bad = vec![(
        "HA_INGESTOR_FILTER__RULES".to_string(),
        r#"[{ name = "typo", action = "exclude", match = { domian = ["light"] } }]"#.to_string(),
    )];
    let err = Config::from_toml_with_env("", Path::new("t.toml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HA_INGESTOR_FILTER__RULES") && err.contains("\"typo\""),
        "{err}"
    );
}
