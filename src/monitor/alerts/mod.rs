//! Alert rules over the metrics, evaluated on a fixed tick, with notifications.
//!
//! The evaluator reads a [`Snapshot`] of the metrics registry every
//! `[alerts] interval` ([`sample`] says why the registry), steps each rule's
//! state machine ([`rule`]) and offers notifications to the notifiers' queues
//! ([`notify`]) without ever waiting on them. The rules' states are published on
//! the [`Board`] that `/alerts` serves. Nothing here sits on the data path.

pub mod anomaly;
pub mod builtin;
pub mod notify;
pub mod rule;
pub mod sample;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::alerts::{AlertsConfig, RuleConfig};
pub use notify::{Notification, Status, Target};
pub use rule::{Rule, State, Transition};
pub use sample::{RegistrySampler, Sampler, Series, Snapshot};

use crate::feedback::commands::Commands;
use crate::monitor::metrics as names;

/// One rule as `/alerts` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStatus {
    /// The rule's name.
    pub name: String,
    /// `info`, `warning` or `critical`.
    pub severity: &'static str,
    /// `inactive`, `pending` or `firing`.
    pub state: State,
    /// When the current state began (RFC 3339), `null` while inactive since start.
    pub since: Option<String>,
    /// The last value judged.
    pub value: Option<f64>,
    /// One line saying what was seen.
    pub summary: String,
}

/// The body of `/alerts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AlertsView {
    /// Every rule in force, in evaluation order.
    pub rules: Vec<RuleStatus>,
}

/// The rules' latest states, written by the evaluator each tick and read by `/alerts`.
#[derive(Debug, Default)]
pub struct Board {
    // A std Mutex: held to copy a small Vec, never across an `.await`.
    view: Mutex<AlertsView>,
    evaluations: std::sync::atomic::AtomicU64,
}

impl Board {
    /// A copy of the latest states.
    pub fn view(&self) -> AlertsView {
        match self.view.lock() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// How many evaluation ticks have been published (lets a test wait for the next one).
    pub fn evaluations(&self) -> u64 {
        self.evaluations.load(std::sync::atomic::Ordering::Acquire)
    }

    fn publish(&self, view: AlertsView) {
        match self.view.lock() {
            Ok(mut v) => *v = view,
            Err(p) => *p.into_inner() = view,
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The rules and where their notifications go.
pub struct Evaluator {
    rules: Vec<(Rule, Vec<Target>)>,
    board: Arc<Board>,
}

impl Evaluator {
    /// Rules with their targets: a rule naming notifiers gets those, one naming none gets all.
    pub fn new(rules: Vec<RuleConfig>, targets: &[Target], board: Arc<Board>) -> Self {
        let rules = rules
            .into_iter()
            .map(|cfg| {
                let chosen = targets
                    .iter()
                    .filter(|t| cfg.notifiers.as_ref().is_none_or(|n| n.contains(&t.name)))
                    .cloned()
                    .collect();
                (Rule::new(cfg), chosen)
            })
            .collect();
        let e = Evaluator { rules, board };
        e.publish();
        e
    }

    /// Evaluates every rule once against `snap`; offers notifications; updates the board and metrics.
    pub fn evaluate(&mut self, now: Instant, wall: DateTime<Utc>, snap: &Snapshot) {
        metrics::counter!(names::ALERT_EVALUATIONS).increment(1);
        for (rule, targets) in &mut self.rules {
            let Some(t) = rule.evaluate(now, wall, snap) else {
                continue;
            };
            let name = rule.cfg.name.clone();
            let severity = rule.cfg.severity.as_str();
            metrics::counter!(names::ALERT_TRANSITIONS, "rule" => name.clone(), "state" => t.as_str())
                .increment(1);
            let firing = if t == Transition::Firing { 1.0 } else { 0.0 };
            if matches!(t, Transition::Firing | Transition::Resolved) {
                metrics::gauge!(names::ALERT_FIRING, "rule" => name.clone(), "severity" => severity)
                    .set(firing);
            }
            let status = match t {
                Transition::Firing => Status::Firing,
                Transition::Resolved if rule.cfg.recovery => Status::Resolved,
                _ => {
                    tracing::debug!(message = "Alert rule changed state.", rule = %name, state = t.as_str());
                    continue;
                }
            };
            let reading = rule.reading();
            match status {
                Status::Firing => {
                    tracing::warn!(message = "Alert firing.", rule = %name, severity, summary = %reading.summary)
                }
                Status::Resolved => {
                    tracing::info!(message = "Alert resolved.", rule = %name, summary = %reading.summary)
                }
            }
            let n = Notification {
                rule: name,
                severity,
                status,
                value: reading.value,
                summary: reading.summary.clone(),
                description: rule.cfg.description.clone(),
                firing_since: rule.firing_since().map(rfc3339),
                at: rfc3339(wall),
            };
            for target in targets.iter() {
                target.offer(&n);
            }
        }
        self.publish();
        self.board
            .evaluations
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn publish(&self) {
        let rules = self
            .rules
            .iter()
            .map(|(r, _)| RuleStatus {
                name: r.cfg.name.clone(),
                severity: r.cfg.severity.as_str(),
                state: r.state(),
                since: r.since().map(rfc3339),
                value: r.reading().value.filter(|v| v.is_finite()),
                summary: r.reading().summary.clone(),
            })
            .collect();
        self.board.publish(AlertsView { rules });
    }

    /// Evaluates every `interval` until `shutdown`.
    pub async fn run(
        mut self,
        mut sampler: impl Sampler,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let snap = sampler.sample();
            self.evaluate(Instant::now(), Utc::now(), &snap);
        }
    }
}

/// The running evaluator and notifiers.
pub struct Alerting {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Alerting {
    /// Stops the evaluator and the notifiers (what is still queued is not sent).
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Why alerting could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    /// A notifier could not be built.
    #[error("alerts: {0}")]
    Notifier(#[from] notify::NotifierError),
}

/// Starts the notifiers and the evaluator over the process's metrics registry.
///
/// `commands` is the Home Assistant source's command queue (for the
/// `homeassistant` notifier). Returns `None` when `[alerts] enabled = false`.
pub fn start(
    cfg: &AlertsConfig,
    board: Arc<Board>,
    commands: Option<&Commands>,
) -> Result<Option<Alerting>, AlertsError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut targets = Vec::new();
    for n in &cfg.notifiers {
        let (target, task) = notify::spawn(n, commands, shutdown.clone())?;
        targets.push(target);
        tasks.push(task);
    }
    let rules = cfg.effective_rules();
    tracing::info!(
        message = "Alert rules loaded.",
        rules = rules.len(),
        notifiers = targets.len(),
        interval = ?cfg.interval
    );
    let evaluator = Evaluator::new(rules, &targets, board);
    tasks.push(tokio::spawn(evaluator.run(
        RegistrySampler::new(),
        cfg.interval,
        shutdown.clone(),
    )));
    Ok(Some(Alerting { shutdown, tasks }))
}
