//! The MQTT source: decoding, delivery guarantees, reload, TLS, bad topics, the
//! dead-letter cap under a flood, and the
//! floor of the MQTT path against a real broker.

mod bad_topic;
mod dead_letter_cap;
mod decode_config;
mod decode_golden;
mod delivery;
mod floor;
mod reload;
mod tls;
