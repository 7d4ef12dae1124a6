//! The built-in rule set, the rules in force, and the counter an anomaly rule learns.
//!
//! These are the `[alerts]` settings' behaviour that names metrics, so they live with
//! the evaluator that reads those metrics; `config::alerts` holds the settings (and the
//! built-in rules' names, for `disabled_rules`) without naming a metric.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::alerts::{
    AlertsConfig, Condition, Direction, RuleConfig, Severity, default_half_life,
    default_resolve_after, default_source, default_window,
};
use crate::config::validate::StageCheck;
use crate::monitor::metrics as names;

/// The built-in rule set: HA disconnected > 2 min, no writes > 5 min, buffer > 80 %, dead letters rising, event-rate anomaly.
pub fn builtin_rules() -> Vec<RuleConfig> {
    let rule = |name: &str, condition, for_secs, severity| RuleConfig {
        name: name.to_string(),
        condition,
        for_: Duration::from_secs(for_secs),
        resolve_after: default_resolve_after(),
        severity,
        notifiers: None,
        recovery: true,
        description: None,
    };
    vec![
        rule(
            "ha_disconnected",
            Condition::Disconnected {
                source: default_source(),
            },
            120,
            Severity::Critical,
        ),
        rule(
            "no_writes",
            Condition::NoWrites {
                after: Duration::from_secs(300),
            },
            0,
            Severity::Critical,
        ),
        rule(
            "buffer_filling",
            Condition::BufferFull {
                above_percent: 80.0,
                clear_percent: Some(70.0),
            },
            60,
            Severity::Warning,
        ),
        rule(
            "dead_letters_rising",
            Condition::DeadLetters {
                window: default_window(),
                min_increase: 1.0,
            },
            0,
            Severity::Warning,
        ),
        rule(
            "event_rate_anomaly",
            Condition::Anomaly {
                metric: Some(names::SOURCE_RECEIVED_EVENTS.to_string()),
                domain: None,
                labels: BTreeMap::from([("source".to_string(), default_source())]),
                window: default_window(),
                warmup: Duration::from_secs(6 * 3600),
                half_life: default_half_life(),
                z: 5.0,
                direction: Direction::Both,
                daily: true,
            },
            600,
            Severity::Warning,
        ),
    ]
}

impl Condition {
    /// The counter an `anomaly` condition learns and the labels that select its series
    /// (`domain` folded in); `None` for other conditions.
    pub fn anomaly_series(&self) -> Option<(&str, BTreeMap<String, String>)> {
        let Condition::Anomaly {
            metric,
            domain,
            labels,
            ..
        } = self
        else {
            return None;
        };
        let mut labels = labels.clone();
        if let Some(domain) = domain {
            labels.insert("domain".to_string(), domain.clone());
        }
        let default = if domain.is_some() {
            names::PIPELINE_RECEIVED_EVENTS
        } else {
            names::SOURCE_RECEIVED_EVENTS
        };
        let metric = metric.as_deref().unwrap_or(default);
        Some((metric, labels))
    }
}

impl AlertsConfig {
    /// The rules in force: the built-ins not disabled or replaced, then the user's.
    pub fn effective_rules(&self) -> Vec<RuleConfig> {
        let mut rules = Vec::new();
        if self.builtin_rules {
            for rule in builtin_rules() {
                let disabled = self.disabled_rules.contains(&rule.name);
                let replaced = self.rules.iter().any(|r| r.name == rule.name);
                if !disabled && !replaced {
                    rules.push(rule);
                }
            }
        }
        rules.extend(self.rules.iter().cloned());
        rules
    }
}

impl StageCheck for Condition {
    /// An anomaly rule with a `domain` reads the pipeline's events by domain: a `metric`
    /// given beside it must be that counter.
    fn stage_check(&self) -> Result<(), String> {
        if let Condition::Anomaly {
            metric,
            domain: Some(_),
            ..
        } = self
            && metric
                .as_ref()
                .is_some_and(|m| m != names::PIPELINE_RECEIVED_EVENTS)
        {
            return Err(format!(
                "domain reads {}; leave metric out",
                names::PIPELINE_RECEIVED_EVENTS
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::alerts::BUILTIN_RULE_NAMES;

    fn parse(text: &str) -> AlertsConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn built_ins_are_on_and_can_be_disabled_or_replaced() {
        let names = |c: &AlertsConfig| -> Vec<String> {
            c.effective_rules().into_iter().map(|r| r.name).collect()
        };
        assert_eq!(names(&AlertsConfig::default()), BUILTIN_RULE_NAMES);
        let c = parse(
            r#"
            disabled_rules = ["event_rate_anomaly"]
            [[rules]]
            name = "no_writes"
            condition = { type = "no_writes", after = "1m" }
            for = "30s"
            "#,
        );
        c.validate().expect("valid");
        assert_eq!(
            names(&c),
            [
                "ha_disconnected",
                "buffer_filling",
                "dead_letters_rising",
                "no_writes"
            ]
        );
        let mine = c.effective_rules().pop().unwrap();
        assert_eq!(mine.for_, Duration::from_secs(30));
        assert_eq!(mine.resolve_after, Duration::from_secs(60));
        assert_eq!(mine.severity, Severity::Warning);
        assert!(mine.recovery && mine.notifiers.is_none());
        assert_eq!(
            mine.condition,
            Condition::NoWrites {
                after: Duration::from_secs(60)
            }
        );
        assert!(parse("builtin_rules = false").effective_rules().is_empty());
    }

    #[test]
    fn an_anomaly_rule_can_watch_a_domain() {
        let c = parse(
            r#"[[rules]]
            name = "lights"
            condition = { type = "anomaly", domain = "light", labels = { source = "homeassistant" } }"#,
        );
        c.validate().expect("valid");
        let rule = c.effective_rules().pop().expect("rule");
        let (metric, labels) = rule.condition.anomaly_series().expect("anomaly");
        assert_eq!(metric, names::PIPELINE_RECEIVED_EVENTS);
        assert_eq!(
            labels,
            BTreeMap::from([
                ("domain".to_string(), "light".to_string()),
                ("source".to_string(), "homeassistant".to_string())
            ])
        );
        // Without a domain: the source's received events, as before.
        let builtin = builtin_rules().pop().expect("anomaly built-in");
        let (metric, labels) = builtin.condition.anomaly_series().expect("anomaly");
        assert_eq!(metric, names::SOURCE_RECEIVED_EVENTS);
        assert_eq!(labels["source"], "homeassistant");
        // A domain with another metric, or another domain label, is refused.
        let key = |text: &str| parse(text).validate().expect_err("invalid").0;
        for cond in [
            r#"{ type = "anomaly", domain = "light", metric = "ha_ingestor_sink_sent_points_total" }"#,
            r#"{ type = "anomaly", domain = "light", labels = { domain = "switch" } }"#,
            r#"{ type = "anomaly", domain = "" }"#,
        ] {
            assert_eq!(
                key(&format!("[[rules]]\nname = \"r\"\ncondition = {cond}")),
                "alerts.rules[0].condition",
                "{cond}"
            );
        }
    }
}
