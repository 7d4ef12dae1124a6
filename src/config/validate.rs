//! [`Config::validate`]: what types alone cannot check (complete credentials, sane
//! sizes, valid URLs, unique names), one function per section, called in a fixed
//! order so the first error reported is always the same.
//!
//! Two checks need a stage's own knowledge: that a broker's subscriptions compile
//! (the MQTT decoders) and which counter an anomaly rule with a `domain` reads (the
//! alert evaluator's metric names). Config imports no stage, so those stages
//! implement [`StageCheck`] for the config types, beside their own code.

use std::collections::BTreeSet;
use std::time::Duration;

use super::alerts::{AlertsConfig, NotifierConfig};
use super::{
    BufferConfig, Config, ConfigError, FilterConfig, Flavor, HaSubscription, HomeAssistantConfig,
    InfluxApi, InfluxConfig, LogConfig, MqttConfig, SchemaConfig,
};

/// A check of a config value that only a stage can make, because it needs the stage's
/// code or names; the stage implements it for the config type beside that code, so
/// loading refuses what the stage would refuse without `config` importing the stage.
pub(crate) trait StageCheck {
    /// `Err` says what is wrong, to be reported under the value's config key.
    fn stage_check(&self) -> Result<(), String>;
}

/// The error for `key`.
fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message,
    }
}

impl Config {
    /// Checks what types alone cannot: complete credentials, sane sizes, valid URLs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.alerts
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid { key, message })?;
        let homes = validate_homeassistant(&self.homeassistant)?;
        validate_alert_homes(&self.alerts, &homes)?;
        if let Some(influx) = &self.influxdb {
            self.validate_influx_targets(influx)?;
            validate_influxdb(influx)?;
        }
        validate_filter(&self.filter)?;
        validate_schema(&self.schema)?;
        validate_buffer(&self.buffer)?;
        validate_log(&self.log)?;
        self.monitor.validate()?;
        self.retention.validate()?;
        self.validate_retention_store()?;
        validate_mqtt(&self.mqtt)?;
        if let Some(f) = self.tls_findings().into_iter().next() {
            return Err(invalid(&f.key, f.message));
        }
        if let Some(f) = self.transport_findings().into_iter().find(|f| !f.allowed) {
            return Err(invalid(&f.key, f.message));
        }
        Ok(())
    }

    /// What `allow_insecure_transport` lets through: one line per peer that gets
    /// credentials in clear text, for `check` and the start-up log to say.
    pub fn transport_warnings(&self) -> Vec<String> {
        self.transport_findings()
            .into_iter()
            .filter(|f| f.allowed)
            .map(|f| format!("{}: {}", f.key, f.message))
            .collect()
    }

    /// The peers whose TLS certificate is not verified (`insecure_skip_verify`), by the key of their `tls` table.
    pub fn tls_unverified_peers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for ha in &self.homeassistant {
            if ha.tls.insecure_skip_verify {
                out.push(format!("homeassistant[{}].tls", ha.name));
            }
        }
        if let Some(influx) = &self.influxdb {
            for t in influx.targets() {
                if t.tls.insecure_skip_verify {
                    out.push(format!("influxdb[{}].tls", t.target_name()));
                }
            }
        }
        for m in &self.mqtt {
            if m.tls.insecure_skip_verify {
                out.push(format!("mqtt[{}].tls", m.name));
            }
        }
        for n in &self.alerts.notifiers {
            let skip = match n {
                NotifierConfig::Webhook { tls, .. } => tls.insecure_skip_verify,
                NotifierConfig::Mqtt { tls, .. } => {
                    tls.as_ref().is_some_and(|t| t.insecure_skip_verify)
                }
                NotifierConfig::Homeassistant { .. } => false,
            };
            if skip {
                out.push(format!("alerts.notifiers[{}].tls", n.name()));
            }
        }
        out
    }

    /// Every peer to which credentials would travel without TLS to a host that is not loopback.
    fn transport_findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        for ha in &self.homeassistant {
            let ws = ha.websocket_url();
            if let Ok(url) = url::Url::parse(&ws)
                && url.scheme() == "ws"
                && ha.token.is_some()
                // The add-on's Supervisor proxy: on the Supervisor's internal network only.
                && url.host_str() != Some("supervisor")
            {
                out.push(Finding::clear_text(
                    "homeassistant",
                    &format!("[homeassistant] {:?}", ha.name),
                    "the access token",
                    &url,
                    ha.allow_insecure_transport,
                ));
            }
        }
        if let Some(influx) = &self.influxdb {
            for target in influx.targets() {
                let Ok(url) = url::Url::parse(&target.url) else {
                    continue;
                };
                let credentials = target.password.is_some()
                    || target.token.is_some()
                    || !url.username().is_empty()
                    || url.password().is_some();
                if url.scheme() == "http" && credentials {
                    out.push(Finding::clear_text(
                        "influxdb",
                        &format!("[influxdb] target {:?}", target.target_name()),
                        "the password or token",
                        &url,
                        target.allow_insecure_transport,
                    ));
                }
            }
        }
        for m in &self.mqtt {
            if let (Ok(url), Ok((_, _, false))) = (url::Url::parse(&m.url), m.endpoint())
                && m.password.is_some()
            {
                out.push(Finding::clear_text(
                    &format!("mqtt[{}]", m.name),
                    &format!("[[mqtt]] {:?}", m.name),
                    "the password",
                    &url,
                    m.allow_insecure_transport,
                ));
            }
        }
        for (i, n) in self.alerts.notifiers.iter().enumerate() {
            let section = format!("alerts.notifiers[{i}]");
            let what = format!("notifier {:?}", n.name());
            match n {
                NotifierConfig::Webhook {
                    url,
                    headers,
                    allow_insecure_transport,
                    ..
                } => {
                    let Ok(url) = url::Url::parse(url) else {
                        continue;
                    };
                    let credentials = !url.username().is_empty()
                        || url.password().is_some()
                        || headers.keys().any(|k| is_credential_header(k));
                    if url.scheme() == "http" && credentials {
                        out.push(Finding::clear_text(
                            &section,
                            &what,
                            "its credentials (URL user/password or an authorization header)",
                            &url,
                            *allow_insecure_transport,
                        ));
                    }
                }
                NotifierConfig::Mqtt {
                    host,
                    password: Some(_),
                    tls: None,
                    allow_insecure_transport,
                    ..
                } => {
                    if let Ok(url) = url::Url::parse(&format!("mqtt://{host}")) {
                        out.push(Finding::clear_text(
                            &section,
                            &what,
                            "the password",
                            &url,
                            *allow_insecure_transport,
                        ));
                    }
                }
                _ => {}
            }
        }
        out.retain(|f| !f.loopback);
        out
    }

    /// TLS settings that contradict each other: `insecure_skip_verify` with a `ca_file`.
    fn tls_findings(&self) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut check = |key: String, ca: bool, skip: bool| {
            if ca && skip {
                out.push(Finding {
                    key: format!("{key}.insecure_skip_verify"),
                    message: "cannot go with ca_file: skipping verification would ignore the CA; \
                              remove one of them"
                        .into(),
                    allowed: false,
                    loopback: false,
                });
            }
        };
        for ha in &self.homeassistant {
            check(
                "homeassistant.tls".into(),
                ha.tls.ca_file.is_some(),
                ha.tls.insecure_skip_verify,
            );
        }
        if let Some(influx) = &self.influxdb {
            for t in influx.targets() {
                check(
                    "influxdb.tls".into(),
                    t.tls.ca_file.is_some(),
                    t.tls.insecure_skip_verify,
                );
            }
        }
        for m in &self.mqtt {
            check(
                format!("mqtt[{}].tls", m.name),
                m.tls.ca_file.is_some(),
                m.tls.insecure_skip_verify,
            );
        }
        for (i, n) in self.alerts.notifiers.iter().enumerate() {
            let tls = match n {
                NotifierConfig::Webhook { tls, .. } => Some(tls),
                NotifierConfig::Mqtt { tls, .. } => tls.as_ref(),
                NotifierConfig::Homeassistant { .. } => None,
            };
            if let Some(tls) = tls {
                check(
                    format!("alerts.notifiers[{i}].tls"),
                    tls.ca_file.is_some(),
                    tls.insecure_skip_verify,
                );
            }
        }
        out
    }
}

/// One transport problem: the key that settles it and what is wrong.
struct Finding {
    /// The key to set (`homeassistant.allow_insecure_transport`).
    key: String,
    /// What travels where.
    message: String,
    /// Whether the config allows it (then it is a warning, not an error).
    allowed: bool,
    /// Whether the host is loopback (then it is no finding at all).
    loopback: bool,
}

impl Finding {
    /// Credentials (`what`) of `peer` sent without TLS to `url`'s host.
    fn clear_text(section: &str, peer: &str, what: &str, url: &url::Url, allowed: bool) -> Finding {
        let host = url.host_str().unwrap_or_default();
        let message = if allowed {
            format!(
                "{peer} sends {what} in clear text to {host} ({}://, no TLS); allowed by allow_insecure_transport",
                url.scheme()
            )
        } else {
            format!(
                "{peer} would send {what} in clear text to {host} ({}://, no TLS): use TLS, or set {section}.allow_insecure_transport = true if the network is trusted",
                url.scheme()
            )
        };
        Finding {
            key: format!("{section}.allow_insecure_transport"),
            message,
            allowed,
            loopback: is_loopback(url),
        }
    }
}

/// Whether `url`'s host is loopback: `localhost`, 127.0.0.0/8 or `::1`. Other names are
/// not resolved (a name's address can change after the check), so they count as remote.
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        // Hosts of schemes URL parsing does not know (mqtt://) come as text, addresses included.
        Some(url::Host::Domain(d)) => {
            let d = d.trim_start_matches('[').trim_end_matches(']');
            d.trim_end_matches('.').eq_ignore_ascii_case("localhost")
                || d.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether a webhook header carries a credential (authorization, tokens, keys, cookies).
fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "key",
        "secret",
        "cookie",
        "password",
        "signature",
    ]
    .iter()
    .any(|w| name.contains(w))
}

impl Config {
    /// `[retention]` acts through InfluxQL on the first target, which VictoriaMetrics does not speak.
    fn validate_retention_store(&self) -> Result<(), ConfigError> {
        let r = &self.retention;
        match &self.influxdb {
            Some(influx)
                if influx.flavor == Flavor::VictoriaMetrics
                    && (r.raw_keep.is_some() || !r.downsample.is_empty()) =>
            {
                Err(invalid(
                    "retention",
                    "needs InfluxQL (retention policies, continuous queries), which a flavor = \"victoriametrics\" target does not have; VictoriaMetrics keeps data for its -retentionPeriod (docs/stores.md)".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Several `[[influxdb]]` targets: distinct names, valid measurement globs, and each one valid on its own.
    fn validate_influx_targets(&self, influx: &InfluxConfig) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for target in influx.targets() {
            let name = target.target_name();
            if !names.insert(name) {
                return Err(ConfigError::Invalid {
                    key: "influxdb.name".into(),
                    message: format!(
                        "{name:?} is used by two targets; give each [[influxdb]] a distinct name"
                    ),
                });
            }
            for glob in &target.measurements {
                globset::Glob::new(glob).map_err(|e| ConfigError::Invalid {
                    key: "influxdb.measurements".into(),
                    message: format!("target {name:?}: {glob:?}: {e}"),
                })?;
            }
        }
        for more in &influx.more {
            let alone = Config {
                influxdb: Some(more.clone()),
                ..self.clone()
            };
            alone.validate().map_err(|e| match e {
                ConfigError::Invalid { key, message } => ConfigError::Invalid {
                    key,
                    message: format!("target {:?}: {message}", more.target_name()),
                },
                other => other,
            })?;
        }
        Ok(())
    }
}

/// Checks the `[[homeassistant]]` sources and returns their names (each unique).
fn validate_homeassistant(homes: &[HomeAssistantConfig]) -> Result<BTreeSet<&str>, ConfigError> {
    let mut names = BTreeSet::new();
    for ha in homes {
        if ha.name.is_empty()
            || !ha
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "homeassistant.name",
                format!("{:?}: use letters, digits, '_' and '-' only", ha.name),
            ));
        }
        if !names.insert(ha.name.as_str()) {
            return Err(invalid(
                "homeassistant.name",
                format!(
                    "{:?} is used twice: give each [[homeassistant]] its own name (it names the cursor file and the instance tag)",
                    ha.name
                ),
            ));
        }
        let ws = ha.websocket_url();
        let parsed = url::Url::parse(&ws)
            .map_err(|e| invalid("homeassistant.url", format!("{ws:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "ws" | "wss") {
            return Err(invalid(
                "homeassistant.url",
                format!(
                    "scheme must be ws, wss, http or https, not {}",
                    parsed.scheme()
                ),
            ));
        }
        match ha.token.as_deref() {
            None => {
                return Err(invalid(
                    "homeassistant.token",
                    "a long-lived access token is required (token, token_file or HA_INGESTOR_HOMEASSISTANT__TOKEN)".into(),
                ));
            }
            Some(t) if t.trim().is_empty() => {
                return Err(invalid("homeassistant.token", "the token is empty".into()));
            }
            Some(_) => {}
        }
        if ha.reconnect_min.is_zero() || ha.reconnect_min > ha.reconnect_max {
            return Err(invalid(
                "homeassistant.reconnect_min",
                "must be above zero and at most reconnect_max".into(),
            ));
        }
        if ha.max_message_bytes < 1 << 16 {
            return Err(invalid(
                "homeassistant.max_message_bytes",
                "must be at least 65536".into(),
            ));
        }
        if ha.backfill_chunk == 0 {
            return Err(invalid(
                "homeassistant.backfill_chunk",
                "must be at least 1".into(),
            ));
        }
        if ha.backfill_window.is_zero() {
            return Err(invalid(
                "homeassistant.backfill_window",
                "must be above zero".into(),
            ));
        }
        if ha.ping_interval.is_zero() {
            return Err(invalid(
                "homeassistant.ping_interval",
                "must be above zero".into(),
            ));
        }
        if ha.pong_timeout.is_zero() {
            return Err(invalid(
                "homeassistant.pong_timeout",
                "must be above zero".into(),
            ));
        }
        match ha.subscription {
            HaSubscription::Entities if !ha.event_types.is_empty() => {
                return Err(invalid(
                    "homeassistant.event_types",
                    "subscription = \"entities\" receives state changes only; remove event_types or use subscription = \"events\"".into(),
                ));
            }
            HaSubscription::Events if !ha.entity_ids.is_empty() => {
                return Err(invalid(
                    "homeassistant.entity_ids",
                    "only used with subscription = \"entities\" (with events, filter in the pipeline)".into(),
                ));
            }
            _ => {}
        }
        for id in &ha.entity_ids {
            if crate::event::EntityId::new(id).is_err() {
                return Err(invalid(
                    "homeassistant.entity_ids",
                    format!("{id:?} is not an entity id (domain.object_id)"),
                ));
            }
        }
    }
    Ok(names)
}

/// A Home Assistant notifier's `instance` must name a configured home.
fn validate_alert_homes(alerts: &AlertsConfig, names: &BTreeSet<&str>) -> Result<(), ConfigError> {
    for (i, notifier) in alerts.notifiers.iter().enumerate() {
        if let NotifierConfig::Homeassistant {
            instance: Some(home),
            ..
        } = notifier
            && !names.contains(home.as_str())
        {
            return Err(invalid(
                &format!("alerts.notifiers[{i}].instance"),
                format!("{home:?} names no [[homeassistant]] (configured: {names:?})"),
            ));
        }
    }
    Ok(())
}

/// Checks one `[influxdb]` target: a usable URL, the credentials its API needs, sane batches and retries.
fn validate_influxdb(influx: &InfluxConfig) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(&influx.url).map_err(|e| {
        invalid(
            "influxdb.url",
            format!("{:?} is not a URL: {e}", influx.url),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(
            "influxdb.url",
            "scheme must be http or https".into(),
        ));
    }
    match influx.api {
        InfluxApi::V1 => {
            if influx.database.as_deref().unwrap_or("").is_empty() {
                return Err(invalid(
                    "influxdb.database",
                    "required with api = \"v1\"".into(),
                ));
            }
            if influx.username.is_some() != influx.password.is_some() {
                return Err(invalid(
                    "influxdb.username",
                    "username and password go together".into(),
                ));
            }
            if influx.token.is_some() || influx.org.is_some() || influx.bucket.is_some() {
                return Err(invalid(
                    "influxdb.api",
                    "token, org and bucket are for api = \"v2\"".into(),
                ));
            }
        }
        InfluxApi::V2 => {
            for (key, value) in [
                ("influxdb.org", &influx.org),
                ("influxdb.bucket", &influx.bucket),
                ("influxdb.token", &influx.token),
            ] {
                // VictoriaMetrics has no tokens: its only credentials are -httpAuth.* (basic auth).
                let optional = key == "influxdb.token" && influx.flavor == Flavor::VictoriaMetrics;
                if value.as_deref().unwrap_or("").is_empty() && !optional {
                    return Err(invalid(key, "required with api = \"v2\"".into()));
                }
            }
            if influx.username.is_some() != influx.password.is_some() {
                return Err(invalid(
                    "influxdb.username",
                    "username and password go together".into(),
                ));
            }
            let basic_auth_here = influx.flavor == Flavor::VictoriaMetrics;
            if influx.database.is_some() || (influx.username.is_some() && !basic_auth_here) {
                return Err(invalid(
                    "influxdb.api",
                    "database, username and password are for api = \"v1\"".into(),
                ));
            }
        }
    }
    if influx.batch_size == 0 || influx.batch_size > 100_000 {
        return Err(invalid("influxdb.batch_size", "must be 1 to 100000".into()));
    }
    if influx.flush_interval.is_zero() {
        return Err(invalid(
            "influxdb.flush_interval",
            "must be above zero".into(),
        ));
    }
    if influx.retry_min.is_zero() || influx.retry_min > influx.retry_max {
        return Err(invalid(
            "influxdb.retry_min",
            "must be above zero and at most retry_max".into(),
        ));
    }
    Ok(())
}

/// Checks `[filter]`: the gate's globs compile and every rule has its own name.
fn validate_filter(filter: &FilterConfig) -> Result<(), ConfigError> {
    for (name, list) in [
        ("filter.include.entity_globs", &filter.include.entity_globs),
        ("filter.exclude.entity_globs", &filter.exclude.entity_globs),
    ] {
        for glob in list {
            globset::Glob::new(glob)
                .map_err(|e| invalid(name, format!("bad glob {glob:?}: {e}")))?;
        }
    }
    let mut names = std::collections::HashSet::new();
    for rule in &filter.rules {
        if rule.name.trim().is_empty() {
            return Err(invalid("filter.rules.name", "must not be empty".into()));
        }
        if !names.insert(rule.name.as_str()) {
            return Err(invalid(
                "filter.rules.name",
                format!("two rules are named {:?}", rule.name),
            ));
        }
    }
    Ok(())
}

/// Checks `[schema]`: the override globs compile and the events measurement is named.
fn validate_schema(schema: &SchemaConfig) -> Result<(), ConfigError> {
    for glob in schema.component_config_glob.keys() {
        globset::Glob::new(glob).map_err(|e| {
            invalid(
                "schema.component_config_glob",
                format!("bad glob {glob:?}: {e}"),
            )
        })?;
    }
    if schema.events_measurement.is_empty() {
        return Err(invalid(
            "schema.events_measurement",
            "must not be empty".into(),
        ));
    }
    Ok(())
}

/// Checks `[buffer]`: `max_bytes` is at least 1 MiB.
fn validate_buffer(buffer: &BufferConfig) -> Result<(), ConfigError> {
    if buffer.max_bytes < 1 << 20 {
        return Err(invalid(
            "buffer.max_bytes",
            "must be at least 1048576 (1 MiB)".into(),
        ));
    }
    Ok(())
}

/// Checks `[log]`: the level is a valid `tracing` filter.
fn validate_log(log: &LogConfig) -> Result<(), ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&log.level)
        .map_err(|e| invalid("log.level", e.to_string()))?;
    Ok(())
}

/// Checks the `[[mqtt]]` brokers: unique names, usable URLs, complete credentials, sane limits.
fn validate_mqtt(brokers: &[MqttConfig]) -> Result<(), ConfigError> {
    let mut names = std::collections::HashSet::new();
    for m in brokers {
        if m.name.trim().is_empty() || m.name.contains(char::is_whitespace) {
            return Err(invalid(
                "mqtt.name",
                format!("{:?}: must be a non-empty word", m.name),
            ));
        }
        if !names.insert(m.name.as_str()) {
            return Err(invalid(
                "mqtt.name",
                format!(
                    "two brokers are named {:?}; give each a unique name",
                    m.name
                ),
            ));
        }
        let key = |k: &str| format!("mqtt[{}].{k}", m.name);
        m.endpoint().map_err(|e| invalid(&key("url"), e))?;
        if m.password.is_some() && m.username.is_none() {
            return Err(invalid(
                &key("username"),
                "a password needs a username".into(),
            ));
        }
        if m.tls.cert_file.is_some() != m.tls.key_file.is_some() {
            return Err(invalid(
                &key("tls.cert_file"),
                "cert_file and key_file go together".into(),
            ));
        }
        if m.max_packet_size < 1 << 16 || m.max_packet_size > 256 << 20 {
            return Err(invalid(
                &key("max_packet_size"),
                "must be 65536 to 268435456 (MQTT's limit)".into(),
            ));
        }
        if m.keep_alive < Duration::from_secs(5) || m.keep_alive > Duration::from_secs(65535) {
            return Err(invalid(&key("keep_alive"), "must be 5s to 65535s".into()));
        }
        if m.reconnect_min.is_zero() || m.reconnect_min > m.reconnect_max {
            return Err(invalid(
                &key("reconnect_min"),
                "must be above zero and at most reconnect_max".into(),
            ));
        }
        if m.connect_timeout < Duration::from_secs(1) {
            return Err(invalid(
                &key("connect_timeout"),
                "must be at least 1s".into(),
            ));
        }
        if m.receive_maximum == 0 {
            return Err(invalid(
                &key("receive_maximum"),
                "must be 1 to 65535".into(),
            ));
        }
        if m.subscriptions.is_empty() {
            return Err(invalid(
                &key("subscriptions"),
                "a broker needs at least one [[mqtt.subscriptions]]".into(),
            ));
        }
        m.subscriptions
            .stage_check()
            .map_err(|e| invalid(&key("subscriptions"), e))?;
    }
    Ok(())
}
