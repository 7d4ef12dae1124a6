//! Commands other parts of ha-ingestor send to Home Assistant over the source's
//! own WebSocket connection (the alert notifier: `call_service`, `fire_event`).
//!
//! One bounded queue per configured home, which that home's connection takes
//! from while it is subscribed; the client gives each command its next id. A
//! command goes to every home ([`Commands::send`]) or to one by name
//! ([`Commands::send_to`]). Sending is
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
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// [`QUEUE`] commands already wait (HA has been away a while).
    #[error("the Home Assistant command queue is full")]
    Full,
    /// No `[[homeassistant]]` of that name is configured.
    #[error("no Home Assistant instance is named {0:?}")]
    UnknownHome(String),
    /// No `[[homeassistant]]` is configured at all.
    #[error("no Home Assistant instance is configured")]
    NoHome,
}

/// One home's queue: its client takes, senders put.
#[derive(Debug)]
struct Queue {
    /// The `[[homeassistant]]` name; `None` is the one queue of [`Commands::default`], taken by any client.
    name: Option<String>,
    tx: mpsc::Sender<Command>,
    // A tokio Mutex: the client holds it across `recv().await` inside its select loop.
    rx: Mutex<mpsc::Receiver<Command>>,
}

impl Queue {
    fn new(name: Option<String>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Queue {
            name,
            tx,
            rx: Mutex::new(rx),
        }
    }
}

/// The command queues of every configured Home Assistant instance, one per home,
/// so a command reaches the home it is meant for and not whichever connection
/// happens to take it first.
#[derive(Debug, Clone)]
pub struct Commands {
    queues: Arc<Vec<Queue>>,
}

impl Default for Commands {
    /// One unnamed queue that any client takes from (a single home).
    fn default() -> Self {
        Commands {
            queues: Arc::new(vec![Queue::new(None)]),
        }
    }
}

impl Commands {
    /// One queue per home name (the `name` of each `[[homeassistant]]`).
    pub fn for_homes<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Commands {
            queues: Arc::new(
                names
                    .into_iter()
                    .map(|n| Queue::new(Some(n.into())))
                    .collect(),
            ),
        }
    }

    /// Whether commands can be addressed to `home`.
    pub fn knows(&self, home: &str) -> bool {
        self.queues
            .iter()
            .any(|q| q.name.as_deref().is_none_or(|n| n == home))
    }

    /// Queues a command for every home without waiting; `Full` when any home's queue is full (the others still get it).
    pub fn send(&self, command: Command) -> Result<(), SendError> {
        let mut result = if self.queues.is_empty() {
            Err(SendError::NoHome)
        } else {
            Ok(())
        };
        for queue in self.queues.iter() {
            if queue.tx.try_send(command.clone()).is_err() {
                result = Err(SendError::Full);
            }
        }
        result
    }

    /// Queues a command for the home named `home` only.
    pub fn send_to(&self, home: &str, command: Command) -> Result<(), SendError> {
        let queue = self
            .queue(home)
            .ok_or_else(|| SendError::UnknownHome(home.to_string()))?;
        queue.tx.try_send(command).map_err(|_| SendError::Full)
    }

    /// The next command for `home` (cancel-safe: a command is only taken when this resolves).
    ///
    /// A home without a queue waits forever: nothing is ever addressed to it.
    pub async fn next(&self, home: &str) -> Command {
        let Some(queue) = self.queue(home) else {
            return std::future::pending().await;
        };
        let mut rx = queue.rx.lock().await;
        match rx.recv().await {
            Some(command) => command,
            // Unreachable while `self` holds a sender; wait forever rather than spin.
            None => std::future::pending().await,
        }
    }

    fn queue(&self, home: &str) -> Option<&Queue> {
        self.queues
            .iter()
            .find(|q| q.name.as_deref().is_none_or(|n| n == home))
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
        assert_eq!(c.next("any").await, ev(0));
        assert_eq!(c.next("home").await, ev(1));
    }

    #[tokio::test]
    async fn each_home_takes_only_what_is_addressed_to_it() {
        let c = Commands::for_homes(["home", "cabin"]);
        let ev = |n: u64| Command::FireEvent {
            event_type: "t".into(),
            event_data: json!(n),
        };
        assert!(c.knows("cabin") && !c.knows("boat"));
        c.send_to("cabin", ev(1)).expect("room");
        assert_eq!(
            c.send_to("boat", ev(2)),
            Err(SendError::UnknownHome("boat".into()))
        );
        c.send(ev(3)).expect("room");
        assert_eq!(c.next("cabin").await, ev(1));
        assert_eq!(c.next("cabin").await, ev(3));
        assert_eq!(c.next("home").await, ev(3));
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(20), c.next("home"));
        assert!(nothing.await.is_err(), "home got nothing else");
    }
}
