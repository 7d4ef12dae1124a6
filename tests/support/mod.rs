//! Test support shared by the integration tests: real servers started per test.
//!
//! Shared by both test binaries (`tests/it`, `tests/e2e`) through
//! `#[path = "../support/mod.rs"] mod support;` in their `main.rs`; a test module uses
//! it with `use crate::support;`. Each binary uses a different part of this module,
//! hence the `dead_code` allowance.
#![allow(dead_code, unused_imports)]

pub mod alone;
pub mod ha_schema;
pub mod influxd;
pub mod mosquitto;
pub mod running;

pub use influxd::Influxd;
pub use running::Running;

use std::future::Future;
use std::time::Duration;

use ha_ingestor::event::{Event, EventKind};

/// Points Home Assistant's own rules give for `events`: state changes to a real
/// state (not unknown, unavailable or empty), and every other bus event.
pub fn expected_points(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| match &e.kind {
            EventKind::StateChanged(sc) => sc
                .new_state
                .as_ref()
                .is_some_and(|s| !matches!(s.state.as_str(), "unknown" | "unavailable" | "")),
            EventKind::Bus(_) => true,
        })
        .count()
}

/// Polls `probe` every 50 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 10 ms until it holds or `within` passes; whether it held (the caller asserts, with its own message).
pub async fn holds_within(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// An `Event` from a recorded event object (`event_type`, `data`, `origin`, `time_fired`, `context`).
pub fn event_from_json(v: &serde_json::Value) -> Event {
    let event_type = v["event_type"].as_str().expect("fixture event_type");
    let time_fired: ha_ingestor::event::Timestamp =
        serde_json::from_value(v["time_fired"].clone()).expect("fixture time_fired");
    let origin: ha_ingestor::event::Origin =
        serde_json::from_value(v["origin"].clone()).expect("fixture origin");
    let context: ha_ingestor::event::Context =
        serde_json::from_value(v["context"].clone()).expect("fixture context");
    let kind = if event_type == ha_ingestor::event::STATE_CHANGED {
        let sc: ha_ingestor::event::StateChanged =
            serde_json::from_value(v["data"].clone()).expect("fixture state_changed data");
        EventKind::StateChanged(Box::new(sc))
    } else {
        EventKind::Bus(ha_ingestor::event::BusEvent {
            event_type: event_type.to_string(),
            data: v["data"].as_object().cloned().unwrap_or_default(),
        })
    };
    Event {
        meta: Default::default(),
        source: std::sync::Arc::from("fixture"),
        time_fired,
        origin,
        context,
        kind,
    }
}

/// The lines of `<data>/audit.log` as JSON, after checking the file is private (0600).
pub fn audit_lines(data: &std::path::Path) -> Vec<serde_json::Value> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = data.join("audit.log");
    let mode = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "audit.log mode {:o}", mode & 0o777);
    std::fs::read_to_string(&path)
        .expect("read audit.log")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
