//! Alert rules driven through their states with paused time: every condition
//! goes inactive → pending → firing → resolved, read from hand-made metric
//! snapshots (for the per-domain anomaly: from a real registry the rate tracker
//! counts into) by the real evaluator loop; notifications are read from the
//! notifier queue the evaluator fills.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_ingestor::config::alerts::{Aggregate, Condition, Direction, RuleConfig, Severity};
use ha_ingestor::event::{Context, EntityId, Event, EventKind, Origin, StateChanged, Timestamp};
use ha_ingestor::monitor::alerts::{
    Board, Evaluator, Notification, RuleStatus, Series, Snapshot, State, Status, Target,
};
use ha_ingestor::monitor::metrics as names;
use ha_ingestor::monitor::rates::Rates;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_secs(10);

fn series(name: &str, labels: &[(&str, &str)], value: f64) -> Series {
    Series {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value,
    }
}

fn rule(name: &str, condition: Condition, for_: Duration, resolve_after: Duration) -> RuleConfig {
    RuleConfig {
        name: name.to_string(),
        condition,
        for_,
        resolve_after,
        severity: Severity::Critical,
        notifiers: None,
        recovery: true,
        description: Some("test rule".into()),
    }
}

/// The evaluator loop over a snapshot the test sets, with one notifier queue the test reads.
struct Harness {
    snap: Arc<Mutex<Vec<Series>>>,
    board: Arc<Board>,
    notes: mpsc::Receiver<Notification>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(rules: Vec<RuleConfig>, initial: Vec<Series>) -> Harness {
        let snap = Arc::new(Mutex::new(initial));
        let board = Arc::new(Board::default());
        let (tx, notes) = mpsc::channel(64);
        let evaluator = Evaluator::new(rules, &[Target::new("test", tx)], board.clone());
        let shutdown = CancellationToken::new();
        let shared = snap.clone();
        let sampler = move || Snapshot::new(shared.lock().unwrap().clone());
        let task = tokio::spawn(evaluator.run(sampler, TICK, shutdown.clone()));
        let h = Harness {
            snap,
            board,
            notes,
            shutdown,
            task,
        };
        // The first tick fires at once.
        h.wait_evaluations(1).await;
        h
    }

    fn set(&self, s: Vec<Series>) {
        *self.snap.lock().unwrap() = s;
    }

    async fn wait_evaluations(&self, n: u64) {
        for _ in 0..1000 {
            if self.board.evaluations() >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the evaluator did not reach {n} evaluations");
    }

    /// Feeds and ticks once at a time, at most `max` times, until `rule` is in state `want`; whether it got there.
    async fn tick_until(&self, rule: &str, want: State, max: u32, mut feed: impl FnMut()) -> bool {
        for _ in 0..max {
            feed();
            self.ticks(1).await;
            if self.state(rule) == want {
                return true;
            }
        }
        false
    }

    /// Lets `n` ticks pass (virtual time) and waits until each was evaluated.
    async fn ticks(&self, n: u32) {
        for _ in 0..n {
            let before = self.board.evaluations();
            tokio::time::advance(TICK).await;
            self.wait_evaluations(before + 1).await;
        }
    }

    fn status(&self, name: &str) -> RuleStatus {
        self.board
            .view()
            .rules
            .into_iter()
            .find(|r| r.name == name)
            .expect("rule on the board")
    }

    fn state(&self, name: &str) -> State {
        self.status(name).state
    }

    fn note(&mut self) -> Option<Notification> {
        self.notes.try_recv().ok()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("evaluator ends");
    }
}

/// Drives a rule whose condition is set by `on`/`off` through pending, firing and resolved.
async fn full_cycle(
    mut h: Harness,
    name: &str,
    on: impl Fn(u32) -> Vec<Series>,
    off: impl Fn(u32) -> Vec<Series>,
    ticks_to_pending: u32,
) {
    assert_eq!(h.state(name), State::Inactive);
    let mut t = 0;
    // Condition true: pending first (for = 30 s = 3 ticks).
    for _ in 0..ticks_to_pending {
        t += 1;
        h.set(on(t));
        h.ticks(1).await;
    }
    assert_eq!(h.state(name), State::Pending, "{:?}", h.status(name));
    assert!(h.status(name).since.is_some());
    assert!(h.note().is_none(), "no notification while pending");
    for _ in 0..3 {
        t += 1;
        h.set(on(t));
        h.ticks(1).await;
    }
    assert_eq!(h.state(name), State::Firing, "{:?}", h.status(name));
    let n = h.note().expect("firing notification");
    assert_eq!((n.rule.as_str(), n.status), (name, Status::Firing));
    assert_eq!(n.severity, "critical");
    assert!(n.firing_since.is_some() && n.value.is_some(), "{n:?}");
    // Condition clear: stays firing for resolve_after (20 s), then resolves.
    t += 1;
    h.set(off(t));
    h.ticks(1).await;
    assert_eq!(
        h.state(name),
        State::Firing,
        "hysteresis: {:?}",
        h.status(name)
    );
    assert!(h.note().is_none());
    for _ in 0..2 {
        t += 1;
        h.set(off(t));
        h.ticks(1).await;
    }
    assert_eq!(h.state(name), State::Inactive, "{:?}", h.status(name));
    let n = h.note().expect("recovery notification");
    assert_eq!((n.rule.as_str(), n.status), (name, Status::Resolved));
    assert!(h.note().is_none());
    h.stop().await;
}

const FOR: Duration = Duration::from_secs(30);
const RESOLVE: Duration = Duration::from_secs(20);

#[tokio::test(start_paused = true)]
async fn threshold_on_a_value() {
    let cond = Condition::Threshold {
        metric: names::QUEUE_DEPTH.into(),
        labels: BTreeMap::from([("queue".into(), "events".into())]),
        aggregate: Aggregate::Max,
        rate: false,
        window: Duration::from_secs(60),
        above: Some(100.0),
        below: None,
        clear: None,
    };
    let depth = |v: f64| {
        vec![
            series(names::QUEUE_DEPTH, &[("queue", "events")], v),
            series(names::QUEUE_DEPTH, &[("queue", "chunks")], 5000.0),
        ]
    };
    let h = Harness::start(vec![rule("deep", cond, FOR, RESOLVE)], depth(3.0)).await;
    full_cycle(h, "deep", |_| depth(500.0), |_| depth(10.0), 1).await;
}

#[tokio::test(start_paused = true)]
async fn threshold_on_a_rate() {
    let cond = Condition::Threshold {
        metric: names::SINK_ERRORS.into(),
        labels: BTreeMap::new(),
        aggregate: Aggregate::Sum,
        rate: true,
        window: Duration::from_secs(60),
        above: Some(1.0),
        below: None,
        clear: None,
    };
    let count = Arc::new(Mutex::new(0.0));
    let errors = |c: &Arc<Mutex<f64>>, step: f64| {
        let mut v = c.lock().unwrap();
        *v += step;
        vec![series(
            names::SINK_ERRORS,
            &[("sink", "influxdb"), ("error_type", "transport")],
            *v,
        )]
    };
    let h = Harness::start(
        vec![rule("errors", cond, FOR, RESOLVE)],
        errors(&count, 0.0),
    )
    .await;
    // 50 errors per 10 s tick = 5/s; then none (the 60 s window forgets them within 6 ticks, so resolving takes longer).
    let (a, b) = (count.clone(), count.clone());
    let mut h = h;
    for _ in 0..1 {
        h.set(errors(&a, 50.0));
        h.ticks(1).await;
    }
    assert_eq!(
        h.state("errors"),
        State::Pending,
        "{:?}",
        h.status("errors")
    );
    let rate = h.status("errors").value.expect("a rate");
    assert!((rate - 5.0).abs() < 1e-9, "{rate}");
    for _ in 0..3 {
        h.set(errors(&a, 50.0));
        h.ticks(1).await;
    }
    assert_eq!(h.state("errors"), State::Firing);
    assert_eq!(h.note().map(|n| n.status), Some(Status::Firing));
    // No new errors: the rate falls below 1/s once the window no longer holds the burst.
    let mut resolved_after = None;
    for i in 1..=12 {
        h.set(errors(&b, 0.0));
        h.ticks(1).await;
        if h.state("errors") == State::Inactive {
            resolved_after = Some(i);
            break;
        }
    }
    let i = resolved_after.expect("resolves once the window forgot the errors");
    assert!(i >= 5, "resolved too early, after {i} ticks");
    assert_eq!(h.note().map(|n| n.status), Some(Status::Resolved));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn source_disconnected() {
    let cond = Condition::Disconnected {
        source: "homeassistant".into(),
    };
    let connected = |v: f64| {
        vec![series(
            names::SOURCE_CONNECTED,
            &[("source", "homeassistant")],
            v,
        )]
    };
    let h = Harness::start(vec![rule("ha_down", cond, FOR, RESOLVE)], connected(1.0)).await;
    full_cycle(h, "ha_down", |_| connected(0.0), |_| connected(1.0), 1).await;
}

#[tokio::test(start_paused = true)]
async fn no_events_from_a_source() {
    let cond = Condition::NoEvents {
        source: "homeassistant".into(),
        after: Duration::from_secs(20),
    };
    let received = |v: f64| {
        vec![
            series(
                names::SOURCE_RECEIVED_EVENTS,
                &[("source", "homeassistant"), ("event_type", "state_changed")],
                v,
            ),
            // Another source keeps talking; it must not hide the quiet one.
            series(
                names::SOURCE_RECEIVED_EVENTS,
                &[("source", "mqtt"), ("event_type", "message")],
                v * 1000.0 + 1.0,
            ),
        ]
    };
    let h = Harness::start(vec![rule("quiet", cond, FOR, RESOLVE)], received(5.0)).await;
    // Stuck at 5: quiet for 20 s after two more ticks → pending.
    full_cycle(
        h,
        "quiet",
        |_| {
            let mut s = received(5.0);
            s[1].value = 99.0 + 0.5;
            s
        },
        |t| received(10.0 + t as f64),
        2,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn no_points_written() {
    let cond = Condition::NoWrites {
        after: Duration::from_secs(20),
    };
    let sent = |v: f64| vec![series(names::SINK_SENT_POINTS, &[("sink", "influxdb")], v)];
    let h = Harness::start(vec![rule("no_writes", cond, FOR, RESOLVE)], sent(100.0)).await;
    full_cycle(
        h,
        "no_writes",
        |_| sent(100.0),
        |t| sent(200.0 + t as f64),
        2,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn buffer_filling_with_a_clear_level() {
    let cond = Condition::BufferFull {
        above_percent: 80.0,
        clear_percent: Some(70.0),
    };
    let fill = |bytes: f64| {
        vec![
            series(names::BUFFER_BYTES, &[], bytes),
            series(names::BUFFER_CAPACITY_BYTES, &[], 1000.0),
        ]
    };
    let mut h = Harness::start(vec![rule("buffer", cond, FOR, RESOLVE)], fill(100.0)).await;
    h.set(fill(850.0));
    h.ticks(4).await;
    assert_eq!(h.state("buffer"), State::Firing);
    assert!((h.status("buffer").value.unwrap() - 85.0).abs() < 1e-9);
    assert_eq!(h.note().map(|n| n.status), Some(Status::Firing));
    // 75 % is below the alert level but above the clear level: still active, for as long as it stays.
    h.set(fill(750.0));
    h.ticks(5).await;
    assert_eq!(h.state("buffer"), State::Firing);
    assert!(h.note().is_none());
    h.set(fill(600.0));
    h.ticks(3).await;
    assert_eq!(h.state("buffer"), State::Inactive);
    assert_eq!(h.note().map(|n| n.status), Some(Status::Resolved));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dead_letters_rising() {
    let cond = Condition::DeadLetters {
        window: Duration::from_secs(60),
        min_increase: 1.0,
    };
    let dl = |v: f64| {
        vec![series(
            names::DEAD_LETTERS,
            &[("stage", "sink"), ("kind", "type_conflict")],
            v,
        )]
    };
    // Letters from before the evaluator started do not count.
    let mut h = Harness::start(vec![rule("dl", cond, Duration::ZERO, RESOLVE)], dl(40.0)).await;
    h.ticks(3).await;
    assert_eq!(h.state("dl"), State::Inactive);
    h.set(dl(41.0));
    h.ticks(1).await;
    // `for = 0`: straight to firing.
    assert_eq!(h.state("dl"), State::Firing);
    assert_eq!(h.status("dl").value, Some(1.0));
    assert_eq!(h.note().map(|n| n.status), Some(Status::Firing));
    // No more: once the 60 s window no longer holds the increase, and 20 s later, resolved.
    h.ticks(5).await;
    assert_eq!(h.state("dl"), State::Firing);
    h.ticks(4).await;
    assert_eq!(h.state("dl"), State::Inactive, "{:?}", h.status("dl"));
    assert_eq!(h.note().map(|n| n.status), Some(Status::Resolved));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn event_rate_anomaly() {
    let cond = Condition::Anomaly {
        metric: Some(names::SOURCE_RECEIVED_EVENTS.into()),
        domain: None,
        labels: BTreeMap::from([("source".into(), "homeassistant".into())]),
        window: Duration::from_secs(60),
        warmup: Duration::from_secs(600),
        half_life: Duration::from_secs(600),
        z: 4.0,
        direction: Direction::Both,
        daily: false,
    };
    let count = Arc::new(Mutex::new(0.0));
    let add = |c: &Arc<Mutex<f64>>, n: f64| {
        let mut v = c.lock().unwrap();
        *v += n;
        vec![series(
            names::SOURCE_RECEIVED_EVENTS,
            &[("source", "homeassistant"), ("event_type", "state_changed")],
            *v,
        )]
    };
    let mut h = Harness::start(vec![rule("rate", cond, FOR, RESOLVE)], add(&count, 0.0)).await;
    // 20 min of ~10 events/s (100 ± 5 per tick): learned, never anomalous.
    for i in 0..120 {
        h.set(add(&count, if i % 2 == 0 { 95.0 } else { 105.0 }));
        h.ticks(1).await;
        assert_ne!(
            h.state("rate"),
            State::Firing,
            "tick {i}: {:?}",
            h.status("rate")
        );
    }
    assert_eq!(h.state("rate"), State::Inactive);
    assert!(
        h.status("rate").summary.contains("baseline"),
        "{:?}",
        h.status("rate")
    );
    // The source goes nearly silent: the 60 s rate drops, pending, then firing.
    let fired = h
        .tick_until("rate", State::Firing, 12, || h.set(add(&count, 2.0)))
        .await;
    assert!(fired, "{:?}", h.status("rate"));
    let n = h.note().expect("firing");
    assert_eq!(n.status, Status::Firing);
    assert!(n.summary.contains("z = -"), "{}", n.summary);
    // Back to normal: resolves.
    let resolved = h
        .tick_until("rate", State::Inactive, 15, || h.set(add(&count, 100.0)))
        .await;
    assert!(resolved, "{:?}", h.status("rate"));
    assert_eq!(h.note().map(|n| n.status), Some(Status::Resolved));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_value_does_not_flap_the_alert() {
    let cond = Condition::Threshold {
        metric: "m".into(),
        labels: BTreeMap::new(),
        aggregate: Aggregate::Sum,
        rate: false,
        window: Duration::from_secs(60),
        above: Some(10.0),
        below: None,
        clear: None,
    };
    let m = |v: f64| vec![series("m", &[], v)];
    let mut h = Harness::start(vec![rule("flap", cond, FOR, RESOLVE)], m(0.0)).await;
    // Above and below on alternate ticks: pending and back, never firing.
    for i in 0..10 {
        h.set(m(if i % 2 == 0 { 20.0 } else { 0.0 }));
        h.ticks(1).await;
        assert_ne!(h.state("flap"), State::Firing);
    }
    assert!(h.note().is_none(), "pending → inactive tells nobody");
    // Firing, then alternating: stays firing (each true tick restarts the resolve wait).
    h.set(m(20.0));
    h.ticks(4).await;
    assert_eq!(h.state("flap"), State::Firing);
    assert_eq!(h.note().map(|n| n.status), Some(Status::Firing));
    for i in 0..10 {
        h.set(m(if i % 2 == 0 { 0.0 } else { 20.0 }));
        h.ticks(1).await;
        assert_eq!(h.state("flap"), State::Firing, "tick {i}");
    }
    assert!(h.note().is_none(), "no notification while flapping");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn rules_without_data_stay_inactive_and_say_why() {
    let h = Harness::start(
        ha_ingestor::monitor::alerts::builtin::builtin_rules(),
        Vec::new(),
    )
    .await;
    h.ticks(3).await;
    let view = h.board.view();
    assert_eq!(view.rules.len(), 5);
    for r in &view.rules {
        if r.name == "no_writes" {
            continue;
        }
        assert_eq!(r.state, State::Inactive, "{r:?}");
        assert!(!r.summary.is_empty(), "{r:?}");
    }
    // The /alerts shape: exactly these keys.
    let json = serde_json::to_value(&view).unwrap();
    let keys: Vec<&str> = json["rules"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["name", "severity", "state", "since", "value", "summary"]
    );
    assert!(json["rules"][0]["since"].is_null());
    h.stop().await;
}

/// A state change of `entity`, as the pipeline stage sees it.
fn state_change(entity: &str) -> Event {
    Event {
        source: Arc::from("homeassistant"),
        time_fired: Timestamp(0),
        origin: Origin::Local,
        context: Context::default(),
        kind: EventKind::StateChanged(Box::new(StateChanged {
            entity_id: EntityId::new(entity).expect("valid entity id"),
            old_state: None,
            new_state: None,
        })),
        meta: Default::default(),
    }
}

/// Feeds one tick's events to the status page's rate tracker (which keeps the per-domain
/// counter) under a private Prometheus recorder, and returns the registry as `/metrics` reads.
fn feed(
    recorder: &metrics_exporter_prometheus::PrometheusRecorder,
    rates: &Rates,
    lights: usize,
    sensors: usize,
) -> Vec<Series> {
    let mut batch: Vec<Event> = (0..lights)
        .map(|i| state_change(&format!("light.l{}", i % 7)))
        .collect();
    batch.extend((0..sensors).map(|i| state_change(&format!("sensor.s{}", i % 40))));
    metrics::with_local_recorder(recorder, || rates.observe(&batch));
    Snapshot::parse(&recorder.handle().render())
        .series()
        .to_vec()
}

#[tokio::test(start_paused = true)]
async fn domain_rate_anomaly() {
    let anomaly = |domain: &str| Condition::Anomaly {
        metric: None,
        domain: Some(domain.into()),
        labels: BTreeMap::new(),
        window: Duration::from_secs(60),
        warmup: Duration::from_secs(600),
        half_life: Duration::from_secs(600),
        z: 4.0,
        direction: Direction::Both,
        daily: false,
    };
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let rates = Rates::default();
    let mut h = Harness::start(
        vec![
            rule("lights", anomaly("light"), FOR, RESOLVE),
            rule("sensors", anomaly("sensor"), FOR, RESOLVE),
        ],
        feed(&recorder, &rates, 0, 0),
    )
    .await;
    // 20 min: ~10 light events/s (100 ± 5 per tick) among 100 sensor events/s.
    for i in 0..120 {
        h.set(feed(
            &recorder,
            &rates,
            if i % 2 == 0 { 95 } else { 105 },
            1000,
        ));
        h.ticks(1).await;
        assert_eq!(
            h.state("lights"),
            State::Inactive,
            "tick {i}: {:?}",
            h.status("lights")
        );
    }
    assert!(
        h.status("lights").summary.contains("domain=\"light\""),
        "{:?}",
        h.status("lights")
    );
    // The lights go quiet while the sensors carry on: the whole source's rate drops by under
    // 10 %, the light domain's by 98 %. Pending first, then firing; the sensors stay quiet.
    let mut states = Vec::new();
    for _ in 0..12 {
        h.set(feed(&recorder, &rates, 2, 1000));
        h.ticks(1).await;
        states.push(h.state("lights"));
        assert_eq!(
            h.state("sensors"),
            State::Inactive,
            "{:?}",
            h.status("sensors")
        );
        if h.state("lights") == State::Firing {
            break;
        }
    }
    assert!(states.contains(&State::Pending), "{states:?}");
    assert_eq!(
        states.last(),
        Some(&State::Firing),
        "{:?}",
        h.status("lights")
    );
    let n = h.note().expect("firing");
    assert_eq!((n.rule.as_str(), n.status), ("lights", Status::Firing));
    assert!(n.summary.contains("z = -"), "{}", n.summary);
    // Back to normal: resolves.
    let resolved = h
        .tick_until("lights", State::Inactive, 15, || {
            h.set(feed(&recorder, &rates, 100, 1000))
        })
        .await;
    assert!(resolved, "{:?}", h.status("lights"));
    let n = h.note().expect("resolved");
    assert_eq!((n.rule.as_str(), n.status), ("lights", Status::Resolved));
    assert!(h.note().is_none(), "the sensors rule never fired");
    h.stop().await;
}
