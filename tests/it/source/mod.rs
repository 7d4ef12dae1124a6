//! The Home Assistant WebSocket source: the client, commands, TLS, backpressure.

mod backpressure;
mod homeassistant;
mod homeassistant_commands;
mod homeassistant_tls;
