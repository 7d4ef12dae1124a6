//! The MQTT source: one client task per broker (`client`), topic filters and patterns (`topic`), payload decoders (`decode`).

pub mod acks;
pub mod client;
pub mod conn;
pub mod decode;
pub mod topic;

pub use client::{MqttError, MqttReload, MqttSource};
