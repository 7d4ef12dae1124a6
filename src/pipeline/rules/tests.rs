//! Tests of the rule chain: every decision is made twice, through the cache and
//! in full, and the two must agree.

use super::test_support::{bus_event, state_event};
use super::*;
use crate::config::FilterConfig;
use crate::event::Timestamp;
use serde_json::json;

/// A chain from the `[filter]` section given as TOML.
fn chain(toml_text: &str) -> RuleChain {
    let cfg: FilterConfig = toml::from_str(toml_text).unwrap();
    RuleChain::new(&cfg).unwrap()
}

fn build_err(toml_text: &str) -> String {
    let cfg: FilterConfig = toml::from_str(toml_text).unwrap();
    match RuleChain::new(&cfg) {
        Ok(_) => panic!("expected an error for {toml_text}"),
        Err(e) => e.to_string(),
    }
}

/// Decides with and without the cache and checks they agree.
fn decide(c: &mut RuleChain, e: &Event) -> Decision {
    let cached = c.decide(e);
    assert_eq!(cached, c.decide_uncached(e));
    cached
}

fn kept(c: &mut RuleChain, e: &Event) -> bool {
    decide(c, e).keep
}

fn sensor(id: &str, value: &str, attributes: serde_json::Value) -> Event {
    state_event(id, value, attributes, None)
}

/// Table-driven: each row's event must be kept (or not) by the chain, cached and uncached;
/// the row's name is in the failure message.
fn assert_rows(c: &mut RuleChain, rows: &[(&str, Event, bool)]) {
    for (name, event, keep) in rows {
        assert_eq!(kept(c, event), *keep, "row {name:?}");
    }
}

#[test]
fn first_match_wins_then_default() {
    let mut c = chain(
        r#"
        default = "exclude"
        [[rules]]
        name = "drop linkquality"
        action = "exclude"
        match = { entity = { glob = ["sensor.*_linkquality"] } }
        [[rules]]
        name = "sensors"
        action = "include"
        match = { domain = ["sensor"] }
        "#,
    );
    let lq = sensor("sensor.plug_linkquality", "80", json!({}));
    assert_eq!(
        decide(&mut c, &lq),
        Decision {
            keep: false,
            by: DecidedBy::Rule(0)
        }
    );
    assert_eq!(
        decide(&mut c, &sensor("sensor.t", "1", json!({}))).by,
        DecidedBy::Rule(1)
    );
    assert_eq!(
        decide(&mut c, &sensor("light.a", "on", json!({}))),
        Decision {
            keep: false,
            by: DecidedBy::Default
        }
    );
    assert_eq!(
        c.counts(),
        [
            RuleCounts {
                matches: 2,
                errors: 0
            },
            RuleCounts {
                matches: 2,
                errors: 0
            }
        ],
        "decide and decide_uncached both count"
    );
}

#[test]
fn gate_runs_before_the_rules() {
    let mut c = chain(
        r#"
        [exclude]
        domains = ["automation"]
        [[rules]]
        name = "keep all automations"
        action = "include"
        match = { domain = ["automation"] }
        [[rules]]
        name = "drop lights"
        action = "exclude"
        match = { domain = ["light"] }
        "#,
    );
    assert_eq!(
        decide(&mut c, &sensor("automation.a", "on", json!({}))).by,
        DecidedBy::Gate
    );
    assert!(!kept(&mut c, &sensor("light.a", "on", json!({}))));
    assert!(kept(&mut c, &sensor("switch.a", "on", json!({}))));
}

#[test]
fn event_type_exact_and_glob_and_source() {
    let mut c = chain(
        r#"
        [[rules]]
        name = "no service calls from the simulator"
        action = "exclude"
        match = { event_type = ["call_*", "automation_triggered"], source = ["simulator"] }
        "#,
    );
    let from_simulator = |event_type: &str| {
        let mut e = bus_event(event_type);
        e.source = "simulator".into();
        e
    };
    assert_rows(
        &mut c,
        &[
            ("call from homeassistant", bus_event("call_service"), true),
            (
                "call from the simulator",
                from_simulator("call_service"),
                false,
            ),
            (
                "exact type from the simulator",
                from_simulator("automation_triggered"),
                false,
            ),
            (
                "other type from the simulator",
                from_simulator("script_started"),
                true,
            ),
        ],
    );
}

#[test]
fn entity_globs_and_regexes_and_domain_need_an_entity() {
    let mut c = chain(
        r#"
        default = "exclude"
        [[rules]]
        name = "power"
        action = "include"
        match = { entity = { glob = ["sensor.*_power"], regex = ['^switch\.plug_\d+$'] } }
        [[rules]]
        name = "domain"
        action = "include"
        match = { domain = ["light"] }
        "#,
    );
    assert_rows(
        &mut c,
        &[
            ("glob", sensor("sensor.tv_power", "3", json!({})), true),
            ("regex", sensor("switch.plug_12", "on", json!({})), true),
            (
                "regex needs digits",
                sensor("switch.plug_x", "on", json!({})),
                false,
            ),
            ("domain", sensor("light.a", "on", json!({})), true),
            (
                "a bus event has no entity",
                bus_event("call_service"),
                false,
            ),
        ],
    );
}

#[test]
fn attribute_tests() {
    let mut c = chain(
        r#"
        default = "exclude"
        [[rules]]
        name = "unit"
        action = "include"
        match = { attribute = [{ name = "unit_of_measurement", exists = true }, { name = "device_class", in = ["power", "energy"] }] }
        [[rules]]
        name = "bright"
        action = "include"
        match = { attribute = [{ name = "brightness", gte = 100, lt = 200.5 }] }
        [[rules]]
        name = "model"
        action = "include"
        match = { attribute = [{ name = "model", regex = "^TRADFRI" }, { name = "count", equals = 3 }] }
        "#,
    );
    let rows = [
        (
            "unit and class in the list",
            json!({"unit_of_measurement": "W", "device_class": "power"}),
            "sensor.p",
            true,
        ),
        (
            "class not in the list",
            json!({"unit_of_measurement": "W", "device_class": "humidity"}),
            "sensor.p",
            false,
        ),
        (
            "no unit",
            json!({"device_class": "power"}),
            "sensor.p",
            false,
        ),
        ("gte bound", json!({"brightness": 100}), "light.a", true),
        (
            "numeric text",
            json!({"brightness": "150"}),
            "light.a",
            true,
        ),
        ("lt bound", json!({"brightness": 200.5}), "light.a", false),
        (
            "text is not a number",
            json!({"brightness": "dim"}),
            "light.a",
            false,
        ),
        (
            "3 equals 3.0",
            json!({"model": "TRADFRI bulb", "count": 3.0}),
            "light.b",
            true,
        ),
        (
            "text is not a number for equals",
            json!({"model": "TRADFRI bulb", "count": "3"}),
            "light.b",
            false,
        ),
        (
            "regex fails",
            json!({"model": "Hue", "count": 3}),
            "light.b",
            false,
        ),
    ];
    let rows: Vec<(&str, Event, bool)> = rows
        .into_iter()
        .map(|(name, attributes, id, keep)| {
            let value = if id.starts_with("sensor.") { "1" } else { "on" };
            (name, sensor(id, value, attributes), keep)
        })
        .collect();
    assert_rows(&mut c, &rows);
}

#[test]
fn attribute_absent_and_on_the_old_state() {
    let mut c = chain(
        r#"
        default = "exclude"
        [[rules]]
        name = "no unit"
        action = "include"
        match = { attribute = [{ name = "unit_of_measurement", exists = false }] }
        [[rules]]
        name = "was heating"
        action = "include"
        match = { attribute = [{ name = "hvac_action", equals = "heating", on = "old" }, { name = "hvac_action", equals = "idle" }] }
        "#,
    );
    assert!(kept(&mut c, &sensor("sensor.x", "1", json!({}))));
    let mut e = state_event(
        "climate.a",
        "heat",
        json!({"unit_of_measurement": "°C", "hvac_action": "idle"}),
        Some("heat"),
    );
    assert!(!kept(&mut c, &e), "old state has the same attributes: idle");
    if let crate::event::EventKind::StateChanged(sc) = &mut e.kind {
        let old = state_event(
            "climate.a",
            "heat",
            json!({"unit_of_measurement": "°C", "hvac_action": "heating"}),
            None,
        );
        let old_state = old.state_changed().and_then(|s| s.new_state.clone());
        sc.old_state = old_state.map(crate::event::LazyState::from);
    }
    assert_eq!(decide(&mut c, &e).by, DecidedBy::Rule(1));
}

#[test]
fn state_tests() {
    let mut c = chain(
        r#"
        default = "exclude"
        [[rules]]
        name = "power above zero"
        action = "include"
        match = { domain = ["sensor"], state = { gt = 0 } }
        [[rules]]
        name = "doors"
        action = "include"
        match = { domain = ["binary_sensor"], state = { in = ["on", "off"] } }
        [[rules]]
        name = "home"
        action = "include"
        match = { domain = ["person"], state = { equals = "home", lte = 5 } }
        "#,
    );
    let rows: Vec<(&str, Event, bool)> = [
        ("above zero", "sensor.p", "12.5", true),
        ("zero is not above zero", "sensor.p", "0", false),
        ("not a number", "sensor.p", "unavailable", false),
        ("in the list", "binary_sensor.d", "off", true),
        ("not in the list", "binary_sensor.d", "unknown", false),
        ("home is not a number", "person.a", "home", false),
    ]
    .into_iter()
    .map(|(name, id, value, keep)| (name, sensor(id, value, json!({})), keep))
    .collect();
    assert_rows(&mut c, &rows);
}

#[test]
fn state_changed_and_attributes_only_changed() {
    let mut c = chain(
        r#"
        [[rules]]
        name = "attribute-only updates"
        action = "exclude"
        match = { state = { attributes_only_changed = true } }
        [[rules]]
        name = "same state"
        action = "exclude"
        match = { state = { changed = false } }
        "#,
    );
    let changed = state_event("sensor.a", "2", json!({"x": 1}), Some("1"));
    let first = state_event("sensor.a", "2", json!({"x": 1}), None);
    let same = state_event("sensor.a", "2", json!({"x": 1}), Some("2"));
    assert!(kept(&mut c, &changed));
    assert!(kept(&mut c, &first), "no old state counts as a change");
    assert_eq!(
        decide(&mut c, &same).by,
        DecidedBy::Rule(1),
        "same state, same attributes"
    );
    let mut attrs = state_event("sensor.a", "2", json!({"x": 2}), None);
    if let crate::event::EventKind::StateChanged(sc) = &mut attrs.kind {
        let before = state_event("sensor.a", "2", json!({"x": 1}), None);
        sc.old_state = before
            .state_changed()
            .and_then(|s| s.new_state.clone())
            .map(Into::into);
    }
    assert_eq!(decide(&mut c, &attrs).by, DecidedBy::Rule(0));
}

#[test]
fn expression_and_its_errors() {
    let mut c = chain(
        r#"
        default = "exclude"
        [[rules]]
        name = "hot"
        action = "include"
        match = { domain = ["sensor"], expression = "state | float > 30" }
        [[rules]]
        name = "strict"
        action = "exclude"
        on_error = "keep"
        match = { domain = ["climate"], expression = "state | float > 30" }
        [[rules]]
        name = "catch-all"
        action = "include"
        match = { domain = ["sensor", "light"] }
        "#,
    );
    assert_eq!(
        decide(&mut c, &sensor("sensor.t", "31", json!({}))).by,
        DecidedBy::Rule(0)
    );
    // float fails on text: on_error = skip, so the chain goes on to the catch-all.
    assert_eq!(
        decide(&mut c, &sensor("sensor.t", "n/a", json!({}))).by,
        DecidedBy::Rule(2)
    );
    assert_eq!(
        decide(&mut c, &sensor("climate.t", "n/a", json!({}))),
        Decision {
            keep: true,
            by: DecidedBy::RuleError(1)
        }
    );
    assert!(!kept(&mut c, &sensor("climate.t", "35", json!({}))));
    // Each decide ran twice (cached and uncached).
    assert_eq!(
        c.counts()[0],
        RuleCounts {
            matches: 2,
            errors: 2
        }
    );
    assert_eq!(
        c.counts()[1],
        RuleCounts {
            matches: 2,
            errors: 2
        }
    );
    let mut seen = Vec::new();
    c.drain_counts(|i, n| seen.push((i, n)));
    assert_eq!(seen.len(), 3);
    assert!(c.counts().iter().all(|n| *n == RuleCounts::default()));
}

#[test]
fn cache_is_bounded_and_keys_include_the_source_only_when_needed() {
    let mut c = chain(
        r#"
        [[rules]]
        name = "x"
        action = "exclude"
        match = { domain = ["light"] }
        "#,
    );
    c.set_cache_limit(3);
    for i in 0..10 {
        assert!(
            !c.decide(&sensor(&format!("light.l{i}"), "on", json!({})))
                .keep
        );
        assert!(c.cache_len() <= 3);
    }
    let mut c = chain(
        r#"
        [[rules]]
        name = "sim"
        action = "exclude"
        match = { source = ["simulator"], domain = ["light"] }
        "#,
    );
    let ha = sensor("light.a", "on", json!({}));
    let mut sim = ha.clone();
    sim.source = "simulator".into();
    assert!(c.decide(&ha).keep);
    assert!(
        !c.decide(&sim).keep,
        "a cached plan for one source is not reused for another"
    );
    assert_eq!(c.cache_len(), 2);
}

#[test]
fn a_full_cache_evicts_plans_not_used_lately_and_keeps_the_busy_ones() {
    let mut c = chain(
        r#"
        [[rules]]
        name = "x"
        action = "exclude"
        match = { domain = ["light"] }
        "#,
    );
    c.set_cache_limit(4);
    let e = |i: usize| sensor(&format!("light.l{i}"), "on", json!({}));
    for i in 0..4 {
        c.decide(&e(i));
    }
    // l0 and l1 are busy; l4 must evict one of the idle ones (l2 or l3).
    c.decide(&e(0));
    c.decide(&e(1));
    c.decide(&e(4));
    assert_eq!(c.cache_len(), 4);
    let key = |i: usize| {
        let id = format!("light.l{i}");
        format!("13:state_changed{}:{id}", id.len())
    };
    for i in [0, 1, 4] {
        assert!(c.cache.contains_key(key(i).as_str()), "{i}: {:?}", c.clock);
    }
    assert_eq!(c.clock.len(), 4);
    // Ring and map hold the same keys.
    for k in &c.clock {
        assert!(c.cache.contains_key(k));
    }
    // A long run of new entities keeps it bounded and consistent.
    for i in 5..200 {
        assert!(!c.decide(&e(i)).keep);
        assert!(c.cache_len() <= 4);
    }
    for k in &c.clock {
        assert!(c.cache.contains_key(k));
    }
}

#[test]
fn crafted_event_types_do_not_share_a_cache_key_with_state_changes() {
    let mut c = chain(
        r#"
        [[rules]]
        name = "no lights"
        action = "exclude"
        match = { domain = ["light"] }
        "#,
    );
    let light = sensor("light.a", "on", json!({}));
    for crafted in [
        "state_changed\0light.a",
        "state_changed13:light.a",
        "state_changed",
    ] {
        let bus = bus_event(crafted);
        assert_eq!(decide(&mut c, &bus).by, DecidedBy::Default, "{crafted:?}");
        assert_eq!(decide(&mut c, &light).by, DecidedBy::Rule(0), "{crafted:?}");
    }
}

#[test]
fn time_rules_run_per_event_and_use_the_configured_zone() {
    let mut c = chain(
        r#"
        time_zone = "Europe/Berlin"
        [[rules]]
        name = "quiet night"
        action = "exclude"
        match = { domain = ["sensor"], time = { after = "22:00", before = "06:00" } }
        [[rules]]
        name = "utc morning"
        action = "exclude"
        match = { domain = ["light"], time = { after = "08:00", before = "09:00", time_zone = "UTC" } }
        "#,
    );
    let mut night = sensor("sensor.t", "1", json!({}));
    // 21:30 UTC in June is 23:30 in Berlin.
    night.time_fired = Timestamp::parse_rfc3339("2026-06-01T21:30:00.000000+00:00").unwrap();
    let mut day = night.clone();
    day.time_fired = Timestamp::parse_rfc3339("2026-06-01T12:00:00.000000+00:00").unwrap();
    assert_eq!(decide(&mut c, &night).by, DecidedBy::Rule(0));
    assert_eq!(
        decide(&mut c, &day).by,
        DecidedBy::Default,
        "same entity, cached plan, other time"
    );
    let mut light = sensor("light.a", "on", json!({}));
    light.time_fired = Timestamp::parse_rfc3339("2026-06-01T08:30:00.000000+00:00").unwrap();
    assert_eq!(decide(&mut c, &light).by, DecidedBy::Rule(1));
    let err =
        build_err("time_zone = \"Nowhere/Land\"\n[[rules]]\nname = \"x\"\naction = \"exclude\"\n");
    assert!(err.contains("filter.time_zone"), "{err}");
}

#[test]
fn transform_rules_go_on_and_the_plan_lists_everything() {
    let mut c = chain(
        r#"
        default = "exclude"
        [[rules]]
        name = "tag sensors"
        action = "transform"
        match = { domain = ["sensor"] }
        transform = [{ tags = { kind = "sensor" } }]
        [[rules]]
        name = "hot"
        action = "include"
        match = { domain = ["sensor"], state = { gt = 30 } }
        transform = [{ measurement = "hot" }]
        rate = { throttle = "10s", aggregate = "max" }
        "#,
    );
    let hot = sensor("sensor.t", "35", json!({}));
    assert_eq!(decide(&mut c, &hot).by, DecidedBy::Rule(1));
    assert_eq!(c.applied(), [0, 1]);
    assert_eq!(c.rate_rule(), Some(1));
    let cold = sensor("sensor.t", "5", json!({}));
    assert_eq!(
        decide(&mut c, &cold),
        Decision {
            keep: false,
            by: DecidedBy::Default
        },
        "a transform rule never decides"
    );
    let light = sensor("light.a", "on", json!({}));
    decide(&mut c, &light);
    assert!(c.applied().is_empty());
    let plan = c.plan_text().join("\n");
    for want in [
        "gate: none",
        "rule 1 \"tag sensors\": transform when {\"domain\":[\"sensor\"]}",
        "then tags kind=sensor",
        "rule 2 \"hot\": include when",
        "dynamic: tests run per event",
        "then measurement hot",
        "then rate: throttle 10s (Max)",
        "default: exclude",
    ] {
        assert!(plan.contains(want), "{want:?} not in\n{plan}");
    }
    assert_eq!(
        build_err("default = \"transform\""),
        RuleError::Default.to_string()
    );
    for (body, key) in [
        (
            "action = \"exclude\"\ntransform = [{ measurement = \"m\" }]",
            "transform",
        ),
        ("action = \"transform\"", "transform"),
        ("action = \"exclude\"\nrate = { throttle = \"1s\" }", "rate"),
        (
            "action = \"include\"\nrate = { throttle = \"0s\" }",
            "rate.throttle",
        ),
        (
            "action = \"include\"\ntransform = [{ convert = \"state\" }]",
            "transform[0].to",
        ),
        (
            "action = \"include\"\nmatch = { event_type = [\"call_service\"] }\ntransform = [{ tags = { a = \"b\" } }, { convert = \"state\", to = \"float\" }]",
            "transform[1].convert",
        ),
        (
            "action = \"transform\"\nmatch = { domain = [\"light\"] }\ntransform = [{ drop_data = [\"x\"] }]",
            "transform[0].drop_data",
        ),
        (
            "action = \"transform\"\nmatch = { event_type = [\"state_changed\"] }\ntransform = [{ keep_data = [\"x\"] }]",
            "transform[0].keep_data",
        ),
    ] {
        let err = build_err(&format!("[[rules]]\nname = \"r1\"\n{body}\n"));
        assert!(err.contains("\"r1\""), "{err}");
        assert!(err.contains(&format!("{key}:")), "{key}: {err}");
    }
    // Steps each kind of event can take, on matches that can select it, build.
    chain(
        r#"
        [[rules]]
        name = "service calls"
        action = "transform"
        match = { event_type = ["call_*"] }
        transform = [{ drop_data = ["*_id"] }, { measurement = "calls" }]
        [[rules]]
        name = "everything"
        action = "transform"
        transform = [{ drop_data = ["x"] }, { drop_attributes = ["icon"] }, { tags = { a = "b" } }]
        "#,
    );
}

#[test]
fn no_rules_means_the_gate_alone() {
    let mut c = chain("[exclude]\ndomains = [\"light\"]\n");
    assert!(!c.decide(&sensor("light.a", "on", json!({}))).keep);
    assert!(c.decide(&sensor("sensor.a", "on", json!({}))).keep);
    assert_eq!(c.cache_len(), 0);
}

#[test]
fn invalid_rules_name_the_rule_and_the_key() {
    let cases = [
        (
            r#"match = { entity = { regex = ["(unclosed"] } }"#,
            "match.entity.regex",
        ),
        (
            r#"match = { entity = { glob = ["sensor.[x"] } }"#,
            "match.entity.glob",
        ),
        (r#"match = { entity = {} }"#, "match.entity"),
        (
            r#"match = { event_type = ["call_[x"] }"#,
            "match.event_type",
        ),
        (
            r#"match = { attribute = [{ name = "a", regex = "(" }] }"#,
            "match.attribute.regex",
        ),
        (
            r#"match = { attribute = [{ name = "a" }] }"#,
            "match.attribute",
        ),
        (r#"match = { state = {} }"#, "match.state"),
        (r#"match = { expression = "state >" }"#, "match.expression"),
        (
            r#"match = { expression = "sate == 1" }"#,
            "match.expression",
        ),
        (r#"match = { time = {} }"#, "match.time"),
        (r#"match = { time = { after = "7pm" } }"#, "match.time"),
        (
            r#"match = { time = { weekdays = ["someday"] } }"#,
            "match.time",
        ),
        (
            r#"match = { time = { after = "07:00", time_zone = "Europe/Nowhere" } }"#,
            "match.time.time_zone",
        ),
    ];
    for (body, key) in cases {
        let text = format!("[[rules]]\nname = \"bad one\"\naction = \"exclude\"\n{body}\n");
        let err = build_err(&text);
        assert!(err.contains("\"bad one\""), "{err}");
        assert!(err.contains(key), "{key}: {err}");
    }
}

#[test]
fn unknown_keys_name_the_rule() {
    for (body, key) in [
        ("actoin = \"exclude\"", "actoin"),
        (
            "action = \"exclude\"\nmatch = { domian = [\"x\"] }",
            "domian",
        ),
        (
            "action = \"exclude\"\nmatch = { state = { chnaged = true } }",
            "chnaged",
        ),
        ("action = \"drop\"", "drop"),
    ] {
        let text = format!("[[rules]]\nname = \"typo rule\"\n{body}\n");
        let err = toml::from_str::<FilterConfig>(&text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"typo rule\""), "{err}");
        assert!(err.contains(key), "{key}: {err}");
    }
    let err = toml::from_str::<FilterConfig>("[[rules]]\naction = \"exclude\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a name"), "{err}");
}
