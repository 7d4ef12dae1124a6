//! Home Assistant's WebSocket API: protocol types, frame decoding, the client, and gap backfill (cursor, history).

pub mod client;
pub mod cursor;
pub mod decode;
pub mod entities;
pub mod history;
pub mod protocol;
