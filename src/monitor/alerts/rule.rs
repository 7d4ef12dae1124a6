//! One rule at run time: reading its condition from a snapshot, and its state
//! machine inactive → pending → firing → (resolved) → inactive.
//!
//! Hysteresis, so a value hovering at the threshold does not flap:
//! - a rule fires only after its condition held for `for` (pending until then;
//!   a single clear tick sends it back to inactive, without a notification);
//! - a firing rule resolves only after its condition stayed clear for
//!   `resolve_after`; a tick with the condition true again restarts that wait;
//! - thresholds may name a `clear` level (`clear_percent` for the buffer): once
//!   firing, the condition stays true until the value is back past it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use tokio::time::Instant;

use super::anomaly::Baseline;
use super::sample::Snapshot;
use crate::config::alerts::{Aggregate, Condition, RuleConfig};
use crate::monitor::metrics as names;

/// The state shown at `/alerts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The condition does not hold.
    Inactive,
    /// The condition holds, not yet for `for`.
    Pending,
    /// The rule fires (including while it waits `resolve_after` to resolve).
    Firing,
}

/// A change of state worth telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Inactive → pending.
    Pending,
    /// Pending back to inactive before `for` passed.
    Cleared,
    /// Now firing: notify.
    Firing,
    /// Firing → inactive after `resolve_after` clear: the recovery notice.
    Resolved,
}

impl Transition {
    /// The label value of `ha_ingestor_alert_transitions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Pending => "pending",
            Transition::Cleared => "inactive",
            Transition::Firing => "firing",
            Transition::Resolved => "resolved",
        }
    }
}

/// What a condition reads from one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Whether the condition holds.
    pub active: bool,
    /// The number judged, if there is one yet.
    pub value: Option<f64>,
    /// One line saying what was seen.
    pub summary: String,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Inactive,
    Pending { since: Instant },
    Firing { clear_since: Option<Instant> },
}

/// A rule with its state and the history its condition needs.
#[derive(Debug)]
pub struct Rule {
    /// The configuration.
    pub cfg: RuleConfig,
    phase: Phase,
    since: Option<DateTime<Utc>>,
    firing_since: Option<DateTime<Utc>>,
    last: Reading,
    history: VecDeque<(Instant, f64)>,
    last_change: Option<(Instant, f64)>,
    baseline: Option<Baseline>,
    last_anomaly_sample: Option<Instant>,
}

impl Rule {
    /// A rule that has seen nothing yet (inactive).
    pub fn new(cfg: RuleConfig) -> Self {
        let baseline = match &cfg.condition {
            Condition::Anomaly {
                window,
                warmup,
                half_life,
                z,
                direction,
                daily,
                ..
            } => Some(Baseline::new(
                *window, *warmup, *half_life, *z, *direction, *daily,
            )),
            _ => None,
        };
        Rule {
            cfg,
            phase: Phase::Inactive,
            since: None,
            firing_since: None,
            last: Reading {
                active: false,
                value: None,
                summary: "not evaluated yet".to_string(),
            },
            history: VecDeque::new(),
            last_change: None,
            baseline,
            last_anomaly_sample: None,
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Inactive => State::Inactive,
            Phase::Pending { .. } => State::Pending,
            Phase::Firing { .. } => State::Firing,
        }
    }

    /// When the current state began (`None` while inactive since start).
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.since
    }

    /// When the rule last started firing.
    pub fn firing_since(&self) -> Option<DateTime<Utc>> {
        self.firing_since
    }

    /// The last reading.
    pub fn reading(&self) -> &Reading {
        &self.last
    }

    /// Reads the condition from `snap` and steps the state machine; returns the transition, if any.
    pub fn evaluate(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        snap: &Snapshot,
    ) -> Option<Transition> {
        let firing = matches!(self.phase, Phase::Firing { .. });
        let reading = self.read(now, wall, snap, firing);
        let active = reading.active;
        self.last = reading;
        let for_ = self.cfg.for_;
        let (phase, transition) = match self.phase {
            Phase::Inactive if active && for_.is_zero() => (
                Phase::Firing { clear_since: None },
                Some(Transition::Firing),
            ),
            Phase::Inactive if active => (Phase::Pending { since: now }, Some(Transition::Pending)),
            Phase::Inactive => (Phase::Inactive, None),
            Phase::Pending { since } if active => {
                if now.duration_since(since) >= for_ {
                    (
                        Phase::Firing { clear_since: None },
                        Some(Transition::Firing),
                    )
                } else {
                    (Phase::Pending { since }, None)
                }
            }
            Phase::Pending { .. } => (Phase::Inactive, Some(Transition::Cleared)),
            Phase::Firing { .. } if active => (Phase::Firing { clear_since: None }, None),
            Phase::Firing { clear_since } => {
                let clear_since = clear_since.unwrap_or(now);
                if now.duration_since(clear_since) >= self.cfg.resolve_after {
                    (Phase::Inactive, Some(Transition::Resolved))
                } else {
                    (
                        Phase::Firing {
                            clear_since: Some(clear_since),
                        },
                        None,
                    )
                }
            }
        };
        self.phase = phase;
        if let Some(t) = transition {
            self.since = Some(wall);
            if t == Transition::Firing {
                self.firing_since = Some(wall);
            }
        }
        transition
    }

    /// Remembers `value` and drops samples older than `keep` (one older sample stays as the base of rates).
    fn remember(&mut self, now: Instant, value: f64, keep: Duration) {
        self.history.push_back((now, value));
        while self.history.len() > 2
            && self
                .history
                .get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= keep)
        {
            self.history.pop_front();
        }
    }

    /// Increase of a counter over the remembered history (resets read as a restart from 0) and the span it covers.
    fn increase(&self) -> Option<(f64, Duration)> {
        let (t0, first) = *self.history.front()?;
        let (t1, _) = *self.history.back()?;
        let mut total = 0.0;
        let mut prev = first;
        for (_, v) in self.history.iter().skip(1) {
            total += if *v >= prev { v - prev } else { *v };
            prev = *v;
        }
        Some((total, t1.duration_since(t0)))
    }

    /// Seconds since `value` last changed (the first sample counts as a change).
    fn quiet_for(&mut self, now: Instant, value: f64) -> Duration {
        match self.last_change {
            Some((_, v)) if v == value => {}
            _ => self.last_change = Some((now, value)),
        }
        self.last_change
            .map_or(Duration::ZERO, |(t, _)| now.duration_since(t))
    }

    fn read(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        snap: &Snapshot,
        firing: bool,
    ) -> Reading {
        let inactive = |summary: String| Reading {
            active: false,
            value: None,
            summary,
        };
        match self.cfg.condition.clone() {
            Condition::Threshold {
                metric,
                labels,
                aggregate,
                rate,
                window,
                above,
                below,
                clear,
            } => {
                let Some(v) = snap.select(&metric, &labels, aggregate) else {
                    return inactive(format!("{metric}{} not found", show_labels(&labels)));
                };
                let (value, what) = if rate {
                    self.remember(now, v, window);
                    match self.increase() {
                        Some((inc, span)) if !span.is_zero() => {
                            (inc / span.as_secs_f64(), "rate (per second)")
                        }
                        _ => return inactive(format!("{metric}: collecting a rate")),
                    }
                } else {
                    (v, "value")
                };
                let clear_above = if firing && above.is_some() {
                    clear
                } else {
                    None
                };
                let clear_below = if firing && below.is_some() {
                    clear
                } else {
                    None
                };
                let over = above.is_some_and(|a| value > clear_above.unwrap_or(a));
                let under = below.is_some_and(|b| value < clear_below.unwrap_or(b));
                let limit = match (above, below) {
                    (Some(a), Some(b)) => format!("outside {b}..{a}"),
                    (Some(a), None) => format!("above {a}"),
                    (None, Some(b)) => format!("below {b}"),
                    (None, None) => String::new(),
                };
                Reading {
                    active: over || under,
                    value: Some(value),
                    summary: format!(
                        "{metric}{} {what} is {} (alert {limit})",
                        show_labels(&labels),
                        round(value)
                    ),
                }
            }
            Condition::Disconnected { source } => {
                match snap.sum_where(names::SOURCE_CONNECTED, "source", &source) {
                    None => inactive(format!("source {source} is not running")),
                    Some(v) => Reading {
                        active: v < 0.5,
                        value: Some(v),
                        summary: if v < 0.5 {
                            format!("source {source} is disconnected")
                        } else {
                            format!("source {source} is connected")
                        },
                    },
                }
            }
            Condition::NoEvents { source, after } => {
                let count = snap
                    .sum_where(names::SOURCE_RECEIVED_EVENTS, "source", &source)
                    .unwrap_or(0.0);
                let quiet = self.quiet_for(now, count);
                Reading {
                    active: quiet >= after,
                    value: Some(quiet.as_secs_f64()),
                    summary: format!(
                        "no event from {source} for {}",
                        humantime::format_duration(whole_seconds(quiet))
                    ),
                }
            }
            Condition::NoWrites { after } => {
                let count = snap.sum(names::SINK_SENT_POINTS).unwrap_or(0.0);
                let quiet = self.quiet_for(now, count);
                Reading {
                    active: quiet >= after,
                    value: Some(quiet.as_secs_f64()),
                    summary: format!(
                        "no point written for {}",
                        humantime::format_duration(whole_seconds(quiet))
                    ),
                }
            }
            Condition::BufferFull {
                above_percent,
                clear_percent,
            } => {
                let bytes = snap.sum(names::BUFFER_BYTES);
                let capacity = snap.sum(names::BUFFER_CAPACITY_BYTES).filter(|c| *c > 0.0);
                let (Some(bytes), Some(capacity)) = (bytes, capacity) else {
                    return inactive("no durable buffer".to_string());
                };
                let percent = bytes / capacity * 100.0;
                let limit = if firing {
                    clear_percent.unwrap_or(above_percent)
                } else {
                    above_percent
                };
                Reading {
                    active: percent > limit,
                    value: Some(percent),
                    summary: format!(
                        "buffer {}% full ({} of {} bytes; alert above {above_percent}%)",
                        round(percent),
                        bytes,
                        capacity
                    ),
                }
            }
            Condition::DeadLetters {
                window,
                min_increase,
            } => {
                let count = snap.sum(names::DEAD_LETTERS).unwrap_or(0.0);
                self.remember(now, count, window);
                let (inc, _) = self.increase().unwrap_or((0.0, Duration::ZERO));
                Reading {
                    active: inc >= min_increase,
                    value: Some(inc),
                    summary: format!(
                        "{inc} dead letters in the last {}",
                        humantime::format_duration(window)
                    ),
                }
            }
            Condition::Anomaly { window, .. } => {
                let Some((metric, labels)) = self.cfg.condition.anomaly_series() else {
                    return inactive("no anomaly condition".to_string());
                };
                let metric = metric.to_string();
                let v = snap.select(&metric, &labels, Aggregate::Sum).unwrap_or(0.0);
                self.remember(now, v, window);
                let rate = match self.increase() {
                    Some((inc, span)) if span >= window => inc / span.as_secs_f64(),
                    _ => return inactive(format!("{metric}: collecting a rate")),
                };
                let dt = self
                    .last_anomaly_sample
                    .map_or(Duration::ZERO, |t| now.duration_since(t));
                self.last_anomaly_sample = Some(now);
                let Some(baseline) = self.baseline.as_mut() else {
                    return inactive("no baseline".to_string());
                };
                let score = baseline.observe(rate, dt, wall.hour() as usize);
                let summary = if score.warming_up {
                    format!(
                        "{metric}{} rate {}/s, learning the baseline",
                        show_labels(&labels),
                        round(rate)
                    )
                } else {
                    format!(
                        "{metric}{} rate {}/s vs baseline {}/s ± {} (z = {})",
                        show_labels(&labels),
                        round(rate),
                        round(score.mean),
                        round(score.sd),
                        round(score.z)
                    )
                };
                Reading {
                    active: score.anomalous,
                    value: Some(rate),
                    summary,
                }
            }
        }
    }
}

fn show_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", inner.join(","))
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
