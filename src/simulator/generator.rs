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
//! - [`Generator`], the live stream the simulator serves (and the built-in
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

/// One entity of the live stream and its running state.
pub(super) struct Entity {
    pub(super) id: EntityId,
    kind: Kind,
    name: String,
    level: f64,
    pub(super) current: Option<State>,
}

/// Deterministic state changes for a set of entities.
pub(super) struct Generator {
    rng: StdRng,
    pub(super) entities: Vec<Entity>,
    last_ts: i64,
    pub(super) source: SourceId,
}

impl Generator {
    /// `count` entities (at least one) over the fourteen kinds, content fixed by `seed`.
    pub(super) fn new(count: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let entities = (0..count.max(1))
            .map(|i| {
                let kind = KINDS[i % KINDS.len()];
                let room = ROOMS[(i / KINDS.len()) % ROOMS.len()];
                let (domain, suffix) = (kind.domain(), live_name(kind));
                let object_id = format!("{room}_{suffix}_{i}");
                let name = title(&object_id);
                let id = EntityId::new(&format!("{domain}.{object_id}"))
                    .unwrap_or_else(|_| unreachable_entity());
                let level = match kind {
                    Kind::Temperature => rng.random_range(17.0..24.0),
                    Kind::Humidity => rng.random_range(35.0..65.0),
                    Kind::Power => rng.random_range(5.0..500.0),
                    Kind::Energy => rng.random_range(100.0..5000.0),
                    Kind::Voltage => rng.random_range(225.0..235.0),
                    _ => 0.0,
                };
                Entity {
                    id,
                    kind,
                    name,
                    level,
                    current: None,
                }
            })
            .collect();
        Generator {
            rng,
            entities,
            last_ts: 0,
            source: SourceId::from("simulator"),
        }
    }

    /// Current states of every entity that has one (`get_states`).
    pub(super) fn current_states(&self) -> Vec<State> {
        self.entities
            .iter()
            .filter_map(|e| e.current.clone())
            .collect()
    }

    /// `now` in whole microseconds, moved forward a microsecond if needed, so times strictly increase.
    pub(super) fn next_time(&mut self, now: Timestamp) -> Timestamp {
        let micros = now.as_nanos() / 1_000;
        let micros = micros.max(self.last_ts + 1);
        self.last_ts = micros;
        Timestamp::from_nanos(micros * 1_000)
    }

    /// The next event at `now` (see [`Generator::next_time`]).
    pub(super) fn next_event(&mut self, now: Timestamp) -> Event {
        let ts = self.next_time(now);
        if self.rng.random_range(0..20) == 0 {
            self.call_service(ts)
        } else {
            let index = self.rng.random_range(0..self.entities.len());
            self.change_state(index, ts)
        }
    }

    pub(super) fn context(&mut self, ts: Timestamp, user: bool) -> Context {
        Context {
            id: Some(ulid(ts, &mut self.rng).into()),
            parent_id: None,
            user_id: user.then(|| "2863ffcc95c5495785bb107450175b9a".into()),
        }
    }

    fn call_service(&mut self, ts: Timestamp) -> Event {
        let lights: Vec<usize> = (0..self.entities.len())
            .filter(|i| matches!(self.entities[*i].kind, Kind::Light | Kind::Switch))
            .collect();
        let target = if lights.is_empty() {
            0
        } else {
            lights[self.rng.random_range(0..lights.len())]
        };
        let entity = &self.entities[target];
        let domain = entity.id.domain().to_string();
        let entity_id = entity.id.as_str().to_string();
        let on = self.rng.random_bool(0.5);
        let mut service_data = serde_json::Map::new();
        service_data.insert("entity_id".into(), json!([entity_id]));
        if on && domain == "light" {
            service_data.insert("brightness".into(), json!(self.rng.random_range(1..=255)));
        }
        let mut data = serde_json::Map::new();
        data.insert("domain".into(), json!(domain));
        data.insert(
            "service".into(),
            json!(if on { "turn_on" } else { "turn_off" }),
        );
        data.insert("service_data".into(), Value::Object(service_data));
        let context = self.context(ts, true);
        Event {
            meta: Default::default(),
            source: self.source.clone(),
            time_fired: ts,
            origin: Origin::Local,
            context,
            kind: EventKind::Bus(BusEvent {
                event_type: "call_service".to_string(),
                data,
            }),
        }
    }

    fn change_state(&mut self, index: usize, ts: Timestamp) -> Event {
        let mut tries = 0;
        let (state, attributes) = loop {
            let candidate = self.values(index);
            let same = self.entities[index]
                .current
                .as_ref()
                .is_some_and(|c| c.state == candidate.0 && c.attributes == candidate.1);
            tries += 1;
            if !same || tries >= 4 {
                break candidate;
            }
        };
        let user = matches!(
            self.entities[index].kind,
            Kind::Light | Kind::Switch | Kind::Climate
        ) && self.rng.random_bool(0.3);
        let context = self.context(ts, user);
        let entity = &mut self.entities[index];
        let old = entity.current.take();
        let last_changed = match &old {
            Some(o) if o.state == state => o.last_changed,
            _ => ts,
        };
        let new = State {
            entity_id: entity.id.clone(),
            state,
            attributes,
            last_changed,
            last_reported: Some(ts),
            last_updated: ts,
            context: Some(context.clone()),
        };
        entity.current = Some(new.clone());
        Event {
            meta: Default::default(),
            source: self.source.clone(),
            time_fired: ts,
            origin: Origin::Local,
            context,
            kind: EventKind::StateChanged(Box::new(StateChanged {
                entity_id: entity.id.clone(),
                old_state: old.map(LazyState::from),
                new_state: Some(new),
            })),
        }
    }

    /// A new (state, attributes) for entity `index`.
    fn values(&mut self, index: usize) -> (String, Attributes) {
        let rng = &mut self.rng;
        let entity = &mut self.entities[index];
        let name = entity.name.clone();
        let mut a = Attributes::new();
        let previous_on = entity.current.as_ref().map(|c| c.state == "on");
        let state = match entity.kind {
            Kind::Temperature
            | Kind::Humidity
            | Kind::Power
            | Kind::Voltage
            | Kind::Battery
            | Kind::Signal => {
                let (step, digits) = match entity.kind {
                    Kind::Temperature => (0.3, 1),
                    Kind::Humidity => (2.0, 0),
                    Kind::Power => (40.0, 2),
                    // Battery and signal sensors are not among the stream's kinds.
                    Kind::Battery => (1.0, 0),
                    Kind::Signal => (2.0, 0),
                    _ => (1.5, 1),
                };
                entity.level = Walk::free(step).next(entity.level, rng);
                a = class_attributes(entity.kind, &name);
                if matches!(entity.kind, Kind::Voltage) && rng.random_range(0..20) == 0 {
                    "unavailable".to_string()
                } else {
                    format!("{:.*}", digits, entity.level.max(0.0))
                }
            }
            Kind::Energy => {
                entity.level = Meter {
                    low: 0.001,
                    high: 0.5,
                }
                .next(entity.level, rng);
                a = class_attributes(entity.kind, &name);
                format!("{:.3}", entity.level)
            }
            // Door sensors are not among the stream's kinds; they would behave as motion sensors.
            Kind::Motion | Kind::Door => {
                a = class_attributes(entity.kind, &name);
                flipped(previous_on)
            }
            Kind::Switch => {
                a.insert("friendly_name".into(), json!(name));
                flipped(previous_on)
            }
            Kind::Light => {
                let state = flipped(previous_on);
                let on = state == "on";
                a.insert("supported_color_modes".into(), json!(["hs", "xy"]));
                if on {
                    let (r, g, b) = (
                        rng.random_range(0..=255),
                        rng.random_range(0..=255),
                        rng.random_range(0..=255),
                    );
                    a.insert("color_mode".into(), json!("xy"));
                    a.insert("brightness".into(), json!(rng.random_range(1..=255)));
                    a.insert(
                        "hs_color".into(),
                        json!([
                            round2(rng.random_range(0.0..360.0)),
                            round2(rng.random_range(0.0..100.0))
                        ]),
                    );
                    a.insert("rgb_color".into(), json!([r, g, b]));
                    a.insert(
                        "xy_color".into(),
                        json!([
                            round3(rng.random_range(0.0..0.8)),
                            round3(rng.random_range(0.0..0.8))
                        ]),
                    );
                } else {
                    a.insert("color_mode".into(), Value::Null);
                    a.insert("brightness".into(), Value::Null);
                }
                a.insert("friendly_name".into(), json!(name));
                a.insert("supported_features".into(), json!(40));
                state
            }
            Kind::Climate => {
                let modes = ["heat", "cool", "off"];
                let state = modes[rng.random_range(0..modes.len())].to_string();
                a.insert("hvac_modes".into(), json!(["off", "heat", "cool", "auto"]));
                a.insert("min_temp".into(), json!(7.0));
                a.insert("max_temp".into(), json!(35.0));
                a.insert(
                    "current_temperature".into(),
                    json!(round1(rng.random_range(16.0..26.0))),
                );
                a.insert(
                    "temperature".into(),
                    if state == "off" {
                        Value::Null
                    } else {
                        json!(round1(rng.random_range(18.0..23.0)))
                    },
                );
                a.insert("friendly_name".into(), json!(name));
                a.insert("supported_features".into(), json!(385));
                state
            }
            Kind::Person | Kind::Tracker => {
                let home = rng.random_bool(0.6);
                let (lat, lon) = if home {
                    (52.3731, 4.8922)
                } else {
                    (
                        round6(rng.random_range(51.0..53.5)),
                        round6(rng.random_range(3.5..7.0)),
                    )
                };
                if matches!(entity.kind, Kind::Person) {
                    a.insert("editable".into(), json!(true));
                    a.insert("id".into(), json!(entity.id.object_id()));
                    a.insert("latitude".into(), json!(lat));
                    a.insert("longitude".into(), json!(lon));
                    a.insert("gps_accuracy".into(), json!(rng.random_range(3..60)));
                    a.insert(
                        "source".into(),
                        json!(format!("device_tracker.{}_phone", entity.id.object_id())),
                    );
                    a.insert("user_id".into(), json!("2863ffcc95c5495785bb107450175b9a"));
                } else {
                    a.insert("source_type".into(), json!("gps"));
                    a.insert("battery_level".into(), json!(rng.random_range(5..=100)));
                    a.insert("latitude".into(), json!(lat));
                    a.insert("longitude".into(), json!(lon));
                    a.insert("gps_accuracy".into(), json!(rng.random_range(3..60)));
                    a.insert(
                        "altitude".into(),
                        json!(round1(rng.random_range(-5.0..40.0))),
                    );
                }
                a.insert("friendly_name".into(), json!(name));
                if home { "home" } else { "not_home" }.to_string()
            }
            Kind::InputSelect => {
                a.insert("options".into(), json!(SELECT_OPTIONS));
                a.insert("editable".into(), json!(true));
                a.insert(
                    "friendly_name".into(),
                    json!(format!("{name}, \"mode\" = a\\b")),
                );
                SELECT_OPTIONS[rng.random_range(0..SELECT_OPTIONS.len())].to_string()
            }
            Kind::MediaPlayer => {
                let states = ["playing", "paused", "idle", "off"];
                let state = states[rng.random_range(0..states.len())].to_string();
                a.insert(
                    "volume_level".into(),
                    json!(round2(rng.random_range(0.0..1.0))),
                );
                a.insert("is_volume_muted".into(), json!(false));
                a.insert(
                    "media_title".into(),
                    json!(format!("Träck {} — «live» 🎵", rng.random_range(1..100))),
                );
                a.insert(
                    "media_artist".into(),
                    json!("Artist, with commas = and \"quotes\""),
                );
                if rng.random_range(0..4) == 0 {
                    let line = "A long description with spaces, commas, = signs and ünïcödé. ";
                    a.insert("media_description".into(), json!(line.repeat(20)));
                }
                a.insert(
                    "extra".into(),
                    json!({"queue": [{"title": "One", "len": 180}, {"title": "Two\nlines", "len": 200.5}], "source": {"name": "radio", "tags": ["a", "b"]}}),
                );
                a.insert("friendly_name".into(), json!(name));
                a.insert("supported_features".into(), json!(152_463));
                state
            }
            Kind::Hard => {
                a.insert("unit_of_measurement".into(), json!("a,b=c d"));
                a.insert(
                    "friendly_name".into(),
                    json!(format!("Odd \"values\", with commas=equals \\ {name}")),
                );
                a.insert("note".into(), json!("multi\nline\ttext with ünïcödé ☃"));
                a.insert(
                    "nested".into(),
                    json!({"list": [1, 2.5, "three", null, {"k": "v"}], "flag": true}),
                );
                HARD_STATES[rng.random_range(0..HARD_STATES.len())].to_string()
            }
        };
        (state, a)
    }
}

/// The next state of a binary entity: `on` first, then alternating.
fn flipped(previous_on: Option<bool>) -> String {
    on_off(previous_on != Some(true)).to_string()
}

/// The catalogue's attributes of a sensor kind named `friendly` (empty for other kinds).
fn class_attributes(kind: Kind, friendly: &str) -> Attributes {
    kind.class()
        .map_or_else(Attributes::new, |class| class.attributes(friendly))
}

/// The live stream's name of a kind's entities, after the room (`kitchen_ceiling_5`).
fn live_name(kind: Kind) -> &'static str {
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
        Kind::Light => "ceiling",
        Kind::Switch => "plug",
        Kind::Climate => "thermostat",
        Kind::Person => "resident",
        Kind::Tracker => "phone",
        Kind::InputSelect => "mode",
        Kind::MediaPlayer => "speaker",
        Kind::Hard => "odd_values",
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// `kitchen_temperature_3` → `Kitchen Temperature 3`.
fn title(object_id: &str) -> String {
    object_id
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => first.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Entity ids built above always contain a dot with text on both sides.
fn unreachable_entity() -> EntityId {
    match EntityId::new("sensor.simulated") {
        Ok(id) => id,
        Err(_) => unreachable!("a literal valid entity id"),
    }
}

/// A 26-character ULID-like id: 48 bits of milliseconds, 80 random bits, Crockford base32.
fn ulid(ts: Timestamp, rng: &mut StdRng) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = (ts.as_nanos() / 1_000_000).max(0) as u128 & ((1 << 48) - 1);
    let random: u128 = rng.random::<u128>() & ((1 << 80) - 1);
    let value = (millis << 80) | random;
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}

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
