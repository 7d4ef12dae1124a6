//! Notifiers: each runs in its own task behind a bounded queue, so a slow or
//! unreachable target never holds up the evaluator, let alone ingestion. A full
//! queue, a failed delivery (after its retries, or at once when the target's
//! answer cannot change, like a webhook's 404) and every retry are counted.
//! Retry and reconnect delays come from the program's one [`crate::backoff::Backoff`].

pub mod homeassistant;
pub mod mqtt;
pub mod webhook;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::alerts::NotifierConfig;
use crate::feedback::commands::Commands;
use crate::monitor::metrics as names;

/// Notifications that may wait for one notifier.
pub const QUEUE: usize = 256;

/// `firing` or `resolved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The rule started firing.
    Firing,
    /// The rule resolved (the recovery notice).
    Resolved,
}

impl Status {
    /// The name in payloads and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// What every notifier sends (the webhook body, the MQTT payload, the HA event's data).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    /// The rule's name.
    pub rule: String,
    /// `info`, `warning` or `critical`.
    pub severity: &'static str,
    /// `firing` or `resolved`.
    pub status: Status,
    /// The value judged at the transition.
    pub value: Option<f64>,
    /// One line saying what was seen.
    pub summary: String,
    /// The rule's own description, if configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the rule started firing (RFC 3339).
    pub firing_since: Option<String>,
    /// When this notification was made (RFC 3339).
    pub at: String,
}

impl Notification {
    /// A title for humans: `[critical] no_writes firing`.
    pub fn title(&self) -> String {
        format!(
            "ha-ingestor [{}] {} {}",
            self.severity,
            self.rule,
            self.status.as_str()
        )
    }
}

/// The evaluator's handle on one running notifier.
#[derive(Debug, Clone)]
pub struct Target {
    /// The configured name.
    pub name: String,
    tx: mpsc::Sender<Notification>,
}

impl Target {
    /// A target that hands notifications to `tx` (tests read the other end).
    pub fn new(name: impl Into<String>, tx: mpsc::Sender<Notification>) -> Self {
        Target {
            name: name.into(),
            tx,
        }
    }

    /// Queues without waiting; a full queue is counted, never waited for.
    pub fn offer(&self, n: &Notification) {
        if self.tx.try_send(n.clone()).is_err() {
            failed(&self.name, "queue_full");
            tracing::warn!(message = "Alert notification dropped: the notifier's queue is full.", notifier = %self.name, rule = %n.rule);
        }
    }
}

/// Counts a delivered notification.
pub(crate) fn sent(notifier: &str, status: Status) {
    metrics::counter!(names::ALERT_NOTIFICATIONS_SENT, "notifier" => notifier.to_string(), "status" => status.as_str())
        .increment(1);
}

/// Counts a failed notification.
pub(crate) fn failed(notifier: &str, error_type: &'static str) {
    metrics::counter!(names::ALERT_NOTIFICATION_ERRORS, "notifier" => notifier.to_string(), "error_type" => error_type)
        .increment(1);
}

/// Counts a retry.
pub(crate) fn retried(notifier: &str) {
    metrics::counter!(names::ALERT_NOTIFICATION_RETRIES, "notifier" => notifier.to_string())
        .increment(1);
}

/// Why a notifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    /// The HTTP client could not be built.
    #[error("notifier {name}: {message}")]
    Build {
        /// The notifier.
        name: String,
        /// What failed.
        message: String,
    },
}

/// Starts one notifier task; it ends when `shutdown` is cancelled.
pub fn spawn(
    cfg: &NotifierConfig,
    commands: Option<&Commands>,
    shutdown: CancellationToken,
) -> Result<(Target, JoinHandle<()>), NotifierError> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let name = cfg.name().to_string();
    let task = match cfg {
        NotifierConfig::Webhook { .. } => {
            let hook = webhook::Webhook::new(cfg).map_err(|message| NotifierError::Build {
                name: name.clone(),
                message,
            })?;
            tokio::spawn(hook.run(rx, shutdown))
        }
        NotifierConfig::Mqtt { .. } => {
            let m = mqtt::Mqtt::new(cfg).map_err(|message| NotifierError::Build {
                name: name.clone(),
                message,
            })?;
            tokio::spawn(m.run(rx, shutdown))
        }
        NotifierConfig::Homeassistant { .. } => {
            let Some(commands) = commands else {
                return Err(NotifierError::Build {
                    name,
                    message: "needs the [homeassistant] source".into(),
                });
            };
            if let NotifierConfig::Homeassistant {
                instance: Some(home),
                ..
            } = cfg
                && !commands.knows(home)
            {
                return Err(NotifierError::Build {
                    name,
                    message: format!("instance {home:?} names no [[homeassistant]]"),
                });
            }
            let ha = homeassistant::HomeAssistant::new(cfg, commands.clone());
            tokio::spawn(ha.run(rx, shutdown))
        }
    };
    Ok((Target { name, tx }, task))
}
