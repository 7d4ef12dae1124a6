//! Home Assistant's WebSocket API: protocol types, frame decoding, the client, and gap backfill (cursor, history).
//!
//! Where each concern lives:
//! - `protocol.rs`: the wire types, shared with the simulator: every command the
//!   client sends, and [`protocol::ServerReply`], every server message but events.
//! - `decode.rs`: the hot path, a server frame into [`decode::ServerMessage`]s
//!   (events decoded in place; the rest as `ServerReply`).
//! - `entities.rs`: the `subscribe_entities` stream and the cache that turns it
//!   back into `state_changed` events.
//! - `client.rs` with `client/`: the source task. The supervisor (reconnects,
//!   back-off) is `client.rs`; `client/connect.rs` connects and authenticates;
//!   `client/session.rs` is one connection (`Session`); `client/gap.rs` a gap
//!   being backfilled.
//! - `history.rs`: a history reply into state changes; `cursor.rs`: the resume cursor.
//! - `commands.rs`: commands other parts of ha-ingestor send over the client's connection.

pub mod client;
pub mod cursor;
pub mod decode;
pub mod entities;
pub mod history;
pub mod protocol;
