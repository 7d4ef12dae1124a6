//! Tests of the transform steps: each kind of step on the events it applies to,
//! the ones it passes over, its failures and the errors that name the step.

use super::*;
use crate::pipeline::rules::test_support::{bus_event, state_event};
use serde_json::json;

fn steps(toml_text: &str) -> Transform {
    #[derive(serde::Deserialize)]
    struct T {
        transform: Vec<TransformStepConfig>,
    }
    let t: T = toml::from_str(toml_text).unwrap();
    Transform::new(&t.transform).unwrap()
}

fn step_err(toml_text: &str) -> StepError {
    #[derive(serde::Deserialize)]
    struct T {
        transform: Vec<TransformStepConfig>,
    }
    let t: T = toml::from_str(toml_text).unwrap();
    match Transform::new(&t.transform) {
        Ok(_) => panic!("expected an error for {toml_text}"),
        Err(e) => e,
    }
}

fn state_of(e: &Event) -> &State {
    e.state_changed().unwrap().new_state.as_ref().unwrap()
}

#[test]
fn rename_drop_and_keep_attributes() {
    let t = steps(
        r#"transform = [
            { rename = { friendly_name = "name" } },
            { drop_attributes = ["icon", "*_id"] },
        ]"#,
    );
    let mut e = state_event(
        "sensor.a",
        "1",
        json!({"friendly_name": "A", "icon": "mdi:x", "device_id": "d", "unit": "W"}),
        None,
    );
    let mut o = PointOverrides::default();
    assert_eq!(t.apply(&mut e, &mut o), Applied::default());
    let keys: Vec<&str> = state_of(&e)
        .attributes
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["name", "unit"]);
    let keep = steps(r#"transform = [{ keep_attributes = ["unit*"] }]"#);
    keep.apply(&mut e, &mut o);
    let keys: Vec<&str> = state_of(&e)
        .attributes
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["unit"]);
    assert!(o.is_empty());
}

#[test]
fn measurement_and_tags_go_to_the_overrides() {
    let t = steps(
        r#"transform = [
            { measurement = "power" },
            { tags = { site = "home", room = "x" } },
            { computed_tags = { room = "attributes.area | default('none')" } },
        ]"#,
    );
    let mut e = state_event("sensor.p", "5", json!({"area": "kitchen"}), None);
    let mut o = PointOverrides::default();
    t.apply(&mut e, &mut o);
    assert_eq!(o.measurement.as_deref(), Some("power"));
    assert_eq!(
        o.tags,
        [
            ("room".to_string(), "kitchen".to_string()),
            ("site".into(), "home".into())
        ]
    );
    // Bus events get the overrides too; attribute steps pass over them.
    let mut bus = bus_event("call_service");
    let mut o = PointOverrides::default();
    let applied = t.apply(&mut bus, &mut o);
    assert_eq!(applied.errors, 0);
    assert_eq!(o.tags.len(), 2);
}

#[test]
fn convert_each_type_and_the_failure_policies() {
    let cases = [
        (json!("21.5"), ConvertTo::Float, Ok(json!(21.5))),
        (json!(" 7 "), ConvertTo::Int, Ok(json!(7))),
        (json!("7.0"), ConvertTo::Int, Ok(json!(7))),
        (json!("7.5"), ConvertTo::Int, Err(())),
        (json!("On"), ConvertTo::Bool, Ok(json!(true))),
        (json!("closed"), ConvertTo::Bool, Ok(json!(false))),
        (json!("maybe"), ConvertTo::Bool, Err(())),
        (json!("0:01:30"), ConvertTo::Duration, Ok(json!(90.0))),
        (json!("5m 30s"), ConvertTo::Duration, Ok(json!(330.0))),
        (json!("1:75:00"), ConvertTo::Duration, Err(())),
        (
            json!("1970-01-01T00:01:00.500000+00:00"),
            ConvertTo::Timestamp,
            Ok(json!(60.5)),
        ),
        (json!("later"), ConvertTo::Timestamp, Err(())),
        (json!(12), ConvertTo::String, Ok(json!("12"))),
        (json!("nan"), ConvertTo::Float, Err(())),
        (json!({"a": 1}), ConvertTo::Float, Err(())),
    ];
    for (input, to, want) in cases {
        let got = convert(&input, to);
        match want {
            Ok(v) => assert_eq!(got, Ok(v), "{input} to {to:?}"),
            Err(()) => assert!(got.is_err(), "{input} to {to:?}: {got:?}"),
        }
    }
    let keep = steps(r#"transform = [{ convert = "attributes.level", to = "int" }]"#);
    let remove =
        steps(r#"transform = [{ convert = "attributes.level", to = "int", on_error = "remove" }]"#);
    let drop = steps(r#"transform = [{ convert = "state", to = "float", on_error = "drop" }]"#);
    let base = state_event("sensor.a", "high", json!({"level": "x", "n": 1}), None);
    let mut o = PointOverrides::default();
    let mut e = base.clone();
    let a = keep.apply(&mut e, &mut o);
    assert_eq!((a.errors, a.drop), (1, false));
    assert!(a.first_error.unwrap().contains("attributes.level"));
    assert_eq!(state_of(&e).attributes["level"], json!("x"));
    let mut e = base.clone();
    remove.apply(&mut e, &mut o);
    assert!(!state_of(&e).attributes.contains_key("level"));
    let mut e = base.clone();
    assert!(drop.apply(&mut e, &mut o).drop);
    // A missing attribute is not an error: nothing to convert.
    let mut e = state_event("sensor.a", "1", json!({}), None);
    assert_eq!(keep.apply(&mut e, &mut o).errors, 0);
    // The state takes the number's text.
    let to_bool = steps(r#"transform = [{ convert = "state", to = "bool" }]"#);
    let mut e = state_event("lock.a", "locked", json!({}), None);
    to_bool.apply(&mut e, &mut o);
    assert_eq!(state_of(&e).state, "1");
}

#[test]
fn compute_with_jinja_and_map_values() {
    let f_to_c = steps(
        r#"transform = [
            { compute = "state", expression = "((state | float - 32) * 5 / 9) | round(2)" },
            { map = "attributes.unit_of_measurement", values = { "°F" = "°C" } },
        ]"#,
    );
    let mut e = state_event(
        "sensor.t",
        "98.6",
        json!({"unit_of_measurement": "°F"}),
        None,
    );
    let mut o = PointOverrides::default();
    assert_eq!(f_to_c.apply(&mut e, &mut o).errors, 0);
    assert_eq!(state_of(&e).state, "37.0");
    assert_eq!(state_of(&e).attributes["unit_of_measurement"], json!("°C"));
    // Failing: the state is left as it was and the error counted.
    let mut bad = state_event("sensor.t", "unavailable", json!({}), None);
    let a = f_to_c.apply(&mut bad, &mut o);
    assert_eq!(a.errors, 1);
    assert_eq!(state_of(&bad).state, "unavailable");
    let onoff = steps(r#"transform = [{ map = "state", values = { on = 1, off = 0 } }]"#);
    let mut e = state_event("switch.a", "off", json!({}), None);
    onoff.apply(&mut e, &mut o);
    assert_eq!(state_of(&e).state, "0");
    let mut e = state_event("switch.a", "unavailable", json!({}), None);
    onoff.apply(&mut e, &mut o);
    assert_eq!(state_of(&e).state, "unavailable", "values not listed stay");
    let attr = steps(
        r#"transform = [{ compute = "attributes.kw", expression = "state | float / 1000" }]"#,
    );
    let mut e = state_event("sensor.p", "1500", json!({}), None);
    attr.apply(&mut e, &mut o);
    assert_eq!(state_of(&e).attributes["kw"], json!(1.5));
}

#[test]
fn data_steps_change_other_events_and_pass_over_state_changes() {
    let t = steps(
        r#"transform = [
            { rename_data = { service_data = "args" } },
            { drop_data = ["*_id"] },
            { measurement = "calls" },
            { tags = { site = "home" } },
        ]"#,
    );
    let mut call = bus_event("call_service");
    if let EventKind::Bus(bus) = &mut call.kind {
        for (k, v) in [
            ("domain", json!("light")),
            ("service", json!("turn_on")),
            ("service_data", json!({"brightness": 3})),
            ("entity_id", json!("light.a")),
            ("device_id", json!("d1")),
        ] {
            bus.data.insert(k.into(), v);
        }
    }
    let mut o = PointOverrides::default();
    assert_eq!(t.apply(&mut call, &mut o), Applied::default());
    let EventKind::Bus(bus) = &call.kind else {
        unreachable!()
    };
    let keys: Vec<&str> = bus.data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["domain", "service", "args"],
        "renamed in place, ids dropped"
    );
    assert_eq!(o.measurement.as_deref(), Some("calls"));
    assert_eq!(o.tags, [("site".to_string(), "home".to_string())]);
    let keep = steps(r#"transform = [{ keep_data = ["serv*"] }]"#);
    keep.apply(&mut call, &mut o);
    let EventKind::Bus(bus) = &call.kind else {
        unreachable!()
    };
    assert_eq!(bus.data.keys().collect::<Vec<_>>(), ["service"]);
    // A state change passes through the data steps unchanged.
    let state = state_event("sensor.a_id", "1", json!({"device_id": "d"}), None);
    let mut same = state.clone();
    t.apply(&mut same, &mut o);
    assert_eq!(same, state);
}

#[test]
fn a_step_a_rule_can_never_apply_is_refused() {
    let t = steps(
        r#"transform = [{ tags = { a = "b" } }, { drop_data = ["x"] }, { convert = "state", to = "float" }]"#,
    );
    // (matches state changes, matches other events) → the refused step, if any.
    let cases = [
        ((true, true), None),
        ((false, true), Some("transform[2].convert")),
        ((true, false), Some("transform[1].drop_data")),
    ];
    for ((state_changes, others), want) in cases {
        let got = t.check_reach(state_changes, others).err();
        assert_eq!(
            got.as_ref().map(|e| e.key.as_str()),
            want,
            "{state_changes} {others}"
        );
    }
    let tags_only =
        steps(r#"transform = [{ measurement = "m" }, { computed_tags = { t = "event_type" } }]"#);
    assert!(tags_only.check_reach(false, true).is_ok());
    assert!(tags_only.check_reach(true, false).is_ok());
}

#[test]
fn bad_steps_name_the_index_and_key() {
    let cases = [
        (r#"transform = [{}]"#, "transform[0]."),
        (
            r#"transform = [{ measurement = "a", tags = {} }]"#,
            "transform[0].tags",
        ),
        (
            r#"transform = [{ tags = {} }, { convert = "state" }]"#,
            "transform[1].to",
        ),
        (
            r#"transform = [{ convert = "status", to = "int" }]"#,
            "transform[0].convert",
        ),
        (
            r#"transform = [{ convert = "state", to = "int", on_error = "remove" }]"#,
            "transform[0].on_error",
        ),
        (
            r#"transform = [{ compute = "state" }]"#,
            "transform[0].expression",
        ),
        (
            r#"transform = [{ compute = "state", expression = "sate" }]"#,
            "transform[0].expression",
        ),
        (
            r#"transform = [{ drop_attributes = ["[x"] }]"#,
            "transform[0].drop_attributes",
        ),
        (
            r#"transform = [{ measurement = "m", to = "int" }]"#,
            "transform[0].to",
        ),
        (r#"transform = [{ map = "state" }]"#, "transform[0].values"),
        (
            r#"transform = [{ tags = { a = "b" }, on_error = "drop" }]"#,
            "transform[0].on_error",
        ),
        (
            r#"transform = [{ drop_data = ["[x"] }]"#,
            "transform[0].drop_data",
        ),
        (
            r#"transform = [{ rename_data = { a = "" } }]"#,
            "transform[0].rename_data",
        ),
        (
            r#"transform = [{ keep_data = ["a"], drop_data = ["b"] }]"#,
            "transform[0].",
        ),
    ];
    for (text, key) in cases {
        let e = step_err(text);
        assert!(e.key.starts_with(key), "{text}: {e:?}");
    }
}
