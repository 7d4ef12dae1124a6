//! The only channels that run against the data flow.
//!
//! Data flows one way: source → pipeline → encoder → buffer → writer. Three
//! things must travel back, and each has one module here with its contract:
//!
//! | channel | from → to | carries | contract |
//! |---|---|---|---|
//! | [`handoff`] | buffer (or the sink, without a buffer) → sources | per-source watermark ([`handoff::Mark`]) | a mark is released only once every event up to it is durable; sources acknowledge upstream (MQTT PUBACK, HA resume cursor) only then; releases coalesce, order per source is kept |
//! | [`acks`] | writers → buffer | highest delivered buffer sequence | a record is removed from the buffer only after its target accepted it or set it aside with a counted reason; reports only grow |
//! | [`commands`] | monitor (alert notifier) → Home Assistant source | `call_service` / `fire_event` commands | bounded queue per home, fire-and-forget; never blocks the data path, a full queue refuses |
//!
//! Nothing else may hold a sender towards an earlier stage: a stage that needs
//! to tell an earlier one something gets a channel here, with its contract
//! written above.

pub mod acks;
pub mod commands;
pub mod handoff;
