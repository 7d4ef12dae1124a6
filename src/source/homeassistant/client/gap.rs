//! A gap being filled from Home Assistant's history on one connection.
//!
//! The gap runs from the resume cursor to the first live event of the
//! connection (see "Gap backfill" in `client.rs` for the policy). Once
//! `get_states` names the entities, [`Gap::plan`] splits the gap into history
//! requests (`backfill_chunk` entities × `backfill_window` of time); the
//! session asks them one at a time ([`Gap::next_window`], [`Gap::request`]) and
//! hands the rows on. Here too: how a filled, refused or partly lost gap is
//! counted and logged. The session owns the `Gap` and its socket; this file
//! sends nothing.

use std::collections::VecDeque;
use std::time::Duration;

use super::Meters;
use crate::config::{HaSubscription, HomeAssistantConfig};
use crate::event::{SourceId, Timestamp};
use crate::monitor::metrics::SOURCE_ERRORS;
use crate::source::homeassistant::protocol::{ClientMessage, ErrorInfo};

/// A gap being filled from HA's history on this connection.
pub(super) struct Gap {
    /// The cursor: rows at or before it were handed on already.
    pub(super) from: Timestamp,
    /// History requests still to make (a chunk of entities × a time window); `None` until `get_states` answered.
    chunks: Option<VecDeque<HistoryWindow>>,
    /// The reply being waited for keeps rows after this time (the request's start) …
    pub(super) in_flight_after: Timestamp,
    /// … and up to this one (its window's end; `None`: no end).
    pub(super) in_flight_until: Option<Timestamp>,
    /// The `time_fired` of the first live event on this connection: the gap's end.
    pub(super) first_live: Option<Timestamp>,
    /// Rows handed on so far.
    pub(super) backfilled: u64,
    /// HA refused a history request: the gap was reported lost as a whole.
    failed: bool,
    /// The gap is a restart of HA: what cannot be recovered is logged at INFO, not WARN.
    expected: bool,
}

impl Gap {
    /// A gap from the cursor `from`; `expected` when it is a restart of HA.
    pub(super) fn new(from: Timestamp, expected: bool) -> Self {
        Gap {
            expected,
            from,
            chunks: None,
            in_flight_after: from,
            in_flight_until: None,
            first_live: None,
            backfilled: 0,
            failed: false,
        }
    }

    /// Plans the history requests for these entities, from the cursor to now.
    pub(super) fn plan(&mut self, ids: &[String], cfg: &HomeAssistantConfig) {
        self.chunks = Some(history_windows(
            ids,
            cfg.backfill_chunk,
            self.from,
            Timestamp::now(),
            cfg.backfill_window,
        ));
    }

    /// The next request to make; `None` when none is left (or none was planned yet).
    pub(super) fn next_window(&mut self) -> Option<HistoryWindow> {
        self.chunks.as_mut().and_then(|c| c.pop_front())
    }

    /// The history request for `window` with command id `id`; its reply is the one now in flight.
    pub(super) fn request(&mut self, window: HistoryWindow, id: u64) -> ClientMessage {
        // Windows after the first: changes after `start` only (the previous window ended
        // one microsecond — HA's resolution — after it, so a change exactly at `start` is
        // in that one), and no state clamped to the window's start.
        let first = window.start == self.from;
        self.in_flight_after = window.start;
        self.in_flight_until = window.end;
        // The lossless form: every change, every attribute (HA's defaults drop some).
        ClientMessage::HistoryDuringPeriod {
            id,
            start_time: window.start.to_rfc3339(),
            end_time: window
                .end
                .map(|end| Timestamp::from_nanos(end.as_nanos() + 1_000).to_rfc3339()),
            entity_ids: window.entity_ids,
            include_start_time_state: first,
            significant_changes_only: false,
            minimal_response: false,
            no_attributes: false,
        }
    }

    /// HA refused a history request: the gap is given up as a whole, counted and logged.
    pub(super) fn give_up(&mut self, error: ErrorInfo, meters: &Meters, source: &SourceId) {
        metrics::counter!(SOURCE_ERRORS, "source" => source.to_string(), "error_type" => "backfill")
            .increment(1);
        tracing::warn!(message = "Home Assistant refused the history request; the gap cannot be backfilled.", source = %source, code = %error.code, reason = %error.message);
        self.chunks = Some(Default::default());
        self.failed = true;
        let to = self.first_live.unwrap_or_else(Timestamp::now);
        self.report_lost(meters, source, to, "state changes and other events");
    }

    /// Reports a filled gap; events other than state changes in it are lost and said so.
    pub(super) fn finish(&self, cfg: &HomeAssistantConfig, meters: &Meters, source: &SourceId) {
        if self.failed {
            return;
        }
        let to = self.first_live.unwrap_or_else(Timestamp::now);
        let seconds = seconds_between(self.from, to);
        meters.gap_seconds.record(seconds);
        tracing::info!(message = "Gap backfilled from Home Assistant's history.", source = %source, from = %self.from, to = %to, gap_s = seconds, states = self.backfilled);
        // The entities subscription never asked for other events: none were lost.
        let other_events = cfg.subscription == HaSubscription::Events
            && (cfg.event_types.is_empty()
                || cfg
                    .event_types
                    .iter()
                    .any(|t| t != crate::event::STATE_CHANGED));
        if other_events {
            self.report_lost(meters, source, to, "events other than state changes");
        }
    }

    /// Counts and logs a span of time whose events (of the kind named) cannot be recovered.
    ///
    /// At INFO after a restart of HA (expected), else at WARN.
    fn report_lost(&self, meters: &Meters, source: &SourceId, to: Timestamp, what: &str) {
        let from = self.from;
        let seconds = seconds_between(from, to);
        meters.lost_gap_seconds.record(seconds);
        if self.expected {
            tracing::info!(message = "Events in a gap cannot be recovered from Home Assistant's history.", source = %source, lost = what, from = %from, to = %to, gap_s = seconds, cause = "Home Assistant restarted");
        } else {
            tracing::warn!(message = "Events in a gap cannot be recovered from Home Assistant's history.", source = %source, lost = what, from = %from, to = %to, gap_s = seconds);
        }
    }
}

/// One history request of a gap: these entities, from `start` to `end` (`None`: now).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HistoryWindow {
    entity_ids: Vec<String>,
    start: Timestamp,
    end: Option<Timestamp>,
}

/// Splits a gap from `from` to `now` into requests: every chunk of entities, window by window.
fn history_windows(
    ids: &[String],
    chunk: usize,
    from: Timestamp,
    now: Timestamp,
    window: Duration,
) -> VecDeque<HistoryWindow> {
    let step = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX).max(1);
    let mut out = VecDeque::new();
    let mut start = from;
    loop {
        let end = start.as_nanos().saturating_add(step);
        let last = end >= now.as_nanos();
        for entity_ids in ids.chunks(chunk.max(1)) {
            out.push_back(HistoryWindow {
                entity_ids: entity_ids.to_vec(),
                start,
                end: (!last).then_some(Timestamp::from_nanos(end)),
            });
        }
        if last {
            return out;
        }
        start = Timestamp::from_nanos(end);
    }
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_nanos().saturating_sub(from.as_nanos())).max(0) as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_split_into_contiguous_windows_for_every_entity_chunk() {
        let ids: Vec<String> = (0..5).map(|i| format!("sensor.s{i}")).collect();
        let hour = Duration::from_secs(3600);
        let from = Timestamp::from_nanos(1_000_000_000_000);
        let now = Timestamp::from_nanos(from.as_nanos() + 2 * 3_600_000_000_000 + 5);
        let windows: Vec<HistoryWindow> = history_windows(&ids, 2, from, now, hour).into();
        // Three windows (two full hours and the rest up to now) × three chunks (2 + 2 + 1).
        assert_eq!(windows.len(), 9);
        for (w, chunk) in windows.iter().zip([2, 2, 1].iter().cycle()) {
            assert_eq!(w.entity_ids.len(), *chunk);
        }
        let starts: Vec<i64> = windows
            .iter()
            .step_by(3)
            .map(|w| w.start.as_nanos())
            .collect();
        let ends: Vec<Option<i64>> = windows
            .iter()
            .step_by(3)
            .map(|w| w.end.map(Timestamp::as_nanos))
            .collect();
        let h = 3_600_000_000_000;
        let f = from.as_nanos();
        assert_eq!(starts, vec![f, f + h, f + 2 * h]);
        // Each window ends where the next starts; the last runs to "now" (no end).
        assert_eq!(ends, vec![Some(f + h), Some(f + 2 * h), None]);
        // A short gap is one window per chunk, without an end.
        let short = history_windows(&ids, 50, from, from, hour);
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].end, None);
        assert_eq!(short[0].start, from);
    }
}
