//! The live driver of the catalogue: the stream the simulator serves and the
//! built-in corpus of `bench pipeline` — content fixed by the seed.

use super::*;

/// One entity of the live stream and its running state.
pub(in crate::simulator) struct Entity {
    pub(in crate::simulator) id: EntityId,
    kind: Kind,
    name: String,
    level: f64,
    pub(in crate::simulator) current: Option<State>,
}

/// Deterministic state changes for a set of entities.
pub(in crate::simulator) struct Generator {
    rng: StdRng,
    pub(in crate::simulator) entities: Vec<Entity>,
    last_ts: i64,
    pub(in crate::simulator) source: SourceId,
}

impl Generator {
    /// `count` entities (at least one) over the fourteen kinds, content fixed by `seed`.
    pub(in crate::simulator) fn new(count: usize, seed: u64) -> Self {
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
    pub(in crate::simulator) fn current_states(&self) -> Vec<State> {
        self.entities
            .iter()
            .filter_map(|e| e.current.clone())
            .collect()
    }

    /// `now` in whole microseconds, moved forward a microsecond if needed, so times strictly increase.
    pub(in crate::simulator) fn next_time(&mut self, now: Timestamp) -> Timestamp {
        let micros = now.as_nanos() / 1_000;
        let micros = micros.max(self.last_ts + 1);
        self.last_ts = micros;
        Timestamp::from_nanos(micros * 1_000)
    }

    /// The next event at `now` (see [`Generator::next_time`]).
    pub(in crate::simulator) fn next_event(&mut self, now: Timestamp) -> Event {
        let ts = self.next_time(now);
        if self.rng.random_range(0..20) == 0 {
            self.call_service(ts)
        } else {
            let index = self.rng.random_range(0..self.entities.len());
            self.change_state(index, ts)
        }
    }

    pub(in crate::simulator) fn context(&mut self, ts: Timestamp, user: bool) -> Context {
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
pub(super) fn ulid(ts: Timestamp, rng: &mut StdRng) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = (ts.as_nanos() / 1_000_000).max(0) as u128 & ((1 << 48) - 1);
    let random: u128 = rng.random::<u128>() & ((1 << 80) - 1);
    let value = (millis << 80) | random;
    (0..26)
        .rev()
        .map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char)
        .collect()
}
