//! Tells Home Assistant itself, over the source's WebSocket connection: a
//! `persistent_notification` (one per rule, `notification_id`
//! `ha_ingestor_<rule>`, replaced by the recovery notice) and an event
//! (`ha_ingestor_alert` by default) carrying the notification, for automations.
//! With several homes, `instance` names the one to tell; unset, every home is told.

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Notification, Status, failed, sent};
use crate::config::alerts::NotifierConfig;
use crate::feedback::commands::{Command, Commands, SendError};

/// The Home Assistant notifier.
pub struct HomeAssistant {
    name: String,
    notification: bool,
    event: Option<String>,
    /// The one home to tell; `None` tells every home.
    instance: Option<String>,
    commands: Commands,
}

impl HomeAssistant {
    /// Built from its config and the source's command queue.
    pub fn new(cfg: &NotifierConfig, commands: Commands) -> Self {
        let (notification, event, instance) = match cfg {
            NotifierConfig::Homeassistant {
                notification,
                event,
                event_type,
                instance,
                ..
            } => (
                *notification,
                event.then(|| event_type.clone()),
                instance.clone(),
            ),
            _ => (false, None, None),
        };
        HomeAssistant {
            name: cfg.name().to_string(),
            notification,
            event,
            instance,
            commands,
        }
    }

    /// The commands one notification becomes.
    pub fn commands_for(&self, n: &Notification) -> Vec<Command> {
        let mut out = Vec::new();
        if self.notification {
            let verb = match n.status {
                Status::Firing => "**Firing**",
                Status::Resolved => "**Resolved**",
            };
            let mut message = format!("{verb} ({}): {}", n.severity, n.summary);
            if let Some(d) = &n.description {
                message = format!("{d}\n\n{message}");
            }
            out.push(Command::CallService {
                domain: "persistent_notification".into(),
                service: "create".into(),
                service_data: json!({
                    "notification_id": format!("ha_ingestor_{}", n.rule),
                    "title": n.title(),
                    "message": message,
                }),
            });
        }
        if let Some(event_type) = &self.event {
            out.push(Command::FireEvent {
                event_type: event_type.clone(),
                event_data: serde_json::to_value(n).unwrap_or_default(),
            });
        }
        out
    }

    /// Queues each notification's commands until `shutdown`.
    pub async fn run(self, mut rx: mpsc::Receiver<Notification>, shutdown: CancellationToken) {
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = rx.recv() => match n { Some(n) => n, None => return },
            };
            let mut ok = true;
            for command in self.commands_for(&n) {
                let queued = match &self.instance {
                    Some(home) => self.commands.send_to(home, command),
                    None => self.commands.send(command),
                };
                if let Err(error) = queued {
                    ok = false;
                    let kind = match &error {
                        SendError::Full => "queue_full",
                        SendError::UnknownHome(_) | SendError::NoHome => "unknown_instance",
                    };
                    failed(&self.name, kind);
                    tracing::warn!(message = "Alert notification to Home Assistant dropped.", notifier = %self.name, rule = %n.rule, %error);
                }
            }
            if ok {
                sent(&self.name, n.status);
            }
        }
    }
}
