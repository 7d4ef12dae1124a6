//! MQTT source: topic filters and patterns ([`topic`]) and payload decoders ([`decode`]).

pub mod decode;
pub mod topic;
