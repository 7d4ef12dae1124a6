//! Event rates per source, domain and event type over 1, 5 and 15 minutes, and
//! the busiest entities, for `/api/stats` and the status page.
//!
//! Fed once per batch by the pipeline ([`Rates::observe`]): one lock, then per
//! event a few string compares and, when the key changed from the previous
//! event, one hash lookup. Counts live in 5-second buckets (a ring covering 15
//! minutes) per key; keys per dimension are capped (the rest count as
//! [`OTHER`]), and entities are kept in a bounded space-saving top-k whose
//! counts decay with a one-minute time constant — memory never grows with the
//! number of entities.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Totals;
use crate::event::{Event, EventKind};

/// Width of one counting bucket.
pub const BUCKET: Duration = Duration::from_secs(5);
/// Buckets in the ring: 15 minutes of history.
const SLOTS: usize = 180;
/// The reported windows, in seconds.
pub const WINDOWS: [u64; 3] = [60, 300, 900];
/// Most distinct keys kept per dimension; later ones count under [`OTHER`].
pub const MAX_KEYS: usize = 256;
/// The key under which keys beyond [`MAX_KEYS`] are counted.
pub const OTHER: &str = "(other)";
/// Entities tracked by the top-k sketch (more than are shown, so the shown ones are stable).
pub const TRACKED_ENTITIES: usize = 64;
/// Time constant of the entity counts' decay: their rates are per-minute averages.
pub const ENTITY_TAU: Duration = Duration::from_secs(60);
/// Samples of the totals kept for the write-rate windows and the history chart.
const TOTAL_SAMPLES: usize = 1024;
/// Least spacing between two kept total samples.
const SAMPLE_SPACING: Duration = Duration::from_secs(1);

/// Rates over the reported windows, events (or points) per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WindowRates {
    /// Over the last minute.
    #[serde(rename = "1m")]
    pub m1: f64,
    /// Over the last 5 minutes.
    #[serde(rename = "5m")]
    pub m5: f64,
    /// Over the last 15 minutes.
    #[serde(rename = "15m")]
    pub m15: f64,
}

/// One busy entity, as the top-k sketch estimates it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityRate {
    /// The entity id.
    pub entity_id: String,
    /// Estimated events per second (a one-minute decaying average; may overestimate new entries).
    pub rate: f64,
}

/// One point of the rate history chart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// Seconds since the Unix epoch at the end of the interval.
    pub t: f64,
    /// Events received per second over the interval.
    pub received: f64,
    /// Points written per second over the interval.
    pub written: f64,
}

/// Everything the rates tracker reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RatesSnapshot {
    /// Totals-derived rates (`received`, `written`, `filtered`, `dead_lettered`, …).
    pub total: BTreeMap<&'static str, WindowRates>,
    /// Per source.
    pub source: BTreeMap<String, WindowRates>,
    /// Per entity domain (state changes; `call_service` by the service's domain).
    pub domain: BTreeMap<String, WindowRates>,
    /// Per HA event type.
    pub event_type: BTreeMap<String, WindowRates>,
    /// The busiest entities, highest first.
    pub top_entities: Vec<EntityRate>,
    /// Received and written rates over recent intervals, oldest first.
    pub history: Vec<HistoryPoint>,
}

/// The tracker; cheap to feed, read by the monitor listener.
#[derive(Debug)]
pub struct Rates {
    // A std Mutex: held for one batch's counting or one snapshot, never across an `.await`.
    inner: Mutex<Inner>,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            inner: Mutex::new(Inner::new(Instant::now())),
        }
    }
}

impl Rates {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Time since the tracker was made (with the topology's [`super::Stats`]).
    pub fn uptime(&self) -> Duration {
        self.lock().start.elapsed()
    }

    /// Counts a batch of events (call once per batch, before they are consumed).
    pub fn observe(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        self.lock().observe(Instant::now(), events);
    }

    /// Keeps a sample of the totals (at most one a second) for the totals-derived rates.
    pub fn sample(&self, totals: Totals) {
        self.lock().sample(Instant::now(), totals);
    }

    /// The rates now; `show` entities at most.
    pub fn snapshot(&self, totals: Totals, show: usize) -> RatesSnapshot {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sample(now, totals);
        inner.snapshot(now, totals, show)
    }
}

/// Counts of one key, bucketed.
#[derive(Debug)]
struct Series {
    slots: Box<[u32; SLOTS]>,
    /// The bucket last written; slots of older epochs than `epoch - SLOTS` are stale.
    epoch: u64,
}

impl Series {
    fn new(epoch: u64) -> Self {
        Series {
            slots: Box::new([0; SLOTS]),
            epoch,
        }
    }

    fn roll(&mut self, epoch: u64) {
        if epoch <= self.epoch {
            return;
        }
        let gap = (epoch - self.epoch).min(SLOTS as u64);
        for e in (epoch + 1 - gap)..=epoch {
            self.slots[(e % SLOTS as u64) as usize] = 0;
        }
        self.epoch = epoch;
    }

    fn add(&mut self, epoch: u64, n: u32) {
        self.roll(epoch);
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        *slot = slot.saturating_add(n);
    }

    /// Events in the last `buckets` buckets up to `now_epoch`.
    fn sum(&self, now_epoch: u64, buckets: u64) -> u64 {
        let first = (now_epoch + 1).saturating_sub(buckets);
        (first..=now_epoch)
            .filter(|&e| e <= self.epoch && self.epoch - e < SLOTS as u64)
            .map(|e| u64::from(self.slots[(e % SLOTS as u64) as usize]))
            .sum()
    }
}

/// One dimension (source, domain, event type): bounded keys, each with its series.
#[derive(Debug, Default)]
struct Dimension {
    index: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    keys: Vec<Box<str>>,
    series: Vec<Series>,
    /// The previous event's key and index: consecutive events mostly share it.
    last: Option<usize>,
}

impl Dimension {
    fn slot(&mut self, key: &str, epoch: u64) -> usize {
        if let Some(i) = self.last
            && *self.keys[i] == *key
        {
            return i;
        }
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => {
                let name: &str = if self.keys.len() < MAX_KEYS {
                    key
                } else {
                    OTHER
                };
                match self.index.get(name) {
                    Some(&i) => i,
                    None => {
                        self.keys.push(name.into());
                        self.series.push(Series::new(epoch));
                        self.index.insert(name.into(), self.keys.len() - 1);
                        self.keys.len() - 1
                    }
                }
            }
        };
        // Keys beyond the cap all map to OTHER; only remember real matches.
        self.last = (*self.keys[i] == *key).then_some(i);
        i
    }

    fn add(&mut self, key: &str, epoch: u64) {
        let i = self.slot(key, epoch);
        self.series[i].add(epoch, 1);
    }

    fn report(&self, at: &WindowAt) -> BTreeMap<String, WindowRates> {
        self.keys
            .iter()
            .zip(&self.series)
            .map(|(k, s)| (k.to_string(), at.rates(s)))
            .collect()
    }
}

/// Space-saving top-k with exponential decay: bounded, estimates per-entity rates.
#[derive(Debug, Default)]
struct TopK {
    index: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    entries: Vec<(Box<str>, f64)>,
    /// The bucket of the last decay.
    decayed_at: u64,
}

impl TopK {
    fn add(&mut self, key: &str) {
        if let Some(&i) = self.index.get(key) {
            self.entries[i].1 += 1.0;
            return;
        }
        if self.entries.len() < TRACKED_ENTITIES {
            self.entries.push((key.into(), 1.0));
            self.index.insert(key.into(), self.entries.len() - 1);
            return;
        }
        // Replace the smallest: the newcomer inherits its count (space-saving's overestimate).
        let Some((i, min)) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.1))
            .min_by(|a, b| a.1.total_cmp(&b.1))
        else {
            return;
        };
        let old = std::mem::replace(&mut self.entries[i], (key.into(), min + 1.0));
        self.index.remove(&old.0);
        self.index.insert(key.into(), i);
    }

    fn decay(&mut self, epoch: u64) {
        if epoch <= self.decayed_at {
            return;
        }
        let steps = (epoch - self.decayed_at) as f64;
        let factor = (-steps * BUCKET.as_secs_f64() / ENTITY_TAU.as_secs_f64()).exp();
        for e in &mut self.entries {
            e.1 *= factor;
        }
        self.decayed_at = epoch;
    }

    /// The `show` busiest; `elapsed` is how long counting has run (seconds).
    fn top(&self, show: usize, elapsed: f64) -> Vec<EntityRate> {
        let mut v: Vec<&(Box<str>, f64)> = self.entries.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // A decaying count of a steady rate approaches rate × tau; before tau has passed,
        // rate × tau × (1 − e^(−elapsed/tau)).
        let tau = ENTITY_TAU.as_secs_f64();
        let span = tau * (1.0 - (-elapsed.max(BUCKET.as_secs_f64()) / tau).exp());
        v.into_iter()
            .take(show)
            .map(|(k, c)| EntityRate {
                entity_id: k.to_string(),
                rate: c / span,
            })
            .collect()
    }
}

/// Where "now" falls in the bucket grid, for turning sums into rates.
struct WindowAt {
    epoch: u64,
    /// Seconds since the tracker started.
    elapsed: f64,
    /// Seconds into the current bucket.
    into_bucket: f64,
}

impl WindowAt {
    fn rates(&self, s: &Series) -> WindowRates {
        let bucket = BUCKET.as_secs_f64();
        let rate = |window: u64| {
            let buckets = window / BUCKET.as_secs();
            // The window is `buckets - 1` full buckets plus the part of the current one.
            let covered = ((buckets - 1) as f64 * bucket + self.into_bucket).min(self.elapsed);
            if covered <= 0.0 {
                0.0
            } else {
                s.sum(self.epoch, buckets) as f64 / covered
            }
        };
        WindowRates {
            m1: rate(WINDOWS[0]),
            m5: rate(WINDOWS[1]),
            m15: rate(WINDOWS[2]),
        }
    }
}

/// Reads one counter out of the totals.
type Pick = fn(&Totals) -> u64;

#[derive(Debug)]
struct Inner {
    start: Instant,
    source: Dimension,
    domain: Dimension,
    event_type: Dimension,
    entities: TopK,
    samples: VecDeque<(Instant, Totals)>,
}

impl Inner {
    fn new(start: Instant) -> Self {
        Inner {
            start,
            source: Dimension::default(),
            domain: Dimension::default(),
            event_type: Dimension::default(),
            entities: TopK::default(),
            samples: VecDeque::new(),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / BUCKET.as_nanos()) as u64
    }

    fn observe(&mut self, now: Instant, events: &[Event]) {
        let epoch = self.epoch(now);
        self.entities.decay(epoch);
        for event in events {
            self.source.add(&event.source, epoch);
            self.event_type.add(event.event_type(), epoch);
            match &event.kind {
                EventKind::StateChanged(sc) => {
                    self.domain.add(sc.entity_id.domain(), epoch);
                    self.entities.add(sc.entity_id.as_str());
                }
                EventKind::Bus(bus) => {
                    if let Some(domain) = bus.data.get("domain").and_then(|d| d.as_str()) {
                        self.domain.add(domain, epoch);
                    }
                }
            }
        }
    }

    fn sample(&mut self, now: Instant, totals: Totals) {
        if let Some((t, _)) = self.samples.back()
            && now.saturating_duration_since(*t) < SAMPLE_SPACING
        {
            return;
        }
        if self.samples.len() == TOTAL_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now, totals));
    }

    /// Rates of one total over each window, from the samples (at-or-before each window's start).
    fn total_rates(&self, now: Instant, current: u64, pick: Pick) -> WindowRates {
        let rate = |window: u64| {
            let from = now.checked_sub(Duration::from_secs(window));
            // The latest sample at or before the window's start, else the oldest one.
            let base = from
                .and_then(|from| self.samples.iter().rev().find(|(t, _)| *t <= from))
                .or_else(|| self.samples.front());
            match base {
                Some((t, v)) => {
                    let span = now.saturating_duration_since(*t).as_secs_f64();
                    if span <= 0.0 {
                        0.0
                    } else {
                        current.saturating_sub(pick(v)) as f64 / span
                    }
                }
                None => 0.0,
            }
        };
        WindowRates {
            m1: rate(WINDOWS[0]),
            m5: rate(WINDOWS[1]),
            m15: rate(WINDOWS[2]),
        }
    }

    fn history(&self) -> Vec<HistoryPoint> {
        let wall_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let last = self.samples.back().map(|(t, _)| *t);
        let mut out = Vec::new();
        let mut prev: Option<&(Instant, Totals)> = None;
        for s in &self.samples {
            match prev {
                // At least a bucket apart, so the chart is not jagged by one-second noise.
                Some(p) if s.0.saturating_duration_since(p.0) >= BUCKET => {
                    let dt = s.0.saturating_duration_since(p.0).as_secs_f64();
                    let ago = last.map_or(0.0, |l| l.saturating_duration_since(s.0).as_secs_f64());
                    out.push(HistoryPoint {
                        t: wall_now - ago,
                        received: s.1.received.saturating_sub(p.1.received) as f64 / dt,
                        written: s.1.written.saturating_sub(p.1.written) as f64 / dt,
                    });
                    prev = Some(s);
                }
                Some(_) => {}
                None => prev = Some(s),
            }
        }
        out
    }

    fn snapshot(&mut self, now: Instant, totals: Totals, show: usize) -> RatesSnapshot {
        let epoch = self.epoch(now);
        self.entities.decay(epoch);
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let at = WindowAt {
            epoch,
            elapsed,
            into_bucket: elapsed - epoch as f64 * BUCKET.as_secs_f64(),
        };
        let picks: [(&'static str, u64, Pick); 6] = [
            ("received", totals.received, |t| t.received),
            ("filtered", totals.filtered, |t| t.filtered),
            ("encoded", totals.encoded, |t| t.encoded),
            ("written", totals.written, |t| t.written),
            ("dead_lettered", totals.dead_lettered, |t| t.dead_lettered),
            ("decode_errors", totals.decode_errors, |t| t.decode_errors),
        ];
        RatesSnapshot {
            total: picks
                .iter()
                .map(|(name, current, pick)| (*name, self.total_rates(now, *current, *pick)))
                .collect(),
            source: self.source.report(&at),
            domain: self.domain.report(&at),
            event_type: self.event_type.report(&at),
            top_entities: self.entities.top(show, elapsed),
            history: self.history(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BusEvent, Context, EntityId, Origin, StateChanged, Timestamp};
    use std::sync::Arc;

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

    fn bus(event_type: &str, domain: Option<&str>) -> Event {
        let mut data = serde_json::Map::new();
        if let Some(d) = domain {
            data.insert("domain".into(), d.into());
        }
        Event {
            source: Arc::from("homeassistant"),
            time_fired: Timestamp(0),
            origin: Origin::Local,
            context: Context::default(),
            kind: EventKind::Bus(BusEvent {
                event_type: event_type.into(),
                data,
            }),
            meta: Default::default(),
        }
    }

    #[test]
    fn rates_per_dimension_over_windows() {
        let t0 = Instant::now();
        let mut inner = Inner::new(t0);
        // 30 s of history: 10 light events and 5 sensor events per 5-second bucket.
        for b in 0..6u64 {
            let at = t0 + BUCKET * b as u32 + Duration::from_millis(100);
            let mut batch: Vec<Event> = (0..10).map(|_| state_change("light.a")).collect();
            batch.extend((0..5).map(|i| state_change(&format!("sensor.s{i}"))));
            batch.push(bus("call_service", Some("light")));
            inner.observe(at, &batch);
        }
        let now = t0 + Duration::from_secs(30);
        let snap = inner.snapshot(now, Totals::default(), 3);
        // Every window covers all 30 s so far: 16 events × 6 buckets / 30 s.
        let ha = snap.source["homeassistant"];
        assert!((ha.m1 - 96.0 / 30.0).abs() < 1e-9, "{ha:?}");
        assert_eq!(ha.m1, ha.m15);
        assert!((snap.domain["light"].m1 - 66.0 / 30.0).abs() < 1e-9);
        assert!((snap.domain["sensor"].m5 - 30.0 / 30.0).abs() < 1e-9);
        assert!((snap.event_type["call_service"].m1 - 6.0 / 30.0).abs() < 1e-9);
        assert_eq!(snap.top_entities[0].entity_id, "light.a");
        assert!(snap.top_entities[0].rate > snap.top_entities[1].rate);
        assert_eq!(snap.top_entities.len(), 3);

        // Ten minutes later with nothing new: the minute is empty, the 15 minutes are not.
        let later = now + Duration::from_secs(600);
        let snap = inner.snapshot(later, Totals::default(), 3);
        let ha = snap.source["homeassistant"];
        assert_eq!(ha.m1, 0.0);
        assert_eq!(ha.m5, 0.0);
        // The process has run 630 s: the 15-minute rate averages over those.
        assert!((ha.m15 - 96.0 / 630.0).abs() < 1e-9, "{ha:?}");
        assert!(snap.top_entities[0].rate < 0.01, "decayed");

        // After 15 more minutes the ring has forgotten them.
        let snap = inner.snapshot(later + Duration::from_secs(900), Totals::default(), 3);
        assert_eq!(snap.source["homeassistant"].m15, 0.0);
    }

    #[test]
    fn entity_rate_estimates_a_steady_rate() {
        let t0 = Instant::now();
        let mut inner = Inner::new(t0);
        // 2 events/s for 3 minutes, counted once a second.
        for s in 0..180u64 {
            let batch = vec![state_change("sensor.busy"), state_change("sensor.busy")];
            inner.observe(t0 + Duration::from_secs(s), &batch);
        }
        let snap = inner.snapshot(t0 + Duration::from_secs(180), Totals::default(), 1);
        let rate = snap.top_entities[0].rate;
        // Bucketed decay is a step approximation: within 15 %.
        assert!((rate - 2.0).abs() < 0.3, "{rate}");
        // Early on the estimate is already about right, not ramping up from zero.
        let mut inner = Inner::new(t0);
        for s in 0..10u64 {
            let batch = vec![state_change("sensor.busy"), state_change("sensor.busy")];
            inner.observe(t0 + Duration::from_secs(s), &batch);
        }
        let snap = inner.snapshot(t0 + Duration::from_secs(10), Totals::default(), 1);
        let rate = snap.top_entities[0].rate;
        assert!((rate - 2.0).abs() < 0.5, "{rate}");
    }

    #[test]
    fn keys_and_entities_are_bounded() {
        let t0 = Instant::now();
        let mut inner = Inner::new(t0);
        let batch: Vec<Event> = (0..2000)
            .map(|i| bus(&format!("custom_{i}"), None))
            .chain((0..2000).map(|i| state_change(&format!("sensor.e{i}"))))
            .collect();
        inner.observe(t0, &batch);
        assert_eq!(inner.event_type.keys.len(), MAX_KEYS + 1);
        assert_eq!(inner.entities.entries.len(), TRACKED_ENTITIES);
        assert_eq!(inner.entities.index.len(), TRACKED_ENTITIES);
        let snap = inner.snapshot(t0 + Duration::from_secs(5), Totals::default(), 10);
        // Everything past the cap is counted, under OTHER (`state_changed` came last, so it is there too).
        let other = snap.event_type[OTHER].m1 * 5.0;
        assert!((other - (4000 - MAX_KEYS) as f64).abs() < 1e-6, "{other}");
        assert_eq!(snap.top_entities.len(), 10);
    }

    #[test]
    fn total_rates_from_samples() {
        let t0 = Instant::now();
        let mut inner = Inner::new(t0);
        for s in 0..=120u64 {
            let totals = Totals {
                received: s * 10,
                written: s * 8,
                ..Totals::default()
            };
            inner.sample(t0 + Duration::from_secs(s), totals);
        }
        let now = t0 + Duration::from_secs(120);
        let current = Totals {
            received: 1200,
            written: 960,
            ..Totals::default()
        };
        let snap = inner.snapshot(now, current, 5);
        assert!((snap.total["received"].m1 - 10.0).abs() < 1e-9);
        assert!((snap.total["written"].m1 - 8.0).abs() < 1e-9);
        // Longer windows than the history: averaged over what there is.
        assert!((snap.total["written"].m15 - 8.0).abs() < 1e-9);
        assert!(snap.history.len() >= 20, "{}", snap.history.len());
        assert!(
            snap.history
                .iter()
                .all(|p| (p.received - 10.0).abs() < 1e-9 && (p.written - 8.0).abs() < 1e-9)
        );
    }
}
