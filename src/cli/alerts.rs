//! `ha-ingestor alerts test`: send one test notification through each configured
//! notifier (or the one named), so a webhook URL, a broker's credentials or a Home
//! Assistant token are known to work before an alert needs them.
//!
//! Each notifier gets one attempt, without the retries of the running service, so
//! the answer is prompt: a webhook POST (2xx is ok), an MQTT publish acknowledged by
//! the broker (not retained, so the test leaves no state on the broker), or the
//! `persistent_notification.create` and the event a Home Assistant notifier makes,
//! each confirmed by HA's result (the running service sends them over its own
//! connection without waiting). Every attempt is one line of the audit log; the
//! command refuses to send anything when the audit log cannot be opened.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

use super::{init_logging, load_config};
use crate::audit::AuditLog;
use crate::config::alerts::NotifierConfig;
use crate::config::{Config, HomeAssistantConfig, LogFormat, redact_url};
use crate::feedback::commands::Command;
use crate::monitor::alerts::notify::{Notification, Status, homeassistant, mqtt, webhook};
use crate::source::homeassistant::protocol::{ClientMessage, ServerReply};

/// The rule name test notifications carry (the MQTT topic's last level, the HA notification id's end).
pub const TEST_RULE: &str = "notifier_test";
/// The audit log's action for one notifier's test.
pub const AUDIT_ACTION: &str = "alerts test";

/// The alerts commands.
#[derive(Subcommand)]
pub enum AlertsCommand {
    /// Send one test notification through each configured notifier; exit 1 if any failed.
    Test {
        /// The TOML configuration file.
        #[arg(long, short, env = "HA_INGESTOR_CONFIG")]
        config: PathBuf,
        /// Test only the notifier of this name (`[[alerts.notifiers]]` `name`).
        #[arg(long)]
        notifier: Option<String>,
        /// Longest wait for one notifier's answer.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

/// Tests the notifiers and prints one line per notifier: `ok` or the error.
pub fn main(what: AlertsCommand, flag_format: Option<LogFormat>, runtime: &Runtime) -> ExitCode {
    let AlertsCommand::Test {
        config,
        notifier,
        timeout,
    } = what;
    let cfg = match load_config(&config) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    init_logging(flag_format.unwrap_or(cfg.log.format), "warn");
    let chosen: Vec<&NotifierConfig> = cfg
        .alerts
        .notifiers
        .iter()
        .filter(|n| notifier.as_deref().is_none_or(|name| n.name() == name))
        .collect();
    if chosen.is_empty() {
        let configured: Vec<&str> = cfg.alerts.notifiers.iter().map(|n| n.name()).collect();
        match &notifier {
            Some(name) if !configured.is_empty() => eprintln!(
                "ha-ingestor: no notifier is named {name:?} (configured: {})",
                configured.join(", ")
            ),
            _ => eprintln!(
                "ha-ingestor: no [[alerts.notifiers]] in {}",
                config.display()
            ),
        }
        return ExitCode::from(super::check::INVALID_CONFIG as u8);
    }
    // Opened before anything is sent: no audit log, no test.
    let audit = match AuditLog::open(&cfg.data_dir) {
        Ok(audit) => audit,
        Err(error) => {
            eprintln!("ha-ingestor: {error}");
            return ExitCode::FAILURE;
        }
    };
    let notification = test_notification();
    let mut failed = 0;
    for n in chosen {
        let result = runtime.block_on(async {
            match tokio::time::timeout(timeout, send(&cfg, n, &notification, timeout)).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}")),
            }
        });
        let kind = kind(n);
        match &result {
            Ok(()) => println!("notifier {} ({kind}): ok", n.name()),
            Err(error) => {
                failed += 1;
                println!("notifier {} ({kind}): FAILED: {error}", n.name());
            }
        }
        let what = json!({"notifier": n.name(), "type": kind, "rule": TEST_RULE});
        if let Err(error) = audit.record(AUDIT_ACTION, &target(&cfg, n), what, &(&result).into()) {
            eprintln!("ha-ingestor: {error}");
            return ExitCode::FAILURE;
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The notification every notifier is sent: rule [`TEST_RULE`], `info`, saying it is a test.
fn test_notification() -> Notification {
    let who = crate::audit::Who::current();
    let user = who.user.unwrap_or_else(|| format!("uid {}", who.uid));
    Notification {
        rule: TEST_RULE.to_string(),
        severity: "info",
        status: Status::Firing,
        value: None,
        summary: format!(
            "Test notification sent by `ha-ingestor alerts test` ({user}); no alert rule is firing."
        ),
        description: None,
        firing_since: None,
        at: crate::event::Timestamp::now().to_rfc3339(),
    }
}

/// `webhook`, `mqtt` or `homeassistant`: the notifier's `type`.
fn kind(n: &NotifierConfig) -> &'static str {
    match n {
        NotifierConfig::Webhook { .. } => "webhook",
        NotifierConfig::Mqtt { .. } => "mqtt",
        NotifierConfig::Homeassistant { .. } => "homeassistant",
    }
}

/// Where a notifier sends, for the audit log: never a credential.
fn target(cfg: &Config, n: &NotifierConfig) -> String {
    match n {
        NotifierConfig::Webhook { url, .. } => redact_url(url),
        NotifierConfig::Mqtt {
            host,
            port,
            topic,
            tls,
            ..
        } => format!(
            "mqtt://{host}:{} {topic}/{TEST_RULE}",
            port.unwrap_or(if tls.is_some() { 8883 } else { 1883 })
        ),
        NotifierConfig::Homeassistant { .. } => match homes(cfg, n) {
            Ok(homes) => homes
                .iter()
                .map(|h| redact_url(&h.url))
                .collect::<Vec<_>>()
                .join(" "),
            Err(_) => "homeassistant (none configured)".to_string(),
        },
    }
}

/// Sends `n` once through the notifier `cfg_n`.
async fn send(
    cfg: &Config,
    cfg_n: &NotifierConfig,
    n: &Notification,
    within: Duration,
) -> Result<(), String> {
    match cfg_n {
        NotifierConfig::Webhook { .. } => webhook::Webhook::new(cfg_n)?.send_once(n).await,
        NotifierConfig::Mqtt { .. } => mqtt::Mqtt::new(cfg_n)?.send_once(n, within).await,
        NotifierConfig::Homeassistant { .. } => {
            // The commands the running notifier would queue (the queue itself is not used here).
            let queue = crate::feedback::commands::Commands::default();
            let commands = homeassistant::HomeAssistant::new(cfg_n, queue).commands_for(n);
            if commands.is_empty() {
                return Err("sends nothing: both notification and event are off".into());
            }
            for home in homes(cfg, cfg_n)? {
                tell_home(home, &commands)
                    .await
                    .map_err(|e| format!("{} ({}): {e}", home.name, redact_url(&home.url)))?;
            }
            Ok(())
        }
    }
}

/// The homes a Home Assistant notifier tells: its `instance`, or every `[[homeassistant]]`.
fn homes<'c>(cfg: &'c Config, n: &NotifierConfig) -> Result<Vec<&'c HomeAssistantConfig>, String> {
    let instance = match n {
        NotifierConfig::Homeassistant { instance, .. } => instance.as_deref(),
        _ => None,
    };
    let homes: Vec<_> = cfg
        .homeassistant
        .iter()
        .filter(|h| instance.is_none_or(|name| h.name == name))
        .collect();
    match (homes.is_empty(), instance) {
        (true, Some(name)) => Err(format!("instance {name:?} names no [[homeassistant]]")),
        (true, None) => Err("needs a [homeassistant] section".into()),
        (false, _) => Ok(homes),
    }
}

/// Connects to one home, authenticates, sends `commands` and waits for each one's result.
async fn tell_home(home: &HomeAssistantConfig, commands: &[Command]) -> Result<(), String> {
    let token = home.token.as_deref().ok_or("no token")?;
    let url = home.websocket_url();
    let connector = if url.starts_with("wss://") {
        crate::ensure_crypto_provider();
        let tls =
            crate::tls::client_config(&home.tls, "homeassistant").map_err(|e| e.to_string())?;
        tokio_tungstenite::Connector::Rustls(Arc::new(tls))
    } else {
        tokio_tungstenite::Connector::Plain
    };
    let (mut ws, _) = tokio::time::timeout(
        home.connect_timeout,
        tokio_tungstenite::connect_async_tls_with_config(&url, None, false, Some(connector)),
    )
    .await
    .map_err(|_| format!("cannot connect within {:?}", home.connect_timeout))?
    .map_err(|e| format!("cannot connect: {e}"))?;
    match next_reply(&mut ws).await? {
        ServerReply::AuthRequired { .. } => {}
        other => return Err(format!("expected auth_required, got {other:?}")),
    }
    let auth = ClientMessage::Auth {
        access_token: token.to_string(),
    };
    ws.send(Message::text(auth.to_json()))
        .await
        .map_err(|e| e.to_string())?;
    match next_reply(&mut ws).await? {
        ServerReply::AuthOk { .. } => {}
        ServerReply::AuthInvalid { message } => {
            return Err(format!("the token was refused: {message}"));
        }
        other => return Err(format!("expected auth_ok, got {other:?}")),
    }
    for (id, command) in (1u64..).zip(commands) {
        ws.send(Message::text(command.to_json(id)))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match next_reply(&mut ws).await? {
                ServerReply::Result {
                    id: got,
                    success,
                    error,
                    ..
                } if got == id => {
                    if success {
                        break;
                    }
                    let error = error.unwrap_or_default();
                    return Err(format!(
                        "{} refused: {} ({})",
                        describe(command),
                        error.message,
                        error.code
                    ));
                }
                _ => continue,
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// `call_service persistent_notification.create` or `fire_event ha_ingestor_alert`.
fn describe(command: &Command) -> String {
    match command {
        Command::CallService {
            domain, service, ..
        } => format!("call_service {domain}.{service}"),
        Command::FireEvent { event_type, .. } => format!("fire_event {event_type}"),
    }
}

/// The next reply HA sends (messages of other types are passed over; no event is subscribed).
async fn next_reply<S>(ws: &mut S) -> Result<ServerReply, String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Close(_))) | None => {
                return Err("Home Assistant closed the connection".into());
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.to_string()),
        };
        // Coalesced arrays come only to clients that ask for them; this one does not.
        if let Ok(reply) = serde_json::from_str::<ServerReply>(&text) {
            return Ok(reply);
        }
    }
}
