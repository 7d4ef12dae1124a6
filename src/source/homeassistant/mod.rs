//! Home Assistant's WebSocket API: protocol types, frame decoding and the client.

pub mod client;
pub mod decode;
pub mod protocol;
