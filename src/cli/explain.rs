//! `ha-ingestor explain`: what the filter makes of one event, step by step.
//!
//! Reads one HA event as JSON (a bare event as in HA's `subscribe_events`, or
//! the whole WebSocket frame as in the recorded fixtures), runs it through the
//! configured pipeline and reports each rule's verdict, the decision, the
//! transforms applied and the line protocol written.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::Config;
use crate::event::Event;
use crate::pipeline::rules::DecidedBy;
use crate::pipeline::{Outcome, Pipeline, PipelineError};
use crate::source::homeassistant::decode::{ServerMessage, decode_frame};

/// Why `explain` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The event file is not an HA event.
    #[error("event: {0}")]
    Event(String),
    /// The pipeline did not compile.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// Reads one HA event: a bare event object or a WebSocket `{"type":"event","event":…}` frame.
pub fn event_from_json(text: &str, source: &str) -> Result<Event, ExplainError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ExplainError::Event(format!("not JSON: {e}")))?;
    let frame = if value.get("type").and_then(|t| t.as_str()) == Some("event") {
        let mut v = value;
        if v.get("id").is_none()
            && let Some(map) = v.as_object_mut()
        {
            map.insert("id".into(), serde_json::Value::from(1));
        }
        v
    } else if value.get("event_type").is_some() {
        serde_json::json!({"id": 1, "type": "event", "event": value})
    } else {
        return Err(ExplainError::Event(
            "expected an HA event (with event_type) or a WebSocket event frame".into(),
        ));
    };
    let frame = frame.to_string();
    let source: crate::event::SourceId = Arc::from(source);
    let mut out = Vec::new();
    decode_frame(&frame, &source, &mut out);
    match out.pop() {
        Some(Ok(ServerMessage::Event { event, .. })) => Ok(event),
        Some(Ok(_)) => Err(ExplainError::Event("not an event frame".into())),
        Some(Err(e)) => Err(ExplainError::Event(e.to_string())),
        None => Err(ExplainError::Event("nothing decoded".into())),
    }
}

/// Reads an event file: one JSON event, or JSON lines of events (taken in order).
pub fn events_from_file_text(text: &str, source: &str) -> Result<Vec<Event>, ExplainError> {
    if serde_json::from_str::<serde_json::Value>(text).is_ok() {
        return Ok(vec![event_from_json(text, source)?]);
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            event_from_json(l, source)
                .map_err(|e| ExplainError::Event(format!("line {}: {e}", n + 1)))
        })
        .collect()
}

/// The report for one event, as printed by `ha-ingestor explain`.
pub fn explain(cfg: &Config, event: &Event) -> Result<String, ExplainError> {
    explain_events(cfg, std::slice::from_ref(event))
}

/// The reports for events taken in order by one pipeline (so rate shaping sees them all).
pub fn explain_events(cfg: &Config, events: &[Event]) -> Result<String, ExplainError> {
    let mut pipeline = Pipeline::new(&cfg.filter, &cfg.effective_schema())?;
    let mut text = String::new();
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        explain_one(&mut pipeline, event, &mut text);
    }
    Ok(text)
}

fn explain_one(pipeline: &mut Pipeline, event: &Event, text: &mut String) {
    let entity = event.entity_id().map_or("-", |e| e.as_str());
    let _ = writeln!(
        text,
        "event: {} {entity} at {} from {}",
        event.event_type(),
        event.time_fired.to_rfc3339(),
        event.source
    );
    let chain = pipeline.chain();
    let gate = chain.gate_keeps(event);
    let _ = writeln!(text, "gate: {}", if gate { "passes" } else { "drops it" });
    let names: Vec<String> = chain.rule_names().map(str::to_string).collect();
    for (name, verdict) in chain.trace(event) {
        let v = match verdict {
            Ok(true) => "matches".to_string(),
            Ok(false) => "no match".to_string(),
            Err(e) => format!("error: {e}"),
        };
        let _ = writeln!(text, "rule {name:?}: {v}");
    }
    let mut lines = String::new();
    let outcome = pipeline.process(event, &mut lines);
    let chain = pipeline.chain();
    let applied: Vec<&str> = chain
        .applied()
        .iter()
        .filter_map(|&i| names.get(i as usize).map(String::as_str))
        .collect();
    let by = chain.last_decided_by();
    let by = match by {
        Some(DecidedBy::Gate) => "the gate".to_string(),
        Some(DecidedBy::Rule(i)) => format!("rule {:?}", names.get(i).map_or("?", |s| s)),
        Some(DecidedBy::RuleError(i)) => format!(
            "rule {:?} (its on_error, after an error)",
            names.get(i).map_or("?", |s| s)
        ),
        Some(DecidedBy::Default) | None => "the default".to_string(),
    };
    let _ = writeln!(
        text,
        "decision: {} by {by}",
        if chain.last_kept() { "keep" } else { "drop" }
    );
    if applied.is_empty() {
        let _ = writeln!(text, "transforms: none");
    } else {
        let _ = writeln!(text, "transforms: {}", applied.join(", "));
    }
    match outcome {
        Outcome::Points(_) => {
            let _ = write!(text, "line protocol:\n{lines}");
        }
        Outcome::Filtered if chain.last_kept() => {
            let _ = writeln!(
                text,
                "line protocol: none (a transform step failed with on_error = \"drop\")"
            );
        }
        Outcome::Filtered => {
            let _ = writeln!(text, "line protocol: none (filtered)");
        }
        Outcome::Held => {
            let _ = writeln!(
                text,
                "line protocol: none yet (held by the rule's throttle)"
            );
        }
        Outcome::Shaped(reason) => {
            let _ = writeln!(
                text,
                "line protocol: none (rate shaping: {})",
                reason.as_str()
            );
        }
        Outcome::Skipped(reason) => {
            let _ = writeln!(
                text,
                "line protocol: none (the schema skips it: {})",
                reason.as_str()
            );
        }
    }
}

/// Arguments of `explain`.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file.
    #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
    config: PathBuf,
    /// An HA event as JSON (bare, or a WebSocket event frame); JSON lines for several, taken in order.
    #[arg(long)]
    event: PathBuf,
    /// The source id the event is taken to come from (`homeassistant`, `mqtt:<name>`).
    #[arg(long, default_value = "homeassistant")]
    source: String,
}

/// Prints the explanation of every event in the file.
pub fn main(args: Args, log_format: Option<crate::config::LogFormat>) -> ExitCode {
    super::init_logging(log_format.unwrap_or_default(), "warn");
    let cfg = match super::load_config(&args.config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let result = (|| {
        let text = std::fs::read_to_string(&args.event)
            .with_context(|| format!("reading {}", args.event.display()))?;
        let events = events_from_file_text(&text, &args.source)?;
        print!("{}", explain_events(&cfg, &events)?);
        anyhow::Ok(())
    })();
    super::report(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"event_type":"state_changed","data":{"entity_id":"switch.kettle","old_state":null,"new_state":{"entity_id":"switch.kettle","state":"on","attributes":{"friendly_name":"Kettle"},"last_changed":"2026-11-26T20:00:00.000001+00:00","last_updated":"2026-11-26T20:00:00.000001+00:00","context":{"id":"01KXTEST000000000000000001","parent_id":null,"user_id":null}}},"origin":"LOCAL","time_fired":"2026-11-26T20:00:00.000001+00:00","context":{"id":"01KXTEST000000000000000001","parent_id":null,"user_id":null}}"#;

    fn config(text: &str) -> Config {
        Config::from_toml_with_env(text, std::path::Path::new("t.toml"), &[]).unwrap()
    }

    #[test]
    fn reports_rules_decision_transforms_and_lines() {
        let cfg = config(
            r#"
            [[filter.rules]]
            name = "lights"
            action = "exclude"
            match = { domain = ["light"] }
            [[filter.rules]]
            name = "switches as numbers"
            action = "include"
            match = { domain = ["switch"] }
            transform = [{ map = "state", values = { on = 1, off = 0 } }]
            "#,
        );
        let event = event_from_json(EVENT, "homeassistant").unwrap();
        let report = explain(&cfg, &event).unwrap();
        assert!(report.contains("rule \"lights\": no match"), "{report}");
        assert!(
            report.contains("rule \"switches as numbers\": matches"),
            "{report}"
        );
        assert!(
            report.contains("decision: keep by rule \"switches as numbers\""),
            "{report}"
        );
        assert!(
            report.contains("transforms: switches as numbers"),
            "{report}"
        );
        assert!(
            report.contains("switch.kettle,domain=switch,entity_id=kettle friendly_name_str=\"Kettle\",value=1.0 1795723200000001000"),
            "{report}"
        );
        // The same event as a WebSocket frame.
        let frame = format!(r#"{{"type":"event","event":{EVENT}}}"#);
        assert_eq!(event_from_json(&frame, "homeassistant").unwrap(), event);
    }

    #[test]
    fn bad_event_files_are_reported() {
        assert!(event_from_json("{", "homeassistant").is_err());
        assert!(event_from_json(r#"{"state":"on"}"#, "homeassistant").is_err());
        let broken = EVENT.replace(r#""time_fired":"2026"#, r#""time_fired":"x2026"#);
        assert!(event_from_json(&broken, "homeassistant").is_err());
    }
}
