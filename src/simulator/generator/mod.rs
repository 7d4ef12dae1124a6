//! A typical home's entities and how their states change: one catalogue, two drivers.
//!
//! The catalogue is what both uses of a simulated home agree on: the kinds of
//! entity ([`Kind`]), each kind's HA domain and the metadata HA puts in a
//! sensor's attributes ([`Class`]: state class, unit, device class, icon), and
//! the value models that move a numeric state from one change to the next
//! ([`Walk`], [`Meter`], [`Drain`]).
//!
//! Two drivers use it, because the two outputs serve different purposes:
//!
//! - [`Generator`] (`live.rs`), the live stream the simulator serves (and the built-in
//!   corpus of `bench pipeline`): entities dealt round-robin over fourteen kinds
//!   and eight rooms, changes at the rate the server asks, ULID contexts,
//!   `call_service` events, and values chosen to break naive encoders
//!   (commas, quotes, newlines, Unicode, `unavailable`, nested attributes).
//!   Its content is fixed by the seed: tests compare it exactly.
//! - [`home_history`], the month of plausible history `schema bench` loads:
//!   kinds dealt by their share of a real home, each entity changing at its own
//!   mean interval (exponential gaps), numeric states bounded to what real
//!   sensors show, and no hostile values (they would measure the encoders, not
//!   the schema).
//!
//! They share the catalogue and the value models but keep their own
//! parameters (steps, bounds, decimals, starting levels, entity names) and their
//! own attributes for lights, switches and climate entities. Making either
//! follow the other's would change what it produces for a seed — the
//! simulator's exact content, or the data the schema bench measures — so each
//! driver's table is what it was before the two were joined, draw for draw.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::event::{
    Attributes, BusEvent, Context, EntityId, Event, EventKind, LazyState, Origin, SourceId, State,
    StateChanged, Timestamp,
};

mod live;

pub(in crate::simulator) use live::Generator;

// ---------------------------------------------------------------------------
// The catalogue.

/// What an entity is: its domain, its attributes, and how its state moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `sensor`, °C.
    Temperature,
    /// `sensor`, %.
    Humidity,
    /// `sensor`, W.
    Power,
    /// `sensor`, kWh, only grows.
    Energy,
    /// `sensor`, V.
    Voltage,
    /// `sensor`, %, only drains.
    Battery,
    /// `sensor`, dBm.
    Signal,
    /// `binary_sensor`, motion.
    Motion,
    /// `binary_sensor`, door.
    Door,
    /// `light`.
    Light,
    /// `switch`.
    Switch,
    /// `climate`.
    Climate,
    /// `person`, with GPS attributes.
    Person,
    /// `device_tracker`, with GPS attributes.
    Tracker,
    /// `input_select`, with awkward options.
    InputSelect,
    /// `media_player`, with long and nested attributes.
    MediaPlayer,
    /// A `sensor` whose states and attributes are everything that breaks naive encoders.
    Hard,
}

impl Kind {
    /// The HA domain of this kind's entities.
    fn domain(self) -> &'static str {
        match self {
            Kind::Temperature
            | Kind::Humidity
            | Kind::Power
            | Kind::Energy
            | Kind::Voltage
            | Kind::Battery
            | Kind::Signal
            | Kind::Hard => "sensor",
            Kind::Motion | Kind::Door => "binary_sensor",
            Kind::Light => "light",
            Kind::Switch => "switch",
            Kind::Climate => "climate",
            Kind::Person => "person",
            Kind::Tracker => "device_tracker",
            Kind::InputSelect => "input_select",
            Kind::MediaPlayer => "media_player",
        }
    }

    /// HA's metadata of the sensors and binary sensors; `None` for kinds whose
    /// attributes depend on their state (lights, climate, …).
    fn class(self) -> Option<Class> {
        let measurement = |unit, device_class| Class {
            state_class: Some("measurement"),
            unit: Some(unit),
            device_class,
            icon: None,
        };
        let binary = |device_class| Class {
            state_class: None,
            unit: None,
            device_class: Some(device_class),
            icon: None,
        };
        Some(match self {
            Kind::Temperature => measurement("°C", Some("temperature")),
            Kind::Humidity => measurement("%", Some("humidity")),
            Kind::Power => measurement("W", Some("power")),
            Kind::Voltage => measurement("V", Some("voltage")),
            Kind::Battery => measurement("%", Some("battery")),
            Kind::Signal => Class {
                icon: Some("mdi:wifi"),
                ..measurement("dBm", None)
            },
            Kind::Energy => Class {
                state_class: Some("total_increasing"),
                ..measurement("kWh", Some("energy"))
            },
            Kind::Motion => binary("motion"),
            Kind::Door => binary("door"),
            _ => return None,
        })
    }
}

/// What HA puts in the attributes of one kind of sensor or binary sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Class {
    /// `state_class`: `measurement`, `total_increasing`, or none for binary sensors.
    state_class: Option<&'static str>,
    /// `unit_of_measurement`.
    unit: Option<&'static str>,
    /// `device_class`.
    device_class: Option<&'static str>,
    /// `icon`, for sensors without a device class.
    icon: Option<&'static str>,
}

impl Class {
    /// The attributes of an entity named `friendly`, in HA's order: state class,
    /// unit, device class, friendly name, icon.
    fn attributes(self, friendly: &str) -> Attributes {
        let mut a = Attributes::new();
        if let Some(v) = self.state_class {
            a.insert("state_class".into(), json!(v));
        }
        if let Some(v) = self.unit {
            a.insert("unit_of_measurement".into(), json!(v));
        }
        if let Some(v) = self.device_class {
            a.insert("device_class".into(), json!(v));
        }
        a.insert("friendly_name".into(), json!(friendly));
        if let Some(v) = self.icon {
            a.insert("icon".into(), json!(v));
        }
        a
    }
}

/// A random walk: each change moves the level by up to ±`step` (one uniform
/// draw), then keeps it within `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Walk {
    /// Largest move per change.
    step: f64,
    /// Lowest level.
    min: f64,
    /// Highest level.
    max: f64,
}

impl Walk {
    /// A walk between `min` and `max`.
    const fn within(step: f64, min: f64, max: f64) -> Walk {
        Walk { step, min, max }
    }

    /// A walk without bounds.
    const fn free(step: f64) -> Walk {
        Walk::within(step, f64::NEG_INFINITY, f64::INFINITY)
    }

    /// The level after one change.
    fn next(self, level: f64, rng: &mut StdRng) -> f64 {
        (level + rng.random_range(-self.step..self.step)).clamp(self.min, self.max)
    }
}

/// A meter that only grows (energy): each change adds one uniform draw from `low..high`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Meter {
    /// Smallest increase.
    low: f64,
    /// Largest increase (excluded).
    high: f64,
}

impl Meter {
    /// The level after one change.
    fn next(self, level: f64, rng: &mut StdRng) -> f64 {
        level + rng.random_range(self.low..self.high)
    }
}

/// A level that only drains (battery): each change takes one uniform draw from
/// `low..high` off it, down to `floor`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Drain {
    /// Smallest drop.
    low: f64,
    /// Largest drop (excluded).
    high: f64,
    /// The level never goes below this.
    floor: f64,
}

impl Drain {
    /// The level after one change.
    fn next(self, level: f64, rng: &mut StdRng) -> f64 {
        (level - rng.random_range(self.low..self.high)).max(self.floor)
    }
}

/// A binary state as HA writes it.
fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

// ---------------------------------------------------------------------------
// The live stream.

/// The kinds the live stream deals, round-robin.
const KINDS: [Kind; 14] = [
    Kind::Temperature,
    Kind::Humidity,
    Kind::Power,
    Kind::Energy,
    Kind::Motion,
    Kind::Light,
    Kind::Climate,
    Kind::Switch,
    Kind::Person,
    Kind::Tracker,
    Kind::InputSelect,
    Kind::MediaPlayer,
    Kind::Hard,
    Kind::Voltage,
];

/// Rooms of the live stream's entities, one per round of [`KINDS`].
const ROOMS: [&str; 8] = [
    "kitchen",
    "living_room",
    "bedroom",
    "bathroom",
    "office",
    "garage",
    "hallway",
    "garden",
];

/// Options of the `input_select` entities, each awkward for some encoder.
const SELECT_OPTIONS: [&str; 6] = [
    "Morning, early",
    "away=true",
    "Quote \"q\"",
    "Ünïcödé ☀ 日本",
    "back\\slash",
    "two words",
];

/// States of the odd-values sensors: units in the state, empty, commas, newlines, …
const HARD_STATES: [&str; 9] = [
    "12.5 °C",
    "-5.5 °C",
    "unknown",
    "unavailable",
    "",
    "a,b=c d",
    "with space",
    "line1\nline2",
    "42",
];

// ---------------------------------------------------------------------------
// The long history.

/// Share of a history home's entities, in order; the rest are switches.
const MIX: [(Kind, f64); 11] = [
    (Kind::Temperature, 0.15),
    (Kind::Humidity, 0.08),
    (Kind::Power, 0.10),
    (Kind::Energy, 0.05),
    (Kind::Battery, 0.07),
    (Kind::Signal, 0.05),
    (Kind::Motion, 0.10),
    (Kind::Door, 0.08),
    (Kind::Light, 0.15),
    (Kind::Climate, 0.04),
    (Kind::Switch, 0.13),
];

/// The history's name of a kind's entities (`sensor.temperature_3`, `climate.thermostat_0`).
fn history_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Temperature => "temperature",
        Kind::Humidity => "humidity",
        Kind::Power => "power",
        Kind::Energy => "energy",
        Kind::Voltage => "voltage",
        Kind::Battery => "battery",
        Kind::Signal => "signal",
        Kind::Motion => "motion",
        Kind::Door => "door",
        Kind::Light => "light",
        Kind::Switch => "switch",
        Kind::Climate => "thermostat",
        Kind::Person => "person",
        Kind::Tracker => "tracker",
        Kind::InputSelect => "mode",
        Kind::MediaPlayer => "speaker",
        Kind::Hard => "odd_values",
    }
}

/// Mean seconds between an entity's changes (drawn once per entity for most kinds).
fn mean_interval(kind: Kind, rng: &mut StdRng) -> f64 {
    match kind {
        Kind::Temperature | Kind::Humidity | Kind::Power | Kind::Signal | Kind::Voltage => {
            rng.random_range(30.0..300.0)
        }
        Kind::Energy => rng.random_range(60.0..300.0),
        Kind::Battery => 3_600.0,
        Kind::Climate => rng.random_range(300.0..900.0),
        // A few to a few dozen changes a day.
        Kind::Motion => rng.random_range(1_800.0..7_200.0),
        Kind::Door
        | Kind::Light
        | Kind::Switch
        | Kind::Person
        | Kind::Tracker
        | Kind::InputSelect
        | Kind::MediaPlayer
        | Kind::Hard => rng.random_range(7_200.0..28_800.0),
    }
}

/// One entity of a history home and its running state.
#[derive(Debug)]
struct HomeEntity {
    id: EntityId,
    kind: Kind,
    index: usize,
    mean_interval: f64,
    level: f64,
    on: bool,
}

impl HomeEntity {
    fn attributes(&self) -> Attributes {
        let friendly = format!("{} {}", history_name(self.kind), self.index);
        if let Some(class) = self.kind.class() {
            return class.attributes(&friendly);
        }
        let value = match self.kind {
            Kind::Light if self.on => json!({
                "min_color_temp_kelvin": 2000, "max_color_temp_kelvin": 6535,
                "supported_color_modes": ["color_temp", "xy"], "color_mode": "color_temp",
                "brightness": (self.level * 2.54).round(), "color_temp_kelvin": 2700,
                "friendly_name": friendly, "supported_features": 40
            }),
            Kind::Light => json!({
                "min_color_temp_kelvin": 2000, "max_color_temp_kelvin": 6535,
                "supported_color_modes": ["color_temp", "xy"], "color_mode": null,
                "brightness": null, "color_temp_kelvin": null,
                "friendly_name": friendly, "supported_features": 40
            }),
            Kind::Switch => json!({"friendly_name": friendly, "icon": "mdi:power-socket-eu"}),
            Kind::Climate => json!({
                "hvac_modes": ["off", "heat"], "min_temp": 7, "max_temp": 35, "target_temp_step": 0.5,
                "current_temperature": (self.level * 10.0).round() / 10.0, "temperature": 21.0,
                "hvac_action": if self.on { "heating" } else { "idle" },
                "preset_modes": ["eco", "comfort"], "preset_mode": "comfort",
                "friendly_name": friendly, "supported_features": 401
            }),
            _ => json!({ "friendly_name": friendly }),
        };
        match value {
            Value::Object(m) => m.into(),
            _ => Attributes::new(),
        }
    }

    /// Moves to the next state and returns its text.
    fn step(&mut self, rng: &mut StdRng) -> String {
        match self.kind {
            Kind::Temperature => {
                self.level = Walk::within(0.3, -15.0, 35.0).next(self.level, rng);
                format!("{:.1}", self.level)
            }
            Kind::Humidity => {
                self.level = Walk::within(1.0, 20.0, 95.0).next(self.level, rng);
                format!("{:.0}", self.level)
            }
            Kind::Power => {
                self.level = Walk::within(40.0, 0.0, 3_000.0).next(self.level, rng);
                format!("{:.1}", self.level)
            }
            Kind::Voltage => {
                self.level = Walk::within(1.5, 207.0, 253.0).next(self.level, rng);
                format!("{:.1}", self.level)
            }
            Kind::Energy => {
                self.level = Meter {
                    low: 0.0,
                    high: 0.05,
                }
                .next(self.level, rng);
                format!("{:.3}", self.level)
            }
            Kind::Battery => {
                self.level = Drain {
                    low: 0.0,
                    high: 0.05,
                    floor: 1.0,
                }
                .next(self.level, rng);
                format!("{:.0}", self.level)
            }
            Kind::Signal => {
                self.level = Walk::within(2.0, -95.0, -30.0).next(self.level, rng);
                format!("{:.0}", self.level)
            }
            Kind::Climate => {
                self.level = Walk::within(0.2, 15.0, 25.0).next(self.level, rng);
                self.on = self.level < 21.0;
                if rng.random_bool(0.02) { "off" } else { "heat" }.to_string()
            }
            // Binary kinds flip; so do the kinds a history home does not have
            // (people, trackers, selects, players and odd values are not in its mix).
            Kind::Motion
            | Kind::Door
            | Kind::Light
            | Kind::Switch
            | Kind::Person
            | Kind::Tracker
            | Kind::InputSelect
            | Kind::MediaPlayer
            | Kind::Hard => {
                self.on = !self.on;
                if self.kind == Kind::Light {
                    self.level = rng.random_range(5.0..100.0);
                }
                on_off(self.on).to_string()
            }
        }
    }
}

/// The entities of a history home, reproducible from the seed.
fn home(entities: usize, rng: &mut StdRng) -> Vec<HomeEntity> {
    let mut home = Vec::with_capacity(entities);
    let mut counts = [0usize; MIX.len()];
    for i in 0..entities {
        // Deal kinds by their share, so any size has the same mix.
        let pos = (i as f64 + 0.5) / entities as f64;
        let mut acc = 0.0;
        let mut slot = MIX.len() - 1;
        for (j, (_, share)) in MIX.iter().enumerate() {
            acc += share;
            if pos < acc {
                slot = j;
                break;
            }
        }
        let kind = MIX[slot].0;
        let index = counts[slot];
        counts[slot] += 1;
        let Ok(id) = EntityId::new(&format!("{}.{}_{index}", kind.domain(), history_name(kind)))
        else {
            continue;
        };
        let level = match kind {
            Kind::Temperature => rng.random_range(18.0..23.0),
            Kind::Humidity => rng.random_range(40.0..60.0),
            Kind::Power => rng.random_range(0.0..500.0),
            Kind::Energy => rng.random_range(100.0..5_000.0),
            Kind::Battery => 100.0,
            Kind::Signal => -60.0,
            Kind::Climate => 20.0,
            Kind::Voltage => 230.0,
            _ => 0.0,
        };
        let mean_interval = mean_interval(kind, rng);
        home.push(HomeEntity {
            id,
            kind,
            index,
            mean_interval,
            level,
            on: false,
        });
    }
    home
}

/// A seeded history of a typical home of `entities` entities from `start_ns` to
/// `end_ns` (excluded): `state_changed` events (source `bench`) in time order,
/// each handed to `each`; gives how many there were.
///
/// Temperature, humidity, power, energy, battery and signal sensors change
/// every 30–300 s (batteries hourly), motion and door sensors, lights and
/// switches a few to a few dozen times a day, thermostats every 5–15 min; the
/// gaps are exponential around each entity's mean. The same seed gives the
/// same history.
pub(crate) fn home_history<E>(
    entities: usize,
    seed: u64,
    start_ns: i64,
    end_ns: i64,
    mut each: impl FnMut(&Event) -> Result<(), E>,
) -> Result<u64, E> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut home = home(entities, &mut rng);
    // Min-heap of (next time, entity).
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    for (i, e) in home.iter().enumerate() {
        let first = start_ns + (rng.random_range(0.0..e.mean_interval) * 1e9) as i64;
        heap.push(Reverse((first, i)));
    }
    let source: Arc<str> = Arc::from("bench");
    let mut events = 0u64;
    while let Some(Reverse((t, i))) = heap.pop() {
        if t >= end_ns {
            continue;
        }
        let entity = &mut home[i];
        let state = entity.step(&mut rng);
        let attributes = entity.attributes();
        let ts = Timestamp::from_nanos(t);
        let event = Event::from_state(
            source.clone(),
            State::at(entity.id.clone(), state, attributes, ts),
        );
        each(&event)?;
        events += 1;
        // Exponential gaps around the entity's mean, at least one second.
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let gap = (-u.ln() * entity.mean_interval).max(1.0);
        heap.push(Reverse((t + (gap * 1e9) as i64, i)));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::live::ulid;
    use super::*;

    #[test]
    fn the_catalogue_writes_attributes_in_ha_order() {
        let keys = |a: &Attributes| a.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        let class = |k: Kind| k.class().expect("a sensor kind");
        let temperature = class(Kind::Temperature).attributes("t");
        assert_eq!(
            keys(&temperature),
            [
                "state_class",
                "unit_of_measurement",
                "device_class",
                "friendly_name"
            ]
        );
        assert_eq!(temperature["unit_of_measurement"], json!("°C"));
        let signal = class(Kind::Signal).attributes("s");
        assert_eq!(
            keys(&signal),
            [
                "state_class",
                "unit_of_measurement",
                "friendly_name",
                "icon"
            ]
        );
        assert_eq!(
            keys(&class(Kind::Motion).attributes("m")),
            ["device_class", "friendly_name"]
        );
        assert_eq!(class(Kind::Energy).state_class, Some("total_increasing"));
        assert!(Kind::Light.class().is_none() && Kind::Switch.class().is_none());
    }

    #[test]
    fn value_models_stay_in_their_bounds() {
        let mut rng = StdRng::seed_from_u64(1);
        let walk = Walk::within(5.0, 0.0, 10.0);
        let (mut w, mut m, mut d) = (5.0, 0.0, 3.0);
        let drain = Drain {
            low: 0.0,
            high: 1.0,
            floor: 1.0,
        };
        for _ in 0..1_000 {
            w = walk.next(w, &mut rng);
            assert!((0.0..=10.0).contains(&w));
            let before = m;
            m = Meter {
                low: 0.0,
                high: 1.0,
            }
            .next(m, &mut rng);
            assert!(m >= before);
            d = drain.next(d, &mut rng);
            assert!(d >= 1.0);
        }
        // Without bounds a walk is the plain sum of its moves.
        let (mut a, mut b) = (StdRng::seed_from_u64(2), StdRng::seed_from_u64(2));
        let step: f64 = b.random_range(-0.3..0.3);
        assert_eq!(Walk::free(0.3).next(1.0, &mut a), 1.0 + step);
    }

    #[test]
    fn ulids_are_26_crockford_chars() {
        let mut rng = StdRng::seed_from_u64(1);
        let id = ulid(Timestamp::from_nanos(1_795_725_887_219_127_000), &mut rng);
        assert_eq!(id.len(), 26);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert!(!id.contains(['I', 'L', 'O', 'U']));
    }
}
