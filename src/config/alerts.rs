//! The `[alerts]` section: rules and notifiers, and the names of the built-in rules.
//!
//! The built-in rules themselves, the rules in force and the counter an anomaly rule
//! learns name metrics, so they are the alert evaluator's: `monitor::alerts::builtin`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::secret::redact_url;
use super::tls::MqttTlsConfig;
use super::validate::StageCheck;

/// Alerting: rules evaluated on a fixed tick, notifications to webhooks, MQTT and Home Assistant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Evaluate rules at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often every rule is evaluated.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Include the built-in rules (HA disconnected, no writes, buffer filling, dead letters, event-rate anomaly).
    #[serde(default = "default_true")]
    pub builtin_rules: bool,
    /// Names of built-in rules to leave out.
    #[serde(default)]
    pub disabled_rules: Vec<String>,
    /// The user's rules; one with a built-in rule's name replaces it.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Where notifications go; rules name them (or, naming none, use all).
    #[serde(default)]
    pub notifiers: Vec<NotifierConfig>,
}

fn default_true() -> bool {
    true
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            enabled: true,
            interval: default_interval(),
            builtin_rules: true,
            disabled_rules: Vec::new(),
            rules: Vec::new(),
            notifiers: Vec::new(),
        }
    }
}

/// How bad a firing rule is; carried in every notification.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Needs attention soon.
    #[default]
    Warning,
    /// Data is at risk now.
    Critical,
}

impl Severity {
    /// The name used in JSON, labels and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name; used in notifications, `/alerts` and the `rule` label.
    pub name: String,
    /// What is watched.
    pub condition: Condition,
    /// How long the condition must hold before the rule fires (pending until then).
    #[serde(rename = "for", default, with = "humantime_serde")]
    pub for_: Duration,
    /// How long the condition must stay clear before a firing rule resolves (hysteresis).
    #[serde(default = "default_resolve_after", with = "humantime_serde")]
    pub resolve_after: Duration,
    /// `info`, `warning` or `critical`.
    #[serde(default)]
    pub severity: Severity,
    /// Notifier names; absent means every configured notifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifiers: Option<Vec<String>>,
    /// Also notify when the rule resolves.
    #[serde(default = "default_true")]
    pub recovery: bool,
    /// Text put before the generated summary in notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// How long a condition stays clear before a firing rule resolves, by default: 1 min.
pub(crate) fn default_resolve_after() -> Duration {
    Duration::from_secs(60)
}

/// Sum, largest or smallest of the series a selector matches.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Sum over the matching series.
    #[default]
    Sum,
    /// The largest.
    Max,
    /// The smallest.
    Min,
}

/// Which deviations of an anomaly rule count.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Both drops and spikes.
    #[default]
    Both,
    /// Only a rate far below the baseline.
    Drop,
    /// Only a rate far above the baseline.
    Spike,
}

/// What a rule watches. Metrics are read from the registry that `/metrics` serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A metric's value, or its per-second rate over `window`, above and/or below a threshold.
    Threshold {
        /// Metric name as served at `/metrics` (histograms: `_sum`, `_count`).
        metric: String,
        /// Only series with these label values.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// How matching series are combined.
        #[serde(default)]
        aggregate: Aggregate,
        /// Compare the per-second rate over `window` instead of the value.
        #[serde(default)]
        rate: bool,
        /// Window of the rate.
        #[serde(default = "default_window", with = "humantime_serde")]
        window: Duration,
        /// Active when the value is above this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        above: Option<f64>,
        /// Active when the value is below this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        below: Option<f64>,
        /// Once firing, stays active until the value is back past this level (value hysteresis).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clear: Option<f64>,
    },
    /// A source is not connected.
    Disconnected {
        /// Source name (`homeassistant`).
        #[serde(default = "default_source")]
        source: String,
    },
    /// No event from a source for `after`.
    NoEvents {
        /// Source name (`homeassistant`).
        #[serde(default = "default_source")]
        source: String,
        /// Quiet time that makes the condition true.
        #[serde(with = "humantime_serde")]
        after: Duration,
    },
    /// No point accepted by the sink for `after`.
    NoWrites {
        /// Time without a written point that makes the condition true.
        #[serde(with = "humantime_serde")]
        after: Duration,
    },
    /// The durable buffer is more than `above_percent` full.
    BufferFull {
        /// Fill in percent of `buffer.max_bytes`.
        above_percent: f64,
        /// Once firing, stays active until the fill is below this percent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clear_percent: Option<f64>,
    },
    /// Dead letters grew by at least `min_increase` within `window`.
    DeadLetters {
        /// Window of the increase.
        #[serde(default = "default_window", with = "humantime_serde")]
        window: Duration,
        /// Smallest increase that counts.
        #[serde(default = "default_min_increase")]
        min_increase: f64,
    },
    /// The rate of a counter (events of a source, or of a domain) deviates from its learned baseline.
    Anomaly {
        /// Counter whose rate is learned; unset: events received by source, or by domain when `domain` is set.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<String>,
        /// Watch the events of this Home Assistant domain (`light`): the pipeline's per-domain counter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
        /// Only series with these label values (`source`, `event_type`, `domain` where a metric has it).
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// Window of the rate.
        #[serde(default = "default_window", with = "humantime_serde")]
        window: Duration,
        /// Learning time before the rule may fire.
        #[serde(default = "default_warmup", with = "humantime_serde")]
        warmup: Duration,
        /// Half-life of the baseline's memory.
        #[serde(default = "default_half_life", with = "humantime_serde")]
        half_life: Duration,
        /// Deviation, in standard deviations, that counts as anomalous.
        #[serde(default = "default_z")]
        z: f64,
        /// `both`, `drop` or `spike`.
        #[serde(default)]
        direction: Direction,
        /// Learn one baseline per hour of the day (UTC), so the daily cycle is not an anomaly.
        #[serde(default = "default_true")]
        daily: bool,
    },
}

/// The source a rule watches by default: `homeassistant`.
pub(crate) fn default_source() -> String {
    "homeassistant".to_string()
}
/// The window of rates and increases by default: 5 min.
pub(crate) fn default_window() -> Duration {
    Duration::from_secs(300)
}
fn default_min_increase() -> f64 {
    1.0
}
fn default_warmup() -> Duration {
    Duration::from_secs(3600)
}
/// The half-life of an anomaly baseline by default: 1 h.
pub(crate) fn default_half_life() -> Duration {
    Duration::from_secs(3600)
}
fn default_z() -> f64 {
    4.0
}

/// A notification target.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum NotifierConfig {
    /// A JSON POST to a URL, retried with backoff.
    Webhook {
        /// Unique name, used by rules and in the `notifier` label.
        name: String,
        /// Where to POST.
        url: String,
        /// Extra request headers (e.g. an authorization).
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Timeout of one request.
        #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
        timeout: Duration,
        /// Attempts after the first one failed.
        #[serde(default = "default_retries")]
        retries: u32,
        /// First retry delay; later delays are drawn (full jitter) below a bound that doubles per attempt up to `retry_max`.
        #[serde(default = "default_retry_min", with = "humantime_serde")]
        retry_min: Duration,
        /// Longest retry delay.
        #[serde(default = "default_retry_max", with = "humantime_serde")]
        retry_max: Duration,
        /// TLS for an `https://` URL: an extra CA (`ca_file`), a client certificate (`cert_file` + `key_file`).
        #[serde(default)]
        tls: MqttTlsConfig,
        /// Let credentials (URL user/password, an authorization-like header) go to a non-loopback host over `http://`.
        #[serde(default)]
        allow_insecure_transport: bool,
    },
    /// A publish to an MQTT broker: `<topic>/<rule>`, retained by default so the topic holds each rule's state.
    Mqtt {
        /// Unique name.
        name: String,
        /// Broker host.
        host: String,
        /// Broker port (default 1883, or 8883 with `tls`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        /// Topic prefix; each rule publishes to `<topic>/<rule name>`.
        #[serde(default = "default_mqtt_topic")]
        topic: String,
        /// 0, 1 or 2.
        #[serde(default = "default_qos")]
        qos: u8,
        /// Publish retained, so a subscriber sees every rule's current state at once.
        #[serde(default = "default_true")]
        retain: bool,
        /// MQTT client id.
        #[serde(default = "default_client_id")]
        client_id: String,
        /// User name, if the broker asks for one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// Password, with `username`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        /// TLS (MQTT over TLS, "mqtts"): present turns it on; `tls = {}` trusts the system and web roots.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<MqttTlsConfig>,
        /// Let the password go to a non-loopback broker without TLS.
        #[serde(default)]
        allow_insecure_transport: bool,
    },
    /// Home Assistant itself, over the source's WebSocket connection.
    Homeassistant {
        /// Unique name.
        name: String,
        /// Create a `persistent_notification` (one per rule, replaced by the recovery notice).
        #[serde(default = "default_true")]
        notification: bool,
        /// Fire an event automations can trigger on.
        #[serde(default = "default_true")]
        event: bool,
        /// Its event type.
        #[serde(default = "default_event_type")]
        event_type: String,
        /// The `[[homeassistant]]` (by `name`) to tell; unset tells every configured home, since an alert about the ingestor concerns each home it records.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
    },
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retries() -> u32 {
    5
}
fn default_retry_min() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_mqtt_topic() -> String {
    "ha-ingestor/alerts".to_string()
}
fn default_qos() -> u8 {
    1
}
fn default_client_id() -> String {
    "ha-ingestor-alerts".to_string()
}
fn default_event_type() -> String {
    "ha_ingestor_alert".to_string()
}

impl std::fmt::Debug for NotifierConfig {
    // Hand-written so a webhook URL's credentials, its headers and the MQTT password stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifierConfig::Webhook {
                name,
                url,
                retries,
                tls,
                allow_insecure_transport,
                ..
            } => f
                .debug_struct("Webhook")
                .field("name", name)
                .field("url", &redact_url(url))
                .field("headers", &"<redacted>")
                .field("retries", retries)
                .field("tls", tls)
                .field("allow_insecure_transport", allow_insecure_transport)
                .finish_non_exhaustive(),
            NotifierConfig::Mqtt {
                name,
                host,
                port,
                topic,
                username,
                tls,
                allow_insecure_transport,
                ..
            } => f
                .debug_struct("Mqtt")
                .field("name", name)
                .field("host", host)
                .field("port", port)
                .field("topic", topic)
                .field("username", username)
                .field("password", &"<redacted>")
                .field("tls", tls)
                .field("allow_insecure_transport", allow_insecure_transport)
                .finish_non_exhaustive(),
            NotifierConfig::Homeassistant {
                name,
                notification,
                event,
                event_type,
                instance,
            } => f
                .debug_struct("Homeassistant")
                .field("name", name)
                .field("notification", notification)
                .field("event", event)
                .field("event_type", event_type)
                .field("instance", instance)
                .finish(),
        }
    }
}

impl NotifierConfig {
    /// The configured name.
    pub fn name(&self) -> &str {
        match self {
            NotifierConfig::Webhook { name, .. }
            | NotifierConfig::Mqtt { name, .. }
            | NotifierConfig::Homeassistant { name, .. } => name,
        }
    }
}

/// Names of the built-in rules, for `disabled_rules` (the rules are `monitor::alerts::builtin`).
pub const BUILTIN_RULE_NAMES: &[&str] = &[
    "ha_disconnected",
    "no_writes",
    "buffer_filling",
    "dead_letters_rising",
    "event_rate_anomaly",
];

impl AlertsConfig {
    /// Checks names, references and numbers; the error names the key at fault.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: String, message: String| Err((key, message));
        if self.interval.is_zero() {
            return err("alerts.interval".into(), "must be above 0s".into());
        }
        for name in &self.disabled_rules {
            if !BUILTIN_RULE_NAMES.contains(&name.as_str()) {
                return err(
                    "alerts.disabled_rules".into(),
                    format!(
                        "{name:?} is not a built-in rule (known: {})",
                        BUILTIN_RULE_NAMES.join(", ")
                    ),
                );
            }
        }
        let mut notifier_names = Vec::new();
        for (i, n) in self.notifiers.iter().enumerate() {
            let key = format!("alerts.notifiers[{i}]");
            if n.name().is_empty() || notifier_names.contains(&n.name()) {
                return err(
                    format!("{key}.name"),
                    format!("{:?} must be non-empty and unique", n.name()),
                );
            }
            notifier_names.push(n.name());
            match n {
                NotifierConfig::Webhook { url, .. } => match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => {
                        return err(
                            format!("{key}.url"),
                            "must be an http:// or https:// URL".into(),
                        );
                    }
                },
                NotifierConfig::Mqtt {
                    qos,
                    topic,
                    username,
                    password,
                    ..
                } => {
                    if *qos > 2 {
                        return err(format!("{key}.qos"), "must be 0, 1 or 2".into());
                    }
                    if topic.is_empty() || topic.contains(['+', '#']) {
                        return err(
                            format!("{key}.topic"),
                            "must be a non-empty topic without wildcards".into(),
                        );
                    }
                    if password.is_some() && username.is_none() {
                        return err(format!("{key}.password"), "needs a username as well".into());
                    }
                }
                NotifierConfig::Homeassistant { event_type, .. } => {
                    if event_type.is_empty() {
                        return err(format!("{key}.event_type"), "must not be empty".into());
                    }
                }
            }
        }
        let mut rule_names: Vec<&str> = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let key = format!("alerts.rules[{i}]");
            if r.name.is_empty() || rule_names.contains(&r.name.as_str()) {
                return err(
                    format!("{key}.name"),
                    format!("{:?} must be non-empty and unique", r.name),
                );
            }
            rule_names.push(&r.name);
            if let Some(list) = &r.notifiers
                && let Some(unknown) = list.iter().find(|n| !notifier_names.contains(&n.as_str()))
            {
                return err(
                    format!("{key}.notifiers"),
                    format!("no notifier named {unknown:?}"),
                );
            }
            r.condition
                .validate()
                .or_else(|m| err(format!("{key}.condition"), m))?;
        }
        Ok(())
    }
}

impl Condition {
    fn validate(&self) -> Result<(), String> {
        let positive = |d: &Duration, what: &str| {
            if d.is_zero() {
                Err(format!("{what} must be above 0s"))
            } else {
                Ok(())
            }
        };
        match self {
            Condition::Threshold {
                metric,
                above,
                below,
                window,
                ..
            } => {
                if metric.is_empty() {
                    return Err("metric must not be empty".into());
                }
                if above.is_none() && below.is_none() {
                    return Err("needs `above` or `below`".into());
                }
                positive(window, "window")
            }
            Condition::Disconnected { .. } => Ok(()),
            Condition::NoEvents { after, .. } | Condition::NoWrites { after } => {
                positive(after, "after")
            }
            Condition::BufferFull {
                above_percent,
                clear_percent,
            } => {
                if !(0.0..=100.0).contains(above_percent) {
                    return Err("above_percent must be within 0..100".into());
                }
                if clear_percent.is_some_and(|c| c > *above_percent) {
                    return Err("clear_percent must not be above above_percent".into());
                }
                Ok(())
            }
            Condition::DeadLetters { window, .. } => positive(window, "window"),
            Condition::Anomaly {
                metric,
                domain,
                labels,
                window,
                half_life,
                z,
                ..
            } => {
                positive(window, "window")?;
                positive(half_life, "half_life")?;
                if z.is_nan() || *z <= 0.0 {
                    return Err("z must be above 0".into());
                }
                if metric.as_ref().is_some_and(String::is_empty) {
                    return Err("metric must not be empty".into());
                }
                if let Some(domain) = domain {
                    if domain.is_empty() {
                        return Err("domain must not be empty".into());
                    }
                    // The counter a `domain` reads is the evaluator's to name.
                    self.stage_check()?;
                    if labels.get("domain").is_some_and(|d| d != domain) {
                        return Err("labels.domain differs from domain".into());
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AlertsConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn mistakes_are_named_by_key() {
        let key = |text: &str| parse(text).validate().expect_err("invalid").0;
        assert_eq!(key(r#"disabled_rules = ["nope"]"#), "alerts.disabled_rules");
        assert_eq!(
            key(r#"[[rules]]
                name = "r"
                notifiers = ["missing"]
                condition = { type = "no_writes", after = "1m" }"#),
            "alerts.rules[0].notifiers"
        );
        assert_eq!(
            key(r#"[[rules]]
                name = "r"
                condition = { type = "threshold", metric = "m" }"#),
            "alerts.rules[0].condition"
        );
        assert_eq!(
            key(r#"[[notifiers]]
                type = "mqtt"
                name = "m"
                host = "h"
                topic = "a/#""#),
            "alerts.notifiers[0].topic"
        );
        assert_eq!(
            key(r#"[[notifiers]]
                type = "webhook"
                name = "w"
                url = "ftp://x""#),
            "alerts.notifiers[0].url"
        );
        assert_eq!(
            key(r#"[[notifiers]]
                type = "homeassistant"
                name = "a"
                [[notifiers]]
                type = "homeassistant"
                name = "a""#),
            "alerts.notifiers[1].name"
        );
        // Unknown keys are errors, in conditions too.
        assert!(
            toml::from_str::<AlertsConfig>(
                r#"[[rules]]
                name = "r"
                condition = { type = "no_writes", after = "1m", typo = 1 }"#
            )
            .is_err()
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = parse(
            r#"[[notifiers]]
            type = "webhook"
            name = "w"
            url = "https://user:pw@example.org/hook?key=s3cret"
            headers = { Authorization = "Bearer s3cret" }
            [[notifiers]]
            type = "mqtt"
            name = "m"
            host = "h"
            username = "u"
            password = "s3cret""#,
        );
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("pw@"),
            "{debug}"
        );
    }
}
