//! The last WARN and ERROR log events, kept in a small ring for `/api/stats` and the status page.
//!
//! A `tracing` layer ([`RecentErrorsLayer`]) copies every WARN/ERROR event into a
//! process-wide ring of [`KEEP`] entries, so no stage needs a new call to report
//! its failures: what it logs is what the page shows. Logs carry no secrets
//! (they are redacted where they are written), so neither does the ring.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Entries kept; older ones are forgotten.
pub const KEEP: usize = 50;
/// Longest message kept, in bytes (longer ones are cut at a character boundary).
const MAX_MESSAGE: usize = 1024;

/// One recent WARN or ERROR log event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// When it was logged (RFC 3339, UTC).
    pub time: String,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The module that logged it.
    pub target: String,
    /// The message followed by its fields as `key=value`.
    pub message: String,
}

// A std Mutex: held for one push or one copy, never across an `.await`.
static RING: Mutex<VecDeque<LogEntry>> = Mutex::new(VecDeque::new());

fn ring() -> std::sync::MutexGuard<'static, VecDeque<LogEntry>> {
    match RING.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Adds an entry (what the layer does for each WARN/ERROR event).
pub fn record(level: &'static str, target: &str, mut message: String) {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    let entry = LogEntry {
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        level,
        target: target.to_string(),
        message,
    };
    let mut ring = ring();
    if ring.len() == KEEP {
        ring.pop_front();
    }
    ring.push_back(entry);
}

/// The kept entries, newest first.
pub fn recent() -> Vec<LogEntry> {
    ring().iter().rev().cloned().collect()
}

/// The `tracing` layer that feeds the ring; add it to the subscriber at start-up.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecentErrorsLayer;

impl<S: Subscriber> Layer<S> for RecentErrorsLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // In `tracing`, more verbose levels compare greater: this keeps WARN and ERROR.
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            _ => return,
        };
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let mut message = visitor.message;
        if !visitor.fields.is_empty() {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&visitor.fields);
        }
        record(level, meta.target(), message);
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl MessageVisitor {
    fn field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if field.name() == "message" {
            let _ = self.message.write_fmt(value);
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={}", field.name(), value);
        }
    }
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    // The ring is process-wide: these tests take turns so one cannot evict the other's entries.
    static TURN: Mutex<()> = Mutex::new(());

    fn turn() -> std::sync::MutexGuard<'static, ()> {
        TURN.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn keeps_warnings_and_errors_with_fields_newest_first() {
        let _turn = turn();
        let subscriber = tracing_subscriber::registry().with(RecentErrorsLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(message = "not kept (info)");
            tracing::warn!(
                message = "Write failed.",
                attempt = 3,
                error = "connection refused"
            );
            tracing::error!(message = "ring-test error");
        });
        let recent = recent();
        let error = recent
            .iter()
            .position(|e| e.message == "ring-test error")
            .expect("the error is kept");
        let warn = recent
            .iter()
            .position(|e| e.message.starts_with("Write failed."))
            .expect("the warning is kept");
        assert!(error < warn, "newest first: {recent:?}");
        assert_eq!(recent[warn].level, "WARN");
        assert_eq!(
            recent[warn].message,
            "Write failed. attempt=3 error=connection refused"
        );
        assert!(!recent.iter().any(|e| e.message.contains("not kept")));
    }

    #[test]
    fn ring_is_bounded_and_messages_are_cut() {
        let _turn = turn();
        for i in 0..(KEEP + 10) {
            record("WARN", "test", format!("bounded {i}"));
        }
        record("ERROR", "test", "x".repeat(5000));
        let recent = recent();
        assert_eq!(recent.len(), KEEP);
        assert!(recent[0].message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(recent[0].message.ends_with('…'));
    }
}
