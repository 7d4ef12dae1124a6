//! Commands other parts of ha-ingestor send to Home Assistant over the source's
//! own WebSocket connection (the alert notifier: `call_service`, `fire_event`).
//!
//! A bounded queue the connection's read loop takes from while it is
//! subscribed; the client gives each command its next id. Sending is
//! fire-and-forget: HA's result is not awaited (an error result is ignored by
//! the client like any result it did not ask for), and commands queued while
//! disconnected are sent once the connection is back.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

/// Commands that may wait for the connection.
pub const QUEUE: usize = 64;

/// One command for Home Assistant.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `call_service`: `domain.service` with `service_data`.
    CallService {
        /// Service domain (`persistent_notification`).
        domain: String,
        /// Service (`create`).
        service: String,
        /// The service's data.
        service_data: Value,
    },
    /// `fire_event`: an event on HA's bus.
    FireEvent {
        /// Event type (`ha_ingestor_alert`).
        event_type: String,
        /// Event data.
        event_data: Value,
    },
}

impl Command {
    /// The WebSocket message for command id `id`.
    pub fn to_json(&self, id: u64) -> String {
        match self {
            Command::CallService {
                domain,
                service,
                service_data,
            } => json!({
                "id": id,
                "type": "call_service",
                "domain": domain,
                "service": service,
                "service_data": service_data,
            }),
            Command::FireEvent {
                event_type,
                event_data,
            } => json!({
                "id": id,
                "type": "fire_event",
                "event_type": event_type,
                "event_data": event_data,
            }),
        }
        .to_string()
    }
}

/// Why a command was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// [`QUEUE`] commands already wait (HA has been away a while).
    #[error("the Home Assistant command queue is full")]
    Full,
}

/// The queue shared by the client (which takes) and senders (which put).
#[derive(Debug, Clone)]
pub struct Commands {
    tx: mpsc::Sender<Command>,
    // A tokio Mutex: the client holds it across `recv().await` inside its select loop.
    rx: Arc<Mutex<mpsc::Receiver<Command>>>,
}

impl Default for Commands {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Commands {
            tx,
            rx: Arc::new(Mutex::new(rx)),
        }
    }
}

impl Commands {
    /// Queues a command without waiting.
    pub fn send(&self, command: Command) -> Result<(), SendError> {
        self.tx.try_send(command).map_err(|_| SendError::Full)
    }

    /// The next queued command (cancel-safe: a command is only taken when this resolves).
    pub async fn next(&self) -> Command {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some(command) => command,
            // Unreachable while `self` holds a sender; wait forever rather than spin.
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_framed_as_ha_expects() {
        let c = Command::CallService {
            domain: "persistent_notification".into(),
            service: "create".into(),
            service_data: json!({"message": "m"}),
        };
        let v: Value = serde_json::from_str(&c.to_json(7)).unwrap();
        assert_eq!(
            v,
            json!({"id": 7, "type": "call_service", "domain": "persistent_notification",
                   "service": "create", "service_data": {"message": "m"}})
        );
        let e = Command::FireEvent {
            event_type: "x".into(),
            event_data: json!({"a": 1}),
        };
        let v: Value = serde_json::from_str(&e.to_json(8)).unwrap();
        assert_eq!(
            v,
            json!({"id": 8, "type": "fire_event", "event_type": "x", "event_data": {"a": 1}})
        );
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_next_takes_in_order() {
        let c = Commands::default();
        let ev = |n: u64| Command::FireEvent {
            event_type: "t".into(),
            event_data: json!(n),
        };
        for n in 0..QUEUE as u64 {
            c.send(ev(n)).expect("room");
        }
        assert_eq!(c.send(ev(99)), Err(SendError::Full));
        assert_eq!(c.next().await, ev(0));
        assert_eq!(c.next().await, ev(1));
    }
}
