//! Event rates per source, domain and event type over 1, 5 and 15 minutes, and
//! the busiest entities, for `/api/stats` and the status page.
//!
//! Fed once per batch by the pipeline ([`Rates::observe`]): one lock, then per
//! event a few string compares and, when the key changed from the previous
//! event, one hash lookup; the tallies go into the buckets once per batch.
//! Counts live in 5-second buckets (a ring covering 15 minutes) per key; keys
//! per dimension are capped (the rest count as [`OTHER`]), and entities are
//! kept in a bounded space-saving top-k whose counts decay with a one-minute
//! time constant, fed a random sample of the state changes above
//! [`SAMPLE_ABOVE`] per second — memory never grows with the number of
//! entities. The same pass keeps the per-domain Prometheus counter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Totals;
use super::metrics as names;
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
/// Entity events per second up to which the top-k counts every one; above, a random sample of about this many.
pub const SAMPLE_ABOVE: f64 = 2000.0;
/// Largest sampling stride of the top-k (one event in this many counted, on average).
pub const MAX_STRIDE: u32 = 256;
/// Events after which the top-k re-chooses its stride even before a second has passed.
const STRIDE_EVENTS: u64 = 2048;
/// Most distinct `domain` label values of [`names::PIPELINE_RECEIVED_EVENTS`]; later domains count as [`OTHER_DOMAIN`].
pub const MAX_DOMAIN_LABELS: usize = 64;
/// The `domain` label value of domains beyond [`MAX_DOMAIN_LABELS`] (HA domains never begin with `_`).
pub const OTHER_DOMAIN: &str = "_other";
/// The `domain` label value of events without a domain (bus events other than service calls, …).
pub const NO_DOMAIN: &str = "_none";
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
///
/// Events are tallied per key in a plain array and added to the series once
/// per batch ([`Dimension::flush`]), so the per-event work is finding the key.
#[derive(Debug, Default)]
struct Dimension {
    index: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    keys: Vec<Box<str>>,
    series: Vec<Series>,
    /// The previous event's key and index: consecutive events mostly share it.
    last: Option<usize>,
    /// Events per key in the current batch.
    pending: Vec<u32>,
    /// Keys with pending events, each once.
    touched: Vec<usize>,
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
                        self.pending.push(0);
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

    /// Tallies one event of `key`.
    #[inline]
    fn add(&mut self, key: &str, epoch: u64) {
        let i = self.slot(key, epoch);
        let n = &mut self.pending[i];
        if *n == 0 {
            self.touched.push(i);
        }
        *n = n.saturating_add(1);
    }

    /// Adds the batch's tallies to the series of bucket `epoch`.
    fn flush(&mut self, epoch: u64) {
        for &i in &self.touched {
            self.series[i].add(epoch, self.pending[i]);
            self.pending[i] = 0;
        }
        self.touched.clear();
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
///
/// Cheap per event: one hash of the entity id and one probe; a miss replaces the
/// smallest entry in place (its id's allocation is reused). When entity events
/// come faster than [`SAMPLE_ABOVE`] per second, only a random sample of about
/// that many per second is counted, each weighted by the sampling stride, so the
/// cost per event falls as the rate grows while the estimates stay unbiased.
#[derive(Debug)]
struct TopK {
    /// Entry by the 64-bit hash of its entity id (the entry holds the id).
    index: HashMap<u64, u32, foldhash::fast::RandomState>,
    entries: Vec<Tracked>,
    /// Hashes entity ids; fixed seed so runs are reproducible.
    hasher: foldhash::fast::FixedState,
    /// The bucket of the last decay.
    decayed_at: u64,
    /// Mean events between two counted ones (1: every event counts).
    stride: u32,
    /// Events still to pass over before the next counted one.
    skip: u32,
    /// State of the xorshift generator that draws the gaps between counted events.
    rng: u64,
    /// Entity events seen since `window_start`, for choosing the stride.
    window_events: u64,
    window_start: Option<Instant>,
}

/// One tracked entity.
#[derive(Debug)]
struct Tracked {
    id: String,
    hash: u64,
    count: f64,
}

impl Default for TopK {
    fn default() -> Self {
        TopK {
            index: HashMap::default(),
            entries: Vec::with_capacity(TRACKED_ENTITIES),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_7091_6e17_a11c),
            decayed_at: 0,
            stride: 1,
            skip: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            window_events: 0,
            window_start: None,
        }
    }
}

impl TopK {
    /// Counts one event of `key`, or passes over it when sampling.
    #[inline]
    fn add(&mut self, key: &str) {
        self.window_events += 1;
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        if self.stride > 1 {
            // Gaps uniform in 0..=2(stride-1): a mean of stride-1 events passed over per counted one.
            self.skip = (self.next_random() % (2 * u64::from(self.stride) - 1)) as u32;
        }
        self.count(key, f64::from(self.stride));
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: plenty for spacing samples, and deterministic.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn count(&mut self, key: &str, weight: f64) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        if let Some(&i) = self.index.get(&hash) {
            let e = &mut self.entries[i as usize];
            if e.id != key {
                // Two ids with one 64-bit hash: the newcomer takes the entry over, as a
                // space-saving replacement would (its count is an overestimate anyway).
                e.id.clear();
                e.id.push_str(key);
            }
            e.count += weight;
            return;
        }
        if self.entries.len() < TRACKED_ENTITIES {
            self.index.insert(hash, self.entries.len() as u32);
            self.entries.push(Tracked {
                id: key.to_string(),
                hash,
                count: weight,
            });
            return;
        }
        // Replace the smallest: the newcomer inherits its count (space-saving's overestimate).
        let mut min_i = 0;
        let mut min = f64::INFINITY;
        for (i, e) in self.entries.iter().enumerate() {
            if e.count < min {
                min = e.count;
                min_i = i;
            }
        }
        let e = &mut self.entries[min_i];
        self.index.remove(&e.hash);
        e.id.clear();
        e.id.push_str(key);
        e.hash = hash;
        e.count = min + weight;
        self.index.insert(hash, min_i as u32);
    }

    /// Re-chooses the sampling stride from the entity event rate, at most once a second
    /// or every [`STRIDE_EVENTS`] events.
    fn pace(&mut self, now: Instant) {
        let Some(start) = self.window_start else {
            self.window_start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < Duration::from_secs(1) && self.window_events < STRIDE_EVENTS {
            return;
        }
        let rate = self.window_events as f64 / elapsed.as_secs_f64().max(1e-3);
        self.stride = (rate / SAMPLE_ABOVE)
            .ceil()
            .clamp(1.0, f64::from(MAX_STRIDE)) as u32;
        self.skip = self.skip.min(2 * (self.stride - 1));
        self.window_events = 0;
        self.window_start = Some(now);
    }

    fn decay(&mut self, epoch: u64) {
        if epoch <= self.decayed_at {
            return;
        }
        let steps = (epoch - self.decayed_at) as f64;
        let factor = (-steps * BUCKET.as_secs_f64() / ENTITY_TAU.as_secs_f64()).exp();
        for e in &mut self.entries {
            e.count *= factor;
        }
        self.decayed_at = epoch;
    }

    /// The `show` busiest; `elapsed` is how long counting has run (seconds).
    fn top(&self, show: usize, elapsed: f64) -> Vec<EntityRate> {
        let mut v: Vec<&Tracked> = self.entries.iter().collect();
        v.sort_by(|a, b| b.count.total_cmp(&a.count).then_with(|| a.id.cmp(&b.id)));
        // A decaying count of a steady rate approaches rate × tau; before tau has passed,
        // rate × tau × (1 − e^(−elapsed/tau)).
        let tau = ENTITY_TAU.as_secs_f64();
        let span = tau * (1.0 - (-elapsed.max(BUCKET.as_secs_f64()) / tau).exp());
        v.into_iter()
            .take(show)
            .map(|e| EntityRate {
                entity_id: e.id.clone(),
                rate: e.count / span,
            })
            .collect()
    }
}

/// The Prometheus counter of events by domain ([`names::PIPELINE_RECEIVED_EVENTS`]):
/// the first [`MAX_DOMAIN_LABELS`] domains get their own label value, later ones
/// count under [`OTHER_DOMAIN`], events without a domain under [`NO_DOMAIN`].
/// Added once per batch from the domain dimension's tallies.
#[derive(Debug, Default)]
struct DomainCounter {
    /// One handle per key of the domain dimension (made when the key first counts).
    handles: Vec<metrics::Counter>,
    /// Events without a domain in the current batch.
    none: u64,
    none_handle: Option<metrics::Counter>,
}

impl DomainCounter {
    /// Adds the batch's tallies of `domains` (before it flushes them) to the counters.
    fn flush(&mut self, domains: &Dimension) {
        for &slot in &domains.touched {
            while self.handles.len() <= slot {
                let i = self.handles.len();
                let key = &domains.keys[i];
                let label = if i < MAX_DOMAIN_LABELS && **key != *OTHER {
                    key.to_string()
                } else {
                    OTHER_DOMAIN.to_string()
                };
                self.handles.push(metrics::counter!(
                    names::PIPELINE_RECEIVED_EVENTS,
                    "domain" => label
                ));
            }
            self.handles[slot].increment(u64::from(domains.pending[slot]));
        }
        if self.none > 0 {
            self.none_handle
                .get_or_insert_with(
                    || metrics::counter!(names::PIPELINE_RECEIVED_EVENTS, "domain" => NO_DOMAIN),
                )
                .increment(self.none);
            self.none = 0;
        }
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
    domain_counter: DomainCounter,
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
            domain_counter: DomainCounter::default(),
            samples: VecDeque::new(),
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.start).as_nanos() / BUCKET.as_nanos()) as u64
    }

    fn observe(&mut self, now: Instant, events: &[Event]) {
        let epoch = self.epoch(now);
        self.entities.decay(epoch);
        self.entities.pace(now);
        for event in events {
            self.source.add(&event.source, epoch);
            self.event_type.add(event.event_type(), epoch);
            match &event.kind {
                EventKind::StateChanged(sc) => {
                    self.domain.add(sc.entity_id.domain(), epoch);
                    self.entities.add(sc.entity_id.as_str());
                }
                EventKind::Bus(bus) => match bus.data.get("domain").and_then(|d| d.as_str()) {
                    Some(domain) => self.domain.add(domain, epoch),
                    None => self.domain_counter.none += 1,
                },
            }
        }
        self.domain_counter.flush(&self.domain);
        self.source.flush(epoch);
        self.event_type.flush(epoch);
        self.domain.flush(epoch);
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

    /// A skewed stream: 8 heavy entities with `heavy` of the events between them, the rest
    /// spread over 5,000 light ones; `per_second` events for `seconds`, in batches of a
    /// tenth of a second (20 different random batches, made once, taken in turn).
    /// Returns the tracker, the end time and each heavy entity's true rate.
    fn skewed(per_second: usize, seconds: u64, heavy: f64) -> (Inner, Instant, Vec<(String, f64)>) {
        let t0 = Instant::now();
        let mut inner = Inner::new(t0);
        let mut rng = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let light: Vec<Event> = (0..5000)
            .map(|i| state_change(&format!("sensor.light_{i}")))
            .collect();
        let heavy_ones: Vec<Event> = (0..8)
            .map(|i| state_change(&format!("sensor.heavy_{i}")))
            .collect();
        let per_batch = per_second / 10;
        let batches: Vec<Vec<Event>> = (0..20)
            .map(|_| {
                (0..per_batch)
                    .map(|_| {
                        let r = next();
                        let pick = (r >> 32) as usize;
                        if (r % 10_000) as f64 / 10_000.0 < heavy {
                            heavy_ones[pick % heavy_ones.len()].clone()
                        } else {
                            light[pick % light.len()].clone()
                        }
                    })
                    .collect()
            })
            .collect();
        for tenth in 0..seconds * 10 {
            let batch = &batches[tenth as usize % batches.len()];
            inner.observe(t0 + Duration::from_millis(tenth * 100), batch);
        }
        // The batches repeat every 2 s: an entity's rate is its events in them over 2 s.
        let truth = heavy_ones
            .iter()
            .map(|h| {
                let n = batches.iter().flatten().filter(|e| *e == h).count();
                let id = h
                    .entity_id()
                    .map_or(String::new(), |id| id.as_str().to_string());
                (id, n as f64 / 2.0)
            })
            .collect();
        (inner, t0 + Duration::from_secs(seconds), truth)
    }

    fn check_heavy_hitters(inner: &mut Inner, now: Instant, truth: &[(String, f64)]) {
        let snap = inner.snapshot(now, Totals::default(), 10);
        for e in snap.top_entities.iter().take(truth.len()) {
            let Some((_, rate)) = truth.iter().find(|(id, _)| *id == e.entity_id) else {
                panic!(
                    "{} is not a heavy one: {:?}",
                    e.entity_id, snap.top_entities
                );
            };
            // The decayed estimate of a steady rate (about 4 % low by the bucketed decay),
            // with sampling noise: within 10 %.
            assert!(
                (e.rate - rate).abs() < 0.1 * rate,
                "{} at {} /s, truly {rate}",
                e.entity_id,
                e.rate
            );
        }
        // The next ones are light entities, far below (space-saving overestimates them:
        // each of the other 56 entries carries about 1/56 of the light events).
        let least = truth.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
        let next = &snap.top_entities[truth.len()];
        assert!(next.rate < least / 2.0, "{next:?} vs {least}");
    }

    #[test]
    fn heavy_hitters_are_found_in_a_skewed_stream() {
        // Slow enough that every event is counted: 500/s, 40 % on 8 entities (25/s each).
        let (mut inner, now, truth) = skewed(500, 180, 0.4);
        assert_eq!(inner.entities.stride, 1);
        check_heavy_hitters(&mut inner, now, &truth);
    }

    #[test]
    fn heavy_hitters_are_found_when_sampling() {
        // 19,000/s: sampled about 1 in 10; 8 entities with 5 % each (950/s) among 5,000.
        let (mut inner, now, truth) = skewed(19_000, 120, 0.4);
        assert_eq!(inner.entities.stride, 10);
        check_heavy_hitters(&mut inner, now, &truth);
        // The per-domain rates are exact, not sampled.
        let snap = inner.snapshot(now, Totals::default(), 1);
        assert!(
            (snap.domain["sensor"].m1 - 19_000.0).abs() < 1e-6,
            "{:?}",
            snap.domain
        );
    }

    #[test]
    fn sampling_follows_the_rate_down() {
        let t0 = Instant::now();
        let mut inner = Inner::new(t0);
        let batch: Vec<Event> = (0..1100)
            .map(|i| state_change(&format!("sensor.s{i}")))
            .collect();
        // About 157,000 events/s for two seconds (stride 79), then 10 events/s.
        for ms in (0..2000).step_by(7) {
            inner.observe(t0 + Duration::from_millis(ms), &batch);
        }
        assert_eq!(inner.entities.stride, 79);
        let one = vec![state_change("sensor.quiet")];
        for tenth in 0..30 {
            inner.observe(t0 + Duration::from_millis(2000 + tenth * 100), &one);
        }
        assert_eq!(inner.entities.stride, 1);
    }

    #[test]
    fn events_by_domain_are_counted_with_bounded_labels() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let t0 = Instant::now();
        let mut inner = Inner::new(t0);
        let mut batch: Vec<Event> = (0..100).map(|i| state_change(&format!("d{i}.e"))).collect();
        batch.extend((0..5).map(|_| state_change("light.a")));
        batch.push(bus("call_service", Some("light")));
        batch.push(bus("automation_triggered", None));
        metrics::with_local_recorder(&recorder, || {
            inner.observe(t0, &batch);
            inner.observe(t0, &batch[100..]);
        });
        let snap = crate::monitor::alerts::Snapshot::parse(&recorder.handle().render());
        let name = names::PIPELINE_RECEIVED_EVENTS;
        assert_eq!(snap.sum_where(name, "domain", "d0"), Some(1.0));
        assert_eq!(snap.sum_where(name, "domain", "d63"), Some(1.0));
        assert_eq!(snap.sum_where(name, "domain", "d64"), None);
        // 36 domains past the 64th, then light: 37 label values' worth under one.
        assert_eq!(
            snap.sum_where(name, "domain", OTHER_DOMAIN),
            Some(36.0 + 12.0)
        );
        assert_eq!(snap.sum_where(name, "domain", NO_DOMAIN), Some(2.0));
        // Every event counted once.
        assert_eq!(snap.sum(name), Some(107.0 + 7.0));
        let labels = snap.series().iter().filter(|s| s.name == name).count();
        assert_eq!(labels, MAX_DOMAIN_LABELS + 2);
    }
}
